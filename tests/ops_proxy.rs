//! The PROXY protocol behind a load balancer, on the real binary: v1 and v2 headers sent
//! from a raw socket on 127.0.0.1 (declared trusted) put the forwarded client address in
//! the audit log and in front of the SMTP relay rules; an untrusted source, or a trusted one
//! without a header, is refused.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod ops_support;
mod support;

use ops_support::{edit_config, ops_client};
use support::{free_port, Harness};

const PASSWORD: &str = "correct horse battery staple";
const MAILBOX: &str = "alex@contoso.onmicrosoft.com";

/// `PROXY TCP4 203.0.113.7 127.0.0.1 51234 <port>\r\n`, as hex.
fn v1(port: u16) -> String {
    hex(format!("PROXY TCP4 203.0.113.7 127.0.0.1 51234 {port}\r\n").as_bytes())
}

/// A v2 PROXY header from 198.51.100.9:40000 to 127.0.0.1:`port`, as hex.
fn v2(port: u16) -> String {
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x21, 0x11, 0x00, 0x0c]);
    header.extend_from_slice(&[198, 51, 100, 9, 127, 0, 0, 1]);
    header.extend_from_slice(&40000u16.to_be_bytes());
    header.extend_from_slice(&port.to_be_bytes());
    hex(&header)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn imap_login(h: &Harness, port: u16, header: &str) -> serde_json::Value {
    let port = port.to_string();
    let mut args = vec![
        "imap-login",
        "--tls",
        "--port",
        &port,
        "--user",
        "alex",
        "--password",
        PASSWORD,
    ];
    if !header.is_empty() {
        args.extend(["--proxy-header", header]);
    }
    let out = ops_client(h, &args).await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

async fn relay_mail_from(h: &Harness, port: u16, header: &str) -> String {
    let port = port.to_string();
    let mut args = vec![
        "smtp-relay",
        "--port",
        &port,
        "--sender",
        "scanner@contoso.onmicrosoft.com",
    ];
    if !header.is_empty() {
        args.extend(["--proxy-header", header]);
    }
    let out = ops_client(h, &args).await;
    assert!(out.status.success(), "{}", support::stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["mail"].as_str().unwrap().to_string()
}

/// Audit lines (`oxbridge::audit`) of the log.
fn audit_lines(h: &Harness) -> Vec<String> {
    h.logs()
        .lines()
        .filter(|l| l.contains("oxbridge::audit"))
        .map(str::to_string)
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn forwarded_addresses_reach_the_audit_log_and_the_relay_rules_and_untrusted_sources_are_refused(
) {
    let mut h = Harness::start().await;
    h.add_delegated_account("alex", PASSWORD, MAILBOX).await;
    h.add_delegated_account_for(
        "scanner",
        "scanner-password",
        "scanner@contoso.onmicrosoft.com",
        "smtp",
    )
    .await;
    h.add_smtp();
    let (proxied, untrusted, relay) = (free_port(), free_port(), free_port());
    // Trusted globally: this host, where the test plays the load balancer.
    edit_config(
        &h,
        "data_dir = ",
        "trusted_proxies = [\"127.0.0.1\"]\ndata_dir = ",
    );
    h.append_config(&format!(
        r#"
[[listener]]
protocol = "imap"
listen = "127.0.0.1:{proxied}"
tls = "implicit"
proxy_protocol = true

[[listener]]
protocol = "imap"
listen = "127.0.0.1:{untrusted}"
tls = "implicit"
proxy_protocol = true
trusted_proxies = ["192.0.2.0/24"]

[[listener]]
protocol = "smtp"
listen = "127.0.0.1:{relay}"
tls = "starttls"
proxy_protocol = true

[[relay]]
networks = ["198.51.100.0/24"]
account = "scanner"
senders = ["scanner@contoso.onmicrosoft.com"]
"#
    ));
    h.serve().await;

    // v1, then v2: the forwarded address is the audit event's peer.
    let login = imap_login(&h, proxied, &v1(proxied)).await;
    assert!(
        login["login"].as_str().unwrap().starts_with("a1 OK"),
        "{login}"
    );
    let login = imap_login(&h, proxied, &v2(proxied)).await;
    assert!(
        login["login"].as_str().unwrap().starts_with("a1 OK"),
        "{login}"
    );
    let audit = audit_lines(&h);
    assert_eq!(audit.len(), 2, "{audit:#?}");
    assert!(audit[0].contains("peer=203.0.113.7:51234"), "{}", audit[0]);
    assert!(audit[1].contains("peer=198.51.100.9:40000"), "{}", audit[1]);
    // The session's log lines carry the balancer as `via`.
    assert!(h.logs().contains("via=127.0.0.1:"), "{}", h.logs());

    // The relay rule covers the forwarded network only: the same socket without the
    // balancer's word for it must log in.
    let mail = relay_mail_from(&h, relay, &v2(relay)).await;
    assert!(
        mail.starts_with("250"),
        "relay for the forwarded address: {mail}"
    );
    let direct = relay_mail_from(&h, h.submission_port, "").await;
    assert!(
        direct.starts_with("530"),
        "no relay for 127.0.0.1: {direct}"
    );
    let audit = audit_lines(&h);
    assert_eq!(audit.len(), 4, "{audit:#?}");
    assert!(
        audit[2].contains("peer=198.51.100.9:40000") && audit[2].contains("method=\"relay\""),
        "{}",
        audit[2]
    );
    assert!(
        audit[3].contains("result=\"no_relay_rule\""),
        "{}",
        audit[3]
    );

    // A source that is not a trusted proxy is refused, header or not; so is a trusted
    // source that sends no header.
    let refused = imap_login(&h, untrusted, &v1(untrusted)).await;
    assert_eq!(refused["closed"], true, "{refused}");
    let refused = imap_login(&h, proxied, "").await;
    assert_eq!(refused["closed"], true, "{refused}");
    let garbage = imap_login(&h, proxied, &hex(b"PROXY TCP4 1.2.3.4 nonsense\r\n")).await;
    assert_eq!(garbage["closed"], true, "{garbage}");
    let metrics = h.admin_get("/metrics").await;
    for line in [
        "oxbridge_proxy_header_failures_total{protocol=\"imap\",reason=\"untrusted\"} 1",
        "oxbridge_proxy_header_failures_total{protocol=\"imap\",reason=\"missing\"} 1",
        "oxbridge_proxy_header_failures_total{protocol=\"imap\",reason=\"invalid\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert_eq!(
        audit_lines(&h).len(),
        4,
        "refused connections never reached a login"
    );
    h.stop().await;
}
