//! The Redis key layout of one relay. This is a stable format (see `store/README.md`):
//! the operator, the sidecar and tools all read it.
//!
//! Every key carries the hash tag `{R}` so one relay's keys live in one cluster slot and
//! every script can touch all of them on Redis Cluster.

use std::borrow::Cow;

/// The keys of one relay `R`.
#[derive(Clone, Debug)]
pub struct Keys {
    /// `whr:{R}:due` ZSET: event id -> next attempt time, Unix ms.
    pub due: String,
    /// `whr:{R}:dead` ZSET: event id -> time it was dead-lettered, Unix ms.
    pub dead: String,
    /// `whr:{R}:inflight` ZSET: event id -> lease deadline, Unix ms.
    pub inflight: String,
    /// `whr:{R}:lease` HASH: event id -> `<token> <attempt> <seen until>` of its current lease.
    pub lease: String,
    /// `whr:{R}:ev` HASH: event id -> its record (attempts, received at, dedup window end,
    /// last outcome, content type, body byte for byte; see `store/README.md`).
    pub ev: String,
    /// `whr:{R}:pending` ZSET: event id -> time it became undelivered, Unix ms, for events
    /// attempted at least once since (never-attempted ones are scored so in `due`).
    pub pending: String,
    /// `whr:{R}:seen` ZSET: event id -> end of its dedup window, Unix ms, for events no
    /// longer stored (a stored event's record is its dedup entry).
    pub seen: String,
    /// `whr:{R}:fence` HASH: field `token`, the last fencing token issued.
    pub fence: String,
    /// `whr:{R}:format` STRING: the store format of this relay's keys (2).
    pub format: String,
    /// `whr:{R}:dest` HASH: the destination gate shared by every replica: a `Retry-After`
    /// pause, the circuit breaker, the rate limit's token bucket (fields in `store/README.md`).
    pub dest: String,
    /// `whr:{R}:trace` HASH: event id -> the W3C trace context it was received with
    /// (`traceparent`, then `\n` and `tracestate` if one came); only events that had one.
    pub trace: String,
    /// `whr:{R}:wait` STRING: written by an enqueue that stored nothing (all duplicates)
    /// when the relay waits for replicas, so its `WAIT` covers the duplicates' first write.
    pub wait: String,
    /// Per-key ordering (`delivery.ordering`; see `store/README.md`): these six keys hold
    /// only events that came with an ordering key.
    pub order: OrderKeys,
    /// Format 1's `whr:{R}:body`, `meta` and `attempts` hashes, read only to migrate them.
    pub v1: V1Keys,
    /// `whr:{R}:alive` STRING: written by each relay's health check (it expires by itself),
    /// because only a write shows that Redis can store (reads still work when it is out of memory).
    pub alive: String,
    /// Prefix of `whr:{R}:claim:<claim id>` STRING keys: what one claim call took, so a
    /// retry of that call gets the same events back; each expires with its lease.
    claim_prefix: String,
}

impl Keys {
    /// The keys of relay `relay` (its id is used verbatim inside the hash tag).
    pub fn new(relay: &str) -> Self {
        let tag = sanitize(relay);
        let k = |s: &str| format!("whr:{{{tag}}}:{s}");
        Keys {
            due: k("due"),
            dead: k("dead"),
            inflight: k("inflight"),
            lease: k("lease"),
            ev: k("ev"),
            pending: k("pending"),
            seen: k("seen"),
            fence: k("fence"),
            format: k("format"),
            dest: k("dest"),
            trace: k("trace"),
            wait: k("wait"),
            order: OrderKeys {
                okey: k("okey"),
                ord: k("ord"),
                ohead: k("ohead"),
                owait: k("owait"),
                blocked: k("blocked"),
                oseq: k("oseq"),
            },
            v1: V1Keys { body: k("body"), meta: k("meta"), attempts: k("attempts") },
            alive: k("alive"),
            claim_prefix: k("claim:"),
        }
    }

    /// `whr:{R}:claim:<claim_id>`: the record of one claim call.
    pub fn claim(&self, claim_id: u64) -> String {
        format!("{}{claim_id:016x}", self.claim_prefix)
    }
}

/// The keys of per-key ordered delivery (additions to format 2, like `trace`).
#[derive(Clone, Debug)]
pub struct OrderKeys {
    /// `whr:{R}:okey` HASH: event id -> its member of `ord` (ordering key and place of
    /// receipt), for every stored event that came with an ordering key.
    pub okey: String,
    /// `whr:{R}:ord` ZSET, every score 0: members `<key length, 8 hex><key><sequence, 16
    /// digits><id>`, so one key's events are one lexicographic range in receive order.
    pub ord: String,
    /// `whr:{R}:ohead` HASH: ordering key -> the id of its one active event (due, in
    /// flight, or dead under `onDeadLetter: block`); absent while the key has no event.
    pub ohead: String,
    /// `whr:{R}:owait` HASH: ordering key -> how many of its events wait behind the active one.
    pub owait: String,
    /// `whr:{R}:blocked` ZSET: event id -> when it began waiting (received or replayed),
    /// Unix ms: events waiting behind the active event of their key.
    pub blocked: String,
    /// `whr:{R}:oseq` STRING: the last sequence number given to an ordered event.
    pub oseq: String,
}

/// The hashes of store format 1, which format 2 folds into `ev`.
#[derive(Clone, Debug)]
pub struct V1Keys {
    /// `whr:{R}:body` HASH: event id -> raw request body.
    pub body: String,
    /// `whr:{R}:meta` HASH: event id -> JSON metadata.
    pub meta: String,
    /// `whr:{R}:attempts` HASH: event id -> attempts started.
    pub attempts: String,
}

/// Braces would break the hash tag; `RelayId` already forbids them, this keeps `Keys` total.
fn sanitize(relay: &str) -> Cow<'_, str> {
    if relay.contains(['{', '}']) { Cow::Owned(relay.replace(['{', '}'], "_")) } else { Cow::Borrowed(relay) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_follow_the_documented_layout() {
        let k = Keys::new("cx/orders");
        assert_eq!(k.due, "whr:{cx/orders}:due");
        assert_eq!(k.dead, "whr:{cx/orders}:dead");
        assert_eq!(k.inflight, "whr:{cx/orders}:inflight");
        assert_eq!(k.ev, "whr:{cx/orders}:ev");
        assert_eq!(k.format, "whr:{cx/orders}:format");
        assert_eq!(Keys::new("a{b}").due, "whr:{a_b_}:due");
        assert_eq!(k.order.ord, "whr:{cx/orders}:ord");
        assert_eq!(k.order.blocked, "whr:{cx/orders}:blocked");
        assert_eq!(k.claim(255), "whr:{cx/orders}:claim:00000000000000ff");
    }
}
