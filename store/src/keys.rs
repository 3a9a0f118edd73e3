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
    /// `whr:{R}:lease` HASH: event id -> fencing token of its current lease.
    pub lease: String,
    /// `whr:{R}:body` HASH: event id -> raw request body, byte for byte.
    pub body: String,
    /// `whr:{R}:meta` HASH: event id -> JSON metadata (received at, content type, last outcome).
    pub meta: String,
    /// `whr:{R}:attempts` HASH: event id -> attempts started.
    pub attempts: String,
    /// `whr:{R}:pending` ZSET: event id -> time it became undelivered (due or in flight), Unix ms.
    pub pending: String,
    /// `whr:{R}:seen` ZSET: event id -> end of its dedup window, Unix ms.
    pub seen: String,
    /// `whr:{R}:fence` STRING: the last fencing token issued.
    pub fence: String,
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
            body: k("body"),
            meta: k("meta"),
            attempts: k("attempts"),
            pending: k("pending"),
            seen: k("seen"),
            fence: k("fence"),
            alive: k("alive"),
            claim_prefix: k("claim:"),
        }
    }

    /// `whr:{R}:claim:<claim_id>`: the record of one claim call.
    pub fn claim(&self, claim_id: u64) -> String {
        format!("{}{claim_id:016x}", self.claim_prefix)
    }
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
        assert_eq!(Keys::new("a{b}").due, "whr:{a_b_}:due");
        assert_eq!(k.claim(255), "whr:{cx/orders}:claim:00000000000000ff");
    }
}
