//! Random tokens, ids and secrets in Amazon's formats, and time formatting.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use rand::distr::{Alphanumeric, SampleString};
use rand::{Rng, RngCore};

/// A token: `prefix` + `IwEBI` + 396 URL-safe random characters (~400 like Amazon's).
/// ThreadRng is a CSPRNG, so tokens are unguessable.
pub fn token(prefix: &str) -> String {
    let mut bytes = [0u8; 297];
    rand::rng().fill_bytes(&mut bytes);
    let mut out = String::with_capacity(prefix.len() + 5 + 396);
    out.push_str(prefix);
    out.push_str("IwEBI");
    out.push_str(&URL_SAFE_NO_PAD.encode(bytes));
    out
}

/// An LWA access token, `Atza|…`.
pub fn access_token() -> String {
    token("Atza|")
}

/// An LWA refresh token, `Atzr|…`.
pub fn refresh_token() -> String {
    token("Atzr|")
}

/// A restricted data token, `Atz.sprdt|…`.
pub fn restricted_data_token() -> String {
    token("Atz.sprdt|")
}

/// An authorization code: 20 letters, like `ANVcCbSvKoGCOWsJBvbH`.
pub fn authorization_code() -> String {
    let mut rng = rand::rng();
    let mut code = String::from("AN");
    for _ in 0..18 {
        let n = rng.random_range(0..52u8);
        code.push(char::from(if n < 26 { b'A' + n } else { b'a' + n - 26 }));
    }
    code
}

/// `n` random lower-case hex digits.
pub fn hex(n: usize) -> String {
    let mut rng = rand::rng();
    (0..n)
        .map(|_| char::from_digit(rng.random_range(0..16u32), 16).unwrap_or('0'))
        .collect()
}

/// A random UUID-shaped string (version 4 layout).
pub fn uuid() -> String {
    let h = hex(32);
    format!(
        "{}-{}-4{}-a{}-{}",
        &h[0..8],
        &h[8..12],
        &h[13..16],
        &h[17..20],
        &h[20..32]
    )
}

/// An LWA client id, `amzn1.application-oa2-client.<32 hex>`.
pub fn client_id() -> String {
    format!("amzn1.application-oa2-client.{}", hex(32))
}

/// An LWA client secret, `amzn1.oa2-cs.v1.<64 hex>`.
pub fn client_secret() -> String {
    format!("amzn1.oa2-cs.v1.{}", hex(64))
}

/// An `error_index` like LWA's (base64-ish, 44 characters).
pub fn error_index() -> String {
    let mut bytes = [0u8; 24];
    rand::rng().fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

/// An Appstore `amazon_state`: 40 random letters and digits (opaque, like Amazon's).
pub fn amazon_state() -> String {
    Alphanumeric.sample_string(&mut rand::rng(), 40)
}

/// `n` random upper-case letters and digits.
pub fn upper_alnum(n: usize) -> String {
    Alphanumeric
        .sample_string(&mut rand::rng(), n)
        .to_ascii_uppercase()
}

/// A number in `0..bound`.
pub fn below(bound: u64) -> u64 {
    rand::rng().random_range(0..bound.max(1))
}

/// A probability roll: true with probability `share` (clamped to 0..=1).
pub fn roll(share: f64) -> bool {
    if share.is_nan() || share <= 0.0 {
        return false;
    }
    rand::rng().random::<f64>() < share
}

/// ISO 8601 UTC with milliseconds, e.g. `2024-01-20T00:00:00.000Z`.
pub fn iso8601_ms(ms: i64) -> String {
    let (date, secs, millis) = split(ms);
    format!(
        "{date}T{:02}:{:02}:{:02}.{millis:03}Z",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// ISO 8601 UTC without a zone, seconds precision, e.g. `2024-01-20T00:00:00` (AMC style).
pub fn iso8601_local(ms: i64) -> String {
    let (date, secs, _) = split(ms);
    format!("{date}T{:02}:{:02}:{:02}", secs / 3600, secs / 60 % 60, secs % 60)
}

/// Splits ms since the epoch into a `YYYY-MM-DD` date, seconds of the day and milliseconds.
fn split(ms: i64) -> (String, i64, i64) {
    let days = ms.div_euclid(86_400_000);
    let rem = ms.rem_euclid(86_400_000);
    let (y, m, d) = civil_from_days(days);
    (format!("{y:04}-{m:02}-{d:02}"), rem / 1000, rem % 1000)
}

/// Howard Hinnant's civil-from-days algorithm.
fn civil_from_days(z: i64) -> (i64, i64, i64) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_dates() {
        assert_eq!(iso8601_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(iso8601_ms(1_705_708_800_123), "2024-01-20T00:00:00.123Z");
        assert_eq!(iso8601_local(951_782_400_000), "2000-02-29T00:00:00");
    }

    #[test]
    fn tokens_look_like_amazons() {
        let t = access_token();
        assert!(t.starts_with("Atza|IwEBI"));
        assert!(t.len() > 400);
        assert!(
            t[5..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_ne!(t, access_token());
        assert_eq!(uuid().len(), 36);
    }
}
