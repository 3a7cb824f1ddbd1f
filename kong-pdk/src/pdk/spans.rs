//! `kong.tracing`: the request's spans (Kong's `kong/pdk/tracing.lua`).

use std::borrow::Cow;
use std::marker::PhantomData;

use crate::phase::Traced;
use crate::tracer::{Span, SpanOptions, SpanRef, Trace, TraceId, TracingSettings};
use crate::transaction::Transaction;

/// `kong.tracing`: the spans of the request, when the node traces
/// (`tracing_instrumentations`), and the trace context propagation plugins work with.
///
/// Without node tracing Kong's tracer is a no-op: [`Tracing::start_span`] returns `None`
/// and nothing is recorded, unless a plugin starts a propagation-only trace
/// ([`Tracing::propagation_only`]).
///
/// ```
/// use kong_pdk::prelude::*;
///
/// struct Timed;
/// impl Timed {
///     async fn access(&self, kong: &mut Kong<'_, Access>) -> kong_pdk::Result {
///         let mut tracing = kong.tracing();
///         if let Some(span) = tracing.start_span("my-plugin.lookup") {
///             // ... the work the span measures ...
///             if let Some(s) = tracing.span_mut(span) {
///                 s.set_attribute("lookup.hits", 3i64);
///             }
///             tracing.finish(span);
///         }
///         Ok(())
///     }
/// }
/// ```
pub struct Tracing<'a, P: Traced> {
    tx: &'a mut Transaction,
    _phase: PhantomData<fn() -> P>,
}

impl<'a, P: Traced> Tracing<'a, P> {
    pub(crate) fn new(tx: &'a mut Transaction) -> Self {
        Tracing {
            tx,
            _phase: PhantomData,
        }
    }

    fn trace(&self) -> Option<&Trace> {
        self.tx.trace.as_deref()
    }

    fn trace_mut(&mut self) -> Option<&mut Trace> {
        self.tx.trace.as_deref_mut()
    }

    /// The node's `tracing_instrumentations` and `tracing_sampling_rate`.
    pub fn settings(&self) -> TracingSettings {
        self.tx.node.tracing.get()
    }

    /// Whether the request has a trace (the node traces, or a plugin started a
    /// propagation-only one).
    pub fn is_recording(&self) -> bool {
        self.trace().is_some_and(|t| t.root().is_some())
    }

    /// Starts a span, a child of the active span, and makes it active (`start_span`); `None`
    /// when the request has no trace.
    pub fn start_span(&mut self, name: impl Into<Cow<'static, str>>) -> Option<SpanRef> {
        self.start_span_with(name, SpanOptions::default())
    }

    /// [`Tracing::start_span`] with a kind, a start time and attributes.
    pub fn start_span_with(&mut self, name: impl Into<Cow<'static, str>>, options: SpanOptions) -> Option<SpanRef> {
        let trace = self.trace_mut()?;
        trace.root()?;
        trace.start_span(name, options)
    }

    /// Ends a span now (`span:finish()`); its parent becomes active again.
    pub fn finish(&mut self, span: SpanRef) {
        if let Some(t) = self.trace_mut() {
            t.finish(span, None);
        }
    }

    /// A span, to read.
    pub fn span(&self, span: SpanRef) -> Option<&Span> {
        self.trace()?.span(span)
    }

    /// A span, to set attributes, events or its status.
    pub fn span_mut(&mut self, span: SpanRef) -> Option<&mut Span> {
        self.trace_mut()?.span_mut(span)
    }

    /// The active span (`active_span()`).
    pub fn active_span(&self) -> Option<SpanRef> {
        self.trace()?.active_span()
    }

    /// Makes `span` the active one (`set_active_span`).
    pub fn set_active_span(&mut self, span: SpanRef) {
        if let Some(t) = self.trace_mut() {
            t.set_active_span(span);
        }
    }

    /// The root span: `kong`, or the propagation-only `root`.
    pub fn root_span(&self) -> Option<SpanRef> {
        self.trace()?.root()
    }

    /// Every span recorded so far, root first (what `process_span` walks in `log`).
    pub fn spans(&self) -> &[Span] {
        self.trace().map_or(&[], Trace::spans)
    }

    /// The request's trace id (Kong's tracing context): the root span's, or the one set
    /// from an incoming propagation header.
    pub fn trace_id(&self) -> Option<TraceId> {
        self.trace()?.trace_id()
    }

    /// Sets the request's trace id (`tracing_context.set_raw_trace_id`).
    pub fn set_trace_id(&mut self, id: TraceId) {
        if let Some(t) = self.trace_mut() {
            t.set_trace_id(id);
        }
    }

    /// Sets whether the request's spans are exported (`set_should_sample`).
    pub fn set_should_sample(&mut self, sample: bool) {
        if let Some(t) = self.trace_mut() {
            t.set_should_sample(sample);
        }
    }

    /// Kong's sampling decision (`get_sampling_decision(parent_should_sample, rate)`): never
    /// for a propagation-only trace or none; otherwise the caller's `false`, or the sampler
    /// at `rate` (the node's `tracing_sampling_rate` when `None`).
    pub fn sampling_decision(&self, parent: Option<bool>, rate: Option<f64>) -> bool {
        self.trace().is_some_and(|t| t.sampling_decision(parent, rate))
    }

    /// The balancer span created ahead of the balancer (Kong's unlinked `balancer` span),
    /// whose id propagation sends upstream; `None` when the node does not record the
    /// balancer.
    pub fn balancer_span_mut(&mut self) -> Option<&mut Span> {
        self.trace_mut()?.balancer_span_mut()
    }

    /// Starts a trace of one span, `root`, for header propagation when the node does not
    /// trace (Kong's `kong.propagation_only` root), never exported. Returns the root span:
    /// the existing one when the request already has a trace.
    pub fn propagation_only(&mut self) -> SpanRef {
        if let Some(root) = self.root_span() {
            return root;
        }
        let mut settings = self.settings();
        settings.sampling_rate = 1.0;
        let mut trace = Box::new(Trace::new(&settings));
        let options = SpanOptions {
            attributes: vec![(Cow::Borrowed("kong.propagation_only"), true.into())],
            ..SpanOptions::default()
        };
        let root = trace.start_span("root", options);
        trace.set_should_sample(false);
        self.tx.trace = Some(trace);
        root.unwrap_or_else(|| unreachable!("an empty trace takes its first span"))
    }
}
