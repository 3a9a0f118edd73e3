//! Small pieces the relay, the operator, the Genesys client and the tests share, each
//! defined once: retries with backoff ([`retry`]), `Retry-After` ([`retry_after`]), an
//! error and its causes on one line ([`error_chain`]), HMAC-SHA256 signatures ([`signature`]).

pub mod retry;
pub mod retry_after;
pub mod signature;

/// An error and its causes on one line, without repeats (reqwest and hyper nest the same
/// message at several levels): `error sending request: connection refused`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut current = Some(err);
    while let Some(e) = current {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        current = e.source();
    }
    parts.join(": ")
}

/// The innermost cause of an error: what went wrong at the bottom (`connection refused`),
/// without the outer layers that may repeat a URL.
pub fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = err;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct E(&'static str, Option<Box<E>>);
    impl std::fmt::Display for E {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }
    impl std::error::Error for E {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            self.1.as_deref().map(|e| e as _)
        }
    }

    #[test]
    fn error_chains_join_causes_once() {
        let e = E(
            "error sending request",
            Some(Box::new(E("connect: connection refused", Some(Box::new(E("connection refused", None)))))),
        );
        assert_eq!(error_chain(&e), "error sending request: connect: connection refused");
        assert_eq!(error_chain(&E("alone", None)), "alone");
        assert_eq!(root_cause(&e), "connection refused");
    }
}
