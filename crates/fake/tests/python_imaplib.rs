//! Python's imaplib (a real, independent IMAP client) against the fake. Skipped when no
//! `python3` is installed.

mod support;

use std::process::Command;

use support::{access_token, tenant, USER};

const FIRST: &[u8] =
    b"From: Bob <bob@fabrikam.com>\r\nSubject: first\r\n\r\nBody with \xe2\x82\xac and CRLF\r\n";
const SECOND: &[u8] = b"From: Carol <carol@fabrikam.com>\r\nSubject: second\r\n\r\nSecond body\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn imaplib_session() {
    if Command::new("python3").arg("--version").output().is_err() {
        eprintln!("python3 not found; skipping");
        return;
    }
    let (fake, rt) = tenant().await;
    fake.directory().deliver(USER, "INBOX", FIRST);
    fake.directory().deliver(USER, "INBOX", SECOND);
    let token = access_token(&fake, &rt).await;

    let dir = std::env::temp_dir().join(format!("oxbridge-fake-py-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let ca = dir.join("ca.pem");
    fake.pki().write_ca_pem(&ca).expect("write CA");
    let message = dir.join("message.eml");
    std::fs::write(&message, FIRST).expect("write message");
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/scripts/imaplib_client.py"
    );

    let port = fake.imap_addr().port().to_string();
    let output = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .env("PORT", port)
            .env("CA", &ca)
            .env("USER_ADDR", USER)
            .env("TOKEN", token)
            .env("MESSAGE", &message)
            .output()
    })
    .await
    .expect("join")
    .expect("run python3");
    let _ = std::fs::remove_dir_all(&dir);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.contains("PASS"),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    assert_eq!(
        fake.directory().messages(USER, "INBOX"),
        vec![FIRST.to_vec()]
    );
    assert_eq!(fake.directory().messages(USER, "Drafts").len(), 1);
}
