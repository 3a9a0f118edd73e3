//! Request signature verification, compared in constant time.
//!
//! `genesys-open-messaging`: `X-Hub-Signature-256: sha256=<base64 HMAC-SHA256(secret, raw body)>`.
//! `hmac-sha256`: the same digest in a configurable header, hex or base64, with a prefix.
//! The digest itself and signing are [`webhook_relay_util::signature`]'s.

use base64::Engine;
use http::HeaderMap;
use webhook_relay_api::config::{SignatureEncoding, VerifyConfig};
use webhook_relay_util::signature as hmac;
pub use webhook_relay_util::signature::{GENESYS_HEADER, sign_genesys};

/// Why a signature was refused (never says what the right one would be).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("missing signature header")]
    Missing,
    #[error("signature header is not in the expected format")]
    Malformed,
    #[error("signature does not match the body")]
    Mismatch,
}

/// Which secret a signature matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignedWith {
    /// The current signing secret.
    Current,
    /// The previous one (`source.verify.previousSecretEnv`), during a rotation.
    Previous,
    /// Nothing checked: scheme `none`.
    Unchecked,
}

/// Checks signatures for one relay; holds the secret (and during a rotation the previous
/// one), never prints them.
#[derive(Clone)]
pub enum Verifier {
    Hmac {
        secret: Vec<u8>,
        previous: Option<Vec<u8>>,
        header: http::HeaderName,
        encoding: SignatureEncoding,
        prefix: String,
    },
    None,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Verifier::Hmac { header, previous, .. } => {
                let previous = if previous.is_some() { ", previous: ***" } else { "" };
                write!(f, "Verifier::Hmac {{ header: {header}, secret: ***{previous} }}")
            }
            Verifier::None => f.write_str("Verifier::None"),
        }
    }
}

impl Verifier {
    /// Builds the verifier for `config` with the secret already read from the environment
    /// (`Some` for every scheme but `none`: [`RunConfig`](crate::run_config::RunConfig) makes sure).
    pub fn new(config: &VerifyConfig, secret: Option<Vec<u8>>) -> Self {
        Self::rotating(config, secret, None)
    }

    /// Like [`new`](Self::new), also accepting `previous` (a rotation in progress).
    pub fn rotating(config: &VerifyConfig, secret: Option<Vec<u8>>, previous: Option<Vec<u8>>) -> Self {
        let secret = || secret.clone().expect("a signing secret for a signing scheme");
        match config {
            VerifyConfig::GenesysOpenMessaging { .. } => Verifier::Hmac {
                secret: secret(),
                previous,
                header: http::HeaderName::from_static(GENESYS_HEADER),
                encoding: SignatureEncoding::Base64,
                prefix: hmac::GENESYS_PREFIX.into(),
            },
            VerifyConfig::HmacSha256 { header, encoding, prefix, .. } => Verifier::Hmac {
                secret: secret(),
                previous,
                header: http::HeaderName::try_from(header.as_str()).expect("validated at config load"),
                encoding: *encoding,
                prefix: prefix.clone(),
            },
            VerifyConfig::None => Verifier::None,
        }
    }

    /// The header the signature is read from, if any.
    pub fn header(&self) -> Option<&http::HeaderName> {
        match self {
            Verifier::Hmac { header, .. } => Some(header),
            Verifier::None => None,
        }
    }

    /// Verifies `body` against the signature in `headers`.
    pub fn verify(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
        self.verify_which(headers, body).map(|_| ())
    }

    /// Verifies `body` against the signature in `headers`: which secret it matched. Each
    /// comparison takes constant time; the previous secret is tried only when the current
    /// one does not match.
    pub fn verify_which(&self, headers: &HeaderMap, body: &[u8]) -> Result<SignedWith, SignatureError> {
        let Verifier::Hmac { secret, previous, header, encoding, prefix } = self else {
            return Ok(SignedWith::Unchecked);
        };
        let value = headers.get(header).ok_or(SignatureError::Missing)?;
        let value = value.to_str().map_err(|_| SignatureError::Malformed)?.trim();
        let encoded = strip_prefix_ignore_case(value, prefix).ok_or(SignatureError::Malformed)?;
        let given = match encoding {
            SignatureEncoding::Hex => hex::decode(encoded).map_err(|_| SignatureError::Malformed)?,
            SignatureEncoding::Base64 => {
                base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| SignatureError::Malformed)?
            }
        };
        // Compared in constant time.
        if hmac::matches(secret, body, &given) {
            Ok(SignedWith::Current)
        } else if previous.as_ref().is_some_and(|p| hmac::matches(p, body, &given)) {
            Ok(SignedWith::Previous)
        } else {
            Err(SignatureError::Mismatch)
        }
    }
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    if s.len() >= prefix.len() && s.is_char_boundary(prefix.len()) && s[..prefix.len()].eq_ignore_ascii_case(prefix) {
        Some(&s[prefix.len()..])
    } else {
        None
    }
}

/// The signature a sender would put in the header for `encoding` and `prefix` (tests, demos).
pub fn sign(secret: &[u8], body: &[u8], encoding: SignatureEncoding, prefix: &str) -> String {
    let encoding = match encoding {
        SignatureEncoding::Hex => hmac::Encoding::Hex,
        SignatureEncoding::Base64 => hmac::Encoding::Base64,
    };
    hmac::sign(secret, body, encoding, prefix)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn genesys() -> Verifier {
        Verifier::new(
            &VerifyConfig::GenesysOpenMessaging { secret_env: "X".into(), previous_secret_env: None },
            Some(b"a-very-secret-webhook-key".to_vec()),
        )
    }

    fn headers(name: &str, value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(http::HeaderName::try_from(name).unwrap(), value.parse().unwrap());
        h
    }

    #[test]
    fn known_genesys_vector() {
        // Independently computed: printf '%s' "$BODY" | openssl dgst -sha256 -hmac "$KEY" -binary | base64
        let body =
            br#"{"id":"9a1b","channel":{"platform":"Open","to":{"id":"u1"}},"text":"hi","direction":"Outbound"}"#;
        let expected = "sha256=KJO5h79ZDN2eC/0KYYZ+/KUtg9fSUJZS3p9xd9XX+oE=";
        assert_eq!(sign_genesys(b"a-very-secret-webhook-key", body), expected);
        assert_eq!(genesys().verify(&headers("X-Hub-Signature-256", expected), body), Ok(()));
    }

    #[test]
    fn rfc4231_case_2_hex() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let v = Verifier::new(
            &VerifyConfig::HmacSha256 {
                secret_env: "X".into(),
                previous_secret_env: None,
                header: "X-Signature".into(),
                encoding: SignatureEncoding::Hex,
                prefix: String::new(),
            },
            Some(b"Jefe".to_vec()),
        );
        let sig = "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843";
        assert_eq!(v.verify(&headers("x-signature", sig), b"what do ya want for nothing?"), Ok(()));
        assert_eq!(
            v.verify(&headers("x-signature", sig), b"what do ya want for nothing!"),
            Err(SignatureError::Mismatch)
        );
    }

    #[test]
    fn refusals() {
        let v = genesys();
        let body = b"{}";
        assert_eq!(v.verify(&HeaderMap::new(), body), Err(SignatureError::Missing));
        assert_eq!(v.verify(&headers("X-Hub-Signature-256", "md5=abc"), body), Err(SignatureError::Malformed));
        assert_eq!(v.verify(&headers("X-Hub-Signature-256", "sha256=!!!"), body), Err(SignatureError::Malformed));
        let wrong = sign_genesys(b"another-secret-key-000", body);
        assert_eq!(v.verify(&headers("X-Hub-Signature-256", &wrong), body), Err(SignatureError::Mismatch));
        // A truncated digest is a mismatch, not a prefix match.
        let right = sign_genesys(b"a-very-secret-webhook-key", body);
        let short = format!("sha256={}", base64::engine::general_purpose::STANDARD.encode([0u8; 16]));
        assert_eq!(v.verify(&headers("X-Hub-Signature-256", &short), body), Err(SignatureError::Mismatch));
        assert_eq!(v.verify(&headers("X-Hub-Signature-256", &right), body), Ok(()));
        assert!(!format!("{v:?}").contains("secret-webhook"), "Debug must not print the secret");
    }
}
