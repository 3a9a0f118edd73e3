//! Small blocking HTTP/1.1 clients for synchronous tests and readiness polls, over plain TCP
//! (`Connection: close`): no dependency on a runtime, bounded by socket timeouts.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

/// A response: status and body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub body: String,
}

/// Sends `method path` to `host:port` with `headers` and `body`; `None` if the connection
/// failed or nothing came back within 15 s.
pub fn request(
    host: &str,
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<Response> {
    let mut s = TcpStream::connect((host, port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n");
    if !body.is_empty() || method == "POST" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).ok()?;
    let mut buf = Vec::new();
    let _ = s.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf);
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    Some(Response { status, body })
}

/// `GET http://127.0.0.1:<port><path>`.
pub fn get(port: u16, path: &str) -> Option<Response> {
    request("127.0.0.1", port, "GET", path, &[], "")
}

/// The status of `GET http://127.0.0.1:<port><path>`, or `None` if it did not answer.
pub fn get_status(port: u16, path: &str) -> Option<u16> {
    get(port, path).map(|r| r.status)
}

/// `POST http://127.0.0.1:<port><path>` with `headers` and `body`; fails the test if nothing answers.
pub fn post(port: u16, path: &str, headers: &[(&str, &str)], body: &str) -> Response {
    request("127.0.0.1", port, "POST", path, headers, body)
        .unwrap_or_else(|| panic!("POST http://127.0.0.1:{port}{path}: no answer"))
}
