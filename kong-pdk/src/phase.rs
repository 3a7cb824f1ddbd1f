//! Phases: the points in a request's (or a stream's, or a worker's) life where Kong calls a
//! plugin, and the compile-time rules of which PDK functions each one may use.
//!
//! Every request phase has a marker type here ([`Access`], [`HeaderFilter`], ...). A handler
//! receives a [`Kong<Phase>`](crate::Kong) context, and the PDK functions carry bounds such as
//! [`ResponseWrite`]: a call Kong forbids in a phase is a compile error, not a runtime one.
//!
//! ```compile_fail
//! use kong_pdk::prelude::*;
//!
//! #[plugin(priority = 10, version = "1.0.0")]
//! struct Late {}
//!
//! #[handler]
//! impl Handler for Late {
//!     async fn log(&self, kong: &mut Kong<Log>) -> kong_pdk::Result {
//!         // error: `kong.response()` setters cannot be called in the log phase
//!         kong.response().set_header("X-Too-Late", "yes")?;
//!         Ok(())
//!     }
//! }
//! ```

use std::fmt;

/// A handler method Kong knows. The order is the order of a request's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[repr(u8)]
pub enum Phase {
    /// Once per worker at start, before any traffic; no configuration.
    InitWorker = 0,
    /// With every configuration of the plugin type, at start and on each change.
    Configure,
    /// TLS handshake (global instances only).
    Certificate,
    /// Before routing (global instances only).
    Rewrite,
    /// After routing, before proxying: the phase where instances are collected.
    Access,
    /// After a buffered upstream response was received.
    Response,
    /// When the response headers are about to be sent.
    HeaderFilter,
    /// For each chunk of the response body.
    BodyFilter,
    /// After the response was sent.
    Log,
    /// Stream (TCP/TLS/UDP) connections, after routing: the stream collecting phase.
    Preread,
    /// WebSocket services: the handshake, instead of `access`.
    WsHandshake,
    /// WebSocket services: each frame from the client.
    WsClientFrame,
    /// WebSocket services: each frame from the upstream.
    WsUpstreamFrame,
    /// WebSocket services: after the connection closed, instead of `log`.
    WsClose,
}

impl Phase {
    /// Every phase, in order.
    pub const ALL: [Phase; 14] = [
        Phase::InitWorker,
        Phase::Configure,
        Phase::Certificate,
        Phase::Rewrite,
        Phase::Access,
        Phase::Response,
        Phase::HeaderFilter,
        Phase::BodyFilter,
        Phase::Log,
        Phase::Preread,
        Phase::WsHandshake,
        Phase::WsClientFrame,
        Phase::WsUpstreamFrame,
        Phase::WsClose,
    ];

    /// The handler method's name, as in Kong (`"header_filter"`).
    pub const fn name(self) -> &'static str {
        match self {
            Phase::InitWorker => "init_worker",
            Phase::Configure => "configure",
            Phase::Certificate => "certificate",
            Phase::Rewrite => "rewrite",
            Phase::Access => "access",
            Phase::Response => "response",
            Phase::HeaderFilter => "header_filter",
            Phase::BodyFilter => "body_filter",
            Phase::Log => "log",
            Phase::Preread => "preread",
            Phase::WsHandshake => "ws_handshake",
            Phase::WsClientFrame => "ws_client_frame",
            Phase::WsUpstreamFrame => "ws_upstream_frame",
            Phase::WsClose => "ws_close",
        }
    }

    /// Phases that run only global plugin instances (Kong's router has not run yet).
    pub const fn globals_only(self) -> bool {
        matches!(self, Phase::Certificate | Phase::Rewrite)
    }

    /// Phases in which a handler may produce the response (`kong.response.exit`, a returned
    /// [`Exit`](crate::Exit)): those with [`ResponseWrite`].
    pub const fn may_respond(self) -> bool {
        matches!(
            self,
            Phase::Rewrite | Phase::Access | Phase::Response | Phase::HeaderFilter | Phase::WsHandshake
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of phases, as a bit set. `#[handler]` computes a plugin's set from its methods.
///
/// ```
/// use kong_pdk::{Phase, Phases};
/// const P: Phases = Phases::EMPTY.with(Phase::Access).with(Phase::Log);
/// assert!(P.contains(Phase::Access));
/// assert!(!P.contains(Phase::Rewrite));
/// assert_eq!(P.iter().collect::<Vec<_>>(), [Phase::Access, Phase::Log]);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Phases(u16);

impl Phases {
    /// No phase.
    pub const EMPTY: Phases = Phases(0);

    /// This set and `phase`.
    #[must_use]
    pub const fn with(self, phase: Phase) -> Phases {
        Phases(self.0 | (1 << phase as u8))
    }

    /// Whether `phase` is in the set.
    pub const fn contains(self, phase: Phase) -> bool {
        self.0 & (1 << phase as u8) != 0
    }

    /// Whether the set is empty.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The phases in the set, in order.
    pub fn iter(self) -> impl Iterator<Item = Phase> {
        Phase::ALL.into_iter().filter(move |p| self.contains(*p))
    }
}

impl fmt::Debug for Phases {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter().map(Phase::name)).finish()
    }
}

mod sealed {
    pub trait Sealed {}
}

/// A request or stream phase marker: the type parameter of [`Kong`](crate::Kong).
pub trait RequestPhase: sealed::Sealed + Send + Sync + 'static {
    /// The runtime phase this marker stands for.
    const PHASE: Phase;
}

macro_rules! phase_markers {
    ($($(#[$doc:meta])* $name:ident => $phase:ident;)*) => {$(
        $(#[$doc])*
        #[derive(Debug)]
        pub enum $name {}
        impl sealed::Sealed for $name {}
        impl RequestPhase for $name {
            const PHASE: Phase = Phase::$phase;
        }
    )*};
}

phase_markers! {
    /// The `certificate` phase: TLS handshake, global instances only.
    Certificate => Certificate;
    /// The `rewrite` phase: before routing, global instances only.
    Rewrite => Rewrite;
    /// The `access` phase: after routing, before proxying.
    Access => Access;
    /// The `response` phase: the whole upstream response is buffered and can be inspected.
    Response => Response;
    /// The `header_filter` phase: response headers are about to be sent.
    HeaderFilter => HeaderFilter;
    /// The `body_filter` phase: once per response body chunk.
    BodyFilter => BodyFilter;
    /// The `log` phase: the response was sent.
    Log => Log;
    /// The `preread` phase of stream (TCP/TLS/UDP) connections.
    Preread => Preread;
    /// The `ws_handshake` phase of WebSocket services.
    WsHandshake => WsHandshake;
    /// The `ws_client_frame` phase: a frame from the client.
    WsClientFrame => WsClientFrame;
    /// The `ws_upstream_frame` phase: a frame from the upstream.
    WsUpstreamFrame => WsUpstreamFrame;
    /// The `ws_close` phase: the WebSocket connection closed.
    WsClose => WsClose;
}

macro_rules! capability {
    ($(#[$doc:meta])* $trait:ident, $msg:literal, $allowed:literal: $($phase:ident),*) => {
        $(#[$doc])*
        #[diagnostic::on_unimplemented(
            message = $msg,
            label = "not allowed in this phase",
            note = $allowed
        )]
        pub trait $trait: RequestPhase {}
        $(impl $trait for $phase {})*
    };
}

capability!(
    /// Reading the client request (`kong.request()`): Kong's `request` phases.
    RequestRead,
    "`kong.request()` cannot be used in the `{Self}` phase",
    "Kong allows it in rewrite, access, response, header_filter, body_filter, log and the WebSocket phases":
    Rewrite, Access, Response, HeaderFilter, BodyFilter, Log, WsHandshake, WsClientFrame, WsUpstreamFrame, WsClose
);
capability!(
    /// Reading the client request body: Kong's `BEFORE_CONTENT` phases.
    RequestBody,
    "the request body cannot be read in the `{Self}` phase",
    "Kong allows `kong.request().get_raw_body()`/`get_body()` in rewrite, access and response":
    Rewrite, Access, Response
);
capability!(
    /// Reading the response Kong sends (`kong.response()` getters).
    ResponseRead,
    "the response cannot be read in the `{Self}` phase",
    "Kong allows `kong.response()` getters in response, header_filter, body_filter and log":
    Response, HeaderFilter, BodyFilter, Log
);
capability!(
    /// Changing the response or producing one (`set_header`, `exit`, `error`, ...).
    ResponseWrite,
    "`kong.response()` setters, `exit` and `error` cannot be called in the `{Self}` phase",
    "Kong allows them in rewrite, access, response, header_filter and ws_handshake; the headers are gone by body_filter and log":
    Rewrite, Access, Response, HeaderFilter, WsHandshake
);
capability!(
    /// Changing the response body stream (`body_filter` only).
    BodyWrite,
    "the response body can only be changed in `body_filter`, not in `{Self}`",
    "use `body_filter`, or `kong.response().exit(...)` from access/response":
    BodyFilter
);
capability!(
    /// Stream connections: `kong.response().exit()` with stream status codes.
    StreamExit,
    "stream exits are only available in `preread`, not in `{Self}`",
    "HTTP phases use `kong.response().exit()`":
    Preread
);
capability!(
    /// The consumer, credential, route and service of the request: Kong's `AUTH_AND_LATER`.
    AuthAndLater,
    "the consumer, credential, route and service are not known in the `{Self}` phase",
    "Kong resolves them in access; they are available in access, response, header_filter, body_filter, log and the WebSocket phases":
    Access, Response, HeaderFilter, BodyFilter, Log, Preread, WsHandshake, WsClientFrame, WsUpstreamFrame, WsClose
);
capability!(
    /// `kong.client().authenticate()`.
    Authenticate,
    "`kong.client().authenticate()` cannot be called in the `{Self}` phase",
    "Kong allows it in access (and ws_handshake, preread)":
    Access, WsHandshake, Preread
);
capability!(
    /// Changing the request sent upstream (`kong.service().request()` setters).
    ServiceRequestWrite,
    "`kong.service().request()` setters cannot be called in the `{Self}` phase",
    "Kong allows them in rewrite and access (and ws_handshake): the request has left by the later phases":
    Rewrite, Access, WsHandshake
);
capability!(
    /// Choosing the upstream target (`kong.service().set_target()`): Kong's `RABP`.
    ServiceTarget,
    "`kong.service()` target functions cannot be called in the `{Self}` phase",
    "Kong allows them in rewrite, access and preread (and ws_handshake)":
    Rewrite, Access, Preread, WsHandshake
);
capability!(
    /// Retries and timeouts of the upstream call (`kong.service().set_retries()`): access.
    ServiceBalancer,
    "`kong.service().set_retries()`/`set_timeouts()` cannot be called in the `{Self}` phase",
    "Kong allows them in access (and preread, ws_handshake)":
    Access, Preread, WsHandshake
);
capability!(
    /// Reading the upstream's response (`kong.service().response()`).
    ServiceResponseRead,
    "the upstream response cannot be read in the `{Self}` phase",
    "Kong allows `kong.service().response()` in response, header_filter, body_filter and log":
    Response, HeaderFilter, BodyFilter, Log
);
capability!(
    /// `kong.log().serialize()`: the log phase's request summary.
    Serialize,
    "`kong.log().serialize()` is only available in `log`, not in `{Self}`",
    "Kong builds the request summary once the response was sent":
    Log, WsClose
);
capability!(
    /// WebSocket frames (`kong.websocket()`).
    Frame,
    "WebSocket frames are only available in ws_client_frame and ws_upstream_frame, not in `{Self}`",
    "use `ws_client_frame` or `ws_upstream_frame`":
    WsClientFrame, WsUpstreamFrame
);
capability!(
    /// Asking things of the TLS handshake (`kong.client().tls()` in `certificate`).
    Handshake,
    "`kong.client().tls()` handshake requests can only be made in `certificate`, not in `{Self}`",
    "the handshake is over once the request arrives; Kong allows them in certificate":
    Certificate
);
capability!(
    /// Reading the client's certificate chain (`get_full_client_certificate_chain()`).
    ClientCertificateRead,
    "the client certificate chain cannot be read in the `{Self}` phase",
    "Kong allows `get_full_client_certificate_chain()` in rewrite, access, response and log":
    Rewrite, Access, Response, Log
);
capability!(
    /// `kong.client().tls().set_client_verify()`.
    ClientVerifyWrite,
    "`set_client_verify()` cannot be called in the `{Self}` phase",
    "Kong allows it in rewrite, access and response":
    Rewrite, Access, Response
);
capability!(
    /// Turning on response buffering (`kong.service().request().enable_buffering()`).
    EnableBuffering,
    "buffering cannot be enabled in the `{Self}` phase",
    "Kong allows `enable_buffering()` in rewrite and access":
    Rewrite, Access
);
