//! A 100 MiB response streams through the proxy and its body_filter with flat memory. In its
//! own test binary, so the process's memory is this test's alone.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::{Request, Response};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use kong_pdk::entities::{Route, Service};
use kong_pdk::executor::{PluginEntity, PluginSet};
use kong_pdk::gateway::{HeaderSettings, Proxy, Snapshot};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::prelude::*;
use kong_pdk::registry::Plugins;
use kong_pdk::router::Router;
use serde_json::json;
use tokio::net::TcpListener;

const SIZE: usize = 100 * 1024 * 1024;

/// Upper-cases each chunk as it passes.
#[plugin(priority = 10, version = "1.0.0", name = "stream-upper")]
pub struct StreamUpper {}

#[handler]
impl Handler for StreamUpper {
    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> kong_pdk::Result {
        let upper = kong.response().chunk().to_ascii_uppercase();
        kong.response().set_chunk(upper);
        Ok(())
    }
}

/// `remaining` bytes made on the fly, 64 KiB at a time.
struct Generated {
    remaining: usize,
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Bytes>, Infallible>>> {
        if self.remaining == 0 {
            return std::task::Poll::Ready(None);
        }
        let n = self.remaining.min(64 * 1024);
        self.remaining -= n;
        std::task::Poll::Ready(Some(Ok(http_body::Frame::data(Bytes::from(vec![b'x'; n])))))
    }
}

/// The process's resident memory, or `None` where `/proc/self/statm` cannot be read.
fn rss_bytes() -> Option<usize> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: usize = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_mib_response_streams_through_with_flat_memory() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let up = listener.local_addr().unwrap();
    tokio::spawn(async move {
        let Ok((stream, _)) = listener.accept().await else {
            return;
        };
        let svc = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
            Ok::<_, Infallible>(Response::new(Generated { remaining: SIZE }))
        });
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    });

    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).with::<StreamUpper>().build());
    let mut set = PluginSet::builder(plugins);
    set.add(PluginEntity::new("stream-upper", json!({}))).unwrap();
    let mut route = Route::new(&["/"]);
    let service = Arc::new(Service::new("127.0.0.1", up.port()));
    route.service = Some(kong_pdk::entities::ForeignKey { id: service.id });
    let router = Router::new([(Arc::new(route), Some(service))]).unwrap();
    let proxy = Arc::new(Proxy::new(
        Snapshot::new(router, set.build()),
        HeaderSettings::default(),
    ));
    let gw = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = gw.local_addr().unwrap();
    tokio::spawn(proxy.serve(gw, std::future::pending()));

    let before = rss_bytes();
    if before.is_none() {
        eprintln!("memory not checked: /proc/self/statm is not readable here (the body still is)");
    }
    let client = Client::builder(TokioExecutor::new()).build_http::<Full<Bytes>>();
    let resp = client.get(format!("http://{addr}/big").parse().unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    let (mut total, mut peak) = (0usize, before);
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert!(data.iter().all(|b| *b == b'X'), "body_filter ran on every chunk");
            total += data.len();
            peak = peak.max(rss_bytes());
        }
    }
    assert_eq!(total, SIZE);
    if let (Some(before), Some(peak)) = (before, peak) {
        let growth = peak.saturating_sub(before) / (1024 * 1024);
        println!("RSS grew by {growth} MiB while streaming 100 MiB");
        assert!(growth < 40, "memory grew by {growth} MiB while streaming 100 MiB");
    }
}
