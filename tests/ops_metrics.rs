//! Metrics as an operator consumes them: every metric the real binary exposes is documented
//! in docs/metrics.md with its type; the alert rules pass `promtool check rules` and their
//! unit tests; the alerts and the Grafana dashboard use only documented metrics; and a real
//! Prometheus server scrapes a running oxbridge, loads the rules and answers a query.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod ops_support;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

use support::{free_port, Harness};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Whether `program` runs here. Outside CI a missing tool skips the test with a message;
/// in CI (`CI` set, where `.ci/run` installs it) it is a failure.
fn available(program: &str, package: &str) -> bool {
    let found = std::process::Command::new(program)
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing in CI; .ci/run installs the Debian package {package}"
        );
        eprintln!(
            "SKIPPED: {program} is not installed (Debian package {package}; .ci/run installs it)"
        );
    }
    found
}

/// The metric table of docs/metrics.md: name → type.
fn documented() -> BTreeMap<String, String> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).unwrap();
    doc.lines()
        .filter_map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            let name = cells
                .get(1)?
                .strip_prefix("`oxbridge_")?
                .strip_suffix('`')?;
            Some((format!("oxbridge_{name}"), cells.get(2)?.to_string()))
        })
        .collect()
}

/// Metric names used in a rule file or dashboard, with histogram suffixes folded.
fn used_metrics(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("oxbridge_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let name = &tail[..end];
        let folded = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        names.insert(folded.to_string());
        rest = &tail[end..];
    }
    names
}

async fn logged_in_world() -> Harness {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.serve().await;
    let good = h
        .curl(&[
            "-u",
            &format!("alex:{PASSWORD}"),
            &format!("imaps://127.0.0.1:{}/", h.imaps_port),
        ])
        .await;
    assert!(good.status.success(), "{}", support::stderr(&good));
    let bad = h
        .curl(&[
            "-u",
            "alex:wrong",
            &format!("imaps://127.0.0.1:{}/", h.imaps_port),
        ])
        .await;
    assert!(!bad.status.success());
    h
}

/// Bytes count as they move: a session that is still open (an IDLE can last days) already
/// shows in the totals, not only once it ends.
#[tokio::test(flavor = "multi_thread")]
async fn spliced_bytes_are_counted_while_the_session_is_open() {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.serve().await;
    let imaps = h.imaps_port.to_string();
    let open = ops_support::Waiting::start(
        &h,
        &[
            "imap-wait",
            "--tls",
            "--port",
            &imaps,
            "--user",
            "alex",
            "--password",
            PASSWORD,
        ],
    )
    .await;
    let metrics = h.admin_get("/metrics").await;
    let counted = |direction: &str| -> u64 {
        metrics
            .lines()
            .find(|l| {
                l.starts_with("oxbridge_spliced_bytes_total{")
                    && l.contains("protocol=\"imap\"")
                    && l.contains(&format!("direction=\"{direction}\""))
            })
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    // The client's SELECT went up and its answer (several lines) came down, after login.
    assert!(
        counted("client_to_upstream") >= "a2 SELECT INBOX\r\n".len() as u64,
        "{metrics}"
    );
    assert!(counted("upstream_to_client") > 50, "{metrics}");
    drop(open);
}

#[tokio::test(flavor = "multi_thread")]
async fn every_exposed_metric_is_documented_with_its_type() {
    let h = logged_in_world().await;
    let metrics = h.admin_get("/metrics").await;
    let documented = documented();
    let mut exposed = 0;
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("# TYPE ") else {
            continue;
        };
        let (name, kind) = rest.split_once(' ').unwrap();
        assert!(name.starts_with("oxbridge_"), "unprefixed metric {name}");
        assert_eq!(
            documented.get(name).map(String::as_str),
            Some(kind),
            "{name} ({kind}) must be in docs/metrics.md with that type"
        );
        exposed += 1;
    }
    assert!(exposed >= 10, "{metrics}");
    let version = env!("CARGO_PKG_VERSION");
    assert!(
        metrics.contains(&format!("oxbridge_build_info{{version=\"{version}\"}} 1")),
        "{metrics}"
    );
    assert!(metrics.contains("oxbridge_logins_total{protocol=\"imap\",result=\"ok\"} 1"));
    assert!(
        metrics.contains("oxbridge_logins_total{protocol=\"imap\",result=\"bad_credentials\"} 1")
    );
    // The listener certificate's expiry, as the certificate file itself says.
    let script = format!(
        "import ssl; print(int(ssl.cert_time_to_seconds(ssl._ssl._test_decode_cert({:?})['notAfter'])))",
        h.root().join("cert.pem").display().to_string()
    );
    let out = tokio::process::Command::new("python3")
        .args(["-c", &script])
        .output()
        .await
        .unwrap();
    let not_after = support::stdout(&out).trim().to_string();
    assert!(!not_after.is_empty(), "{}", support::stderr(&out));
    let line = format!(
        "oxbridge_certificate_expiry_timestamp_seconds{{certificate=\"listener\"}} {not_after}"
    );
    assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
}

#[test]
fn alerts_and_dashboard_use_only_documented_metrics() {
    let documented = documented();
    assert!(documented.len() >= 15, "{documented:?}");
    for file in [
        "deploy/prometheus/alerts.yaml",
        "deploy/grafana/oxbridge.json",
    ] {
        let text = std::fs::read_to_string(repo().join(file)).unwrap();
        let used = used_metrics(&text);
        assert!(!used.is_empty(), "{file} uses no metric");
        for name in used {
            assert!(
                documented.contains_key(&name),
                "{file} uses {name}, which docs/metrics.md does not list"
            );
        }
    }
    let dashboard: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(repo().join("deploy/grafana/oxbridge.json")).unwrap(),
    )
    .unwrap();
    let panels = dashboard["panels"].as_array().unwrap();
    assert!(panels.len() >= 10);
    for panel in panels {
        assert_eq!(panel["datasource"]["uid"], "${datasource}", "{panel}");
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
        assert!(panel["gridPos"]["w"].as_u64().unwrap() > 0, "{panel}");
    }
    // Every runbook anchor exists in the troubleshooting page.
    let alerts = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yaml")).unwrap();
    let troubleshooting = std::fs::read_to_string(repo().join("docs/troubleshooting.md")).unwrap();
    let anchors: BTreeSet<String> = troubleshooting
        .lines()
        .filter_map(|l| l.strip_prefix('#'))
        .map(|heading| github_anchor(heading.trim_start_matches('#').trim()))
        .collect();
    for line in alerts.lines() {
        if let Some(link) = line.trim().strip_prefix("runbook: docs/troubleshooting.md") {
            if let Some(anchor) = link.strip_prefix('#') {
                assert!(
                    anchors.contains(anchor),
                    "no heading for #{anchor} in troubleshooting.md; have {anchors:?}"
                );
            }
        }
    }
}

/// The anchor GitHub gives a heading: lower case, punctuation dropped, spaces to dashes.
fn github_anchor(heading: &str) -> String {
    heading
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            '-' | '_' => Some(c),
            c if c.is_alphanumeric() => Some(c.to_ascii_lowercase()),
            _ => None,
        })
        .collect()
}

#[test]
fn alert_rules_pass_promtool_check_and_their_unit_tests() {
    if !available("promtool", "prometheus") {
        return;
    }
    let dir = repo().join("deploy/prometheus");
    for args in [
        ["check", "rules", "alerts.yaml"],
        ["test", "rules", "alerts_test.yaml"],
    ] {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "promtool {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// A Prometheus server on loopback with a throwaway data directory; killed on drop.
struct Prometheus {
    child: tokio::process::Child,
    port: u16,
}

impl Prometheus {
    async fn start(dir: &Path, admin_port: u16) -> Prometheus {
        let rules = repo().join("deploy/prometheus/alerts.yaml");
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n\
                 rule_files:\n  - {rules:?}\n\
                 scrape_configs:\n  - job_name: oxbridge\n    static_configs:\n      - targets: ['127.0.0.1:{admin_port}']\n",
                rules = rules.display().to_string()
            ),
        )
        .unwrap();
        let port = free_port();
        let child = tokio::process::Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .kill_on_drop(true)
            .spawn()
            .expect("prometheus starts");
        Prometheus { child, port }
    }

    /// GET on the HTTP API; `query` is a PromQL expression for `/api/v1/query`.
    async fn get(&self, path: &str, query: Option<&str>) -> serde_json::Value {
        let mut curl = tokio::process::Command::new("curl");
        curl.args(["--silent", "--max-time", "5", "--get"]);
        if let Some(query) = query {
            curl.arg("--data-urlencode").arg(format!("query={query}"));
        }
        let out = curl
            .arg(format!("http://127.0.0.1:{}{path}", self.port))
            .output()
            .await
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_real_prometheus_scrapes_oxbridge_and_loads_the_alert_rules() {
    if !available("prometheus", "prometheus") {
        return;
    }
    let h = logged_in_world().await;
    let dir = tempfile::tempdir().unwrap();
    let mut prometheus = Prometheus::start(dir.path(), h.admin_port).await;
    let version = env!("CARGO_PKG_VERSION");
    let answer = poll(
        Duration::from_secs(60),
        "Prometheus to scrape oxbridge",
        || async {
            let answer = prometheus
                .get("/api/v1/query", Some("oxbridge_build_info"))
                .await;
            let scraped = answer["data"]["result"]
                .as_array()
                .is_some_and(|r| !r.is_empty());
            scraped.then_some(answer)
        },
    )
    .await;
    let series = &answer["data"]["result"][0];
    assert_eq!(series["metric"]["version"], version, "{answer}");
    assert_eq!(series["metric"]["job"], "oxbridge", "{answer}");
    assert_eq!(series["value"][1], "1", "{answer}");

    let logins = prometheus
        .get(
            "/api/v1/query",
            Some("sum(oxbridge_logins_total{result=\"ok\"})"),
        )
        .await;
    assert_eq!(logins["data"]["result"][0]["value"][1], "1", "{logins}");

    // The alert rules load and evaluate without error against the real series.
    let rules = poll(
        Duration::from_secs(30),
        "the rules to be evaluated",
        || async {
            let rules = prometheus.get("/api/v1/rules", None).await;
            let all: Vec<&serde_json::Value> = rules["data"]["groups"]
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|g| g["rules"].as_array().into_iter().flatten())
                .collect();
            let evaluated = !all.is_empty()
                && all
                    .iter()
                    .all(|r| r["lastEvaluation"] != "0001-01-01T00:00:00Z");
            evaluated.then_some(rules)
        },
    )
    .await;
    let groups = rules["data"]["groups"].as_array().unwrap();
    let all: Vec<&serde_json::Value> = groups
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap())
        .collect();
    assert!(all.len() >= 8, "{rules}");
    for rule in &all {
        assert_eq!(rule["health"], "ok", "{rule}");
    }
    // Nothing is wrong in this world: no alert fires.
    let firing: Vec<&&serde_json::Value> = all.iter().filter(|r| r["state"] == "firing").collect();
    assert!(firing.is_empty(), "{firing:?}");
    let _ = prometheus.child.kill().await;
}

/// Calls `check` every 200 ms until it returns a value; panics with `what` after `within`.
async fn poll<T, F, Fut>(within: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + within;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}
