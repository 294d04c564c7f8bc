//! Which of the caller's headers go on to Amazon.
//!
//! Forwarded: end-to-end headers (content type, accept, accept-encoding, SDK headers such as
//! `x-amz-date`). Never forwarded:
//! - hop-by-hop headers (RFC 9110 §7.6.1, and any the caller's `Connection` names);
//! - the caller's credentials: `Authorization`, `x-amz-access-token`, `x-adb-access-token`,
//!   `x-amazon-token-secret`, `Cookie`, `x-amz-security-token`;
//! - what tells Amazon about the caller's network: `Forwarded`, `X-Forwarded-*`, `X-Real-IP`,
//!   `Via`;
//! - the Ads headers the proxy sets itself (`Amazon-Advertising-API-*`: the client id is the
//!   app's; the scope, marketplace and advertiser are checked before they are set again);
//! - the broker's own `x-lwa-broker-*`;
//! - `host`, `content-length` and `user-agent`, which the proxy writes, and `expect`.
//!
//! ```
//! use axum::http::HeaderMap;
//! let mut h = HeaderMap::new();
//! h.insert("authorization", "Bearer lwak_x_y".parse().unwrap());
//! h.insert("accept", "application/json".parse().unwrap());
//! h.insert("x-forwarded-for", "10.0.0.1".parse().unwrap());
//! let out = lwa_server::proxy::headers::outgoing(&h);
//! assert_eq!(out.len(), 1);
//! assert!(out.contains_key("accept"));
//! ```

use axum::http::HeaderMap;

const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

const NEVER: &[&str] = &[
    "host",
    "expect",
    "content-length",
    "user-agent",
    "authorization",
    "x-amz-access-token",
    "x-adb-access-token",
    "x-amazon-token-secret",
    "cookie",
    "x-amz-security-token",
    "forwarded",
    "x-real-ip",
    "via",
];

/// Whether a header is hop-by-hop (never passed either way).
pub fn hop_by_hop(name: &str) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h))
}

/// Amazon's answer head as it goes back: hop-by-hop headers removed, and nothing of the
/// upstream connection kept (its extensions, its HTTP version).
pub fn strip_hop_by_hop(parts: &mut axum::http::response::Parts) {
    if parts.headers.keys().any(|name| hop_by_hop(name.as_str())) {
        for name in HOP_BY_HOP {
            parts.headers.remove(*name);
        }
    }
    parts.extensions = axum::http::Extensions::new();
    parts.version = axum::http::Version::default();
}

/// The caller's headers that may reach Amazon.
pub fn outgoing(incoming: &HeaderMap) -> HeaderMap {
    let named_by_connection: Vec<String> = incoming
        .get_all("connection")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|s| s.trim().to_ascii_lowercase())
        .collect();
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (name, value) in incoming {
        let n = name.as_str();
        if hop_by_hop(n)
            || NEVER.contains(&n)
            || n.starts_with("x-forwarded-")
            || n.starts_with("amazon-advertising-api-")
            || n.starts_with("x-lwa-broker-")
            || named_by_connection.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_and_hop_by_hop_headers_stay_behind() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("authorization", "Bearer secret"),
            ("x-amz-access-token", "Atza|x"),
            ("x-amazon-token-secret", "s"),
            ("amazon-advertising-api-clientid", "theirs"),
            ("amazon-advertising-api-scope", "1"),
            ("x-lwa-broker-data-elements", "buyerInfo"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("transfer-encoding", "chunked"),
            ("cookie", "a=b"),
            ("x-forwarded-for", "10.0.0.1"),
            ("content-type", "application/json"),
            ("x-amz-date", "20240101T000000Z"),
        ] {
            h.append(k, v.parse().unwrap());
        }
        let out = outgoing(&h);
        let names: Vec<&str> = out.keys().map(|k| k.as_str()).collect();
        assert_eq!(names, ["content-type", "x-amz-date"]);
    }
}
