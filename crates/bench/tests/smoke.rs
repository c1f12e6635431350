//! The benchmark's ten-second smoke (`--quick`), as CI runs it: every measurement goes end to
//! end against the real oxbridge binary and the fake, and the figures that are pass or fail
//! rather than a speed hold even in a debug build on a busy machine: one token request for a
//! burst of cold logins, and no connection lost in a burst of connects.

#![allow(clippy::unwrap_used)] // test scenario: a panic is the failure report

use std::path::Path;
use std::process::Command;

#[test]
fn a_quick_run_measures_everything_and_holds_the_hard_targets() {
    let bench = Path::new(env!("CARGO_BIN_EXE_oxbridge-bench"));
    let oxbridge = bench.with_file_name("oxbridge");
    assert!(
        oxbridge.exists(),
        "{} is missing: build it first (`cargo test --workspace` does)",
        oxbridge.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let results = dir.path().join("results.json");
    let out = Command::new(bench)
        .arg("--quick")
        .arg("--oxbridge")
        .arg(&oxbridge)
        .arg("--out")
        .arg(&results)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the benchmark failed: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    let rows: Vec<serde_json::Value> =
        serde_json::from_str(&std::fs::read_to_string(&results).unwrap()).unwrap();
    let row = |prefix: &str| {
        rows.iter()
            .find(|r| r["name"].as_str().unwrap().starts_with(prefix))
            .unwrap_or_else(|| panic!("no {prefix:?} row in {rows:#?}"))
    };
    assert_eq!(row("token requests for a burst")["proxy"], 1.0);
    assert_eq!(row("connections lost in a burst")["proxy"], 0.0);
    for measure in [
        "logins per second",
        "FETCH",
        "POP3 RETR",
        "SMTP DATA",
        "login, sequential, warm cache, p50",
    ] {
        let r = row(measure);
        for column in ["direct", "proxy"] {
            assert!(r[column].as_f64().unwrap() > 0.0, "{r}");
        }
    }
    assert!(row("RSS per idle IMAP session")["proxy"].as_f64().is_some());
}
