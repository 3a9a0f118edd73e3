//! The admin API client of the CLI: HTTP/1.1 over TCP (TLS for `https`), one connection per
//! request, with request targets built by hand so that every id reaches the server as written.

use super::CliError;
use http::{Method, StatusCode};
use serde_json::Value;
use std::time::Duration;
use url::Url;
use webhook_relay_util::root_cause;

/// A request target: the path under the base URL and the query, kept as raw text so an id
/// made only of dots reaches the server as written. (A `url::Url` would treat a `..` or
/// `%2E%2E` segment as "up one level" and drop it, which is why this client does not use one
/// for requests.)
#[derive(Clone, Debug)]
pub struct Target {
    segments: Vec<String>,
    query: Vec<(String, String)>,
}

impl Target {
    /// Adds a query pair.
    pub fn query(mut self, name: &str, value: &str) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }
}

/// Percent-encodes one path segment: every byte but ASCII letters, digits, `-`, `_` and `~`
/// (a `.` too, so no segment is ever `.` or `..` on the wire).
pub fn encode_segment(segment: &str) -> String {
    let mut out = String::with_capacity(segment.len());
    for b in segment.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A minimal HTTP/1.1 client of the admin API (one connection per request; TLS for https).
pub struct Client {
    base: Url,
    token: Option<String>,
    timeout: Duration,
}

impl Client {
    pub fn new(base: Url, token: Option<String>) -> Result<Self, CliError> {
        if base.cannot_be_a_base() || !matches!(base.scheme(), "http" | "https") || base.host_str().is_none() {
            return Err(CliError::Usage(format!("--admin-url must be an http(s) URL (got {base})")));
        }
        Ok(Client { base, token, timeout: Duration::from_secs(30) })
    }

    /// A target under the base URL; `segments` are percent-encoded (ids may hold anything).
    pub fn path(&self, segments: &[&str]) -> Target {
        Target { segments: segments.iter().map(|s| s.to_string()).collect(), query: vec![] }
    }

    /// The request target as sent: the base path, then the encoded segments and the query.
    pub fn request_target(&self, t: &Target) -> String {
        let mut out = self.base.path().trim_end_matches('/').to_string();
        for s in &t.segments {
            out.push('/');
            out.push_str(&encode_segment(s));
        }
        if !t.query.is_empty() {
            let mut q = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in &t.query {
                q.append_pair(k, v);
            }
            out.push('?');
            out.push_str(&q.finish());
        }
        out
    }

    fn unreachable(&self, why: impl std::fmt::Display) -> CliError {
        CliError::Unreachable { url: self.base.to_string(), why: why.to_string() }
    }

    /// Sends one request and returns its status and body.
    async fn send(&self, method: Method, target: &str) -> Result<(StatusCode, bytes::Bytes), CliError> {
        use http_body_util::{BodyExt, Empty};
        use hyper_util::rt::TokioIo;
        let host = self.base.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
        let port = self.base.port_or_known_default().unwrap_or(80);
        let authority = match self.base.port() {
            Some(p) => format!("{}:{p}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_string(),
        };
        let tcp = tokio::net::TcpStream::connect((host.as_str(), port)).await.map_err(|e| self.unreachable(e))?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = if self.base.scheme() == "https" {
            Box::new(tls_connect(&host, tcp).await.map_err(|e| self.unreachable(e))?)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| self.unreachable(root_cause(&e)))?;
        tokio::spawn(conn);
        let mut req = http::Request::builder()
            .method(method)
            .uri(target)
            .header(http::header::HOST, authority)
            .header(http::header::USER_AGENT, concat!("webhook-relay-dlq/", env!("CARGO_PKG_VERSION")));
        if let Some(t) = &self.token {
            req = req.header(http::header::AUTHORIZATION, format!("Bearer {t}"));
        }
        let req = req.body(Empty::<bytes::Bytes>::new()).map_err(|e| CliError::Usage(e.to_string()))?;
        let resp = sender.send_request(req).await.map_err(|e| self.unreachable(root_cause(&e)))?;
        let status = resp.status();
        let body = resp.into_body().collect().await.map_err(|e| self.unreachable(root_cause(&e)))?.to_bytes();
        Ok((status, body))
    }

    /// Sends a request; `None` for a 204.
    /// Calls and reads the answer as `T`, one of the admin API's wire types
    /// ([`admin_types`](crate::admin_types)).
    pub async fn call_as<T: serde::de::DeserializeOwned>(&self, method: Method, target: Target) -> Result<T, CliError> {
        let v = self.call(method, target).await?.unwrap_or(Value::Null);
        serde_json::from_value(v).map_err(|e| {
            CliError::Usage(format!(
                "the admin API answered something this webhook-relay cannot read ({e}); are the relay and this CLI the same version?"
            ))
        })
    }

    pub async fn call(&self, method: Method, target: Target) -> Result<Option<Value>, CliError> {
        let raw = self.request_target(&target);
        let (status, body) = tokio::time::timeout(self.timeout, self.send(method, &raw))
            .await
            .map_err(|_| self.unreachable(format!("no answer within {:?}", self.timeout)))??;
        let parsed: Option<Value> = serde_json::from_slice(&body).ok();
        if status.is_success() {
            return Ok(if status == StatusCode::NO_CONTENT { None } else { parsed });
        }
        let message = serde_json::from_slice::<crate::admin_types::ErrorBody>(&body)
            .map(|e| e.error)
            .unwrap_or_else(|_| String::from_utf8_lossy(&body).trim().to_string());
        let hint = match status {
            StatusCode::UNAUTHORIZED if self.token.is_none() => "; set RELAY_ADMIN_TOKEN to the relay's admin token",
            StatusCode::UNAUTHORIZED => "; check RELAY_ADMIN_TOKEN",
            _ => "",
        };
        Err(CliError::Api { status: status.as_u16(), message, hint })
    }
}

/// A connection the client can speak HTTP over: TCP, or TLS over TCP.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// TLS to `host`, trusting the system's root certificates.
async fn tls_connect(
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Result<tokio_rustls::client::TlsStream<tokio::net::TcpStream>, String> {
    webhook_relay_store::install_crypto_provider();
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(cert);
    }
    let config = rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from(host.to_string()).map_err(|e| e.to_string())?;
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(config)).connect(name, tcp).await.map_err(|e| e.to_string())
}
