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

/// The phase table, written once. Every other list of phases is generated from it: the
/// [`Phase`] enum and its names, the phase markers, the request-phase methods of
/// [`Handler`](crate::Handler), the registry's dispatch and the prelude. Each row: the doc
/// of the handler method, the marker type (also the `Phase` variant) and the method. The
/// worker phases `init_worker` and `configure`, whose handlers take no request, come first and
/// are written by hand.
macro_rules! request_phases {
    ($then:ident) => {
        $then! {
            /// During each TLS handshake on a TLS proxy listener, before the certificate is
            /// chosen; global instances only. `kong.client().tls()` asks the handshake for a
            /// client certificate or turns off session reuse. An error is logged and the
            /// handshake goes on.
            Certificate certificate,
            /// Once per request, before routing; global instances only. An exit (or a returned
            /// [`Exit`](crate::Exit)) answers the request: routing, access and the upstream
            /// are skipped, while the global instances' `header_filter`, `body_filter` and
            /// `log` still run. An error does the same with `500 An unexpected error occurred`.
            Rewrite rewrite,
            /// After routing, before proxying, for the one instance of each plugin that
            /// applies (Kong's precedence of route, service and consumer scopes): authenticate,
            /// check, transform the request, or answer it. An exit or an error (500) skips the
            /// later `access` handlers and the upstream; the collected plugins' later phases
            /// still run.
            Access access,
            /// With the whole upstream response buffered (`kong.service().response()`):
            /// defining it turns on buffered proxying for the requests it applies to. An exit
            /// replaces the response; an error answers 500.
            Response response,
            /// Before the response head is sent, whatever produced the response (the
            /// upstream, an exit, an error). An exit replaces the response; an error answers
            /// 500.
            HeaderFilter header_filter,
            /// For each chunk of the response body (`kong.response().chunk()`), the last one
            /// marked as such, as the client's connection takes them. An error cuts the
            /// response short: the client gets an incomplete body.
            BodyFilter body_filter,
            /// Once per request after the response was sent, on a task of its own (shutdown
            /// waits for it). An error is logged and the other `log` handlers still run.
            Log log,
            /// Stream (TCP, TLS, UDP) connections after routing: the stream collecting phase.
            /// An exit or an error closes the connection.
            Preread preread,
            /// WebSocket services: the handshake, instead of `access`. An exit rejects it.
            WsHandshake ws_handshake,
            /// WebSocket services: each frame from the client (`kong.websocket()`). An error
            /// drops the frame and closes the connection with 1011.
            WsClientFrame ws_client_frame,
            /// WebSocket services: each frame from the upstream. An error drops the frame and
            /// closes the connection with 1011.
            WsUpstreamFrame ws_upstream_frame,
            /// WebSocket services: after the connection closed, instead of `log`. An error is
            /// logged.
            WsClose ws_close,
        }
    };
}
pub(crate) use request_phases;

/// Generates [`Phase`] from the table.
macro_rules! phase_enum {
    ($($(#[$doc:meta])* $variant:ident $method:ident,)*) => {
        /// A handler method Kong knows. The order is the order of a request's life.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum Phase {
            /// Once per worker at start, before any traffic; no configuration.
            InitWorker = 0,
            /// With every configuration of the plugin type, at start and on each change.
            Configure,
            $(
                #[doc = concat!("`", stringify!($method), "`: see [`Handler::", stringify!($method), "`](crate::Handler::", stringify!($method), ").")]
                $variant,
            )*
        }

        impl Phase {
            /// Every phase, in order.
            pub const ALL: [Phase; 2 + [$(stringify!($variant)),*].len()] =
                [Phase::InitWorker, Phase::Configure, $(Phase::$variant),*];

            /// The handler method's name, as in Kong (`"header_filter"`).
            pub const fn name(self) -> &'static str {
                match self {
                    Phase::InitWorker => "init_worker",
                    Phase::Configure => "configure",
                    $(Phase::$variant => stringify!($method),)*
                }
            }
        }
    };
}
request_phases!(phase_enum);

impl Phase {
    /// The phase whose handler method is called `name`, if any.
    ///
    /// ```
    /// use kong_pdk::Phase;
    /// assert_eq!(Phase::from_method("header_filter"), Some(Phase::HeaderFilter));
    /// assert_eq!(Phase::from_method("helper"), None);
    /// ```
    pub const fn from_method(name: &str) -> Option<Phase> {
        let mut i = 0;
        while i < Phase::ALL.len() {
            if const_eq(Phase::ALL[i].name(), name) {
                return Some(Phase::ALL[i]);
            }
            i += 1;
        }
        None
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
            Phase::Rewrite
                | Phase::Access
                | Phase::Response
                | Phase::HeaderFilter
                | Phase::WsHandshake
                | Phase::Preread
        )
    }
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// `a == b`, in a `const fn`.
const fn const_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
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

    /// This set and the phase whose handler method is called `method` (unchanged when no
    /// phase is): what `#[handler]` uses, naming the methods an impl defines.
    #[must_use]
    pub const fn with_method(self, method: &str) -> Phases {
        match Phase::from_method(method) {
            Some(phase) => self.with(phase),
            None => self,
        }
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

/// Generates the phase markers from the table.
macro_rules! phase_markers {
    ($($(#[$doc:meta])* $variant:ident $method:ident,)*) => {$(
        #[doc = concat!("The `", stringify!($method), "` phase, as a type: see [`Handler::", stringify!($method), "`](crate::Handler::", stringify!($method), ").")]
        #[derive(Debug)]
        pub enum $variant {}
        impl sealed::Sealed for $variant {}
        impl RequestPhase for $variant {
            const PHASE: Phase = Phase::$variant;
        }
    )*};
}
request_phases!(phase_markers);

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
    /// `kong.websocket()`: the WebSocket phases before `ws_close`.
    WebSocketPdk,
    "`kong.websocket()` cannot be used in the `{Self}` phase",
    "Kong allows it in ws_handshake (payload limits), ws_client_frame and ws_upstream_frame (frames)":
    WsHandshake, WsClientFrame, WsUpstreamFrame
);
capability!(
    /// `kong.websocket().client()`: frames from the client, and the client's payload limit.
    ClientSide,
    "`kong.websocket().client()` cannot be used in the `{Self}` phase",
    "the client's frames are handled in ws_client_frame (its payload limit is set in ws_handshake); in ws_upstream_frame use `kong.websocket().upstream()`":
    WsHandshake, WsClientFrame
);
capability!(
    /// `kong.websocket().upstream()`: frames from the upstream, and the upstream's payload limit.
    UpstreamSide,
    "`kong.websocket().upstream()` cannot be used in the `{Self}` phase",
    "the upstream's frames are handled in ws_upstream_frame (its payload limit is set in ws_handshake); in ws_client_frame use `kong.websocket().client()`":
    WsHandshake, WsUpstreamFrame
);
capability!(
    /// The frame in flight (`get_frame`, `set_frame_data`, `drop_frame`, `close`, ...).
    Frame,
    "WebSocket frames are only available in ws_client_frame and ws_upstream_frame, not in `{Self}`",
    "use `ws_client_frame` or `ws_upstream_frame`":
    WsClientFrame, WsUpstreamFrame
);
capability!(
    /// `set_max_payload_size()`: before the session starts.
    PayloadLimit,
    "payload limits can only be set in ws_handshake, not in `{Self}`",
    "Kong allows `set_max_payload_size()` in ws_handshake only":
    WsHandshake
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
capability!(
    /// `kong.tracing()`: the request's spans, in Kong's tracing phases.
    Traced,
    "`kong.tracing()` cannot be used in the `{Self}` phase",
    "Kong's tracer works in rewrite, access, response, header_filter, body_filter and log":
    Rewrite, Access, Response, HeaderFilter, BodyFilter, Log
);
capability!(
    /// Choosing how a stream session reaches its upstream (`kong.service.request.disable_tls()`).
    StreamUpstream,
    "stream upstream settings cannot be changed in the `{Self}` phase",
    "Kong allows `kong.service().request().disable_tls()` in preread":
    Preread
);
