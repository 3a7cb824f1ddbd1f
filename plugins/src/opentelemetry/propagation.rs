//! Trace context propagation (Kong's `kong/observability/tracing/propagation`): the formats
//! read from the client's headers (extractors) and written on the upstream request
//! (injectors), byte for byte as Kong writes them.

use http::HeaderMap;
use serde_json::Value;

/// The formats an extractor exists for (`b3` reads both b3 forms).
pub(crate) const EXTRACTORS: [&str; 8] = ["w3c", "b3", "jaeger", "ot", "datadog", "aws", "gcp", "instana"];

/// What `header_type = preserve` extracts, in Kong's order.
pub(crate) const PRESERVE_EXTRACT: [&str; 8] = ["b3", "w3c", "jaeger", "ot", "datadog", "aws", "gcp", "instana"];

/// A trace context, as extracted from a request or to be injected into the upstream one. Ids
/// are raw bytes; extraction sizes them as Kong does (16-byte trace ids, 8-byte span ids).
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Context {
    pub(crate) trace_id: Option<Vec<u8>>,
    pub(crate) span_id: Option<Vec<u8>>,
    pub(crate) parent_id: Option<Vec<u8>>,
    pub(crate) should_sample: Option<bool>,
    /// b3's debug flag (`"1"`).
    pub(crate) flags: Option<String>,
    /// The W3C trace flags received.
    pub(crate) w3c_flags: Option<u8>,
    /// The b3 context came in the single `b3` header.
    pub(crate) single_header: bool,
    pub(crate) reuse_span_id: bool,
    pub(crate) baggage: Vec<(String, String)>,
    /// The received trace id's size in bytes: injectors that allow it keep it.
    pub(crate) trace_id_original_size: Option<usize>,
}

impl Context {
    /// Kong's "the extractor returned an empty table": nothing usable.
    fn is_empty(&self) -> bool {
        *self == Context::default()
    }
}

/// The client's headers, as Kong's `ngx.req.get_headers()` gives them to extractors.
pub(crate) struct Headers<'a>(pub(crate) &'a HeaderMap);

impl Headers<'_> {
    /// A header sent once (a repeated header is a table in Kong, which the extractors skip).
    fn one(&self, name: &str) -> Option<&str> {
        let mut all = self.0.get_all(name).iter();
        match (all.next(), all.next()) {
            (Some(v), None) => v.to_str().ok(),
            _ => None,
        }
    }

    fn present(&self, name: &str) -> bool {
        self.0.contains_key(name)
    }

    fn any(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.present(n))
    }

    /// Headers whose name starts with `prefix`, as baggage (names without the prefix, values
    /// percent-decoded).
    fn baggage(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .0
            .iter()
            .filter_map(|(name, value)| {
                let key = name.as_str().strip_prefix(prefix)?;
                Some((
                    key.to_owned(),
                    kong_pdk::pdk::percent_decode(value.to_str().ok()?, true),
                ))
            })
            .collect();
        out.sort();
        out
    }
}

fn is_hex(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Kong's `from_hex`: an odd number of digits gets a leading zero.
fn from_hex(s: &str) -> Option<Vec<u8>> {
    if !is_hex(s) {
        return None;
    }
    let padded;
    let s = if s.len() % 2 == 1 {
        padded = format!("0{s}");
        &padded
    } else {
        s
    };
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

use kong_pdk::text::hex as to_hex;

/// A decimal id as big-endian bytes (Kong's `from_dec(...):to_binary()`), at most 128 bits.
fn from_dec(s: &str) -> Option<Vec<u8>> {
    let n: u128 = s.parse().ok()?;
    let bytes = n.to_be_bytes();
    let first = bytes.iter().position(|b| *b != 0).unwrap_or(15);
    Some(bytes[first..].to_vec())
}

/// Big-endian bytes as a decimal number (Kong's `from_binary(...):to_dec()`), of the last 16
/// bytes.
fn to_dec(bytes: &[u8]) -> String {
    let tail = &bytes[bytes.len().saturating_sub(16)..];
    tail.iter().fold(0u128, |n, b| (n << 8) | u128::from(*b)).to_string()
}

/// Kong's `to_id_size`: the last `len` bytes, or left-padded with zeros.
pub(crate) fn to_id_size(id: &[u8], len: usize) -> Vec<u8> {
    if id.len() >= len {
        id[id.len() - len..].to_vec()
    } else {
        let mut out = vec![0; len - id.len()];
        out.extend_from_slice(id);
        out
    }
}

/// What extraction found, and the warnings Kong logs for invalid headers.
pub(crate) struct Extraction {
    pub(crate) context: Context,
    /// The format it came in (`preserve` injects it).
    pub(crate) from: Option<&'static str>,
    pub(crate) warnings: Vec<&'static str>,
}

/// Runs the extractors in order; the first that finds a context wins.
pub(crate) fn extract(formats: &[String], headers: &HeaderMap) -> Extraction {
    let headers = Headers(headers);
    let mut warnings = Vec::new();
    for name in formats {
        let Some(format) = EXTRACTORS.iter().find(|f| **f == name.as_str()) else {
            continue;
        };
        let found = match *format {
            "w3c" => w3c(&headers, &mut warnings),
            "b3" => b3(&headers, &mut warnings),
            "jaeger" => jaeger(&headers, &mut warnings),
            "ot" => ot(&headers, &mut warnings),
            "datadog" => datadog(&headers, &mut warnings),
            "aws" => aws(&headers, &mut warnings),
            "gcp" => gcp(&headers, &mut warnings),
            _ => instana(&headers, &mut warnings),
        };
        if let Some(mut context) = found.filter(|c| !c.is_empty()) {
            context.trace_id_original_size = context.trace_id.as_ref().map(Vec::len);
            context.trace_id = context.trace_id.map(|t| to_id_size(&t, 16));
            context.span_id = context.span_id.map(|s| to_id_size(&s, 8));
            context.parent_id = context.parent_id.map(|p| to_id_size(&p, 8));
            return Extraction {
                context,
                from: Some(format),
                warnings,
            };
        }
    }
    Extraction {
        context: Context::default(),
        from: None,
        warnings,
    }
}

fn w3c(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    if !h.present("traceparent") {
        return None;
    }
    let value = h.one("traceparent").filter(|v| !v.is_empty())?;
    let parts: Vec<&str> = value.split('-').collect();
    let [version, trace_id, parent_id, flags] = parts[..] else {
        warn.push("invalid W3C traceparent header; ignoring.");
        return None;
    };
    if !parts.iter().all(|p| is_hex(p)) {
        warn.push("invalid W3C traceparent header; ignoring.");
        return None;
    }
    if version != "00" {
        warn.push("invalid W3C Trace Context version; ignoring.");
        return None;
    }
    if trace_id.len() != 32 || trace_id.bytes().all(|b| b == b'0') {
        warn.push("invalid W3C trace context trace ID; ignoring.");
        return None;
    }
    if parent_id.len() != 16 || parent_id.bytes().all(|b| b == b'0') {
        warn.push("invalid W3C trace context parent ID; ignoring.");
        return None;
    }
    if flags.len() != 2 {
        warn.push("invalid W3C trace context flags; ignoring.");
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Context {
        trace_id: from_hex(trace_id),
        span_id: from_hex(parent_id),
        should_sample: Some(flags % 2 == 1),
        w3c_flags: Some(flags),
        ..Context::default()
    })
}

/// The `b3` header, or `b3=` in `tracestate`.
fn b3_single(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    let value = match h.one("b3") {
        Some(v) => v.to_owned(),
        None => {
            h.0.get_all("tracestate")
                .iter()
                .filter_map(|v| v.to_str().ok()?.strip_prefix("b3="))
                .find(|v| !v.is_empty())?
                .to_owned()
        }
    };
    let mut ctx = Context::default();
    match value.as_str() {
        "1" | "d" => {
            ctx.should_sample = Some(true);
            if value == "d" {
                ctx.flags = Some("1".into());
            }
        }
        "0" => ctx.should_sample = Some(false),
        _ => {
            // trace_id-span_id[-sampled[-parent_id]]
            let parts: Vec<&str> = value.split('-').collect();
            let (trace_id, span_id, sampled, parent_id) = match parts[..] {
                [t, s] => (t, s, "", ""),
                [t, s, x] if x.len() == 1 => (t, s, x, ""),
                [t, s, x] => (t, s, "", x),
                [t, s, x, p] => (t, s, x, p),
                _ => ("", "", "", ""),
            };
            let valid = is_hex(trace_id)
                && matches!(trace_id.len(), 16 | 32)
                && span_id.len() == 16
                && is_hex(span_id)
                && matches!(sampled, "" | "0" | "1" | "d")
                && (parent_id.is_empty() || (parent_id.len() == 16 && is_hex(parent_id)));
            if !valid {
                // The invalid ids are dropped; the header still counts as b3's.
                warn.push("b3 single header invalid; ignoring.");
                return Some(Context {
                    single_header: true,
                    ..Context::default()
                });
            }
            match sampled {
                "1" => ctx.should_sample = Some(true),
                "d" => {
                    ctx.should_sample = Some(true);
                    ctx.flags = Some("1".into());
                }
                "0" => ctx.should_sample = Some(false),
                _ => {}
            }
            ctx.trace_id = Some(trace_id.to_owned().into_bytes());
            ctx.span_id = Some(span_id.to_owned().into_bytes());
            ctx.parent_id = (!parent_id.is_empty()).then(|| parent_id.to_owned().into_bytes());
        }
    }
    ctx.single_header = true;
    Some(ctx)
}

fn b3(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    const ANY: [&str; 7] = [
        "b3",
        "tracestate",
        "x-b3-traceid",
        "x-b3-spanid",
        "x-b3-parentspanid",
        "x-b3-sampled",
        "x-b3-flags",
    ];
    if !h.any(&ANY) {
        return None;
    }
    // Ids are hex text until the end (as Kong keeps them until `from_hex`).
    let mut out = Context {
        reuse_span_id: true,
        ..Context::default()
    };
    if let Some(single) = b3_single(h, warn) {
        out.single_header = true;
        out.should_sample = single.should_sample;
        out.flags = single.flags;
        out.trace_id = single.trace_id;
        out.span_id = single.span_id;
        out.parent_id = single.parent_id;
    }
    let sampled = match h.one("x-b3-sampled") {
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => {
            warn.push("x-b3-sampled header invalid; ignoring.");
            None
        }
        None => None,
    };
    let debug = h.one("x-b3-flags");
    let sampled = match debug {
        Some("1") => Some(true),
        Some(_) => {
            warn.push("x-b3-flags header invalid; ignoring.");
            sampled
        }
        None => sampled,
    };
    let id = |name: &str, sizes: &[usize], message: &'static str, warn: &mut Vec<&'static str>| match h.one(name) {
        Some(v) if !sizes.contains(&v.len()) || !is_hex(v) => {
            warn.push(message);
            Err(())
        }
        other => Ok(other.map(|v| v.as_bytes().to_vec())),
    };
    let trace_id = id(
        "x-b3-traceid",
        &[16, 32],
        "x-b3-traceid header invalid; ignoring.",
        warn,
    );
    let span_id = id("x-b3-spanid", &[16], "x-b3-spanid header invalid; ignoring.", warn);
    let parent_id = id(
        "x-b3-parentspanid",
        &[16],
        "x-b3-parentspanid header invalid; ignoring.",
        warn,
    );
    if out.should_sample.is_none() {
        out.should_sample = sampled;
    }
    out.flags = out.flags.or(debug.map(str::to_owned));
    if let (Ok(t), Ok(s), Ok(p)) = (trace_id, span_id, parent_id) {
        out.trace_id = out.trace_id.or(t);
        out.span_id = out.span_id.or(s);
        out.parent_id = out.parent_id.or(p);
    }
    if out.trace_id.is_none() {
        out.span_id = None;
        out.parent_id = None;
    }
    let hex = |v: Option<Vec<u8>>| v.and_then(|v| from_hex(std::str::from_utf8(&v).ok()?));
    out.trace_id = hex(out.trace_id);
    out.span_id = hex(out.span_id);
    out.parent_id = hex(out.parent_id);
    Some(out)
}

fn jaeger(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    let value = h.one("uber-trace-id").filter(|v| !v.is_empty())?;
    let parts: Vec<&str> = value.split(':').collect();
    let [trace_id, span_id, parent_id, flags] = parts[..] else {
        warn.push("invalid jaeger uber-trace-id header; ignoring.");
        return None;
    };
    if !parts.iter().all(|p| is_hex(p)) {
        warn.push("invalid jaeger uber-trace-id header; ignoring.");
        return None;
    }
    let zero = |s: &str| s.bytes().all(|b| b == b'0');
    if trace_id.len() > 32 || zero(trace_id) {
        warn.push("invalid jaeger trace ID; ignoring.");
        return None;
    }
    if parent_id.len() != 16 && !zero(parent_id) {
        warn.push("invalid jaeger parent ID; ignoring.");
    }
    if span_id.len() > 16 || zero(span_id) {
        warn.push("invalid jaeger span ID; ignoring.");
        return None;
    }
    if !matches!(flags.len(), 1 | 2) {
        warn.push("invalid jaeger flags; ignoring.");
        return None;
    }
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some(Context {
        trace_id: from_hex(trace_id),
        span_id: from_hex(span_id),
        parent_id: from_hex(parent_id),
        reuse_span_id: true,
        should_sample: Some(flags % 2 == 1),
        baggage: h.baggage("uberctx-"),
        ..Context::default()
    })
}

fn ot(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    if !h.any(&["ot-tracer-sampled", "ot-tracer-traceid", "ot-tracer-spanid"]) {
        return None;
    }
    let should_sample = match h.one("ot-tracer-sampled") {
        Some("1" | "true") => Some(true),
        Some("0" | "false") => Some(false),
        Some(_) => {
            warn.push("ot-tracer-sampled header invalid; ignoring.");
            None
        }
        None => None,
    };
    let mut invalid = false;
    let trace_id = match h.one("ot-tracer-traceid") {
        Some(v) if !matches!(v.len(), 16 | 32) || !is_hex(v) => {
            warn.push("ot-tracer-traceid header invalid; ignoring.");
            invalid = true;
            None
        }
        other => other,
    };
    let span_id = match h.one("ot-tracer-spanid") {
        Some(v) if v.len() != 16 || !is_hex(v) => {
            warn.push("ot-tracer-spanid header invalid; ignoring.");
            invalid = true;
            None
        }
        other => other,
    };
    let (trace_id, span_id) = if trace_id.is_none() || invalid {
        (None, None)
    } else {
        (trace_id, span_id)
    };
    Some(Context {
        trace_id: trace_id.and_then(from_hex),
        span_id: span_id.and_then(from_hex),
        should_sample,
        baggage: h.baggage("ot-baggage-"),
        ..Context::default()
    })
}

fn datadog(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    if !h.any(&[
        "x-datadog-trace-id",
        "x-datadog-parent-id",
        "x-datadog-sampling-priority",
    ]) {
        return None;
    }
    let should_sample = match h.one("x-datadog-sampling-priority") {
        Some("1" | "2") => Some(true),
        Some("0" | "-1") => Some(false),
        Some(_) => {
            warn.push("x-datadog-sampling-priority header invalid; ignoring.");
            return None;
        }
        None => None,
    };
    let decimal = |name: &str, message: &'static str, warn: &mut Vec<&'static str>| {
        let v = h.one(name)?.trim();
        if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
            from_dec(v)
        } else {
            warn.push(message);
            None
        }
    };
    let trace_id = decimal(
        "x-datadog-trace-id",
        "x-datadog-trace-id header invalid; ignoring.",
        warn,
    );
    let parent_id = decimal(
        "x-datadog-parent-id",
        "x-datadog-parent-id header invalid; ignoring.",
        warn,
    );
    Some(Context {
        span_id: if trace_id.is_some() { parent_id } else { None },
        trace_id,
        should_sample,
        ..Context::default()
    })
}

fn aws(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    let value = h.one("x-amzn-trace-id")?;
    let mut ctx = Context::default();
    for pair in value.split(';') {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = value.trim();
        match key.trim() {
            "Root" => {
                let parts: Vec<&str> = value.split('-').collect();
                match parts[..] {
                    ["1", time, unique]
                        if value.len() == 35
                            && time.len() == 8
                            && unique.len() == 24
                            && is_hex(time)
                            && is_hex(unique) =>
                    {
                        ctx.trace_id = from_hex(&format!("{time}{unique}"));
                    }
                    _ => {
                        warn.push("invalid aws header trace id; ignoring.");
                        return None;
                    }
                }
            }
            "Parent" => {
                if value.len() != 16 || !is_hex(value) {
                    warn.push("invalid aws header parent id; ignoring.");
                    return None;
                }
                ctx.span_id = from_hex(value);
            }
            "Sampled" => match value {
                "0" | "1" => ctx.should_sample = Some(value == "1"),
                _ => {
                    warn.push("invalid aws header sampled flag; ignoring.");
                    return None;
                }
            },
            _ => {}
        }
    }
    Some(ctx)
}

fn gcp(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    let value = h.one("x-cloud-trace-context")?;
    let parsed = (|| {
        let (trace_id, rest) = value.split_once('/')?;
        let (span_id, options) = match rest.split_once(";o=") {
            Some((s, o)) => (s, Some(o)),
            None => (rest, None),
        };
        let lower_hex = trace_id.len() == 32
            && trace_id
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
        let decimal = (1..=20).contains(&span_id.len()) && span_id.bytes().all(|b| b.is_ascii_digit());
        let flags_ok = options.is_none_or(|o| o.len() == 1 && o.as_bytes()[0].is_ascii_digit());
        (lower_hex && decimal && flags_ok).then_some((trace_id, span_id, options))
    })();
    let Some((trace_id, span_id, options)) = parsed else {
        warn.push("invalid GCP header; ignoring.");
        return None;
    };
    Some(Context {
        trace_id: from_hex(trace_id),
        span_id: from_dec(span_id),
        should_sample: Some(options == Some("1")),
        ..Context::default()
    })
}

fn instana(h: &Headers<'_>, warn: &mut Vec<&'static str>) -> Option<Context> {
    if !h.any(&["x-instana-t", "x-instana-s", "x-instana-l"]) {
        return None;
    }
    let leading_hex = |v: &str| -> Option<String> {
        let n = v.bytes().take_while(u8::is_ascii_hexdigit).count();
        (n > 0).then(|| v[..n].to_owned())
    };
    let trace_id = leading_hex(h.one("x-instana-t")?);
    if !trace_id.as_ref().is_some_and(|t| matches!(t.len(), 16 | 32)) {
        warn.push("x-instana-t header invalid; ignoring.");
    }
    let span_id = leading_hex(h.one("x-instana-s")?);
    if span_id.is_none() {
        warn.push("x-instana-s header invalid; ignoring.");
    }
    let level = h.one("x-instana-l").and_then(|l| l.chars().next());
    Some(Context {
        trace_id: trace_id.as_deref().and_then(from_hex),
        span_id: span_id.as_deref().and_then(from_hex),
        should_sample: Some(level == Some('1')),
        ..Context::default()
    })
}

/// One injector's output: the headers to set upstream and the trace id as the format writes
/// it (for the log serializer's `trace_id`).
#[derive(Debug)]
pub(crate) struct Injected {
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) trace_id: (&'static str, Value),
}

/// Injects `ctx` in `format` (Kong's injector `inject`): ids sized for the format (the
/// received trace id size when the format allows it), then its headers.
pub(crate) fn inject(format: &str, ctx: &Context) -> Result<Injected, String> {
    let (name, required, sizes): (&'static str, bool, &[usize]) = match format {
        "w3c" => ("w3c", true, &[16]),
        "b3" => ("b3", false, &[16, 8]),
        "b3-single" => ("b3-single", false, &[16, 8]),
        "jaeger" => ("jaeger", true, &[16, 8]),
        "ot" => ("ot", true, &[8, 16]),
        "datadog" => ("datadog", false, &[8]),
        "aws" => ("aws", true, &[16]),
        "gcp" => ("gcp", true, &[16]),
        "instana" => ("instana", false, &[16, 8]),
        other => return Err(format!("unknown propagation format {other}")),
    };
    if required {
        if ctx.trace_id.is_none() {
            return Err(format!(
                "{name} injector context is invalid: field trace_id not found in context"
            ));
        }
        if ctx.span_id.is_none() {
            return Err(format!(
                "{name} injector context is invalid: field span_id not found in context"
            ));
        }
    }
    let size = match ctx.trace_id_original_size {
        Some(s) if sizes.contains(&s) => s,
        _ => sizes[0],
    };
    let trace_id = ctx.trace_id.as_deref().map(|t| to_id_size(t, size));
    let span_id = ctx.span_id.as_deref().map(|s| to_id_size(s, 8));
    let parent_id = ctx.parent_id.as_deref().map(|p| to_id_size(p, 8));
    let hex = |v: &Option<Vec<u8>>| v.as_deref().map(to_hex);
    let (t, s, p) = (hex(&trace_id), hex(&span_id), hex(&parent_id));
    let mut headers = Vec::new();
    let mut push = |k: &str, v: String| headers.push((k.to_owned(), v));
    let sampled01 = |yes: bool| if yes { "1" } else { "0" };
    match name {
        "w3c" => {
            let flags = if ctx.should_sample == Some(true) { "01" } else { "00" };
            push(
                "traceparent",
                format!("00-{}-{}-{flags}", t.clone().unwrap_or_default(), s.unwrap_or_default()),
            );
        }
        "b3" => {
            if let (Some(t), Some(s)) = (&t, &s) {
                push("x-b3-traceid", t.clone());
                push("x-b3-spanid", s.clone());
                if let Some(p) = &p {
                    push("x-b3-parentspanid", p.clone());
                }
            }
            match &ctx.flags {
                Some(f) => push("x-b3-flags", f.clone()),
                None => push("x-b3-sampled", sampled01(ctx.should_sample == Some(true)).into()),
            }
        }
        "b3-single" => {
            let sampled = if ctx.flags.as_deref() == Some("1") {
                Some("d")
            } else {
                ctx.should_sample.map(sampled01)
            };
            match (&t, &s) {
                (Some(t), Some(s)) => {
                    let mut v = format!("{t}-{s}");
                    if let Some(x) = sampled {
                        v.push('-');
                        v.push_str(x);
                    }
                    if let Some(p) = &p {
                        v.push('-');
                        v.push_str(p);
                    }
                    push("b3", v);
                }
                _ => push("b3", sampled.unwrap_or("0").into()),
            }
        }
        "jaeger" => {
            let flags = if ctx.should_sample == Some(true) { "01" } else { "00" };
            let parent = p.clone().unwrap_or_else(|| "0".into());
            push(
                "uber-trace-id",
                format!(
                    "{}:{}:{parent}:{flags}",
                    t.clone().unwrap_or_default(),
                    s.unwrap_or_default()
                ),
            );
            for (k, v) in &ctx.baggage {
                push(&format!("uberctx-{k}"), kong_pdk::pdk::percent_encode_component(v));
            }
        }
        "ot" => {
            push("ot-tracer-traceid", t.clone().unwrap_or_default());
            push("ot-tracer-spanid", s.unwrap_or_default());
            if let Some(yes) = ctx.should_sample {
                push("ot-tracer-sampled", sampled01(yes).into());
            }
            for (k, v) in &ctx.baggage {
                push(&format!("ot-baggage-{k}"), kong_pdk::pdk::percent_encode_component(v));
            }
        }
        "datadog" => {
            if let Some(t) = &trace_id {
                push("x-datadog-trace-id", to_dec(t));
            }
            if let Some(s) = &span_id {
                push("x-datadog-parent-id", to_dec(s));
            }
            if let Some(yes) = ctx.should_sample {
                push("x-datadog-sampling-priority", sampled01(yes).into());
            }
        }
        "aws" => {
            let t = t.clone().unwrap_or_default();
            let (time, unique) = t.split_at(8.min(t.len()));
            let sampled = sampled01(ctx.should_sample == Some(true));
            push(
                "x-amzn-trace-id",
                format!(
                    "Root=1-{time}-{unique};Parent={};Sampled={sampled}",
                    s.unwrap_or_default()
                ),
            );
        }
        "gcp" => {
            let sampled = sampled01(ctx.should_sample == Some(true));
            let span = span_id.as_deref().map(to_dec).unwrap_or_default();
            push(
                "x-cloud-trace-context",
                format!("{}/{span};o={sampled}", t.clone().unwrap_or_default()),
            );
        }
        _ => {
            if let Some(t) = &t {
                push("x-instana-t", t.clone());
            }
            if let Some(s) = &s {
                push("x-instana-s", s.clone());
            }
            if let Some(yes) = ctx.should_sample {
                push("x-instana-l", sampled01(yes).into());
            }
        }
    }
    let formatted = match name {
        "b3" | "b3-single" => ("b3", Value::from(t.unwrap_or_default())),
        "datadog" => (
            "datadog",
            trace_id.as_deref().map(to_dec).map_or(Value::Null, Value::from),
        ),
        other => (other, Value::from(t.unwrap_or_default())),
    };
    Ok(Injected {
        headers,
        trace_id: formatted,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn all() -> Vec<String> {
        PRESERVE_EXTRACT.iter().map(|s| s.to_string()).collect()
    }

    const TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const SPAN: &str = "b7ad6b7169203331";

    #[test]
    fn w3c_traceparent_round_trips() {
        let h = headers(&[("traceparent", &format!("00-{TRACE}-{SPAN}-01"))]);
        let e = extract(&all(), &h);
        assert_eq!(e.from, Some("w3c"));
        assert_eq!(to_hex(e.context.trace_id.as_ref().unwrap()), TRACE);
        assert_eq!(to_hex(e.context.span_id.as_ref().unwrap()), SPAN);
        assert_eq!(e.context.should_sample, Some(true));
        let out = inject("w3c", &e.context).unwrap();
        assert_eq!(
            out.headers,
            vec![("traceparent".into(), format!("00-{TRACE}-{SPAN}-01"))]
        );
        assert_eq!(out.trace_id, ("w3c", Value::from(TRACE)));
    }

    #[test]
    fn invalid_w3c_headers_are_ignored_with_kong_warnings() {
        for (value, warning) in [
            (
                "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "invalid W3C Trace Context version; ignoring.",
            ),
            (
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",
                "invalid W3C trace context trace ID; ignoring.",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
                "invalid W3C trace context parent ID; ignoring.",
            ),
            (
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-001",
                "invalid W3C trace context flags; ignoring.",
            ),
            ("garbage", "invalid W3C traceparent header; ignoring."),
        ] {
            let e = extract(&["w3c".into()], &headers(&[("traceparent", value)]));
            assert_eq!((e.from, e.warnings), (None, vec![warning]), "{value}");
        }
    }

    #[test]
    fn b3_multi_and_single_headers() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", SPAN),
            ("x-b3-sampled", "1"),
        ]);
        let e = extract(&all(), &h);
        assert_eq!(e.from, Some("b3"));
        assert_eq!(e.context.trace_id_original_size, Some(8));
        assert_eq!(e.context.trace_id.as_ref().unwrap().len(), 16, "stored as 16 bytes");
        // Injected back as b3 it keeps its 8 bytes.
        let out = inject("b3", &e.context).unwrap();
        assert_eq!(
            out.headers,
            vec![
                ("x-b3-traceid".into(), "463ac35c9f6413ad".into()),
                ("x-b3-spanid".into(), SPAN.into()),
                ("x-b3-sampled".into(), "1".into())
            ]
        );
        let single = headers(&[("b3", &format!("{TRACE}-{SPAN}-d-0000000000000001"))]);
        let e = extract(&all(), &single);
        assert!(e.context.single_header);
        assert_eq!(e.context.flags.as_deref(), Some("1"));
        let out = inject("b3-single", &e.context).unwrap();
        assert_eq!(
            out.headers,
            vec![("b3".into(), format!("{TRACE}-{SPAN}-d-0000000000000001"))]
        );
        // A lone sampling decision.
        let e = extract(&all(), &headers(&[("b3", "0")]));
        assert_eq!(e.context.should_sample, Some(false));
        assert_eq!(
            inject("b3-single", &e.context).unwrap().headers,
            vec![("b3".into(), "0".into())]
        );
    }

    #[test]
    fn jaeger_and_ot_keep_baggage() {
        let h = headers(&[
            ("uber-trace-id", &format!("{TRACE}:{SPAN}:0:1")),
            ("uberctx-user", "a b"),
        ]);
        let e = extract(&all(), &h);
        assert_eq!(e.from, Some("jaeger"));
        assert_eq!(e.context.baggage, vec![("user".into(), "a b".into())]);
        let out = inject("jaeger", &e.context).unwrap();
        assert_eq!(
            out.headers[0],
            ("uber-trace-id".into(), format!("{TRACE}:{SPAN}:0000000000000000:01"))
        );
        assert_eq!(out.headers[1], ("uberctx-user".into(), "a%20b".into()));
        let h = headers(&[
            ("ot-tracer-traceid", TRACE),
            ("ot-tracer-spanid", SPAN),
            ("ot-tracer-sampled", "0"),
        ]);
        let e = extract(&all(), &h);
        assert_eq!((e.from, e.context.should_sample), (Some("ot"), Some(false)));
    }

    #[test]
    fn datadog_aws_gcp_instana() {
        let e = extract(
            &all(),
            &headers(&[
                ("x-datadog-trace-id", "1234"),
                ("x-datadog-parent-id", "5678"),
                ("x-datadog-sampling-priority", "1"),
            ]),
        );
        assert_eq!(e.from, Some("datadog"));
        let out = inject("datadog", &e.context).unwrap();
        assert_eq!(
            out.headers,
            vec![
                ("x-datadog-trace-id".into(), "1234".into()),
                ("x-datadog-parent-id".into(), "5678".into()),
                ("x-datadog-sampling-priority".into(), "1".into())
            ]
        );
        let aws = format!("Root=1-{}-{};Parent={SPAN};Sampled=1", &TRACE[..8], &TRACE[8..]);
        let e = extract(&all(), &headers(&[("x-amzn-trace-id", &aws)]));
        assert_eq!(e.from, Some("aws"));
        assert_eq!(
            inject("aws", &e.context).unwrap().headers,
            vec![("x-amzn-trace-id".into(), aws)]
        );
        let e = extract(
            &all(),
            &headers(&[("x-cloud-trace-context", &format!("{TRACE}/123;o=1"))]),
        );
        assert_eq!(e.from, Some("gcp"));
        assert_eq!(
            inject("gcp", &e.context).unwrap().headers,
            vec![("x-cloud-trace-context".into(), format!("{TRACE}/123;o=1"))]
        );
        let e = extract(
            &all(),
            &headers(&[("x-instana-t", TRACE), ("x-instana-s", SPAN), ("x-instana-l", "1")]),
        );
        assert_eq!((e.from, e.context.should_sample), (Some("instana"), Some(true)));
    }

    #[test]
    fn w3c_injection_needs_ids() {
        assert_eq!(
            inject("w3c", &Context::default()).unwrap_err(),
            "w3c injector context is invalid: field trace_id not found in context"
        );
        assert_eq!(from_hex("abc"), Some(vec![0x0a, 0xbc]));
        assert_eq!(to_id_size(&[1, 2, 3], 2), vec![2, 3]);
    }
}
