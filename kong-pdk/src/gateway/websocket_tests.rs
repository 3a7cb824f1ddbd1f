//! WebSocket services over real sockets: a tokio-tungstenite client, the gateway, and an
//! upstream that records what it receives. Kong Enterprise's behaviours
//! (kong-ws-stream-tls.md section 6.1): the handshake checks, the frame PDK, aggregation,
//! payload limits, every way a session closes, and `ws_close` once.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::Frame as WireFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

use super::tests::{route, snapshot};
use super::*;
use crate::entities::Service;
use crate::executor::PluginEntity;
use crate::pdk::{FrameKind, NodeInfo};
use crate::prelude::*;
use crate::registry::Plugins;

/// What `ws-test-probe` saw in `ws_close`, by session (the `X-Session` header).
static CLOSED: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// How many frames this plugin saw in one session (`kong.ctx.plugin`).
#[derive(Clone, Copy, Default)]
struct Seen(u32);

/// Counts a frame in the plugin's context.
fn count(ctx: &mut crate::TypeMap) {
    let n = ctx.get::<Seen>().map_or(0, |s| s.0);
    ctx.insert(Seen(n + 1));
}

/// Drives the frame PDK from the messages it sees: `upper:x` is upper-cased, `drop` dropped,
/// `close` ends the session, `fail` fails, `status` misuses `set_status`, `push:x` passes;
/// a close frame with reason `drop me` misuses `drop_frame`, with `renumber` gets 4000.
/// Upstream messages `secret` are redacted.
#[plugin(priority = 10, version = "1.0.0", name = "ws-test-probe")]
struct Probe {
    client_limit: Option<u64>,
    upstream_limit: Option<u64>,
}

#[handler]
impl Handler for Probe {
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> crate::Result {
        if kong.request().get_header("x-reject").is_some() {
            return kong.response().exit(403, "no websockets for you");
        }
        kong.response().set_header("X-Handshake", "seen")?;
        if let Some(limit) = self.client_limit {
            kong.websocket().client().set_max_payload_size(limit)?;
        }
        if let Some(limit) = self.upstream_limit {
            kong.websocket().upstream().set_max_payload_size(limit)?;
        }
        Ok(())
    }

    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> crate::Result {
        count(kong.ctx().plugin());
        let mut client = kong.websocket().client();
        let frame = client.get_frame()?.clone();
        match (frame.kind, &frame.data[..]) {
            (FrameKind::Close, b"drop me") => client.drop_frame()?,
            (FrameKind::Close, b"renumber") => client.set_status(4000)?,
            (_, b"drop") => client.drop_frame()?,
            (_, b"close") => client.close(
                Some(1002),
                Some("goodbye, client!"),
                Some(1001),
                Some("goodbye, upstream!"),
            )?,
            (_, b"fail") => return Err(crate::Error::msg("asked to fail")),
            (_, b"status") => client.set_status(1000)?,
            (_, data) if data.starts_with(b"upper:") => {
                let loud = data[6..].to_ascii_uppercase();
                client.set_frame_data(loud)?;
            }
            _ => {}
        }
        Ok(())
    }

    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> crate::Result {
        count(kong.ctx().plugin());
        let mut upstream = kong.websocket().upstream();
        if &upstream.get_frame()?.data[..] == b"secret" {
            upstream.set_frame_data("[redacted]")?;
        }
        Ok(())
    }

    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> crate::Result {
        let seen = kong.ctx().plugin().get::<Seen>().copied().unwrap_or_default().0;
        let session = kong.request().get_header("x-session").unwrap_or_default().to_owned();
        let status = kong.log().serialize()["response"]["status"].clone();
        CLOSED.lock().unwrap().push(format!("{session} {status} {seen}"));
        Ok(())
    }
}

/// Phases `ws-test-phases` ran, by session.
static PHASES: Mutex<Vec<(String, &'static str)>> = Mutex::new(Vec::new());

/// Records every phase it runs in; configured globally.
#[plugin(priority = 5, version = "1.0.0", name = "ws-test-phases")]
struct Phases {}

fn ran<P: crate::phase::RequestPhase + crate::phase::RequestRead>(kong: &mut Kong<P>, phase: &'static str) {
    let session = kong.request().get_header("x-session").unwrap_or_default().to_owned();
    PHASES.lock().unwrap().push((session, phase));
}

#[handler]
impl Handler for Phases {
    async fn rewrite(&self, kong: &mut Kong<Rewrite>) -> crate::Result {
        ran(kong, "rewrite");
        Ok(())
    }
    async fn access(&self, kong: &mut Kong<Access>) -> crate::Result {
        ran(kong, "access");
        Ok(())
    }
    async fn header_filter(&self, kong: &mut Kong<HeaderFilter>) -> crate::Result {
        ran(kong, "header_filter");
        Ok(())
    }
    async fn body_filter(&self, kong: &mut Kong<BodyFilter>) -> crate::Result {
        ran(kong, "body_filter");
        Ok(())
    }
    async fn log(&self, kong: &mut Kong<Log>) -> crate::Result {
        ran(kong, "log");
        Ok(())
    }
    async fn ws_handshake(&self, kong: &mut Kong<WsHandshake>) -> crate::Result {
        ran(kong, "ws_handshake");
        Ok(())
    }
    async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> crate::Result {
        ran(kong, "ws_client_frame");
        Ok(())
    }
    async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> crate::Result {
        ran(kong, "ws_upstream_frame");
        Ok(())
    }
    async fn ws_close(&self, kong: &mut Kong<WsClose>) -> crate::Result {
        ran(kong, "ws_close");
        Ok(())
    }
}

/// The lines `ws_close` wrote for `session`, once at least one is there (10 s at most).
async fn closed(session: &str) -> Vec<String> {
    let prefix = format!("{session} ");
    let lines = || -> Vec<String> {
        CLOSED
            .lock()
            .unwrap()
            .iter()
            .filter(|l| l.starts_with(&prefix))
            .cloned()
            .collect()
    };
    let wait = async {
        loop {
            let found = lines();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let found = tokio::time::timeout(Duration::from_secs(10), wait)
        .await
        .expect("ws_close ran");
    // A second run would show up right after the first; give it the chance.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(lines(), found, "ws_close runs once");
    found
}

/// What the recording upstream reports.
#[derive(Debug)]
enum Report {
    Headers(http::HeaderMap, String),
    Got(Message),
    Gone,
}

/// A WebSocket upstream that reports its handshake and every message it receives; echoes
/// text and binary, answers `push:x` with `x`, answers a close with the same close, closes
/// with 4002 on `close-me` and goes away without a close on `abort-me`.
async fn recording_upstream() -> (SocketAddr, mpsc::UnboundedReceiver<Report>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let report = tx.clone();
                // The callback's types are tungstenite's.
                #[allow(clippy::result_large_err)]
                let callback = move |req: &http::Request<()>, resp| {
                    let _ = report.send(Report::Headers(req.headers().clone(), req.uri().to_string()));
                    Ok(resp)
                };
                let Ok(mut ws) = tokio_tungstenite::accept_hdr_async(stream, callback).await else {
                    return;
                };
                while let Some(Ok(msg)) = ws.next().await {
                    let _ = tx.send(Report::Got(msg.clone()));
                    if msg.to_text().is_ok_and(|t| t == "abort-me") {
                        // Gone without a close frame.
                        break;
                    }
                    let reply = match &msg {
                        Message::Text(t) if t.as_str() == "close-me" => Some(Message::Close(Some(CloseFrame {
                            code: CloseCode::from(4002),
                            reason: "upstream done".into(),
                        }))),
                        Message::Text(t) => match t.as_str().strip_prefix("push:") {
                            Some(x) => Some(Message::text(x)),
                            None => Some(msg.clone()),
                        },
                        Message::Binary(_) => Some(msg.clone()),
                        _ => None,
                    };
                    if let Some(reply) = reply
                        && ws.send(reply).await.is_err()
                    {
                        break;
                    }
                }
                let _ = tx.send(Report::Gone);
            });
        }
    });
    (addr, rx)
}

/// The next report of the recording upstream (10 s at most), skipping its handshake.
async fn upstream_got(rx: &mut mpsc::UnboundedReceiver<Report>) -> Report {
    loop {
        let seen = tokio::time::timeout(Duration::from_secs(10), rx.recv())
            .await
            .expect("the upstream reported within 10 s")
            .expect("the upstream runs");
        if !matches!(seen, Report::Headers(..)) {
            return seen;
        }
    }
}

/// A `ws` service at `addr` behind `/ws`, with `ws-test-probe` configured as `config`.
async fn ws_gateway(addr: SocketAddr, config: serde_json::Value) -> tests::Gateway {
    let mut service = Service::new("127.0.0.1", addr.port());
    service.protocol = "ws".into();
    let service = Arc::new(service);
    let mut r = route(&["/ws"], Some(&service));
    Arc::make_mut(&mut r.0).protocols = vec!["ws".into(), "wss".into()];
    let route_id = r.0.id;
    let plugins = Arc::new(
        Plugins::builder(NodeInfo::default())
            .with::<Probe>()
            .with::<Phases>()
            .build(),
    );
    let snap = snapshot(
        &plugins,
        vec![r],
        vec![
            PluginEntity::new("ws-test-probe", config).route(route_id),
            PluginEntity::new("ws-test-phases", json!({})),
        ],
    )
    .await;
    tests::serve(plugins, snap).await
}

type Client = tokio_tungstenite::WebSocketStream<TcpStream>;

async fn connect(gw: SocketAddr, session: &str) -> (Client, http::Response<Option<Vec<u8>>>) {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{gw}/ws/path?q=1").into_client_request().unwrap();
    req.headers_mut().insert("x-session", session.parse().unwrap());
    req.headers_mut().insert("x-custom", "kept".parse().unwrap());
    let tcp = TcpStream::connect(gw).await.unwrap();
    tokio_tungstenite::client_async(req, tcp).await.unwrap()
}

/// The next message the client gets (10 s at most); `None` when the connection ended.
async fn client_got(ws: &mut Client) -> Option<Message> {
    tokio::time::timeout(Duration::from_secs(10), ws.next())
        .await
        .expect("the client got something within 10 s")
        .and_then(Result::ok)
}

fn close_of(msg: Option<Message>) -> Option<(u16, String)> {
    match msg {
        Some(Message::Close(Some(CloseFrame { code, reason }))) => Some((code.into(), reason.to_string())),
        Some(Message::Close(None)) => Some((0, String::new())),
        other => panic!("expected a close frame, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_pass_through_the_plugins_both_ways_and_the_handshakes_are_kongs() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut ws, resp) = connect(gw.addr, "pass").await;
    // The client's 101: the accept key (checked by the client), Kong's headers and the
    // handshake plugin's header.
    assert_eq!(resp.status(), 101);
    assert!(resp.headers()["via"].to_str().unwrap().contains("kong"));
    assert_eq!(resp.headers()["x-handshake"], "seen");
    assert_eq!(resp.headers()["connection"], "upgrade");
    // The upstream's handshake: the gateway's own key, the client's other headers, Kong's
    // forwarding headers, the route's path and the query.
    let Some(Report::Headers(h, uri)) = seen.recv().await else {
        panic!("no handshake")
    };
    assert_eq!(uri, "/path?q=1", "strip_path took the route's prefix");
    assert_eq!(h["x-custom"], "kept");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["sec-websocket-version"], "13");
    assert_eq!(h["host"], format!("127.0.0.1:{}", up.port()));
    assert!(!h.contains_key("sec-websocket-extensions"));

    ws.send(Message::text("upper:hello")).await.unwrap();
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Text(t)) if t == "HELLO"));
    assert_eq!(client_got(&mut ws).await, Some(Message::text("HELLO")));
    // Dropped: the upstream never sees it; the next message arrives.
    ws.send(Message::text("drop")).await.unwrap();
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Binary(b)) if b[..] == [1, 2, 3]));
    assert_eq!(client_got(&mut ws).await, Some(Message::binary(vec![1u8, 2, 3])));
    // The upstream's messages go through ws_upstream_frame.
    ws.send(Message::text("push:secret")).await.unwrap();
    assert_eq!(client_got(&mut ws).await, Some(Message::text("[redacted]")));
    // Pings are the upstream's to answer; its pong comes back through the gateway.
    ws.send(Message::Ping("p".into())).await.unwrap();
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Text(_))));
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Ping(p)) if p[..] == *b"p"));
    assert_eq!(client_got(&mut ws).await, Some(Message::Pong("p".into())));
    // A close passes as it is, and the upstream's answer comes back.
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::from(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close")
    };
    assert_eq!((u16::from(c.code), c.reason.as_str()), (4001, "bye"));
    assert_eq!(close_of(client_got(&mut ws).await), Some((4001, "bye".into())));
    // ws_close once, with the 101 and the frames of both directions counted in one ctx: six
    // from the client (the dropped one included), five from the upstream.
    assert_eq!(closed("pass").await, ["pass 101 11"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragments_arrive_as_one_message_and_control_frames_between_them_pass_at_once() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut ws, _) = connect(gw.addr, "fragments").await;
    let part = |data: &str, opcode, fin| Message::Frame(WireFrame::message(data.to_owned(), opcode, fin));
    ws.send(part("a", OpCode::Data(Data::Text), false)).await.unwrap();
    ws.send(Message::Ping("between".into())).await.unwrap();
    // The ping got through while the message waits for its last fragment.
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Ping(_))));
    assert_eq!(client_got(&mut ws).await, Some(Message::Pong("between".into())));
    ws.send(part("b", OpCode::Data(Data::Continue), false)).await.unwrap();
    ws.send(part("c", OpCode::Data(Data::Continue), true)).await.unwrap();
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Text(t)) if t == "abc"));
    assert_eq!(client_got(&mut ws).await, Some(Message::text("abc")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_close_sends_each_side_its_own_frame() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut ws, _) = connect(gw.addr, "plugin-close").await;
    ws.send(Message::text("close")).await.unwrap();
    assert_eq!(
        close_of(client_got(&mut ws).await),
        Some((1002, "goodbye, client!".into()))
    );
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close")
    };
    assert_eq!((u16::from(c.code), c.reason.as_str()), (1001, "goodbye, upstream!"));
    assert_eq!(closed("plugin-close").await, ["plugin-close 101 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_handler_or_a_misused_pdk_closes_both_sides_with_1011() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    for (session, msg) in [
        ("fail", Message::text("fail")),
        ("status-on-text", Message::text("status")),
        (
            "drop-close",
            Message::Close(Some(CloseFrame {
                code: CloseCode::Normal,
                reason: "drop me".into(),
            })),
        ),
    ] {
        let (mut ws, _) = connect(gw.addr, session).await;
        ws.send(msg).await.unwrap();
        assert_eq!(
            close_of(client_got(&mut ws).await),
            Some((1011, "Internal Server Error".into())),
            "{session}"
        );
        let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
            panic!("{session}")
        };
        assert_eq!((u16::from(c.code), c.reason.as_str()), (1011, "Internal Server Error"));
        assert_eq!(closed(session).await.len(), 1);
        while let Ok(Some(s)) = tokio::time::timeout(Duration::from_millis(100), seen.recv()).await {
            assert!(matches!(s, Report::Gone | Report::Headers(..)), "{s:?}");
        }
    }
    // set_status on a close frame changes the code the upstream gets.
    let (mut ws, _) = connect(gw.addr, "renumber").await;
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Normal,
        reason: "renumber".into(),
    })))
    .await
    .unwrap();
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close")
    };
    assert_eq!(u16::from(c.code), 4000);
    assert_eq!(close_of(client_got(&mut ws).await).map(|c| c.0), Some(4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_limits_hold_at_the_limit_and_close_one_byte_over() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({ "client_limit": 64, "upstream_limit": 32 })).await;
    let (mut ws, _) = connect(gw.addr, "limits").await;
    ws.send(Message::binary(vec![b'x'; 64])).await.unwrap();
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Binary(b)) if b.len() == 64));
    // The echo of 64 bytes is over the upstream's limit of 32: the upstream is told 1009,
    // the client 1001.
    assert_eq!(close_of(client_got(&mut ws).await), Some((1001, String::new())));
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close")
    };
    assert_eq!((u16::from(c.code), c.reason.as_str()), (1009, "Payload Too Large"));

    // Fragments count together: 40 + 25 is one byte over the client's 64.
    let (mut ws, _) = connect(gw.addr, "limits-2").await;
    let part = |n: usize, opcode, fin| Message::Frame(WireFrame::message(vec![b'y'; n], opcode, fin));
    ws.send(part(40, OpCode::Data(Data::Binary), false)).await.unwrap();
    ws.send(part(25, OpCode::Data(Data::Continue), true)).await.unwrap();
    assert_eq!(
        close_of(client_got(&mut ws).await),
        Some((1009, "Payload Too Large".into()))
    );
    loop {
        match upstream_got(&mut seen).await {
            Report::Got(Message::Close(Some(c))) => {
                assert_eq!((u16::from(c.code), c.reason.as_str()), (1001, ""));
                break;
            }
            Report::Gone => {}
            other => panic!("{other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_goes_away_leaves_the_upstream_a_1001_and_shutdown_tells_both() {
    let (up, mut seen) = recording_upstream().await;
    let mut gw = ws_gateway(up, json!({})).await;
    let (ws, _) = connect(gw.addr, "abort").await;
    drop(ws);
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close")
    };
    assert_eq!((u16::from(c.code), c.reason.as_str()), (1001, ""));
    assert_eq!(closed("abort").await, ["abort 101 0"]);

    let (mut ws, _) = connect(gw.addr, "shutdown").await;
    ws.send(Message::text("hi")).await.unwrap();
    assert_eq!(client_got(&mut ws).await, Some(Message::text("hi")));
    gw.stop();
    assert_eq!(close_of(client_got(&mut ws).await), Some((1001, "Going Away".into())));
    loop {
        match upstream_got(&mut seen).await {
            Report::Got(Message::Close(Some(c))) => {
                assert_eq!((u16::from(c.code), c.reason.as_str()), (1001, "Going Away"));
                break;
            }
            Report::Got(Message::Text(_)) | Report::Gone => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(closed("shutdown").await, ["shutdown 101 2"]);
}

/// Sends `request` (and no more: the write side ends) and reads the answer to the end.
pub(super) async fn answer(addr: SocketAddr, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .expect("answered and closed within 10 s")
        .unwrap();
    String::from_utf8(got).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handshakes_kong_refuses_get_its_answers_and_ws_close_still_runs() {
    let (up, _seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let head = |session: &str, method: &str, extra: &str| {
        format!("{method} /ws HTTP/1.1\r\nHost: x\r\nX-Session: {session}\r\n{extra}\r\n")
    };
    let good = "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n";
    let cases = [
        ("POST", format!("Connection: Upgrade\r\n{good}"), "invalid request method"),
        ("GET", good.to_owned(), "invalid/missing 'Connection' header"),
        (
            "GET",
            "Connection: Upgrade\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Version: 13\r\n".to_owned(),
            "invalid/missing 'Upgrade' header",
        ),
        (
            "GET",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n".to_owned(),
            "invalid/missing 'Sec-WebSocket-Key' header",
        ),
        (
            "GET",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Key: b\r\nSec-WebSocket-Version: 13\r\n".to_owned(),
            "invalid/missing 'Sec-WebSocket-Key' header",
        ),
        (
            "GET",
            "Connection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: a\r\nSec-WebSocket-Version: 14\r\n".to_owned(),
            "invalid/missing 'Sec-WebSocket-Version' header",
        ),
    ];
    for (i, (method, extra, message)) in cases.iter().enumerate() {
        let session = format!("refused-{i}");
        let request = head(&session, method, extra);
        let answer = answer(gw.addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{answer}");
        assert!(
            answer.ends_with(&format!("\r\n\r\nCannot complete WebSocket handshake: {message}")),
            "{answer}"
        );
        assert_eq!(closed(&session).await, [format!("{session} 400 0")]);
    }
    let rejected = head(
        "rejected",
        "GET",
        &format!("Connection: Upgrade\r\nX-Reject: 1\r\n{good}"),
    );
    let answer = answer(gw.addr, &rejected).await;
    assert!(answer.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{answer}");
    assert!(answer.ends_with("no websockets for you"), "{answer}");
    assert_eq!(closed("rejected").await, ["rejected 403 0"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_close_passes_as_it_is_and_an_upstream_that_goes_away_leaves_the_client_a_1001() {
    let (up, mut seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut ws, _) = connect(gw.addr, "upstream-close").await;
    ws.send(Message::text("close-me")).await.unwrap();
    assert_eq!(
        close_of(client_got(&mut ws).await),
        Some((4002, "upstream done".into()))
    );
    // The client answers the close (tungstenite sends the answer on its next read) and the
    // answer goes back to the upstream; then the gateway ends the connection.
    assert_eq!(client_got(&mut ws).await, None);
    assert!(matches!(upstream_got(&mut seen).await, Report::Got(Message::Text(_))));
    let Report::Got(Message::Close(Some(c))) = upstream_got(&mut seen).await else {
        panic!("no close back")
    };
    assert_eq!(u16::from(c.code), 4002);
    assert_eq!(closed("upstream-close").await, ["upstream-close 101 3"]);

    let (mut ws, _) = connect(gw.addr, "upstream-abort").await;
    ws.send(Message::text("abort-me")).await.unwrap();
    assert_eq!(close_of(client_got(&mut ws).await), Some((1001, String::new())));
    assert_eq!(closed("upstream-abort").await, ["upstream-abort 101 1"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_runs_rewrite_then_the_websocket_phases_and_no_http_ones() {
    let (up, _seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut ws, _) = connect(gw.addr, "matrix").await;
    ws.send(Message::text("one")).await.unwrap();
    assert_eq!(client_got(&mut ws).await, Some(Message::text("one")));
    ws.close(None).await.unwrap();
    assert_eq!(close_of(client_got(&mut ws).await), Some((0, String::new())));
    closed("matrix").await;
    let phases: Vec<&str> = PHASES
        .lock()
        .unwrap()
        .iter()
        .filter(|(s, _)| s == "matrix")
        .map(|(_, p)| *p)
        .collect();
    assert_eq!(
        phases,
        [
            "rewrite",
            "ws_handshake",
            "ws_client_frame",
            "ws_upstream_frame",
            "ws_client_frame",
            "ws_upstream_frame",
            "ws_close"
        ]
    );
}

/// An upstream that answers handshakes by path: `/forbidden` 403 with a header, `/ext` a 101
/// with an extension nobody asked for, `/silent` nothing at all; `/gone` closes at once.
/// Counts the handshakes it left without an answer.
/// Reads a WebSocket handshake request off `tcp`: its path and the accept key it expects.
async fn read_handshake(tcp: &mut TcpStream) -> Option<(String, String)> {
    use tokio::io::AsyncReadExt;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        match tcp.read(&mut buf).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => head.extend_from_slice(&buf[..n]),
        }
    }
    let head = String::from_utf8_lossy(&head).into_owned();
    let path = head.split(' ').nth(1).unwrap_or_default().to_owned();
    let key = head
        .lines()
        .find_map(|l| l.strip_prefix("sec-websocket-key: "))
        .unwrap_or_default()
        .trim()
        .to_owned();
    Some((
        path,
        tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes()),
    ))
}

async fn raw_upstream() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let silent = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let count = silent.clone();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            let count = count.clone();
            tokio::spawn(async move {
                let Some((path, accept)) = read_handshake(&mut tcp).await else {
                    return;
                };
                let answer = match path.as_str() {
                    "/forbidden" => "HTTP/1.1 403 Forbidden\r\nX-Up: no\r\nContent-Length: 0\r\n\r\n".to_owned(),
                    "/ext" => format!(
                        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                         Sec-WebSocket-Accept: {accept}\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
                    ),
                    "/silent" => {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_secs(30)).await;
                        return;
                    }
                    _ => {
                        count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        return;
                    }
                };
                let _ = tcp.write_all(answer.as_bytes()).await;
                let mut rest = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut rest)).await;
            });
        }
    });
    (addr, silent)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_handshake_failures_get_kongs_answers() {
    let (up, tries) = raw_upstream().await;
    let mut service = Service::new("127.0.0.1", up.port());
    service.protocol = "ws".into();
    service.connect_timeout = 300;
    service.retries = 1;
    let service = Arc::new(service);
    let mut r = route(&["/ws"], Some(&service));
    Arc::make_mut(&mut r.0).protocols = vec!["ws".into()];
    let plugins = Arc::new(Plugins::builder(NodeInfo::default()).build());
    let gw = tests::serve(plugins.clone(), snapshot(&plugins, vec![r], vec![]).await).await;
    let handshake = |path: &str| {
        format!(
            "GET /ws{path} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
    };
    // Another status is the upstream's answer, its headers included.
    let forbidden = answer(gw.addr, &handshake("/forbidden")).await;
    assert!(forbidden.starts_with("HTTP/1.1 403 Forbidden\r\n"), "{forbidden}");
    assert!(
        forbidden.to_ascii_lowercase().contains("\r\nx-up: no\r\n"),
        "{forbidden}"
    );
    // An extension the gateway never asked for: 501 to the client.
    let ext = answer(gw.addr, &handshake("/ext")).await;
    assert!(ext.starts_with("HTTP/1.1 501 "), "{ext}");
    assert!(
        ext.contains("WebSocket upstream sent unsupported Sec-WebSocket-Extensions (permessage-deflate)"),
        "{ext}"
    );
    // A socket closed before answering: 502; no answer within the connect timeout: 504.
    // Both are tried again, as Kong does: retries + 1 handshakes each.
    let gone = answer(gw.addr, &handshake("/gone")).await;
    assert!(gone.starts_with("HTTP/1.1 502 "), "{gone}");
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 2);
    let silent = answer(gw.addr, &handshake("/silent")).await;
    assert!(silent.starts_with("HTTP/1.1 504 "), "{silent}");
    assert_eq!(tries.load(std::sync::atomic::Ordering::SeqCst), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_change_leaves_open_sessions_as_they_were() {
    let (up, _seen) = recording_upstream().await;
    let gw = ws_gateway(up, json!({})).await;
    let (mut before, _) = connect(gw.addr, "before-change").await;
    // The probe goes: sessions opened from now on run without it.
    let mut service = Service::new("127.0.0.1", up.port());
    service.protocol = "ws".into();
    let service = Arc::new(service);
    let mut r = route(&["/ws"], Some(&service));
    Arc::make_mut(&mut r.0).protocols = vec!["ws".into()];
    gw.proxy.swap(snapshot(&gw.plugins, vec![r], vec![]).await);
    let (mut after, _) = connect(gw.addr, "after-change").await;
    for ws in [&mut before, &mut after] {
        ws.send(Message::text("upper:same")).await.unwrap();
    }
    assert_eq!(client_got(&mut before).await, Some(Message::text("SAME")));
    assert_eq!(client_got(&mut after).await, Some(Message::text("upper:same")));
}

/// A ws upstream that completes the handshake and then reads nothing, for a minute.
async fn stalled_upstream() -> SocketAddr {
    use tokio::io::AsyncWriteExt;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut tcp, _)) = listener.accept().await {
            tokio::spawn(async move {
                let Some((_, accept)) = read_handshake(&mut tcp).await else {
                    return;
                };
                let answer = format!(
                    "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
                     Sec-WebSocket-Accept: {accept}\r\n\r\n"
                );
                let _ = tcp.write_all(answer.as_bytes()).await;
                tokio::time::sleep(Duration::from_secs(60)).await;
                drop(tcp);
            });
        }
    });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_upstream_that_reads_nothing_stops_the_client_not_the_gateways_memory() {
    let gw = ws_gateway(stalled_upstream().await, json!({})).await;
    let (mut ws, resp) = connect(gw.addr, "backpressure").await;
    assert_eq!(resp.status(), 101);
    // 64 KiB messages until one cannot be written for 2 s: the gateway stopped reading the
    // client because the upstream stopped reading it. Without backpressure the gateway would
    // take all 256 MiB into its memory.
    const MESSAGE: usize = 64 * 1024;
    const CAP: usize = 256 * 1024 * 1024;
    let payload = vec![7u8; MESSAGE];
    let mut sent = 0;
    while sent < CAP {
        match tokio::time::timeout(Duration::from_secs(2), ws.send(Message::binary(payload.clone()))).await {
            Ok(Ok(())) => sent += MESSAGE,
            Ok(Err(e)) => panic!("the session failed after {sent} bytes: {e}"),
            Err(_) => break,
        }
    }
    assert!(sent < CAP, "the client was never held back: {sent} bytes taken");
    // What is in flight is the sockets' buffers and the gateway's bounded queues.
    assert!(
        sent < 64 * 1024 * 1024,
        "{sent} bytes taken before the client was held back"
    );
}
