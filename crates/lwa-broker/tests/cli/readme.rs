//! The README's quick start, run as written.

use crate::support::scratch_dir;

#[test]
fn readme_quick_start() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    let marker = "every line below is run by a test";
    let after = &readme[readme.find(marker).expect("the quick start marker")..];
    let start = after.find("```sh\n").unwrap() + 6;
    let script = &after[start..start + after[start..].find("```").unwrap()];
    // Its own port, so tests running at once do not collide.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let script = script.replace("127.0.0.1:8900", &format!("127.0.0.1:{port}"));
    let bin_dir = std::path::Path::new(env!("CARGO_BIN_EXE_lwa-broker"))
        .parent()
        .unwrap();
    assert!(
        bin_dir.join("fake-amazon").exists(),
        "build fake-amazon too (the workspace test command does)"
    );
    let dir = scratch_dir("readme");
    let output = std::process::Command::new("bash")
        .arg("-euo")
        .arg("pipefail")
        .arg("-c")
        .arg(&script)
        .current_dir(&dir)
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin_dir.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("HOME", &dir)
        .env_remove("LWA_BROKER_MASTER_KEY")
        .env_remove("LWA_BROKER_MASTER_KEYS")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the quick start failed:\n{stdout}\n{stderr}"
    );
    assert!(stdout.contains("ACCOUNT") && stdout.contains("valid"), "{stdout}");
    assert!(stdout.matches("\"payload\"").count() >= 2, "{stdout}");
    let env = std::fs::read_to_string(dir.join(".env.tokens")).unwrap();
    assert!(env.contains("AMAZON_ACCESS_TOKEN=\"Atza|"));
}
