//! Secrets at rest for lwa-broker: sealing with XChaCha20-Poly1305 under a master key, and a
//! sealed, crash-safe, multi-process-safe file of records.
//!
//! ```
//! use lwa_seal::{AeadIdentity, Keyring, MasterKey};
//!
//! let dir = std::env::temp_dir().join(format!("lwa-seal-doc-crate-{}", std::process::id()));
//! // The caller reads LWA_BROKER_MASTER_KEY; without it a key file is created on first run.
//! let key = MasterKey::load(None, &dir.join("master.key")).unwrap();
//! let keyring = Keyring::new(key);
//!
//! let identity = AeadIdentity::new("conn_42", "refresh_token");
//! let sealed = keyring.seal(b"Atzr|IwEB...", &identity).to_string();
//! assert!(sealed.starts_with(&format!("lwa1.{}.", keyring.newest_fingerprint())));
//! assert_eq!(&keyring.open_str(&sealed, &identity).unwrap()[..], b"Atzr|IwEB...");
//! # std::fs::remove_dir_all(&dir).unwrap();
//! ```
//!
//! **Invariant:** no key byte or plaintext ever appears in a `Debug` or `Display` output, an
//! error message or a panic message of this crate; secrets in memory are zeroized on drop.
//!
//! **Invariant:** a sealed value is bound to a stable identity (owner, field), never to a
//! storage row number, so backups and store migrations keep working while a value moved to
//! another owner or field is refused.
//!
//! **Absent on purpose:** this crate knows nothing of LWA, SQL or the server; it reads no
//! environment variable except the crash-test hook [`FAULT_ABORT_ENV`] (the caller passes
//! [`MASTER_KEY_ENV`]'s value to [`MasterKey::load`]).

pub mod file;
pub mod seal;

pub use file::{FAULT_ABORT_ENV, FileError, OpenedRecord, RecordInput, SealedFile, WriteStep};
pub use seal::{
    AeadIdentity, InvalidFingerprint, KeyError, KeyFingerprint, KeyOrigin, Keyring, MASTER_KEY_ENV,
    MASTER_KEY_LEN, MASTER_KEYS_ENV, MalformedValue, MasterKey, MasterKeys, NamedKey, OpenError, SealedValue,
};
