//! Sealing of connection tokens: the master-key layer (always) around an optional tenant-held
//! secret layer (the seed's `amazonTokenSecret`).
//!
//! **Invariant:** plaintext tokens never reach a database row: every token column holds
//! `master(tenant?(token))`, bound to the connection's stable id and the field name.
//!
//! The tenant layer's key is HKDF-SHA256 of the tenant's secret (32–64 characters of random
//! base64, so no slow password hash is needed), salted with the connection id. The outer layer
//! names only the master key, so `keys rotate` re-seals without knowing the tenant's secret.

use base64::Engine;
use hkdf::Hkdf;
use lwa_seal::{AeadIdentity, Keyring, MasterKey, OpenError, SealedValue};
use sha2::Sha256;
use zeroize::Zeroizing;

/// A tenant-held per-connection secret. Its `Debug` is redacted.
#[derive(Clone)]
pub struct TokenSecret(Zeroizing<String>);

impl std::fmt::Debug for TokenSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenSecret([redacted])")
    }
}

impl TokenSecret {
    /// The seed's rule: 32 to 64 characters.
    pub fn parse(value: &str) -> Option<TokenSecret> {
        let n = value.chars().count();
        ((32..=64).contains(&n)).then(|| TokenSecret(Zeroizing::new(value.to_owned())))
    }

    /// The secret itself (to seal it for the flow in flight, or to embed in a handle).
    pub fn expose(&self) -> &str {
        &self.0
    }

    fn layer_key(&self, connection_id: &str) -> MasterKey {
        let hk = Hkdf::<Sha256>::new(Some(connection_id.as_bytes()), self.0.as_bytes());
        let mut okm = Zeroizing::new([0u8; 32]);
        hk.expand(b"lwa-broker tenant token layer v1", &mut okm[..])
            .expect("32 bytes is a valid HKDF-SHA256 length");
        let text = Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(&okm[..]));
        MasterKey::from_base64(&text).expect("32 bytes make a master key")
    }
}

/// Why a sealed value could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UnsealError {
    /// The master key does not open it (wrong key, tampered, or moved to another row).
    #[error("the master key cannot open this value: {0}")]
    Master(OpenError),
    /// The value has a tenant layer and no secret, or the wrong one, was given.
    #[error("the tenant-held secret is missing or wrong")]
    TenantSecret,
    /// Not UTF-8 after opening (never expected).
    #[error("sealed value is not text")]
    NotText,
}

/// The broker's keyring and the two-layer scheme.
#[derive(Clone, Debug)]
pub struct Sealer {
    keyring: Keyring,
}

impl Sealer {
    /// Wraps a keyring (newest key seals; older ones still open).
    pub fn new(keyring: Keyring) -> Sealer {
        Sealer { keyring }
    }

    /// The keyring.
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// Seals `plaintext` for `owner`/`field`, inside a tenant layer when `secret` is given.
    pub fn seal(&self, owner: &str, field: &str, plaintext: &str, secret: Option<&TokenSecret>) -> String {
        let identity = AeadIdentity::new(owner, field);
        match secret {
            None => self.keyring.seal(plaintext.as_bytes(), &identity).to_string(),
            Some(secret) => {
                let inner = Keyring::new(secret.layer_key(owner)).seal(plaintext.as_bytes(), &identity);
                let inner = format!("tenant.{inner}");
                self.keyring.seal(inner.as_bytes(), &identity).to_string()
            }
        }
    }

    /// Opens what [`Sealer::seal`] made.
    pub fn open(
        &self,
        owner: &str,
        field: &str,
        sealed: &str,
        secret: Option<&TokenSecret>,
    ) -> Result<Zeroizing<String>, UnsealError> {
        let identity = AeadIdentity::new(owner, field);
        let outer = self
            .keyring
            .open_str(sealed, &identity)
            .map_err(UnsealError::Master)?;
        let outer = std::str::from_utf8(&outer).map_err(|_| UnsealError::NotText)?;
        let plain = match outer.strip_prefix("tenant.") {
            None => Zeroizing::new(outer.as_bytes().to_vec()),
            Some(inner) => {
                let secret = secret.ok_or(UnsealError::TenantSecret)?;
                Keyring::new(secret.layer_key(owner))
                    .open_str(inner, &identity)
                    .map_err(|_| UnsealError::TenantSecret)?
            }
        };
        String::from_utf8(plain.to_vec())
            .map(Zeroizing::new)
            .map_err(|_| UnsealError::NotText)
    }

    /// The fingerprint a sealed value names (for the "wrong master key" start-up error).
    pub fn fingerprint_of(sealed: &str) -> Option<String> {
        SealedValue::parse(sealed)
            .ok()
            .map(|v| v.fingerprint().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new(Keyring::new(MasterKey::generate()))
    }

    #[test]
    fn master_only_and_tenant_layers_round_trip() {
        let s = sealer();
        let plain = s.seal("conn_1", "refresh_token", "Atzr|abc", None);
        assert!(!plain.contains("Atzr"));
        assert_eq!(
            &*s.open("conn_1", "refresh_token", &plain, None).unwrap(),
            "Atzr|abc"
        );

        let secret = TokenSecret::parse(&"k".repeat(40)).unwrap();
        let layered = s.seal("conn_1", "refresh_token", "Atzr|abc", Some(&secret));
        assert_eq!(
            &*s.open("conn_1", "refresh_token", &layered, Some(&secret))
                .unwrap(),
            "Atzr|abc"
        );
        assert!(matches!(
            s.open("conn_1", "refresh_token", &layered, None),
            Err(UnsealError::TenantSecret)
        ));
        let wrong = TokenSecret::parse(&"j".repeat(40)).unwrap();
        assert!(matches!(
            s.open("conn_1", "refresh_token", &layered, Some(&wrong)),
            Err(UnsealError::TenantSecret)
        ));
        // Bound to the owner and the field.
        assert!(s.open("conn_2", "refresh_token", &plain, None).is_err());
        assert!(s.open("conn_1", "access_token", &plain, None).is_err());
    }

    #[test]
    fn token_secret_length_rule() {
        assert!(TokenSecret::parse(&"a".repeat(31)).is_none());
        assert!(TokenSecret::parse(&"a".repeat(32)).is_some());
        assert!(TokenSecret::parse(&"a".repeat(64)).is_some());
        assert!(TokenSecret::parse(&"a".repeat(65)).is_none());
        assert_eq!(
            format!("{:?}", TokenSecret::parse(&"a".repeat(40)).unwrap()),
            "TokenSecret([redacted])"
        );
    }
}
