//! The server side of the password SASL mechanisms legacy clients use: PLAIN (RFC 4616) and
//! LOGIN (draft-murchison-sasl-login). One step machine serves IMAP AUTHENTICATE, POP3 AUTH
//! and SMTP AUTH, so a protocol front-end only frames challenges and final replies in its own
//! syntax (`+ …`, `334 …`) and never re-implements the exchange.

use crate::sasl::{self, SaslError, LOGIN_PASSWORD_PROMPT, LOGIN_USER_PROMPT};
use crate::Secret;

/// A password mechanism oxbridge offers to clients.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordMechanism {
    Plain,
    Login,
}

impl PasswordMechanism {
    /// Every mechanism, in the order capability lists advertise them.
    pub const ALL: [PasswordMechanism; 2] = [PasswordMechanism::Plain, PasswordMechanism::Login];

    /// The mechanism called `name` (case-insensitive), if it is one oxbridge offers.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|m| m.name().eq_ignore_ascii_case(name))
    }

    /// The registered name, upper case.
    pub fn name(self) -> &'static str {
        match self {
            PasswordMechanism::Plain => "PLAIN",
            PasswordMechanism::Login => "LOGIN",
        }
    }
}

/// What the front-end does after one step of a [`PasswordExchange`].
#[derive(Debug)]
pub enum Step {
    /// Send this base64 challenge (possibly empty) in the protocol's continuation syntax,
    /// then pass the client's next line to [`PasswordExchange::respond`].
    Challenge(&'static str),
    /// The client sent its credentials; the exchange is over.
    Done { user: String, password: Secret },
    /// The client cancelled (`*`) or sent something unusable; the exchange is over.
    Failed(SaslError),
}

#[derive(Debug)]
enum State {
    Plain,
    LoginUser,
    LoginPassword { user: String },
    Finished,
}

/// One PLAIN or LOGIN exchange with a client, fed line by line.
#[derive(Debug)]
pub struct PasswordExchange {
    state: State,
}

impl PasswordExchange {
    /// Starts an exchange. With an initial response (SASL-IR, or the argument of POP3/SMTP
    /// AUTH) it is processed at once; without one, the first step is the first challenge.
    pub fn start(mechanism: PasswordMechanism, initial_response: Option<&[u8]>) -> (Self, Step) {
        let mut exchange = PasswordExchange {
            state: match mechanism {
                PasswordMechanism::Plain => State::Plain,
                PasswordMechanism::Login => State::LoginUser,
            },
        };
        let step = match initial_response {
            Some(response) => exchange.respond(response),
            None => Step::Challenge(match mechanism {
                PasswordMechanism::Plain => "",
                PasswordMechanism::Login => LOGIN_USER_PROMPT,
            }),
        };
        (exchange, step)
    }

    /// Processes one client response line (base64, `=` for empty, `*` to cancel), without
    /// its line ending.
    pub fn respond(&mut self, line: &[u8]) -> Step {
        let state = std::mem::replace(&mut self.state, State::Finished);
        if matches!(state, State::Finished) {
            return Step::Failed(SaslError::MalformedPlain);
        }
        let decoded = match sasl::decode_response(line) {
            Ok(decoded) => decoded,
            Err(e) => return Step::Failed(e),
        };
        match state {
            State::Plain => match sasl::decode_plain(&decoded) {
                Ok(credentials) => Step::Done {
                    user: credentials.user,
                    password: credentials.password,
                },
                Err(e) => Step::Failed(e),
            },
            State::LoginUser => match decoded.expose_str() {
                Some(user) => {
                    self.state = State::LoginPassword {
                        user: user.to_string(),
                    };
                    Step::Challenge(LOGIN_PASSWORD_PROMPT)
                }
                None => Step::Failed(SaslError::UserNotUtf8),
            },
            State::LoginPassword { user } => Step::Done {
                user,
                password: decoded,
            },
            State::Finished => Step::Failed(SaslError::MalformedPlain),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn done(step: Step) -> (String, Vec<u8>) {
        match step {
            Step::Done { user, password } => (user, password.expose().to_vec()),
            other => panic!("expected credentials, got {other:?}"),
        }
    }

    #[test]
    fn mechanism_names_are_case_insensitive() {
        assert_eq!(
            PasswordMechanism::from_name("plain"),
            Some(PasswordMechanism::Plain)
        );
        assert_eq!(
            PasswordMechanism::from_name("Login"),
            Some(PasswordMechanism::Login)
        );
        assert_eq!(PasswordMechanism::from_name("XOAUTH2"), None);
        assert_eq!(PasswordMechanism::from_name("CRAM-MD5"), None);
    }

    #[test]
    fn plain_with_and_without_initial_response() {
        let (_, step) = PasswordExchange::start(PasswordMechanism::Plain, Some(b"AGRlbW8AcHc="));
        assert_eq!(done(step), ("demo".into(), b"pw".to_vec()));

        let (mut ex, step) = PasswordExchange::start(PasswordMechanism::Plain, None);
        assert!(matches!(step, Step::Challenge("")));
        assert_eq!(
            done(ex.respond(b"AGRlbW8AcHc=")),
            ("demo".into(), b"pw".to_vec())
        );
    }

    #[test]
    fn login_prompts_for_user_then_password() {
        let (mut ex, step) = PasswordExchange::start(PasswordMechanism::Login, None);
        assert!(matches!(step, Step::Challenge("VXNlcm5hbWU6")));
        assert!(matches!(
            ex.respond(b"ZGVtbw=="),
            Step::Challenge("UGFzc3dvcmQ6")
        ));
        assert_eq!(done(ex.respond(b"cHc=")), ("demo".into(), b"pw".to_vec()));
        // The exchange is over; further lines are refused rather than reused.
        assert!(matches!(ex.respond(b"cHc="), Step::Failed(_)));
    }

    #[test]
    fn login_initial_response_is_the_user_name() {
        let (mut ex, step) = PasswordExchange::start(PasswordMechanism::Login, Some(b"ZGVtbw=="));
        assert!(matches!(step, Step::Challenge("UGFzc3dvcmQ6")));
        assert_eq!(done(ex.respond(b"=")), ("demo".into(), Vec::new()));
    }

    #[test]
    fn cancel_garbage_and_bad_user_names_fail() {
        let (mut ex, _) = PasswordExchange::start(PasswordMechanism::Login, None);
        assert!(matches!(
            ex.respond(b"*"),
            Step::Failed(SaslError::Cancelled)
        ));
        let (_, step) = PasswordExchange::start(PasswordMechanism::Plain, Some(b"!!!"));
        assert!(matches!(step, Step::Failed(SaslError::Base64)));
        let (_, step) = PasswordExchange::start(PasswordMechanism::Plain, Some(b"bm9udWw="));
        assert!(matches!(step, Step::Failed(SaslError::MalformedPlain)));
        // "\xff\xfe" is not UTF-8.
        let (_, step) = PasswordExchange::start(PasswordMechanism::Login, Some(b"//4="));
        assert!(matches!(step, Step::Failed(SaslError::UserNotUtf8)));
    }
}
