//! Kong's tracing (`kong.tracing`, `kong/pdk/tracing.lua`, and the gateway's own spans of
//! `kong/observability/tracing/instrumentation.lua`): the spans of one request, the sampler,
//! and which instrumentations the node records.
//!
//! Tracing is off unless the node's `tracing_instrumentations` names some (Kong's default is
//! `off`); then every request gets a [`Trace`] whose root span `kong` covers the request, with
//! child spans for the router, each plugin's rewrite, access and header_filter, and each
//! balancer try. Plugins add their own spans through [`Kong::tracing`](crate::Kong::tracing),
//! and exporters (the bundled `opentelemetry` plugin) read them in `log`.
//!
//! ```
//! use kong_pdk::tracer::{Instrumentations, Trace, TracingSettings};
//!
//! let settings = TracingSettings { instrumentations: Instrumentations::ALL, sampling_rate: 1.0 };
//! let mut trace = Trace::new(&settings);
//! let root = trace.start_span("kong", Default::default()).unwrap();
//! let child = trace.start_span("kong.router", Default::default()).unwrap();
//! trace.finish(child, None);
//! trace.finish(root, None);
//! let spans = trace.spans();
//! assert_eq!(spans[1].parent_id, Some(spans[0].span_id));
//! assert_eq!(spans[1].trace_id, spans[0].trace_id);
//! assert_eq!(spans[0].should_sample, Some(true));
//! ```

use std::borrow::Cow;
use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicU64};
use std::time::{SystemTime, UNIX_EPOCH};

/// The most spans one request records: a plugin that starts spans in a loop cannot grow a
/// request's memory without bound. Spans past it are not recorded.
pub const MAX_SPANS: usize = 1024;

/// The most events one span keeps (`add_event`, `record_error`).
pub const MAX_EVENTS: usize = 128;

/// A 16-byte trace id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct TraceId(pub [u8; 16]);

/// An 8-byte span id.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct SpanId(pub [u8; 8]);

fn hex(bytes: &[u8], f: &mut fmt::Formatter<'_>) -> fmt::Result {
    f.write_str(&crate::text::hex(bytes))
}

impl TraceId {
    /// A random trace id (never all zeros).
    pub fn random() -> TraceId {
        loop {
            let id = TraceId(fastrand::u128(..).to_be_bytes());
            if id.0 != [0; 16] {
                return id;
            }
        }
    }

    /// The id in lowercase hex (32 digits).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl SpanId {
    /// A random span id (never all zeros).
    pub fn random() -> SpanId {
        loop {
            let id = SpanId(fastrand::u64(..).to_be_bytes());
            if id.0 != [0; 8] {
                return id;
            }
        }
    }

    /// The id in lowercase hex (16 digits).
    pub fn to_hex(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "TraceId({self})")
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        hex(&self.0, f)
    }
}

impl fmt::Debug for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SpanId({self})")
    }
}

/// OpenTelemetry's span kinds, with Kong's numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[repr(u8)]
pub enum SpanKind {
    /// Not said.
    Unspecified = 0,
    /// Work inside the gateway (Kong's default).
    #[default]
    Internal = 1,
    /// The request the gateway serves (the root span `kong`).
    Server = 2,
    /// A call the gateway makes (`kong.balancer`, `kong.dns`, `kong.internal.request`).
    Client = 3,
    /// A message sent.
    Producer = 4,
    /// A message received.
    Consumer = 5,
}

/// A span attribute's value, typed as Kong's OTLP encoder types it (Lua numbers are doubles;
/// `http.status_code` is an integer).
#[derive(Debug, Clone, PartialEq)]
pub enum AttributeValue {
    /// A string.
    String(Cow<'static, str>),
    /// A boolean.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A number.
    Double(f64),
}

impl From<&'static str> for AttributeValue {
    fn from(s: &'static str) -> Self {
        AttributeValue::String(Cow::Borrowed(s))
    }
}

impl From<String> for AttributeValue {
    fn from(s: String) -> Self {
        AttributeValue::String(Cow::Owned(s))
    }
}

impl From<bool> for AttributeValue {
    fn from(b: bool) -> Self {
        AttributeValue::Bool(b)
    }
}

impl From<i64> for AttributeValue {
    fn from(i: i64) -> Self {
        AttributeValue::Int(i)
    }
}

impl From<f64> for AttributeValue {
    fn from(d: f64) -> Self {
        AttributeValue::Double(d)
    }
}

/// Something that happened during a span (`span:add_event`).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name (`exception` for `record_error`).
    pub name: Cow<'static, str>,
    /// When, in ns since the Unix epoch.
    pub time_ns: u64,
    /// Its attributes.
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
}

/// A span's status code (OpenTelemetry's: unset, ok, error).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Status {
    /// Unset.
    Unset = 0,
    /// Ok.
    Ok = 1,
    /// Error (Kong sets it on a router miss, a failed balancer try, a failed DNS query).
    Error = 2,
}

/// One span of a request's trace.
#[derive(Debug, Clone, PartialEq)]
pub struct Span {
    /// Its name (`kong`, `kong.router`, `kong.access.plugin.key-auth`, ...).
    pub name: Cow<'static, str>,
    /// The trace it belongs to.
    pub trace_id: TraceId,
    /// Its id.
    pub span_id: SpanId,
    /// Its parent's id: the span active when it started, or (for the root span) the caller's
    /// span a propagation header named.
    pub parent_id: Option<SpanId>,
    /// Its kind.
    pub kind: SpanKind,
    /// When it started, in ns since the Unix epoch.
    pub start_ns: u64,
    /// When it ended, once finished.
    pub end_ns: Option<u64>,
    /// Its attributes, in the order set (a key set again replaces its value).
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    /// Its events.
    pub events: Vec<Event>,
    /// Its status, once set.
    pub status: Option<Status>,
    /// Whether it is exported; `None` until decided.
    pub should_sample: Option<bool>,
    parent: Option<usize>,
}

impl Span {
    /// Sets (or replaces) an attribute.
    pub fn set_attribute(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttributeValue>) {
        let key = key.into();
        let value = value.into();
        match self.attributes.iter_mut().find(|(k, _)| *k == key) {
            Some(slot) => slot.1 = value,
            None => self.attributes.push((key, value)),
        }
    }

    /// An attribute's value.
    pub fn attribute(&self, key: &str) -> Option<&AttributeValue> {
        self.attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    /// Records an event now (at most [`MAX_EVENTS`] per span).
    pub fn add_event(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<(Cow<'static, str>, AttributeValue)>,
    ) {
        if self.events.len() < MAX_EVENTS {
            self.events.push(Event {
                name: name.into(),
                time_ns: now_ns(),
                attributes,
            });
        }
    }

    /// Records an error: an `exception` event with `exception.message` (Kong's
    /// `span:record_error`).
    pub fn record_error(&mut self, message: impl Into<String>) {
        let attributes = vec![(Cow::Borrowed("exception.message"), AttributeValue::from(message.into()))];
        self.add_event("exception", attributes);
    }

    /// Sets the span's status.
    pub fn set_status(&mut self, status: Status) {
        self.status = Some(status);
    }
}

/// What the node records (`tracing_instrumentations`): a set of Kong's instrumentation names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Instrumentations(u16);

impl Instrumentations {
    /// None (`off`, Kong's default): requests carry no trace.
    pub const OFF: Instrumentations = Instrumentations(0);
    /// `db_query`.
    pub const DB_QUERY: Instrumentations = Instrumentations(1);
    /// `router`: the `kong.router` span.
    pub const ROUTER: Instrumentations = Instrumentations(1 << 1);
    /// `http_client`: `kong.internal.request` spans of plugins' HTTP calls.
    pub const HTTP_CLIENT: Instrumentations = Instrumentations(1 << 2);
    /// `balancer`: a `kong.balancer` span per try.
    pub const BALANCER: Instrumentations = Instrumentations(1 << 3);
    /// `plugin_rewrite`: a span per plugin's rewrite.
    pub const PLUGIN_REWRITE: Instrumentations = Instrumentations(1 << 4);
    /// `plugin_access`: a span per plugin's access.
    pub const PLUGIN_ACCESS: Instrumentations = Instrumentations(1 << 5);
    /// `plugin_header_filter`: a span per plugin's header_filter.
    pub const PLUGIN_HEADER_FILTER: Instrumentations = Instrumentations(1 << 6);
    /// `dns_query`: `kong.dns` spans.
    pub const DNS_QUERY: Instrumentations = Instrumentations(1 << 7);
    /// `request`: the root span (on whenever any other is).
    const REQUEST: Instrumentations = Instrumentations(1 << 8);
    /// `all`.
    pub const ALL: Instrumentations = Instrumentations((1 << 9) - 1);

    const NAMES: [(&'static str, Instrumentations); 8] = [
        ("db_query", Self::DB_QUERY),
        ("router", Self::ROUTER),
        ("http_client", Self::HTTP_CLIENT),
        ("balancer", Self::BALANCER),
        ("plugin_rewrite", Self::PLUGIN_REWRITE),
        ("plugin_access", Self::PLUGIN_ACCESS),
        ("plugin_header_filter", Self::PLUGIN_HEADER_FILTER),
        ("dns_query", Self::DNS_QUERY),
    ];

    /// Parses `tracing_instrumentations` as Kong's configuration loader does.
    ///
    /// ```
    /// use kong_pdk::tracer::Instrumentations;
    /// let some = Instrumentations::parse(&["router", "balancer"]).unwrap();
    /// assert!(some.contains(Instrumentations::ROUTER) && !some.contains(Instrumentations::PLUGIN_ACCESS));
    /// assert_eq!(Instrumentations::parse(&["off"]), Ok(Instrumentations::OFF));
    /// assert_eq!(Instrumentations::parse(&["off", "router"]).unwrap_err(),
    ///            "invalid tracing types: off, other types are mutually exclusive");
    /// assert_eq!(Instrumentations::parse(&["dns"]).unwrap_err(), "invalid tracing type: dns");
    /// ```
    pub fn parse(names: &[&str]) -> Result<Instrumentations, String> {
        let mut out = Instrumentations::OFF;
        for name in names {
            out.0 |= match *name {
                "off" => 0,
                "all" => Self::ALL.0,
                other => match Self::NAMES.iter().find(|(n, _)| *n == other) {
                    Some((_, i)) => i.0 | Self::REQUEST.0,
                    None => return Err(format!("invalid tracing type: {other}")),
                },
            };
        }
        if names.len() > 1 && names.contains(&"off") {
            return Err("invalid tracing types: off, other types are mutually exclusive".into());
        }
        Ok(out)
    }

    /// Whether every instrumentation of `other` is on.
    pub fn contains(self, other: Instrumentations) -> bool {
        self.0 & other.0 == other.0 && other.0 != 0
    }

    /// Whether tracing is on at all.
    pub fn enabled(self) -> bool {
        self.0 != 0
    }
}

/// The node's tracing configuration (`tracing_instrumentations`, `tracing_sampling_rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TracingSettings {
    /// What is recorded.
    pub instrumentations: Instrumentations,
    /// The probability that a trace is sampled (0 to 1), unless a plugin gives its own.
    pub sampling_rate: f64,
}

impl Default for TracingSettings {
    /// Kong's defaults: `off`, `0.01`.
    fn default() -> Self {
        TracingSettings {
            instrumentations: Instrumentations::OFF,
            sampling_rate: 0.01,
        }
    }
}

/// The node's [`TracingSettings`], readable on every request without a lock and changeable
/// while the node runs (the test helpers' `start_kong` sets them per node).
#[derive(Debug)]
pub struct NodeTracing {
    instrumentations: AtomicU16,
    sampling_rate: AtomicU64,
    request_logs: AtomicBool,
}

impl Default for NodeTracing {
    fn default() -> Self {
        NodeTracing::new(TracingSettings::default())
    }
}

impl NodeTracing {
    /// The node's settings, starting as `settings`.
    pub fn new(settings: TracingSettings) -> NodeTracing {
        NodeTracing {
            instrumentations: AtomicU16::new(settings.instrumentations.0),
            sampling_rate: AtomicU64::new(settings.sampling_rate.to_bits()),
            request_logs: AtomicBool::new(false),
        }
    }

    /// Whether requests keep their log lines for an exporter
    /// ([`Log::request_lines`](crate::pdk::Log::request_lines)).
    pub fn request_logs(&self) -> bool {
        self.request_logs.load(Relaxed)
    }

    /// Makes requests keep their log lines (the `opentelemetry` plugin with a
    /// `logs_endpoint` turns it on in `configure`, Kong's `observability_logs` hook).
    pub fn set_request_logs(&self, on: bool) {
        self.request_logs.store(on, Relaxed);
    }

    /// The settings now.
    pub fn get(&self) -> TracingSettings {
        TracingSettings {
            instrumentations: Instrumentations(self.instrumentations.load(Relaxed)),
            sampling_rate: f64::from_bits(self.sampling_rate.load(Relaxed)),
        }
    }

    /// Changes the settings for the requests that start from now on.
    pub fn set(&self, settings: TracingSettings) {
        self.sampling_rate.store(settings.sampling_rate.to_bits(), Relaxed);
        self.instrumentations.store(settings.instrumentations.0, Relaxed);
    }
}

/// A span of the request's [`Trace`], by position: what [`Trace::start_span`] returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SpanRef(usize);

/// How a span starts ([`Trace::start_span`]).
#[derive(Debug, Clone, Default)]
pub struct SpanOptions {
    /// Its kind (internal by default).
    pub kind: SpanKind,
    /// When it started (now by default), in ns since the Unix epoch.
    pub start_ns: Option<u64>,
    /// Its attributes.
    pub attributes: Vec<(Cow<'static, str>, AttributeValue)>,
}

/// The time now in ns since the Unix epoch.
pub fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// Kong's trace-id sampler: the trace is sampled when its first 8 bytes, read as a native
/// (little-endian) u64, fall under `rate × 2⁶⁴`.
///
/// ```
/// use kong_pdk::tracer::{sampled, TraceId};
/// let low = TraceId([1; 16]);
/// assert!(sampled(&low, 1.0) && !sampled(&low, 0.0));
/// assert!(sampled(&TraceId([0, 0, 0, 0, 0, 0, 0, 0x10, 9, 9, 9, 9, 9, 9, 9, 9]), 0.5));
/// assert!(!sampled(&TraceId([0, 0, 0, 0, 0, 0, 0, 0x90, 9, 9, 9, 9, 9, 9, 9, 9]), 0.5));
/// ```
pub fn sampled(trace_id: &TraceId, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 || rate.is_nan() {
        return false;
    }
    let mut first = [0; 8];
    first.copy_from_slice(&trace_id.0[..8]);
    (u64::from_le_bytes(first) as f64) < rate * 18_446_744_073_709_551_616.0
}

/// One request's spans (Kong's `ngx.ctx.KONG_SPANS` with the tracing context).
#[derive(Debug, Clone)]
pub struct Trace {
    spans: Vec<Span>,
    active: Option<usize>,
    raw_trace_id: Option<TraceId>,
    balancer: Option<Span>,
    settings: TracingSettings,
    dropped: usize,
}

impl Trace {
    /// An empty trace recording what `settings` enables.
    pub fn new(settings: &TracingSettings) -> Trace {
        Trace {
            spans: Vec::with_capacity(8),
            active: None,
            raw_trace_id: None,
            balancer: None,
            settings: *settings,
            dropped: 0,
        }
    }

    /// The node's tracing configuration this trace records under.
    pub fn settings(&self) -> &TracingSettings {
        &self.settings
    }

    /// Whether the node records `what`.
    pub fn records(&self, what: Instrumentations) -> bool {
        self.settings.instrumentations.contains(what)
    }

    /// Starts a span as a child of the active span (or a new trace's root), makes it the
    /// active span and returns it; `None` past [`MAX_SPANS`].
    pub fn start_span(&mut self, name: impl Into<Cow<'static, str>>, options: SpanOptions) -> Option<SpanRef> {
        if self.spans.len() >= MAX_SPANS {
            self.dropped += 1;
            return None;
        }
        let span = self.create(name.into(), options, self.active);
        self.spans.push(span);
        let at = self.spans.len() - 1;
        if self.raw_trace_id.is_none() && at == 0 {
            self.raw_trace_id = Some(self.spans[0].trace_id);
        }
        self.active = Some(at);
        Some(SpanRef(at))
    }

    fn create(&self, name: Cow<'static, str>, options: SpanOptions, parent: Option<usize>) -> Span {
        let parent_span = parent.map(|p| &self.spans[p]);
        let trace_id = parent_span.map_or_else(TraceId::random, |p| p.trace_id);
        let should_sample = match parent_span.and_then(|p| p.should_sample) {
            Some(s) => s,
            None => sampled(&trace_id, self.settings.sampling_rate),
        };
        Span {
            name,
            trace_id,
            span_id: SpanId::random(),
            parent_id: parent_span.map(|p| p.span_id),
            kind: options.kind,
            start_ns: options.start_ns.unwrap_or_else(now_ns),
            end_ns: None,
            attributes: options.attributes,
            events: Vec::new(),
            status: None,
            should_sample: Some(should_sample),
            parent,
        }
    }

    /// Ends a span (now, or at `end_ns`) and makes its parent active again when it was the
    /// active one. A span ends once; an end before its start is refused (logged).
    pub fn finish(&mut self, span: SpanRef, end_ns: Option<u64>) {
        let Some(s) = self.spans.get_mut(span.0) else { return };
        if s.end_ns.is_some() {
            return;
        }
        let end = end_ns.unwrap_or_else(now_ns);
        if end < s.start_ns {
            tracing::error!(target: "kong", "invalid span duration: {} for span: {}", end as i128 - s.start_ns as i128, s.name);
            return;
        }
        s.end_ns = Some(end);
        if self.active == Some(span.0) {
            self.active = s.parent;
        }
    }

    /// A span of the trace.
    pub fn span(&self, span: SpanRef) -> Option<&Span> {
        self.spans.get(span.0)
    }

    /// The span at position `at` (the order spans started in).
    pub fn span_ref(&self, at: usize) -> Option<SpanRef> {
        (at < self.spans.len()).then_some(SpanRef(at))
    }

    /// A span of the trace, to change.
    pub fn span_mut(&mut self, span: SpanRef) -> Option<&mut Span> {
        self.spans.get_mut(span.0)
    }

    /// The root span (the first started).
    pub fn root(&self) -> Option<SpanRef> {
        (!self.spans.is_empty()).then_some(SpanRef(0))
    }

    /// The active span.
    pub fn active_span(&self) -> Option<SpanRef> {
        self.active.map(SpanRef)
    }

    /// Makes `span` the active one: spans started next are its children.
    pub fn set_active_span(&mut self, span: SpanRef) {
        if span.0 < self.spans.len() {
            self.active = Some(span.0);
        }
    }

    /// Every span recorded, root first.
    pub fn spans(&self) -> &[Span] {
        &self.spans
    }

    /// The spans past [`MAX_SPANS`] that were not recorded.
    pub fn dropped(&self) -> usize {
        self.dropped
    }

    /// The request's trace id (Kong's tracing context): the root span's, or the one a
    /// propagation header gave ([`Trace::set_trace_id`]).
    pub fn trace_id(&self) -> Option<TraceId> {
        self.raw_trace_id
    }

    /// Sets the request's trace id: exporters write every span with it.
    pub fn set_trace_id(&mut self, id: TraceId) {
        self.raw_trace_id = Some(id);
    }

    /// Sets whether every recorded span is exported.
    pub fn set_should_sample(&mut self, sample: bool) {
        for s in &mut self.spans {
            s.should_sample = Some(sample);
        }
    }

    /// Kong's sampling decision for the trace (`tracer:get_sampling_decision`): never for a
    /// propagation-only trace; the caller's decision when it said no or there is no trace id;
    /// else by the sampler at `rate` (the node's when `None`).
    pub fn sampling_decision(&self, parent: Option<bool>, rate: Option<f64>) -> bool {
        let propagation_only = self
            .spans
            .first()
            .is_none_or(|root| root.attribute("kong.propagation_only") == Some(&AttributeValue::Bool(true)));
        if propagation_only {
            return false;
        }
        let Some(trace_id) = self.raw_trace_id else {
            return parent.unwrap_or(false);
        };
        if parent == Some(false) {
            return false;
        }
        sampled(&trace_id, rate.unwrap_or(self.settings.sampling_rate))
    }

    /// Creates the balancer span ahead of the balancer (Kong's `precreate_balancer_span`):
    /// a child of the root whose id propagation headers send upstream, recorded once the
    /// request goes there.
    pub fn precreate_balancer(&mut self) {
        if !self.records(Instrumentations::BALANCER) || self.spans.is_empty() {
            return;
        }
        let options = SpanOptions {
            kind: SpanKind::Client,
            ..SpanOptions::default()
        };
        self.balancer = Some(self.create(Cow::Borrowed("kong.balancer"), options, Some(0)));
    }

    /// The pre-created balancer span, before it is recorded.
    pub fn balancer_span_mut(&mut self) -> Option<&mut Span> {
        self.balancer.as_mut()
    }

    /// Records the pre-created balancer span (for the last try), or `None` when there is none.
    #[cfg_attr(not(feature = "gateway"), allow(dead_code))]
    pub(crate) fn link_balancer(&mut self, start_ns: u64) -> Option<SpanRef> {
        let mut span = self.balancer.take()?;
        if self.spans.len() >= MAX_SPANS {
            self.dropped += 1;
            return None;
        }
        span.start_ns = start_ns;
        self.spans.push(span);
        Some(SpanRef(self.spans.len() - 1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(rate: f64) -> Trace {
        Trace::new(&TracingSettings {
            instrumentations: Instrumentations::ALL,
            sampling_rate: rate,
        })
    }

    #[test]
    fn finishing_the_active_span_makes_its_parent_active() {
        let mut t = all(1.0);
        let root = t.start_span("kong", SpanOptions::default()).unwrap();
        let child = t.start_span("child", SpanOptions::default()).unwrap();
        assert_eq!(t.active_span(), Some(child));
        t.finish(child, None);
        assert_eq!(t.active_span(), Some(root));
        let end = t.span(child).unwrap().end_ns;
        t.finish(child, Some(u64::MAX));
        assert_eq!(t.span(child).unwrap().end_ns, end, "a span ends once");
    }

    #[test]
    fn an_end_before_the_start_is_refused() {
        let mut t = all(1.0);
        let root = t.start_span("kong", SpanOptions::default()).unwrap();
        t.finish(root, Some(1));
        assert_eq!(t.span(root).unwrap().end_ns, None);
    }

    #[test]
    fn spans_past_the_limit_are_counted_not_kept() {
        let mut t = all(1.0);
        for _ in 0..MAX_SPANS + 3 {
            t.start_span("s", SpanOptions::default());
        }
        assert_eq!(t.spans().len(), MAX_SPANS);
        assert_eq!(t.dropped(), 3);
    }

    #[test]
    fn children_inherit_the_sampling_decision() {
        let mut t = all(0.0);
        t.start_span("kong", SpanOptions::default());
        t.start_span("child", SpanOptions::default());
        assert!(t.spans().iter().all(|s| s.should_sample == Some(false)));
        t.set_should_sample(true);
        assert!(t.spans().iter().all(|s| s.should_sample == Some(true)));
    }

    #[test]
    fn the_sampling_decision_follows_kong() {
        let mut t = all(1.0);
        assert!(!t.sampling_decision(Some(true), None), "no root span: propagation only");
        t.start_span("kong", SpanOptions::default());
        assert!(t.sampling_decision(None, None));
        assert!(!t.sampling_decision(Some(false), None));
        assert!(!t.sampling_decision(None, Some(0.0)));
        let mut p = all(1.0);
        let root = p.start_span("root", SpanOptions::default()).unwrap();
        p.span_mut(root).unwrap().set_attribute("kong.propagation_only", true);
        assert!(!p.sampling_decision(Some(true), Some(1.0)));
    }

    #[test]
    fn the_balancer_span_is_a_child_of_the_root_recorded_later() {
        let mut t = all(1.0);
        t.start_span("kong", SpanOptions::default());
        t.start_span("kong.router", SpanOptions::default());
        t.precreate_balancer();
        let pre = t.balancer_span_mut().unwrap().span_id;
        let linked = t.link_balancer(5).unwrap();
        let span = t.span(linked).unwrap();
        assert_eq!((span.span_id, span.parent_id), (pre, Some(t.spans()[0].span_id)));
        assert_eq!(span.kind, SpanKind::Client);
    }

    #[test]
    fn attributes_set_again_replace_the_value() {
        let mut t = all(1.0);
        let root = t.start_span("kong", SpanOptions::default()).unwrap();
        let s = t.span_mut(root).unwrap();
        s.set_attribute("a", 1i64);
        s.set_attribute("a", "two");
        assert_eq!(s.attributes, vec![(Cow::Borrowed("a"), AttributeValue::from("two"))]);
        s.record_error("boom");
        assert_eq!(s.events[0].name, "exception");
    }
}
