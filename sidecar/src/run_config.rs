//! Loading the relay: `relay.yaml` parsed and validated once, secrets read from the
//! environment variables it names. Errors say which field and which variable.

use crate::signature::Verifier;
use genesys_cloud::Credentials;
use std::path::Path;
use webhook_relay_api::RelayConfig;
use webhook_relay_api::config::VerifyConfig;
use webhook_relay_store::TlsMaterial;

/// What the config's secrets became once read from the environment: each resolved once,
/// into the form its user needs. Debug never prints them.
#[derive(Clone)]
pub struct Secrets {
    /// The intake's signature check, holding the signing secret.
    pub verifier: Verifier,
    pub redis_url: String,
    /// The data nodes' password (`redis.passwordEnv`), in place of the URL's.
    pub redis_password: Option<String>,
    /// The Sentinels' password (`redis.sentinel.passwordEnv`).
    pub redis_sentinel_password: Option<String>,
    /// `None` disables the `/v1/` admin API (health and metrics stay up).
    pub admin_token: Option<String>,
    /// The Genesys OAuth client, when `genesys` is configured.
    pub genesys: Option<Credentials>,
    /// `redis.tls` files, read: the CA to trust and the client certificate and key.
    pub redis_tls: Option<TlsMaterial>,
    /// Headers for the OTLP collector (`tracing.headersEnv`), such as an API key.
    pub otlp_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl std::fmt::Debug for Secrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secrets { *** }")
    }
}

/// A relay's config and its secrets, ready to run.
#[derive(Clone, Debug)]
pub struct RunConfig {
    pub config: RelayConfig,
    pub secrets: Secrets,
}

/// Why the relay cannot start; the message says what to fix.
#[derive(Debug, thiserror::Error)]
pub enum RunConfigError {
    #[error("reading {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error(transparent)]
    Config(#[from] webhook_relay_api::ConfigError),
    #[error("{field} names {var}, which is not set{hint}")]
    MissingEnv { field: &'static str, var: String, hint: &'static str },
    #[error("{field} names {var}, whose value is too short: {why}")]
    WeakSecret { field: &'static str, var: String, why: &'static str },
    #[error("{field} names {path}, which cannot be read: {source}")]
    File { field: &'static str, path: String, source: std::io::Error },
    #[error(
        "tracing.headersEnv names {var}, whose value is not headers as key=value pairs separated by commas (as OTEL_EXPORTER_OTLP_HEADERS): {why}"
    )]
    BadHeaders { var: String, why: String },
    #[error(
        "redis.tls is set but the URL in {var} (redis.urlEnv) does not start with rediss://, rediss+cluster:// or rediss+sentinel://; use a TLS URL or remove redis.tls"
    )]
    TlsWithoutTlsUrl { var: String },
    #[error("the URL in {var} (redis.urlEnv) is not a valid Sentinel URL: {why}")]
    BadSentinelUrl { var: String, why: String },
    #[error(
        "redis.sentinel is set but the URL in {var} (redis.urlEnv) is not a Sentinel URL; use redis+sentinel://host:port,host:port/<master> or remove redis.sentinel"
    )]
    SentinelWithoutSentinelUrl { var: String },
    #[error(
        "the URL in {var} (redis.urlEnv) is a Sentinel URL, which cannot be used with redis.cluster: true (Redis Cluster fails over by itself; give its nodes as redis+cluster://)"
    )]
    SentinelWithCluster { var: String },
}

impl RunConfig {
    /// Reads `path` and the environment.
    pub fn load(path: &Path) -> Result<Self, RunConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| RunConfigError::Read { path: path.display().to_string(), source })?;
        let config = RelayConfig::from_yaml(&text)?;
        Self::from_config(config, |name| std::env::var(name).ok().filter(|v| !v.is_empty()))
    }

    /// Resolves the secrets of `config` with `env` (the process environment, or a map in tests).
    pub fn from_config(config: RelayConfig, env: impl Fn(&str) -> Option<String>) -> Result<Self, RunConfigError> {
        let need = |field: &'static str, var: &str, hint: &'static str| {
            env(var).ok_or_else(|| RunConfigError::MissingEnv { field, var: var.to_string(), hint })
        };
        let genesys_scheme = matches!(config.source.verify, VerifyConfig::GenesysOpenMessaging { .. });
        let read_secret = |field: &'static str, var: &str, hint: &'static str| {
            let s = need(field, var, hint)?;
            if genesys_scheme && s.len() < 16 {
                return Err(RunConfigError::WeakSecret {
                    field,
                    var: var.to_string(),
                    why: "Genesys Cloud requires a webhook secret longer than 15 characters",
                });
            }
            Ok(s.into_bytes())
        };
        let (signing_secret, previous_secret) = match config.source.verify.secret_envs() {
            Some((current, previous)) => (
                Some(read_secret("source.verify.secretEnv", current, " (the webhook signing secret)")?),
                previous
                    .map(|p| {
                        read_secret(
                            "source.verify.previousSecretEnv",
                            p,
                            " (the signing secret being rotated out; remove the setting when senders no longer use it)",
                        )
                    })
                    .transpose()?,
            ),
            None => (None, None),
        };
        let redis_url = need("redis.urlEnv", &config.redis.url_env, " (e.g. redis://redis:6379/0)")?;
        let url_var = || config.redis.url_env.clone();
        match webhook_relay_store::parse_sentinel_url(&redis_url) {
            Err(why) => return Err(RunConfigError::BadSentinelUrl { var: url_var(), why }),
            Ok(Some(_)) if config.redis.cluster => return Err(RunConfigError::SentinelWithCluster { var: url_var() }),
            Ok(None) if config.redis.sentinel.is_some() => {
                return Err(RunConfigError::SentinelWithoutSentinelUrl { var: url_var() });
            }
            Ok(_) => {}
        }
        let redis_password = match &config.redis.password_env {
            Some(var) => Some(need("redis.passwordEnv", var, " (the Redis password)")?),
            None => None,
        };
        let redis_sentinel_password = match config.redis.sentinel.as_ref().and_then(|s| s.password_env.as_deref()) {
            Some(var) => Some(need("redis.sentinel.passwordEnv", var, " (the Sentinels' password)")?),
            None => None,
        };
        let redis_tls = match &config.redis.tls {
            None => None,
            Some(tls) => {
                if !(redis_url.starts_with("rediss:") || redis_url.starts_with("rediss+")) {
                    return Err(RunConfigError::TlsWithoutTlsUrl { var: config.redis.url_env.clone() });
                }
                let read = |field: &'static str, path: &Option<std::path::PathBuf>| {
                    path.as_ref()
                        .map(|p| {
                            std::fs::read(p).map_err(|source| RunConfigError::File {
                                field,
                                path: p.display().to_string(),
                                source,
                            })
                        })
                        .transpose()
                };
                let ca_pem = read("redis.tls.caFile", &tls.ca_file)?;
                let cert = read("redis.tls.certFile", &tls.cert_file)?;
                let key = read("redis.tls.keyFile", &tls.key_file)?;
                Some(TlsMaterial { ca_pem, client: cert.zip(key) })
            }
        };
        let admin_token = env(&config.admin.token_env);
        let genesys = match &config.genesys {
            Some(g) => Some(Credentials::new(
                need("genesys.clientIdEnv", &g.client_id_env, " (the OAuth client id)")?,
                need("genesys.clientSecretEnv", &g.client_secret_env, " (the OAuth client secret)")?,
            )),
            None => None,
        };
        let otlp_headers = match config.tracing.as_ref().and_then(|t| t.headers_env.as_deref()) {
            Some(var) => otlp_headers(&need("tracing.headersEnv", var, " (headers for the OTLP collector)")?)
                .map_err(|why| RunConfigError::BadHeaders { var: var.to_string(), why })?,
            None => vec![],
        };
        let verifier = Verifier::rotating(&config.source.verify, signing_secret, previous_secret);
        Ok(RunConfig {
            config,
            secrets: Secrets {
                verifier,
                redis_url,
                redis_password,
                redis_sentinel_password,
                admin_token,
                genesys,
                redis_tls,
                otlp_headers,
            },
        })
    }
}

/// Parses `key=value,key2=value2` (values may be percent-encoded, as the OpenTelemetry
/// exporters read `OTEL_EXPORTER_OTLP_HEADERS`). The error never holds a value.
fn otlp_headers(text: &str) -> Result<Vec<(http::HeaderName, http::HeaderValue)>, String> {
    let mut out = vec![];
    for (i, pair) in text.split(',').map(str::trim).filter(|p| !p.is_empty()).enumerate() {
        let Some((k, v)) = pair.split_once('=') else { return Err(format!("entry {} has no '='", i + 1)) };
        let name = http::HeaderName::from_bytes(k.trim().as_bytes())
            .map_err(|_| format!("entry {} has an invalid header name {:?}", i + 1, k.trim()))?;
        let value = url::form_urlencoded::parse(format!("v={}", v.trim()).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        let mut value = http::HeaderValue::from_str(&value)
            .map_err(|_| format!("the value of {name} is not a valid header value"))?;
        value.set_sensitive(true);
        out.push((name, value));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg() -> RelayConfig {
        RelayConfig::from_yaml(
            "relay: a\nsource: {verify: {scheme: genesys-open-messaging, secretEnv: SIGN}}\ndestination: {url: 'http://x/'}\n",
        )
        .unwrap()
    }

    #[test]
    fn missing_secret_names_field_and_variable() {
        let env: HashMap<&str, &str> = [("REDIS_URL", "redis://x")].into();
        let e = RunConfig::from_config(cfg(), |k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert_eq!(e, "source.verify.secretEnv names SIGN, which is not set (the webhook signing secret)");
    }

    #[test]
    fn a_previous_secret_is_read_checked_and_accepted() {
        let rotating = RelayConfig::from_yaml(
            "relay: a\nsource: {verify: {scheme: genesys-open-messaging, secretEnv: SIGN, previousSecretEnv: OLD}}\ndestination: {url: 'http://x/'}\n",
        )
        .unwrap();
        let env: HashMap<&str, &str> = [("REDIS_URL", "redis://x"), ("SIGN", "0123456789abcdef")].into();
        let e =
            RunConfig::from_config(rotating.clone(), |k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.starts_with("source.verify.previousSecretEnv names OLD, which is not set"), "{e}");
        let env: HashMap<&str, &str> =
            [("REDIS_URL", "redis://x"), ("SIGN", "0123456789abcdef"), ("OLD", "short")].into();
        let e =
            RunConfig::from_config(rotating.clone(), |k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("source.verify.previousSecretEnv") && e.contains("longer than 15"), "{e}");
        let env: HashMap<&str, &str> =
            [("REDIS_URL", "redis://x"), ("SIGN", "0123456789abcdef"), ("OLD", "fedcba9876543210")].into();
        let s = RunConfig::from_config(rotating, |k| env.get(k).map(|v| v.to_string())).unwrap();
        let body = b"{}";
        let signed = |secret: &[u8]| {
            let mut headers = http::HeaderMap::new();
            headers.insert("x-hub-signature-256", crate::signature::sign_genesys(secret, body).parse().unwrap());
            headers
        };
        use crate::signature::{SignatureError, SignedWith};
        let v = &s.secrets.verifier;
        assert_eq!(v.verify_which(&signed(b"0123456789abcdef"), body), Ok(SignedWith::Current));
        assert_eq!(v.verify_which(&signed(b"fedcba9876543210"), body), Ok(SignedWith::Previous));
        assert_eq!(v.verify_which(&signed(b"another-secret-xyz"), body), Err(SignatureError::Mismatch));
        assert!(!format!("{s:?}").contains("fedcba9876543210"), "the previous secret is never printed");
        let same = RelayConfig::from_yaml(
            "relay: a\nsource: {verify: {scheme: genesys-open-messaging, secretEnv: SIGN, previousSecretEnv: SIGN}}\ndestination: {url: 'http://x/'}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(same.contains("source.verify.previousSecretEnv") && same.contains("same variable"), "{same}");
    }

    #[test]
    fn otlp_headers_are_read_from_their_variable_and_never_printed() {
        let traced = RelayConfig::from_yaml(
            "relay: a\nsource: {verify: {scheme: none}}\ndestination: {url: 'http://x/'}\ntracing: {otlpEndpoint: 'http://otel:4318', headersEnv: OTLP_HEADERS}\n",
        )
        .unwrap();
        let load = |h: Option<&str>| {
            let env: HashMap<&str, &str> =
                [("REDIS_URL", "redis://x")].into_iter().chain(h.map(|h| ("OTLP_HEADERS", h))).collect();
            RunConfig::from_config(traced.clone(), |k| env.get(k).map(|v| v.to_string()))
        };
        let s = load(Some("x-api-key=s3cr3t-key, authorization=Basic%20YWJj")).unwrap();
        let h: Vec<(String, String)> =
            s.secrets.otlp_headers.iter().map(|(k, v)| (k.to_string(), v.to_str().unwrap().to_string())).collect();
        assert_eq!(h, [("x-api-key".into(), "s3cr3t-key".into()), ("authorization".into(), "Basic YWJj".into())]);
        assert!(!format!("{s:?}").contains("s3cr3t"));
        let e = load(None).unwrap_err().to_string();
        assert!(e.starts_with("tracing.headersEnv names OTLP_HEADERS, which is not set"), "{e}");
        let e = load(Some("x-api-key")).unwrap_err().to_string();
        assert!(e.contains("tracing.headersEnv") && e.contains("entry 1 has no '='"), "{e}");
        let e = load(Some("bad name=s3cr3t")).unwrap_err().to_string();
        assert!(e.contains("invalid header name") && !e.contains("s3cr3t"), "{e}");
    }

    #[test]
    fn sentinel_urls_and_redis_passwords_are_checked_at_load() {
        let yaml = |redis: &str| {
            RelayConfig::from_yaml(&format!(
                "relay: a\nsource: {{verify: {{scheme: none}}}}\ndestination: {{url: 'http://x/'}}\nredis: {redis}\n"
            ))
            .unwrap()
        };
        let load = |config: RelayConfig, url: &str, extra: &[(&str, &str)]| {
            let env: HashMap<&str, &str> = [("REDIS_URL", url)].into_iter().chain(extra.iter().copied()).collect();
            RunConfig::from_config(config, |k| env.get(k).map(|v| v.to_string()))
        };
        let with_pw = yaml("{passwordEnv: REDIS_PW, sentinel: {passwordEnv: SENTINEL_PW}}");
        let sentinel = "redis+sentinel://s1:26379,s2:26379/mymaster";
        let ok = load(with_pw.clone(), sentinel, &[("REDIS_PW", "data-pw"), ("SENTINEL_PW", "sentinel-pw")]).unwrap();
        assert_eq!(ok.secrets.redis_password.as_deref(), Some("data-pw"));
        assert_eq!(ok.secrets.redis_sentinel_password.as_deref(), Some("sentinel-pw"));
        assert!(!format!("{ok:?}").contains("-pw"), "never printed");
        let e = load(with_pw.clone(), sentinel, &[("REDIS_PW", "data-pw")]).unwrap_err().to_string();
        assert!(e.starts_with("redis.sentinel.passwordEnv names SENTINEL_PW, which is not set"), "{e}");
        let e = load(yaml("{}"), "redis+sentinel://:secret@s1:26379", &[]).unwrap_err().to_string();
        assert!(
            e.contains("REDIS_URL (redis.urlEnv) is not a valid Sentinel URL") && e.contains("/<master name>"),
            "{e}"
        );
        assert!(!e.contains("secret"), "{e}");
        let e = load(yaml("{sentinel: {}}"), "redis://r:6379", &[]).unwrap_err().to_string();
        assert!(e.contains("redis.sentinel is set but the URL in REDIS_URL"), "{e}");
        let e = load(yaml("{cluster: true}"), sentinel, &[]).unwrap_err().to_string();
        assert!(e.contains("cannot be used with redis.cluster"), "{e}");
        let plain = load(yaml("{passwordEnv: REDIS_PW}"), "redis://r:6379", &[("REDIS_PW", "p")]).unwrap();
        assert_eq!(plain.secrets.redis_password.as_deref(), Some("p"));
    }

    #[test]
    fn short_genesys_secret_is_refused() {
        let env: HashMap<&str, &str> = [("REDIS_URL", "redis://x"), ("SIGN", "short")].into();
        let e = RunConfig::from_config(cfg(), |k| env.get(k).map(|v| v.to_string())).unwrap_err().to_string();
        assert!(e.contains("longer than 15"), "{e}");
        assert!(!e.contains("short\""), "the value itself is never printed: {e}");
    }

    #[test]
    fn resolves_and_hides_secrets() {
        let env: HashMap<&str, &str> =
            [("REDIS_URL", "redis://x"), ("SIGN", "0123456789abcdef"), ("RELAY_ADMIN_TOKEN", "tok")].into();
        let s = RunConfig::from_config(cfg(), |k| env.get(k).map(|v| v.to_string())).unwrap();
        let body = b"{}";
        let mut headers = http::HeaderMap::new();
        let sig = crate::signature::sign_genesys(b"0123456789abcdef", body);
        headers.insert("x-hub-signature-256", sig.parse().unwrap());
        assert_eq!(s.secrets.verifier.verify(&headers, body), Ok(()), "the verifier holds the secret");
        assert_eq!(s.secrets.admin_token.as_deref(), Some("tok"));
        assert!(!format!("{s:?}").contains("0123456789abcdef"));
    }
}
