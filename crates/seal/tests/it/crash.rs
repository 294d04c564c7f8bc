//! A writer killed at each step of an atomic write leaves the old file or the new one.
//!
//! The parent test re-runs this binary as a child that puts one record with
//! `LWA_BROKER_FAULT_ABORT_AT=<step>`, so the child aborts there; then it checks the file.

use std::os::unix::process::ExitStatusExt;

use lwa_seal::{FAULT_ABORT_ENV, Keyring, MasterKey, RecordInput, SealedFile, WriteStep};

use crate::support::{TestDir, mode, spawn_child};

const CHILD_TEST: &str = "crash::child_puts_one_record";
const FILE_ENV: &str = "LWA_SEAL_TEST_CRASH_FILE";
const KEY_ENV: &str = "LWA_SEAL_TEST_CRASH_KEY";
const NEW_SECRET: &str = "Atzr|the-new-record-secret";
const SIGABRT: i32 = 6;

/// Runs only in a child spawned by the test below.
#[test]
fn child_puts_one_record() {
    let (Ok(path), Ok(key)) = (std::env::var(FILE_ENV), std::env::var(KEY_ENV)) else {
        return;
    };
    let file = SealedFile::new(path, Keyring::new(MasterKey::from_base64(&key).unwrap()));
    // A record big enough that half of it is a truncated JSON document.
    let record = RecordInput::new()
        .secret("refresh_token", NEW_SECRET)
        .label("padding", &"p".repeat(4096));
    file.put("new", record).unwrap();
}

#[test]
fn killed_at_each_write_step_leaves_old_or_new_file() {
    for step in WriteStep::ALL {
        let dir = TestDir::new();
        let key = MasterKey::generate();
        let file = SealedFile::new(dir.join("tokens.json"), Keyring::new(key.clone()));
        for name in ["old-1", "old-2"] {
            let secret = format!("secret-{name}");
            file.put(name, RecordInput::new().secret("refresh_token", &secret))
                .unwrap();
        }

        let path = file.path().to_str().unwrap().to_owned();
        let child = spawn_child(
            CHILD_TEST,
            &[
                (FILE_ENV, path.as_str()),
                (KEY_ENV, key.to_base64().as_str()),
                (FAULT_ABORT_ENV, step.name()),
            ],
            dir.path(),
        );
        let output = child.wait_with_output().unwrap();
        assert_eq!(
            output.status.signal(),
            Some(SIGABRT),
            "step {step}: the child should have aborted, got {:?}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stdout)
        );
        let child_output = [output.stdout, output.stderr].concat();
        assert!(!String::from_utf8_lossy(&child_output).contains(NEW_SECRET));

        // The file opens, and holds exactly the old records or the old ones plus the new one.
        let names = file.names().unwrap_or_else(|e| panic!("step {step}: {e}"));
        let renamed = matches!(step, WriteStep::Rename | WriteStep::FsyncDir | WriteStep::Done);
        if renamed {
            assert_eq!(names, ["new", "old-1", "old-2"], "step {step}");
            let record = file.get("new").unwrap().unwrap();
            assert_eq!(record.secret("refresh_token"), Some(NEW_SECRET));
            assert_eq!(record.label("padding").map(str::len), Some(4096));
        } else {
            assert_eq!(names, ["old-1", "old-2"], "step {step}");
            assert!(file.get("new").unwrap().is_none());
        }
        for name in ["old-1", "old-2"] {
            let record = file.get(name).unwrap().unwrap();
            assert_eq!(
                record.secret("refresh_token"),
                Some(format!("secret-{name}").as_str())
            );
        }
        assert_eq!(mode(file.path()), 0o600);

        // The lock died with the child, the next write succeeds and sweeps its temp file.
        file.put("after", RecordInput::new().secret("refresh_token", "Atzr|after"))
            .unwrap();
        assert_eq!(
            file.get("after").unwrap().unwrap().secret("refresh_token"),
            Some("Atzr|after")
        );
        let leftovers: Vec<String> = dir
            .entries()
            .into_iter()
            .filter(|name| name.contains(".tmp."))
            .collect();
        assert!(leftovers.is_empty(), "step {step}: {leftovers:?}");
    }
}
