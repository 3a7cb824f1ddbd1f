//! The PDK's functions, with Kong's values and messages, exercised through the harness.

use std::sync::Mutex;

use kong_pdk::entities::Consumer;
use kong_pdk::pdk::QueryValue;
use kong_pdk::prelude::*;
use kong_pdk::testing::{Harness, MockResponse, TestRequest};
use serde_json::{Value, json};

/// Reads the request in access and reports through response headers.
#[plugin(priority = 100, version = "1.0.0", name = "request-probe")]
pub struct RequestProbe {}

#[handler]
impl Handler for RequestProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let req = kong.request();
        let report = json!({
            "scheme": req.get_scheme(),
            "host": req.get_host(),
            "port": req.get_port(),
            "method": req.get_method(),
            "path": req.get_path(),
            "raw_path": req.get_raw_path(),
            "path_with_query": req.get_path_with_query(),
            "raw_query": req.get_raw_query(),
            "a": req.get_query_arg("a").and_then(|v| v.as_str().map(str::to_owned)),
            "flag": req.get_query_arg("flag") == Some(QueryValue::Flag),
            "header": req.get_header("x_custom_header"),
            "forwarded_scheme": req.get_forwarded_scheme(),
            "forwarded_host": req.get_forwarded_host(),
            "forwarded_port": req.get_forwarded_port(),
            "http_version": req.get_http_version(),
        });
        let body = kong.request().get_body().await;
        let report = json!({ "request": report, "body": body.map_err(|e| e.message().to_owned()) });
        kong.response().set_header("X-Report", report.to_string())?;
        Ok(())
    }
}

fn report(res: &kong_pdk::testing::Outcome) -> Value {
    serde_json::from_str(res.header("X-Report").expect("report")).unwrap()
}

#[tokio::test]
async fn request_getters_return_kongs_values() {
    let gw = Harness::new().plugin::<RequestProbe>(json!({})).start().await.unwrap();
    let res = gw
        .send(
            TestRequest::post("/a/./b/../c%7e?a=1&a=2&flag", r#"{"k":"v"}"#)
                .header("Content-Type", "application/json")
                .header("X-Custom-Header", "yes")
                .header("X-Forwarded-Proto", "HTTPS")
                .header("X-Forwarded-Host", "public.example.com:8443"),
            |_| MockResponse::ok(""),
        )
        .await;
    let r = report(&res);
    assert_eq!(r["request"]["scheme"], "http");
    assert_eq!(r["request"]["host"], "kong.test");
    assert_eq!(r["request"]["port"], 8000);
    assert_eq!(r["request"]["method"], "POST");
    assert_eq!(r["request"]["path"], "/a/c~");
    assert_eq!(r["request"]["raw_path"], "/a/./b/../c%7e");
    assert_eq!(r["request"]["path_with_query"], "/a/./b/../c%7e?a=1&a=2&flag");
    assert_eq!(r["request"]["raw_query"], "a=1&a=2&flag");
    assert_eq!(r["request"]["a"], "1");
    assert_eq!(r["request"]["flag"], true);
    assert_eq!(r["request"]["header"], "yes", "`_` matches `-`, case-insensitive");
    assert_eq!(r["request"]["forwarded_scheme"], "http", "client not trusted");
    assert_eq!(r["request"]["forwarded_host"], "kong.test");
    assert_eq!(r["request"]["http_version"], 1.1);
    assert_eq!(r["body"]["Ok"], json!({ "k": "v" }));
}

#[tokio::test]
async fn forwarded_getters_trust_only_trusted_ips() {
    let gw = Harness::new()
        .plugin::<RequestProbe>(json!({}))
        .trusted_ips(&["127.0.0.0/8"])
        .start()
        .await
        .unwrap();
    let res = gw
        .send(
            TestRequest::get("/")
                .header("X-Forwarded-Proto", "HTTPS")
                .header("X-Forwarded-Host", "Public.Example.com:8443"),
            |_| MockResponse::ok(""),
        )
        .await;
    let r = report(&res);
    assert_eq!(r["request"]["forwarded_scheme"], "https");
    assert_eq!(r["request"]["forwarded_host"], "public.example.com");
    assert_eq!(r["request"]["forwarded_port"], 8443);
    assert_eq!(r["body"]["Err"], "missing content type");
}

#[tokio::test]
async fn get_body_reports_kongs_errors() {
    let gw = Harness::new().plugin::<RequestProbe>(json!({})).start().await.unwrap();
    let res = gw
        .send(
            TestRequest::post("/", "not json").header("Content-Type", "application/json"),
            |_| MockResponse::ok(""),
        )
        .await;
    assert_eq!(report(&res)["body"]["Err"], "invalid json body");
    let res = gw
        .send(
            TestRequest::post("/", "a=1&b").header("Content-Type", "application/x-www-form-urlencoded"),
            |_| MockResponse::ok(""),
        )
        .await;
    assert_eq!(report(&res)["body"]["Ok"], json!({ "a": "1", "b": true }));
    let res = gw
        .send(TestRequest::post("/", "x").header("Content-Type", "text/csv"), |_| {
            MockResponse::ok("")
        })
        .await;
    assert_eq!(report(&res)["body"]["Err"], "unsupported content type 'text/csv'");
    let big = "x".repeat(9 * 1024);
    let res = gw
        .send(
            TestRequest::post("/", big).header("Content-Type", "application/json"),
            |_| MockResponse::ok(""),
        )
        .await;
    assert_eq!(
        report(&res)["body"]["Err"],
        "request body did not fit into client body buffer, consider raising 'client_body_buffer_size'"
    );
}

/// Rewrites the upstream request.
#[plugin(priority = 100, version = "1.0.0", name = "upstream-rewriter")]
pub struct UpstreamRewriter {}

#[handler]
impl Handler for UpstreamRewriter {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let mut svc = kong.service();
        svc.set_target("backend.internal", 9000)?;
        svc.set_retries(2)?;
        svc.set_timeouts(100, 200, 300)?;
        let mut req = svc.request();
        req.set_method("PUT")?;
        req.set_path("/v2/items")?;
        req.set_query([("z", "last"), ("a", "first one")]);
        req.clear_query_arg("z");
        req.set_header("X-Added", 42)?;
        req.add_header("X-Multi", "a")?;
        req.add_header("X-Multi", "b")?;
        req.clear_header("X-Remove-Me")?;
        req.set_header("Host", "backend.example")?;
        req.set_scheme("https")?;
        req.set_json_body(&json!({ "replaced": true }))?;
        assert_eq!(
            req.set_path("relative").unwrap_err().message(),
            "path must start with /"
        );
        assert_eq!(req.set_method("FETCH").unwrap_err().message(), "invalid method: FETCH");
        assert_eq!(req.set_scheme("ftp").unwrap_err().message(), "invalid scheme: ftp");
        assert_eq!(
            kong.service().set_retries(40000).unwrap_err().message(),
            "retries must be an integer between 0 and 32767"
        );
        Ok(())
    }
}

#[tokio::test]
async fn service_request_setters_shape_the_upstream_request() {
    let gw = Harness::new()
        .plugin::<UpstreamRewriter>(json!({}))
        .start()
        .await
        .unwrap();
    let res = gw
        .send(TestRequest::get("/old?x=1").header("X-Remove-Me", "1"), |_| {
            MockResponse::ok("")
        })
        .await;
    let up = res.upstream_request().expect("proxied");
    assert_eq!(
        (up.host.as_str(), up.port, up.scheme.as_str()),
        ("backend.internal", 9000, "https")
    );
    assert_eq!(up.retries, 2);
    assert_eq!(
        (up.timeouts.connect, up.timeouts.write, up.timeouts.read),
        (100, 200, 300)
    );
    assert_eq!(up.method, http::Method::PUT);
    assert_eq!(up.path_with_query(), "/v2/items?a=first%20one");
    assert_eq!(up.headers["x-added"], "42");
    assert_eq!(up.headers.get_all("x-multi").iter().count(), 2);
    assert!(up.headers.get("x-remove-me").is_none());
    assert_eq!(up.host_header.as_deref(), Some("backend.example"));
    assert_eq!(res.upstream_body().unwrap().as_ref(), br#"{"replaced":true}"#);
    assert_eq!(up.headers["content-type"], "application/json");
}

/// Exercises `kong.response` argument checks and `error` defaults.
#[plugin(priority = 100, version = "1.0.0", name = "response-probe")]
pub struct ResponseProbe {
    #[field(default = 0)]
    error_status: u16,
}

#[handler]
impl Handler for ResponseProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let mut res = kong.response();
        assert_eq!(
            res.set_status(99).unwrap_err().message(),
            "code must be a number between 100 and 599"
        );
        assert_eq!(
            res.set_header("bad header", "x").unwrap_err().message(),
            "invalid header name \"bad header\""
        );
        res.set_header("X-Empty", "")?;
        res.set_header("Transfer-Encoding", "chunked")?;
        if self.error_status != 0 {
            assert!(res.error(302, None).is_err(), "error needs 400..599");
            return res.error(self.error_status, None);
        }
        Ok(())
    }

    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        let source = kong.response().get_source();
        let status = kong.response().get_status();
        kong.response().set_header("X-Source", source)?;
        kong.response().set_header("X-Seen-Status", status)?;
        Ok(())
    }
}

#[tokio::test]
async fn response_setters_follow_kongs_rules() {
    let gw = Harness::new().plugin::<ResponseProbe>(json!({})).start().await.unwrap();
    let res = gw.send(TestRequest::get("/"), |_| MockResponse::new(204)).await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.header("X-Empty"), Some(" "), "\"\" is sent as a space");
    assert_eq!(res.header("transfer-encoding"), None, "Transfer-Encoding is ignored");
    assert_eq!(res.header("X-Source"), Some("service"));
    assert_eq!(res.header("X-Seen-Status"), Some("204"));
}

#[tokio::test]
async fn error_uses_kongs_default_messages() {
    for (status, message) in [
        (401, "Unauthorized"),
        (429, "Too many requests"),
        (503, "The upstream server is currently unavailable"),
        (599, "The upstream server responded with 599"),
    ] {
        let gw = Harness::new()
            .plugin::<ResponseProbe>(json!({ "error_status": status }))
            .start()
            .await
            .unwrap();
        let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("")).await;
        assert_eq!(res.status(), status);
        assert_eq!(res.json()["message"], message);
        assert_eq!(res.json()["request_id"], res.transaction().request_id());
        assert_eq!(res.header("X-Source"), Some("exit"));
    }
    let gw = Harness::new()
        .plugin::<ResponseProbe>(json!({ "error_status": 404 }))
        .start()
        .await
        .unwrap();
    let res = gw
        .send(TestRequest::new(http::Method::HEAD, "/"), |_| MockResponse::ok(""))
        .await;
    assert_eq!(res.status(), 404);
    assert!(res.body().is_empty(), "HEAD gets no body");
}

/// Authenticates in access; reads the consumer in log and serializes.
#[plugin(priority = 100, version = "1.0.0", name = "client-probe")]
pub struct ClientProbe {}

static SERIALIZED: Mutex<Vec<Value>> = Mutex::new(Vec::new());

#[handler]
impl Handler for ClientProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        assert_eq!(
            kong.client().authenticate(None, None).unwrap_err().message(),
            "either credential or consumer must be provided"
        );
        kong.client().authenticate(Some(Consumer::new("bob")), None)?;
        let ip = kong.client().get_ip();
        kong.response().set_header("X-Client-Ip", ip)?;
        kong.log().set_serialize_value("custom.field", json!("added"));
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        let user = kong.client().get_consumer().and_then(|c| c.username.clone());
        assert_eq!(user.as_deref(), Some("bob"));
        assert!(kong.router().get_route().is_some());
        SERIALIZED.lock().unwrap().push(kong.log().serialize());
        Ok(())
    }
}

#[tokio::test]
async fn client_consumer_and_serialize() {
    let gw = Harness::new().plugin::<ClientProbe>(json!({})).start().await.unwrap();
    let res = gw
        .send(
            TestRequest::get("/path?q=1")
                .header("Authorization", "secret")
                .client_ip("10.1.2.3".parse().unwrap()),
            |_| MockResponse::ok("hello").header("X-Up", "1"),
        )
        .await;
    assert_eq!(res.header("X-Client-Ip"), Some("10.1.2.3"));
    let s = SERIALIZED.lock().unwrap().pop().expect("serialized in log");
    assert_eq!(s["request"]["method"], "GET");
    assert_eq!(s["request"]["uri"], "/path?q=1");
    assert_eq!(s["request"]["url"], "http://kong.test:8000/path?q=1");
    assert_eq!(s["request"]["querystring"], json!({ "q": "1" }));
    assert_eq!(s["request"]["headers"]["authorization"], "REDACTED");
    assert_eq!(s["request"]["id"], res.transaction().request_id());
    assert_eq!(s["response"]["status"], 200);
    assert_eq!(s["response"]["headers"]["x-up"], "1");
    assert_eq!(s["upstream_status"], "200");
    assert_eq!(s["consumer"]["username"], "bob");
    assert_eq!(s["client_ip"], "10.1.2.3");
    assert_eq!(s["source"], "upstream");
    assert_eq!(s["custom"]["field"], "added");
    assert!(s["route"]["id"].is_string());
    assert!(s["service"]["id"].is_string());
}

/// Reads the client certificate chain and overrides the logged verification result.
#[plugin(priority = 100, version = "1.0.0", name = "client-tls-probe")]
pub struct ClientTlsProbe {}

static TLS_SERIALIZED: Mutex<Vec<Value>> = Mutex::new(Vec::new());

#[handler]
impl Handler for ClientTlsProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let chain = kong
            .client()
            .tls()
            .get_full_client_certificate_chain()
            .map(str::to_owned);
        let err = kong.client().tls().set_client_verify("MAYBE").unwrap_err();
        assert_eq!(
            err.message(),
            r#"unknown client verify value: MAYBE accepted values are: "SUCCESS", "NONE" or "FAILED:<reason>""#
        );
        if chain.as_deref().is_some_and(|c| c.starts_with("trusted")) {
            kong.client().tls().set_client_verify("SUCCESS")?;
        }
        kong.response()
            .set_header("X-Chain", chain.as_deref().unwrap_or("none"))?;
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        TLS_SERIALIZED.lock().unwrap().push(kong.log().serialize());
        Ok(())
    }
}

#[tokio::test]
async fn client_tls_chain_and_client_verify_in_the_log() {
    let gw = Harness::new()
        .plugin::<ClientTlsProbe>(json!({}))
        .start()
        .await
        .unwrap();
    let tls = |req: TestRequest| {
        let gw = &gw;
        async move {
            let res = gw.send(req, |_| MockResponse::ok("")).await;
            let logged = TLS_SERIALIZED.lock().unwrap().pop().expect("serialized in log");
            (
                res.header("X-Chain").map(str::to_owned),
                logged["request"]["tls"].clone(),
            )
        }
    };
    let (chain, logged) = tls(TestRequest::get("/plain")).await;
    assert_eq!(
        (chain.as_deref(), logged),
        (Some("none"), Value::Null),
        "no TLS, no request.tls"
    );
    let (chain, logged) = tls(TestRequest::get("/tls").https()).await;
    assert_eq!(chain.as_deref(), Some("none"));
    assert_eq!(logged["client_verify"], "NONE");
    assert_eq!(logged["version"], "TLSv1.3");
    let (chain, logged) = tls(TestRequest::get("/cert").client_certificate("untrusted pem")).await;
    assert_eq!(chain.as_deref(), Some("untrusted pem"));
    assert_eq!(logged["client_verify"], "FAILED:unable to get local issuer certificate");
    let (_, logged) = tls(TestRequest::get("/cert").client_certificate("trusted pem")).await;
    assert_eq!(logged["client_verify"], "SUCCESS", "set_client_verify overrides it");
}

/// Drops, rewrites and closes WebSocket frames.
#[plugin(priority = 100, version = "1.0.0", name = "frame-probe")]
pub struct FrameProbe {}

#[handler]
impl Handler for FrameProbe {
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> kong_pdk::Result {
        if kong.request().get_header("x-reject").is_some() {
            return kong.response().exit(403, "no websockets for you");
        }
        Ok(())
    }

    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        let mut client = kong.websocket().client();
        let data = client.get_frame()?.data.clone();
        match data.as_ref() {
            b"drop" => client.drop_frame()?,
            b"bye" => client.close(Some(1000), Some("goodbye"), None, None)?,
            other => {
                let upper = other.to_ascii_uppercase();
                client.set_frame_data(upper)?;
            }
        }
        Ok(())
    }
}

#[tokio::test]
async fn websocket_frames_can_be_rewritten_dropped_and_closed() {
    use kong_pdk::pdk::{Frame, FrameKind::Text};
    use kong_pdk::testing::WsSend::{Client, Upstream};
    let gw = Harness::new().plugin::<FrameProbe>(json!({})).start().await.unwrap();
    let out = gw
        .websocket(
            TestRequest::get("/ws"),
            [
                Client(Frame::new(Text, "hello")),
                Client(Frame::new(Text, "drop")),
                Upstream(Frame::new(Text, "from upstream")),
                Client(Frame::new(Text, "bye")),
                Client(Frame::new(Text, "never")),
            ],
        )
        .await;
    assert_eq!(out.to_upstream[0], Frame::new(Text, "HELLO"));
    assert_eq!(out.to_client[0], Frame::new(Text, "from upstream"));
    // `close` with no peer status: the client gets 1000 "goodbye", the upstream a bare close.
    assert_eq!(out.to_client[1], Frame::close(1000, "goodbye"));
    let bare = &out.to_upstream[1];
    assert_eq!(
        (bare.kind, bare.status, bare.data.len()),
        (kong_pdk::pdk::FrameKind::Close, None, 0)
    );
    assert_eq!((out.to_client.len(), out.to_upstream.len()), (2, 2));
    let out = gw.websocket(TestRequest::get("/ws").header("X-Reject", "1"), []).await;
    assert_eq!(out.rejected, Some((403, bytes::Bytes::from("no websockets for you"))));
}

/// Returns an `Exit` from the phase its config names.
#[plugin(priority = 100, version = "1.0.0", name = "exit-returner")]
pub struct ExitReturner {
    #[field(default = "access")]
    phase: String,
}

impl ExitReturner {
    fn exit(&self, phase: &str) -> kong_pdk::Result {
        match (self.phase.as_str(), phase) {
            ("bad-header", "access") => Err(Exit::error(401, "nope").header("bad name", "x").into()),
            (wanted, here) if wanted == here => Err(Exit::error(401, "No API key found in request")
                .header("WWW-Authenticate", "Key")
                .into()),
            _ => Ok(()),
        }
    }
}

#[handler]
impl Handler for ExitReturner {
    async fn rewrite(&self, _kong: &mut Kong<Rewrite>) -> kong_pdk::Result {
        if self.phase == "rewrite" {
            return Err(Exit::new(418, json!({ "teapot": true })).into());
        }
        Ok(())
    }

    async fn access(&self, _kong: &mut Kong<Access>) -> kong_pdk::Result {
        self.exit("access")
    }

    async fn header_filter(&self, _kong: &mut Kong<HeaderFilter>) -> kong_pdk::Result {
        self.exit("header_filter")
    }

    async fn log(&self, _kong: &mut Kong<Log>) -> kong_pdk::Result {
        self.exit("log")
    }
}

async fn exit_in(phase: &str) -> kong_pdk::testing::Outcome {
    let gw = Harness::new()
        .plugin::<ExitReturner>(json!({ "phase": phase }))
        .start()
        .await
        .unwrap();
    gw.send(TestRequest::get("/"), |_| MockResponse::ok("upstream")).await
}

#[tokio::test]
async fn a_returned_exit_is_the_response_where_the_phase_may_answer() {
    let res = exit_in("rewrite").await;
    assert_eq!((res.status(), res.body_text().as_str()), (418, r#"{"teapot":true}"#));
    assert_eq!(res.header("content-type"), Some("application/json; charset=utf-8"));
    assert!(res.upstream_request().is_none());
    for phase in ["access", "header_filter"] {
        let res = exit_in(phase).await;
        assert_eq!(res.status(), 401, "{phase}");
        assert_eq!(res.json()["message"], "No API key found in request", "{phase}");
        assert_eq!(res.header("www-authenticate"), Some("Key"), "{phase}");
        assert!(!res.logged("failed"), "an exit is no failure: {:?}", res.logs());
    }
    // log cannot answer: the exit is a failure there, logged, and the response stands.
    let res = exit_in("log").await;
    assert_eq!((res.status(), res.body_text().as_str()), (200, "upstream"));
    assert!(
        res.logged("[exit-returner] log failed: exit with status 401"),
        "{:?}",
        res.logs()
    );
    // An exit Kong would refuse is a 500, as the PDK call would have been.
    let res = exit_in("bad-header").await;
    assert_eq!(res.status(), 500);
    assert!(res.logged("invalid header name \"bad name\""), "{:?}", res.logs());
}

/// Counts the frames it sees in `kong.ctx.plugin` (both directions), records the count with
/// `set_serialize_value` from the frame handlers, and logs both in `ws_close`.
#[plugin(priority = 50, version = "1.0.0", name = "frame-counter")]
pub struct FrameCounter {}

/// The same, as a second plugin: its count must be its own.
#[plugin(priority = 40, version = "1.0.0", name = "frame-counter-2")]
pub struct FrameCounter2 {}

#[derive(Clone, Copy, Default)]
struct Count(u64);

fn bump(ctx: &mut kong_pdk::TypeMap) -> u64 {
    let n = ctx.get::<Count>().map_or(0, |c| c.0) + 1;
    ctx.insert(Count(n));
    n
}

#[handler]
impl Handler for FrameCounter {
    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        let n = bump(kong.ctx().plugin());
        kong.log().set_serialize_value("frames", json!(n));
        Ok(())
    }

    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> kong_pdk::Result {
        let n = bump(kong.ctx().plugin());
        kong.log().set_serialize_value("frames", json!(n));
        Ok(())
    }

    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> kong_pdk::Result {
        let mine = kong.ctx().plugin().get::<Count>().map_or(0, |c| c.0);
        let logged = kong.log().serialize()["frames"].clone();
        kong.log().notice(format!("mine={mine} serialized={logged}"));
        Ok(())
    }
}

#[handler]
impl Handler for FrameCounter2 {
    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
        bump(kong.ctx().plugin());
        Ok(())
    }

    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> kong_pdk::Result {
        let mine = kong.ctx().plugin().get::<Count>().map_or(0, |c| c.0);
        kong.log().notice(format!("second={mine}"));
        Ok(())
    }
}

#[tokio::test]
async fn frame_handlers_share_their_plugins_ctx_across_directions_and_into_ws_close() {
    use kong_pdk::pdk::{Frame, FrameKind};
    use kong_pdk::testing::WsSend::{Client, Upstream};
    let gw = Harness::new()
        .plugin::<FrameCounter>(json!({}))
        .plugin::<FrameCounter2>(json!({}))
        .start()
        .await
        .unwrap();
    let text = |s: &str| Frame::new(FrameKind::Text, s.to_owned());
    let out = gw
        .websocket(
            TestRequest::get("/ws"),
            [Client(text("a")), Upstream(text("b")), Client(text("c"))],
        )
        .await;
    let lines: Vec<&str> = out.logs.iter().map(|l| l.message.as_str()).collect();
    assert!(lines.iter().any(|l| l.ends_with("mine=3 serialized=3")), "{lines:?}");
    assert!(lines.iter().any(|l| l.ends_with("second=2")), "{lines:?}");
}

/// `TE: trailers` reaches the upstream; other TE values do not (Kong's `upstream_te`).
#[tokio::test]
async fn only_te_trailers_goes_upstream() {
    let gw = Harness::new().start().await.unwrap();
    for (te, upstream) in [("trailers", Some("trailers")), ("gzip", None)] {
        let res = gw
            .send(TestRequest::get("/").header("TE", te), |_| MockResponse::ok(""))
            .await;
        let sent = res
            .upstream_request()
            .unwrap()
            .headers
            .get("te")
            .and_then(|v| v.to_str().ok());
        assert_eq!(sent, upstream, "{te}");
    }
}

/// Serializes twice in log: the JSON written directly must be the bytes of the `Value`'s.
#[plugin(priority = 100, version = "1.0.0", name = "serialize-twice")]
pub struct SerializeTwice {
    #[field(default = false)]
    authenticate: bool,
}

static TWICE: Mutex<Vec<(Vec<u8>, Vec<u8>)>> = Mutex::new(Vec::new());

#[handler]
impl Handler for SerializeTwice {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        if self.authenticate {
            kong.client().authenticate(Some(Consumer::new("bob")), None)?;
        }
        Ok(())
    }

    async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
        let direct = kong.log().serialize_json();
        let through_value = serde_json::to_vec(&kong.log().serialize()).unwrap();
        TWICE.lock().unwrap().push((direct, through_value));
        Ok(())
    }
}

#[tokio::test]
async fn serialize_json_writes_the_bytes_of_serialize() {
    for authenticate in [false, true] {
        let gw = Harness::new()
            .plugin::<SerializeTwice>(json!({ "authenticate": authenticate }))
            .start()
            .await
            .unwrap();
        let requests = [
            TestRequest::get("/"),
            TestRequest::get("/a/b?x=1&x=2&flag&e=%20y")
                .header("Authorization", "Basic abc")
                .header("X-Many", "1")
                .header("X-Many", "2"),
            TestRequest::post("/post", "body").https(),
        ];
        for req in requests {
            gw.send(req, |_| {
                MockResponse::ok("hello")
                    .header("Set-Cookie", "a=1")
                    .header("Set-Cookie", "b=2")
            })
            .await;
            let (direct, through_value) = TWICE.lock().unwrap().pop().expect("logged");
            assert_eq!(
                String::from_utf8(direct).unwrap(),
                String::from_utf8(through_value).unwrap()
            );
        }
        // A request no route matches, answered by Kong.
        gw.send(TestRequest::get("/").unrouted(), |_| MockResponse::ok(""))
            .await;
        if let Some((direct, through_value)) = TWICE.lock().unwrap().pop() {
            assert_eq!(direct, through_value);
        }
    }
}

/// Resolves a reference with `kong.vault` in access.
#[plugin(priority = 100, version = "1.0.0", name = "vault-probe")]
pub struct VaultProbe {}

#[handler]
impl Handler for VaultProbe {
    async fn access(&self, kong: &mut Kong<Access>) -> kong_pdk::Result {
        let vault = kong.vault();
        let value = vault
            .get("{vault://env/kong-pdk-pdk-vault/token}")
            .map_err(kong_pdk::Error::msg)?;
        let parsed = vault.parse_reference("{vault://env/kong-pdk-pdk-vault/token}").unwrap();
        kong.response().set_header("X-Secret", &value)?;
        kong.response().set_header("X-Resource", &parsed.resource)?;
        let missing = vault.get("{vault://env/kong-pdk-pdk-vault-absent}").unwrap_err();
        kong.response().set_header("X-Missing", &missing)?;
        Ok(())
    }
}

#[tokio::test]
async fn kong_vault_resolves_env_references() {
    // SAFETY: the variable is this test's own.
    unsafe {
        std::env::set_var("KONG_PDK_PDK_VAULT", r#"{"token":"t0k3n","port":6379,"list":[]}"#);
        std::env::set_var("KONG_PDK_PDK_VAULT_PREVIOUS", "older");
    }
    let vault = kong_pdk::vault::Vault;
    assert_eq!(vault.get("{vault://env/kong-pdk-pdk-vault#2}").unwrap(), "older");
    assert_eq!(
        vault.get("{vault://env/pdk-vault/port?prefix=kong-pdk-}").unwrap(),
        "6379"
    );
    assert!(
        vault
            .get("{vault://env/kong-pdk-pdk-vault/nope}")
            .unwrap_err()
            .ends_with("(could not get subfield value: subfield nope not found in JSON secret)")
    );
    assert!(
        vault
            .get("{vault://env/kong-pdk-pdk-vault/list}")
            .unwrap_err()
            .ends_with("unexpected table value in JSON secret for subfield list)")
    );
    let gw = Harness::new().plugin::<VaultProbe>(json!({})).start().await.unwrap();
    let res = gw.send(TestRequest::get("/"), |_| MockResponse::ok("")).await;
    assert_eq!(res.header("X-Secret"), Some("t0k3n"));
    assert_eq!(res.header("X-Resource"), Some("kong-pdk-pdk-vault"));
    assert_eq!(
        res.header("X-Missing"),
        Some(
            "could not retrieve value for reference {vault://env/kong-pdk-pdk-vault-absent} \
             (could not get value from external vault (no value found))"
        )
    );
}
