//! Sealing of secrets: master keys, their fingerprints, the keyring that seals and opens, and
//! the printable sealed value.
//!
//! **Construction:** XChaCha20-Poly1305 with a random 24-byte nonce per seal, under a subkey
//! HKDF-SHA256(master key, info = `"lwa-broker seal v1"`); the associated data is the value's
//! [`AeadIdentity`] (owner and field). A key's [`KeyFingerprint`] is derived with its own HKDF
//! info string, so it names the key without revealing anything about the encryption subkey.

mod key;
mod keyring;
mod master_keys;
mod value;

pub use key::{
    InvalidFingerprint, KeyError, KeyFingerprint, KeyOrigin, MASTER_KEY_ENV, MASTER_KEY_LEN, MasterKey,
};
pub use keyring::{AeadIdentity, Keyring, OpenError};
pub use master_keys::{MASTER_KEYS_ENV, MasterKeys, NamedKey};
pub use value::{MalformedValue, SealedValue};

pub(crate) use key::{create_private_dir, parent_dir};
