//! The client-facing IMAP dialog before login, as a sans-IO state machine.

use std::net::SocketAddr;

use bytes::{Buf, BytesMut};
use oxbridge_wire::line::{next_line, trim_eol};
use oxbridge_wire::login::audit_refused_without_tls;
use oxbridge_wire::password_sasl::{PasswordExchange, PasswordMechanism, Step};
use oxbridge_wire::sasl::SaslError;
use oxbridge_wire::{FrontEnd, Login, LoginRejection, Next, Protocol, Secret, UpstreamSession};

use crate::parse::{assemble, parse_command, Assembled, Command};

/// The answer to a login on a connection without TLS, unless plaintext is allowed.
const PRIVACY_REQUIRED: &str = "NO [PRIVACYREQUIRED] Login requires TLS; use STARTTLS first.";

/// Limits and policy of one IMAP listener.
#[derive(Debug, Clone)]
pub struct ImapSettings {
    /// The connection is TLS from the start.
    pub implicit_tls: bool,
    /// STARTTLS is offered on a plain connection.
    pub starttls: bool,
    /// Accept passwords on a connection without TLS (operator's explicit choice).
    pub allow_plaintext: bool,
    /// Longest command line, in bytes.
    pub max_line: usize,
    /// Largest literal in a pre-auth command (user names, passwords).
    pub max_literal: usize,
    /// Commands allowed before a successful login.
    pub max_commands: u32,
    /// Failed logins allowed on one connection.
    pub max_failed_logins: u32,
}

impl Default for ImapSettings {
    fn default() -> Self {
        Self {
            implicit_tls: true,
            starttls: false,
            allow_plaintext: false,
            max_line: 16 * 1024,
            max_literal: 8 * 1024,
            max_commands: 64,
            max_failed_logins: 3,
        }
    }
}

/// Where the dialog is.
#[derive(Debug)]
enum State {
    /// Waiting for a tagged command.
    Command,
    /// In an AUTHENTICATE exchange, waiting for a client response line.
    Authenticate {
        tag: String,
        exchange: PasswordExchange,
    },
    /// A login is with the driver; no input is processed until it answers.
    LoggingIn { tag: String, verb: &'static str },
    /// Closing.
    Done,
}

/// One client connection's pre-auth IMAP dialog.
#[derive(Debug)]
pub struct ImapFrontEnd {
    settings: ImapSettings,
    peer: SocketAddr,
    tls: bool,
    state: State,
    commands: u32,
    failed_logins: u32,
    acknowledged_literals: usize,
}

impl ImapFrontEnd {
    pub fn new(settings: ImapSettings, peer: SocketAddr) -> Self {
        Self {
            tls: settings.implicit_tls,
            settings,
            peer,
            state: State::Command,
            commands: 0,
            failed_logins: 0,
            acknowledged_literals: 0,
        }
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.settings.allow_plaintext
    }

    fn capabilities(&self) -> String {
        let mut caps = String::from("IMAP4rev1 SASL-IR LITERAL+ ID");
        if !self.tls && self.settings.starttls {
            caps.push_str(" STARTTLS");
        }
        if self.login_allowed() {
            caps.push_str(" AUTH=PLAIN AUTH=LOGIN");
        } else {
            caps.push_str(" LOGINDISABLED");
        }
        caps
    }

    fn login(&mut self, tag: String, verb: &'static str, user: String, password: Secret) -> Next {
        self.state = State::LoggingIn { tag, verb };
        Next::Login(Login {
            user,
            password,
            protocol: Protocol::Imap,
            peer: self.peer,
        })
    }

    fn bye(&mut self, out: &mut Vec<u8>, text: &str) -> Next {
        out.extend_from_slice(format!("* BYE {text}\r\n").as_bytes());
        self.state = State::Done;
        Next::Close
    }

    /// Handles one complete tagged command; `None` means keep reading.
    fn command(&mut self, raw: &[u8], out: &mut Vec<u8>) -> Option<Next> {
        self.commands += 1;
        if self.commands > self.settings.max_commands {
            return Some(self.bye(out, "Too many commands without login"));
        }
        let Some((tag, command)) = parse_command(raw) else {
            out.extend_from_slice(b"* BAD Command Error. 12\r\n");
            return None;
        };
        let reply = |out: &mut Vec<u8>, text: &str| {
            out.extend_from_slice(format!("{tag} {text}\r\n").as_bytes());
        };
        match command {
            Command::Capability => {
                out.extend_from_slice(
                    format!("* CAPABILITY {}\r\n", self.capabilities()).as_bytes(),
                );
                reply(out, "OK CAPABILITY completed.");
            }
            Command::Noop => reply(out, "OK NOOP completed."),
            Command::Id => {
                out.extend_from_slice(b"* ID (\"name\" \"oxbridge\")\r\n");
                reply(out, "OK ID completed.");
            }
            Command::Logout => {
                out.extend_from_slice(b"* BYE oxbridge signing off.\r\n");
                reply(out, "OK LOGOUT completed.");
                self.state = State::Done;
                return Some(Next::Close);
            }
            Command::StartTls if !self.tls && self.settings.starttls => {
                reply(out, "OK Begin TLS negotiation now.");
                return Some(Next::StartTls);
            }
            Command::StartTls => reply(out, "BAD Command received in Invalid state."),
            Command::Login { user, .. } if !self.login_allowed() => {
                audit_refused_without_tls(Protocol::Imap, self.peer, Some(&user), true);
                reply(out, PRIVACY_REQUIRED);
            }
            Command::Authenticate {
                mechanism,
                initial_response,
            } if !self.login_allowed() => {
                // SASL PLAIN's initial response carries the password.
                let password_sent = mechanism == "PLAIN" && initial_response.is_some();
                audit_refused_without_tls(Protocol::Imap, self.peer, None, password_sent);
                reply(out, PRIVACY_REQUIRED);
            }
            Command::Login { user, password } => {
                let password = Secret::new(password);
                let Ok(user) = String::from_utf8(user) else {
                    return self.refused_here(tag, out);
                };
                return Some(self.login(tag, "LOGIN", user, password));
            }
            Command::Authenticate {
                mechanism,
                initial_response,
            } => return self.authenticate(tag, &mechanism, initial_response, out),
            Command::NeedsAuth => reply(out, "BAD Command received in Invalid state."),
            Command::Unknown => reply(out, "BAD Command Error. 12"),
        }
        None
    }

    fn authenticate(
        &mut self,
        tag: String,
        mechanism: &str,
        initial_response: Option<Vec<u8>>,
        out: &mut Vec<u8>,
    ) -> Option<Next> {
        let Some(mechanism) = PasswordMechanism::from_name(mechanism) else {
            out.extend_from_slice(
                format!("{tag} NO Unsupported authentication mechanism.\r\n").as_bytes(),
            );
            return None;
        };
        let (exchange, step) = PasswordExchange::start(mechanism, initial_response.as_deref());
        self.sasl_step(tag, exchange, step, out)
    }

    /// Acts on one step of an AUTHENTICATE exchange.
    fn sasl_step(
        &mut self,
        tag: String,
        exchange: PasswordExchange,
        step: Step,
        out: &mut Vec<u8>,
    ) -> Option<Next> {
        self.state = State::Command;
        match step {
            Step::Challenge(challenge) => {
                out.extend_from_slice(format!("+ {challenge}\r\n").as_bytes());
                self.state = State::Authenticate { tag, exchange };
                None
            }
            Step::Done { user, password } => Some(self.login(tag, "AUTHENTICATE", user, password)),
            Step::Failed(SaslError::Cancelled) => {
                out.extend_from_slice(format!("{tag} BAD AUTHENTICATE cancelled.\r\n").as_bytes());
                None
            }
            Step::Failed(SaslError::UserNotUtf8) => self.refused_here(tag, out),
            Step::Failed(_) => {
                out.extend_from_slice(format!("{tag} BAD Invalid SASL argument.\r\n").as_bytes());
                None
            }
        }
    }

    /// A login refused without the driver (a user name that is not UTF-8 cannot be an
    /// account): answered like a wrong password. `None` (go on with the commands the client
    /// pipelined behind it) unless the connection closes: returning `Read` here would make
    /// the driver wait for input while whole commands sit in its buffer (found by
    /// fuzz/pop3_front, the same path as here).
    fn refused_here(&mut self, tag: String, out: &mut Vec<u8>) -> Option<Next> {
        match self.failed(tag, LoginRejection::BadCredentials, out) {
            Next::Read => None,
            next => Some(next),
        }
    }

    fn failed(&mut self, tag: String, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        let text = match why {
            LoginRejection::Unavailable => {
                "NO [UNAVAILABLE] Mail service temporarily unavailable, try again later."
            }
            LoginRejection::BadCredentials => "NO [AUTHENTICATIONFAILED] Authentication failed.",
            LoginRejection::NotPermitted => {
                "NO [AUTHORIZATIONFAILED] This account may not use IMAP."
            }
            LoginRejection::GrantRevoked => {
                "NO [AUTHENTICATIONFAILED] The mailbox sign-in has expired; an administrator must renew it."
            }
            LoginRejection::UpstreamRejected => {
                "NO [AUTHENTICATIONFAILED] The mail server refused the mailbox login."
            }
        };
        out.extend_from_slice(format!("{tag} {text}\r\n").as_bytes());
        self.state = State::Command;
        if !why.is_temporary() {
            self.failed_logins += 1;
            if self.failed_logins >= self.settings.max_failed_logins {
                return self.bye(out, "Too many failed logins.");
            }
        }
        Next::Read
    }
}

impl FrontEnd for ImapFrontEnd {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(
            format!(
                "* OK [CAPABILITY {}] oxbridge IMAP4 service ready.\r\n",
                self.capabilities()
            )
            .as_bytes(),
        );
    }

    fn receive(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Next {
        loop {
            match std::mem::replace(&mut self.state, State::Command) {
                State::Done => {
                    self.state = State::Done;
                    return Next::Close;
                }
                State::LoggingIn { tag, verb } => {
                    self.state = State::LoggingIn { tag, verb };
                    return Next::Read;
                }
                State::Authenticate { tag, mut exchange } => {
                    let len = match next_line(input, self.settings.max_line) {
                        Ok(Some(len)) => len,
                        Ok(None) => {
                            self.state = State::Authenticate { tag, exchange };
                            return Next::Read;
                        }
                        Err(_) => return self.bye(out, "Line too long."),
                    };
                    let line = input.split_to(len);
                    let step = exchange.respond(trim_eol(&line));
                    if let Some(next) = self.sasl_step(tag, exchange, step, out) {
                        return next;
                    }
                }
                State::Command => {
                    match assemble(
                        input,
                        self.settings.max_line,
                        self.settings.max_literal,
                        &mut self.acknowledged_literals,
                    ) {
                        Assembled::Incomplete { continuation } => {
                            if continuation {
                                out.extend_from_slice(b"+ Ready for literal data.\r\n");
                            }
                            return Next::Read;
                        }
                        Assembled::LineTooLong => return self.bye(out, "Line too long."),
                        Assembled::LiteralTooLarge {
                            tag,
                            synchronizing,
                            skip,
                        } => {
                            self.acknowledged_literals = 0;
                            if !synchronizing {
                                return self.bye(out, "[TOOBIG] Literal too large.");
                            }
                            // A refused command still counts, or refusals would be an
                            // endless pre-auth dialog.
                            self.commands += 1;
                            if self.commands > self.settings.max_commands {
                                return self.bye(out, "Too many commands without login");
                            }
                            input.advance(skip);
                            out.extend_from_slice(
                                format!("{tag} BAD [TOOBIG] Literal too large.\r\n").as_bytes(),
                            );
                        }
                        Assembled::Complete { len } => {
                            self.acknowledged_literals = 0;
                            let raw = input.split_to(len);
                            if let Some(next) = self.command(&raw, out) {
                                return next;
                            }
                        }
                    }
                }
            }
        }
    }

    fn tls_started(&mut self) {
        self.tls = true;
    }

    fn login_succeeded(&mut self, upstream: &UpstreamSession, out: &mut Vec<u8>) {
        let (tag, verb) = match std::mem::replace(&mut self.state, State::Done) {
            State::LoggingIn { tag, verb } => (tag, verb),
            _ => ("*".to_string(), "LOGIN"),
        };
        match &upstream.capabilities {
            Some(caps) => out.extend_from_slice(
                format!("{tag} OK [CAPABILITY {caps}] {verb} completed.\r\n").as_bytes(),
            ),
            None => out.extend_from_slice(format!("{tag} OK {verb} completed.\r\n").as_bytes()),
        }
    }

    fn login_failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        let tag = match std::mem::replace(&mut self.state, State::Command) {
            State::LoggingIn { tag, .. } => tag,
            _ => "*".to_string(),
        };
        self.failed(tag, why, out)
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* BYE Autologout; idle for too long.\r\n");
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"* BYE [UNAVAILABLE] Server shutting down.\r\n");
    }

    fn spliced_goodbye(&self) -> Option<&'static [u8]> {
        Some(b"* BYE [UNAVAILABLE] Server shutting down.\r\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.7:4321".parse().unwrap()
    }

    fn run(front: &mut ImapFrontEnd, input: &[u8]) -> (String, Next) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let next = front.receive(&mut buf, &mut out);
        (String::from_utf8_lossy(&out).into_owned(), next)
    }

    #[test]
    fn plain_connection_without_tls_disables_login_and_offers_starttls() {
        let settings = ImapSettings {
            implicit_tls: false,
            starttls: true,
            ..Default::default()
        };
        let mut front = ImapFrontEnd::new(settings, peer());
        let (out, _) = run(&mut front, b"a CAPABILITY\r\n");
        assert!(out.contains("STARTTLS"));
        assert!(out.contains("LOGINDISABLED"));
        assert!(!out.contains("AUTH="));
        let (out, next) = run(&mut front, b"b LOGIN demo pw\r\n");
        assert!(out.starts_with("b NO [PRIVACYREQUIRED]"));
        assert!(matches!(next, Next::Read));
        let (out, next) = run(&mut front, b"c STARTTLS\r\n");
        assert_eq!(out, "c OK Begin TLS negotiation now.\r\n");
        assert!(matches!(next, Next::StartTls));
        front.tls_started();
        let (out, _) = run(&mut front, b"d CAPABILITY\r\n");
        assert!(out.contains("AUTH=PLAIN AUTH=LOGIN") && !out.contains("STARTTLS"));
    }

    #[test]
    fn login_hands_credentials_to_the_driver() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(&mut front, b"a1 LOGIN demo \"s3cret\"\r\n");
        assert_eq!(out, "");
        let Next::Login(login) = next else {
            panic!("expected login")
        };
        assert_eq!(login.user, "demo");
        assert_eq!(login.password.expose(), b"s3cret");
        let mut out = Vec::new();
        assert!(matches!(
            front.login_failed(LoginRejection::BadCredentials, &mut out),
            Next::Read
        ));
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("a1 NO [AUTHENTICATIONFAILED]"));
    }

    #[test]
    fn temporary_failures_say_unavailable() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let _ = run(&mut front, b"a1 LOGIN demo pw\r\n");
        let mut out = Vec::new();
        front.login_failed(LoginRejection::Unavailable, &mut out);
        assert!(String::from_utf8(out)
            .unwrap()
            .starts_with("a1 NO [UNAVAILABLE]"));
    }

    #[test]
    fn authenticate_login_prompts_then_logs_in() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, _) = run(&mut front, b"a AUTHENTICATE LOGIN\r\n");
        assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
        let (out, _) = run(&mut front, b"ZGVtbw==\r\n");
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        let (_, next) = run(&mut front, b"cHc=\r\n");
        let Next::Login(login) = next else {
            panic!("expected login")
        };
        assert_eq!(
            (login.user.as_str(), login.password.expose()),
            ("demo", &b"pw"[..])
        );
    }

    #[test]
    fn authenticate_plain_with_initial_response_and_cancel() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (_, next) = run(&mut front, b"a AUTHENTICATE PLAIN AGRlbW8AcHc=\r\n");
        assert!(matches!(next, Next::Login(_)));
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, _) = run(&mut front, b"a AUTHENTICATE PLAIN\r\n*\r\n");
        assert_eq!(out, "+ \r\na BAD AUTHENTICATE cancelled.\r\n");
        let (out, _) = run(&mut front, b"b AUTHENTICATE PLAIN !!!\r\n");
        assert_eq!(out, "b BAD Invalid SASL argument.\r\n");
        let (out, _) = run(&mut front, b"c AUTHENTICATE XOAUTH2\r\n");
        assert_eq!(out, "c NO Unsupported authentication mechanism.\r\n");
    }

    #[test]
    fn huge_literal_is_refused_without_continuation() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(&mut front, b"a LOGIN {104857600}\r\n");
        assert_eq!(out, "a BAD [TOOBIG] Literal too large.\r\n");
        assert!(matches!(next, Next::Read));
        let (out, next) = run(&mut front, b"b LOGIN {104857600+}\r\n");
        assert!(out.starts_with("* BYE"));
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn commands_pipelined_behind_a_refused_user_name_are_answered_at_once() {
        // A LOGIN or AUTHENTICATE whose user name is not UTF-8 is refused here; the commands
        // behind it must not wait for more input (see fuzz/pop3_front's finding).
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(
            &mut front,
            b"a LOGIN {2+}\r\n\xff\xfe pw\r\nb AUTHENTICATE PLAIN AP8AcHc=\r\nc NOOP\r\n",
        );
        assert_eq!(
            out,
            "a NO [AUTHENTICATIONFAILED] Authentication failed.\r\n\
             b NO [AUTHENTICATIONFAILED] Authentication failed.\r\nc OK NOOP completed.\r\n"
        );
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn refused_literals_count_as_commands() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(&mut front, &b"a LOGIN {104857600}\r\n".repeat(100));
        assert_eq!(out.matches("[TOOBIG]").count(), 64, "{out}");
        assert!(out.ends_with("* BYE Too many commands without login\r\n"));
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn a_command_of_endless_literals_is_refused_and_the_buffer_stays_bounded() {
        let settings = ImapSettings {
            max_line: 1024,
            max_literal: 256,
            ..ImapSettings::default()
        };
        let bound = crate::parse::max_command(settings.max_line, settings.max_literal);
        let mut front = ImapFrontEnd::new(settings, peer());
        let mut buf = BytesMut::from(&b"a ID (\"x\" {0+}\r\n"[..]);
        let mut out = Vec::new();
        for _ in 0..2_000 {
            match front.receive(&mut buf, &mut out) {
                Next::Read => assert!(buf.len() <= bound, "{} bytes buffered", buf.len()),
                Next::Close => break,
                other => panic!("{other:?}"),
            }
            buf.extend_from_slice(b" {0+}\r\n");
        }
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("* BYE"), "{out}");
    }

    #[test]
    fn synchronizing_literal_gets_a_continuation() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let mut buf = BytesMut::from(&b"a LOGIN {4}\r\n"[..]);
        let mut out = Vec::new();
        assert!(matches!(front.receive(&mut buf, &mut out), Next::Read));
        assert_eq!(out, b"+ Ready for literal data.\r\n");
        buf.extend_from_slice(b"demo pw\r\n");
        out.clear();
        assert!(matches!(front.receive(&mut buf, &mut out), Next::Login(_)));
        assert!(out.is_empty());
    }

    #[test]
    fn too_many_commands_or_failures_end_the_connection() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(&mut front, &b"a NOOP\r\n".repeat(65));
        assert!(out.ends_with("* BYE Too many commands without login\r\n"));
        assert!(matches!(next, Next::Close));

        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        for i in 0..3 {
            let _ = run(&mut front, b"a LOGIN demo bad\r\n");
            let mut out = Vec::new();
            let next = front.login_failed(LoginRejection::BadCredentials, &mut out);
            assert_eq!(matches!(next, Next::Close), i == 2);
        }
    }

    #[test]
    fn post_auth_commands_are_refused_before_login() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, _) = run(&mut front, b"a SELECT INBOX\r\nb FROB\r\n");
        assert_eq!(
            out,
            "a BAD Command received in Invalid state.\r\nb BAD Command Error. 12\r\n"
        );
    }

    #[test]
    fn oversized_line_closes() {
        let mut front = ImapFrontEnd::new(ImapSettings::default(), peer());
        let (out, next) = run(&mut front, &vec![b'a'; 20_000]);
        assert_eq!(out, "* BYE Line too long.\r\n");
        assert!(matches!(next, Next::Close));
    }
}
