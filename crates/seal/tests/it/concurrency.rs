//! Two processes writing one file at once: nothing corrupted, nothing lost.

use std::path::Path;
use std::time::{Duration, Instant};

use lwa_seal::{Keyring, MasterKey, RecordInput, SealedFile};

use crate::support::{TestDir, spawn_child};

const CHILD_TEST: &str = "concurrency::child_puts_many_records";
const FILE_ENV: &str = "LWA_SEAL_TEST_WRITER_FILE";
const KEY_ENV: &str = "LWA_SEAL_TEST_WRITER_KEY";
const PREFIX_ENV: &str = "LWA_SEAL_TEST_WRITER_PREFIX";
const GO_ENV: &str = "LWA_SEAL_TEST_WRITER_GO";
const RECORDS_PER_WRITER: usize = 100;

fn secret_of(name: &str) -> String {
    format!("Atzr|secret-of-{name}")
}

/// Runs only in a child spawned by the test below.
#[test]
fn child_puts_many_records() {
    let (Ok(path), Ok(key), Ok(prefix), Ok(go)) = (
        std::env::var(FILE_ENV),
        std::env::var(KEY_ENV),
        std::env::var(PREFIX_ENV),
        std::env::var(GO_ENV),
    ) else {
        return;
    };
    // Start together, so the writes interleave.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !Path::new(&go).exists() {
        assert!(Instant::now() < deadline, "never told to go");
        std::thread::sleep(Duration::from_millis(1));
    }
    let file = SealedFile::new(path, Keyring::new(MasterKey::from_base64(&key).unwrap()));
    for i in 0..RECORDS_PER_WRITER {
        let name = format!("{prefix}-{i:03}");
        let record = RecordInput::new()
            .secret("refresh_token", &secret_of(&name))
            .label("writer", &prefix);
        file.put(&name, record).unwrap();
    }
    println!("wrote {RECORDS_PER_WRITER} records");
}

#[test]
fn two_processes_writing_at_once_lose_nothing() {
    let dir = TestDir::new();
    let key = MasterKey::generate();
    let path = dir.join("tokens.json");
    let go = dir.join("go");
    let (path_text, go_text) = (path.to_str().unwrap(), go.to_str().unwrap());
    let key_text = key.to_base64();

    let children: Vec<_> = ["a", "b"]
        .into_iter()
        .map(|prefix| {
            spawn_child(
                CHILD_TEST,
                &[
                    (FILE_ENV, path_text),
                    (KEY_ENV, key_text.as_str()),
                    (PREFIX_ENV, prefix),
                    (GO_ENV, go_text),
                ],
                dir.path(),
            )
        })
        .collect();
    std::fs::write(&go, "").unwrap();
    for child in children {
        let output = child.wait_with_output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "{:?}\n{stdout}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        assert!(
            stdout.contains("wrote 100 records"),
            "the child test did not run:\n{stdout}"
        );
    }

    let file = SealedFile::new(&path, Keyring::new(key));
    let names = file.names().unwrap();
    assert_eq!(names.len(), 2 * RECORDS_PER_WRITER);
    for name in &names {
        let record = file.get(name).unwrap().unwrap();
        assert_eq!(record.secret("refresh_token"), Some(secret_of(name).as_str()));
        assert_eq!(record.label("writer"), Some(&name[..1]));
    }
}
