//! The sealed file within one process: contents, permissions, tampering, rotation, errors.

use std::sync::Arc;

use lwa_seal::{FileError, Keyring, MasterKey, OpenError, RecordInput, SealedFile};
use serde_json::Value;

use crate::support::{TestDir, mode, set_mode};

const REFRESH: &str = "Atzr|IwEBIA-refresh-token-plaintext";
const CLIENT_SECRET: &str = "amzn1.oa2-cs.v1.client-secret-plaintext";

fn acme() -> RecordInput {
    RecordInput::new()
        .secret("refresh_token", REFRESH)
        .secret("client_secret", CLIENT_SECRET)
        .label("region", "eu")
        .label("client_id", "amzn1.application-oa2-client.123")
}

fn raw_json(file: &SealedFile) -> Value {
    serde_json::from_slice(&std::fs::read(file.path()).unwrap()).unwrap()
}

fn write_raw_json(file: &SealedFile, value: &Value) {
    std::fs::write(file.path(), serde_json::to_vec_pretty(value).unwrap()).unwrap();
}

#[test]
fn put_then_get_gives_back_secrets_and_labels() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    assert!(file.get("acme").unwrap().is_none());

    file.put("acme", acme()).unwrap();
    let record = file.get("acme").unwrap().unwrap();
    assert_eq!(record.secret("refresh_token"), Some(REFRESH));
    assert_eq!(record.secret("client_secret"), Some(CLIENT_SECRET));
    assert_eq!(
        record.secret_fields().collect::<Vec<_>>(),
        ["client_secret", "refresh_token"]
    );
    assert_eq!(record.label("region"), Some("eu"));
    assert_eq!(record.labels().len(), 2);
    assert!(!format!("{record:?}").contains(REFRESH));

    // A second handle (as another process would have) sees the same.
    let again = SealedFile::new(file.path(), file.keyring().clone());
    assert_eq!(
        again.get("acme").unwrap().unwrap().secret("refresh_token"),
        Some(REFRESH)
    );
}

#[test]
fn put_replaces_remove_deletes_names_lists() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    file.put("b", acme()).unwrap();
    file.put("a", acme()).unwrap();
    file.put("a", RecordInput::new().label("region", "fe")).unwrap();
    assert_eq!(file.names().unwrap(), ["a", "b"]);

    let a = file.get("a").unwrap().unwrap();
    assert_eq!(a.secret("refresh_token"), None, "put replaces the whole record");
    assert_eq!(a.label("region"), Some("fe"));

    assert!(file.remove("a").unwrap());
    assert!(!file.remove("a").unwrap());
    assert_eq!(file.names().unwrap(), ["b"]);
}

#[test]
fn file_lock_file_and_directory_are_private() {
    let dir = TestDir::new();
    let path = dir.join("data/tokens.json");
    let file = SealedFile::new(&path, Keyring::new(MasterKey::generate()));
    file.put("acme", acme()).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(&dir.join("data/tokens.json.lock")), 0o600);
    assert_eq!(mode(&dir.join("data")), 0o700);
}

#[test]
fn a_file_with_broader_permissions_is_tightened_to_0600() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    file.put("acme", acme()).unwrap();

    set_mode(file.path(), 0o644);
    assert_eq!(
        file.get("acme").unwrap().unwrap().secret("refresh_token"),
        Some(REFRESH)
    );
    assert_eq!(mode(file.path()), 0o600, "a read tightens it");

    set_mode(file.path(), 0o666);
    file.put("globex", acme()).unwrap();
    assert_eq!(mode(file.path()), 0o600, "a write replaces it with a 0600 file");
}

#[test]
fn no_plaintext_secret_is_ever_in_the_directory() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    file.put("acme", acme()).unwrap();
    file.put("globex", acme()).unwrap();
    file.remove("globex").unwrap();

    for name in dir.entries() {
        let bytes = std::fs::read(dir.join(&name)).unwrap();
        for secret in [REFRESH, CLIENT_SECRET, "Atzr", "client-secret-plaintext"] {
            assert!(
                !bytes
                    .windows(secret.len())
                    .any(|window| window == secret.as_bytes()),
                "{secret:?} found in {name}"
            );
        }
    }
    // Labels, by contrast, are in clear.
    let raw = std::fs::read_to_string(file.path()).unwrap();
    assert!(raw.contains("amzn1.application-oa2-client.123"));
}

#[test]
fn the_file_has_the_documented_format() {
    let dir = TestDir::new();
    let keyring = Keyring::new(MasterKey::generate());
    let file = SealedFile::new(dir.join("tokens.json"), keyring.clone());
    file.put("acme", acme()).unwrap();

    let raw = std::fs::read_to_string(file.path()).unwrap();
    assert!(raw.ends_with("}\n"));
    let json: Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(json["version"], 1);
    let record = &json["records"]["acme"];
    assert_eq!(record["labels"]["region"], "eu");
    let sealed = record["secrets"]["refresh_token"].as_str().unwrap();
    assert!(sealed.starts_with(&format!("lwa1.{}.", keyring.newest_fingerprint())));
    let identity = lwa_seal::AeadIdentity::new("acme", "refresh_token");
    assert_eq!(
        &keyring.open_str(sealed, &identity).unwrap()[..],
        REFRESH.as_bytes()
    );
}

#[test]
fn a_secret_copied_to_another_record_or_field_is_rejected() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    file.put("acme", acme()).unwrap();
    file.put(
        "globex",
        RecordInput::new().secret("refresh_token", "Atzr|globex"),
    )
    .unwrap();

    // acme's refresh token pasted into globex's record.
    let mut json = raw_json(&file);
    let stolen = json["records"]["acme"]["secrets"]["refresh_token"].clone();
    json["records"]["globex"]["secrets"]["refresh_token"] = stolen.clone();
    write_raw_json(&file, &json);
    let error = file.get("globex").unwrap_err();
    assert!(
        matches!(&error, FileError::Open { record, field, source: OpenError::Rejected { .. }, .. }
            if record == "globex" && field == "refresh_token"),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("does not belong to globex/refresh_token or was altered"),
        "{message}"
    );
    assert!(!message.contains(stolen.as_str().unwrap()));
    assert!(!message.contains("Atzr"));

    // acme's refresh token pasted into acme's client_secret field.
    let mut json = raw_json(&file);
    json["records"]["acme"]["secrets"]["client_secret"] = stolen;
    write_raw_json(&file, &json);
    assert!(matches!(
        file.get("acme"),
        Err(FileError::Open {
            source: OpenError::Rejected { .. },
            ..
        })
    ));
}

#[test]
fn reseal_all_moves_every_value_to_the_newest_key() {
    let dir = TestDir::new();
    let path = dir.join("tokens.json");
    let old = MasterKey::generate();
    let new = MasterKey::generate();
    let old_file = SealedFile::new(&path, Keyring::new(old.clone()));
    old_file.put("acme", acme()).unwrap();
    old_file.put("globex", acme()).unwrap();

    let rotated = SealedFile::new(&path, Keyring::new(new.clone()).with_older(old));
    rotated.put("initech", acme()).unwrap(); // already under the new key
    assert_eq!(
        rotated.get("acme").unwrap().unwrap().secret("refresh_token"),
        Some(REFRESH)
    );

    assert_eq!(rotated.reseal_all().unwrap(), 4);
    assert_eq!(rotated.reseal_all().unwrap(), 0);

    let raw = std::fs::read_to_string(&path).unwrap();
    assert_eq!(raw.matches(&format!("lwa1.{}.", new.fingerprint())).count(), 6);

    let new_only = SealedFile::new(&path, Keyring::new(new));
    for name in ["acme", "globex", "initech"] {
        let record = new_only.get(name).unwrap().unwrap();
        assert_eq!(record.secret("refresh_token"), Some(REFRESH));
        assert_eq!(record.secret("client_secret"), Some(CLIENT_SECRET));
    }
}

#[test]
fn reseal_all_writes_nothing_when_a_value_cannot_be_opened() {
    let dir = TestDir::new();
    let path = dir.join("tokens.json");
    let lost = MasterKey::generate();
    SealedFile::new(&path, Keyring::new(lost.clone()))
        .put("acme", acme())
        .unwrap();
    let older = MasterKey::generate();
    SealedFile::new(&path, Keyring::new(older.clone()))
        .put("globex", acme())
        .unwrap();
    let before = std::fs::read(&path).unwrap();

    let file = SealedFile::new(&path, Keyring::new(MasterKey::generate()).with_older(older));
    let error = file.reseal_all().unwrap_err();
    assert!(
        matches!(&error, FileError::Open { record, source: OpenError::UnknownKey { expected, .. }, .. }
            if record == "acme" && *expected == lost.fingerprint()),
        "{error:?}"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before);
}

#[test]
fn a_corrupt_or_newer_file_is_a_clear_error_that_quotes_nothing() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));

    std::fs::write(file.path(), "{\"version\": 1, \"records\": \"Atzr|oops\"}").unwrap();
    let error = file.names().unwrap_err();
    assert!(matches!(error, FileError::Corrupt { .. }), "{error:?}");
    let message = error.to_string();
    assert!(message.contains("invalid JSON"), "{message}");
    assert!(!message.contains("Atzr"), "{message}");
    assert!(
        file.put("acme", acme()).is_err(),
        "a write never clobbers an unreadable file"
    );

    std::fs::write(file.path(), "{\"version\": 2, \"records\": {}}").unwrap();
    let message = file.names().unwrap_err().to_string();
    assert!(message.contains("format version 2 is not supported"), "{message}");
}

#[test]
fn stale_temp_files_are_ignored_by_reads_and_removed_by_writes() {
    let dir = TestDir::new();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(MasterKey::generate()));
    file.put("acme", acme()).unwrap();
    let stale = dir.join(".tokens.json.tmp.99999.00000000deadbeef");
    std::fs::write(&stale, "{\"version\": 1, \"recor").unwrap();
    let unrelated = dir.join(".other.json.tmp.1.2");
    std::fs::write(&unrelated, "keep").unwrap();

    assert_eq!(file.names().unwrap(), ["acme"]);
    assert!(stale.exists());
    file.put("globex", acme()).unwrap();
    assert!(!stale.exists());
    assert!(unrelated.exists());
    assert_eq!(
        dir.entries(),
        [".other.json.tmp.1.2", "tokens.json", "tokens.json.lock"]
    );
}

#[test]
fn threads_writing_at_once_lose_nothing() {
    let dir = TestDir::new();
    let file = Arc::new(SealedFile::new(
        dir.join("tokens.json"),
        Keyring::new(MasterKey::generate()),
    ));
    let threads: Vec<_> = (0..4)
        .map(|thread| {
            let file = file.clone();
            std::thread::spawn(move || {
                for i in 0..10 {
                    let secret = format!("secret-{thread}-{i}");
                    file.put(&format!("t{thread}-{i}"), RecordInput::new().secret("s", &secret))
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }
    assert_eq!(file.names().unwrap().len(), 40);
    assert_eq!(file.get("t3-9").unwrap().unwrap().secret("s"), Some("secret-3-9"));
}

#[test]
fn errors_and_debug_output_carry_no_secret() {
    let dir = TestDir::new();
    let key = MasterKey::generate();
    let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(key.clone()));
    file.put("acme", acme()).unwrap();
    let debug = format!("{file:?} {:?}", acme());
    assert!(
        !debug.contains(REFRESH) && !debug.contains(CLIENT_SECRET),
        "{debug}"
    );
    assert!(!debug.contains(key.to_base64().as_str()));

    let stranger = SealedFile::new(file.path(), Keyring::new(MasterKey::generate()));
    let error = stranger.get("acme").unwrap_err();
    let text = format!("{error} {error:?}");
    assert!(text.contains(&key.fingerprint().to_string()), "{text}");
    assert!(!text.contains(REFRESH) && !text.contains("lwa1."), "{text}");
}
