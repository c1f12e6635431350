//! Soak run (not part of CI: ignored unless asked for). A bounded mixed load on every
//! protocol — logins and spliced sessions that move mail, wrong passwords and throttling,
//! hostile input, idle sessions held open throughout — while oxbridge's resident memory and
//! open descriptors are sampled. After warm-up both must stay flat: a leak of a few bytes
//! per session shows as a slope over thousands of sessions.
//!
//! ```text
//! SOAK_SECS=900 SOAK_OUT=/tmp/soak.csv \
//!   cargo test -p oxbridge --release --test soak -- --ignored --nocapture
//! ```
//!
//! `SOAK_SECS` is the load's duration (default 900, the issue's 15 minutes); `SOAK_OUT`, if
//! set, receives the samples as CSV (seconds, RSS KiB, descriptors, logins, sessions).

#![allow(clippy::unwrap_used)] // a soak run: a panic is the failure report

mod hostile_support;
mod support;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hostile_support::{assert_no_panic, metric, open_fds, rss_kib, set_limits, Conn};
use support::Harness;

const PASSWORD: &str = "soak-password";
/// Mailboxes share the load: Exchange (and the fake) cap connections per mailbox.
const USERS: usize = 8;

fn user(i: usize) -> String {
    format!("soak{}", i % USERS)
}

fn mailbox(i: usize) -> String {
    format!("soak{}@contoso.onmicrosoft.com", i % USERS)
}

/// What the load did, for the report.
#[derive(Default)]
struct Counters {
    sessions: AtomicU64,
    failures: AtomicU64,
    errors: AtomicU64,
}

async fn imap_session(h: &Harness, i: usize, message: &[u8]) -> std::io::Result<()> {
    let mut c = Conn::tls(h, h.imaps_port).await?;
    c.line().await?;
    c.send(format!("a LOGIN {} {PASSWORD}\r\nb SELECT INBOX\r\n", user(i)).as_bytes())
        .await?;
    let login = c.until("a ").await?;
    if !login.starts_with("a OK") {
        return Err(std::io::Error::other(login));
    }
    c.until("b OK").await?;
    c.send(b"c UID FETCH 1 BODY.PEEK[]\r\n").await?;
    // Mail the SMTP load delivers shows up as untagged EXISTS first.
    let mut head = c.line().await?;
    while !head.contains("FETCH") {
        head = c.line().await?;
    }
    if !head.ends_with(&format!("{{{}}}\r\n", message.len())) {
        return Err(std::io::Error::other(head));
    }
    if c.exact(message.len()).await? != message {
        return Err(std::io::Error::other("fetched message differs"));
    }
    c.until("c OK").await?;
    c.send(b"d LOGOUT\r\n").await?;
    c.until("d OK").await?;
    Ok(())
}

async fn pop3_session(h: &Harness, i: usize) -> std::io::Result<()> {
    let mut c = Conn::tls(h, h.pop3s_port).await?;
    c.line().await?;
    c.send(format!("USER {}\r\nPASS {PASSWORD}\r\nSTAT\r\nRETR 1\r\n", user(i)).as_bytes())
        .await?;
    c.line().await?;
    let pass = c.line().await?;
    if !pass.starts_with("+OK") {
        return Err(std::io::Error::other(pass));
    }
    c.line().await?;
    c.until(".\r\n").await?;
    c.send(b"QUIT\r\n").await?;
    c.line().await?;
    Ok(())
}

async fn smtp_session(h: &Harness, i: usize) -> std::io::Result<()> {
    let mut c = Conn::tls(h, h.smtps_port).await?;
    c.until("220 ").await?;
    c.send(b"EHLO soak.example\r\n").await?;
    c.until("250 ").await?;
    let plain = oxbridge_wire::sasl::encode_base64(format!("\0{}\0{PASSWORD}", user(i)).as_bytes());
    c.send(format!("AUTH PLAIN {plain}\r\n").as_bytes()).await?;
    let auth = c.line().await?;
    if !auth.starts_with("235") {
        return Err(std::io::Error::other(auth));
    }
    let to = mailbox(i + 1);
    c.send(
        format!(
            "MAIL FROM:<{}>\r\nRCPT TO:<{to}>\r\nDATA\r\nSubject: soak {i}\r\n\r\nload\r\n.\r\nQUIT\r\n",
            mailbox(i)
        )
        .as_bytes(),
    )
    .await?;
    let rest = c
        .rest_until_closed(Duration::from_secs(30))
        .await
        .unwrap_or_default();
    if !rest.contains("221") {
        return Err(std::io::Error::other(rest));
    }
    Ok(())
}

/// Failures of every kind: a wrong password, garbage, an oversized line, a cancelled AUTH,
/// a client that connects and leaves.
async fn bad_session(h: &Harness, i: usize) -> std::io::Result<()> {
    match i % 5 {
        0 => {
            let mut c = Conn::tls(h, h.imaps_port).await?;
            c.line().await?;
            // One name that only ever fails, so its failures add up to throttling.
            c.send(format!("a LOGIN soak-guesser wrong{i}\r\n").as_bytes())
                .await?;
            c.until("a ").await?;
        }
        1 => {
            let mut c = Conn::tls(h, h.pop3s_port).await?;
            c.line().await?;
            c.send(b"\x00\xff garbage\r\nAUTH PLAIN !!!\r\nQUIT\r\n")
                .await?;
            c.rest_until_closed(Duration::from_secs(10)).await;
        }
        2 => {
            let mut c = Conn::tls(h, h.smtps_port).await?;
            c.until("220 ").await?;
            let _ = c.send(&vec![b'x'; 64 * 1024]).await;
            c.rest_until_closed(Duration::from_secs(10)).await;
        }
        3 => {
            let mut c = Conn::tls(h, h.imaps_port).await?;
            c.line().await?;
            c.send(b"a AUTHENTICATE LOGIN\r\n*\r\nb LOGOUT\r\n").await?;
            c.rest_until_closed(Duration::from_secs(10)).await;
        }
        _ => {
            let _ = Conn::plain(h.starttls_port).await?;
        }
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
#[ignore = "a soak run takes minutes: run it on purpose (see the module doc)"]
async fn soak() {
    let secs: u64 = std::env::var("SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(900);
    let mut h = Harness::start().await;
    h.add_pop3();
    h.add_smtp();
    set_limits(&h, "max_connections = 2000");
    // Wrong passwords are part of the load: throttle them per name (events in the audit
    // log) but never lock the shared test address out.
    h.append_config(
        "[throttle]\nuser_delay_after = 3\nbase_delay_millis = 50\nmax_delay_secs = 1\n\
         address_delay_after = 1000000\naddress_lock_after = 0\nuser_lock_after = 0\n",
    );
    let message = b"Subject: soak\r\n\r\nThe soak run fetches this again and again.\r\n".to_vec();
    for i in 0..USERS {
        h.add_delegated_account(&user(i), PASSWORD, &mailbox(i))
            .await;
        h.fake.directory().deliver(&mailbox(i), "INBOX", &message);
    }
    h.serve().await;
    let pid = h.pid().unwrap();
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(AtomicBool::new(false));
    let h = Arc::new(h);

    // Idle sessions held for the whole run.
    let mut idle = Vec::new();
    for i in 0..16 {
        let mut c = Conn::tls(&h, h.imaps_port).await.unwrap();
        c.line().await.unwrap();
        c.send(format!("a LOGIN {} {PASSWORD}\r\n", user(i)).as_bytes())
            .await
            .unwrap();
        assert!(c.until("a ").await.unwrap().starts_with("a OK"));
        idle.push(c);
    }

    // The load: workers per kind, each looping until told to stop.
    let mut workers = Vec::new();
    for (kind, count) in [("imap", 4), ("pop3", 3), ("smtp", 2), ("bad", 3)] {
        for w in 0..count {
            let (h, counters, stop, message) =
                (h.clone(), counters.clone(), stop.clone(), message.clone());
            workers.push(tokio::spawn(async move {
                let mut i = w;
                while !stop.load(Ordering::Relaxed) {
                    let result = match kind {
                        "imap" => imap_session(&h, i, &message).await,
                        "pop3" => pop3_session(&h, i).await,
                        "smtp" => smtp_session(&h, i).await,
                        _ => bad_session(&h, i).await,
                    };
                    let counter = match (kind, &result) {
                        ("bad", _) => &counters.failures,
                        (_, Ok(())) => &counters.sessions,
                        (_, Err(e)) => {
                            eprintln!("{kind} session failed: {e}");
                            &counters.errors
                        }
                    };
                    counter.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            }));
        }
    }

    // Samples every 5 s.
    let started = Instant::now();
    let mut samples: Vec<(u64, u64, usize, u64)> = Vec::new();
    let mut csv = String::from("seconds,rss_kib,fds,sessions,failures,errors\n");
    while started.elapsed() < Duration::from_secs(secs) {
        tokio::time::sleep(Duration::from_secs(5)).await;
        let t = started.elapsed().as_secs();
        let (rss, fds) = (rss_kib(pid), open_fds(pid));
        let sessions = counters.sessions.load(Ordering::Relaxed);
        let failures = counters.failures.load(Ordering::Relaxed);
        let errors = counters.errors.load(Ordering::Relaxed);
        samples.push((t, rss, fds, sessions));
        csv.push_str(&format!("{t},{rss},{fds},{sessions},{failures},{errors}\n"));
        eprintln!("{t:>5}s rss {rss:>7} KiB fds {fds:>5} sessions {sessions:>7} failures {failures:>6} errors {errors}");
    }
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    // The idle sessions still work after all that.
    for (i, c) in idle.iter_mut().enumerate() {
        c.send(format!("n{i} NOOP\r\n").as_bytes()).await.unwrap();
        assert!(c.until(&format!("n{i} ")).await.unwrap().contains("OK"));
    }
    drop(idle);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let fds_after = open_fds(pid);
    if let Ok(path) = std::env::var("SOAK_OUT") {
        std::fs::write(path, &csv).unwrap();
    }

    // Flat after warm-up: the last quarter's mean against the second quarter's.
    let quarter = samples.len() / 4;
    assert!(quarter >= 1, "run longer than 20 s for a verdict");
    let mean = |s: &[(u64, u64, usize, u64)]| s.iter().map(|x| x.1).sum::<u64>() / s.len() as u64;
    let warm = mean(&samples[quarter..2 * quarter]);
    let last = mean(&samples[samples.len() - quarter..]);
    let max_fds = samples.iter().map(|s| s.2).max().unwrap();
    let sessions = counters.sessions.load(Ordering::Relaxed);
    let errors = counters.errors.load(Ordering::Relaxed);
    let metrics = h.admin_get("/metrics").await;
    eprintln!(
        "soak {secs}s: {sessions} good sessions, {} failures, {errors} errors; RSS after warm-up \
         {warm} KiB, at the end {last} KiB; descriptors at most {max_fds}, {fds_after} after; \
         {} logins throttled",
        counters.failures.load(Ordering::Relaxed),
        metric(&metrics, "oxbridge_login_throttled_total", &[])
    );
    assert!(sessions > 0);
    assert!(
        errors * 100 <= sessions,
        "more than 1% of good sessions failed"
    );
    assert!(
        last <= warm + warm / 10 + 8 * 1024,
        "memory grew after warm-up: {warm} KiB -> {last} KiB"
    );
    assert!(fds_after < 64, "{fds_after} descriptors left open");
    assert_no_panic(&h);
}
