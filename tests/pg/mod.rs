//! A throwaway PostgreSQL for end-to-end tests, started with `tests/pg/start.sh`.
//!
//! Each test gets its own cluster in a temporary directory (a second or two to start), so
//! tests can stop and restart it freely. Without PostgreSQL installed the test is skipped
//! with a loud message, unless `OXBRIDGE_REQUIRE_PG=1` (set by `.ci/run`), which fails it.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// One running test cluster; stopped and deleted on drop.
pub struct Postgres {
    dir: PathBuf,
    /// `postgres://oxbridge@127.0.0.1:PORT/postgres`
    pub url: String,
}

fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/pg")
        .join(name)
}

impl Postgres {
    /// Starts a cluster, or returns `None` after saying loudly that the test is skipped
    /// because PostgreSQL is not installed.
    pub fn start(test: &str) -> Option<Postgres> {
        let out = Command::new("bash")
            .arg(script("start.sh"))
            .output()
            .expect("bash runs");
        if out.status.code() == Some(3) {
            let message = format!(
                "\n*** SKIPPED {test}: PostgreSQL is not installed (apt-get install postgresql) ***\n"
            );
            if std::env::var_os("OXBRIDGE_REQUIRE_PG").is_some() {
                panic!("{message}OXBRIDGE_REQUIRE_PG is set, so this is a failure");
            }
            eprintln!("{message}");
            return None;
        }
        assert!(
            out.status.success(),
            "tests/pg/start.sh failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let value = |key: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{key}=")))
                .map(str::to_owned)
                .expect("start.sh prints it")
        };
        Some(Postgres {
            url: value("OXBRIDGE_TEST_PG_URL"),
            dir: PathBuf::from(value("OXBRIDGE_TEST_PG_DIR")),
        })
    }

    /// Stops the server at once, like a crash (`pg_ctl stop -m immediate`).
    pub fn stop(&self) {
        let status = Command::new("bash")
            .arg(script("stop.sh"))
            .arg(&self.dir)
            .status()
            .expect("bash runs");
        assert!(status.success(), "stop.sh failed");
    }

    /// Starts it again with the same data and port.
    pub fn restart(&self) {
        let out = Command::new("bash")
            .arg(script("start.sh"))
            .arg(&self.dir)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "restart failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for Postgres {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(script("stop.sh"))
            .arg(&self.dir)
            .output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
