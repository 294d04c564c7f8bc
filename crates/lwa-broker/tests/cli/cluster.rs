//! A private PostgreSQL cluster for one test: made with `initdb` in a scratch directory, served
//! on a free port of its own, stopped and started by the test, and removed when the test ends
//! (passed or failed). Other tests keep the shared server the support module points at.
//!
//! `initdb` refuses to run as root, so as root every PostgreSQL program runs as the `postgres`
//! user (`runuser -u postgres --`), in a directory that user owns.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A running (or stopped) private cluster. Dropping it stops the server at once and deletes
/// its directory.
pub struct PrivateCluster {
    bin: PathBuf,
    dir: PathBuf,
    port: u16,
    /// Run the programs as `postgres` (the test runs as root).
    as_postgres: bool,
}

impl PrivateCluster {
    /// Makes and starts a cluster; `None`, said so, when this machine cannot (no `initdb`, or
    /// root without a `postgres` user), unless `LWA_BROKER_REQUIRE_POSTGRES=1`, which fails.
    pub fn start(test: &str) -> Option<PrivateCluster> {
        let skip = |why: String| {
            assert!(
                std::env::var("LWA_BROKER_REQUIRE_POSTGRES").as_deref() != Ok("1"),
                "{why} (LWA_BROKER_REQUIRE_POSTGRES=1)"
            );
            println!("skipped: {why} ({test})");
            None
        };
        let Some(bin) = postgres_bin_dir() else {
            return skip("no PostgreSQL programs (initdb) found: set LWA_BROKER_TEST_PG_BINDIR".into());
        };
        let as_postgres = is_root();
        if as_postgres && !user_exists("postgres") {
            return skip("running as root, and there is no postgres user to run initdb as".into());
        }
        let dir = std::env::temp_dir().join(format!(
            "lwa-pgcluster-{test}-{}-{}",
            std::process::id(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .subsec_nanos()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let cluster = PrivateCluster {
            bin,
            dir,
            port: free_port(),
            as_postgres,
        };
        if as_postgres {
            let out = Command::new("chown")
                .args(["-R", "postgres:"])
                .arg(&cluster.dir)
                .output()
                .unwrap();
            assert!(out.status.success(), "chown: {}", text(&out));
        }
        let data = cluster.data_dir();
        let out = cluster.run(
            "initdb",
            &[
                "-D",
                path(&data),
                "-U",
                "postgres",
                "--auth=trust",
                "--encoding=UTF8",
                "--no-sync",
                "--no-instructions",
            ],
        );
        assert!(out.status.success(), "initdb: {}", text(&out));
        cluster.start_server();
        Some(cluster)
    }

    /// The URL of its `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// Starts the server and waits until it accepts connections.
    pub fn start_server(&self) {
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=100",
            self.port,
            self.dir.display()
        );
        let log = self.dir.join("postgres.log");
        let out = self.run(
            "pg_ctl",
            &[
                "-D",
                path(&self.data_dir()),
                "-o",
                &options,
                "-l",
                path(&log),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            text(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server: `fast` ends every session at once (their transactions roll back),
    /// `immediate` is a crash (recovery at the next start).
    pub fn stop_server(&self, mode: &str) {
        let out = self.run(
            "pg_ctl",
            &["-D", path(&self.data_dir()), "-m", mode, "-w", "-t", "60", "stop"],
        );
        assert!(out.status.success(), "pg_ctl stop: {}", text(&out));
    }

    fn run(&self, program: &str, args: &[&str]) -> Output {
        let program = self.bin.join(program);
        let mut command = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(&program);
            c
        } else {
            Command::new(&program)
        };
        command
            .args(args)
            .current_dir(&self.dir)
            .env("LC_ALL", "C")
            .output()
            .unwrap_or_else(|e| panic!("{}: {e}", program.display()))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        if self.data_dir().join("postmaster.pid").exists() {
            let _ = self.run(
                "pg_ctl",
                &["-D", path(&self.data_dir()), "-m", "immediate", "-w", "stop"],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Where `initdb` and `pg_ctl` are: `LWA_BROKER_TEST_PG_BINDIR`, else the newest
/// `/usr/lib/postgresql/*/bin` (Debian), else the `PATH`.
fn postgres_bin_dir() -> Option<PathBuf> {
    if let Some(dir) = std::env::var_os("LWA_BROKER_TEST_PG_BINDIR") {
        return Some(PathBuf::from(dir)).filter(|d| d.join("initdb").exists());
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse().ok()?;
            Some((version, e.path().join("bin")))
        })
        .filter(|(_, bin)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|d| d.join("initdb").exists() && d.join("pg_ctl").exists())
    })
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn user_exists(name: &str) -> bool {
    Command::new("id")
        .arg(name)
        .output()
        .is_ok_and(|o| o.status.success())
}

/// A port nothing listens on now (the cluster binds it a moment later).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn path(p: &Path) -> &str {
    p.to_str().expect("a UTF-8 path")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}
