//! Master keys: parsing, fingerprints, and loading from the environment or the key file.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use lwa_seal::{KeyError, KeyOrigin, MasterKey, MasterKeys};

use crate::support::{TestDir, mode, set_mode};

/// 32 bytes whose base64 uses `+` and `/` (or `-` and `_`), so both alphabets are exercised.
const AWKWARD_BYTES: [u8; 32] = [0xfb; 32];

#[test]
fn base64_round_trip_keeps_the_key() {
    let key = MasterKey::generate();
    let again = MasterKey::from_base64(&key.to_base64()).unwrap();
    assert_eq!(key.fingerprint(), again.fingerprint());
}

#[test]
fn standard_and_url_safe_base64_padded_or_not_are_the_same_key() {
    let forms = [
        STANDARD.encode(AWKWARD_BYTES),
        STANDARD_NO_PAD.encode(AWKWARD_BYTES),
        URL_SAFE.encode(AWKWARD_BYTES),
        URL_SAFE_NO_PAD.encode(AWKWARD_BYTES),
        format!("  {}\n", STANDARD.encode(AWKWARD_BYTES)),
    ];
    assert!(forms[0].contains('+') && forms[2].contains('-'));
    let fingerprints: Vec<_> = forms
        .iter()
        .map(|form| MasterKey::from_base64(form).unwrap().fingerprint())
        .collect();
    assert!(fingerprints.iter().all(|fp| *fp == fingerprints[0]));
}

#[test]
fn anything_but_32_bytes_is_refused_with_the_length() {
    for len in [0usize, 1, 16, 31, 33, 64] {
        let text = STANDARD.encode(vec![7u8; len]);
        let error = MasterKey::from_base64(&text).unwrap_err();
        assert!(
            matches!(error, KeyError::WrongLength { got, .. } if got == len),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            format!("the master key must be 32 bytes of base64, got {len} bytes")
        );
    }
}

#[test]
fn text_that_is_not_base64_is_refused_without_echoing_it() {
    let text = "this-is*not%base64-at-all-but-a-leaked-secret";
    let error = MasterKey::from_base64(text).unwrap_err();
    assert!(matches!(error, KeyError::NotBase64 { .. }));
    assert!(!error.to_string().contains("leaked"));
    assert!(!format!("{error:?}").contains("leaked"));
}

#[test]
fn fingerprint_is_derived_by_hkdf_not_taken_from_the_key() {
    // Known answers, computed independently with Python's hmac/hashlib (HKDF-SHA256, no salt,
    // info "lwa-broker key fingerprint v1"): persisted values name keys by this, so it must
    // never change.
    let zero = MasterKey::from_base64(&STANDARD.encode([0u8; 32])).unwrap();
    assert_eq!(zero.fingerprint().to_string(), "53e39a695a97e124");
    let counting: Vec<u8> = (0..32).collect();
    let counting = MasterKey::from_base64(&STANDARD.encode(&counting)).unwrap();
    assert_eq!(counting.fingerprint().to_string(), "74281c43e7255497");
    assert!(!counting.fingerprint().to_string().starts_with("00010203"));
}

#[test]
fn debug_shows_only_the_fingerprint() {
    let key = MasterKey::from_base64(&STANDARD.encode(AWKWARD_BYTES)).unwrap();
    let debug = format!("{key:?}");
    assert!(debug.contains(&key.fingerprint().to_string()), "{debug}");
    assert!(!debug.contains(key.to_base64().as_str()));
    assert!(!debug.contains("251")); // 0xfb as a decimal byte
    assert!(!debug.to_lowercase().contains("fbfb"));
}

#[test]
fn key_file_is_created_0600_on_first_use_and_reused_after() {
    let dir = TestDir::new();
    let key_file = dir.join("state/keys/master.key");

    let first = MasterKey::load(None, &key_file).unwrap();
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(mode(&dir.join("state/keys")), 0o700);
    let content = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(content, format!("{}\n", first.to_base64().as_str()));

    let second = MasterKey::load(None, &key_file).unwrap();
    let blank_env = MasterKey::load(Some("  "), &key_file).unwrap();
    assert_eq!(first.fingerprint(), second.fingerprint());
    assert_eq!(first.fingerprint(), blank_env.fingerprint());
    assert_eq!(dir.entries(), ["state"], "no temp file left behind");
    assert_eq!(std::fs::read_dir(dir.join("state/keys")).unwrap().count(), 1);
}

#[test]
fn environment_key_wins_and_no_key_file_is_created() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    let env_key = MasterKey::generate();
    let loaded = MasterKey::load(Some(&env_key.to_base64()), &key_file).unwrap();
    assert_eq!(loaded.fingerprint(), env_key.fingerprint());
    assert!(!key_file.exists());

    // Also over an existing key file.
    let file_key = MasterKey::load(None, &key_file).unwrap();
    let loaded = MasterKey::load(Some(&env_key.to_base64()), &key_file).unwrap();
    assert_eq!(loaded.fingerprint(), env_key.fingerprint());
    assert_ne!(loaded.fingerprint(), file_key.fingerprint());
}

#[test]
fn bad_environment_key_is_a_clear_error_naming_the_variable() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");

    let short = STANDARD.encode(b"sixteen byte key");
    let error = MasterKey::load(Some(&short), &key_file).unwrap_err();
    assert_eq!(
        error.to_string(),
        "LWA_BROKER_MASTER_KEY must be 32 bytes of base64, got 16 bytes"
    );
    assert!(matches!(
        error,
        KeyError::WrongLength {
            origin: KeyOrigin::Environment,
            got: 16
        }
    ));

    let error = MasterKey::load(Some("hunter2!hunter2!"), &key_file).unwrap_err();
    assert_eq!(
        error.to_string(),
        "LWA_BROKER_MASTER_KEY must be 32 bytes of base64, but it is not valid base64"
    );
    assert!(!format!("{error} {error:?}").contains("hunter2"));
    assert!(!key_file.exists(), "a bad env key must not fall back to the file");
}

#[test]
fn bad_key_file_content_names_the_file() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    std::fs::write(&key_file, "c2hvcnQ=\n").unwrap();
    set_mode(&key_file, 0o600);
    let error = MasterKey::load(None, &key_file).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "key file {} must be 32 bytes of base64, got 5 bytes",
            key_file.display()
        )
    );
}

#[test]
fn key_file_readable_by_others_is_refused_not_tightened() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    let key = MasterKey::load(None, &key_file).unwrap();

    for loose in [0o644, 0o640, 0o604, 0o660, 0o601] {
        set_mode(&key_file, loose);
        let error = MasterKey::load(None, &key_file).unwrap_err();
        assert!(
            matches!(error, KeyError::InsecureKeyFile { mode, .. } if mode == loose),
            "{error:?}"
        );
        let message = error.to_string();
        assert!(message.contains("chmod 600"), "{message}");
        assert!(!message.contains(key.to_base64().as_str()));
        assert_eq!(mode(&key_file), loose, "the key file is left for the operator");
    }

    set_mode(&key_file, 0o400);
    assert_eq!(
        MasterKey::load(None, &key_file).unwrap().fingerprint(),
        key.fingerprint()
    );
}

#[test]
fn concurrent_first_runs_agree_on_one_key() {
    let dir = Arc::new(TestDir::new());
    let key_file = dir.join("master.key");
    let barrier = Arc::new(std::sync::Barrier::new(8));
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let key_file = key_file.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                barrier.wait();
                MasterKey::load(None, &key_file).unwrap().fingerprint()
            })
        })
        .collect();
    let fingerprints: Vec<_> = threads.into_iter().map(|t| t.join().unwrap()).collect();
    let on_disk = MasterKey::load(None, &key_file).unwrap().fingerprint();
    assert!(fingerprints.iter().all(|fp| *fp == on_disk), "{fingerprints:?}");
    assert_eq!(dir.entries(), ["master.key"]);
}

// --- several master keys ---

#[test]
fn several_keys_from_the_variable_newest_first_with_ids() {
    let (new, old) = (MasterKey::generate(), MasterKey::generate());
    let text = format!(
        " 2026-11:{} , 2026-05 {}",
        new.to_base64().as_str(),
        URL_SAFE_NO_PAD.encode([0xfb; 32])
    );
    let keys = MasterKeys::load(Some(&text), None, "unused.key".as_ref()).unwrap();
    let listed: Vec<_> = keys.iter().map(|k| k.id().unwrap().to_owned()).collect();
    assert_eq!(listed, ["2026-11", "2026-05"]);
    assert_eq!(keys.newest().key().fingerprint(), new.fingerprint());
    let keyring = keys.keyring();
    assert_eq!(keyring.newest_fingerprint(), new.fingerprint());
    assert_eq!(keyring.fingerprints().len(), 2);
    assert!(keys.by_fingerprint(old.fingerprint()).is_none());
}

#[test]
fn malformed_entries_name_the_variable_and_the_entry_never_the_key() {
    let good = MasterKey::generate();
    let good = good.to_base64();
    let cases = [
        (
            format!("a:{},b:c2hvcnQ=", good.as_str()),
            "LWA_BROKER_MASTER_KEYS entry 2 must be 32 bytes of base64, got 5 bytes".to_owned(),
        ),
        (
            format!("a/b:{}", good.as_str()),
            "LWA_BROKER_MASTER_KEYS entry 1 must be ID:BASE64 (or a bare key), the id 1 to 32 letters, \
             digits, '.', '_' or '-'"
                .to_owned(),
        ),
        (
            format!("a:{}:{}", good.as_str(), good.as_str()),
            "LWA_BROKER_MASTER_KEYS entry 1 must be ID:BASE64 (or a bare key), the id 1 to 32 letters, \
             digits, '.', '_' or '-'"
                .to_owned(),
        ),
        (
            format!(
                "a:{},a:{}",
                good.as_str(),
                MasterKey::generate().to_base64().as_str()
            ),
            "LWA_BROKER_MASTER_KEYS entry 2 repeats the key id \"a\"; each key needs its own id".to_owned(),
        ),
        (" , ".to_owned(), "LWA_BROKER_MASTER_KEYS holds no key".to_owned()),
    ];
    for (text, expected) in cases {
        let error = MasterKeys::parse_list(&text).unwrap_err();
        assert_eq!(error.to_string(), expected);
        assert!(!format!("{error} {error:?}").contains(good.as_str()));
    }
    // A key pasted where the id belongs is too long to be an id, so it is never echoed.
    let swapped = format!("{}:k1", good.as_str());
    let error = MasterKeys::parse_list(&swapped).unwrap_err();
    assert!(!error.to_string().contains(&good[..20]), "{error}");
    let error = MasterKeys::parse_list(&format!("a:{},b:{}", good.as_str(), good.as_str())).unwrap_err();
    assert!(matches!(error, KeyError::DuplicateKey { .. }), "{error:?}");
}

#[test]
fn both_variables_set_is_refused() {
    let key = MasterKey::generate().to_base64();
    let error = MasterKeys::load(
        Some(&format!("a:{}", key.as_str())),
        Some(&key),
        "unused".as_ref(),
    )
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        "set either LWA_BROKER_MASTER_KEYS (several keys) or LWA_BROKER_MASTER_KEY (one key), not both"
    );
}

#[test]
fn the_single_key_forms_still_work() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    let env_key = MasterKey::generate();
    let keys = MasterKeys::load(None, Some(&env_key.to_base64()), &key_file).unwrap();
    assert_eq!(keys.newest().key().fingerprint(), env_key.fingerprint());
    assert_eq!(keys.newest().id(), None);
    assert!(!key_file.exists());

    // A missing file is created with one key, in the old format MasterKey::load reads.
    let created = MasterKeys::load(Some(""), Some(" "), &key_file).unwrap();
    assert_eq!(mode(&key_file), 0o600);
    let again = MasterKey::load(None, &key_file).unwrap();
    assert_eq!(created.newest().key().fingerprint(), again.fingerprint());
    assert_eq!(created.iter().count(), 1);
}

#[test]
fn a_new_key_goes_first_in_the_key_file_and_the_old_ones_stay() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    let first = MasterKeys::load(None, None, &key_file).unwrap();
    let first = first.newest().key().fingerprint();
    let new = MasterKey::generate();
    MasterKeys::add_to_file(&key_file, "2026-11", &new).unwrap();
    assert_eq!(mode(&key_file), 0o600);
    assert_eq!(dir.entries(), ["master.key"], "no temp file left behind");

    let keys = MasterKeys::load(None, None, &key_file).unwrap();
    let fingerprints: Vec<_> = keys.iter().map(|k| k.key().fingerprint()).collect();
    assert_eq!(fingerprints, [new.fingerprint(), first]);
    assert_eq!(keys.newest().id(), Some("2026-11"));

    let newer = MasterKey::generate();
    MasterKeys::add_to_file(&key_file, "2027-05", &newer).unwrap();
    let keys = MasterKeys::load(None, None, &key_file).unwrap();
    assert_eq!(keys.iter().count(), 3);
    assert_eq!(keys.newest().key().fingerprint(), newer.fingerprint());
    let text = std::fs::read_to_string(&key_file).unwrap();
    assert_eq!(text.matches("# master keys").count(), 1, "{text}");

    let error = MasterKeys::add_to_file(&key_file, "2026-11", &MasterKey::generate()).unwrap_err();
    assert!(matches!(error, KeyError::IdTaken { .. }), "{error:?}");
    assert_eq!(MasterKeys::load(None, None, &key_file).unwrap().iter().count(), 3);
}

#[test]
fn a_key_file_of_several_keys_names_the_bad_line_and_keeps_its_mode_rule() {
    let dir = TestDir::new();
    let key_file = dir.join("master.key");
    let good = MasterKey::generate();
    std::fs::write(
        &key_file,
        format!("# keys\n\nnew {}\nold c2hvcnQ=\n", good.to_base64().as_str()),
    )
    .unwrap();
    set_mode(&key_file, 0o600);
    let error = MasterKeys::load(None, None, &key_file).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "key file {} line 4 must be 32 bytes of base64, got 5 bytes",
            key_file.display()
        )
    );
    set_mode(&key_file, 0o644);
    let error = MasterKeys::load(None, None, &key_file).unwrap_err();
    assert!(matches!(error, KeyError::InsecureKeyFile { .. }), "{error:?}");
}
