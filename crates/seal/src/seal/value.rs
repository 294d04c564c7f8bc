//! The printable form of a sealed secret.

use std::fmt;
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::key::KeyFingerprint;

/// Version tag every sealed value starts with.
pub(crate) const PREFIX: &str = "lwa1";
pub(crate) const NONCE_LEN: usize = 24;
pub(crate) const TAG_LEN: usize = 16;

/// A sealed secret, printable as `lwa1.<key fingerprint>.<base64url(nonce ‖ ciphertext ‖ tag)>`
/// (unpadded URL-safe base64, a 24-byte XChaCha20 nonce, a 16-byte Poly1305 tag).
///
/// It names the key that sealed it by [`KeyFingerprint`], so values sealed under several keys
/// coexist during a rotation. It holds no plaintext; `Debug` shows only the fingerprint and the
/// length.
///
/// ```
/// use lwa_seal::{AeadIdentity, Keyring, MasterKey, SealedValue};
///
/// let keyring = Keyring::new(MasterKey::generate());
/// let identity = AeadIdentity::new("acme", "refresh_token");
/// let text = keyring.seal(b"Atzr|secret", &identity).to_string();
/// assert!(text.starts_with("lwa1."));
///
/// let parsed = SealedValue::parse(&text).unwrap();
/// assert_eq!(parsed.fingerprint(), keyring.newest_fingerprint());
/// assert_eq!(&keyring.open(&parsed, &identity).unwrap()[..], b"Atzr|secret");
/// ```
#[derive(Clone, PartialEq, Eq)]
pub struct SealedValue {
    fingerprint: KeyFingerprint,
    /// nonce ‖ ciphertext ‖ tag
    payload: Vec<u8>,
}

impl SealedValue {
    /// Parses the text form; anything else is refused with the reason, never echoing the text.
    ///
    /// ```
    /// use lwa_seal::{MalformedValue, SealedValue};
    ///
    /// assert_eq!(SealedValue::parse("Atzr|plain"), Err(MalformedValue::UnknownVersion));
    /// assert_eq!(SealedValue::parse("lwa1.xyz.AAAA"), Err(MalformedValue::BadFingerprint));
    /// ```
    pub fn parse(text: &str) -> Result<SealedValue, MalformedValue> {
        let mut parts = text.split('.');
        if parts.next() != Some(PREFIX) {
            return Err(MalformedValue::UnknownVersion);
        }
        let (Some(fingerprint), Some(payload), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(MalformedValue::WrongShape);
        };
        let fingerprint = fingerprint.parse().map_err(|_| MalformedValue::BadFingerprint)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| MalformedValue::BadBase64)?;
        if payload.len() < NONCE_LEN + TAG_LEN {
            return Err(MalformedValue::TooShort { got: payload.len() });
        }
        Ok(SealedValue { fingerprint, payload })
    }

    /// The fingerprint of the master key that sealed this value.
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey};
    ///
    /// let key = MasterKey::generate();
    /// let sealed = Keyring::new(key.clone()).seal(b"x", &AeadIdentity::new("a", "b"));
    /// assert_eq!(sealed.fingerprint(), key.fingerprint());
    /// ```
    pub fn fingerprint(&self) -> KeyFingerprint {
        self.fingerprint
    }

    pub(crate) fn from_parts(fingerprint: KeyFingerprint, payload: Vec<u8>) -> SealedValue {
        debug_assert!(payload.len() >= NONCE_LEN + TAG_LEN);
        SealedValue { fingerprint, payload }
    }

    /// (nonce, ciphertext, tag)
    pub(crate) fn parts(&self) -> (&[u8], &[u8], &[u8]) {
        let (nonce, rest) = self.payload.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        (nonce, ciphertext, tag)
    }
}

impl fmt::Display for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{PREFIX}.{}.{}",
            self.fingerprint,
            URL_SAFE_NO_PAD.encode(&self.payload)
        )
    }
}

impl fmt::Debug for SealedValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedValue")
            .field("fingerprint", &self.fingerprint)
            .field("plaintext_len", &(self.payload.len() - NONCE_LEN - TAG_LEN))
            .finish()
    }
}

impl FromStr for SealedValue {
    type Err = MalformedValue;

    fn from_str(text: &str) -> Result<SealedValue, MalformedValue> {
        SealedValue::parse(text)
    }
}

/// Why a text is not a [`SealedValue`]. The messages never contain the text itself.
///
/// ```
/// use lwa_seal::SealedValue;
///
/// let error = SealedValue::parse("lwa1.0123456789abcdef").unwrap_err();
/// assert_eq!(
///     error.to_string(),
///     "expected three dot-separated parts, `lwa1.<key fingerprint>.<ciphertext>`"
/// );
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MalformedValue {
    /// It does not start with `lwa1.`: not sealed, or sealed by a newer format.
    #[error("it does not start with `lwa1.` (not a sealed value, or an unknown format version)")]
    UnknownVersion,
    /// It does not have exactly three dot-separated parts.
    #[error("expected three dot-separated parts, `lwa1.<key fingerprint>.<ciphertext>`")]
    WrongShape,
    /// The key fingerprint part is not 16 lowercase hex characters.
    #[error("its key fingerprint is not 16 lowercase hex characters")]
    BadFingerprint,
    /// The ciphertext part is not canonical unpadded URL-safe base64.
    #[error("its ciphertext is not unpadded URL-safe base64")]
    BadBase64,
    /// The ciphertext part is too short to hold a nonce and a tag.
    #[error("its ciphertext is {got} bytes, shorter than the 40 bytes of nonce and tag")]
    TooShort {
        /// Decoded length.
        got: usize,
    },
}
