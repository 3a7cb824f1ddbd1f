//! `kong.websocket`: the frames of a session with a WebSocket (`ws`/`wss`) service.
//!
//! Two mirrored halves, as in Kong: [`client()`](WebSocket::client) acts on frames from the
//! client (in `ws_client_frame`) and [`upstream()`](WebSocket::upstream) on frames from the
//! upstream (in `ws_upstream_frame`); both set their side's payload limit in `ws_handshake`.
//! Kong refuses a call from the wrong phase or direction at run time; here it does not compile:
//!
//! ```compile_fail
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 10, version = "1.0.0")]
//! struct Crossed {}
//!
//! #[handler]
//! impl Handler for Crossed {
//!     async fn ws_upstream_frame(&self, kong: &mut Kong<WsUpstreamFrame>) -> kong_pdk::Result {
//!         // error: `kong.websocket().client()` cannot be used in the `WsUpstreamFrame` phase
//!         kong.websocket().client().drop_frame()?;
//!         Ok(())
//!     }
//! }
//! ```
//!
//! A frame plugin that upper-cases the client's text messages and ends the session on `bye`:
//!
//! ```
//! use kong_pdk::prelude::*;
//! use kong_pdk::pdk::FrameKind;
//!
//! #[plugin(priority = 10, version = "1.0.0")]
//! struct Shout {}
//!
//! #[handler]
//! impl Handler for Shout {
//!     async fn ws_client_frame(&self, kong: &mut Kong<WsClientFrame>) -> kong_pdk::Result {
//!         let mut client = kong.websocket().client();
//!         let frame = client.get_frame()?;
//!         if frame.kind == FrameKind::Text && &frame.data[..] == b"bye" {
//!             client.close(Some(1000), Some("bye"), Some(1001), None)?;
//!         } else if frame.kind == FrameKind::Text {
//!             let loud = frame.data.to_ascii_uppercase();
//!             client.set_frame_data(loud)?;
//!         }
//!         Ok(())
//!     }
//! }
//! ```

use std::marker::PhantomData;

use bytes::Bytes;

use crate::error::PdkError;
use crate::phase;
use crate::transaction::{CloseMsg, Frame, FrameKind, Transaction};

/// The largest payload limit [`set_max_payload_size`](WsSide::set_max_payload_size) takes:
/// 32 MiB.
pub const MAX_PAYLOAD_SIZE: u64 = 33_554_432;
/// The payload limit of messages from clients unless a plugin sets another: 1 MiB.
pub const DEFAULT_CLIENT_MAX_PAYLOAD: u64 = 1_048_576;
/// The payload limit of messages from upstreams unless a plugin sets another: 16 MiB.
pub const DEFAULT_UPSTREAM_MAX_PAYLOAD: u64 = 16_777_216;

/// `kong.websocket`.
pub struct WebSocket<'a, P> {
    tx: &'a mut Transaction,
    _phase: PhantomData<P>,
}

impl<'a, P: phase::WebSocketPdk> WebSocket<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        WebSocket {
            tx,
            _phase: PhantomData,
        }
    }

    /// `kong.websocket.client`: frames from the client, and the client's payload limit.
    pub fn client(self) -> WsSide<'a, P, FromClient>
    where
        P: phase::ClientSide,
    {
        WsSide {
            tx: self.tx,
            _marker: PhantomData,
        }
    }

    /// `kong.websocket.upstream`: frames from the upstream, and the upstream's payload limit.
    pub fn upstream(self) -> WsSide<'a, P, FromUpstream>
    where
        P: phase::UpstreamSide,
    {
        WsSide {
            tx: self.tx,
            _marker: PhantomData,
        }
    }
}

mod sealed {
    pub trait Sealed {
        /// Whether this marker stands for the client side.
        const CLIENT: bool;
    }
}

/// A side of a WebSocket session, as a type: [`FromClient`] or [`FromUpstream`].
pub trait Direction: sealed::Sealed + Send + Sync + 'static {}

/// The client side (`kong.websocket.client`).
#[derive(Debug)]
pub enum FromClient {}

/// The upstream side (`kong.websocket.upstream`).
#[derive(Debug)]
pub enum FromUpstream {}

impl sealed::Sealed for FromClient {
    const CLIENT: bool = true;
}
impl sealed::Sealed for FromUpstream {
    const CLIENT: bool = false;
}
impl Direction for FromClient {}
impl Direction for FromUpstream {}

/// One side of `kong.websocket`: `kong.websocket.client` or `kong.websocket.upstream`.
pub struct WsSide<'a, P, D> {
    tx: &'a mut Transaction,
    _marker: PhantomData<(P, D)>,
}

impl<P: phase::RequestPhase, D: Direction> WsSide<'_, P, D> {
    fn state(&mut self) -> Result<&mut crate::transaction::FrameState, PdkError> {
        self.tx
            .frame
            .as_mut()
            .ok_or_else(|| PdkError::new("no frame is in flight"))
    }

    /// `get_frame()`: the message in flight (type, payload, and a close frame's status), with
    /// the changes earlier handlers made.
    pub fn get_frame(&self) -> Result<&Frame, PdkError>
    where
        P: phase::Frame,
    {
        self.tx
            .frame
            .as_ref()
            .map(|f| &f.frame)
            .ok_or_else(|| PdkError::new("no frame is in flight"))
    }

    /// `set_frame_data(data)`: replaces the payload (a close frame's reason) that later
    /// handlers and the peer see.
    pub fn set_frame_data(&mut self, data: impl Into<Bytes>) -> Result<(), PdkError>
    where
        P: phase::Frame,
    {
        self.state()?.frame.data = data.into();
        Ok(())
    }

    /// `set_status(status)`: replaces the status code of the close frame in flight.
    pub fn set_status(&mut self, status: u16) -> Result<(), PdkError>
    where
        P: phase::Frame,
    {
        let state = self.state()?;
        if state.frame.kind != FrameKind::Close {
            return Err(PdkError::new("cannot override status code of non-close frame"));
        }
        state.frame.status = Some(status);
        Ok(())
    }

    /// `drop_frame()`: the frame is not forwarded and later handlers do not see it. Close
    /// frames cannot be dropped.
    pub fn drop_frame(&mut self) -> Result<(), PdkError>
    where
        P: phase::Frame,
    {
        let state = self.state()?;
        if state.frame.kind == FrameKind::Close {
            return Err(PdkError::new("cannot drop a close frame"));
        }
        state.dropped = true;
        Ok(())
    }

    /// `close(status, message, peer_status, peer_message)`: ends the session. The frame in
    /// flight is dropped, this side gets a close frame with `status` and `message` (by
    /// default the frame's own status and payload) and the other side one with `peer_status`
    /// and `peer_message`; a close without a status is sent bare.
    pub fn close(
        &mut self,
        status: Option<u16>,
        message: Option<&str>,
        peer_status: Option<u16>,
        peer_message: Option<&str>,
    ) -> Result<(), PdkError>
    where
        P: phase::Frame,
    {
        let state = self.state()?;
        let own = CloseMsg {
            status: status.or(state.frame.status),
            reason: message.map_or_else(|| state.frame.data.clone(), |m| Bytes::copy_from_slice(m.as_bytes())),
        };
        let peer = CloseMsg {
            status: peer_status,
            reason: peer_message.map_or_else(Bytes::new, |m| Bytes::copy_from_slice(m.as_bytes())),
        };
        state.dropped = true;
        state.close = Some((own, peer));
        Ok(())
    }

    /// `set_max_payload_size(size)`: the largest message this side may send, in bytes (`0`:
    /// Kong's default, 1 MiB for clients and 16 MiB for upstreams; at most 32 MiB). A message
    /// over it closes the session: this side gets 1009 `Payload Too Large`, the other 1001.
    pub fn set_max_payload_size(&mut self, size: u64) -> Result<(), PdkError>
    where
        P: phase::PayloadLimit,
    {
        if size > MAX_PAYLOAD_SIZE {
            return Err(PdkError::new(format!("`size` must be <= {MAX_PAYLOAD_SIZE}")));
        }
        let limit = (size > 0).then_some(size);
        if D::CLIENT {
            self.tx.ws_limits.client = limit;
        } else {
            self.tx.ws_limits.upstream = limit;
        }
        Ok(())
    }
}
