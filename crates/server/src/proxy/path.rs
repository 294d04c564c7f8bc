//! What a proxied request may ask Amazon for: a path and a query that stay on the Amazon host
//! the connection implies, whatever the caller wrote.
//!
//! The path is taken raw from the request line (never the percent-decoded form a router hands
//! out), checked segment by segment, and sent on exactly as written. Refused, with 400:
//! dot-segments written plainly or encoded (`..`, `%2e%2e`, `.%2E`), encoded slashes and
//! backslashes (`%2f`, `%5c`), empty segments (`//evil.com`), a first segment that looks like a
//! URL scheme (`http:`), control characters anywhere (CR/LF for header injection), and paths or
//! queries that do not fit a request line. The URL finally built is checked once more against the
//! host's origin (see [`checked_uri`]), so nothing reaches any host but the configured one.
//!
//! ```
//! use lwa_server::proxy::path::{UpstreamPath, operation};
//! let ok = UpstreamPath::parse("/orders/v0/orders/123-1234567-1234567/address", None).unwrap();
//! assert_eq!(ok.path(), "/orders/v0/orders/123-1234567-1234567/address");
//! assert!(UpstreamPath::parse("/orders/../../evil", None).is_err());
//! assert!(UpstreamPath::parse("/orders/%2e%2e/evil", None).is_err());
//! assert!(UpstreamPath::parse("//evil.com/x", None).is_err());
//! assert_eq!(operation("GET", "/orders/v0/orders/123-1234567-1234567"), "getOrder");
//! assert_eq!(
//!     operation("GET", "/fba/inventory/v1/items/B00X123"),
//!     "GET /fba/inventory/v1/items/{}"
//! );
//! ```

/// Longest path accepted.
pub const MAX_PATH: usize = 2048;
/// Longest query accepted.
pub const MAX_QUERY: usize = 8192;

/// A path and query checked for forwarding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamPath {
    path: String,
    query: Option<String>,
}

/// Why a path or query is refused (the message is safe to show the caller).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct PathError(pub &'static str);

impl UpstreamPath {
    /// Checks a raw path (starting with `/`) and raw query (without `?`).
    pub fn parse(path: &str, query: Option<&str>) -> Result<UpstreamPath, PathError> {
        if !path.starts_with('/') {
            return Err(PathError("the Amazon path must start with /"));
        }
        if path.len() > MAX_PATH {
            return Err(PathError("the Amazon path is too long"));
        }
        let body = &path[1..];
        if body.is_empty() {
            return Err(PathError(
                "give the Amazon path after /proxy, e.g. /sellers/v1/account",
            ));
        }
        let mut segments = body.split('/').enumerate().peekable();
        while let Some((i, raw)) = segments.next() {
            if raw.is_empty() {
                if segments.peek().is_none() {
                    continue; // a trailing slash
                }
                return Err(PathError("the Amazon path has an empty segment (//)"));
            }
            if raw
                .bytes()
                .any(|b| !b.is_ascii_graphic() || b == b'\\' || b == b'#' || b == b'?')
            {
                return Err(PathError("the Amazon path has a character that is not allowed"));
            }
            // Without an escape the segment is its own decoding (and has no control bytes).
            let unescaped;
            let decoded: &[u8] = if raw.contains('%') {
                unescaped = percent_decode(raw).ok_or(PathError("the Amazon path has a bad %-escape"))?;
                &unescaped
            } else {
                raw.as_bytes()
            };
            if decoded == b"." || decoded == b".." {
                return Err(PathError("the Amazon path may not contain . or .. segments"));
            }
            if decoded
                .iter()
                .any(|&b| b == b'/' || b == b'\\' || b < 0x20 || b == 0x7f)
            {
                return Err(PathError(
                    "the Amazon path may not contain encoded slashes, backslashes or control characters",
                ));
            }
            if i == 0 && raw.contains(':') {
                return Err(PathError("the Amazon path must be a path, not a URL"));
            }
        }
        let query = match query {
            None | Some("") => None,
            Some(q) => {
                if q.len() > MAX_QUERY {
                    return Err(PathError("the query is too long"));
                }
                if q.bytes().any(|b| !b.is_ascii_graphic() || b == b'#') {
                    return Err(PathError("the query has a character that is not allowed"));
                }
                // Printable ASCII needs a decoding only when it holds an escape.
                let decoded = match q.contains('%') {
                    true => percent_decode(q).ok_or(PathError("the query has a bad %-escape"))?,
                    false => Vec::new(),
                };
                if decoded.iter().any(|&b| b == b'\r' || b == b'\n' || b == 0) {
                    return Err(PathError("the query may not contain encoded line breaks"));
                }
                Some(q.to_owned())
            }
        };
        Ok(UpstreamPath {
            path: escape_for_url(path, false),
            query: query.map(|q| escape_for_url(&q, true)),
        })
    }

    /// The path, as the caller wrote it (with the few bytes a URL may not hold raw escaped).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The query, without `?`.
    pub fn query(&self) -> Option<&str> {
        self.query.as_deref()
    }

    /// The path and query as they go on the request line.
    pub fn path_and_query(&self) -> String {
        match &self.query {
            Some(q) => format!("{}?{q}", self.path),
            None => self.path.clone(),
        }
    }
}

/// Percent-decodes bytes; `None` on a malformed escape.
fn percent_decode(s: &str) -> Option<Vec<u8>> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes.get(i + 1..i + 3)?;
            let text = std::str::from_utf8(hex).ok()?;
            out.push(u8::from_str_radix(text, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(out)
}

/// A path for comparisons only: escapes decoded, lower case, no trailing slash.
pub fn normalized(path: &str) -> String {
    let decoded = percent_decode(path).unwrap_or_else(|| path.as_bytes().to_vec());
    String::from_utf8_lossy(&decoded)
        .to_ascii_lowercase()
        .trim_end_matches('/')
        .to_owned()
}

/// Bytes the URL parser would escape itself (which would make the URL differ from what was
/// checked): escaped here first. Path: `"` `<` `>` `` ` `` `{` `}` and space-like bytes never
/// reach here; query: also `'`.
fn escape_for_url(text: &str, query: bool) -> String {
    if !text
        .bytes()
        .any(|b| matches!(b, b'"' | b'<' | b'>' | b'`' | b'{' | b'}') || (query && b == b'\''))
    {
        return text.to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' | '<' | '>' | '`' | '{' | '}' => out.push_str(&format!("%{:02X}", c as u32)),
            '\'' if query => out.push_str("%27"),
            c => out.push(c),
        }
    }
    out
}

/// An origin (`https://host` or the fake's `{base}/{host}`), parsed once: the scheme and
/// authority every call to it carries, the `Host` header they imply, and the base path.
#[derive(Debug, Clone)]
pub struct Origin {
    scheme: axum::http::uri::Scheme,
    authority: axum::http::uri::Authority,
    host_header: axum::http::HeaderValue,
    base_path: String,
}

impl Origin {
    /// Parses an origin: `http` or `https`, a host, no user, query or fragment.
    pub fn parse(origin: &str) -> Result<Origin, PathError> {
        let refused = PathError("the Amazon path does not stay on the Amazon host");
        let url = url::Url::parse(origin).map_err(|_| refused.clone())?;
        if !matches!(url.scheme(), "http" | "https")
            || url.host_str().is_none()
            || !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
        {
            return Err(refused);
        }
        // The URL's own serialization (host normalized, default port dropped), as an HTTP URI.
        let uri: axum::http::Uri = url.as_str().parse().map_err(|_| refused.clone())?;
        let parts = uri.into_parts();
        let (Some(scheme), Some(authority)) = (parts.scheme, parts.authority) else {
            return Err(refused);
        };
        // What hyper would write as `Host`: the port only when it is not the scheme's default.
        let default_port = if scheme == axum::http::uri::Scheme::HTTPS {
            443
        } else {
            80
        };
        let host_header = match authority.port_u16() {
            Some(port) if port != default_port => format!("{}:{port}", authority.host()),
            _ => authority.host().to_owned(),
        };
        let host_header = axum::http::HeaderValue::from_str(&host_header).map_err(|_| refused.clone())?;
        Ok(Origin {
            scheme,
            authority,
            host_header,
            base_path: url.path().trim_end_matches('/').to_owned(),
        })
    }

    /// The `Host` header for calls to this origin.
    pub fn host_header(&self) -> &axum::http::HeaderValue {
        &self.host_header
    }
}

/// The URI for `path` on `origin`: the origin's scheme and authority as they are (the path
/// cannot move them), the path and query exactly as checked. The URI is checked once more:
/// its path must be the origin's path followed by ours and its query ours (nothing dropped or
/// normalized away). Anything else is refused.
pub fn checked_uri(origin: &Origin, path: &UpstreamPath) -> Result<axum::http::Uri, PathError> {
    let refused = PathError("the Amazon path does not stay on the Amazon host");
    let query_len = path.query.as_ref().map_or(0, |q| q.len() + 1);
    let mut text = String::with_capacity(origin.base_path.len() + path.path.len() + query_len);
    text.push_str(&origin.base_path);
    text.push_str(&path.path);
    if let Some(q) = &path.query {
        text.push('?');
        text.push_str(q);
    }
    let path_and_query = axum::http::uri::PathAndQuery::from_maybe_shared(axum::body::Bytes::from(text))
        .map_err(|_| refused.clone())?;
    let mut parts = axum::http::uri::Parts::default();
    parts.scheme = Some(origin.scheme.clone());
    parts.authority = Some(origin.authority.clone());
    parts.path_and_query = Some(path_and_query);
    let uri = axum::http::Uri::from_parts(parts).map_err(|_| refused.clone())?;
    let path_ok = uri
        .path()
        .strip_prefix(origin.base_path.as_str())
        .is_some_and(|rest| rest == path.path);
    if !path_ok || uri.query() != path.query() {
        return Err(refused);
    }
    Ok(uri)
}

/// [`checked_uri`] on an origin given as text.
pub fn checked_url(origin: &str, path: &UpstreamPath) -> Result<axum::http::Uri, PathError> {
    checked_uri(&Origin::parse(origin)?, path)
}

/// The operation a request is, for metrics and the rate limiter: Amazon's operation id for the
/// restricted operations the broker knows, else the method and the path with every id-like
/// segment (one with a digit that is not a version such as `v0` or `2021-03-01`) as `{}`.
pub fn operation(method: &str, path: &str) -> String {
    operation_of(lwa::restricted::find(method, path), method, path)
}

/// [`operation`] when the restricted operation (`lwa::restricted::find`) is already known.
pub fn operation_of(
    restricted: Option<&lwa::restricted::RestrictedOperation>,
    method: &str,
    path: &str,
) -> String {
    if let Some(op) = restricted {
        return op.operation.to_owned();
    }
    let mut out = String::with_capacity(path.len() + 8);
    out.push_str(method);
    out.push(' ');
    for (i, segment) in path.trim_start_matches('/').split('/').enumerate() {
        out.push('/');
        if i > 0 && segment.bytes().any(|b| b.is_ascii_digit()) && !is_version(segment) {
            out.push_str("{}");
        } else {
            out.push_str(segment);
        }
    }
    out
}

/// `v0`, `v2`, `2021-03-01`.
fn is_version(segment: &str) -> bool {
    let b = segment.as_bytes();
    let v = b.len() >= 2 && b[0] == b'v' && b[1..].iter().all(u8::is_ascii_digit);
    let date = b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        });
    v || date
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crafted_paths_are_refused() {
        for bad in [
            "/..",
            "/orders/..",
            "/orders/../x",
            "/orders/%2e%2e/x",
            "/orders/%2E%2e/x",
            "/orders/.%2e/x",
            "/orders/%2E/x",
            "/./x",
            "//evil.com/x",
            "/x//y",
            "/http:/evil.com",
            "/https:%2f%2fevil.com",
            "/a%2fb",
            "/a%2Fb",
            "/a%5cb",
            "/a\\b",
            "/a%0d%0aHost:%20evil",
            "/a%00",
            "/a%zz",
            "/a%2",
            "x",
            "",
            "/",
        ] {
            assert!(UpstreamPath::parse(bad, None).is_err(), "{bad:?} accepted");
        }
        assert!(UpstreamPath::parse("/x", Some("a=%0d%0aSet-Cookie:1")).is_err());
        assert!(UpstreamPath::parse("/x", Some("a=b c")).is_err());
    }

    #[test]
    fn ordinary_paths_pass_unchanged() {
        for good in [
            "/sellers/v1/marketplaceParticipations",
            "/orders/v0/orders/123-1234567-1234567/address",
            "/listings/2021-08-01/items/A1/sku%2Ewith%20space",
            "/v2/profiles",
            "/amc/reporting/amcfake7na01/workflowExecutions",
            "/catalog/2022-04-01/items/",
            "/a/b:c",
        ] {
            let p = UpstreamPath::parse(good, Some("keywords=men's")).unwrap();
            assert!(
                checked_url("https://sellingpartnerapi-na.amazon.com", &p).is_ok(),
                "{good}"
            );
            let p = UpstreamPath::parse(good, Some("marketplaceIds=ATVPDKIKX0DER&x=%20")).unwrap();
            assert_eq!(p.path(), good);
            let url = checked_url("http://127.0.0.1:9/sellingpartnerapi-na.amazon.com", &p).unwrap();
            assert_eq!(url.host(), Some("127.0.0.1"));
            let url = checked_url("https://sellingpartnerapi-na.amazon.com", &p).unwrap();
            assert_eq!(url.host(), Some("sellingpartnerapi-na.amazon.com"));
        }
    }

    #[test]
    fn characters_the_url_parser_escapes_are_escaped_first() {
        let p = UpstreamPath::parse("/catalog/{x}/\"q\"", Some("keywords=men's&a=<b>")).unwrap();
        let url = checked_url("https://sellingpartnerapi-na.amazon.com", &p).unwrap();
        assert_eq!(url.path(), "/catalog/%7Bx%7D/%22q%22");
        assert_eq!(url.query(), Some("keywords=men%27s&a=%3Cb%3E"));
        assert_eq!(
            normalized("/Tokens/2021-03-01/restrictedDataToke%6E/"),
            "/tokens/2021-03-01/restricteddatatoken"
        );
    }

    #[test]
    fn operations_name_ids_generically() {
        assert_eq!(
            operation("GET", "/orders/v0/orders/123-1234567-1234567/address"),
            "getOrderAddress"
        );
        assert_eq!(
            operation("GET", "/sellers/v1/marketplaceParticipations"),
            "GET /sellers/v1/marketplaceParticipations"
        );
        assert_eq!(
            operation("POST", "/amc/reporting/amcfake7na01/workflowExecutions"),
            "POST /amc/reporting/{}/workflowExecutions"
        );
        assert_eq!(
            operation("GET", "/reports/2021-06-30/reports/5000"),
            "GET /reports/2021-06-30/reports/{}"
        );
        assert_eq!(operation("GET", "/v2/profiles"), "GET /v2/profiles");
    }
}
