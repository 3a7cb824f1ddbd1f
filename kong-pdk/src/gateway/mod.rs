//! The HTTP proxy that runs the phase pipeline: a hyper 1 server whose requests are routed by
//! [`Router`], run through the [`PluginSet`]
//! and proxied upstream over pooled keep-alive connections, bodies streaming both ways.
//!
//! Configuration is an immutable [`Snapshot`] (router + plugin instances) that
//! [`Proxy::swap`] replaces atomically: no restart, no lock on the request path, and requests
//! in flight finish on the snapshot they started with.

mod body;
pub mod declarative;
mod headers;
pub mod mock_upstream;
mod proxy;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

pub use body::ProxyBody;

use crate::executor::PluginSet;
use crate::router::Router;

/// The Kong version whose behaviour this gateway implements (`Via`, `Server`).
pub const KONG_VERSION: &str = "3.10.0";

/// What the proxy serves: routes and plugin instances, swapped as a whole.
pub struct Snapshot {
    /// The router.
    pub router: Router,
    /// The configured plugin instances.
    pub plugins: PluginSet,
}

/// Which headers Kong adds (Kong's `headers` setting).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeaderSettings {
    /// `Server` and `Via` (`server_tokens`).
    pub server_tokens: bool,
    /// `X-Kong-Upstream-Latency`, `X-Kong-Proxy-Latency`, `X-Kong-Response-Latency`.
    pub latency_tokens: bool,
    /// `X-Kong-Request-Id` on responses.
    pub request_id: bool,
    /// `X-Kong-Upstream-Status`.
    pub upstream_status: bool,
    /// `X-Kong-Request-Id` sent upstream (`headers_upstream`).
    pub upstream_request_id: bool,
}

impl Default for HeaderSettings {
    fn default() -> Self {
        HeaderSettings {
            server_tokens: true,
            latency_tokens: true,
            request_id: true,
            upstream_status: false,
            upstream_request_id: true,
        }
    }
}

impl HeaderSettings {
    /// Parses Kong's `headers` value (`server_tokens, latency_tokens, X-Kong-Request-Id`, `off`).
    pub fn parse(value: &str) -> Result<HeaderSettings, String> {
        let mut s = HeaderSettings {
            server_tokens: false,
            latency_tokens: false,
            request_id: false,
            upstream_status: false,
            upstream_request_id: true,
        };
        for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
            match item.to_ascii_lowercase().as_str() {
                "off" => {}
                "server_tokens" | "server" | "via" => s.server_tokens = true,
                "latency_tokens" | "x-kong-upstream-latency" | "x-kong-proxy-latency" | "x-kong-response-latency" => {
                    s.latency_tokens = true
                }
                "x-kong-request-id" => s.request_id = true,
                "x-kong-upstream-status" => s.upstream_status = true,
                "x-kong-admin-latency" => {}
                other => return Err(format!("invalid header value: {other}")),
            }
        }
        Ok(s)
    }
}

/// The proxy: the current snapshot, the upstream connection pool and the settings.
pub struct Proxy {
    snapshot: ArcSwap<Snapshot>,
    client: Client<HttpConnector, ProxyBody>,
    headers: HeaderSettings,
}

impl Proxy {
    /// A proxy serving `snapshot`.
    pub fn new(snapshot: Snapshot, headers: HeaderSettings) -> Proxy {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.enforce_http(true);
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(512)
            .build(connector);
        Proxy {
            snapshot: ArcSwap::from_pointee(snapshot),
            client,
            headers,
        }
    }

    /// The snapshot new requests use.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.load_full()
    }

    /// Replaces the snapshot. Call `snapshot.plugins.configure()` first, as Kong runs
    /// `configure` before the new configuration takes traffic.
    pub fn swap(&self, snapshot: Snapshot) {
        self.snapshot.store(Arc::new(snapshot));
    }

    /// Serves HTTP/1.1 and h2c (prior knowledge) on `listener` until `shutdown` completes,
    /// then stops accepting and lets connections finish.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl std::future::Future<Output = ()>) {
        let port = listener.local_addr().map_or(0, |a| a.port());
        let mut shutdown = std::pin::pin!(shutdown);
        let conns = tokio::task::JoinSet::new();
        let mut conns = conns;
        loop {
            tokio::select! {
                _ = &mut shutdown => break,
                accepted = listener.accept() => {
                    let Ok((stream, peer)) = accepted else { continue };
                    let _ = stream.set_nodelay(true);
                    let proxy = self.clone();
                    conns.spawn(async move {
                        let service = hyper::service::service_fn(move |req| {
                            let proxy = proxy.clone();
                            async move { Ok::<_, std::convert::Infallible>(proxy.handle(req, peer, port).await) }
                        });
                        let _ = auto::Builder::new(TokioExecutor::new())
                            .serve_connection_with_upgrades(TokioIo::new(stream), service)
                            .await;
                    });
                }
            }
        }
        drop(listener);
        let drain = async { while conns.join_next().await.is_some() {} };
        let _ = tokio::time::timeout(Duration::from_secs(30), drain).await;
    }

    async fn handle(
        &self,
        req: hyper::Request<hyper::body::Incoming>,
        peer: SocketAddr,
        port: u16,
    ) -> hyper::Response<ProxyBody> {
        proxy::handle(self, req, peer, port).await
    }
}

#[cfg(test)]
mod tests;
