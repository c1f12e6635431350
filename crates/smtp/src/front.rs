//! The client-facing SMTP dialog before login, as a sans-IO state machine.
//!
//! Which replies are oxbridge's and which the upstream's: everything up to and including the
//! `235` after AUTH is oxbridge's; after it, every byte is the upstream's. In a relay session
//! (no AUTH, a relay rule for the client's network) oxbridge answers up to the client's
//! `MAIL FROM`, then replays that command upstream, so the upstream's reply to it (`250 2.1.0
//! Sender OK`, or its refusal) is the first thing the client hears from the upstream. If the
//! relay is refused before that, the refusal (`530`, `553`, `451`, `550`) is oxbridge's.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::{Buf, BytesMut};
use oxbridge_wire::line::{next_line, trim_eol};
use oxbridge_wire::login::audit_refused_without_tls;
use oxbridge_wire::password_sasl::{PasswordExchange, PasswordMechanism, Step};
use oxbridge_wire::sasl::SaslError;
use oxbridge_wire::{
    FrontEnd, Login, LoginRejection, Next, Protocol, RelayRejection, RelayRequest, Secret,
    UpstreamSession,
};

use crate::ehlo::Extensions;
use crate::parse::{parse_command, Command};
use crate::reply::Reply;

/// Limits and policy of one SMTP listener.
#[derive(Debug, Clone)]
pub struct SmtpSettings {
    /// The connection is TLS from the start (port 465).
    pub implicit_tls: bool,
    /// STARTTLS is offered on a plain connection (port 587).
    pub starttls: bool,
    /// Offer and accept AUTH on a connection without TLS (operator's explicit choice).
    pub allow_plaintext: bool,
    /// The name oxbridge gives in its greeting and EHLO reply.
    pub hostname: String,
    /// Longest command line, in bytes. RFC 4954 lets an AUTH line reach 12,288 octets.
    pub max_line: usize,
    /// Commands allowed before a successful login.
    pub max_commands: u32,
    /// Failed logins allowed on one connection.
    pub max_failed_logins: u32,
}

impl Default for SmtpSettings {
    fn default() -> Self {
        Self {
            implicit_tls: false,
            starttls: true,
            allow_plaintext: false,
            hostname: crate::HOSTNAME.into(),
            max_line: 16 * 1024,
            max_commands: 64,
            max_failed_logins: 3,
        }
    }
}

/// Where the dialog is.
#[derive(Debug)]
enum State {
    /// Waiting for a command line.
    Command,
    /// In an AUTH exchange, waiting for a client response line.
    Auth(PasswordExchange),
    /// Skipping the data of a BDAT sent before login: this many bytes are left.
    Discard(u64),
    /// An AUTH login is with the driver; no input is processed until it answers.
    LoggingIn,
    /// A relay request (the client's `MAIL FROM`) is with the driver.
    Relaying,
    /// Closing.
    Done,
}

/// One client connection's pre-auth SMTP dialog.
#[derive(Debug)]
pub struct SmtpFrontEnd {
    settings: SmtpSettings,
    peer: SocketAddr,
    /// What the upstream offers, to advertise in EHLO.
    extensions: Arc<Extensions>,
    tls: bool,
    /// EHLO or HELO was accepted since the start or since STARTTLS.
    greeted: bool,
    state: State,
    commands: u32,
    failed_logins: u32,
}

impl SmtpFrontEnd {
    pub fn new(settings: SmtpSettings, peer: SocketAddr, extensions: Arc<Extensions>) -> Self {
        Self {
            tls: settings.implicit_tls,
            settings,
            peer,
            extensions,
            greeted: false,
            state: State::Command,
            commands: 0,
            failed_logins: 0,
        }
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.settings.allow_plaintext
    }

    fn reply(out: &mut Vec<u8>, line: &str) {
        out.extend_from_slice(line.as_bytes());
        out.extend_from_slice(b"\r\n");
    }

    fn close(&mut self, out: &mut Vec<u8>, line: &str) -> Next {
        Self::reply(out, line);
        self.state = State::Done;
        Next::Close
    }

    fn ehlo_reply(&self) -> String {
        let mut lines = vec![format!(
            "{} Hello [{}]",
            self.settings.hostname,
            self.peer.ip()
        )];
        lines.extend(
            self.extensions
                .advertised(!self.tls && self.settings.starttls, self.login_allowed()),
        );
        Reply { code: 250, lines }.to_wire()
    }

    /// Handles one command line; `None` means keep reading.
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Next> {
        self.commands += 1;
        if self.commands > self.settings.max_commands {
            let text = format!(
                "421 4.7.0 {} Too many commands without login, closing connection",
                self.settings.hostname
            );
            return Some(self.close(out, &text));
        }
        match parse_command(line) {
            Command::Ehlo(_) => {
                self.greeted = true;
                Self::reply(out, &self.ehlo_reply());
            }
            Command::Helo(_) => {
                self.greeted = true;
                let text = format!("250 {} Hello [{}]", self.settings.hostname, self.peer.ip());
                Self::reply(out, &text);
            }
            Command::StartTls if self.tls => Self::reply(out, "503 5.5.1 TLS already active"),
            Command::StartTls if !self.settings.starttls => {
                Self::reply(out, "502 5.5.1 STARTTLS not available")
            }
            Command::StartTls => {
                Self::reply(out, "220 2.0.0 Ready to start TLS");
                // RFC 3207 §4.2: everything learned before TLS is forgotten; EHLO again.
                self.greeted = false;
                return Some(Next::StartTls);
            }
            Command::Auth { .. } | Command::Mail { .. } if !self.greeted => {
                Self::reply(out, "503 5.5.1 Send EHLO or HELO first")
            }
            Command::Auth {
                mechanism,
                initial_response,
            } if !self.login_allowed() => {
                // SASL PLAIN's initial response carries the password.
                let password_sent = mechanism == "PLAIN" && initial_response.is_some();
                audit_refused_without_tls(Protocol::Smtp, self.peer, None, password_sent);
                Self::reply(out, "530 5.7.0 Must issue a STARTTLS command first")
            }
            Command::Auth {
                mechanism,
                initial_response,
            } => {
                let Some(mechanism) = PasswordMechanism::from_name(&mechanism) else {
                    Self::reply(out, "504 5.5.4 Unrecognized authentication type");
                    return None;
                };
                let (exchange, step) =
                    PasswordExchange::start(mechanism, initial_response.as_deref());
                return self.sasl_step(exchange, step, out);
            }
            Command::Mail { sender } => {
                let mut replay = line.to_vec();
                replay.extend_from_slice(b"\r\n");
                self.state = State::Relaying;
                return Some(Next::Relay {
                    request: RelayRequest {
                        sender,
                        protocol: Protocol::Smtp,
                        peer: self.peer,
                    },
                    replay,
                });
            }
            Command::Rcpt | Command::Data => Self::reply(out, "503 5.5.1 Need MAIL command"),
            Command::Bdat { size } => {
                // The chunk follows the command at once; it must be skipped, not executed.
                Self::reply(out, "503 5.5.1 Need MAIL command");
                self.state = State::Discard(size);
            }
            Command::Rset | Command::Noop => Self::reply(out, "250 2.0.0 OK"),
            Command::Help => Self::reply(
                out,
                "214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RSET NOOP HELP QUIT",
            ),
            Command::Vrfy => Self::reply(out, "252 2.5.2 Cannot VRFY user"),
            Command::Expn => Self::reply(out, "502 5.5.1 EXPN not available"),
            Command::Quit => {
                let text = format!(
                    "221 2.0.0 {} Service closing transmission channel",
                    self.settings.hostname
                );
                return Some(self.close(out, &text));
            }
            Command::Syntax => {
                Self::reply(out, "501 5.5.4 Syntax error in parameters or arguments")
            }
            Command::Unknown => Self::reply(out, "500 5.5.1 Command unrecognized"),
        }
        None
    }

    /// Acts on one step of an AUTH exchange.
    fn sasl_step(
        &mut self,
        exchange: PasswordExchange,
        step: Step,
        out: &mut Vec<u8>,
    ) -> Option<Next> {
        self.state = State::Command;
        match step {
            Step::Challenge(challenge) => {
                Self::reply(out, &format!("334 {challenge}"));
                self.state = State::Auth(exchange);
                None
            }
            Step::Done { user, password } => Some(self.login(user, password)),
            Step::Failed(SaslError::Cancelled) => {
                Self::reply(out, "501 5.7.0 Authentication cancelled");
                None
            }
            // Refused without the driver: go on with what the client pipelined behind it
            // (returning `Read` would leave whole commands waiting in the driver's buffer;
            // found by fuzz/pop3_front on the same path there).
            Step::Failed(SaslError::UserNotUtf8) => {
                match self.auth_failed(LoginRejection::BadCredentials, out) {
                    Next::Read => None,
                    next => Some(next),
                }
            }
            Step::Failed(SaslError::Base64) => {
                Self::reply(out, "501 5.5.2 Cannot Base64-decode client response");
                None
            }
            Step::Failed(SaslError::MalformedPlain) => {
                Self::reply(out, "501 5.5.2 Malformed authentication response");
                None
            }
        }
    }

    fn login(&mut self, user: String, password: Secret) -> Next {
        self.state = State::LoggingIn;
        Next::Login(Login {
            user,
            password,
            protocol: Protocol::Smtp,
            peer: self.peer,
        })
    }

    /// Writes `line` as the answer to a failed AUTH and counts the failure.
    fn auth_refused(&mut self, line: &str, temporary: bool, out: &mut Vec<u8>) -> Next {
        Self::reply(out, line);
        self.state = State::Command;
        if !temporary {
            self.failed_logins += 1;
            if self.failed_logins >= self.settings.max_failed_logins {
                let text = format!(
                    "421 4.7.0 {} Too many failed authentication attempts, closing connection",
                    self.settings.hostname
                );
                return self.close(out, &text);
            }
        }
        Next::Read
    }

    fn auth_failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        let line = match why {
            LoginRejection::Unavailable => {
                "454 4.7.0 Temporary authentication failure, try again later"
            }
            LoginRejection::BadCredentials => "535 5.7.8 Authentication credentials invalid",
            LoginRejection::NotPermitted => "535 5.7.8 This account may not send mail",
            LoginRejection::GrantRevoked => {
                "535 5.7.8 The mailbox sign-in has expired; an administrator must renew it"
            }
            LoginRejection::UpstreamRejected => {
                "535 5.7.8 The mail server refused the mailbox login"
            }
        };
        self.auth_refused(line, why.is_temporary(), out)
    }

    /// Answers the client's `MAIL FROM` when its relay login failed after a rule matched.
    fn relay_failed(&mut self, line: &str, out: &mut Vec<u8>) -> Next {
        Self::reply(out, line);
        self.state = State::Command;
        Next::Read
    }
}

impl FrontEnd for SmtpFrontEnd {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        let text = format!("220 {} ESMTP oxbridge ready", self.settings.hostname);
        Self::reply(out, &text);
    }

    fn receive(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Next {
        loop {
            match std::mem::replace(&mut self.state, State::Command) {
                State::Done => {
                    self.state = State::Done;
                    return Next::Close;
                }
                waiting @ (State::LoggingIn | State::Relaying) => {
                    self.state = waiting;
                    return Next::Read;
                }
                State::Discard(left) => {
                    let take = usize::try_from(left).unwrap_or(usize::MAX).min(input.len());
                    input.advance(take);
                    let left = left - take as u64;
                    if left > 0 {
                        self.state = State::Discard(left);
                        return Next::Read;
                    }
                }
                State::Auth(mut exchange) => {
                    let len = match next_line(input, self.settings.max_line) {
                        Ok(Some(len)) => len,
                        Ok(None) => {
                            self.state = State::Auth(exchange);
                            return Next::Read;
                        }
                        Err(_) => {
                            return self
                                .close(out, "500 5.5.6 Authentication Exchange line is too long")
                        }
                    };
                    let line = input.split_to(len);
                    let step = exchange.respond(trim_eol(&line));
                    if let Some(next) = self.sasl_step(exchange, step, out) {
                        return next;
                    }
                }
                State::Command => {
                    let len = match next_line(input, self.settings.max_line) {
                        Ok(Some(len)) => len,
                        Ok(None) => return Next::Read,
                        Err(_) => return self.close(out, "500 5.5.2 Line too long"),
                    };
                    let line = input.split_to(len);
                    if let Some(next) = self.command(trim_eol(&line), out) {
                        return next;
                    }
                }
            }
        }
    }

    fn tls_started(&mut self) {
        self.tls = true;
        self.greeted = false;
    }

    fn login_succeeded(&mut self, _upstream: &UpstreamSession, out: &mut Vec<u8>) {
        // After a relay login the upstream answers the replayed MAIL FROM; nothing to say.
        if matches!(
            std::mem::replace(&mut self.state, State::Done),
            State::LoggingIn
        ) {
            Self::reply(out, "235 2.7.0 Authentication successful");
        }
    }

    fn login_failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        if !matches!(self.state, State::Relaying) {
            return self.auth_failed(why, out);
        }
        let line = match why {
            LoginRejection::Unavailable => {
                "451 4.7.0 Mail service temporarily unavailable, try again later"
            }
            LoginRejection::NotPermitted => "550 5.7.1 The relay account may not send mail",
            LoginRejection::GrantRevoked => {
                "550 5.7.1 The relay account's mailbox sign-in has expired; an administrator must renew it"
            }
            LoginRejection::BadCredentials | LoginRejection::UpstreamRejected => {
                "550 5.7.1 The mail server refused the relay account's login"
            }
        };
        self.relay_failed(line, out)
    }

    fn upstream_refused(&mut self, reply: &str, out: &mut Vec<u8>) -> Next {
        let Some(reply) = Reply::from_wire(reply).filter(|r| r.is_transient() || r.is_permanent())
        else {
            return self.login_failed(LoginRejection::UpstreamRejected, out);
        };
        if matches!(self.state, State::Relaying) {
            let first = Reply {
                code: reply.code,
                lines: reply.lines.into_iter().take(1).collect(),
            };
            let line = format!(
                "550 5.7.1 The mail server refused the relay account's login: {}",
                first.to_wire()
            );
            return self.relay_failed(&line, out);
        }
        // The upstream's own words: its enhanced code tells the operator what to fix.
        let temporary = reply.is_transient();
        self.auth_refused(&reply.to_wire(), temporary, out)
    }

    fn relay_refused(&mut self, why: RelayRejection, out: &mut Vec<u8>) -> Next {
        let line = match why {
            RelayRejection::NoRule => "530 5.7.0 Authentication required",
            RelayRejection::SenderNotAllowed => {
                "553 5.7.1 Sender address not allowed for relay from this network"
            }
        };
        self.relay_failed(line, out)
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        let text = format!(
            "421 4.4.2 {} Timeout waiting for client input, closing connection",
            self.settings.hostname
        );
        Self::reply(out, &text);
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        let text = format!(
            "421 4.3.2 {} Service shutting down, closing connection",
            self.settings.hostname
        );
        Self::reply(out, &text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.7:4321".parse().unwrap()
    }

    /// Exchange Online's extensions after TLS (EXCHANGE.md §2.4).
    fn exchange() -> Arc<Extensions> {
        Arc::new(Extensions::from_lines(
            [
                "SIZE 157286400",
                "PIPELINING",
                "DSN",
                "ENHANCEDSTATUSCODES",
                "AUTH LOGIN XOAUTH2",
                "8BITMIME",
                "BINARYMIME",
                "CHUNKING",
                "SMTPUTF8",
            ]
            .map(String::from),
        ))
    }

    fn front(settings: SmtpSettings) -> SmtpFrontEnd {
        SmtpFrontEnd::new(settings, peer(), exchange())
    }

    fn implicit() -> SmtpSettings {
        SmtpSettings {
            implicit_tls: true,
            starttls: false,
            ..SmtpSettings::default()
        }
    }

    fn run(front: &mut SmtpFrontEnd, input: &[u8]) -> (String, Next) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let next = front.receive(&mut buf, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), next)
    }

    /// The login the front-end asked for, or a panic naming what it did instead.
    fn expect_login(next: Next) -> Login {
        match next {
            Next::Login(login) => login,
            other => panic!("expected a login, got {other:?}"),
        }
    }

    #[test]
    fn commands_pipelined_behind_a_refused_user_name_are_answered_at_once() {
        // An AUTH whose user name is not UTF-8 is refused here; the commands behind it must
        // not wait for more input (see fuzz/pop3_front's finding).
        let mut f = front(implicit());
        let (out, next) = run(&mut f, b"EHLO x\r\nAUTH PLAIN AP8AcHc=\r\nNOOP\r\n");
        assert!(
            out.ends_with("535 5.7.8 Authentication credentials invalid\r\n250 2.0.0 OK\r\n"),
            "{out}"
        );
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn greeting_and_ehlo_before_and_after_starttls() {
        let mut f = front(SmtpSettings::default());
        let mut out = Vec::new();
        f.greeting(&mut out);
        assert_eq!(out, b"220 oxbridge ESMTP oxbridge ready\r\n");
        let (out, _) = run(&mut f, b"EHLO printer.local\r\n");
        assert_eq!(
            out,
            "250-oxbridge Hello [192.0.2.7]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n\
             250-ENHANCEDSTATUSCODES\r\n250-STARTTLS\r\n250-8BITMIME\r\n250-BINARYMIME\r\n\
             250-CHUNKING\r\n250 SMTPUTF8\r\n"
        );
        let (out, _) = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        assert_eq!(out, "530 5.7.0 Must issue a STARTTLS command first\r\n");
        let (out, next) = run(&mut f, b"STARTTLS\r\n");
        assert_eq!(out, "220 2.0.0 Ready to start TLS\r\n");
        assert!(matches!(next, Next::StartTls));
        f.tls_started();
        // The EHLO state is reset: the client must greet again.
        let (out, _) = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        assert_eq!(out, "503 5.5.1 Send EHLO or HELO first\r\n");
        let (out, _) = run(&mut f, b"EHLO printer.local\r\n");
        assert!(out.contains("250-AUTH PLAIN LOGIN\r\n"), "{out}");
        assert!(
            !out.contains("STARTTLS") && !out.contains("XOAUTH2"),
            "{out}"
        );
        let (out, _) = run(&mut f, b"STARTTLS\r\n");
        assert_eq!(out, "503 5.5.1 TLS already active\r\n");
    }

    #[test]
    fn plaintext_auth_only_when_the_operator_allows_it() {
        let mut f = front(SmtpSettings {
            starttls: false,
            allow_plaintext: true,
            ..SmtpSettings::default()
        });
        let (out, _) = run(&mut f, b"EHLO x\r\n");
        assert!(out.contains("250-AUTH PLAIN LOGIN\r\n") && !out.contains("STARTTLS"));
        let (out, _) = run(&mut f, b"STARTTLS\r\n");
        assert_eq!(out, "502 5.5.1 STARTTLS not available\r\n");
        let (_, next) = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        assert_eq!(expect_login(next).user, "demo");
    }

    #[test]
    fn helo_only_clients_get_a_plain_reply() {
        let mut f = front(implicit());
        let (out, _) = run(&mut f, b"HELO scanner\r\n");
        assert_eq!(out, "250 oxbridge Hello [192.0.2.7]\r\n");
        let (out, _) = run(&mut f, b"HELO\r\n");
        assert_eq!(out, "501 5.5.4 Syntax error in parameters or arguments\r\n");
    }

    #[test]
    fn auth_plain_and_login_with_and_without_initial_response() {
        let mut f = front(implicit());
        let (_, next) = run(&mut f, b"EHLO x\r\nAUTH PLAIN AGRlbW8AcHc=\r\n");
        let login = expect_login(next);
        assert_eq!(
            (login.user.as_str(), login.password.expose()),
            ("demo", &b"pw"[..])
        );
        assert_eq!(login.protocol, Protocol::Smtp);

        let mut f = front(implicit());
        let (out, _) = run(&mut f, b"EHLO x\r\nAUTH PLAIN\r\n");
        assert!(out.ends_with("334 \r\n"), "{out}");
        let (_, next) = run(&mut f, b"AGRlbW8AcHc=\r\n");
        assert_eq!(expect_login(next).user, "demo");

        let mut f = front(implicit());
        let (out, _) = run(&mut f, b"EHLO x\r\nauth login\r\n");
        assert!(out.ends_with("334 VXNlcm5hbWU6\r\n"), "{out}");
        let (out, _) = run(&mut f, b"ZGVtbw==\r\n");
        assert_eq!(out, "334 UGFzc3dvcmQ6\r\n");
        let (_, next) = run(&mut f, b"cHc=\r\n");
        assert_eq!(expect_login(next).password.expose(), b"pw");

        let mut f = front(implicit());
        let (out, _) = run(&mut f, b"EHLO x\r\nAUTH LOGIN ZGVtbw==\r\n");
        assert!(out.ends_with("334 UGFzc3dvcmQ6\r\n"), "{out}");
        let (_, next) = run(&mut f, b"cHc=\r\n");
        assert_eq!(expect_login(next).user, "demo");
    }

    #[test]
    fn auth_cancel_garbage_and_unknown_mechanisms() {
        let mut f = front(implicit());
        let (out, _) = run(&mut f, b"EHLO x\r\nAUTH PLAIN\r\n*\r\n");
        assert!(
            out.ends_with("334 \r\n501 5.7.0 Authentication cancelled\r\n"),
            "{out}"
        );
        let (out, _) = run(&mut f, b"AUTH LOGIN\r\n*\r\n");
        assert_eq!(
            out,
            "334 VXNlcm5hbWU6\r\n501 5.7.0 Authentication cancelled\r\n"
        );
        let (out, _) = run(&mut f, b"AUTH PLAIN !!!\r\n");
        assert_eq!(out, "501 5.5.2 Cannot Base64-decode client response\r\n");
        let (out, _) = run(&mut f, b"AUTH PLAIN bm9udWw=\r\n");
        assert_eq!(out, "501 5.5.2 Malformed authentication response\r\n");
        let (out, _) = run(&mut f, b"AUTH XOAUTH2 abc\r\nAUTH CRAM-MD5\r\n");
        assert_eq!(
            out,
            "504 5.5.4 Unrecognized authentication type\r\n504 5.5.4 Unrecognized authentication type\r\n"
        );
        let (out, next) = run(&mut f, b"NOOP\r\n");
        assert_eq!(out, "250 2.0.0 OK\r\n");
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn login_outcomes_become_rfc_3463_replies() {
        let mut f = front(implicit());
        let _ = run(&mut f, b"EHLO x\r\nAUTH PLAIN AGRlbW8AcHc=\r\n");
        let mut out = Vec::new();
        assert!(matches!(
            f.login_failed(LoginRejection::Unavailable, &mut out),
            Next::Read
        ));
        assert_eq!(
            out,
            b"454 4.7.0 Temporary authentication failure, try again later\r\n"
        );
        for (why, text) in [
            (
                LoginRejection::BadCredentials,
                "535 5.7.8 Authentication credentials invalid\r\n",
            ),
            (
                LoginRejection::GrantRevoked,
                "535 5.7.8 The mailbox sign-in has expired; an administrator must renew it\r\n",
            ),
        ] {
            let _ = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
            let mut out = Vec::new();
            assert!(matches!(f.login_failed(why, &mut out), Next::Read));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
        // The third permanent failure ends the connection.
        let _ = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        let mut out = Vec::new();
        assert!(matches!(
            f.login_failed(LoginRejection::BadCredentials, &mut out),
            Next::Close
        ));
        assert!(String::from_utf8(out).unwrap().ends_with(
            "421 4.7.0 oxbridge Too many failed authentication attempts, closing connection\r\n"
        ));
    }

    #[test]
    fn the_upstreams_refusal_passes_through() {
        let mut f = front(implicit());
        let _ = run(&mut f, b"EHLO x\r\nAUTH PLAIN AGRlbW8AcHc=\r\n");
        let text = "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant. Visit https://aka.ms/smtp_auth_disabled for more information. [MN2PR05CA0004.namprd05.prod.outlook.com 2023-09-12T20:59:57.214Z 08DBB276B7E699C4]";
        let mut out = Vec::new();
        assert!(matches!(f.upstream_refused(text, &mut out), Next::Read));
        assert_eq!(out, format!("{text}\r\n").into_bytes());
        // Something that is not a reply is not passed through.
        let _ = run(&mut f, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        let mut out = Vec::new();
        f.upstream_refused("AUTHENTICATE failed.", &mut out);
        assert_eq!(
            out,
            b"535 5.7.8 The mail server refused the mailbox login\r\n"
        );
    }

    #[test]
    fn mail_without_auth_asks_for_a_relay_and_keeps_pipelined_commands() {
        let mut f = front(SmtpSettings::default());
        let (out, _) = run(&mut f, b"MAIL FROM:<scan@contoso.com>\r\n");
        assert_eq!(out, "503 5.5.1 Send EHLO or HELO first\r\n");
        let mut input = BytesMut::from(
            &b"HELO mfp\r\nMAIL FROM:<scan@contoso.com> BODY=8BITMIME\r\nRCPT TO:<a@b>\r\nDATA\r\n"
                [..],
        );
        let mut out = Vec::new();
        let next = f.receive(&mut input, &mut out);
        assert_eq!(out, b"250 oxbridge Hello [192.0.2.7]\r\n");
        let Next::Relay { request, replay } = next else {
            panic!("expected a relay request, got {next:?}")
        };
        assert_eq!(request.sender, "scan@contoso.com");
        assert_eq!(request.peer, peer());
        assert_eq!(replay, b"MAIL FROM:<scan@contoso.com> BODY=8BITMIME\r\n");
        assert_eq!(&input[..], b"RCPT TO:<a@b>\r\nDATA\r\n");
        // Nothing more is read while the driver decides.
        let mut out = Vec::new();
        assert!(matches!(f.receive(&mut input, &mut out), Next::Read));
        assert!(out.is_empty() && input.len() == 21);
    }

    #[test]
    fn relay_refusals_and_failures_answer_the_mail_command() {
        let mut f = front(SmtpSettings::default());
        type Outcome = dyn Fn(&mut SmtpFrontEnd, &mut Vec<u8>) -> Next;
        let cases: [(&Outcome, &str); 5] = [
            (
                &|f, out| f.relay_refused(RelayRejection::NoRule, out),
                "530 5.7.0 Authentication required\r\n",
            ),
            (
                &|f, out| f.relay_refused(RelayRejection::SenderNotAllowed, out),
                "553 5.7.1 Sender address not allowed for relay from this network\r\n",
            ),
            (
                &|f, out| f.login_failed(LoginRejection::Unavailable, out),
                "451 4.7.0 Mail service temporarily unavailable, try again later\r\n",
            ),
            (
                &|f, out| f.login_failed(LoginRejection::GrantRevoked, out),
                "550 5.7.1 The relay account's mailbox sign-in has expired; an administrator must renew it\r\n",
            ),
            (
                &|f, out| f.upstream_refused("535 5.7.3 Authentication unsuccessful [X]", out),
                "550 5.7.1 The mail server refused the relay account's login: 535 5.7.3 Authentication unsuccessful [X]\r\n",
            ),
        ];
        let _ = run(&mut f, b"EHLO x\r\n");
        for (fail, text) in cases {
            let (_, next) = run(&mut f, b"MAIL FROM:<a@b>\r\n");
            assert!(matches!(next, Next::Relay { .. }));
            let mut out = Vec::new();
            assert!(matches!(fail(&mut f, &mut out), Next::Read));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }
        // Relay refusals are not failed logins: the connection stays open.
        let (out, _) = run(&mut f, b"RCPT TO:<a@b>\r\nDATA\r\n");
        assert_eq!(
            out,
            "503 5.5.1 Need MAIL command\r\n503 5.5.1 Need MAIL command\r\n"
        );
    }

    #[test]
    fn bdat_before_login_is_skipped_not_executed() {
        let mut f = front(implicit());
        let (out, _) = run(
            &mut f,
            b"EHLO x\r\nBDAT 12 LAST\r\nQUIT\r\nQUIT\r\nNOOP\r\n",
        );
        assert!(
            out.ends_with("503 5.5.1 Need MAIL command\r\n250 2.0.0 OK\r\n"),
            "{out}"
        );
        // A chunk split across reads is skipped across reads.
        let (out, _) = run(&mut f, b"BDAT 10\r\nabc");
        assert_eq!(out, "503 5.5.1 Need MAIL command\r\n");
        let (out, next) = run(&mut f, b"defghijQUIT\r\n");
        assert!(out.starts_with("221 2.0.0"), "{out}");
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn limits_end_the_connection() {
        let mut f = front(implicit());
        let (out, next) = run(&mut f, &b"NOOP\r\n".repeat(65));
        assert!(out.ends_with(
            "421 4.7.0 oxbridge Too many commands without login, closing connection\r\n"
        ));
        assert!(matches!(next, Next::Close));

        let mut f = front(implicit());
        let (out, next) = run(&mut f, &vec![b'a'; 20_000]);
        assert_eq!(out, "500 5.5.2 Line too long\r\n");
        assert!(matches!(next, Next::Close));

        let mut f = front(implicit());
        let mut long = b"EHLO x\r\nAUTH LOGIN\r\n".to_vec();
        long.extend(vec![b'A'; 20_000]);
        let (out, next) = run(&mut f, &long);
        assert!(out.ends_with("500 5.5.6 Authentication Exchange line is too long\r\n"));
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn other_commands_and_goodbyes() {
        let mut f = front(implicit());
        let (out, _) = run(
            &mut f,
            b"RSET\r\nHELP\r\nVRFY postmaster\r\nEXPN staff\r\nFROB\r\nMAIL TO:<x>\r\n",
        );
        assert_eq!(
            out,
            "250 2.0.0 OK\r\n214 2.0.0 Commands: EHLO HELO STARTTLS AUTH MAIL RSET NOOP HELP QUIT\r\n\
             252 2.5.2 Cannot VRFY user\r\n502 5.5.1 EXPN not available\r\n\
             500 5.5.1 Command unrecognized\r\n501 5.5.4 Syntax error in parameters or arguments\r\n"
        );
        let mut out = Vec::new();
        f.timed_out(&mut out);
        assert_eq!(
            out,
            b"421 4.4.2 oxbridge Timeout waiting for client input, closing connection\r\n"
        );
        let mut out = Vec::new();
        f.shutting_down(&mut out);
        assert_eq!(
            out,
            b"421 4.3.2 oxbridge Service shutting down, closing connection\r\n"
        );
        let (out, next) = run(&mut f, b"quit\r\n");
        assert_eq!(
            out,
            "221 2.0.0 oxbridge Service closing transmission channel\r\n"
        );
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn splitting_a_transcript_at_every_offset_never_changes_the_result() {
        let transcript = b"EHLO x\r\nNOOP\r\nAUTH LOGIN\r\nZGVtbw==\r\ncHc=\r\n";
        let whole = {
            let mut f = front(implicit());
            let (out, next) = run(&mut f, transcript);
            (out, expect_login(next).user)
        };
        for cut in 0..transcript.len() {
            let mut f = front(implicit());
            let mut input = BytesMut::from(&transcript[..cut]);
            let mut out = Vec::new();
            let first = f.receive(&mut input, &mut out);
            assert!(matches!(first, Next::Read), "cut {cut}: {first:?}");
            input.extend_from_slice(&transcript[cut..]);
            let next = f.receive(&mut input, &mut out);
            let user = expect_login(next).user;
            assert_eq!((String::from_utf8(out).unwrap(), user), whole, "cut {cut}");
        }
    }
}
