//! What the fuzz targets share: a stand-in for the session driver that plays a front-end
//! state machine exactly as `oxbridge_server::session::drive` does (greeting, reads split at
//! arbitrary points, STARTTLS, login outcomes), and checks the invariants the driver relies
//! on after every step:
//!
//! - the input buffer the front-end leaves behind stays within its limits (the driver reads
//!   more into it without bound otherwise: a memory exhaustion attack);
//! - every reply is whole CRLF-terminated lines, and there are not more of them than the
//!   pre-auth command budget allows (a budget a client can dodge is a CPU and bandwidth
//!   amplifier);
//! - no login is requested before TLS unless the listener allows plaintext;
//! - while a login is with the driver, nothing is consumed (pipelined bytes belong to the
//!   upstream once the login succeeds);
//! - after `Close`, the front-end stays closed and silent.
//!
//! A panic anywhere is the failure libFuzzer reports.

use bytes::BytesMut;
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use oxbridge_wire::{FrontEnd, LoginRejection, Next, RelayRejection};

/// What the harness checks a front-end against.
#[derive(Debug, Clone, Copy)]
pub struct Bounds {
    /// Reply lines starting with this are continuations (`+ `, `334 `): they are bounded by
    /// the exchange or literal that asked for them, not by the command budget.
    pub continuation: &'static [u8],
    /// Most bytes the front-end may leave buffered when it asks for more input.
    pub max_buffered: usize,
    /// Most reply lines one connection may produce before it is closed.
    pub max_lines: usize,
    /// The connection starts in TLS (implicit TLS listener).
    pub tls: bool,
    /// The listener accepts passwords without TLS.
    pub allow_plaintext: bool,
}

/// A small value in `lo..=hi` from the fuzz input (or `lo` once it is exhausted).
pub fn pick(u: &mut Unstructured<'_>, lo: usize, hi: usize) -> usize {
    u.int_in_range(lo..=hi).unwrap_or(lo)
}

const REJECTIONS: [LoginRejection; 5] = [
    LoginRejection::BadCredentials,
    LoginRejection::NotPermitted,
    LoginRejection::GrantRevoked,
    LoginRejection::UpstreamRejected,
    LoginRejection::Unavailable,
];

/// Replies an upstream might refuse a token with (SMTP passes them through verbatim).
const UPSTREAM_REPLIES: [&str; 5] = [
    "535 5.7.3 Authentication unsuccessful [SN2PR00CA0018.namprd00.prod.outlook.com]",
    "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.",
    "454-4.7.0 first\r\n454 4.7.0 Temporary authentication failure",
    "250 not a refusal",
    "535 bad\r\n250 injected",
];

/// Splits the fuzz input left after the settings into the control bytes (chunk sizes, login
/// outcomes) and the client's bytes: a two-byte length, then that many control bytes. A
/// seed made of a real transcript behind `[0, 0]` is replayed one byte at a time.
pub fn split_input(mut u: Unstructured<'_>) -> (Unstructured<'_>, &[u8]) {
    let control_len = pick(&mut u, 0, 4096);
    let control = u.bytes(control_len.min(u.len())).unwrap_or_default();
    (Unstructured::new(control), u.take_rest())
}

/// Plays `front` against `client` (the client's bytes), split at points `control` chooses,
/// answering its login requests with outcomes `control` chooses.
pub fn play<F: FrontEnd>(
    front: &mut F,
    u: &mut Unstructured<'_>,
    mut client: &[u8],
    bounds: Bounds,
) -> Result<()> {
    let mut input = BytesMut::new();
    let mut out = Vec::new();
    let mut lines = 0usize;
    let mut tls = bounds.tls;
    front.greeting(&mut out);
    lines += check_lines(&out, bounds.continuation);
    out.clear();
    // What a refused login or relay asked for, to act on like any other `Next`. As in the
    // driver, `Read` after a refusal means "call receive again" (pipelined commands may be
    // buffered), so only `Close` is kept.
    let mut pending: Option<Next> = None;
    loop {
        let next = match pending.take() {
            Some(next) => next,
            None => {
                let next = front.receive(&mut input, &mut out);
                lines += check_lines(&out, bounds.continuation);
                out.clear();
                next
            }
        };
        assert!(
            lines <= bounds.max_lines,
            "{lines} reply lines: the pre-auth budget was dodged"
        );
        match next {
            Next::Read => {
                assert!(
                    input.len() <= bounds.max_buffered,
                    "{} bytes left buffered (bound {})",
                    input.len(),
                    bounds.max_buffered
                );
                if client.is_empty() {
                    return Ok(());
                }
                let want = pick(u, 1, 600).min(client.len());
                let (chunk, rest) = client.split_at(want);
                input.extend_from_slice(chunk);
                client = rest;
            }
            Next::StartTls => {
                assert!(!tls, "STARTTLS accepted on a TLS connection");
                // The driver discards whatever was pipelined behind STARTTLS.
                input.clear();
                front.tls_started();
                tls = true;
            }
            Next::Login(_) => {
                assert!(
                    tls || bounds.allow_plaintext,
                    "a password login was requested before TLS"
                );
                waiting_consumes_nothing(front, &mut input, u);
                let why = REJECTIONS[pick(u, 0, REJECTIONS.len() - 1)];
                let next = if pick(u, 0, 3) == 0 {
                    let reply = UPSTREAM_REPLIES[pick(u, 0, UPSTREAM_REPLIES.len() - 1)];
                    front.upstream_refused(reply, &mut out)
                } else {
                    front.login_failed(why, &mut out)
                };
                pending = refused(next);
                lines += check_lines(&out, bounds.continuation);
                out.clear();
            }
            Next::Relay { request, replay } => {
                assert!(replay.ends_with(b"\r\n"), "a relay replays whole lines");
                assert!(!request.sender.contains(['\r', '\n']));
                waiting_consumes_nothing(front, &mut input, u);
                pending = refused(match pick(u, 0, 3) {
                    0 => front.relay_refused(RelayRejection::NoRule, &mut out),
                    1 => front.relay_refused(RelayRejection::SenderNotAllowed, &mut out),
                    2 => front.login_failed(REJECTIONS[pick(u, 0, 4)], &mut out),
                    _ => front.upstream_refused(UPSTREAM_REPLIES[pick(u, 0, 4)], &mut out),
                });
                lines += check_lines(&out, bounds.continuation);
                out.clear();
            }
            Next::Close => {
                let mut after = Vec::new();
                input.extend_from_slice(b"a NOOP\r\nNOOP\r\n");
                assert!(matches!(front.receive(&mut input, &mut after), Next::Close));
                assert!(after.is_empty(), "a closed front-end still answered");
                return Ok(());
            }
        }
    }
}

/// What the driver does after a refusal: `Close` is acted on, anything else (`Read`) means
/// the loop calls `receive` again.
fn refused(next: Next) -> Option<Next> {
    match next {
        Next::Close => Some(Next::Close),
        Next::Read => None,
        other => panic!("{other:?} after a refused login"),
    }
}

/// While the driver holds a login, the front-end must neither answer nor consume input:
/// what the client pipelined behind its login goes to the upstream if the login succeeds.
fn waiting_consumes_nothing<F: FrontEnd>(
    front: &mut F,
    input: &mut BytesMut,
    u: &mut Unstructured<'_>,
) {
    if pick(u, 0, 1) == 0 {
        return;
    }
    let before = input.clone();
    let mut out = Vec::new();
    let next = front.receive(input, &mut out);
    assert!(
        matches!(next, Next::Read),
        "{next:?} while a login is pending"
    );
    assert!(out.is_empty(), "answered while a login is pending");
    assert_eq!(*input, before, "consumed input while a login is pending");
}

/// Checks that `out` is whole CRLF-terminated lines without stray CR or LF; returns how many.
pub fn check_reply(out: &[u8]) -> usize {
    check_lines(out, b"\x00")
}

/// Like [`check_reply`], but lines starting with `continuation` are not counted.
pub fn check_lines(out: &[u8], continuation: &[u8]) -> usize {
    if out.is_empty() {
        return 0;
    }
    assert!(
        out.ends_with(b"\r\n"),
        "reply does not end with CRLF: {out:?}"
    );
    let mut count = 0;
    for line in out.split_inclusive(|&b| b == b'\n') {
        let body = &line[..line.len() - 2];
        assert!(
            line.ends_with(b"\r\n") && !body.contains(&b'\r') && !body.contains(&b'\n'),
            "malformed reply line {line:?}"
        );
        if !line.starts_with(continuation) {
            count += 1;
        }
    }
    count
}
