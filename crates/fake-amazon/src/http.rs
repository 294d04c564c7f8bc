//! The request context every handler gets, and response helpers.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::header::{CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::Notify;

use crate::hosts::HostKind;
use crate::state::Shared;

/// Closes the connection a request arrived on (drop faults). Put into request extensions by
/// the accept loop.
#[derive(Debug, Clone)]
pub struct ConnKill(pub Arc<Notify>);

/// Marks a response produced by a fault (for the API counters).
#[derive(Debug, Clone, Copy)]
pub struct FaultMarker;

/// One request to an Amazon host, body already read.
#[derive(Debug)]
pub struct Ctx {
    /// Shared state.
    pub shared: Arc<Shared>,
    /// The Amazon host (lower-case), the first path segment.
    pub host: String,
    /// What the host is.
    pub kind: HostKind,
    /// HTTP method.
    pub method: Method,
    /// Path after the host segment (always starts with `/`).
    pub path: String,
    /// Raw query string.
    pub query: String,
    /// Request headers.
    pub headers: HeaderMap,
    /// Request body.
    pub body: Bytes,
    /// Kills the connection.
    pub kill: Option<ConnKill>,
    /// The id this request is answered under.
    pub request_id: String,
}

impl Ctx {
    /// A header's value, if present and text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// A header's trimmed value, if present and not empty.
    pub fn header_nonempty(&self, name: &str) -> Option<&str> {
        self.header(name).map(str::trim).filter(|v| !v.is_empty())
    }

    /// Query parameters, decoded.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_pairs(self.query.as_bytes())
    }

    /// Fake now, ms.
    pub fn now(&self) -> i64 {
        self.shared.now()
    }
}

/// Decodes a form-encoded string into pairs.
pub fn form_pairs(input: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(input)
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

/// The first value of `name` in decoded pairs.
pub fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// A response with a body and content type.
pub fn response(status: StatusCode, content_type: &str, body: impl Into<Body>) -> Response {
    let mut resp = Response::new(body.into());
    *resp.status_mut() = status;
    set_header(&mut resp, CONTENT_TYPE.as_str(), content_type);
    resp
}

/// A JSON response (`application/json`).
pub fn json<T: Serialize + ?Sized>(status: StatusCode, body: &T) -> Response {
    json_typed(status, "application/json", body)
}

/// A JSON response with a given content type.
pub fn json_typed<T: Serialize + ?Sized>(status: StatusCode, content_type: &str, body: &T) -> Response {
    let text = serde_json::to_vec(body).unwrap_or_else(|_| b"{}".to_vec());
    response(status, content_type, text)
}

/// An HTML page.
pub fn html(status: StatusCode, page: String) -> Response {
    let mut resp = response(status, "text/html;charset=UTF-8", page);
    set_header(&mut resp, "cache-control", "no-store");
    resp
}

/// A 302 redirect.
pub fn redirect(location: &str) -> Response {
    let mut resp = Response::new(Body::empty());
    *resp.status_mut() = StatusCode::FOUND;
    // A registered redirect URI may hold characters a header cannot: percent-encode them.
    let mut safe = String::with_capacity(location.len());
    for b in location.bytes() {
        if b.is_ascii_graphic() {
            safe.push(char::from(b));
        } else {
            safe.push_str(&format!("%{b:02X}"));
        }
    }
    set_header(&mut resp, LOCATION.as_str(), &safe);
    set_header(&mut resp, "cache-control", "no-store");
    resp
}

/// Sets a header, ignoring values that are not valid header text.
pub fn set_header(resp: &mut Response, name: &str, value: &str) {
    if let (Ok(name), Ok(value)) = (
        HeaderName::from_bytes(name.as_bytes()),
        HeaderValue::from_str(value),
    ) {
        resp.headers_mut().insert(name, value);
    }
}

/// A status code from a number, 500 when out of range.
pub fn status(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// Appends query parameters to a redirect URI (before any fragment).
pub fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let (base, fragment) = match uri.split_once('#') {
        Some((b, f)) => (b, Some(f)),
        None => (uri, None),
    };
    let mut serializer = url::form_urlencoded::Serializer::new(String::new());
    for (k, v) in params {
        serializer.append_pair(k, v);
    }
    let query = serializer.finish();
    let sep = if !base.contains('?') {
        "?"
    } else if base.ends_with('?') || base.ends_with('&') {
        ""
    } else {
        "&"
    };
    let mut out = format!("{base}{sep}{query}");
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(f);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::append_query;

    #[test]
    fn appends_to_redirects() {
        assert_eq!(
            append_query("http://x/cb", &[("state", "a b&c")]),
            "http://x/cb?state=a+b%26c"
        );
        assert_eq!(
            append_query("http://x/cb?k=1#frag", &[("code", "Z")]),
            "http://x/cb?k=1&code=Z#frag"
        );
    }
}
