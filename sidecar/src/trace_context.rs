//! W3C Trace Context (<https://www.w3.org/TR/trace-context/>): the `traceparent` (and
//! `tracestate`) a sender put on a webhook is stored with the event, and every delivery
//! attempt sends the same trace id with a span id of its own, so the downstream's spans join
//! the sender's trace and each attempt is told apart.
//!
//! What is stored (in `whr:{R}:trace`, see `store/README.md`) is the received `traceparent`
//! rewritten in version `00` form, then, if the request had one, `\n` and its `tracestate`.
//! With span export on (`tracing.otlpEndpoint`, see [`crate::otlp`]) the stored parent is the
//! relay's own intake span instead, and a webhook without a `traceparent` starts a trace.
//! A malformed `traceparent` is ignored (the event is still accepted), and its `tracestate`
//! with it, as the specification asks.

use axum::http::HeaderMap;

/// Longest `tracestate` kept: the specification's limit for what a vendor must propagate.
pub const MAX_TRACESTATE: usize = 512;
/// Most `tracestate` list members: the specification's limit.
pub const MAX_TRACESTATE_MEMBERS: usize = 32;

/// A parsed `traceparent`: trace id, the sender's span (parent) id and the trace flags.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl TraceParent {
    /// Parses a `traceparent` value: `00-<32 hex>-<16 hex>-<2 hex>`, lower case, trace and
    /// parent ids not all zero. A version above `00` (not `ff`) is read as far as `00`
    /// defines it, when what follows is `-`-separated (the specification's forward rule).
    pub fn parse(value: &str) -> Option<TraceParent> {
        let v = value.trim_matches([' ', '\t']);
        let b = v.as_bytes();
        if b.len() < 55 || !is_lower_hex(&b[..2]) || &b[..2] == b"ff" {
            return None;
        }
        if &b[..2] == b"00" && b.len() != 55 || b.len() > 55 && b[55] != b'-' {
            return None;
        }
        if b[2] != b'-' || b[35] != b'-' || b[52] != b'-' {
            return None;
        }
        let (trace, parent, flags) = (&b[3..35], &b[36..52], &b[53..55]);
        if !is_lower_hex(trace) || !is_lower_hex(parent) || !is_lower_hex(flags) {
            return None;
        }
        let mut out = TraceParent { trace_id: [0; 16], parent_id: [0; 8], flags: 0 };
        hex::decode_to_slice(trace, &mut out.trace_id).ok()?;
        hex::decode_to_slice(parent, &mut out.parent_id).ok()?;
        let mut f = [0u8; 1];
        hex::decode_to_slice(flags, &mut f).ok()?;
        out.flags = f[0];
        if out.trace_id == [0; 16] || out.parent_id == [0; 8] {
            return None;
        }
        Some(out)
    }

    /// The header value, version `00`.
    pub fn header(&self) -> String {
        format!("00-{}-{}-{:02x}", hex::encode(self.trace_id), hex::encode(self.parent_id), self.flags)
    }

    /// The same trace continued by a new span (`span_id`, the attempt's own).
    pub fn child(&self, span_id: [u8; 8]) -> TraceParent {
        TraceParent { parent_id: span_id, ..self.clone() }
    }

    /// The sender asks for the trace to be recorded (flag `01`).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }
}

/// What a request brought: its `traceparent`, and its `tracestate` if valid.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Received {
    pub parent: TraceParent,
    pub state: Option<String>,
}

/// The trace context stored for an event: `parent`'s header, then `\n` and `state`.
pub fn stored(parent: &TraceParent, state: Option<&str>) -> String {
    match state {
        Some(s) => format!("{}\n{s}", parent.header()),
        None => parent.header(),
    }
}

/// What intake does with a request's trace context.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeTrace {
    /// Stored with the event: what each attempt continues.
    pub stored: Option<String>,
    /// The intake span, when spans are exported and the trace is sampled.
    pub span: Option<IntakeSpan>,
}

/// The ids of an exported intake span.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IntakeSpan {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    /// The sender's span; none when the request started the trace.
    pub parent_id: Option<[u8; 8]>,
}

/// The trace context of a request at intake. Without export the received context is stored
/// as it came, so attempts are children of the sender's span. With export (`exporting`) a
/// sampled request, or one without a `traceparent` (a new trace), gets an intake span and the
/// stored context names that span, so attempts are its children; an unsampled one is stored
/// as it came and exports nothing.
pub fn for_intake(headers: &HeaderMap, exporting: bool) -> IntakeTrace {
    let received = received(headers);
    if !exporting || received.as_ref().is_some_and(|r| !r.parent.sampled()) {
        return IntakeTrace { stored: received.map(|r| stored(&r.parent, r.state.as_deref())), span: None };
    }
    let span_id = new_span_id();
    let (parent, state) = match received {
        Some(r) => (r.parent, r.state),
        None => (TraceParent { trace_id: new_trace_id(), parent_id: span_id, flags: 1 }, None),
    };
    let span = IntakeSpan {
        trace_id: parent.trace_id,
        span_id,
        parent_id: (parent.parent_id != span_id).then_some(parent.parent_id),
    };
    IntakeTrace { stored: Some(stored(&parent.child(span_id), state.as_deref())), span: Some(span) }
}

fn is_lower_hex(b: &[u8]) -> bool {
    b.iter().all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// A fresh trace id: random, never all zero.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id: [u8; 16] = rand::random();
        if id != [0; 16] {
            return id;
        }
    }
}

/// A fresh span id: random, never all zero.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id: [u8; 8] = rand::random();
        if id != [0; 8] {
            return id;
        }
    }
}

/// A request's trace context, from its `traceparent` and `tracestate` headers; `None` when
/// it has no valid `traceparent` (or more than one). Several `tracestate` headers are one
/// list (joined with `,`); one of more than [`MAX_TRACESTATE_MEMBERS`] members or over
/// [`MAX_TRACESTATE`] bytes loses list members from its end until it fits, and one that is not
/// printable ASCII is dropped.
pub fn received(headers: &HeaderMap) -> Option<Received> {
    let mut parents = headers.get_all("traceparent").iter();
    let (Some(first), None) = (parents.next(), parents.next()) else { return None };
    let parent = TraceParent::parse(first.to_str().ok()?)?;
    let mut state = Vec::new();
    for v in headers.get_all("tracestate") {
        let Ok(v) = v.to_str() else { return Some(Received { parent, state: None }) };
        state.extend(v.split(',').map(|m| m.trim_matches([' ', '\t'])).filter(|m| !m.is_empty()));
    }
    if state.iter().any(|m| !m.bytes().all(|c| (0x20..0x7f).contains(&c))) {
        return Some(Received { parent, state: None });
    }
    state.truncate(MAX_TRACESTATE_MEMBERS);
    while !state.is_empty() && state.join(",").len() > MAX_TRACESTATE {
        state.pop();
    }
    Some(Received { parent, state: (!state.is_empty()).then(|| state.join(",")) })
}

/// A stored trace context, parsed: the attempt's parent (its `traceparent` with a new span id
/// is what the attempt sends) and the `tracestate` sent on.
pub fn for_attempt(stored: &str) -> Option<(TraceParent, Option<&str>)> {
    let (parent, state) = split(stored);
    Some((TraceParent::parse(parent)?, state))
}

/// A stored trace context's `traceparent` and `tracestate`.
pub fn split(stored: &str) -> (&str, Option<&str>) {
    match stored.split_once('\n') {
        Some((p, s)) => (p, Some(s)),
        None => (stored, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    const SENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    fn from_request(h: &HeaderMap) -> Option<String> {
        for_intake(h, false).stored
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn a_valid_traceparent_is_kept_with_its_tracestate() {
        assert_eq!(from_request(&headers(&[("traceparent", SENT)])).as_deref(), Some(SENT));
        let h = headers(&[
            ("traceparent", SENT),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("tracestate", " rojo=00f067aa0ba902b7 "),
        ]);
        assert_eq!(from_request(&h).unwrap(), format!("{SENT}\ncongo=t61rcWkgMzE,rojo=00f067aa0ba902b7"));
    }

    #[test]
    fn malformed_traceparents_are_ignored_with_their_tracestate() {
        for bad in [
            "",
            "00-0AF7651916CD43DD8448EB211C80319C-B7AD6B7169203331-01", // upper case
            "00-00000000000000000000000000000000-b7ad6b7169203331-01", // zero trace id
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01", // zero parent id
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", // version ff
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x", // 00 has no more fields
            "00-0af7651916cd43dd8448eb211c80319-cb7ad6b7169203331-01",
            "00_0af7651916cd43dd8448eb211c80319c_b7ad6b7169203331_01",
        ] {
            let h = headers(&[("traceparent", bad), ("tracestate", "a=b")]);
            assert_eq!(from_request(&h), None, "{bad:?}");
        }
        let two = headers(&[("traceparent", SENT), ("traceparent", SENT)]);
        assert_eq!(from_request(&two), None, "two traceparent headers are not one trace");
    }

    #[test]
    fn a_later_version_is_read_as_version_00() {
        let v = "cc-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-what-comes-later";
        assert_eq!(from_request(&headers(&[("traceparent", v)])).as_deref(), Some(SENT));
    }

    #[test]
    fn a_long_tracestate_loses_members_from_its_end() {
        let state_of = |members: &[String]| {
            let h = headers(&[("traceparent", SENT), ("tracestate", &members.join(","))]);
            from_request(&h).unwrap().split_once('\n').unwrap().1.to_string()
        };
        // 40 members of 14 bytes: the first 32.
        let many: Vec<String> = (0..40).map(|i| format!("k{i:02}=vvvvvvvvvv")).collect();
        let state = state_of(&many);
        assert!(state.starts_with("k00=") && state.ends_with("k31=vvvvvvvvvv"), "{state}");
        // 20 members of 34 bytes: the first 14 (489 bytes; 15 would be 524).
        let long: Vec<String> = (0..20).map(|i| format!("k{i:02}={}", "v".repeat(30))).collect();
        let state = state_of(&long);
        assert!(state.len() <= MAX_TRACESTATE && state.ends_with(&format!("k13={}", "v".repeat(30))), "{state}");
    }

    #[test]
    fn each_attempt_has_its_own_span_in_the_same_trace() {
        let stored = format!("{SENT}\nrojo=1");
        let (parent, state) = for_attempt(&stored).unwrap();
        assert_eq!(
            parent.child([1, 2, 3, 4, 5, 6, 7, 8]).header(),
            "00-0af7651916cd43dd8448eb211c80319c-0102030405060708-01"
        );
        assert_eq!(state, Some("rojo=1"));
        let attempt = || for_attempt(SENT).unwrap().0.child(new_span_id()).header();
        let (b, c) = (attempt(), attempt());
        assert_eq!(&b[..36], &SENT[..36], "same version and trace id");
        assert_ne!(b, c, "a new span id per attempt");
        assert_ne!(&b[36..52], "b7ad6b7169203331", "not the sender's span");
    }

    #[test]
    fn with_export_the_intake_span_becomes_the_attempts_parent() {
        let h = headers(&[("traceparent", SENT), ("tracestate", "rojo=1")]);
        let t = for_intake(&h, true);
        let span = t.span.expect("a sampled trace is exported");
        assert_eq!(hex::encode(span.trace_id), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(span.parent_id.map(hex::encode).as_deref(), Some("b7ad6b7169203331"), "child of the sender's span");
        let stored = t.stored.unwrap();
        let (parent, state) = for_attempt(&stored).unwrap();
        assert_eq!(
            (parent.parent_id, parent.flags, state),
            (span.span_id, 1, Some("rojo=1")),
            "attempts: children of intake"
        );

        let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";
        let t = for_intake(&headers(&[("traceparent", unsampled)]), true);
        assert_eq!(
            (t.span, t.stored.as_deref()),
            (None, Some(unsampled)),
            "not sampled: stored as it came, nothing exported"
        );

        let t = for_intake(&HeaderMap::new(), true);
        let span = t.span.expect("a webhook without a trace starts one");
        assert_eq!(span.parent_id, None);
        let (parent, _) = for_attempt(t.stored.as_deref().unwrap()).unwrap();
        assert_eq!((parent.trace_id, parent.parent_id, parent.sampled()), (span.trace_id, span.span_id, true));
        assert_eq!(
            for_intake(&HeaderMap::new(), false),
            IntakeTrace { stored: None, span: None },
            "no export: none made up"
        );
    }
}
