//! One POP3 connection: the AUTHORIZATION state (CAPA, XOAUTH2 in two steps or, unless
//! switched off, inline; every password login fails), then TRANSACTION over a
//! [`Maildrop`], then UPDATE at QUIT.

use std::io;
use std::time::Duration;

use bytes::Bytes;
use oxbridge_wire::line::trim_eol;
use oxbridge_wire::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{self, Command};
use super::{Maildrop, Pop3Switches, AUTH_FAILED, AUTH_OK, CAPA, SIGN_OFF, WRONG_STATE};
use crate::conn::{Conn, ReadError};
use crate::directory::{Directory, SessionGuard};
use crate::xoauth2;

/// Longest command line: an XOAUTH2 line with a 6 KB token is about 8 KB; allow far more.
const MAX_LINE: usize = 64 * 1024;
/// RFC 1939 §3: an autologout timer of at least 10 minutes.
const INACTIVITY: Duration = Duration::from_secs(10 * 60);

const UNKNOWN: &str = "-ERR Unknown command.\r\n";
const BAD_ARGUMENTS: &str = "-ERR Invalid arguments.\r\n";

enum Flow {
    Continue,
    Close,
}

enum Phase {
    Authorization,
    Transaction {
        maildrop: Maildrop,
        _slot: SessionGuard,
    },
}

pub(crate) struct Session<S> {
    conn: Conn<S>,
    directory: Directory,
    switches: Pop3Switches,
    phase: Phase,
    connected_at: std::time::Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn new(stream: S, directory: Directory, switches: Pop3Switches) -> Self {
        Session {
            conn: Conn::new(stream),
            directory,
            switches,
            phase: Phase::Authorization,
            connected_at: std::time::Instant::now(),
        }
    }

    /// Runs the session from greeting to close.
    pub(crate) async fn run(mut self, greeting: &str) -> io::Result<()> {
        self.conn.send(greeting.as_bytes()).await?;
        while let Some(line) = self.read_line().await? {
            let reply = match &self.phase {
                Phase::Authorization => self.authorization(trim_eol(&line)).await?,
                Phase::Transaction { .. } => self.transaction(trim_eol(&line)).await?,
            };
            if let Flow::Close = reply {
                break;
            }
        }
        self.conn.close().await;
        Ok(())
    }

    /// One line, or `None` when the connection is over (EOF, inactivity, overlong line).
    async fn read_line(&mut self) -> io::Result<Option<Bytes>> {
        match tokio::time::timeout(INACTIVITY, self.conn.read_line(MAX_LINE)).await {
            Ok(Ok(line)) => Ok(Some(line)),
            Ok(Err(ReadError::TooLong)) => {
                self.conn.send(b"-ERR Command line too long.\r\n").await?;
                Ok(None)
            }
            Ok(Err(ReadError::Io(e))) => Err(e),
            Ok(Err(ReadError::Eof)) | Err(_) => Ok(None),
        }
    }

    async fn authorization(&mut self, line: &[u8]) -> io::Result<Flow> {
        let reply: &[u8] = match command::parse(line) {
            Command::Capa => CAPA.as_bytes(),
            Command::User => b"+OK\r\n",
            // Basic authentication is off: a password never works.
            Command::Pass | Command::Apop => AUTH_FAILED.as_bytes(),
            Command::Auth {
                mechanism: None, ..
            } => b"+OK\r\nPLAIN\r\nXOAUTH2\r\n.\r\n",
            Command::Auth {
                mechanism: Some(mechanism),
                initial_response,
            } => return self.auth(&mechanism, initial_response).await,
            Command::Quit => {
                self.conn.send(SIGN_OFF.as_bytes()).await?;
                return Ok(Flow::Close);
            }
            Command::Stls
            | Command::Stat
            | Command::List(_)
            | Command::Uidl(_)
            | Command::Retr(_)
            | Command::Top { .. }
            | Command::Dele(_)
            | Command::Rset
            | Command::Noop => WRONG_STATE.as_bytes(),
            Command::BadArguments => BAD_ARGUMENTS.as_bytes(),
            Command::Unknown => UNKNOWN.as_bytes(),
        };
        self.conn.send(reply).await?;
        Ok(Flow::Continue)
    }

    /// AUTH: XOAUTH2 in two steps (`+ ` then the base64 line) or inline; any other
    /// mechanism carries a password and fails.
    async fn auth(&mut self, mechanism: &str, initial: Option<Vec<u8>>) -> io::Result<Flow> {
        let xoauth2 = mechanism == "XOAUTH2";
        if xoauth2 && initial.is_some() {
            self.switches.record_inline_attempt();
            if self.switches.rejects_inline() {
                self.conn.send(AUTH_FAILED.as_bytes()).await?;
                return Ok(Flow::Continue);
            }
        }
        let response = match initial {
            Some(response) => response,
            None => {
                self.conn.send(b"+ \r\n").await?;
                let Some(line) = self.read_line().await? else {
                    return Ok(Flow::Close);
                };
                let line = trim_eol(&line).to_vec();
                if line == b"*" {
                    // RFC 5034 §4: a cancelled exchange is answered with -ERR [I: text].
                    self.conn
                        .send(b"-ERR Authentication canceled by client.\r\n")
                        .await?;
                    return Ok(Flow::Continue);
                }
                line
            }
        };
        if !xoauth2 {
            self.conn.send(AUTH_FAILED.as_bytes()).await?;
            return Ok(Flow::Continue);
        }
        let reply: &[u8] = match xoauth2::authenticate(
            &self.directory,
            Protocol::Pop3,
            &response,
            self.connected_at,
        ) {
            Ok(login) => match self.directory.open_session(Protocol::Pop3, &login.mailbox) {
                Some(slot) => {
                    self.phase = Phase::Transaction {
                        maildrop: Maildrop::snapshot(&self.directory, &login.mailbox),
                        _slot: slot,
                    };
                    AUTH_OK.as_bytes()
                }
                // Over the per-mailbox connection cap or switched to "not connected"; EXO's
                // POP3 answer is not recorded [I: RFC 2449's IN-USE code].
                None => b"-ERR [IN-USE] The mailbox is in use; try again later.\r\n",
            },
            Err(_) => AUTH_FAILED.as_bytes(),
        };
        self.conn.send(reply).await?;
        Ok(Flow::Continue)
    }

    async fn transaction(&mut self, line: &[u8]) -> io::Result<Flow> {
        let Phase::Transaction { maildrop, .. } = &mut self.phase else {
            return Ok(Flow::Close);
        };
        let reply = match command::parse(line) {
            Command::Capa => CAPA.as_bytes().to_vec(),
            Command::Stat => maildrop.stat(),
            Command::List(n) => maildrop.list(n),
            Command::Uidl(n) => maildrop.uidl(n),
            Command::Retr(n) => maildrop.retr(n),
            Command::Top { message, lines } => maildrop.top(message, lines),
            Command::Dele(n) => maildrop.dele(n),
            Command::Rset => maildrop.rset(),
            Command::Noop => b"+OK\r\n".to_vec(),
            Command::Quit => {
                maildrop.commit(&self.directory);
                self.conn.send(SIGN_OFF.as_bytes()).await?;
                return Ok(Flow::Close);
            }
            Command::Stls
            | Command::User
            | Command::Pass
            | Command::Apop
            | Command::Auth { .. } => WRONG_STATE.as_bytes().to_vec(),
            Command::BadArguments => BAD_ARGUMENTS.as_bytes().to_vec(),
            Command::Unknown => UNKNOWN.as_bytes().to_vec(),
        };
        self.conn.send(&reply).await?;
        Ok(Flow::Continue)
    }
}
