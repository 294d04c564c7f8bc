//! A sealed, crash-safe, multi-process-safe JSON file of named records.
//!
//! **Format** (`version` 1), pretty-printed JSON with a trailing newline:
//!
//! ```json
//! {
//!   "version": 1,
//!   "records": {
//!     "acme": {
//!       "labels": { "region": "eu" },
//!       "secrets": { "refresh_token": "lwa1.3f9a0c1d2e4b5a69.Xk…" }
//!     }
//!   }
//! }
//! ```
//!
//! Every secret is a [`SealedValue`] bound to the identity (record name, field name); labels
//! are stored in clear. Record names and labels are therefore visible and not authenticated:
//! whoever can write the file can delete a record or change a label, but cannot read a secret,
//! alter one, or move one to another record or field without it being refused.
//!
//! **Invariant:** no plaintext secret is ever written to the file, the lock file or a temp file.
//!
//! **Concurrency:** every mutation is a read-modify-write under an exclusive lock (`flock`,
//! through std's `File::lock`) on `<path>.lock`, a separate file that is never replaced nor
//! removed: `rename` gives the data file a new inode at each write, so a lock held on the data
//! file itself would not exclude the next writer. Reads take the shared lock. Locks are
//! advisory and wait without a time limit; they are released when the process dies.
//!
//! **Atomicity:** the new content is written to a temp file in the same directory (mode 0600),
//! fsynced, renamed over the data file, and the directory is fsynced. A process killed at any
//! step leaves the old file or the new one, never a broken one. Temp files left by a crash
//! (`.<name>.tmp.*`) are never read, and the next writer removes them: it holds the exclusive
//! lock, so no other writer can be using one.
//!
//! **Permissions:** the data file and the lock file are created 0600 and missing parent
//! directories 0700. **Decision:** a data file found with broader permissions is *tightened*
//! to 0600 (and refused only when that fails), unlike the key file, which is refused: this file
//! holds only sealed values, so a loose mode exposed no secret, and stopping the service over
//! it would help no one.

use std::collections::BTreeMap;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, Zeroizing};

use crate::seal::{AeadIdentity, Keyring, OpenError, SealedValue, create_private_dir, parent_dir};

/// The environment variable that makes a write abort the process at one [`WriteStep`], for
/// crash tests: its value is the step's [`name`](WriteStep::name). It is read once per process.
pub const FAULT_ABORT_ENV: &str = "LWA_BROKER_FAULT_ABORT_AT";

const FORMAT_VERSION: u32 = 1;

/// The steps of an atomic write, where [`FAULT_ABORT_ENV`] can abort the process. Each point
/// comes right after its step is done, except `WriteTemp`, which comes after half the bytes.
///
/// ```
/// use lwa_seal::WriteStep;
///
/// assert_eq!(WriteStep::FsyncTemp.name(), "fsync_temp");
/// assert_eq!(WriteStep::ALL.len(), 6);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WriteStep {
    /// The temp file exists, empty.
    CreateTemp,
    /// Half the new content is written to the temp file.
    WriteTemp,
    /// The temp file is complete and fsynced; the data file is still the old one.
    FsyncTemp,
    /// The temp file has been renamed over the data file; the directory is not fsynced yet.
    Rename,
    /// The directory is fsynced.
    FsyncDir,
    /// The write is complete; the lock is still held.
    Done,
}

impl WriteStep {
    /// Every step, in order.
    pub const ALL: [WriteStep; 6] = [
        WriteStep::CreateTemp,
        WriteStep::WriteTemp,
        WriteStep::FsyncTemp,
        WriteStep::Rename,
        WriteStep::FsyncDir,
        WriteStep::Done,
    ];

    /// The step's snake_case name, as [`FAULT_ABORT_ENV`] takes it.
    ///
    /// ```
    /// assert_eq!(lwa_seal::WriteStep::CreateTemp.name(), "create_temp");
    /// ```
    pub fn name(self) -> &'static str {
        match self {
            WriteStep::CreateTemp => "create_temp",
            WriteStep::WriteTemp => "write_temp",
            WriteStep::FsyncTemp => "fsync_temp",
            WriteStep::Rename => "rename",
            WriteStep::FsyncDir => "fsync_dir",
            WriteStep::Done => "done",
        }
    }
}

impl fmt::Display for WriteStep {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Aborts the process if [`FAULT_ABORT_ENV`] names `step`.
fn fault_point(step: WriteStep) {
    static ABORT_AT: OnceLock<Option<WriteStep>> = OnceLock::new();
    let abort_at = ABORT_AT.get_or_init(|| {
        let value = std::env::var(FAULT_ABORT_ENV).ok()?;
        WriteStep::ALL.into_iter().find(|step| step.name() == value)
    });
    if *abort_at == Some(step) {
        std::process::abort();
    }
}

/// A JSON file of named records whose secret fields are sealed with a [`Keyring`].
///
/// ```
/// use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
///
/// let dir = std::env::temp_dir().join(format!("lwa-seal-doc-file-{}", std::process::id()));
/// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
///
/// file.put("acme", RecordInput::new().secret("refresh_token", "Atzr|secret").label("region", "eu"))
///     .unwrap();
/// let record = file.get("acme").unwrap().unwrap();
/// assert_eq!(record.secret("refresh_token"), Some("Atzr|secret"));
/// assert_eq!(record.label("region"), Some("eu"));
///
/// let raw = std::fs::read_to_string(dir.join("tokens.json")).unwrap();
/// assert!(!raw.contains("Atzr|secret"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct SealedFile {
    path: PathBuf,
    lock_path: PathBuf,
    keyring: Keyring,
}

impl SealedFile {
    /// A handle on the file at `path`; nothing is touched until the first call. The file is
    /// created, with its directory, by the first write; until then it reads as empty.
    ///
    /// ```
    /// use lwa_seal::{Keyring, MasterKey, SealedFile};
    ///
    /// let file = SealedFile::new("/nonexistent/tokens.json", Keyring::new(MasterKey::generate()));
    /// assert!(file.names().unwrap().is_empty());
    /// ```
    pub fn new(path: impl Into<PathBuf>, keyring: Keyring) -> SealedFile {
        let path = path.into();
        let mut lock_path = path.clone().into_os_string();
        lock_path.push(".lock");
        SealedFile {
            path,
            lock_path: lock_path.into(),
            keyring,
        }
    }

    /// The data file's path.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, SealedFile};
    /// let file = SealedFile::new("tokens.json", Keyring::new(MasterKey::generate()));
    /// assert_eq!(file.path(), std::path::Path::new("tokens.json"));
    /// ```
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The keyring that seals and opens the secrets.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, SealedFile};
    /// let key = MasterKey::generate();
    /// let file = SealedFile::new("tokens.json", Keyring::new(key.clone()));
    /// assert_eq!(file.keyring().newest_fingerprint(), key.fingerprint());
    /// ```
    pub fn keyring(&self) -> &Keyring {
        &self.keyring
    }

    /// The record `name` with its secrets opened, or `None` if there is none.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, SealedFile};
    /// let file = SealedFile::new("/nonexistent/tokens.json", Keyring::new(MasterKey::generate()));
    /// assert!(file.get("acme").unwrap().is_none());
    /// ```
    pub fn get(&self, name: &str) -> Result<Option<OpenedRecord>, FileError> {
        let Some(record) = self.read_shared()?.records.remove(name) else {
            return Ok(None);
        };
        let mut secrets = BTreeMap::new();
        for (field, sealed) in record.secrets {
            let plaintext = self.open_field(name, &field, &sealed)?;
            secrets.insert(field, plaintext);
        }
        Ok(Some(OpenedRecord {
            secrets,
            labels: record.labels,
        }))
    }

    /// Stores `record` as `name`, replacing any record of that name; its secrets are sealed
    /// with the keyring's newest key before anything is written.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-put-{}", std::process::id()));
    /// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().secret("refresh_token", "Atzr|one")).unwrap();
    /// file.put("acme", RecordInput::new().secret("refresh_token", "Atzr|two")).unwrap();
    /// assert_eq!(file.get("acme").unwrap().unwrap().secret("refresh_token"), Some("Atzr|two"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn put(&self, name: &str, record: RecordInput) -> Result<(), FileError> {
        let stored = StoredRecord {
            labels: record.labels,
            secrets: record
                .secrets
                .iter()
                .map(|(field, plaintext)| {
                    let identity = AeadIdentity::new(name, field);
                    let sealed = self.keyring.seal(plaintext.as_bytes(), &identity);
                    (field.clone(), sealed.to_string())
                })
                .collect(),
        };
        self.modify(|document| {
            document.records.insert(name.to_owned(), stored);
            Ok(true)
        })
        .map(drop)
    }

    /// Removes the record `name`; tells whether there was one.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-remove-{}", std::process::id()));
    /// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().label("region", "eu")).unwrap();
    /// assert!(file.remove("acme").unwrap());
    /// assert!(!file.remove("acme").unwrap());
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn remove(&self, name: &str) -> Result<bool, FileError> {
        self.modify(|document| Ok(document.records.remove(name).is_some()))
    }

    /// The names of all records, sorted.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-names-{}", std::process::id()));
    /// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    /// file.put("b", RecordInput::new()).unwrap();
    /// file.put("a", RecordInput::new()).unwrap();
    /// assert_eq!(file.names().unwrap(), ["a", "b"]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn names(&self) -> Result<Vec<String>, FileError> {
        Ok(self.read_shared()?.records.into_keys().collect())
    }

    /// Re-seals with the newest key every secret sealed with an older one, in one atomic write;
    /// returns how many changed. Nothing is written if any value cannot be opened.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-reseal-{}", std::process::id()));
    /// let old = MasterKey::generate();
    /// SealedFile::new(dir.join("tokens.json"), Keyring::new(old.clone()))
    ///     .put("acme", RecordInput::new().secret("refresh_token", "Atzr|secret"))
    ///     .unwrap();
    ///
    /// let rotated = Keyring::new(MasterKey::generate()).with_older(old);
    /// let file = SealedFile::new(dir.join("tokens.json"), rotated);
    /// assert_eq!(file.reseal_all().unwrap(), 1);
    /// assert_eq!(file.reseal_all().unwrap(), 0);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn reseal_all(&self) -> Result<usize, FileError> {
        let mut changed = 0;
        self.modify(|document| {
            for (name, record) in &mut document.records {
                for (field, text) in &mut record.secrets {
                    let sealed = SealedValue::parse(text).map_err(|error| FileError::Open {
                        path: self.path.clone(),
                        record: name.clone(),
                        field: field.clone(),
                        source: error.into(),
                    })?;
                    if self.keyring.needs_reseal(&sealed) {
                        let identity = AeadIdentity::new(name, field);
                        let resealed =
                            self.keyring
                                .reseal(&sealed, &identity)
                                .map_err(|source| FileError::Open {
                                    path: self.path.clone(),
                                    record: name.clone(),
                                    field: field.clone(),
                                    source,
                                })?;
                        *text = resealed.to_string();
                        changed += 1;
                    }
                }
            }
            Ok(changed > 0)
        })?;
        Ok(changed)
    }

    fn open_field(&self, name: &str, field: &str, sealed: &str) -> Result<Zeroizing<String>, FileError> {
        let open_error = |source| FileError::Open {
            path: self.path.clone(),
            record: name.to_owned(),
            field: field.to_owned(),
            source,
        };
        let mut bytes = self
            .keyring
            .open_str(sealed, &AeadIdentity::new(name, field))
            .map_err(open_error)?;
        match String::from_utf8(std::mem::take(&mut *bytes)) {
            Ok(text) => Ok(Zeroizing::new(text)),
            Err(error) => {
                error.into_bytes().zeroize();
                Err(FileError::NotUtf8 {
                    path: self.path.clone(),
                    record: name.to_owned(),
                    field: field.to_owned(),
                })
            }
        }
    }

    /// Reads the document under the shared lock.
    fn read_shared(&self) -> Result<Document, FileError> {
        let lock = match self.open_lock_file() {
            Ok(lock) => lock,
            // No directory yet: nothing was ever written.
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Document::default());
            }
            Err(error) => return Err(self.io_error("open", &self.lock_path, error)),
        };
        lock.lock_shared()
            .map_err(|error| self.io_error("lock", &self.lock_path, error))?;
        self.read_document()
    }

    /// Runs `change` on the document under the exclusive lock and writes the result if it
    /// says the document changed; returns what it said.
    fn modify(
        &self,
        change: impl FnOnce(&mut Document) -> Result<bool, FileError>,
    ) -> Result<bool, FileError> {
        let dir = parent_dir(&self.path);
        create_private_dir(dir).map_err(|error| self.io_error("create directory", dir, error))?;
        let lock = self
            .open_lock_file()
            .map_err(|error| self.io_error("open", &self.lock_path, error))?;
        lock.lock()
            .map_err(|error| self.io_error("lock", &self.lock_path, error))?;
        let mut document = self.read_document()?;
        let changed = change(&mut document)?;
        if changed {
            self.write_document(&document)?;
        }
        Ok(changed)
    }

    fn open_lock_file(&self) -> io::Result<File> {
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        options.open(&self.lock_path)
    }

    /// Reads the data file; the caller holds a lock. A missing file is an empty document.
    fn read_document(&self) -> Result<Document, FileError> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(error) if error.kind() == io::ErrorKind::NotFound => {
                return Ok(Document::default());
            }
            Err(error) => return Err(self.io_error("open", &self.path, error)),
        };
        self.tighten_permissions(&file)?;
        let mut text = String::new();
        file.read_to_string(&mut text)
            .map_err(|error| self.io_error("read", &self.path, error))?;
        let document: Document = serde_json::from_str(&text).map_err(|error| {
            // Only the class and position: serde_json's own message may quote content.
            let class = match error.classify() {
                serde_json::error::Category::Io => "read",
                serde_json::error::Category::Syntax => "syntax",
                serde_json::error::Category::Data => "structure",
                serde_json::error::Category::Eof => "truncated",
            };
            FileError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "invalid JSON ({class} error at line {}, column {})",
                    error.line(),
                    error.column()
                ),
            }
        })?;
        if document.version != FORMAT_VERSION {
            return Err(FileError::Corrupt {
                path: self.path.clone(),
                reason: format!(
                    "format version {} is not supported (expected {FORMAT_VERSION})",
                    document.version
                ),
            });
        }
        Ok(document)
    }

    #[cfg(unix)]
    fn tighten_permissions(&self, file: &File) -> Result<(), FileError> {
        use std::os::unix::fs::PermissionsExt;
        let metadata = file
            .metadata()
            .map_err(|error| self.io_error("inspect", &self.path, error))?;
        let mode = metadata.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            file.set_permissions(fs::Permissions::from_mode(mode & 0o700))
                .map_err(|source| FileError::InsecurePermissions {
                    path: self.path.clone(),
                    mode,
                    source,
                })?;
        }
        Ok(())
    }

    #[cfg(not(unix))]
    fn tighten_permissions(&self, _file: &File) -> Result<(), FileError> {
        Ok(())
    }

    /// Replaces the data file atomically; the caller holds the exclusive lock.
    fn write_document(&self, document: &Document) -> Result<(), FileError> {
        let mut bytes = serde_json::to_vec_pretty(document).expect("a document of strings serializes");
        bytes.push(b'\n');
        let dir = parent_dir(&self.path);
        self.remove_stale_temp_files(dir);
        let temp = unique_temp_path(&self.path);
        let written = self.write_temp(&temp, &bytes);
        if let Err(error) = written {
            let _ = fs::remove_file(&temp);
            return Err(error);
        }
        if let Err(error) = fs::rename(&temp, &self.path) {
            let _ = fs::remove_file(&temp);
            return Err(self.io_error("replace", &self.path, error));
        }
        fault_point(WriteStep::Rename);
        sync_dir(dir).map_err(|error| self.io_error("fsync directory of", &self.path, error))?;
        fault_point(WriteStep::FsyncDir);
        fault_point(WriteStep::Done);
        Ok(())
    }

    fn write_temp(&self, temp: &Path, bytes: &[u8]) -> Result<(), FileError> {
        let io_error = |error| self.io_error("write temp file for", &self.path, error);
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(temp).map_err(io_error)?;
        fault_point(WriteStep::CreateTemp);
        let (first, second) = bytes.split_at(bytes.len() / 2);
        file.write_all(first).map_err(io_error)?;
        fault_point(WriteStep::WriteTemp);
        file.write_all(second).map_err(io_error)?;
        file.sync_all().map_err(io_error)?;
        fault_point(WriteStep::FsyncTemp);
        Ok(())
    }

    /// Removes temp files that a crashed writer left; best effort, as they are never read.
    fn remove_stale_temp_files(&self, dir: &Path) {
        let prefix = temp_prefix(&self.path);
        let Ok(entries) = fs::read_dir(dir) else {
            return;
        };
        for entry in entries.flatten() {
            if entry
                .file_name()
                .as_encoded_bytes()
                .starts_with(prefix.as_bytes())
            {
                let _ = fs::remove_file(entry.path());
            }
        }
    }

    fn io_error(&self, action: &'static str, path: &Path, source: io::Error) -> FileError {
        FileError::Io {
            action,
            path: path.to_owned(),
            source,
        }
    }
}

impl fmt::Debug for SealedFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SealedFile")
            .field("path", &self.path)
            .field("keyring", &self.keyring)
            .finish()
    }
}

/// `.<file name>.tmp.`: the prefix of the data file's temp files.
fn temp_prefix(path: &Path) -> String {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy())
        .unwrap_or_default();
    format!(".{name}.tmp.")
}

/// A fresh temp file name beside `path`, unique across processes and calls.
pub(crate) fn unique_temp_path(path: &Path) -> PathBuf {
    let name = format!(
        "{}{}.{:016x}",
        temp_prefix(path),
        std::process::id(),
        rand::rng().next_u64()
    );
    parent_dir(path).join(name)
}

/// Makes a rename or link in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[derive(Serialize, Deserialize)]
struct Document {
    version: u32,
    records: BTreeMap<String, StoredRecord>,
}

impl Default for Document {
    fn default() -> Document {
        Document {
            version: FORMAT_VERSION,
            records: BTreeMap::new(),
        }
    }
}

#[derive(Serialize, Deserialize)]
struct StoredRecord {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    /// Field name → sealed value text.
    #[serde(default)]
    secrets: BTreeMap<String, String>,
}

/// A record to store: secret fields, given in plaintext and sealed on write, and labels, stored
/// in clear. `Debug` shows the secret fields' names, never their values.
///
/// ```
/// use lwa_seal::RecordInput;
///
/// let record = RecordInput::new().secret("refresh_token", "Atzr|secret").label("region", "eu");
/// let debug = format!("{record:?}");
/// assert!(debug.contains("refresh_token") && !debug.contains("Atzr|secret"));
/// ```
#[derive(Default)]
pub struct RecordInput {
    secrets: BTreeMap<String, Zeroizing<String>>,
    labels: BTreeMap<String, String>,
}

impl RecordInput {
    /// An empty record.
    ///
    /// ```
    /// let record = lwa_seal::RecordInput::new();
    /// # let _ = record;
    /// ```
    pub fn new() -> RecordInput {
        RecordInput::default()
    }

    /// Adds (or replaces) the secret field `field`; it is sealed with the identity (record
    /// name, `field`). The copy it keeps is zeroized on drop.
    ///
    /// ```
    /// let record = lwa_seal::RecordInput::new().secret("client_secret", "amzn1.oa2-cs.v1.x");
    /// # let _ = record;
    /// ```
    pub fn secret(mut self, field: &str, plaintext: &str) -> RecordInput {
        self.secrets
            .insert(field.to_owned(), Zeroizing::new(plaintext.to_owned()));
        self
    }

    /// Adds (or replaces) the label `name`, stored in clear: never put a secret here.
    ///
    /// ```
    /// let record = lwa_seal::RecordInput::new().label("region", "fe");
    /// # let _ = record;
    /// ```
    pub fn label(mut self, name: &str, value: &str) -> RecordInput {
        self.labels.insert(name.to_owned(), value.to_owned());
        self
    }
}

impl fmt::Debug for RecordInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RecordInput")
            .field("secret_fields", &self.secrets.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .finish()
    }
}

/// A record read back, its secrets opened; they are zeroized on drop. `Debug` shows the secret
/// fields' names, never their values.
///
/// ```
/// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
/// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-opened-{}", std::process::id()));
/// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
/// file.put("acme", RecordInput::new().secret("refresh_token", "Atzr|secret")).unwrap();
/// let record = file.get("acme").unwrap().unwrap();
/// assert_eq!(record.secret_fields().collect::<Vec<_>>(), ["refresh_token"]);
/// assert!(!format!("{record:?}").contains("Atzr|secret"));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
pub struct OpenedRecord {
    secrets: BTreeMap<String, Zeroizing<String>>,
    labels: BTreeMap<String, String>,
}

impl OpenedRecord {
    /// The opened secret field `field`.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-secret-{}", std::process::id()));
    /// # let file = SealedFile::new(dir.join("t.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().secret("refresh_token", "Atzr|secret")).unwrap();
    /// let record = file.get("acme").unwrap().unwrap();
    /// assert_eq!(record.secret("refresh_token"), Some("Atzr|secret"));
    /// assert_eq!(record.secret("access_token"), None);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn secret(&self, field: &str) -> Option<&str> {
        self.secrets.get(field).map(|value| value.as_str())
    }

    /// The names of the secret fields, sorted.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-fields-{}", std::process::id()));
    /// # let file = SealedFile::new(dir.join("t.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().secret("b", "2").secret("a", "1")).unwrap();
    /// let record = file.get("acme").unwrap().unwrap();
    /// assert_eq!(record.secret_fields().collect::<Vec<_>>(), ["a", "b"]);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn secret_fields(&self) -> impl Iterator<Item = &str> {
        self.secrets.keys().map(String::as_str)
    }

    /// The label `name`.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-label-{}", std::process::id()));
    /// # let file = SealedFile::new(dir.join("t.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().label("region", "eu")).unwrap();
    /// assert_eq!(file.get("acme").unwrap().unwrap().label("region"), Some("eu"));
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels.get(name).map(String::as_str)
    }

    /// All labels.
    ///
    /// ```
    /// # use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};
    /// # let dir = std::env::temp_dir().join(format!("lwa-seal-doc-labels-{}", std::process::id()));
    /// # let file = SealedFile::new(dir.join("t.json"), Keyring::new(MasterKey::generate()));
    /// file.put("acme", RecordInput::new().label("region", "eu")).unwrap();
    /// assert_eq!(file.get("acme").unwrap().unwrap().labels().len(), 1);
    /// # std::fs::remove_dir_all(&dir).unwrap();
    /// ```
    pub fn labels(&self) -> &BTreeMap<String, String> {
        &self.labels
    }
}

impl fmt::Debug for OpenedRecord {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OpenedRecord")
            .field("secret_fields", &self.secrets.keys().collect::<Vec<_>>())
            .field("labels", &self.labels)
            .finish()
    }
}

/// Why a [`SealedFile`] operation failed. Messages name files, records and fields, never a
/// secret or a sealed value.
///
/// ```
/// use lwa_seal::{FileError, Keyring, MasterKey, SealedFile};
///
/// let dir = std::env::temp_dir().join(format!("lwa-seal-doc-error-{}", std::process::id()));
/// std::fs::create_dir_all(&dir).unwrap();
/// std::fs::write(dir.join("tokens.json"), "not json").unwrap();
/// let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
/// assert!(matches!(file.names(), Err(FileError::Corrupt { .. })));
/// # std::fs::remove_dir_all(&dir).unwrap();
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FileError {
    /// A file system operation failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        /// What was being done, e.g. `"lock"`.
        action: &'static str,
        /// The file concerned.
        path: PathBuf,
        /// The operating system's error.
        source: io::Error,
    },
    /// The data file is not a sealed file this version can read.
    #[error("{} is not a readable sealed file: {reason}", path.display())]
    Corrupt {
        /// The data file.
        path: PathBuf,
        /// What is wrong, without quoting content.
        reason: String,
    },
    /// The data file is accessible by group or others and could not be tightened to 0600.
    #[error(
        "{} is accessible by group or others (mode {mode:04o}) and could not be restricted to \
         its owner: {source}",
        path.display()
    )]
    InsecurePermissions {
        /// The data file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
        /// Why `chmod` failed.
        source: io::Error,
    },
    /// A secret could not be opened.
    #[error("cannot open {record}/{field} in {}: {source}", path.display())]
    Open {
        /// The data file.
        path: PathBuf,
        /// The record name.
        record: String,
        /// The secret field.
        field: String,
        /// Why.
        source: OpenError,
    },
    /// A secret opened but is not UTF-8 text (it was not stored through [`SealedFile::put`]).
    #[error("secret {record}/{field} in {} is not UTF-8 text", path.display())]
    NotUtf8 {
        /// The data file.
        path: PathBuf,
        /// The record name.
        record: String,
        /// The secret field.
        field: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_names_are_distinct_snake_case_in_order() {
        let names: Vec<&str> = WriteStep::ALL.iter().map(|step| step.name()).collect();
        assert_eq!(
            names,
            [
                "create_temp",
                "write_temp",
                "fsync_temp",
                "rename",
                "fsync_dir",
                "done"
            ]
        );
    }

    #[test]
    fn temp_files_sit_beside_the_data_file_with_its_prefix() {
        let temp = unique_temp_path(Path::new("/data/tokens.json"));
        assert_eq!(temp.parent(), Some(Path::new("/data")));
        let name = temp.file_name().unwrap().to_str().unwrap();
        assert!(name.starts_with(".tokens.json.tmp."), "{name}");
        assert_ne!(temp, unique_temp_path(Path::new("/data/tokens.json")));
        assert_eq!(
            unique_temp_path(Path::new("tokens.json")).parent(),
            Some(Path::new("."))
        );
    }

    #[test]
    fn lock_file_is_beside_the_data_file() {
        let file = SealedFile::new("/data/tokens.json", Keyring::new(crate::MasterKey::generate()));
        assert_eq!(file.lock_path, Path::new("/data/tokens.json.lock"));
    }
}
