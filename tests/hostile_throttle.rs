//! Brute-force throttling end to end: repeated failed logins are answered later and later,
//! then locked out, per user name and per source address; a locked-out attempt and an
//! unknown user look exactly like a wrong password; and a flood of bad logins (all of them
//! running Argon2) does not starve a spliced session that is moving data.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod hostile_support;
mod support;

use std::time::{Duration, Instant};

use hostile_support::{assert_no_panic, metric, timed, Conn};
use support::Harness;

const PASSWORD: &str = "throttle-suite-password";
const MAILBOX: &str = "printer@contoso.onmicrosoft.com";
const OTHER_MAILBOX: &str = "scanner@contoso.onmicrosoft.com";

/// One IMAP LOGIN on a fresh implicit-TLS connection: the tagged reply and how long it took
/// after the command was sent.
async fn imap_login(h: &Harness, user: &str, password: &str) -> (String, Duration) {
    let mut c = Conn::tls(h, h.imaps_port).await.unwrap();
    c.line().await.unwrap();
    let command = format!("a LOGIN \"{user}\" \"{password}\"\r\n");
    timed(async {
        c.send(command.as_bytes()).await.unwrap();
        c.until("a ").await.unwrap()
    })
    .await
}

const WRONG: &str = "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";

#[tokio::test(flavor = "multi_thread")]
async fn a_user_name_is_slowed_then_locked_out_and_unknown_names_look_the_same() {
    let mut h = Harness::start().await;
    // Per-name limits only: the address never slows or locks here (all test clients share
    // 127.0.0.1), so each name's timing is its own.
    h.append_config(
        "[throttle]\nuser_delay_after = 2\nbase_delay_millis = 400\nmax_delay_secs = 1\n\
         user_lock_after = 5\naddress_delay_after = 1000\naddress_lock_after = 0\n\
         lockout_secs = 6\n",
    );
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.add_delegated_account("scanner", PASSWORD, OTHER_MAILBOX)
        .await;
    h.serve().await;

    // Known name, wrong passwords: free, free, then 400 ms, 800 ms, 1 s (capped) and locked.
    // Unknown name: the same replies at the same delays.
    let mut known = Vec::new();
    let mut unknown = Vec::new();
    for i in 0..5 {
        known.push(imap_login(&h, "printer", &format!("guess-{i}")).await);
        unknown.push(imap_login(&h, "nobody", &format!("guess-{i}")).await);
    }
    for (i, ((k_reply, k_took), (u_reply, u_took))) in known.iter().zip(&unknown).enumerate() {
        assert_eq!(k_reply, WRONG, "attempt {i}");
        assert_eq!(u_reply, WRONG, "attempt {i}");
        let floor = [0, 0, 400, 800, 1000][i];
        // At least the delay (the class), and not much more (the generous margin is the
        // Argon2 run and a busy test machine).
        for took in [k_took, u_took] {
            assert!(
                took.as_millis() >= floor && took.as_millis() < floor + 3000,
                "attempt {i}: answered after {took:?}, expected about {floor} ms"
            );
        }
    }

    // Locked: the right password gets the wrong-password reply, just as late; the other
    // user on the same address is not affected.
    let (reply, took) = imap_login(&h, "printer", PASSWORD).await;
    assert_eq!(reply, WRONG);
    assert!(took >= Duration::from_secs(1), "{took:?}");
    let (reply, _) = imap_login(&h, "scanner", PASSWORD).await;
    assert!(reply.starts_with("a OK"), "{reply}");

    // The lockout ends on its own.
    tokio::time::sleep(Duration::from_secs(6)).await;
    let (reply, _) = imap_login(&h, "printer", PASSWORD).await;
    assert!(reply.starts_with("a OK"), "{reply}");

    let metrics = h.admin_get("/metrics").await;
    let user = metric(
        &metrics,
        "oxbridge_login_throttled_total",
        &[("protocol", "imap"), ("scope", "user")],
    );
    // printer: 3 delayed + 1 refused; nobody: 3 delayed + later attempts none.
    assert!(user >= 7.0, "{user}\n{metrics}");
    assert_eq!(
        metric(
            &metrics,
            "oxbridge_login_throttled_total",
            &[("scope", "address")]
        ),
        0.0
    );
    let logs = h.logs();
    assert!(logs.contains("login lockout started"), "{logs}");
    assert!(logs.contains("login throttled: locked out"), "{logs}");
    assert!(
        logs.contains("scope=\"user\"") || logs.contains("scope=user"),
        "{logs}"
    );
    assert!(!logs.contains(PASSWORD), "a password reached the log");
    assert_no_panic(&h);
}

/// POP3 USER/PASS over implicit TLS; the reply to PASS.
async fn pop3_login(h: &Harness, user: &str, password: &str) -> String {
    let mut c = Conn::tls(h, h.pop3s_port).await.unwrap();
    c.line().await.unwrap();
    c.send(format!("USER {user}\r\nPASS {password}\r\n").as_bytes())
        .await
        .unwrap();
    c.line().await.unwrap();
    c.line().await.unwrap()
}

/// SMTP AUTH PLAIN over implicit TLS; the reply to AUTH.
async fn smtp_login(h: &Harness, user: &str, password: &str) -> String {
    let mut c = Conn::tls(h, h.smtps_port).await.unwrap();
    c.until("220 ").await.unwrap();
    c.send(b"EHLO hostile.example\r\n").await.unwrap();
    c.until("250 ").await.unwrap();
    let plain = base64(format!("\0{user}\0{password}").as_bytes());
    c.send(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    c.line().await.unwrap()
}

fn base64(bytes: &[u8]) -> String {
    oxbridge_wire::sasl::encode_base64(bytes)
}

#[tokio::test(flavor = "multi_thread")]
async fn an_address_spraying_many_names_is_locked_out_on_every_protocol() {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    h.append_config(
        "[throttle]\nuser_delay_after = 1000\nuser_lock_after = 0\naddress_delay_after = 3\n\
         base_delay_millis = 100\nmax_delay_secs = 1\naddress_lock_after = 6\nlockout_secs = 5\n",
    );
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    h.serve().await;

    // Password spraying: one guess each for many names, over POP3.
    for i in 0..6 {
        let reply = pop3_login(&h, &format!("user{i}"), "Summer2026!").await;
        assert_eq!(reply, "-ERR [AUTH] Authentication failed.\r\n", "{i}");
    }
    // The address is locked on every protocol: even a right password gets the usual
    // wrong-password reply, with no password check behind it.
    let logins_before = h.fake.directory().xoauth_logins().len();
    assert_eq!(
        smtp_login(&h, "printer", PASSWORD).await,
        "535 5.7.8 Authentication credentials invalid\r\n"
    );
    assert_eq!(
        pop3_login(&h, "printer", PASSWORD).await,
        "-ERR [AUTH] Authentication failed.\r\n"
    );
    let (reply, _) = imap_login(&h, "printer", PASSWORD).await;
    assert_eq!(reply, WRONG);
    assert_eq!(h.fake.directory().xoauth_logins().len(), logins_before);

    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        smtp_login(&h, "printer", PASSWORD).await,
        "235 2.7.0 Authentication successful\r\n"
    );

    let metrics = h.admin_get("/metrics").await;
    for protocol in ["pop3", "smtp", "imap"] {
        let n = metric(
            &metrics,
            "oxbridge_login_throttled_total",
            &[("protocol", protocol), ("scope", "address")],
        );
        assert!(n >= 1.0, "{protocol}: {n}\n{metrics}");
    }
    let logs = h.logs();
    assert!(logs.contains("login lockout started"), "{logs}");
    assert_no_panic(&h);
}

/// A spliced IMAP session that fetches a large message again and again and reports how
/// long each fetch took, until told to stop.
async fn fetch_loop(
    h: &Harness,
    message: &[u8],
    stop: tokio::sync::watch::Receiver<bool>,
) -> Vec<Duration> {
    let size = message.len();
    let mut c = Conn::tls(h, h.imaps_port).await.unwrap();
    c.line().await.unwrap();
    c.send(format!("a LOGIN printer {PASSWORD}\r\nb SELECT INBOX\r\n").as_bytes())
        .await
        .unwrap();
    c.until("a ").await.unwrap();
    c.until("b OK").await.unwrap();
    let mut took = Vec::new();
    let mut n = 0;
    while !*stop.borrow() {
        n += 1;
        let started = Instant::now();
        c.send(format!("f{n} UID FETCH 1 BODY.PEEK[]\r\n").as_bytes())
            .await
            .unwrap();
        let head = c.line().await.unwrap();
        assert!(head.ends_with(&format!("{{{size}}}\r\n")), "{head}");
        assert!(
            c.exact(size).await.unwrap() == message,
            "fetch {n} is not byte-exact"
        );
        c.until(&format!("f{n} OK")).await.unwrap();
        took.push(started.elapsed());
    }
    c.send(b"z LOGOUT\r\n").await.unwrap();
    took
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_bad_logins_does_not_starve_a_spliced_session() {
    let mut h = Harness::start().await;
    // Unthrottled, so that every bad login really costs an Argon2 run: what is under test
    // is the concurrency bound on that work, not the lockout that would end the flood.
    h.append_config("[throttle]\nenabled = false\n");
    h.add_delegated_account("printer", PASSWORD, MAILBOX).await;
    let mut message = b"Subject: big\r\n\r\n".to_vec();
    while message.len() < 2 * 1024 * 1024 {
        message.extend_from_slice(&[b'x'; 998]);
        message.extend_from_slice(b"\r\n");
    }
    h.fake.directory().deliver(MAILBOX, "INBOX", &message);
    h.serve().await;

    // Baseline: the same fetches with nothing else going on.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (tx, rx) = tokio::sync::watch::channel(false);
    let stopper = async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        tx.send(true).unwrap();
    };
    let (baseline, ()) = tokio::join!(fetch_loop(&h, &message, rx), stopper);
    let base_max = baseline.iter().max().copied().unwrap();

    // The flood: 300 bad logins over 100 connections at once, while the session fetches.
    let flood = async {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for i in 0..100 {
            let port = h.imaps_port;
            let endpoint = hostile_support::endpoint(&h, port);
            tasks.push(tokio::spawn(async move {
                let tls = endpoint.connect_tls().await.unwrap();
                let mut c = Conn::from_io(tls);
                c.line().await.unwrap();
                let mut refused = 0;
                for j in 0..3 {
                    c.send(format!("t{j} LOGIN user{i} wrong{j}\r\n").as_bytes())
                        .await
                        .unwrap();
                    let reply = c.until(&format!("t{j} ")).await.unwrap();
                    assert!(reply.contains("NO [AUTHENTICATIONFAILED]"), "{reply}");
                    refused += 1;
                }
                refused
            }));
        }
        let mut refused = 0;
        for t in tasks {
            refused += t.await.unwrap();
        }
        (refused, started.elapsed())
    };
    let fetching = fetch_loop(&h, &message, stop_rx);
    let ((refused, flood_took), during) = tokio::join!(
        async {
            let result = flood.await;
            stop_tx.send(true).unwrap();
            result
        },
        fetching
    );
    assert_eq!(refused, 300);
    let during_max = during.iter().max().copied().unwrap();
    let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
    eprintln!(
        "baseline: {} fetches of 2 MiB, mean {:?}, max {base_max:?}; \
         during {flood_took:?} of 300 bad logins: {} fetches, mean {:?}, max {during_max:?}",
        baseline.len(),
        mean(&baseline),
        during.len(),
        mean(&during),
    );
    // The session kept moving data the whole time: several whole 2 MiB fetches went
    // through while the flood ran, none of them stalled.
    assert!(
        during.len() >= 3,
        "only {} fetches during the flood",
        during.len()
    );
    assert!(
        during_max < Duration::from_secs(5),
        "a fetch stalled for {during_max:?} during the flood (baseline max {base_max:?})"
    );
    assert_no_panic(&h);
}
