//! A WebSocket client for [`Gateway`](super::Gateway)s: the handshake through the proxy, then
//! frames in the PDK's terms ([`Frame`]), each wait bounded.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error, Message};

use crate::pdk::{Frame, FrameKind};

/// How long a client waits for the gateway.
const WAIT: Duration = Duration::from_secs(10);

/// A WebSocket connection through the gateway's proxy, opened by
/// [`Gateway::websocket`](super::Gateway::websocket).
pub struct WsClient {
    ws: WebSocketStream<TcpStream>,
    /// The 101's headers.
    headers: http::HeaderMap,
}

/// A handshake the gateway did not accept: its status and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WsRefused {
    /// The answer's status.
    pub status: u16,
    /// The answer's body, as text.
    pub body: String,
}

impl WsClient {
    /// Opens `ws://<proxy><path>` with `headers`.
    pub(super) async fn connect(
        proxy: SocketAddr,
        path: &str,
        headers: &[(&str, &str)],
    ) -> Result<WsClient, WsRefused> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let refused = |status: u16, body: String| WsRefused { status, body };
        let mut req = format!("ws://{proxy}{path}")
            .into_client_request()
            .map_err(|e| refused(0, e.to_string()))?;
        for (name, value) in headers {
            let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|e| refused(0, e.to_string()))?;
            let value = http::HeaderValue::from_str(value).map_err(|e| refused(0, e.to_string()))?;
            req.headers_mut().append(name, value);
        }
        let tcp = TcpStream::connect(proxy).await.map_err(|e| refused(0, e.to_string()))?;
        match tokio::time::timeout(WAIT, tokio_tungstenite::client_async(req, tcp)).await {
            Ok(Ok((ws, resp))) => Ok(WsClient {
                ws,
                headers: resp.headers().clone(),
            }),
            Ok(Err(Error::Http(resp))) => {
                let body = String::from_utf8_lossy(resp.body().as_deref().unwrap_or_default()).into_owned();
                Err(refused(resp.status().as_u16(), body))
            }
            Ok(Err(e)) => Err(refused(0, e.to_string())),
            Err(_) => Err(refused(0, "no handshake answer within 10 s".into())),
        }
    }

    /// The headers of the gateway's 101.
    pub fn headers(&self) -> &http::HeaderMap {
        &self.headers
    }

    /// Sends `frame` (a close frame without a status is sent bare).
    ///
    /// # Panics
    /// When the connection is gone.
    pub async fn send(&mut self, frame: Frame) {
        let msg = match frame.kind {
            FrameKind::Text => Message::text(String::from_utf8_lossy(&frame.data).into_owned()),
            FrameKind::Binary => Message::binary(frame.data),
            FrameKind::Ping => Message::Ping(frame.data),
            FrameKind::Pong => Message::Pong(frame.data),
            FrameKind::Close => Message::Close(frame.status.map(|code| CloseFrame {
                code: code.into(),
                reason: String::from_utf8_lossy(&frame.data).into_owned().into(),
            })),
        };
        self.ws.send(msg).await.expect("the WebSocket connection is open");
    }

    /// The next frame the gateway sends (10 s at most); `None` once the connection ended.
    ///
    /// # Panics
    /// When nothing arrives within 10 s.
    pub async fn receive(&mut self) -> Option<Frame> {
        let next = tokio::time::timeout(WAIT, self.ws.next())
            .await
            .expect("a frame or the end within 10 s");
        match next? {
            Ok(Message::Text(t)) => Some(Frame::new(FrameKind::Text, t.as_str().to_owned())),
            Ok(Message::Binary(b)) => Some(Frame::new(FrameKind::Binary, b)),
            Ok(Message::Ping(b)) => Some(Frame::new(FrameKind::Ping, b)),
            Ok(Message::Pong(b)) => Some(Frame::new(FrameKind::Pong, b)),
            Ok(Message::Close(Some(c))) => Some(Frame::close(c.code.into(), c.reason.as_str().to_owned())),
            Ok(Message::Close(None)) => Some(Frame {
                kind: FrameKind::Close,
                data: bytes::Bytes::new(),
                status: None,
            }),
            Ok(Message::Frame(_)) | Err(_) => None,
        }
    }
}
