//! `kong.tracing` and the gateway's own spans (`tracing_instrumentations`), through the
//! harness: plugins add spans under the active one, the router and each plugin phase get
//! theirs, and nothing is recorded when tracing is off.

use std::sync::Mutex;

use kong_pdk::prelude::*;
use kong_pdk::testing::{Harness, MockResponse, TestRequest};
use kong_pdk::tracer::{AttributeValue, SpanKind, SpanOptions, Status};
use serde_json::json;

/// Starts a span of its own in access, and reports every span in log.
#[plugin(priority = 100, version = "1.0.0", name = "span-probe")]
pub struct SpanProbe {}

/// What the probe saw in log: (name, parent's name, attributes).
type Seen = Vec<(String, Option<String>, Vec<(String, AttributeValue)>, Option<Status>)>;

/// By request path: the tests run at once.
static SEEN: Mutex<Vec<(String, Seen)>> = Mutex::new(Vec::new());

#[handler]
impl Handler for SpanProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let mut tracing = kong.tracing();
        let options = SpanOptions {
            kind: SpanKind::Client,
            ..SpanOptions::default()
        };
        if let Some(span) = tracing.start_span_with("probe.lookup", options) {
            let inner = tracing.start_span("probe.inner").expect("a child span");
            tracing.finish(inner);
            if let Some(s) = tracing.span_mut(span) {
                s.set_attribute("probe.hits", 3i64);
                s.record_error("cache miss");
                s.set_status(Status::Error);
            }
            tracing.finish(span);
        }
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        let tracing = kong.tracing();
        let spans = tracing.spans();
        let seen = spans
            .iter()
            .map(|s| {
                let parent = spans
                    .iter()
                    .find(|p| Some(p.span_id) == s.parent_id)
                    .map(|p| p.name.to_string());
                let attrs = s.attributes.iter().map(|(k, v)| (k.to_string(), v.clone())).collect();
                (s.name.to_string(), parent, attrs, s.status)
            })
            .collect();
        let path = kong.request().get_path();
        SEEN.lock().unwrap().push((path, seen));
        Ok(())
    }
}

fn seen(path: &str) -> Seen {
    let mut all = SEEN.lock().unwrap();
    let at = all.iter().position(|(p, _)| p == path).expect("log ran");
    all.remove(at).1
}

#[tokio::test]
async fn plugins_add_spans_under_the_gateways_own() {
    let gw = Harness::new()
        .tracing("all", 1.0)
        .plugin::<SpanProbe>(json!({}))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/traced/all"), |_| MockResponse::ok("hi"))
        .await;
    let seen = seen("/traced/all");
    let names: Vec<&str> = seen.iter().map(|s| s.0.as_str()).collect();
    assert_eq!(
        names,
        [
            "kong",
            "kong.router",
            "kong.access.plugin.span-probe",
            "probe.lookup",
            "probe.inner"
        ]
    );
    let parent = |name: &str| seen.iter().find(|s| s.0 == name).unwrap().1.clone();
    assert_eq!(parent("kong"), None);
    assert_eq!(parent("kong.router").as_deref(), Some("kong"));
    assert_eq!(parent("probe.lookup").as_deref(), Some("kong.access.plugin.span-probe"));
    assert_eq!(parent("probe.inner").as_deref(), Some("probe.lookup"));
    let lookup = seen.iter().find(|s| s.0 == "probe.lookup").unwrap();
    assert_eq!(lookup.2, vec![("probe.hits".to_owned(), AttributeValue::Int(3))]);
    assert_eq!(lookup.3, Some(Status::Error));
    let root = &seen[0].2;
    let attr = |k: &str| root.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    assert_eq!(attr("http.method"), Some(AttributeValue::from("GET")));
    assert_eq!(attr("http.status_code"), Some(AttributeValue::Int(200)));
    assert_eq!(attr("http.flavor"), Some(AttributeValue::from("1.1")));
}

#[tokio::test]
async fn only_the_instrumentations_asked_for_are_recorded() {
    let gw = Harness::new()
        .tracing("router", 1.0)
        .plugin::<SpanProbe>(json!({}))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/traced/router"), |_| MockResponse::ok("hi"))
        .await;
    let names: Vec<String> = seen("/traced/router").into_iter().map(|s| s.0).collect();
    assert_eq!(names, ["kong", "kong.router", "probe.lookup", "probe.inner"]);
    // A router miss: the router span is an error.
    gw.send(TestRequest::get("/nowhere").unrouted(), |_| MockResponse::ok("hi"))
        .await;
    let seen = seen("/nowhere");
    let router = seen.iter().find(|s| s.0 == "kong.router").expect("a router span");
    assert_eq!(router.3, Some(Status::Error));
}

#[tokio::test]
async fn with_tracing_off_nothing_is_recorded() {
    let gw = Harness::new().plugin::<SpanProbe>(json!({})).start().await.unwrap();
    gw.send(TestRequest::get("/traced/off"), |_| MockResponse::ok("hi"))
        .await;
    assert!(seen("/traced/off").is_empty());
}
