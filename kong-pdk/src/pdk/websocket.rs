//! `kong.websocket`: the frame being proxied in `ws_client_frame` / `ws_upstream_frame`.

use bytes::Bytes;

use crate::transaction::{Frame, Transaction};

/// `kong.websocket`.
pub struct WebSocket<'a> {
    tx: &'a mut Transaction,
}

impl<'a> WebSocket<'a> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        WebSocket { tx }
    }

    /// `get_frame()`: the current frame.
    pub fn get_frame(&self) -> Option<&Frame> {
        self.tx.frame.as_ref()
    }

    /// `set_frame_data(data)`: replaces the payload.
    pub fn set_frame_data(&mut self, data: impl Into<Bytes>) {
        if let Some(f) = &mut self.tx.frame {
            f.data = data.into();
        }
    }

    /// `drop_frame()`: the frame is not forwarded.
    pub fn drop_frame(&mut self) {
        if let Some(f) = &mut self.tx.frame {
            f.dropped = true;
        }
    }

    /// `close(code, reason)`: close both sides after this frame.
    pub fn close(&mut self, code: u16, reason: &str) {
        if let Some(f) = &mut self.tx.frame {
            f.close = Some((code, reason.to_owned()));
            f.dropped = true;
        }
    }
}
