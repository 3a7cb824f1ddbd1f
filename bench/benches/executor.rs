//! The executor's cost per request: one request through 10 plugins that implement access,
//! header_filter and log, and through 10 that implement nothing; plus the baseline of creating
//! the request's transaction alone.

use std::future::Future;
use std::hint::black_box;
use std::pin::pin;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use http::{HeaderMap, HeaderValue, Method, Version};
use kong_pdk::executor::{PluginEntity, PluginSet};
use kong_pdk::pdk::NodeInfo;
use kong_pdk::prelude::*;
use kong_pdk::registry::Plugins;
use kong_pdk::transaction::{ClientConn, ClientRequest, RequestBody, Transaction};
use serde_json::json;

macro_rules! busy {
    ($($ty:ident $name:literal $prio:literal),*) => {$(
        /// Implements access, header_filter and log.
        #[plugin(priority = $prio, version = "1.0.0", name = $name)]
        pub struct $ty {}

        #[handler]
        impl Handler for $ty {
            async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
                black_box(kong.request().get_method());
                Ok(())
            }
            async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
                black_box(kong.response().get_status());
                Ok(())
            }
            async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
                black_box(kong.plugin_id());
                Ok(())
            }
        }
    )*};
}

macro_rules! idle {
    ($($ty:ident $name:literal $prio:literal),*) => {$(
        /// Implements no phase.
        #[plugin(priority = $prio, version = "1.0.0", name = $name)]
        pub struct $ty {}

        #[handler]
        impl Handler for $ty {}
    )*};
}

busy!(B0 "busy-0" 10, B1 "busy-1" 11, B2 "busy-2" 12, B3 "busy-3" 13, B4 "busy-4" 14,
      B5 "busy-5" 15, B6 "busy-6" 16, B7 "busy-7" 17, B8 "busy-8" 18, B9 "busy-9" 19);
idle!(I0 "idle-0" 10, I1 "idle-1" 11, I2 "idle-2" 12, I3 "idle-3" 13, I4 "idle-4" 14,
      I5 "idle-5" 15, I6 "idle-6" 16, I7 "idle-7" 17, I8 "idle-8" 18, I9 "idle-9" 19);

/// Polls a future that never waits (the benchmarked handlers do no I/O).
fn run<F: Future>(fut: F) -> F::Output {
    let mut fut = pin!(fut);
    let mut cx = Context::from_waker(Waker::noop());
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
    }
}

fn set_of(names: &[&str]) -> PluginSet {
    let plugins = Arc::new(Plugins::load(names.iter().copied(), NodeInfo::default()).expect("registered"));
    let mut b = PluginSet::builder(plugins);
    for n in names {
        b.add(PluginEntity::new(*n, json!({}))).expect("valid");
    }
    b.build()
}

fn transaction(node: &Arc<NodeInfo>, headers: &HeaderMap) -> Transaction {
    let request = ClientRequest {
        method: Method::GET,
        scheme: "http",
        host: "example.com".into(),
        port: 8000,
        raw_path: "/anything".into(),
        query: None,
        version: Version::HTTP_11,
        headers: headers.clone(),
        body: RequestBody::Buffered(Bytes::new()),
    };
    Transaction::new(request, ClientConn::default(), node.clone())
}

fn request(set: &PluginSet, node: &Arc<NodeInfo>, headers: &HeaderMap, body: &Bytes) {
    let mut tx = transaction(node, headers);
    run(async {
        set.run_rewrite(&mut tx).await;
        set.run_access(&mut tx).await;
        tx.response.status = 200;
        set.run_header_filter(&mut tx).await;
        black_box(set.run_body_filter(&mut tx, body.clone(), true).await);
        set.run_log(&mut tx).await;
    });
    black_box(tx);
}

fn bench(c: &mut Criterion) {
    let node = Arc::new(NodeInfo::default());
    let mut headers = HeaderMap::new();
    headers.insert("host", HeaderValue::from_static("example.com"));
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    let body = Bytes::from_static(b"hello");
    let busy = set_of(&[
        "busy-0", "busy-1", "busy-2", "busy-3", "busy-4", "busy-5", "busy-6", "busy-7", "busy-8", "busy-9",
    ]);
    let idle = set_of(&[
        "idle-0", "idle-1", "idle-2", "idle-3", "idle-4", "idle-5", "idle-6", "idle-7", "idle-8", "idle-9",
    ]);

    let mut g = c.benchmark_group("executor");
    g.bench_function("transaction only", |b| {
        b.iter(|| black_box(transaction(&node, &headers)))
    });
    g.bench_function("10 plugins: access+header_filter+log", |b| {
        b.iter(|| request(&busy, &node, &headers, &body))
    });
    g.bench_function("10 plugins: no phases", |b| {
        b.iter(|| request(&idle, &node, &headers, &body))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
