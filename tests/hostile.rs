//! The hostile-input suite: everything a hostile or broken client can throw at oxbridge's
//! listeners, on all three protocols, while a well-behaved session on each protocol keeps
//! its spliced session open and finishes byte-exact at the end. Every case gets the
//! protocol's correct reply or a bounded close; oxbridge's memory stays bounded (sampled
//! from /proc throughout); nothing panics.

#![allow(clippy::unwrap_used)] // test scenarios: a panic is the failure report

mod hostile_support;
mod support;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostile_support::{
    assert_no_panic, metric, open_fds, replace_config, rss_kib, set_limits, starttls, Conn,
    GoodSessions, GOOD_PASSWORD, IMAP_MAILBOX, IMAP_USER, POP3_USER, RECIPIENT,
};
use support::Harness;
use tokio::io::AsyncWriteExt;

/// The pre-auth timeout of these worlds: slowloris and trickling clients are cut after it.
const PRE_AUTH_SECS: u64 = 4;

/// The two tests here are heavy on sockets (hundreds of hostile connections; ten thousand
/// at once): one at a time, so neither crowds out the other's ports and descriptors.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// oxbridge with IMAP, POP3 and SMTP listeners (implicit TLS and STARTTLS each), a short
/// pre-auth timeout, the good sessions' accounts, and no per-address throttling: every
/// hostile client here shares 127.0.0.1, and the throttle has its own suite.
async fn world(limits: &str, pre_auth_secs: u64) -> Harness {
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    replace_config(
        &h,
        "pre_auth_timeout_secs = 20",
        &format!("pre_auth_timeout_secs = {pre_auth_secs}"),
    );
    set_limits(&h, limits);
    h.append_config("[throttle]\naddress_delay_after = 100000\naddress_lock_after = 0\n");
    GoodSessions::prepare(&h).await;
    h.serve().await;
    h
}

/// Samples oxbridge's resident memory every 50 ms; the maximum seen, in KiB.
fn watch_memory(pid: u32) -> (Arc<AtomicU64>, tokio::task::JoinHandle<()>) {
    let max = Arc::new(AtomicU64::new(rss_kib(pid)));
    let seen = max.clone();
    let task = tokio::spawn(async move {
        loop {
            seen.fetch_max(rss_kib(pid), Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    });
    (max, task)
}

fn b64(bytes: &[u8]) -> String {
    oxbridge_wire::sasl::encode_base64(bytes)
}

async fn imap(h: &Harness) -> Conn {
    let mut c = Conn::tls(h, h.imaps_port).await.unwrap();
    assert!(c.line().await.unwrap().starts_with("* OK"));
    c
}

async fn pop3(h: &Harness) -> Conn {
    let mut c = Conn::tls(h, h.pop3s_port).await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "+OK oxbridge POP3 service ready.\r\n"
    );
    c
}

/// An SMTP session over implicit TLS, greeted and past EHLO.
async fn smtp(h: &Harness) -> Conn {
    let mut c = Conn::tls(h, h.smtps_port).await.unwrap();
    c.until("220 ").await.unwrap();
    c.send(b"EHLO hostile.example\r\n").await.unwrap();
    let ehlo = c.until("250 ").await.unwrap();
    assert!(ehlo.contains("AUTH PLAIN LOGIN"), "{ehlo}");
    c
}

const IMAP_WRONG: &str = "NO [AUTHENTICATIONFAILED] Authentication failed.\r\n";
const POP3_WRONG: &str = "-ERR [AUTH] Authentication failed.\r\n";
const SMTP_WRONG: &str = "535 5.7.8 Authentication credentials invalid\r\n";

/// Sends `line` of `size` bytes (CRLF included) and returns what the server said before
/// closing, or its next line if it stays open.
async fn long_line(mut c: Conn, prefix: &[u8], size: usize) -> (String, bool) {
    let mut line = prefix.to_vec();
    line.resize(size - 2, b'x');
    line.extend_from_slice(b"\r\n");
    let _ = c.send(&line).await;
    match c.line_within(Duration::from_secs(10)).await {
        Ok(reply) => {
            let closed = c
                .rest_until_closed(Duration::from_millis(500))
                .await
                .is_some();
            (reply, closed)
        }
        Err(e) => (format!("error: {e}"), true),
    }
}

/// Streams bytes without a line end until oxbridge stops taking them; returns how many were
/// written and what oxbridge said. It must close long before 64 MiB.
async fn endless_line(mut c: Conn) -> (usize, String) {
    let chunk = vec![b'x'; 256 * 1024];
    let mut sent = 0;
    while sent < 64 * 1024 * 1024 {
        match tokio::time::timeout(Duration::from_secs(10), c.send(&chunk)).await {
            Ok(Ok(())) => sent += chunk.len(),
            _ => break,
        }
    }
    let said = c
        .rest_until_closed(Duration::from_secs(10))
        .await
        .unwrap_or_else(|| "still open".into());
    (sent, said)
}

async fn imap_cases(h: &Harness) {
    // STARTTLS injection: the LOGIN pipelined behind STARTTLS is discarded unread.
    let logins = h.fake.directory().xoauth_logins().len();
    let injected = format!("a STARTTLS\r\nb LOGIN {IMAP_USER} {GOOD_PASSWORD}\r\n");
    let (mut c, seen) = starttls(h, h.starttls_port, b"", injected.as_bytes(), "a ")
        .await
        .unwrap();
    assert!(seen.contains("LOGINDISABLED"), "{seen}");
    assert!(
        seen.ends_with("a OK Begin TLS negotiation now.\r\n"),
        "{seen}"
    );
    c.send(b"c NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "c OK NOOP completed.\r\n");
    assert_eq!(h.fake.directory().xoauth_logins().len(), logins);

    // Literals of 100 MB and 4 GB: refused without a continuation (synchronizing) or with
    // a close (non-synchronizing, whose data would follow at once).
    let mut c = imap(h).await;
    c.send(b"a LOGIN {104857600}\r\n").await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "a BAD [TOOBIG] Literal too large.\r\n"
    );
    c.send(b"b LOGIN {4294967296}\r\n").await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "b BAD [TOOBIG] Literal too large.\r\n"
    );
    c.send(b"c NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "c OK NOOP completed.\r\n");
    c.send(b"d LOGIN {4294967296+}\r\n").await.unwrap();
    let rest = c.rest_until_closed(Duration::from_secs(5)).await.unwrap();
    assert_eq!(rest, "* BYE [TOOBIG] Literal too large.\r\n");
    let mut c = imap(h).await;
    let mut big = b"e LOGIN {104857600+}\r\n".to_vec();
    big.extend_from_slice(&vec![b'y'; 1 << 20]);
    let _ = c.send(&big).await;
    let rest = c.rest_until_closed(Duration::from_secs(5)).await.unwrap();
    assert!(rest.starts_with("* BYE [TOOBIG]"), "{rest}");

    // Lines: one that fits the 16 KiB limit is answered; 16 KiB + 1, 1 MiB and endless
    // ones get BYE and a close.
    let (reply, closed) = long_line(imap(h).await, b"a NOOP ", 16 * 1024).await;
    assert_eq!(reply, "a BAD Command Error. 12\r\n");
    assert!(!closed);
    for size in [16 * 1024 + 1, 1 << 20] {
        let (reply, closed) = long_line(imap(h).await, b"a NOOP ", size).await;
        assert_eq!(reply, "* BYE Line too long.\r\n", "{size}");
        assert!(closed);
    }
    let (sent, said) = endless_line(imap(h).await).await;
    assert!(
        sent < 64 * 1024 * 1024 && said.starts_with("* BYE Line too long."),
        "{sent} {said}"
    );

    // NUL and invalid UTF-8 in user names and passwords: a failed login, nothing worse.
    let mut c = imap(h).await;
    c.send(b"a LOGIN {5+}\r\nfr\0nt {2+}\r\npw\r\n")
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), format!("a {IMAP_WRONG}"));
    c.send(b"b LOGIN {4+}\r\n\xff\xfe\xc0\xaf {2+}\r\npw\r\n")
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), format!("b {IMAP_WRONG}"));
    let mut c = imap(h).await;
    let mut login = format!("a LOGIN {IMAP_USER} {{6+}}\r\n").into_bytes();
    login.extend_from_slice(b"p\0w\xff\xfe!\r\n");
    c.send(&login).await.unwrap();
    assert_eq!(c.line().await.unwrap(), format!("a {IMAP_WRONG}"));
    let plain = b64(b"\0fr\xffont\0pw");
    c.send(format!("b AUTHENTICATE PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), format!("b {IMAP_WRONG}"));

    // Base64 garbage, inline and as a continuation, then AUTHENTICATE cancelled mid-way.
    let mut c = imap(h).await;
    c.send(b"a AUTHENTICATE PLAIN !!!notbase64\r\n")
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), "a BAD Invalid SASL argument.\r\n");
    c.send(b"b AUTHENTICATE PLAIN\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+ \r\n");
    c.send(b"%%%\x00\xff\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "b BAD Invalid SASL argument.\r\n");
    c.send(b"c AUTHENTICATE LOGIN\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+ VXNlcm5hbWU6\r\n");
    c.send(format!("{}\r\n", b64(IMAP_USER.as_bytes())).as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), "+ UGFzc3dvcmQ6\r\n");
    c.send(b"*\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "c BAD AUTHENTICATE cancelled.\r\n");
    c.send(b"d NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "d OK NOOP completed.\r\n");

    // Thousands of commands before login: 64 answered, then BYE.
    let mut c = imap(h).await;
    let _ = c.send(&b"x NOOP\r\n".repeat(5000)).await;
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(rest.matches("x OK NOOP completed.").count(), 64);
    assert!(
        rest.ends_with("* BYE Too many commands without login\r\n"),
        "{rest}"
    );

    // Pipelined logins, and commands pipelined behind the one that succeeds: those go to
    // the upstream, in order.
    let mut c = imap(h).await;
    c.send(
        format!(
            "a LOGIN {IMAP_USER} wrong\r\nb LOGIN {IMAP_USER} {GOOD_PASSWORD}\r\n\
             c SELECT INBOX\r\nd LOGOUT\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    assert_eq!(c.line().await.unwrap(), format!("a {IMAP_WRONG}"));
    let ok = c.line().await.unwrap();
    assert!(
        ok.starts_with("b OK [CAPABILITY ") && ok.ends_with("LOGIN completed.\r\n"),
        "{ok}"
    );
    let rest = c.until("d ").await.unwrap();
    assert!(
        rest.contains("c OK [READ-WRITE] SELECT completed."),
        "{rest}"
    );
    assert!(rest.ends_with("d OK LOGOUT completed.\r\n"), "{rest}");

    // Half-closed sockets: the commands sent before the FIN are answered (pre-auth and
    // through the splice), then the connection closes.
    let (mut c, _) = starttls(h, h.starttls_port, b"", b"a STARTTLS\r\n", "a ")
        .await
        .unwrap();
    c.send(b"b CAPABILITY\r\n").await.unwrap();
    c.shutdown_write().await.unwrap();
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    assert!(rest.ends_with("b OK CAPABILITY completed.\r\n"), "{rest}");
    let mut c = imap(h).await;
    c.send(format!("a LOGIN {IMAP_USER} {GOOD_PASSWORD}\r\nb NOOP\r\n").as_bytes())
        .await
        .unwrap();
    c.shutdown_write().await.unwrap();
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    assert!(rest.contains("b OK NOOP completed."), "{rest}");
}

async fn pop3_cases(h: &Harness) {
    // STLS injection: USER and PASS pipelined behind STLS are discarded.
    let logins = h.fake.directory().xoauth_logins().len();
    let injected = format!("STLS\r\nUSER {POP3_USER}\r\nPASS {GOOD_PASSWORD}\r\n");
    let (mut c, seen) = starttls(h, h.pop3_port, b"", injected.as_bytes(), "+OK Begin")
        .await
        .unwrap();
    assert!(seen.ends_with("+OK Begin TLS negotiation.\r\n"), "{seen}");
    c.send(b"NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+OK\r\n");
    assert_eq!(h.fake.directory().xoauth_logins().len(), logins);

    // Lines.
    let (reply, closed) = long_line(pop3(h).await, b"NOOP ", 16 * 1024).await;
    assert_eq!(reply, "-ERR Syntax error.\r\n");
    assert!(!closed);
    for size in [16 * 1024 + 1, 1 << 20] {
        let (reply, closed) = long_line(pop3(h).await, b"USER ", size).await;
        assert_eq!(reply, "-ERR Line too long.\r\n", "{size}");
        assert!(closed);
    }
    let (sent, said) = endless_line(pop3(h).await).await;
    assert!(
        sent < 64 * 1024 * 1024 && said.starts_with("-ERR Line too long."),
        "{sent} {said}"
    );

    // NUL and invalid UTF-8 in names and passwords.
    let mut c = pop3(h).await;
    c.send(b"USER fr\0nt\r\nPASS pw\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+OK Send your password.\r\n");
    assert_eq!(c.line().await.unwrap(), POP3_WRONG);
    c.send(b"USER \xff\xfe\xc0\xaf\r\nPASS pw\r\n")
        .await
        .unwrap();
    c.line().await.unwrap();
    assert_eq!(c.line().await.unwrap(), POP3_WRONG);
    let mut c = pop3(h).await;
    let mut login = format!("USER {POP3_USER}\r\n").into_bytes();
    login.extend_from_slice(b"PASS p\0w\xff\xfe!\r\n");
    c.send(&login).await.unwrap();
    c.line().await.unwrap();
    assert_eq!(c.line().await.unwrap(), POP3_WRONG);
    let plain = b64(format!("\0{POP3_USER}\0p\0w\u{fffd}").as_bytes());
    c.send(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), POP3_WRONG);

    // Base64 garbage and a cancelled AUTH.
    let mut c = pop3(h).await;
    c.send(b"AUTH PLAIN !!!notbase64\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "-ERR Invalid SASL argument.\r\n");
    c.send(b"AUTH PLAIN\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+ \r\n");
    c.send(b"%%%\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "-ERR Invalid SASL argument.\r\n");
    c.send(b"AUTH LOGIN\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+ VXNlcm5hbWU6\r\n");
    c.send(b"*\r\n").await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "-ERR Authentication cancelled.\r\n"
    );
    c.send(b"NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "+OK\r\n");

    // Thousands of commands before login.
    let mut c = pop3(h).await;
    let _ = c.send(&b"NOOP\r\n".repeat(5000)).await;
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    assert_eq!(rest.matches("+OK\r\n").count(), 64);
    assert!(
        rest.ends_with("-ERR Too many commands without login.\r\n"),
        "{rest}"
    );

    // Pipelined logins, and STAT behind the good one, answered by the upstream; then a
    // half-close after QUIT.
    let mut c = pop3(h).await;
    c.send(
        format!(
            "USER {POP3_USER}\r\nPASS wrong\r\nUSER {POP3_USER}\r\nPASS {GOOD_PASSWORD}\r\n\
             STAT\r\nQUIT\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    c.shutdown_write().await.unwrap();
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    let lines: Vec<&str> = rest.split_inclusive("\r\n").collect();
    assert_eq!(lines[0], "+OK Send your password.\r\n", "{rest}");
    assert_eq!(lines[1], POP3_WRONG, "{rest}");
    assert_eq!(
        lines[3], "+OK User successfully authenticated.\r\n",
        "{rest}"
    );
    assert!(
        lines[4].starts_with("+OK 1 "),
        "STAT from the upstream: {rest}"
    );
    assert!(lines[5].starts_with("+OK"), "QUIT: {rest}");
}

async fn smtp_cases(h: &Harness) {
    // STARTTLS injection: the AUTH pipelined behind STARTTLS is discarded, and the client
    // must greet again.
    let logins = h.fake.directory().xoauth_logins().len();
    let plain = b64(format!("\0{IMAP_USER}\0{GOOD_PASSWORD}").as_bytes());
    let injected = format!("STARTTLS\r\nAUTH PLAIN {plain}\r\n");
    let (mut c, seen) = starttls(
        h,
        h.submission_port,
        b"EHLO hostile.example\r\n",
        injected.as_bytes(),
        "220 2.0.0",
    )
    .await
    .unwrap();
    assert!(seen.ends_with("220 2.0.0 Ready to start TLS\r\n"), "{seen}");
    c.send(b"NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "250 2.0.0 OK\r\n");
    c.send(format!("AUTH PLAIN {plain}\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "503 5.5.1 Send EHLO or HELO first\r\n"
    );
    assert_eq!(h.fake.directory().xoauth_logins().len(), logins);

    // A 4 GB BDAT before login: refused, and its data skipped (not buffered) as it comes.
    let mut c = smtp(h).await;
    c.send(b"BDAT 4294967296 LAST\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "503 5.5.1 Need MAIL command\r\n");
    for _ in 0..16 {
        c.send(&vec![b'z'; 1 << 20]).await.unwrap();
    }
    let rest = c
        .rest_until_closed(Duration::from_secs(PRE_AUTH_SECS + 5))
        .await
        .unwrap();
    assert!(rest.starts_with("421 4.4.2 "), "{rest}");

    // Lines.
    let (reply, closed) = long_line(smtp(h).await, b"NOOP ", 16 * 1024).await;
    assert_eq!(reply, "250 2.0.0 OK\r\n");
    assert!(!closed);
    for size in [16 * 1024 + 1, 1 << 20] {
        let (reply, closed) = long_line(smtp(h).await, b"NOOP ", size).await;
        assert_eq!(reply, "500 5.5.2 Line too long\r\n", "{size}");
        assert!(closed);
    }
    let (sent, said) = endless_line(smtp(h).await).await;
    assert!(
        sent < 64 * 1024 * 1024 && said.starts_with("500 5.5.2 Line too long"),
        "{sent} {said}"
    );

    // NUL and invalid UTF-8 in names and passwords.
    let mut c = smtp(h).await;
    c.send(format!("AUTH PLAIN {}\r\n", b64(b"\0fr\xffont\0pw")).as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), SMTP_WRONG);
    // PLAIN cannot carry a NUL in the name: this is user "fr" with password "nt\0pw".
    c.send(format!("AUTH PLAIN {}\r\n", b64(b"\0fr\0nt\0pw")).as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), SMTP_WRONG);
    let mut password = b"\0".to_vec();
    password.extend_from_slice(IMAP_USER.as_bytes());
    password.extend_from_slice(b"\0p\0w\xff\xfe");
    c.send(format!("AUTH PLAIN {}\r\n", b64(&password)).as_bytes())
        .await
        .unwrap();
    assert_eq!(c.line().await.unwrap(), SMTP_WRONG);

    // Base64 garbage and a cancelled AUTH.
    let mut c = smtp(h).await;
    c.send(b"AUTH PLAIN !!!notbase64\r\n").await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "501 5.5.2 Cannot Base64-decode client response\r\n"
    );
    c.send(b"AUTH LOGIN\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "334 VXNlcm5hbWU6\r\n");
    c.send(b"*\r\n").await.unwrap();
    assert_eq!(
        c.line().await.unwrap(),
        "501 5.7.0 Authentication cancelled\r\n"
    );
    c.send(b"NOOP\r\n").await.unwrap();
    assert_eq!(c.line().await.unwrap(), "250 2.0.0 OK\r\n");

    // Thousands of commands before login.
    let mut c = smtp(h).await;
    let _ = c.send(&b"NOOP\r\n".repeat(5000)).await;
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    // EHLO was the first of the 64.
    assert_eq!(rest.matches("250 2.0.0 OK\r\n").count(), 63);
    assert!(
        rest.contains("421 4.7.0 oxbridge Too many commands without login"),
        "{rest}"
    );

    // Pipelined AUTH and the mail transaction behind it: the upstream answers the rest.
    let mut c = smtp(h).await;
    let wrong = b64(format!("\0{IMAP_USER}\0wrong").as_bytes());
    c.send(
        format!(
            "AUTH PLAIN {wrong}\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<{IMAP_MAILBOX}>\r\n\
             RCPT TO:<{RECIPIENT}>\r\nQUIT\r\n"
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    c.shutdown_write().await.unwrap();
    let rest = c.rest_until_closed(Duration::from_secs(10)).await.unwrap();
    let lines: Vec<&str> = rest.split_inclusive("\r\n").collect();
    assert_eq!(lines[0], SMTP_WRONG, "{rest}");
    assert_eq!(
        lines[1], "235 2.7.0 Authentication successful\r\n",
        "{rest}"
    );
    assert!(lines[2].starts_with("250 2.1.0"), "{rest}");
    assert!(lines[3].starts_with("250 2.1.5"), "{rest}");
    assert!(lines[4].starts_with("221"), "{rest}");
}

/// Garbage and truncated handshakes on the TLS ports, and after STARTTLS: each is closed,
/// the garbage at once, the truncated handshake at the pre-auth timeout.
async fn tls_cases(h: &Harness) {
    for port in [h.imaps_port, h.pop3s_port, h.smtps_port] {
        let mut c = Conn::plain(port).await.unwrap();
        c.send(b"GET / HTTP/1.1\r\nHost: oxbridge\r\n\r\n")
            .await
            .unwrap();
        assert!(c.rest_until_closed(Duration::from_secs(5)).await.is_some());

        let mut c = Conn::plain(port).await.unwrap();
        c.send(&[
            0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
        ])
        .await
        .unwrap();
        let started = Instant::now();
        assert!(c
            .rest_until_closed(Duration::from_secs(PRE_AUTH_SECS + 5))
            .await
            .is_some());
        assert!(started.elapsed() >= Duration::from_secs(PRE_AUTH_SECS - 1));
    }
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", h.starttls_port))
        .await
        .unwrap();
    tcp.write_all(b"a STARTTLS\r\n").await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    tcp.write_all(&[0x17; 4096]).await.unwrap();
    let mut c = Conn::from_io(tcp);
    let said = c.rest_until_closed(Duration::from_secs(5)).await.unwrap();
    assert!(said.contains("a OK Begin TLS negotiation now."), "{said}");
}

/// Slowloris (connect, say nothing) and trickling (a byte a second) on every port: all are
/// cut at the pre-auth timeout, plain ones with the protocol's goodbye.
async fn slow_clients(h: &Harness) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    let plain = [
        (h.starttls_port, "* BYE Autologout; idle for too long.\r\n"),
        (h.pop3_port, "-ERR Autologout; idle for too long.\r\n"),
        (
            h.submission_port,
            "421 4.4.2 oxbridge Timeout waiting for client input, closing connection\r\n",
        ),
    ];
    for (port, goodbye) in plain {
        for i in 0..101 {
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut c = Conn::plain(port).await.unwrap();
                if i == 0 {
                    // The trickler: one byte a second, never a whole line in time.
                    for b in b"NOOP NOOP\r\n" {
                        if c.send(&[*b]).await.is_err() {
                            break;
                        }
                        tokio::time::sleep(Duration::from_secs(1)).await;
                    }
                }
                let said = c
                    .rest_until_closed(Duration::from_secs(PRE_AUTH_SECS + 10))
                    .await
                    .unwrap_or_else(|| panic!("port {port}: a slow client was not cut"));
                let took = started.elapsed();
                assert!(said.ends_with(goodbye), "port {port}: {said:?}");
                assert!(
                    took < Duration::from_secs(PRE_AUTH_SECS + 4),
                    "port {port}: cut after {took:?}"
                );
            }));
        }
    }
    for port in [h.imaps_port, h.pop3s_port, h.smtps_port] {
        for _ in 0..50 {
            tasks.push(tokio::spawn(async move {
                let started = Instant::now();
                let mut c = Conn::plain(port).await.unwrap();
                let said = c
                    .rest_until_closed(Duration::from_secs(PRE_AUTH_SECS + 10))
                    .await
                    .unwrap_or_else(|| panic!("port {port}: a silent TLS client was not cut"));
                assert!(said.is_empty(), "{said:?}");
                assert!(started.elapsed() < Duration::from_secs(PRE_AUTH_SECS + 4));
            }));
        }
    }
    tasks
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_clients_on_every_protocol_while_good_sessions_finish_byte_exact() {
    let _alone = ONE_AT_A_TIME.lock().await;
    let h = world("", PRE_AUTH_SECS).await;
    let pid = h.pid().unwrap();
    let good = GoodSessions::start(&h).await;
    let (max_rss, sampler) = watch_memory(pid);
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);

    let slow = slow_clients(&h).await;
    tokio::join!(
        imap_cases(&h),
        pop3_cases(&h),
        smtp_cases(&h),
        tls_cases(&h)
    );
    for task in slow {
        task.await.unwrap();
    }

    good.finish(&h).await;
    sampler.abort();
    let rss_max = max_rss.load(Ordering::Relaxed);
    // Everything hostile is gone; what is left is the server itself.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let fds_after = open_fds(pid);
    eprintln!(
        "oxbridge RSS: {rss_before} KiB before, at most {rss_max} KiB during, {} KiB after; \
         descriptors {fds_before} before, {fds_after} after",
        rss_kib(pid)
    );
    assert!(
        rss_max < rss_before + 96 * 1024,
        "memory grew from {rss_before} KiB to {rss_max} KiB"
    );
    assert!(
        fds_after <= fds_before + 8,
        "{fds_before} -> {fds_after} descriptors"
    );
    let metrics = h.admin_get("/metrics").await;
    for protocol in ["imap", "pop3", "smtp"] {
        let failures = metric(
            &metrics,
            "oxbridge_tls_handshake_failures_total",
            &[("protocol", protocol)],
        );
        assert!(failures >= 2.0, "{protocol}: {failures}");
    }
    assert_no_panic(&h);
}

#[tokio::test(flavor = "multi_thread")]
async fn connections_beyond_the_limit_are_closed_at_once_and_the_good_sessions_survive() {
    let _alone = ONE_AT_A_TIME.lock().await;
    // As many connections at once as this process may open, up to the 10,000.
    let (soft, hard) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let _ = rlimit::increase_nofile_limit(hard);
    let (soft_now, _) = rlimit::getrlimit(rlimit::Resource::NOFILE).unwrap();
    let many = 10_000.min((soft_now as usize).saturating_sub(200) * 3 / 4);
    eprintln!("open-file limit {soft} (hard {hard}), now {soft_now}: opening {many} connections");
    assert!(
        many >= 200,
        "the open-file limit allows only {many} connections"
    );

    const LIMIT: usize = 50;
    // A long pre-auth timeout: the admitted connections stay until the test lets go.
    let h = world(&format!("max_connections = {LIMIT}"), 120).await;
    let pid = h.pid().unwrap();
    let good = GoodSessions::start(&h).await;
    let (max_rss, sampler) = watch_memory(pid);
    let rss_before = rss_kib(pid);
    let fds_before = open_fds(pid);

    // Open them all at once, each reading what oxbridge says: a greeting (admitted) or an
    // immediate close (refused). The admitted ones hold their connection (and permit)
    // until every one has been answered.
    let started = Instant::now();
    let port = h.starttls_port;
    let gate = Arc::new(tokio::sync::Semaphore::new(0));
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::with_capacity(many);
    for _ in 0..many {
        let gate = gate.clone();
        let answers = answers.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = loop {
                match Conn::plain(port).await {
                    Ok(c) => break c,
                    // The kernel's accept queue overflowed: try again, as a client would.
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            };
            let admitted = match c.line_within(Duration::from_secs(60)).await {
                Ok(line) => {
                    assert!(line.starts_with("* OK"), "{line}");
                    true
                }
                Err(e) => {
                    assert_ne!(
                        e.kind(),
                        std::io::ErrorKind::TimedOut,
                        "neither greeted nor closed"
                    );
                    false
                }
            };
            answers.send(admitted).unwrap();
            let _ = gate.acquire().await;
            drop(c);
        }));
    }
    let mut admitted = 0;
    for _ in 0..many {
        let answer = tokio::time::timeout(Duration::from_secs(120), answered.recv())
            .await
            .expect("every connection is answered in time")
            .unwrap();
        admitted += usize::from(answer);
    }
    let answer_time = started.elapsed();
    let fds_during = open_fds(pid);
    gate.add_permits(many);
    for t in tasks {
        t.await.unwrap();
    }
    let metrics = h.admin_get("/metrics").await;
    let refused = metric(&metrics, "oxbridge_connections_refused_total", &[]) as usize;
    eprintln!(
        "{many} connections answered in {answer_time:?}: {admitted} admitted, {refused} refused; \
         oxbridge descriptors {fds_before} before, {fds_during} with all of them open"
    );
    assert_eq!(admitted, LIMIT - 3, "the three good sessions hold the rest");
    assert_eq!(refused, many - admitted);
    assert!(
        fds_during < fds_before + 2 * LIMIT + 16,
        "{fds_during} descriptors"
    );

    // The good sessions lived through it, and a new client gets in once the crowd is gone.
    good.finish(&h).await;
    let mut c = Conn::tls(&h, h.imaps_port).await.unwrap();
    c.line().await.unwrap();
    c.send(format!("a LOGIN {IMAP_USER} {GOOD_PASSWORD}\r\nb LOGOUT\r\n").as_bytes())
        .await
        .unwrap();
    assert!(c.until("a ").await.unwrap().starts_with("a OK"));
    sampler.abort();
    let rss_max = max_rss.load(Ordering::Relaxed);
    eprintln!("oxbridge RSS: {rss_before} KiB before, at most {rss_max} KiB during");
    assert!(
        rss_max < rss_before + 64 * 1024,
        "{rss_before} -> {rss_max} KiB"
    );
    assert_no_panic(&h);
}
