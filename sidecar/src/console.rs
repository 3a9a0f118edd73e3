//! The dead-letter console at `/ui/` on the admin listener: three static files
//! (`sidecar/ui/`) built into the binary, nothing fetched from elsewhere. The files hold no
//! data, so they are served without the bearer token; the page calls `/v1/` with the token
//! the user gives it. Every answer under `/ui` carries a strict Content-Security-Policy
//! (no inline script or style, connections to this origin only) and no-framing headers.

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::LazyLock;

/// The policy of every `/ui` answer: the page's own script and style, data only from this
/// origin's API, no plugins, frames, forms or base URL tricks.
pub const CONTENT_SECURITY_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// One embedded file with its content type and validator.
struct Asset {
    body: &'static [u8],
    content_type: &'static str,
    etag: String,
}

impl Asset {
    fn new(body: &'static [u8], content_type: &'static str) -> Self {
        let digest = Sha256::digest(body);
        Asset { body, content_type, etag: format!("\"{}\"", hex::encode(&digest[..12])) }
    }

    /// The file, or `304` when the client's copy (`If-None-Match`) is this one.
    fn answer(&self, headers: &HeaderMap) -> Response {
        let etag = HeaderValue::from_str(&self.etag).expect("a hex etag is a header value");
        let fresh = headers
            .get_all(header::IF_NONE_MATCH)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|t| t.trim().trim_start_matches("W/") == self.etag);
        if fresh {
            return (StatusCode::NOT_MODIFIED, [(header::ETAG, etag)]).into_response();
        }
        ([(header::CONTENT_TYPE, HeaderValue::from_static(self.content_type)), (header::ETAG, etag)], self.body)
            .into_response()
    }
}

static INDEX: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../ui/index.html"), "text/html; charset=utf-8"));
static SCRIPT: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../ui/console.js"), "text/javascript; charset=utf-8"));
static STYLE: LazyLock<Asset> =
    LazyLock::new(|| Asset::new(include_bytes!("../ui/console.css"), "text/css; charset=utf-8"));

/// Routes under `/ui` (public: the files hold no data).
pub fn router<S: Clone + Send + Sync + 'static>() -> Router<S> {
    Router::new()
        // Relative, so it also works behind a proxy that adds a path prefix.
        .route("/ui", get(|| async { Redirect::permanent("ui/") }))
        .route("/ui/", get(|h: HeaderMap| async move { INDEX.answer(&h) }))
        .route("/ui/console.js", get(|h: HeaderMap| async move { SCRIPT.answer(&h) }))
        .route("/ui/console.css", get(|h: HeaderMap| async move { STYLE.answer(&h) }))
        .route("/ui/{*rest}", get(|| async { (StatusCode::NOT_FOUND, "no such file under /ui/\n") }))
        .layer(middleware::from_fn(protect))
}

/// Adds the security and caching headers to every `/ui` answer (404s and 405s included).
async fn protect(req: Request, next: Next) -> Response {
    let mut r = next.run(req).await;
    let h = r.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CONTENT_SECURITY_POLICY));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    // Revalidated on every load (by ETag), so a new binary's page is never mixed with an old one's script.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::http::Method;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    async fn call(method: Method, uri: &str, headers: &[(&str, &str)]) -> (StatusCode, HeaderMap, String) {
        let mut req = Request::builder().method(method).uri(uri);
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let resp = router::<()>().oneshot(req.body(Body::empty()).unwrap()).await.unwrap();
        let (parts, body) = resp.into_parts();
        let bytes = body.collect().await.unwrap().to_bytes();
        (parts.status, parts.headers, String::from_utf8_lossy(&bytes).into_owned())
    }

    fn assert_protected(uri: &str, h: &HeaderMap) {
        assert_eq!(h["content-security-policy"], CONTENT_SECURITY_POLICY, "{uri}");
        assert_eq!(h["x-content-type-options"], "nosniff", "{uri}");
        assert_eq!(h["referrer-policy"], "no-referrer", "{uri}");
        assert_eq!(h["x-frame-options"], "DENY", "{uri}");
        assert_eq!(h["cache-control"], "no-cache", "{uri}");
    }

    #[tokio::test]
    async fn files_are_served_with_their_type_and_the_policy() {
        for (uri, ty, marker) in [
            ("/ui/", "text/html; charset=utf-8", "<script src=\"console.js\""),
            ("/ui/console.js", "text/javascript; charset=utf-8", "'use strict'"),
            ("/ui/console.css", "text/css; charset=utf-8", "[hidden]"),
        ] {
            let (status, h, body) = call(Method::GET, uri, &[]).await;
            assert_eq!(status, StatusCode::OK, "{uri}");
            assert_eq!(h["content-type"], ty, "{uri}");
            assert!(h.contains_key("etag"), "{uri}");
            assert!(body.contains(marker), "{uri} lacks {marker:?}");
            assert_protected(uri, &h);
        }
    }

    #[tokio::test]
    async fn a_known_etag_is_answered_not_modified() {
        let (_, h, _) = call(Method::GET, "/ui/console.js", &[]).await;
        let etag = h["etag"].to_str().unwrap().to_string();
        let (status, h2, body) = call(Method::GET, "/ui/console.js", &[("if-none-match", &etag)]).await;
        assert_eq!((status, body.as_str()), (StatusCode::NOT_MODIFIED, ""));
        assert_protected("/ui/console.js (304)", &h2);
        let (status, _, _) = call(Method::GET, "/ui/console.js", &[("if-none-match", "\"other\"")]).await;
        assert_eq!(status, StatusCode::OK);
    }

    #[tokio::test]
    async fn ui_without_slash_redirects_and_unknown_files_are_404() {
        let (status, h, _) = call(Method::GET, "/ui", &[]).await;
        assert_eq!(status, StatusCode::PERMANENT_REDIRECT);
        assert_eq!(h["location"], "ui/", "relative: /ui + ui/ is /ui/, and a path prefix is kept");
        assert_protected("/ui", &h);
        for uri in ["/ui/x", "/ui/index.html/..", "/ui/console.js/x", "/ui/a/b.css"] {
            let (status, h, _) = call(Method::GET, uri, &[]).await;
            assert_eq!(status, StatusCode::NOT_FOUND, "{uri}");
            assert_protected(uri, &h);
        }
        let (status, h, _) = call(Method::POST, "/ui/", &[]).await;
        assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
        assert_protected("POST /ui/", &h);
    }

    #[test]
    fn the_page_has_no_inline_script_style_or_handler_and_no_absolute_url() {
        let page = std::str::from_utf8(INDEX.body).unwrap();
        let lower = page.to_ascii_lowercase();
        assert_eq!(lower.matches("<script").count(), 1, "one script element, the external one");
        assert!(lower.contains("<script src=\"console.js\" defer></script>"));
        assert!(!lower.contains("<style"), "no inline style element");
        assert!(!lower.contains(" style="), "no style attributes");
        assert!(!has_handler_attribute(&lower), "no inline event handlers");
        for file in [page, std::str::from_utf8(SCRIPT.body).unwrap(), std::str::from_utf8(STYLE.body).unwrap()] {
            // The SVG namespace is a name, not a place the page loads from.
            let file = file.replace("'http://www.w3.org/2000/svg'", "");
            assert!(!file.contains("http://") && !file.contains("https://"), "relative URLs only");
        }
        let script = std::str::from_utf8(SCRIPT.body).unwrap();
        assert!(!script.contains("innerHTML") && !script.contains("eval("), "text goes in as text");
    }

    /// Whether `html` has an attribute like ` onclick=`.
    fn has_handler_attribute(html: &str) -> bool {
        html.match_indices(" on").any(|(i, _)| {
            let rest = &html[i + 3..];
            let name: String = rest.chars().take_while(|c| c.is_ascii_alphabetic()).collect();
            !name.is_empty() && rest[name.len()..].starts_with('=')
        })
    }
}
