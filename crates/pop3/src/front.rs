//! The client-facing POP3 dialog before login (the AUTHORIZATION state of RFC 1939), as a
//! sans-IO state machine: bytes in, replies and [`Next`] actions out.
//!
//! Failures carry RFC 3206 response codes because POP3 pollers act on them: `[AUTH]` means
//! the credentials or the account are wrong (stop and tell the user), `[SYS/TEMP]` means try
//! again later (keep the mail queued, poll again).

use std::net::SocketAddr;

use bytes::BytesMut;
use oxbridge_wire::line::{next_line, trim_eol};
use oxbridge_wire::login::audit_refused_without_tls;
use oxbridge_wire::password_sasl::{PasswordExchange, PasswordMechanism, Step};
use oxbridge_wire::sasl::SaslError;
use oxbridge_wire::{FrontEnd, Login, LoginRejection, Next, Protocol, Secret, UpstreamSession};

use crate::capa::UpstreamCapabilities;
use crate::parse::{parse_command, Command};

const GREETING: &str = "+OK oxbridge POP3 service ready.\r\n";
/// Exchange Online's answer to a command in the wrong state (EXCHANGE.md §1.1).
const WRONG_STATE: &str = "-ERR Command is not valid in this state.\r\n";
const PLAINTEXT_REFUSED: &str =
    "-ERR [AUTH] Plaintext authentication is disallowed without TLS; use STLS first.\r\n";
const LOGGED_IN: &str = "+OK User successfully authenticated.\r\n";

/// Limits and policy of one POP3 listener.
#[derive(Debug, Clone)]
pub struct Pop3Settings {
    /// The connection is TLS from the start (port 995).
    pub implicit_tls: bool,
    /// STLS is offered on a plain connection (port 110).
    pub starttls: bool,
    /// Accept passwords on a connection without TLS (operator's explicit choice).
    pub allow_plaintext: bool,
    /// Longest line, in bytes (commands and SASL responses).
    pub max_line: usize,
    /// Commands allowed before a successful login.
    pub max_commands: u32,
    /// Failed logins allowed on one connection.
    pub max_failed_logins: u32,
    /// What the upstream offers after login, as last learned by the back-end.
    pub upstream: UpstreamCapabilities,
}

impl Default for Pop3Settings {
    fn default() -> Self {
        Self {
            implicit_tls: true,
            starttls: false,
            allow_plaintext: false,
            max_line: 16 * 1024,
            max_commands: 64,
            max_failed_logins: 3,
            upstream: UpstreamCapabilities::default(),
        }
    }
}

/// Where the dialog is.
#[derive(Debug)]
enum State {
    /// Waiting for a command.
    Command,
    /// In an AUTH exchange, waiting for a client response line.
    Auth(PasswordExchange),
    /// A login is with the driver; no input is processed until it answers.
    LoggingIn,
    /// Closing.
    Done,
}

/// One client connection's pre-auth POP3 dialog.
#[derive(Debug)]
pub struct Pop3FrontEnd {
    settings: Pop3Settings,
    peer: SocketAddr,
    tls: bool,
    state: State,
    commands: u32,
    failed_logins: u32,
    /// The argument of the last USER, waiting for PASS. Bytes, because only a login that
    /// reaches the store needs it as text.
    pending_user: Option<Vec<u8>>,
}

impl Pop3FrontEnd {
    pub fn new(settings: Pop3Settings, peer: SocketAddr) -> Self {
        Self {
            tls: settings.implicit_tls,
            settings,
            peer,
            state: State::Command,
            commands: 0,
            failed_logins: 0,
            pending_user: None,
        }
    }

    fn login_allowed(&self) -> bool {
        self.tls || self.settings.allow_plaintext
    }

    /// The CAPA reply (RFC 2449). Login capabilities are listed only where a login would
    /// be accepted, STLS only where it would work, and the mailbox-session capabilities are
    /// the upstream's.
    fn capa(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"+OK Capability list follows\r\n");
        if self.login_allowed() {
            out.extend_from_slice(b"USER\r\nSASL");
            for mechanism in PasswordMechanism::ALL {
                out.push(b' ');
                out.extend_from_slice(mechanism.name().as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        if !self.tls && self.settings.starttls {
            out.extend_from_slice(b"STLS\r\n");
        }
        for capability in self.settings.upstream.iter() {
            out.extend_from_slice(capability.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b"RESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n");
    }

    fn login(&mut self, user: String, password: Secret) -> Next {
        self.state = State::LoggingIn;
        Next::Login(Login {
            user,
            password,
            protocol: Protocol::Pop3,
            peer: self.peer,
        })
    }

    /// Audits a login step refused for want of TLS; listing the mechanisms is not one.
    fn audit_refused_without_tls(&self, command: &Command) {
        let (user, password_sent) = match command {
            Command::User(name) => (Some(name.as_slice()), false),
            Command::Pass(_) => (self.pending_user.as_deref(), true),
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => (None, mechanism == "PLAIN" && initial_response.is_some()),
            _ => return,
        };
        audit_refused_without_tls(Protocol::Pop3, self.peer, user, password_sent);
    }

    fn close(&mut self, out: &mut Vec<u8>, reply: &str) -> Next {
        out.extend_from_slice(reply.as_bytes());
        self.state = State::Done;
        Next::Close
    }

    /// Handles one command line; `None` means keep reading.
    fn command(&mut self, line: &[u8], out: &mut Vec<u8>) -> Option<Next> {
        self.commands += 1;
        if self.commands > self.settings.max_commands {
            return Some(self.close(out, "-ERR Too many commands without login.\r\n"));
        }
        let reply = match parse_command(line) {
            Command::Capa => {
                self.capa(out);
                return None;
            }
            Command::Stls if self.tls => WRONG_STATE,
            Command::Stls if self.settings.starttls => {
                // RFC 2595: nothing learned before TLS survives it.
                self.pending_user = None;
                out.extend_from_slice(b"+OK Begin TLS negotiation.\r\n");
                return Some(Next::StartTls);
            }
            Command::Stls => "-ERR STLS is not available on this port.\r\n",
            command @ (Command::User(_) | Command::Pass(_) | Command::Auth { .. })
                if !self.login_allowed() =>
            {
                self.audit_refused_without_tls(&command);
                PLAINTEXT_REFUSED
            }
            Command::User(name) => {
                self.pending_user = Some(name);
                "+OK Send your password.\r\n"
            }
            Command::Pass(password) => {
                let password = Secret::new(password);
                let Some(user) = self.pending_user.take() else {
                    out.extend_from_slice(b"-ERR No user name given; send USER first.\r\n");
                    return None;
                };
                return match String::from_utf8(user) {
                    Ok(user) => Some(self.login(user, password)),
                    Err(_) => self.refused_here(out),
                };
            }
            Command::Auth {
                mechanism: None, ..
            } => "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n",
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => {
                self.pending_user = None;
                let Some(mechanism) = PasswordMechanism::from_name(&mechanism) else {
                    out.extend_from_slice(b"-ERR Unsupported authentication mechanism.\r\n");
                    return None;
                };
                let (exchange, step) =
                    PasswordExchange::start(mechanism, initial_response.as_deref());
                return self.sasl_step(exchange, step, out);
            }
            Command::Apop => "-ERR APOP is not supported; use USER and PASS, or AUTH.\r\n",
            Command::Noop => "+OK\r\n",
            Command::Quit => {
                return Some(self.close(out, "+OK oxbridge POP3 server signing off.\r\n"));
            }
            Command::NeedsAuth => WRONG_STATE,
            Command::BadSyntax => "-ERR Syntax error.\r\n",
            Command::Unknown => "-ERR Unknown command.\r\n",
        };
        out.extend_from_slice(reply.as_bytes());
        None
    }

    /// Acts on one step of an AUTH exchange.
    fn sasl_step(
        &mut self,
        exchange: PasswordExchange,
        step: Step,
        out: &mut Vec<u8>,
    ) -> Option<Next> {
        match step {
            Step::Challenge(challenge) => {
                out.extend_from_slice(format!("+ {challenge}\r\n").as_bytes());
                self.state = State::Auth(exchange);
                None
            }
            Step::Done { user, password } => Some(self.login(user, password)),
            Step::Failed(SaslError::Cancelled) => {
                out.extend_from_slice(b"-ERR Authentication cancelled.\r\n");
                None
            }
            Step::Failed(SaslError::UserNotUtf8) => self.refused_here(out),
            Step::Failed(_) => {
                out.extend_from_slice(b"-ERR Invalid SASL argument.\r\n");
                None
            }
        }
    }

    /// A login refused without the driver (a user name that is not UTF-8 cannot be an
    /// account): answered like a wrong password. `None` (go on with the commands the client
    /// pipelined behind it) unless the connection closes: returning `Read` here would make
    /// the driver wait for input while whole commands sit in its buffer (found by
    /// fuzz/pop3_front).
    fn refused_here(&mut self, out: &mut Vec<u8>) -> Option<Next> {
        match self.failed(LoginRejection::BadCredentials, out) {
            Next::Read => None,
            next => Some(next),
        }
    }

    /// Writes the failure reply; closes after too many failures that were the client's.
    fn failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        let reply = match why {
            LoginRejection::Unavailable => {
                "-ERR [SYS/TEMP] Mail service temporarily unavailable, try again later.\r\n"
            }
            LoginRejection::BadCredentials => "-ERR [AUTH] Authentication failed.\r\n",
            LoginRejection::NotPermitted => "-ERR [AUTH] This account may not use POP3.\r\n",
            LoginRejection::GrantRevoked => {
                "-ERR [AUTH] The mailbox sign-in has expired; an administrator must renew it.\r\n"
            }
            LoginRejection::UpstreamRejected => {
                "-ERR [AUTH] The mail server refused the mailbox login.\r\n"
            }
        };
        out.extend_from_slice(reply.as_bytes());
        self.state = State::Command;
        self.pending_user = None;
        if !why.is_temporary() {
            self.failed_logins += 1;
            if self.failed_logins >= self.settings.max_failed_logins {
                self.state = State::Done;
                return Next::Close;
            }
        }
        Next::Read
    }
}

impl FrontEnd for Pop3FrontEnd {
    fn greeting(&mut self, out: &mut Vec<u8>) {
        // No `<timestamp>` in the banner: clients must not try APOP, which needs the
        // plaintext password on the server side.
        out.extend_from_slice(GREETING.as_bytes());
    }

    fn receive(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Next {
        loop {
            match self.state {
                State::Done => return Next::Close,
                State::LoggingIn => return Next::Read,
                State::Command | State::Auth(_) => {}
            }
            let len = match next_line(input, self.settings.max_line) {
                Ok(Some(len)) => len,
                Ok(None) => return Next::Read,
                Err(_) => return self.close(out, "-ERR Line too long.\r\n"),
            };
            let mut raw = input.split_to(len);
            let line = trim_eol(&raw);
            let next = match std::mem::replace(&mut self.state, State::Command) {
                State::Auth(mut exchange) => {
                    let step = exchange.respond(line);
                    self.sasl_step(exchange, step, out)
                }
                _ => self.command(line, out),
            };
            // The line may have held a password; do not leave it in freed memory.
            raw.fill(0);
            if let Some(next) = next {
                return next;
            }
        }
    }

    fn tls_started(&mut self) {
        self.tls = true;
    }

    fn login_succeeded(&mut self, _upstream: &UpstreamSession, out: &mut Vec<u8>) {
        self.state = State::Done;
        out.extend_from_slice(LOGGED_IN.as_bytes());
    }

    fn login_failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next {
        self.failed(why, out)
    }

    fn timed_out(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR Autologout; idle for too long.\r\n");
    }

    fn shutting_down(&mut self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"-ERR [SYS/TEMP] Server shutting down, try again later.\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer() -> SocketAddr {
        "192.0.2.7:4321".parse().unwrap()
    }

    fn plain_port() -> Pop3Settings {
        Pop3Settings {
            implicit_tls: false,
            starttls: true,
            ..Default::default()
        }
    }

    fn run(front: &mut Pop3FrontEnd, input: &[u8]) -> (String, Next) {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        let next = front.receive(&mut buf, &mut out);
        (String::from_utf8(out).unwrap(), next)
    }

    fn login_of(next: Next) -> Login {
        match next {
            Next::Login(login) => login,
            other => panic!("expected a login, got {other:?}"),
        }
    }

    const CAPA_TLS: &str = "+OK Capability list follows\r\nUSER\r\nSASL PLAIN LOGIN\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n";

    #[test]
    fn commands_pipelined_behind_a_refused_user_name_are_answered_at_once() {
        // fuzz/pop3_front: a PASS for a user name that is not UTF-8 was refused with `Read`,
        // so the driver waited for more input with CAPA still in its buffer.
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"USER \xff\xfe\r\nPASS pw\r\nNOOP\r\n");
        assert_eq!(
            out,
            "+OK Send your password.\r\n-ERR [AUTH] Authentication failed.\r\n+OK\r\n"
        );
        assert!(matches!(next, Next::Read));
        let (out, _) = run(&mut front, b"AUTH PLAIN AP8AcHc=\r\nNOOP\r\n");
        assert_eq!(out, "-ERR [AUTH] Authentication failed.\r\n+OK\r\n");
    }

    #[test]
    fn greeting_has_no_apop_timestamp() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let mut out = Vec::new();
        front.greeting(&mut out);
        assert_eq!(out, b"+OK oxbridge POP3 service ready.\r\n");
    }

    #[test]
    fn capa_on_tls_lists_logins_and_the_upstream_session_capabilities() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"CAPA\r\n");
        assert_eq!(out, CAPA_TLS);
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn pipelining_is_advertised_only_when_the_upstream_has_it() {
        let settings = Pop3Settings {
            upstream: UpstreamCapabilities::from_capa_lines(["TOP", "PIPELINING", "UIDL"]),
            ..Default::default()
        };
        let mut front = Pop3FrontEnd::new(settings, peer());
        let (out, _) = run(&mut front, b"CAPA\r\n");
        assert!(out.contains("\r\nTOP\r\nPIPELINING\r\nUIDL\r\n"), "{out}");
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        assert!(!run(&mut front, b"CAPA\r\n").0.contains("PIPELINING"));
    }

    #[test]
    fn plain_port_offers_only_stls_until_tls_is_up() {
        let mut front = Pop3FrontEnd::new(plain_port(), peer());
        let (out, _) = run(&mut front, b"CAPA\r\n");
        assert_eq!(
            out,
            "+OK Capability list follows\r\nSTLS\r\nTOP\r\nUIDL\r\nRESP-CODES\r\nAUTH-RESP-CODE\r\n.\r\n"
        );
        let (out, next) = run(
            &mut front,
            b"USER demo\r\nAUTH PLAIN AGRlbW8AcHc=\r\nAUTH\r\n",
        );
        assert_eq!(out, PLAINTEXT_REFUSED.repeat(3));
        assert!(matches!(next, Next::Read));
        let (out, next) = run(&mut front, b"STLS\r\n");
        assert_eq!(out, "+OK Begin TLS negotiation.\r\n");
        assert!(matches!(next, Next::StartTls));
        front.tls_started();
        assert_eq!(run(&mut front, b"CAPA\r\n").0, CAPA_TLS);
        assert_eq!(run(&mut front, b"STLS\r\n").0, WRONG_STATE);
    }

    #[test]
    fn operator_may_allow_plaintext_logins() {
        let settings = Pop3Settings {
            allow_plaintext: true,
            ..plain_port()
        };
        let mut front = Pop3FrontEnd::new(settings, peer());
        let (out, _) = run(&mut front, b"CAPA\r\n");
        assert!(
            out.contains("USER\r\nSASL PLAIN LOGIN\r\nSTLS\r\n"),
            "{out}"
        );
        let (_, next) = run(&mut front, b"USER demo\r\nPASS pw\r\n");
        assert_eq!(login_of(next).user, "demo");
    }

    #[test]
    fn stls_on_a_port_without_it_is_refused() {
        let settings = Pop3Settings {
            implicit_tls: false,
            allow_plaintext: true,
            ..Default::default()
        };
        let mut front = Pop3FrontEnd::new(settings, peer());
        let (out, next) = run(&mut front, b"STLS\r\n");
        assert_eq!(out, "-ERR STLS is not available on this port.\r\n");
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn user_pass_hands_credentials_to_the_driver_and_keeps_pipelined_commands() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let mut buf = BytesMut::from(&b"USER demo\r\nPASS s3cret with spaces\r\nSTAT\r\n"[..]);
        let mut out = Vec::new();
        let login = login_of(front.receive(&mut buf, &mut out));
        assert_eq!(out, b"+OK Send your password.\r\n");
        assert_eq!(login.user, "demo");
        assert_eq!(login.password.expose(), b"s3cret with spaces");
        assert_eq!(login.protocol, Protocol::Pop3);
        assert_eq!(login.peer, peer());
        // Whatever follows PASS is the upstream's, after the splice starts.
        assert_eq!(&buf[..], b"STAT\r\n");
        out.clear();
        assert!(matches!(front.receive(&mut buf, &mut out), Next::Read));
        assert!(out.is_empty());
        assert_eq!(&buf[..], b"STAT\r\n");
    }

    #[test]
    fn pass_without_user_and_non_utf8_user() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"PASS pw\r\n");
        assert_eq!(out, "-ERR No user name given; send USER first.\r\n");
        assert!(matches!(next, Next::Read));
        let (out, next) = run(&mut front, b"USER \xff\xfe\r\nPASS pw\r\n");
        assert_eq!(
            out,
            "+OK Send your password.\r\n-ERR [AUTH] Authentication failed.\r\n"
        );
        assert!(matches!(next, Next::Read));
    }

    #[test]
    fn auth_plain_with_and_without_initial_response() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"AUTH PLAIN AGRlbW8AcHc=\r\n");
        assert_eq!(out, "");
        let login = login_of(next);
        assert_eq!(
            (login.user.as_str(), login.password.expose()),
            ("demo", &b"pw"[..])
        );

        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"AUTH PLAIN\r\n");
        assert_eq!(out, "+ \r\n");
        assert!(matches!(next, Next::Read));
        let (_, next) = run(&mut front, b"AGRlbW8AcHc=\r\n");
        assert_eq!(login_of(next).user, "demo");
    }

    #[test]
    fn auth_login_prompts_for_user_and_password() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, _) = run(&mut front, b"auth login\r\n");
        assert_eq!(out, "+ VXNlcm5hbWU6\r\n");
        let (out, _) = run(&mut front, b"ZGVtbw==\r\n");
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        let login = login_of(run(&mut front, b"cHc=\r\n").1);
        assert_eq!(
            (login.user.as_str(), login.password.expose()),
            ("demo", &b"pw"[..])
        );

        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, _) = run(&mut front, b"AUTH LOGIN ZGVtbw==\r\n");
        assert_eq!(out, "+ UGFzc3dvcmQ6\r\n");
        assert_eq!(login_of(run(&mut front, b"cHc=\r\n").1).user, "demo");
    }

    #[test]
    fn auth_cancel_garbage_unknown_mechanism_and_listing() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, b"AUTH LOGIN\r\n*\r\nNOOP\r\n");
        assert_eq!(
            out,
            "+ VXNlcm5hbWU6\r\n-ERR Authentication cancelled.\r\n+OK\r\n"
        );
        assert!(matches!(next, Next::Read));
        let (out, _) = run(&mut front, b"AUTH PLAIN !!!\r\n");
        assert_eq!(out, "-ERR Invalid SASL argument.\r\n");
        let (out, _) = run(&mut front, b"AUTH XOAUTH2\r\nAUTH CRAM-MD5\r\n");
        assert_eq!(
            out,
            "-ERR Unsupported authentication mechanism.\r\n".repeat(2)
        );
        let (out, _) = run(&mut front, b"AUTH\r\n");
        assert_eq!(out, "+OK\r\nPLAIN\r\nLOGIN\r\n.\r\n");
    }

    #[test]
    fn apop_transaction_and_unknown_commands_are_refused_cleanly() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(
            &mut front,
            b"APOP mrose c4c9334bac560ecc979e58001b3e22fb\r\nSTAT\r\nRETR 1\r\nFROB\r\nUSER\r\n\r\nNOOP\r\n",
        );
        assert_eq!(
            out,
            "-ERR APOP is not supported; use USER and PASS, or AUTH.\r\n\
             -ERR Command is not valid in this state.\r\n\
             -ERR Command is not valid in this state.\r\n\
             -ERR Unknown command.\r\n\
             -ERR Syntax error.\r\n\
             -ERR Unknown command.\r\n\
             +OK\r\n"
        );
        assert!(matches!(next, Next::Read));
        let (out, next) = run(&mut front, b"QUIT\r\nNOOP\r\n");
        assert_eq!(out, "+OK oxbridge POP3 server signing off.\r\n");
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn failures_carry_rfc3206_codes_and_repeated_ones_close() {
        let cases = [
            (
                LoginRejection::BadCredentials,
                "-ERR [AUTH] Authentication failed.\r\n",
            ),
            (
                LoginRejection::NotPermitted,
                "-ERR [AUTH] This account may not use POP3.\r\n",
            ),
            (
                LoginRejection::GrantRevoked,
                "-ERR [AUTH] The mailbox sign-in has expired; an administrator must renew it.\r\n",
            ),
            (
                LoginRejection::UpstreamRejected,
                "-ERR [AUTH] The mail server refused the mailbox login.\r\n",
            ),
            (
                LoginRejection::Unavailable,
                "-ERR [SYS/TEMP] Mail service temporarily unavailable, try again later.\r\n",
            ),
        ];
        for (why, text) in cases {
            let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
            let _ = run(&mut front, b"USER demo\r\nPASS pw\r\n");
            let mut out = Vec::new();
            assert!(matches!(front.login_failed(why, &mut out), Next::Read));
            assert_eq!(String::from_utf8(out).unwrap(), text);
        }

        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        for i in 0..3 {
            let _ = run(&mut front, b"USER demo\r\nPASS bad\r\n");
            let mut out = Vec::new();
            let next = front.login_failed(LoginRejection::BadCredentials, &mut out);
            assert_eq!(matches!(next, Next::Close), i == 2);
        }
        // Temporary failures are not the client's fault and never close the connection.
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        for _ in 0..5 {
            let _ = run(&mut front, b"USER demo\r\nPASS pw\r\n");
            let mut out = Vec::new();
            let next = front.login_failed(LoginRejection::Unavailable, &mut out);
            assert!(matches!(next, Next::Read));
        }
    }

    #[test]
    fn input_during_a_login_waits() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let _ = run(&mut front, b"USER demo\r\nPASS pw\r\n");
        let (out, next) = run(&mut front, b"NOOP\r\n");
        assert_eq!(out, "");
        assert!(matches!(next, Next::Read));
        let mut out = Vec::new();
        front.login_failed(LoginRejection::BadCredentials, &mut out);
        let (out, _) = run(&mut front, b"NOOP\r\n");
        assert_eq!(out, "+OK\r\n");
    }

    #[test]
    fn too_many_commands_or_a_long_line_close() {
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, &b"NOOP\r\n".repeat(1000));
        assert_eq!(
            out,
            format!(
                "{}-ERR Too many commands without login.\r\n",
                "+OK\r\n".repeat(64)
            )
        );
        assert!(matches!(next, Next::Close));

        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let (out, next) = run(&mut front, &vec![b'A'; 1 << 20]);
        assert_eq!(out, "-ERR Line too long.\r\n");
        assert!(matches!(next, Next::Close));
        // Also inside an AUTH exchange.
        let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
        let mut input = b"AUTH PLAIN\r\n".to_vec();
        input.extend(vec![b'A'; 20_000]);
        let (out, next) = run(&mut front, &input);
        assert_eq!(out, "+ \r\n-ERR Line too long.\r\n");
        assert!(matches!(next, Next::Close));
    }

    #[test]
    fn a_line_at_the_limit_is_still_read() {
        let settings = Pop3Settings {
            max_line: 32,
            ..Default::default()
        };
        let mut front = Pop3FrontEnd::new(settings, peer());
        let line = format!("USER {}\r\n", "u".repeat(25));
        assert_eq!(line.len(), 32);
        assert_eq!(
            run(&mut front, line.as_bytes()).0,
            "+OK Send your password.\r\n"
        );
    }

    /// Feeds a whole pre-auth transcript in two pieces, cut at every offset: the replies
    /// and the login must not depend on how the bytes arrive.
    #[test]
    fn splitting_a_transcript_at_every_offset_never_changes_the_result() {
        let transcript: &[u8] =
            b"CAPA\r\nNOOP\r\nAUTH LOGIN\r\nZGVtbw==\r\n*\r\nUSER demo\r\nPASS p w\r\n";
        let expected = format!(
            "{CAPA_TLS}+OK\r\n+ VXNlcm5hbWU6\r\n+ UGFzc3dvcmQ6\r\n-ERR Authentication cancelled.\r\n+OK Send your password.\r\n"
        );
        for cut in 0..transcript.len() {
            let mut front = Pop3FrontEnd::new(Pop3Settings::default(), peer());
            let mut buf = BytesMut::new();
            let mut out = Vec::new();
            buf.extend_from_slice(&transcript[..cut]);
            let first = front.receive(&mut buf, &mut out);
            assert!(matches!(first, Next::Read), "cut {cut}");
            buf.extend_from_slice(&transcript[cut..]);
            let login = login_of(front.receive(&mut buf, &mut out));
            assert_eq!(String::from_utf8(out).unwrap(), expected, "cut {cut}");
            assert_eq!(
                (login.user.as_str(), login.password.expose()),
                ("demo", &b"p w"[..])
            );
            assert!(buf.is_empty());
        }
    }
}
