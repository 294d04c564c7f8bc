//! Tenant redirect URLs, parsed against the tenant's configured redirect origins.
//!
//! After onboarding, the broker sends the seller's browser to a URL that the tenant
//! supplied. That URL is attacker-reachable input, so it is *parsed* into a [`RedirectUrl`]
//! that can only exist if it lies under one of the tenant's [`RedirectOrigin`]s; code that
//! redirects takes a `RedirectUrl`, never a string.
//!
//! # Rules
//!
//! Both a configured origin and a redirect URL must satisfy all of these; checks run on the
//! raw input *before* the `url` crate gets to repair anything, because browsers and servers
//! repair differently:
//!
//! * **Length**: non-empty, at most 2048 bytes.
//! * **Characters**: printable ASCII only, and only characters RFC 3986 allows in a URI.
//!   Control characters (raw or percent-encoded, e.g. `%0d%0a`), whitespace, non-ASCII
//!   characters and `"`, `<`, `>`, `^`, `` ` ``, `{`, `|`, `}` are refused. Every `%` must
//!   start a `%XX` escape.
//!   Internationalized host names must be written in punycode (`xn--…`) in both the
//!   configuration and the URL: a raw Unicode host is refused rather than IDNA-mapped, so
//!   homographs never reach the comparison.
//! * **Backslashes**: refused anywhere, raw or as `%5C`; in the path also double-encoded.
//! * **Fragments**: refused (`#`), as RFC 6749 §3.1.2 requires of redirect URIs.
//! * **Absolute**: the input must start with `https://` (or `http://`, case-insensitive)
//!   followed by a non-empty authority; `//host`, `/path`, `https:host`, `https:/host`,
//!   `https:///host`, `javascript:`, `data:` and every other scheme are refused.
//! * **HTTPS**: `http` is accepted only for the hosts `localhost`, `127.0.0.1` and `[::1]`.
//! * **Authority**: no userinfo (any `@` before the path), no percent-encoding in the host,
//!   and the host must be written in its canonical form (case aside): `127.1`,
//!   `2130706433`, `0x7f.0.0.1` or `[0:0:0:0:0:0:0:1]` are refused instead of being
//!   silently normalized to an address.
//! * **Path**: every segment may contain only RFC 3986 path characters; no `.` or `..`
//!   segment, raw or percent-encoded, at any depth of decoding (`%2e%2e`, `.%2E`,
//!   `%252e%252e`), also with a `;parameter` (`..;/`); no encoded `/` (`%2f`, `%252f`); no
//!   empty segment except a trailing one (`/oauth//evil.com`); percent-encoded bytes must
//!   decode to UTF-8. The path is then normalized: escapes of unreserved characters are
//!   decoded (`%6F` → `o`), all other escapes get uppercase hex (`%c3` → `%C3`).
//! * **Origin match**: scheme, host and port of the URL equal those of one configured
//!   origin, after the `url` crate's normalization (lowercase scheme and host, default ports
//!   dropped: `https://a.com:443` is `https://a.com`). The normalized path must equal the
//!   origin's path or continue it after a `/`: `/oauth` accepts `/oauth`, `/oauth/`,
//!   `/oauth/cb` but not `/oauthx`. Paths are compared case-sensitively. An origin without a
//!   path (or with `/`) accepts every path.
//! * **Query**: allowed, and kept as given, except that `'` is written `%27` as the `url`
//!   crate (like every browser) does for `http`/`https` queries.
//!
//! A configured origin additionally must not have a query; one trailing `/` on its path is
//! ignored.

use std::fmt;

use url::Url;

/// The longest input accepted, in bytes.
const MAX_LEN: usize = 2048;

/// The only hosts for which plain `http` is accepted, as `Url::host_str` writes them.
const LOOPBACK_HOSTS: [&str; 3] = ["localhost", "127.0.0.1", "[::1]"];

/// Why a redirect URL or a redirect origin was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUrlError {
    /// The input is empty.
    #[error("the URL is empty")]
    Empty,
    /// The input is longer than 2048 bytes.
    #[error("the URL is longer than {max} bytes", max = MAX_LEN)]
    TooLong,
    /// The input contains a control character, raw or percent-encoded.
    #[error("the URL contains a control character (raw or percent-encoded)")]
    ControlCharacter,
    /// The input contains a space.
    #[error("the URL contains whitespace")]
    Whitespace,
    /// The input contains a non-ASCII character.
    #[error("the URL contains a non-ASCII character; write internationalized hosts in punycode (xn--)")]
    NonAscii,
    /// The input contains a printable ASCII character that a URL may not contain there.
    #[error("the URL contains the character {0:?}, which is not allowed there")]
    InvalidCharacter(char),
    /// A `%` is not followed by two hex digits, or escapes in the path do not decode to UTF-8.
    #[error("the URL contains an invalid percent-encoding")]
    InvalidPercentEncoding,
    /// The input contains a backslash, raw or percent-encoded.
    #[error("the URL contains a backslash (raw or percent-encoded)")]
    Backslash,
    /// The input has a fragment (`#…`).
    #[error("the URL must not have a fragment ('#')")]
    Fragment,
    /// The input is not an absolute URL: it has no scheme.
    #[error("the URL must be absolute, starting with https://")]
    NotAbsolute,
    /// The scheme is neither `https` nor `http`.
    #[error("the URL's scheme must be https (or http for localhost)")]
    UnsupportedScheme,
    /// The scheme is not followed by `//` and a non-empty authority.
    #[error("the URL must have the form https://host/path")]
    MissingAuthority,
    /// The scheme is `http` but the host is not `localhost`, `127.0.0.1` or `[::1]`.
    #[error("the URL must use https (http is allowed only for localhost, 127.0.0.1 and [::1])")]
    NotHttps,
    /// The authority contains userinfo (`user@`, `user:pass@`, or any `@`).
    #[error("the URL must not contain a user name or password ('@' before the path)")]
    Userinfo,
    /// The host is percent-encoded.
    #[error("the URL's host must not be percent-encoded")]
    EncodedHost,
    /// The host is not written in its canonical form (e.g. `127.1` or `2130706433`).
    #[error("the URL's host must be written in canonical form (dotted IPv4, compressed IPv6, punycode)")]
    NonCanonicalHost,
    /// The path has a `.` or `..` segment, raw or percent-encoded.
    #[error("the URL's path must not contain '.' or '..' segments (raw or percent-encoded)")]
    DotSegment,
    /// The path has a percent-encoded `/`.
    #[error("the URL's path must not contain an encoded '/'")]
    EncodedSeparator,
    /// The path has an empty segment (`//`) before its end.
    #[error("the URL's path must not contain empty segments ('//')")]
    EmptySegment,
    /// A redirect origin has a query.
    #[error("a redirect origin must not have a query ('?')")]
    OriginHasQuery,
    /// The tenant has no redirect origin configured, so no URL can be accepted.
    #[error("the tenant has no redirect origin configured")]
    NoOrigins,
    /// The URL is well-formed but not under any of the tenant's redirect origins.
    #[error("the URL is not under any of the tenant's redirect origins")]
    NotUnderOrigin,
    /// The `url` crate could not parse the input; the message says why.
    #[error("the URL is malformed: {0}")]
    Malformed(String),
}

/// A redirect origin from a tenant's configuration: scheme, host, port and an optional path prefix.
///
/// Parsed with the same rules as a [`RedirectUrl`], and additionally without a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectOrigin {
    /// `https` or `http`, lowercase.
    scheme: String,
    /// The host as `Url::host_str` writes it (IPv6 in brackets).
    host: String,
    /// The port, default ports included.
    port: u16,
    /// The normalized path prefix without a trailing `/`; empty for "any path".
    path: String,
    /// Origin plus path prefix, e.g. `https://my-wms.com/oauth`.
    serialized: String,
}

impl RedirectOrigin {
    /// Parses a configured redirect origin such as `https://my-wms.com/oauth`.
    ///
    /// The rules are those of [`RedirectUrl::parse`] (see the module documentation); a query
    /// is refused as well, and one trailing `/` of the path is ignored.
    ///
    /// # Errors
    ///
    /// A [`RedirectUrlError`] naming the first rule the input breaks.
    pub fn parse(input: &str) -> Result<RedirectOrigin, RedirectUrlError> {
        let checked = parse_checked(input)?;
        if checked.has_query {
            return Err(RedirectUrlError::OriginHasQuery);
        }
        let url = checked.url;
        let Some(host) = url.host_str() else {
            return Err(RedirectUrlError::MissingAuthority);
        };
        let Some(port) = url.port_or_known_default() else {
            return Err(RedirectUrlError::Malformed("no port".to_owned()));
        };
        let path = url.path().trim_end_matches('/').to_owned();
        let serialized = format!("{}{}", url.origin().ascii_serialization(), path);
        Ok(RedirectOrigin {
            scheme: url.scheme().to_owned(),
            host: host.to_owned(),
            port,
            path,
            serialized,
        })
    }

    /// The normalized origin with its path prefix, e.g. `https://my-wms.com/oauth`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.serialized
    }

    /// Whether `url` (already normalized by [`parse_checked`]) lies under this origin.
    fn contains(&self, url: &Url) -> bool {
        url.scheme() == self.scheme
            && url.host_str() == Some(self.host.as_str())
            && url.port_or_known_default() == Some(self.port)
            && path_is_under(url.path(), &self.path)
    }
}

impl fmt::Display for RedirectOrigin {
    /// Writes [`RedirectOrigin::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A URL the broker may send a seller's browser to, proven to lie under one of a tenant's origins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedirectUrl {
    /// The normalized URL.
    url: Url,
}

impl RedirectUrl {
    /// Parses a tenant-supplied redirect URL, accepting it only if it lies under one of
    /// `origins` (rules in the module documentation).
    ///
    /// # Errors
    ///
    /// [`RedirectUrlError::NoOrigins`] if `origins` is empty, [`RedirectUrlError::NotUnderOrigin`]
    /// if the URL is well-formed but under none of them, and otherwise the first rule it breaks.
    ///
    /// ```
    /// use lwa_server::onboarding::redirect_url::{RedirectOrigin, RedirectUrl};
    ///
    /// let origins = [RedirectOrigin::parse("https://my-wms.com/oauth")?];
    ///
    /// // Valid: the path varies under the origin's path; the query is kept.
    /// let url = RedirectUrl::parse("https://my-wms.com/oauth/callback", &origins)?;
    /// assert_eq!(url.as_str(), "https://my-wms.com/oauth/callback");
    /// let url = RedirectUrl::parse("https://my-wms.com/oauth/done?ref=123", &origins)?;
    /// assert_eq!(url.as_str(), "https://my-wms.com/oauth/done?ref=123");
    ///
    /// // Invalid: another host, or a path outside the origin's path.
    /// assert!(RedirectUrl::parse("https://other-site.com/oauth", &origins).is_err());
    /// assert!(RedirectUrl::parse("https://my-wms.com/other", &origins).is_err());
    /// # Ok::<(), lwa_server::onboarding::redirect_url::RedirectUrlError>(())
    /// ```
    pub fn parse(input: &str, origins: &[RedirectOrigin]) -> Result<RedirectUrl, RedirectUrlError> {
        if origins.is_empty() {
            return Err(RedirectUrlError::NoOrigins);
        }
        let url = parse_checked(input)?.url;
        if origins.iter().any(|origin| origin.contains(&url)) {
            Ok(RedirectUrl { url })
        } else {
            Err(RedirectUrlError::NotUnderOrigin)
        }
    }

    /// The normalized URL, e.g. `https://my-wms.com/oauth/done?ref=123`.
    #[must_use]
    pub fn as_str(&self) -> &str {
        self.url.as_str()
    }

    /// The URL with these query parameters appended (form-urlencoded, keeping existing ones).
    #[must_use]
    pub fn with_query(&self, pairs: &[(&str, &str)]) -> String {
        let mut url = self.url.clone();
        if !pairs.is_empty() {
            url.query_pairs_mut().extend_pairs(pairs);
        }
        url.into()
    }
}

impl fmt::Display for RedirectUrl {
    /// Writes [`RedirectUrl::as_str`].
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An input that passed every rule but the origin match.
struct Checked {
    /// The parsed URL, with its path normalized.
    url: Url,
    /// Whether the raw input had a `?`.
    has_query: bool,
}

/// The pieces of a raw `scheme://authority/path?query` input.
struct RawParts<'a> {
    /// The host as written (IPv6 with brackets), without the port.
    host: &'a str,
    /// The path as written, empty or starting with `/`.
    path: &'a str,
    /// Whether a `?` follows the path.
    has_query: bool,
}

/// Applies every rule except the origin match, and normalizes the path.
fn parse_checked(input: &str) -> Result<Checked, RedirectUrlError> {
    check_characters(input)?;
    let raw = split_raw(input)?;
    let path = normalize_path(raw.path)?;
    let mut url = Url::parse(input).map_err(|e| RedirectUrlError::Malformed(e.to_string()))?;
    // Raw checks already exclude these; they are repeated on what the `url` crate understood.
    if !url.username().is_empty() || url.password().is_some() {
        return Err(RedirectUrlError::Userinfo);
    }
    if url.fragment().is_some() {
        return Err(RedirectUrlError::Fragment);
    }
    {
        let Some(host) = url.host_str() else {
            return Err(RedirectUrlError::MissingAuthority);
        };
        if host != raw.host.to_ascii_lowercase() {
            return Err(RedirectUrlError::NonCanonicalHost);
        }
        match url.scheme() {
            "https" => {}
            "http" if LOOPBACK_HOSTS.contains(&host) => {}
            "http" => return Err(RedirectUrlError::NotHttps),
            _ => return Err(RedirectUrlError::UnsupportedScheme),
        }
    }
    url.set_path(&path);
    if url.path() != path {
        return Err(RedirectUrlError::Malformed(
            "the path does not survive normalization".to_owned(),
        ));
    }
    Ok(Checked {
        url,
        has_query: raw.has_query,
    })
}

/// Checks length and every character of the raw input, including what `%XX` escapes decode to.
fn check_characters(input: &str) -> Result<(), RedirectUrlError> {
    if input.is_empty() {
        return Err(RedirectUrlError::Empty);
    }
    if input.len() > MAX_LEN {
        return Err(RedirectUrlError::TooLong);
    }
    let bytes = input.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let byte = bytes[i];
        match byte {
            b'%' => {
                let decoded = decode_at(bytes, i).ok_or(RedirectUrlError::InvalidPercentEncoding)?;
                if decoded.is_ascii_control() {
                    return Err(RedirectUrlError::ControlCharacter);
                }
                if decoded == b'\\' {
                    return Err(RedirectUrlError::Backslash);
                }
                i += 3;
                continue;
            }
            0x80.. => return Err(RedirectUrlError::NonAscii),
            _ if byte.is_ascii_control() => return Err(RedirectUrlError::ControlCharacter),
            b' ' => return Err(RedirectUrlError::Whitespace),
            b'\\' => return Err(RedirectUrlError::Backslash),
            b'#' => return Err(RedirectUrlError::Fragment),
            _ if is_unreserved(byte) || b":/?[]@!$&'()*+,;=".contains(&byte) => {}
            _ => return Err(RedirectUrlError::InvalidCharacter(char::from(byte))),
        }
        i += 1;
    }
    Ok(())
}

/// Splits `scheme://authority/path?query`, refusing anything that is not of that shape.
///
/// Expects input that passed [`check_characters`] (so no `#` or `\`).
fn split_raw(input: &str) -> Result<RawParts<'_>, RedirectUrlError> {
    let Some((scheme, rest)) = input.split_once(':') else {
        return Err(RedirectUrlError::NotAbsolute);
    };
    let mut scheme_chars = scheme.bytes();
    let scheme_is_valid = scheme_chars.next().is_some_and(|b| b.is_ascii_alphabetic())
        && scheme_chars.all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b));
    if !scheme_is_valid {
        return Err(RedirectUrlError::NotAbsolute);
    }
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(RedirectUrlError::UnsupportedScheme);
    }
    let Some(after_slashes) = rest.strip_prefix("//") else {
        return Err(RedirectUrlError::MissingAuthority);
    };
    let authority_end = after_slashes.find(['/', '?']).unwrap_or(after_slashes.len());
    let (authority, path_and_query) = after_slashes.split_at(authority_end);
    if authority.is_empty() {
        return Err(RedirectUrlError::MissingAuthority);
    }
    if authority.contains('@') {
        return Err(RedirectUrlError::Userinfo);
    }
    if authority.contains('%') {
        return Err(RedirectUrlError::EncodedHost);
    }
    let host = if authority.starts_with('[') {
        authority.find(']').map_or(authority, |end| &authority[..=end])
    } else {
        authority.split(':').next().unwrap_or(authority)
    };
    let (path, has_query) = match path_and_query.split_once('?') {
        Some((path, _query)) => (path, true),
        None => (path_and_query, false),
    };
    Ok(RawParts {
        host,
        path,
        has_query,
    })
}

/// Checks every segment of a raw path (empty or starting with `/`) and returns it normalized.
fn normalize_path(raw: &str) -> Result<String, RedirectUrlError> {
    let Some(segments) = raw.strip_prefix('/') else {
        return Ok("/".to_owned());
    };
    let mut normalized = String::with_capacity(raw.len());
    let mut segments = segments.split('/').peekable();
    while let Some(segment) = segments.next() {
        if segment.is_empty() && segments.peek().is_some() {
            return Err(RedirectUrlError::EmptySegment);
        }
        check_segment(segment)?;
        normalized.push('/');
        normalize_segment(segment, &mut normalized);
    }
    Ok(normalized)
}

/// Refuses a raw path segment that is, or decodes (any number of times) to, a dot segment,
/// or that hides a separator or control character behind percent-encoding.
fn check_segment(segment: &str) -> Result<(), RedirectUrlError> {
    if let Some(&byte) = segment.as_bytes().iter().find(|&&b| !is_pchar(b)) {
        return Err(RedirectUrlError::InvalidCharacter(char::from(byte)));
    }
    let mut level = segment.as_bytes().to_vec();
    check_decoded_segment(&level)?;
    let mut depth = 0;
    loop {
        let decoded = percent_decode_once(&level);
        if decoded == level {
            return Ok(());
        }
        if depth == 0 && std::str::from_utf8(&decoded).is_err() {
            return Err(RedirectUrlError::InvalidPercentEncoding);
        }
        check_decoded_segment(&decoded)?;
        level = decoded;
        depth += 1;
    }
}

/// Checks one decoding level of a path segment.
fn check_decoded_segment(bytes: &[u8]) -> Result<(), RedirectUrlError> {
    if bytes.contains(&b'/') {
        return Err(RedirectUrlError::EncodedSeparator);
    }
    if bytes.contains(&b'\\') {
        return Err(RedirectUrlError::Backslash);
    }
    if bytes.iter().any(u8::is_ascii_control) {
        return Err(RedirectUrlError::ControlCharacter);
    }
    // Some servers drop a `;parameter` before resolving dot segments (`..;/`).
    let name = bytes.split(|&b| b == b';').next().unwrap_or(bytes);
    if name == b"." || name == b".." {
        return Err(RedirectUrlError::DotSegment);
    }
    Ok(())
}

/// Appends `segment` with escapes of unreserved characters decoded and other escapes uppercased.
fn normalize_segment(segment: &str, out: &mut String) {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let bytes = segment.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if let Some(value) = decode_at(bytes, i) {
            if is_unreserved(value) {
                out.push(char::from(value));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(value >> 4)]));
                out.push(char::from(HEX[usize::from(value & 0x0F)]));
            }
            i += 3;
        } else {
            out.push(char::from(bytes[i]));
            i += 1;
        }
    }
}

/// Decodes every valid `%XX` escape once, leaving anything else as it is.
fn percent_decode_once(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if let Some(value) = decode_at(bytes, i) {
            out.push(value);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// The byte that a `%XX` escape starting at `bytes[i]` stands for, if there is one.
fn decode_at(bytes: &[u8], i: usize) -> Option<u8> {
    match bytes.get(i..i + 3)? {
        [b'%', high, low] => Some(hex_value(*high)? << 4 | hex_value(*low)?),
        _ => None,
    }
}

/// The value of one hex digit.
const fn hex_value(digit: u8) -> Option<u8> {
    match digit {
        b'0'..=b'9' => Some(digit - b'0'),
        b'a'..=b'f' => Some(digit - b'a' + 10),
        b'A'..=b'F' => Some(digit - b'A' + 10),
        _ => None,
    }
}

/// RFC 3986 `unreserved`.
const fn is_unreserved(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~')
}

/// RFC 3986 `pchar`, with `%` standing for an escape already checked by [`check_characters`].
fn is_pchar(byte: u8) -> bool {
    is_unreserved(byte) || b"!$&'()*+,;=:@%".contains(&byte)
}

/// Whether a normalized `path` equals `prefix` (no trailing `/`) or continues it after a `/`.
fn path_is_under(path: &str, prefix: &str) -> bool {
    prefix.is_empty()
        || path
            .strip_prefix(prefix)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
}

#[cfg(test)]
mod tests {
    use super::*;
    use RedirectUrlError as E;
    use proptest::prelude::*;

    /// The origins every table is checked against.
    const ORIGINS: [&str; 4] = [
        "https://my-wms.com/oauth",
        "http://localhost:3000",
        "http://[::1]:4000/app",
        "https://shop.example.org",
    ];

    fn origins() -> Vec<RedirectOrigin> {
        ORIGINS
            .iter()
            .map(|o| RedirectOrigin::parse(o).unwrap())
            .collect()
    }

    fn seed_origin() -> Vec<RedirectOrigin> {
        vec![RedirectOrigin::parse("https://my-wms.com/oauth").unwrap()]
    }

    fn same_kind(a: &RedirectUrlError, b: &RedirectUrlError) -> bool {
        std::mem::discriminant(a) == std::mem::discriminant(b)
    }

    #[test]
    fn seed_examples() {
        let origins = seed_origin();
        for valid in [
            "https://my-wms.com/oauth/callback",
            "https://my-wms.com/oauth/done?ref=123",
        ] {
            let url = RedirectUrl::parse(valid, &origins).unwrap();
            assert_eq!(url.as_str(), valid);
        }
        for invalid in ["https://other-site.com/oauth", "https://my-wms.com/other"] {
            assert_eq!(
                RedirectUrl::parse(invalid, &origins),
                Err(E::NotUnderOrigin),
                "{invalid}"
            );
        }
    }

    fn hostile() -> Vec<(String, RedirectUrlError)> {
        let m = || E::Malformed(String::new());
        let c = || E::InvalidCharacter(' ');
        let cases: Vec<(&str, RedirectUrlError)> = vec![
            // The seed documentation's invalid examples.
            ("https://other-site.com/oauth", E::NotUnderOrigin),
            ("https://my-wms.com/other", E::NotUnderOrigin),
            // Schemes other than https, and http for a non-loopback host.
            ("http://my-wms.com/oauth/cb", E::NotHttps),
            ("HTTP://my-wms.com/oauth/cb", E::NotHttps),
            ("ftp://my-wms.com/oauth/cb", E::UnsupportedScheme),
            ("wss://my-wms.com/oauth/cb", E::UnsupportedScheme),
            ("javascript:alert(1)", E::UnsupportedScheme),
            ("JavaScript://my-wms.com/oauth/cb", E::UnsupportedScheme),
            ("data:text/html;base64,PHNjcmlwdD4=", E::UnsupportedScheme),
            ("https+evil://my-wms.com/oauth/cb", E::UnsupportedScheme),
            ("my-wms.com:443/oauth/cb", E::UnsupportedScheme),
            // Not absolute.
            ("//evil.com/x", E::NotAbsolute),
            ("//my-wms.com/oauth/cb", E::NotAbsolute),
            ("/relative", E::NotAbsolute),
            ("/oauth/cb", E::NotAbsolute),
            ("my-wms.com/oauth/cb", E::NotAbsolute),
            ("oauth/cb?x=https://my-wms.com", E::NotAbsolute),
            (":https://my-wms.com/oauth/cb", E::NotAbsolute),
            ("1https://my-wms.com/oauth/cb", E::NotAbsolute),
            // A scheme without `//` and a non-empty authority.
            ("https:evil.com", E::MissingAuthority),
            ("https:/evil.com", E::MissingAuthority),
            ("https:///evil.com", E::MissingAuthority),
            ("https:my-wms.com/oauth/cb", E::MissingAuthority),
            ("https://", E::MissingAuthority),
            ("https://?x=1", E::MissingAuthority),
            ("https://:443/oauth/cb", m()),
            // Look-alike hosts and hosts hidden in the path.
            ("https://my-wms.com.evil.com/oauth/cb", E::NotUnderOrigin),
            ("https://evil.com/my-wms.com/oauth", E::NotUnderOrigin),
            ("https://evil.com/oauth/cb", E::NotUnderOrigin),
            ("https://sub.my-wms.com/oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.co/oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.com./oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.com;evil.com/oauth/cb", E::NotUnderOrigin),
            ("https://xn--my-wm-l2e.com/oauth/cb", E::NotUnderOrigin),
            ("https://xn--.com/oauth/cb", m()),
            ("https://my-wm\u{0455}.com/oauth/cb", E::NonAscii),
            ("https://\u{ff4d}y-wms.com/oauth/cb", E::NonAscii),
            // Percent-encoded hosts.
            ("https://my-wms.com%2eevil.com/oauth/cb", E::EncodedHost),
            ("https://my-wms.com%00.evil.com/oauth/cb", E::ControlCharacter),
            ("https://my-wms%2ecom/oauth/cb", E::EncodedHost),
            ("https://%6Dy-wms.com/oauth/cb", E::EncodedHost),
            ("https://my-wms.com%2F@evil.com/oauth/cb", E::Userinfo),
            ("https://my-wms.com%40evil.com/oauth/cb", E::EncodedHost),
            ("https://my-wms.com%2f.evil.com/oauth/cb", E::EncodedHost),
            // Userinfo.
            ("https://user@my-wms.com/oauth/cb", E::Userinfo),
            ("https://user:pass@my-wms.com/oauth/cb", E::Userinfo),
            ("https://my-wms.com@evil.com/oauth/cb", E::Userinfo),
            ("https://my-wms.com:443@evil.com/oauth/cb", E::Userinfo),
            ("https://@my-wms.com/oauth/cb", E::Userinfo),
            ("https://:@my-wms.com/oauth/cb", E::Userinfo),
            ("http://localhost:3000@evil.com/cb", E::Userinfo),
            // Ports.
            ("https://my-wms.com:8443/oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.com:80/oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.com:99999/oauth/cb", m()),
            ("https://my-wms.com:abc/oauth/cb", m()),
            ("https://my-wms.com:-1/oauth/cb", m()),
            ("http://localhost:3001/cb", E::NotUnderOrigin),
            ("http://localhost/cb", E::NotUnderOrigin),
            ("https://localhost:3000/cb", E::NotUnderOrigin),
            ("http://localhost:3000.evil.com/cb", m()),
            ("http://[::1]:4001/app", E::NotUnderOrigin),
            // Loopback only by these three names; IP-encoding tricks.
            ("http://127.0.0.1:3000/cb", E::NotUnderOrigin),
            ("http://127.0.0.2:3000/cb", E::NotHttps),
            ("http://[::2]:4000/app", E::NotHttps),
            ("http://localhost.:3000/cb", E::NotHttps),
            ("http://localhost.evil.com:3000/cb", E::NotHttps),
            ("http://2130706433:3000/cb", E::NonCanonicalHost),
            ("http://0x7f.0.0.1:3000/cb", E::NonCanonicalHost),
            ("http://0177.0.0.1:3000/cb", E::NonCanonicalHost),
            ("http://127.1:3000/cb", E::NonCanonicalHost),
            ("https://0x7f000001/oauth/cb", E::NonCanonicalHost),
            ("http://[::ffff:127.0.0.1]:4000/app", E::NonCanonicalHost),
            ("http://[0:0:0:0:0:0:0:1]:4000/app", E::NonCanonicalHost),
            ("http://[::1:4000/app", m()),
            // Paths outside the origin's path, or not on a segment boundary.
            ("https://my-wms.com/oauthx", E::NotUnderOrigin),
            ("https://my-wms.com/oauth-evil/cb", E::NotUnderOrigin),
            ("https://my-wms.com/oauth.evil", E::NotUnderOrigin),
            ("https://my-wms.com/OAUTH/cb", E::NotUnderOrigin),
            ("https://my-wms.com/", E::NotUnderOrigin),
            ("https://my-wms.com", E::NotUnderOrigin),
            ("https://my-wms.com?next=/oauth/cb", E::NotUnderOrigin),
            ("https://my-wms.com/oaut%68x", E::NotUnderOrigin),
            ("https://my-wms.com/admin/oauth/cb", E::NotUnderOrigin),
            ("http://[::1]:4000/application", E::NotUnderOrigin),
            // Dot segments, raw, encoded, double- and triple-encoded, with parameters.
            ("https://my-wms.com/oauth/../admin", E::DotSegment),
            ("https://my-wms.com/oauth/./cb", E::DotSegment),
            ("https://my-wms.com/oauth/..", E::DotSegment),
            ("https://my-wms.com/oauth/.", E::DotSegment),
            ("https://my-wms.com/oauth/%2e%2e/admin", E::DotSegment),
            ("https://my-wms.com/oauth/%2E%2E/admin", E::DotSegment),
            ("https://my-wms.com/oauth/.%2e/admin", E::DotSegment),
            ("https://my-wms.com/oauth/%2e./admin", E::DotSegment),
            ("https://my-wms.com/oauth/%2e/cb", E::DotSegment),
            ("https://my-wms.com/oauth/..;/admin", E::DotSegment),
            ("https://my-wms.com/oauth/..;jsessionid=x/admin", E::DotSegment),
            ("https://my-wms.com/oauth/..%3b/admin", E::DotSegment),
            ("https://my-wms.com/oauth/%252e%252e/admin", E::DotSegment),
            ("https://my-wms.com/oauth/%25252e%25252E/admin", E::DotSegment),
            ("https://my-wms.com/oauth/cb/../../admin", E::DotSegment),
            ("https://shop.example.org/../admin", E::DotSegment),
            ("http://[::1]:4000/app/%2e%2e/x", E::DotSegment),
            (
                "https://my-wms.com/oauth/%c0%ae%c0%ae/admin",
                E::InvalidPercentEncoding,
            ),
            // Encoded path separators.
            ("https://my-wms.com/oauth/..%2fadmin", E::EncodedSeparator),
            ("https://my-wms.com/oauth/%2E%2E%2Fadmin", E::EncodedSeparator),
            ("https://my-wms.com/oauth/cb%2fx", E::EncodedSeparator),
            ("https://my-wms.com/oauth%2f..%2fadmin", E::EncodedSeparator),
            ("https://my-wms.com/%2Foauth/cb", E::EncodedSeparator),
            ("https://my-wms.com/oauth/%252f..%252fadmin", E::EncodedSeparator),
            ("https://my-wms.com/oauth/%25252F", E::EncodedSeparator),
            // Backslashes, raw or encoded, anywhere.
            ("https://my-wms.com/oauth\\..\\admin", E::Backslash),
            ("https://my-wms.com\\@evil.com/oauth/cb", E::Backslash),
            ("https:\\\\evil.com/oauth/cb", E::Backslash),
            ("/\\evil.com", E::Backslash),
            ("https://my-wms.com/oauth/%5c../admin", E::Backslash),
            ("https://my-wms.com/oauth/%5C", E::Backslash),
            ("https://my-wms.com/oauth/%255c..%255cadmin", E::Backslash),
            ("https://my-wms.com/oauth/cb?next=%5C%5Cevil.com", E::Backslash),
            // Empty segments.
            ("https://my-wms.com/oauth//evil.com", E::EmptySegment),
            ("https://shop.example.org//evil.com", E::EmptySegment),
            ("https://my-wms.com//oauth/cb", E::EmptySegment),
            // Fragments.
            ("https://my-wms.com/oauth/cb#frag", E::Fragment),
            ("https://my-wms.com/oauth/cb#", E::Fragment),
            ("https://my-wms.com#@evil.com/oauth/cb", E::Fragment),
            ("https://evil.com#my-wms.com/oauth", E::Fragment),
            ("https://my-wms.com/oauth/cb?x=1#access_token=y", E::Fragment),
            // Control characters, whitespace and non-ASCII characters, raw or encoded.
            ("https://my-wms.com/oauth/cb\n", E::ControlCharacter),
            ("\thttps://my-wms.com/oauth/cb", E::ControlCharacter),
            ("https://my-wms.com/oa\tuth/cb", E::ControlCharacter),
            (
                "https://my-wms.com/oauth/cb\r\nSet-Cookie:x=y",
                E::ControlCharacter,
            ),
            (
                "https://my-wms.com/oauth/cb%0d%0aSet-Cookie:x=y",
                E::ControlCharacter,
            ),
            ("https://my-wms.com/oauth/cb%00", E::ControlCharacter),
            ("https://my-wms.com/oauth/cb%2500", E::ControlCharacter),
            ("https://my-wms.com/oauth/cb\u{7f}", E::ControlCharacter),
            ("https://my-wms.com/oauth/cb?x=%7F", E::ControlCharacter),
            ("\0https://my-wms.com/oauth/cb", E::ControlCharacter),
            (" https://my-wms.com/oauth/cb", E::Whitespace),
            ("https://my-wms.com/oauth/cb ", E::Whitespace),
            ("https://my-wms.com/oauth/c b", E::Whitespace),
            ("https://my-wms.com/oauth/caf\u{e9}", E::NonAscii),
            ("https://my-wms.com/oauth/cb\u{202e}", E::NonAscii),
            ("https://my-wms.com/oauth/cb\u{a0}", E::NonAscii),
            ("https://my-wms.com\u{3002}evil.com/oauth/cb", E::NonAscii),
            // Characters no URI may contain, and broken percent-encoding.
            ("https://my-wms.com/oauth/<script>", c()),
            ("https://my-wms.com/oauth/\"onmouseover=x", c()),
            ("https://my-wms.com/oauth/{x}", c()),
            ("https://my-wms.com/oauth/a|b", c()),
            ("https://my-wms.com/oauth/a^b", c()),
            ("https://my-wms.com/oauth/`x`", c()),
            ("https://my-wms.com/oauth/[x]", c()),
            ("https://my-wms.com/oauth/%zz", E::InvalidPercentEncoding),
            ("https://my-wms.com/oauth/%", E::InvalidPercentEncoding),
            ("https://my-wms.com/oauth/%2", E::InvalidPercentEncoding),
            ("https://my-wms.com/oauth/cb?x=%g0", E::InvalidPercentEncoding),
            // Empty input.
            ("", E::Empty),
        ];
        let mut owned: Vec<(String, RedirectUrlError)> = cases
            .into_iter()
            .map(|(input, err)| (input.to_owned(), err))
            .collect();
        // Too long: over 2048 bytes, however valid otherwise.
        owned.push((
            format!("https://my-wms.com/oauth/{}", "a".repeat(2100)),
            E::TooLong,
        ));
        owned.push((
            format!("https://my-wms.com/oauth/cb?x={}", "1".repeat(2030)),
            E::TooLong,
        ));
        owned
    }

    #[test]
    fn hostile_urls_are_refused() {
        let origins = origins();
        let cases = hostile();
        assert!(cases.len() >= 60, "only {} hostile cases", cases.len());
        for (input, expected) in &cases {
            match RedirectUrl::parse(input, &origins) {
                Ok(url) => panic!("accepted hostile {input:?} as {url}"),
                Err(err) => assert!(
                    same_kind(&err, expected),
                    "{input:?}: got {err:?}, expected {expected:?}"
                ),
            }
        }
    }

    const VALID: &[(&str, &str)] = &[
        // The seed documentation's valid examples.
        (
            "https://my-wms.com/oauth/callback",
            "https://my-wms.com/oauth/callback",
        ),
        (
            "https://my-wms.com/oauth/done?ref=123",
            "https://my-wms.com/oauth/done?ref=123",
        ),
        // The origin's path itself, with or without a trailing slash.
        ("https://my-wms.com/oauth", "https://my-wms.com/oauth"),
        ("https://my-wms.com/oauth/", "https://my-wms.com/oauth/"),
        // Case of scheme and host, and default ports, are normalized.
        ("HTTPS://MY-WMS.COM/oauth/cb", "https://my-wms.com/oauth/cb"),
        ("https://my-wms.com:443/oauth/cb", "https://my-wms.com/oauth/cb"),
        ("hTTpS://My-Wms.Com:0443/oauth/cb", "https://my-wms.com/oauth/cb"),
        // Percent-encoding is normalized.
        ("https://my-wms.com/%6Fauth/cb", "https://my-wms.com/oauth/cb"),
        (
            "https://my-wms.com/oauth/a%2db%7e",
            "https://my-wms.com/oauth/a-b~",
        ),
        (
            "https://my-wms.com/oauth/caf%c3%a9",
            "https://my-wms.com/oauth/caf%C3%A9",
        ),
        (
            "https://my-wms.com/oauth/a%20b%25",
            "https://my-wms.com/oauth/a%20b%25",
        ),
        // Dots inside names are fine.
        (
            "https://my-wms.com/oauth/v1.2/cb.html",
            "https://my-wms.com/oauth/v1.2/cb.html",
        ),
        (
            "https://my-wms.com/oauth/...x/.well-known",
            "https://my-wms.com/oauth/...x/.well-known",
        ),
        // Queries are kept as given, whatever they contain.
        (
            "https://my-wms.com/oauth/cb?state=a%2Fb&x=%2e%2e",
            "https://my-wms.com/oauth/cb?state=a%2Fb&x=%2e%2e",
        ),
        (
            "https://my-wms.com/oauth/cb?next=https://x.com/",
            "https://my-wms.com/oauth/cb?next=https://x.com/",
        ),
        (
            "https://my-wms.com/oauth/cb?ids[]=1&ids[]=2",
            "https://my-wms.com/oauth/cb?ids[]=1&ids[]=2",
        ),
        ("https://my-wms.com/oauth/cb?", "https://my-wms.com/oauth/cb?"),
        (
            "https://shop.example.org/cb?q=it's",
            "https://shop.example.org/cb?q=it%27s",
        ),
        // Loopback over http, on the configured port only.
        ("http://localhost:3000/cb", "http://localhost:3000/cb"),
        (
            "http://LOCALHOST:3000/cb?code=x",
            "http://localhost:3000/cb?code=x",
        ),
        ("http://localhost:3000", "http://localhost:3000/"),
        ("http://[::1]:4000/app/cb", "http://[::1]:4000/app/cb"),
        ("http://[::1]:4000/app", "http://[::1]:4000/app"),
        // An origin without a path accepts any path.
        ("https://shop.example.org", "https://shop.example.org/"),
        (
            "https://shop.example.org?a=1&b=2",
            "https://shop.example.org/?a=1&b=2",
        ),
        (
            "https://shop.example.org/any/path;v=1/x:y@z/~u",
            "https://shop.example.org/any/path;v=1/x:y@z/~u",
        ),
        ("https://shop.example.org/a/b/", "https://shop.example.org/a/b/"),
    ];

    #[test]
    fn valid_urls_are_accepted() {
        let origins = origins();
        assert!(VALID.len() >= 15);
        for (input, expected) in VALID {
            let url = RedirectUrl::parse(input, &origins).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(url.as_str(), *expected, "{input:?}");
            assert_eq!(url.to_string(), *expected);
            assert_eq!(
                RedirectUrl::parse(url.as_str(), &origins),
                Ok(url.clone()),
                "{input:?} reparsed"
            );
        }
    }

    #[test]
    fn origins_parse_and_normalize() {
        let cases = [
            ("https://my-wms.com/oauth", "https://my-wms.com/oauth"),
            ("https://my-wms.com/oauth/", "https://my-wms.com/oauth"),
            ("HTTPS://My-WMS.com:443/", "https://my-wms.com"),
            ("https://my-wms.com", "https://my-wms.com"),
            ("https://my-wms.com:8443/a/b", "https://my-wms.com:8443/a/b"),
            ("https://my-wms.com/%6fauth", "https://my-wms.com/oauth"),
            ("http://localhost:3000", "http://localhost:3000"),
            ("http://127.0.0.1:8080/cb/", "http://127.0.0.1:8080/cb"),
            ("http://[::1]:4000/app", "http://[::1]:4000/app"),
            ("https://XN--BCHER-KVA.example", "https://xn--bcher-kva.example"),
        ];
        for (input, expected) in cases {
            let origin = RedirectOrigin::parse(input).unwrap_or_else(|e| panic!("{input:?}: {e}"));
            assert_eq!(origin.as_str(), expected);
            assert_eq!(origin.to_string(), expected);
            assert_eq!(RedirectOrigin::parse(origin.as_str()), Ok(origin));
        }
        let refused = [
            ("http://my-wms.com/oauth", E::NotHttps),
            ("https://my-wms.com/oauth?x=1", E::OriginHasQuery),
            ("https://my-wms.com/oauth?", E::OriginHasQuery),
            ("https://my-wms.com/oauth#x", E::Fragment),
            ("https://user@my-wms.com/oauth", E::Userinfo),
            ("https://my-wms.com/oauth/..", E::DotSegment),
            ("https://my-wms.com/oauth//", E::EmptySegment),
            ("https://b\u{fc}cher.example", E::NonAscii),
            ("my-wms.com/oauth", E::NotAbsolute),
            ("", E::Empty),
        ];
        for (input, expected) in refused {
            assert_eq!(RedirectOrigin::parse(input), Err(expected), "{input:?}");
        }
    }

    #[test]
    fn trailing_slash_origin_keeps_segment_boundary() {
        let origins = [RedirectOrigin::parse("https://my-wms.com/oauth/").unwrap()];
        assert!(RedirectUrl::parse("https://my-wms.com/oauth", &origins).is_ok());
        assert!(RedirectUrl::parse("https://my-wms.com/oauth/cb", &origins).is_ok());
        assert_eq!(
            RedirectUrl::parse("https://my-wms.com/oauthx", &origins),
            Err(E::NotUnderOrigin)
        );
    }

    #[test]
    fn any_of_several_origins_matches() {
        let origins = origins();
        assert!(RedirectUrl::parse("https://shop.example.org/x", &origins).is_ok());
        assert!(RedirectUrl::parse("https://my-wms.com/oauth/x", &origins).is_ok());
        assert_eq!(
            RedirectUrl::parse("https://my-wms.com/oauth/x", &[]),
            Err(E::NoOrigins)
        );
    }

    #[test]
    fn punycode_hosts_compare_case_insensitively() {
        let origins = [RedirectOrigin::parse("https://xn--bcher-kva.example/cb").unwrap()];
        let url = RedirectUrl::parse("https://XN--BCHER-KVA.example/cb/done", &origins).unwrap();
        assert_eq!(url.as_str(), "https://xn--bcher-kva.example/cb/done");
        assert_eq!(
            RedirectUrl::parse("https://b\u{fc}cher.example/cb", &origins),
            Err(E::NonAscii)
        );
    }

    #[test]
    fn with_query_appends_and_keeps_existing() {
        let origins = seed_origin();
        let url = RedirectUrl::parse("https://my-wms.com/oauth/done?ref=123", &origins).unwrap();
        assert_eq!(
            url.with_query(&[("status", "ok"), ("note", "a b&c=d/é")]),
            "https://my-wms.com/oauth/done?ref=123&status=ok&note=a+b%26c%3Dd%2F%C3%A9"
        );
        assert_eq!(url.with_query(&[]), "https://my-wms.com/oauth/done?ref=123");
        let bare = RedirectUrl::parse("https://my-wms.com/oauth/done", &origins).unwrap();
        assert_eq!(
            bare.with_query(&[("code", "x")]),
            "https://my-wms.com/oauth/done?code=x"
        );
        assert_eq!(bare.with_query(&[]), "https://my-wms.com/oauth/done");
        // The original is untouched.
        assert_eq!(bare.as_str(), "https://my-wms.com/oauth/done");
    }

    #[test]
    fn errors_have_messages() {
        assert_eq!(E::TooLong.to_string(), "the URL is longer than 2048 bytes");
        assert_eq!(
            E::InvalidCharacter('<').to_string(),
            "the URL contains the character '<', which is not allowed there"
        );
    }

    /// A path segment that is a plain name: safe characters, never `.` or `..`.
    fn safe_segment() -> impl Strategy<Value = String> {
        "[A-Za-z0-9._~!$&'()*+,;=:@-]{1,10}".prop_filter("not a dot segment", |s| {
            let name = s.split(';').next().unwrap_or(s);
            name != "." && name != ".."
        })
    }

    fn safe_segments() -> impl Strategy<Value = Vec<String>> {
        prop::collection::vec(safe_segment(), 0..6)
    }

    /// URL-shaped strings: mostly plausible pieces with some hostile ones glued together, so
    /// that acceptances and refusals are both common.
    fn url_like() -> impl Strategy<Value = String> {
        let scheme = prop_oneof![
            6 => prop::sample::select(vec!["https", "http", "HTTPS"]),
            1 => prop::sample::select(vec!["ftp", "", "https:", "javascript"]),
        ];
        let host = prop_oneof![
            6 => prop::sample::select(vec![
                "my-wms.com",
                "MY-WMS.COM",
                "my-wms.com:443",
                "localhost:3000",
                "[::1]:4000",
                "shop.example.org",
            ]),
            1 => prop::sample::select(vec![
                "my-wms.com:8443",
                "localhost:3001",
                "evil.com",
                "user@my-wms.com",
                "my-wms.com.evil.com",
                "127.1:3000",
                "my-wms.com%2e",
                "",
            ]),
        ];
        let segment = prop_oneof![
            8 => prop::sample::select(vec![
                "oauth", "app", "cb", "a", "%41", "x%20y", "~", "oauthx", "OAUTH", "%c3%a9", "%6fauth",
                "v1.2", "a;b=c", "%25",
            ]),
            1 => prop::sample::select(vec![
                ".", "..", "%2e", "%2E%2e", "%2f", "%5c", "%252e", "..;", "", "%zz", "\\", "#f", "a b", "é",
            ]),
        ];
        let query = prop::sample::select(vec!["", "", "?", "?ref=123", "?a=%2e%2e&b='", "?x=#y"]);
        (scheme, host, prop::collection::vec(segment, 0..5), query).prop_map(|(s, h, segs, q)| {
            let path: String = segs.iter().fold(String::new(), |acc, seg| acc + "/" + seg);
            format!("{s}://{h}{path}{q}")
        })
    }

    proptest! {
        /// (1) Safe segments appended under an origin are accepted, and stay under it.
        #[test]
        fn safe_paths_under_an_origin_are_accepted(
            origin in prop::sample::select(ORIGINS.to_vec()),
            segments in safe_segments(),
            trailing_slash in any::<bool>(),
            query in proptest::option::of("[A-Za-z0-9=&%._~-]{0,12}".prop_filter("valid escapes", |q| {
                check_characters(&format!("x{q}")).is_ok()
            })),
        ) {
            let origins = origins();
            let mut input = origin.to_owned();
            for segment in &segments {
                input.push('/');
                input.push_str(segment);
            }
            if trailing_slash {
                input.push('/');
            }
            if let Some(query) = &query {
                input.push('?');
                input.push_str(query);
            }
            let url = RedirectUrl::parse(&input, &origins);
            prop_assert!(url.is_ok(), "{input:?}: {url:?}");
            let url = url.unwrap();
            prop_assert!(url.as_str().starts_with(origin), "{} not under {origin}", url.as_str());
            if let Some(query) = &query {
                let suffix = format!("?{query}");
                prop_assert!(url.as_str().ends_with(&suffix), "{} lost its query {}", url, suffix);
            }
        }

        /// (2) Parsing never panics, whatever the input.
        #[test]
        fn parse_never_panics(input in any::<String>()) {
            let origins = origins();
            let _ = RedirectUrl::parse(&input, &origins);
            let _ = RedirectOrigin::parse(&input);
        }

        /// (2) Parsing never panics on URL-shaped input either.
        #[test]
        fn parse_never_panics_on_url_like_input(input in url_like(), noise in "[\\x00-\\x7f]{0,4}") {
            let origins = origins();
            let _ = RedirectUrl::parse(&input, &origins);
            let _ = RedirectUrl::parse(&format!("{input}{noise}"), &origins);
            let _ = RedirectOrigin::parse(&input);
        }

    }

    proptest! {
        // About one URL-shaped input in ten is accepted; run enough to see many acceptances.
        #![proptest_config(ProptestConfig::with_cases(2048))]

        /// (3) An accepted URL lies under one of the origins on a segment boundary, and
        /// reparsing it gives the same value.
        #[test]
        fn accepted_urls_are_under_an_origin_and_idempotent(input in url_like()) {
            let origins = origins();
            if let Ok(url) = RedirectUrl::parse(&input, &origins) {
                let parsed = Url::parse(url.as_str()).unwrap();
                let under_one = origins.iter().any(|origin| {
                    let o = Url::parse(origin.as_str()).unwrap();
                    let prefix = o.path().trim_end_matches('/');
                    parsed.scheme() == o.scheme()
                        && parsed.host_str() == o.host_str()
                        && parsed.port_or_known_default() == o.port_or_known_default()
                        && (prefix.is_empty()
                            || parsed.path() == prefix
                            || parsed.path().starts_with(&format!("{prefix}/")))
                });
                prop_assert!(under_one, "{input:?} accepted as {url} outside every origin");
                prop_assert_eq!(RedirectUrl::parse(url.as_str(), &origins), Ok(url));
            }
        }

        /// (4) Inserting a dot segment, an encoded dot segment, a backslash or userinfo into an
        /// accepted URL makes it refused.
        #[test]
        fn hostile_insertions_are_refused(
            origin in prop::sample::select(ORIGINS.to_vec()),
            segments in safe_segments(),
            at in any::<prop::sample::Index>(),
            hostile in prop::sample::select(vec![
                "..", ".", "%2e%2e", "%2E%2E", "%2e", ".%2E", "%2e.", "..;", "%252e%252e", "..%2f",
                "%2e%2e%2f", "\\", "%5c", "%5C", "a\\b", "..\\",
            ]),
            userinfo in prop::sample::select(vec!["user@", "user:pw@", "@", ":@", "my-wms.com@"]),
            backslash_at in any::<prop::sample::Index>(),
        ) {
            let origins = origins();
            let build = |segments: &[String]| {
                segments.iter().fold(origin.to_owned(), |acc, segment| format!("{acc}/{segment}"))
            };
            let accepted = build(&segments);
            prop_assert!(RedirectUrl::parse(&accepted, &origins).is_ok(), "{accepted:?}");

            let mut with_hostile = segments.clone();
            with_hostile.insert(at.index(segments.len() + 1), hostile.to_owned());
            let input = build(&with_hostile);
            prop_assert!(RedirectUrl::parse(&input, &origins).is_err(), "accepted {input:?}");

            let input = accepted.replacen("://", &format!("://{userinfo}"), 1);
            prop_assert_eq!(RedirectUrl::parse(&input, &origins), Err(E::Userinfo), "{:?}", input);

            let mut input = accepted.clone();
            input.insert(backslash_at.index(accepted.len() + 1), '\\');
            prop_assert_eq!(RedirectUrl::parse(&input, &origins), Err(E::Backslash), "{:?}", input);
        }
    }
}
