//! Sealing and opening with the configured master keys.

use std::fmt;

use chacha20poly1305::{AeadInPlace, Key, KeyInit, Tag, XChaCha20Poly1305, XNonce};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::key::{KeyFingerprint, MasterKey};
use super::value::{MalformedValue, NONCE_LEN, SealedValue, TAG_LEN};

/// HKDF info string of the sealing subkey: the AEAD never uses the master key itself.
const SEAL_INFO: &[u8] = b"lwa-broker seal v1";

/// Version tag that starts every encoded associated data.
const AAD_TAG: &[u8] = b"lwa-broker aad v1\0";

/// What a sealed value belongs to, bound to it as AEAD associated data: a value sealed for one
/// identity does not open under another, so a value copied to another owner or field is refused.
///
/// The owner must be a *stable* id (an account name, a connection id), never a storage row
/// number, so that backups and store migrations keep working. The encoding is unambiguous: a
/// version tag, then owner and field each prefixed by its length (`("ab", "c")` and `("a", "bc")`
/// differ).
///
/// ```
/// use lwa_seal::AeadIdentity;
///
/// let identity = AeadIdentity::new("conn_42", "refresh_token");
/// assert_eq!(identity.to_string(), "conn_42/refresh_token");
/// assert_ne!(AeadIdentity::new("ab", "c"), AeadIdentity::new("a", "bc"));
/// ```
#[derive(Clone, PartialEq, Eq, Hash)]
pub struct AeadIdentity {
    /// `AAD_TAG ‖ len(owner) as u64 BE ‖ owner ‖ len(field) as u64 BE ‖ field`; owner and field
    /// are read back from it, which keeps errors that carry an identity small.
    encoded: Vec<u8>,
    owner_len: usize,
}

const OWNER_START: usize = AAD_TAG.len() + 8;

impl AeadIdentity {
    /// The identity of `owner`'s `field`.
    ///
    /// ```
    /// let identity = lwa_seal::AeadIdentity::new("acme", "client_secret");
    /// assert_eq!(identity.owner(), "acme");
    /// assert_eq!(identity.field(), "client_secret");
    /// ```
    pub fn new(owner: &str, field: &str) -> AeadIdentity {
        let mut encoded = Vec::with_capacity(OWNER_START + owner.len() + 8 + field.len());
        encoded.extend_from_slice(AAD_TAG);
        for part in [owner, field] {
            encoded.extend_from_slice(&(part.len() as u64).to_be_bytes());
            encoded.extend_from_slice(part.as_bytes());
        }
        AeadIdentity {
            encoded,
            owner_len: owner.len(),
        }
    }

    /// The owner: an account name or a connection id.
    ///
    /// ```
    /// assert_eq!(lwa_seal::AeadIdentity::new("acme", "f").owner(), "acme");
    /// ```
    pub fn owner(&self) -> &str {
        self.text(OWNER_START..OWNER_START + self.owner_len)
    }

    /// The field, e.g. `refresh_token`.
    ///
    /// ```
    /// assert_eq!(lwa_seal::AeadIdentity::new("o", "refresh_token").field(), "refresh_token");
    /// ```
    pub fn field(&self) -> &str {
        self.text(OWNER_START + self.owner_len + 8..self.encoded.len())
    }

    fn text(&self, range: std::ops::Range<usize>) -> &str {
        std::str::from_utf8(&self.encoded[range]).expect("owner and field were given as &str")
    }
}

impl fmt::Display for AeadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.owner(), self.field())
    }
}

impl fmt::Debug for AeadIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AeadIdentity")
            .field("owner", &self.owner())
            .field("field", &self.field())
            .finish()
    }
}

/// One configured key: the AEAD under its HKDF subkey, derived once.
#[derive(Clone)]
struct SealingKey {
    fingerprint: KeyFingerprint,
    cipher: XChaCha20Poly1305,
}

impl SealingKey {
    fn derive(master: &MasterKey) -> SealingKey {
        let mut subkey = Zeroizing::new([0u8; 32]);
        Hkdf::<Sha256>::new(None, master.bytes())
            .expand(SEAL_INFO, subkey.as_mut())
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        SealingKey {
            fingerprint: master.fingerprint(),
            // The cipher zeroizes its copy of the subkey on drop.
            cipher: XChaCha20Poly1305::new(Key::from_slice(subkey.as_ref())),
        }
    }
}

/// The configured master keys, newest first: seals with the newest, opens with whichever key
/// a value names. Subkeys are derived once here, so sealing costs one AEAD pass.
///
/// ```
/// use lwa_seal::{AeadIdentity, Keyring, MasterKey};
///
/// let old = MasterKey::generate();
/// let sealed = Keyring::new(old.clone()).seal(b"Atzr|secret", &AeadIdentity::new("acme", "refresh_token"));
///
/// // After a rotation both keys are configured: old values still open, new ones use the new key.
/// let keyring = Keyring::new(MasterKey::generate()).with_older(old);
/// let identity = AeadIdentity::new("acme", "refresh_token");
/// assert!(keyring.needs_reseal(&sealed));
/// let resealed = keyring.reseal(&sealed, &identity).unwrap();
/// assert_eq!(resealed.fingerprint(), keyring.newest_fingerprint());
/// assert_eq!(&keyring.open(&resealed, &identity).unwrap()[..], b"Atzr|secret");
/// ```
#[derive(Clone)]
pub struct Keyring {
    /// Never empty; newest first.
    keys: Vec<SealingKey>,
}

impl Keyring {
    /// A keyring sealing with `newest`.
    ///
    /// ```
    /// let key = lwa_seal::MasterKey::generate();
    /// let keyring = lwa_seal::Keyring::new(key.clone());
    /// assert_eq!(keyring.newest_fingerprint(), key.fingerprint());
    /// ```
    pub fn new(newest: MasterKey) -> Keyring {
        Keyring {
            keys: vec![SealingKey::derive(&newest)],
        }
    }

    /// Adds an older key, still accepted for opening; call it from newer to older. A key
    /// already in the keyring is ignored.
    ///
    /// ```
    /// use lwa_seal::{Keyring, MasterKey};
    ///
    /// let (new, old) = (MasterKey::generate(), MasterKey::generate());
    /// let keyring = Keyring::new(new.clone()).with_older(old.clone()).with_older(old.clone());
    /// assert_eq!(keyring.fingerprints(), vec![new.fingerprint(), old.fingerprint()]);
    /// ```
    pub fn with_older(mut self, key: MasterKey) -> Keyring {
        if !self.keys.iter().any(|k| k.fingerprint == key.fingerprint()) {
            self.keys.push(SealingKey::derive(&key));
        }
        self
    }

    /// The fingerprint of the key new seals use.
    ///
    /// ```
    /// let key = lwa_seal::MasterKey::generate();
    /// assert_eq!(lwa_seal::Keyring::new(key.clone()).newest_fingerprint(), key.fingerprint());
    /// ```
    pub fn newest_fingerprint(&self) -> KeyFingerprint {
        self.newest().fingerprint
    }

    /// The fingerprints of every configured key, newest first.
    ///
    /// ```
    /// let key = lwa_seal::MasterKey::generate();
    /// assert_eq!(lwa_seal::Keyring::new(key.clone()).fingerprints(), vec![key.fingerprint()]);
    /// ```
    pub fn fingerprints(&self) -> Vec<KeyFingerprint> {
        self.keys.iter().map(|key| key.fingerprint).collect()
    }

    /// Seals `plaintext` for `identity` with the newest key and a fresh random 24-byte nonce.
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey};
    ///
    /// let keyring = Keyring::new(MasterKey::generate());
    /// let identity = AeadIdentity::new("acme", "refresh_token");
    /// let a = keyring.seal(b"same", &identity);
    /// let b = keyring.seal(b"same", &identity);
    /// assert_ne!(a, b); // a new nonce every time
    /// ```
    pub fn seal(&self, plaintext: &[u8], identity: &AeadIdentity) -> SealedValue {
        let key = self.newest();
        let mut payload = Vec::with_capacity(NONCE_LEN + plaintext.len() + TAG_LEN);
        payload.resize(NONCE_LEN, 0);
        // ThreadRng is a CSPRNG seeded from the OS; 24 random bytes make nonce reuse negligible.
        rand::rng().fill_bytes(&mut payload);
        payload.extend_from_slice(plaintext);
        let (nonce, buffer) = payload.split_at_mut(NONCE_LEN);
        let tag = key
            .cipher
            .encrypt_in_place_detached(XNonce::from_slice(nonce), &identity.encoded, buffer)
            .expect("XChaCha20-Poly1305 seals any in-memory plaintext");
        payload.extend_from_slice(&tag);
        SealedValue::from_parts(key.fingerprint, payload)
    }

    /// Opens `sealed` for `identity` with the key it names.
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey, OpenError};
    ///
    /// let keyring = Keyring::new(MasterKey::generate());
    /// let sealed = keyring.seal(b"Atzr|secret", &AeadIdentity::new("acme", "refresh_token"));
    ///
    /// let opened = keyring.open(&sealed, &AeadIdentity::new("acme", "refresh_token")).unwrap();
    /// assert_eq!(&opened[..], b"Atzr|secret");
    ///
    /// // Moved to another owner: refused.
    /// let error = keyring.open(&sealed, &AeadIdentity::new("other", "refresh_token")).unwrap_err();
    /// assert!(matches!(error, OpenError::Rejected { .. }));
    /// ```
    pub fn open(
        &self,
        sealed: &SealedValue,
        identity: &AeadIdentity,
    ) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        let fingerprint = sealed.fingerprint();
        let key = self
            .keys
            .iter()
            .find(|key| key.fingerprint == fingerprint)
            .ok_or_else(|| OpenError::UnknownKey {
                expected: fingerprint,
                available: self.fingerprints(),
            })?;
        let (nonce, ciphertext, tag) = sealed.parts();
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        key.cipher
            .decrypt_in_place_detached(
                XNonce::from_slice(nonce),
                &identity.encoded,
                &mut plaintext,
                Tag::from_slice(tag),
            )
            .map_err(|_| OpenError::Rejected {
                fingerprint,
                identity: identity.clone(),
            })?;
        Ok(plaintext)
    }

    /// Parses and opens the text form of a sealed value.
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey, OpenError};
    ///
    /// let keyring = Keyring::new(MasterKey::generate());
    /// let identity = AeadIdentity::new("acme", "refresh_token");
    /// let text = keyring.seal(b"Atzr|secret", &identity).to_string();
    /// assert_eq!(&keyring.open_str(&text, &identity).unwrap()[..], b"Atzr|secret");
    /// assert!(matches!(keyring.open_str("Atzr|plain", &identity), Err(OpenError::Malformed(_))));
    /// ```
    pub fn open_str(&self, sealed: &str, identity: &AeadIdentity) -> Result<Zeroizing<Vec<u8>>, OpenError> {
        self.open(&SealedValue::parse(sealed)?, identity)
    }

    /// Whether `sealed` was sealed with another key than the newest, so a rotation should
    /// re-seal it.
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey};
    ///
    /// let keyring = Keyring::new(MasterKey::generate());
    /// assert!(!keyring.needs_reseal(&keyring.seal(b"x", &AeadIdentity::new("a", "b"))));
    /// ```
    pub fn needs_reseal(&self, sealed: &SealedValue) -> bool {
        sealed.fingerprint() != self.newest_fingerprint()
    }

    /// Opens `sealed` and seals it again with the newest key (with a new nonce).
    ///
    /// ```
    /// use lwa_seal::{AeadIdentity, Keyring, MasterKey};
    ///
    /// let keyring = Keyring::new(MasterKey::generate());
    /// let identity = AeadIdentity::new("a", "b");
    /// let resealed = keyring.reseal(&keyring.seal(b"x", &identity), &identity).unwrap();
    /// assert_eq!(&keyring.open(&resealed, &identity).unwrap()[..], b"x");
    /// ```
    pub fn reseal(&self, sealed: &SealedValue, identity: &AeadIdentity) -> Result<SealedValue, OpenError> {
        let plaintext = self.open(sealed, identity)?;
        Ok(self.seal(&plaintext, identity))
    }

    fn newest(&self) -> &SealingKey {
        &self.keys[0]
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("fingerprints", &self.fingerprints())
            .finish()
    }
}

/// Why a sealed value could not be opened. Messages name keys by fingerprint and values by
/// identity, never by content.
///
/// ```
/// use lwa_seal::{AeadIdentity, Keyring, MasterKey, OpenError};
///
/// let old = MasterKey::generate();
/// let sealed = Keyring::new(old.clone()).seal(b"secret", &AeadIdentity::new("acme", "refresh_token"));
/// let keyring = Keyring::new(MasterKey::generate());
/// match keyring.open(&sealed, &AeadIdentity::new("acme", "refresh_token")) {
///     Err(OpenError::UnknownKey { expected, .. }) => assert_eq!(expected, old.fingerprint()),
///     other => panic!("{other:?}"),
/// }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The value names a key the keyring does not hold.
    #[error(
        "sealed with master key {expected}, which is not configured (configured: {})",
        join(.available)
    )]
    UnknownKey {
        /// The key the value was sealed with.
        expected: KeyFingerprint,
        /// The keys configured, newest first.
        available: Vec<KeyFingerprint>,
    },
    /// Authentication failed: the value was altered, or it belongs to another identity.
    #[error("sealed value does not belong to {identity} or was altered (key {fingerprint})")]
    Rejected {
        /// The key the value names.
        fingerprint: KeyFingerprint,
        /// The identity it was opened for.
        identity: AeadIdentity,
    },
    /// The text is not a sealed value.
    #[error("malformed sealed value: {0}")]
    Malformed(#[from] MalformedValue),
}

fn join(fingerprints: &[KeyFingerprint]) -> String {
    fingerprints
        .iter()
        .map(KeyFingerprint::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identity_encoding_is_tag_then_length_prefixed_parts() {
        let identity = AeadIdentity::new("ab", "c");
        let mut expected = b"lwa-broker aad v1\0".to_vec();
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 2, b'a', b'b']);
        expected.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 1, b'c']);
        assert_eq!(identity.encoded, expected);
    }

    #[test]
    fn owner_and_field_read_back_from_the_encoding() {
        for (owner, field) in [("", ""), ("konto-ü", "refresh_token"), ("a\0b", "")] {
            let identity = AeadIdentity::new(owner, field);
            assert_eq!((identity.owner(), identity.field()), (owner, field));
        }
    }

    #[test]
    fn sealing_subkey_is_not_the_master_key() {
        let master = MasterKey::generate();
        let keyring = Keyring::new(master.clone());
        let plain = XChaCha20Poly1305::new(Key::from_slice(master.bytes()));
        let identity = AeadIdentity::new("o", "f");
        let sealed = keyring.seal(b"secret", &identity);
        let (nonce, ciphertext, tag) = sealed.parts();
        let mut buffer = ciphertext.to_vec();
        let opened_with_master = plain.decrypt_in_place_detached(
            XNonce::from_slice(nonce),
            &identity.encoded,
            &mut buffer,
            Tag::from_slice(tag),
        );
        assert!(opened_with_master.is_err());
    }
}
