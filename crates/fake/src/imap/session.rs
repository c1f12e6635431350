//! One IMAP connection: framing of commands and literals, the login states (not
//! authenticated, "authenticated but not connected", authenticated, selected), XOAUTH2,
//! token expiry, IDLE, and dispatch of every command to its reply.

use std::io;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use oxbridge_wire::line::trim_eol;
use oxbridge_wire::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};

use super::command::{self, literal_suffix, tag_of, Command, ParseError, Tagged};
use super::folders;
use super::selected::Selection;
use super::{
    BYE_EXPIRED, BYE_IDLE, BYE_LOGOUT, BYE_NOT_CONNECTED, CAPABILITY_AUTHENTICATED,
    CAPABILITY_PRE_AUTH,
};
use crate::clock::parse_imap_datetime;
use crate::conn::{Conn, ReadError};
use crate::directory::{Directory, SessionGuard};
use crate::mailbox::{Flags, StoreError};
use crate::xoauth2;

/// Longest command line (an XOAUTH2 line with a 6 KB token is about 8 KB; allow far more).
const MAX_LINE: usize = 128 * 1024;
/// Largest literal (APPEND) accepted.
const MAX_LITERAL: u64 = 64 * 1024 * 1024;
/// Largest command including all its literals.
const MAX_COMMAND: usize = 80 * 1024 * 1024;
/// Inactivity after which the server closes the connection.
const INACTIVITY: Duration = Duration::from_secs(30 * 60);

const INVALID_STATE: &str = "BAD Command received in Invalid state.";
const BAD_ARGUMENTS: &str = "BAD Command Argument Error. 11";

/// What the session does after a command.
enum Flow {
    Continue,
    Close,
}

/// The session's login state.
enum Phase {
    NotAuthenticated,
    /// AUTHENTICATE succeeded but no mailbox is connected: every command is refused and
    /// the second refusal ends the connection.
    NotConnected {
        token: String,
        strikes: u8,
    },
    Authenticated {
        mailbox: String,
        token: String,
        selected: Option<Selection>,
        _slot: SessionGuard,
    },
}

/// What reading a command produced.
enum Input {
    Command(Vec<u8>),
    /// Refused during framing (already answered); read the next one.
    Refused,
    Closed,
}

pub(crate) struct Session<S> {
    conn: Conn<S>,
    directory: Directory,
    phase: Phase,
    connected_at: std::time::Instant,
}

impl<S: AsyncRead + AsyncWrite + Unpin> Session<S> {
    pub(crate) fn new(stream: S, directory: Directory) -> Self {
        Session {
            conn: Conn::new(stream),
            directory,
            phase: Phase::NotAuthenticated,
            connected_at: std::time::Instant::now(),
        }
    }

    /// Runs the session from greeting to close.
    pub(crate) async fn run(mut self, greeting: &str) -> io::Result<()> {
        self.conn.send(greeting.as_bytes()).await?;
        loop {
            let input = match self.read_command().await? {
                Input::Command(bytes) => bytes,
                Input::Refused => continue,
                Input::Closed => break,
            };
            if self.token_expired() {
                self.conn.send(BYE_EXPIRED.as_bytes()).await?;
                break;
            }
            if let Flow::Close = self.respond(&input).await? {
                break;
            }
        }
        self.conn.close().await;
        Ok(())
    }

    /// Reads one command with its literals, sending `+ Ready` for synchronising ones.
    async fn read_command(&mut self) -> io::Result<Input> {
        let mut command: Vec<u8> = Vec::new();
        loop {
            let line = match self.read_line().await? {
                Some(line) => line,
                None => return Ok(Input::Closed),
            };
            let content = trim_eol(&line);
            let Some((size, sync)) = literal_suffix(content) else {
                command.extend_from_slice(content);
                return Ok(Input::Command(command));
            };
            let total = command.len() as u64 + content.len() as u64 + size;
            if size > MAX_LITERAL || total > MAX_COMMAND as u64 {
                if !sync {
                    self.conn.send(b"* BYE Command too long.\r\n").await?;
                    return Ok(Input::Closed);
                }
                let tag = tag_of(if command.is_empty() {
                    content
                } else {
                    &command
                });
                let tag = tag.unwrap_or_else(|| "*".to_string());
                self.conn
                    .send(format!("{tag} NO [TOOBIG] Message too large.\r\n").as_bytes())
                    .await?;
                return Ok(Input::Refused);
            }
            command.extend_from_slice(content);
            command.extend_from_slice(b"\r\n");
            if sync {
                self.conn
                    .send(b"+ Ready for additional command text.\r\n")
                    .await?;
            }
            // Bounded by MAX_LITERAL above.
            let size = size as usize;
            match tokio::time::timeout(INACTIVITY, self.conn.read_exact(size)).await {
                Ok(Ok(bytes)) => command.extend_from_slice(&bytes),
                Ok(Err(ReadError::Io(e))) => return Err(e),
                Ok(Err(_)) | Err(_) => return Ok(Input::Closed),
            }
        }
    }

    /// One line, or `None` when the connection is over (EOF, inactivity, overlong line).
    async fn read_line(&mut self) -> io::Result<Option<Bytes>> {
        match tokio::time::timeout(INACTIVITY, self.conn.read_line(MAX_LINE)).await {
            Ok(Ok(line)) => Ok(Some(line)),
            Ok(Err(ReadError::Eof)) => Ok(None),
            Ok(Err(ReadError::TooLong)) => {
                self.conn.send(b"* BYE Command line too long.\r\n").await?;
                Ok(None)
            }
            Ok(Err(ReadError::Io(e))) => Err(e),
            Err(_) => {
                self.conn.send(BYE_IDLE.as_bytes()).await?;
                Ok(None)
            }
        }
    }

    fn token(&self) -> Option<&str> {
        match &self.phase {
            Phase::NotAuthenticated => None,
            Phase::NotConnected { token, .. } | Phase::Authenticated { token, .. } => Some(token),
        }
    }

    /// Time left on the session's token (zero if it is gone or expired).
    fn token_time_left(&self) -> Option<Duration> {
        let token = self.token()?;
        let left = self
            .directory
            .token(token)
            .and_then(|t| t.expires_at.duration_since(SystemTime::now()).ok())
            .unwrap_or(Duration::ZERO);
        Some(left)
    }

    fn token_expired(&self) -> bool {
        self.token_time_left().is_some_and(|left| left.is_zero())
    }

    /// Parses and answers one command.
    async fn respond(&mut self, input: &[u8]) -> io::Result<Flow> {
        if let Phase::NotConnected { strikes, .. } = &mut self.phase {
            *strikes += 1;
            let tag = tag_of(input).unwrap_or_else(|| "*".to_string());
            let mut reply = format!("{tag} BAD User is authenticated but not connected.\r\n");
            let last = *strikes >= 2;
            if last {
                reply.push_str(BYE_NOT_CONNECTED);
            }
            self.conn.send(reply.as_bytes()).await?;
            return Ok(if last { Flow::Close } else { Flow::Continue });
        }
        match command::parse(input) {
            Ok(tagged) => self.dispatch(tagged).await,
            Err(e) => {
                let reply = match e {
                    ParseError::NoTag => "* BAD Command Error. 12\r\n".to_string(),
                    ParseError::Unknown { tag } => format!("{tag} BAD Command Error. 12\r\n"),
                    ParseError::BadArguments { tag } => format!("{tag} {BAD_ARGUMENTS}\r\n"),
                };
                self.conn.send(reply.as_bytes()).await?;
                Ok(Flow::Continue)
            }
        }
    }

    async fn dispatch(&mut self, Tagged { tag, command }: Tagged) -> io::Result<Flow> {
        let authenticated = matches!(self.phase, Phase::Authenticated { .. });
        let reply = match command {
            Command::Capability => {
                let caps = if authenticated {
                    CAPABILITY_AUTHENTICATED
                } else {
                    CAPABILITY_PRE_AUTH
                };
                format!("* CAPABILITY {caps}\r\n{tag} OK CAPABILITY completed.\r\n")
            }
            Command::Logout => {
                let reply = format!("{BYE_LOGOUT}{tag} OK LOGOUT completed.\r\n");
                self.conn.send(reply.as_bytes()).await?;
                return Ok(Flow::Close);
            }
            Command::Id => format!(
                "* ID (\"name\" \"Microsoft.Exchange.Imap4.Imap4Server\" \"version\" \"15.20\")\r\n{tag} OK ID completed.\r\n"
            ),
            Command::Noop if !authenticated => format!("{tag} OK NOOP completed.\r\n"),
            Command::Authenticate { mechanism, initial } if !authenticated => {
                return self.authenticate(&tag, &mechanism, initial).await;
            }
            Command::Login if !authenticated => format!("{tag} NO LOGIN failed.\r\n"),
            Command::Idle if authenticated => return self.idle(&tag).await,
            _ if !authenticated => format!("{tag} {INVALID_STATE}\r\n"),
            command => {
                let reply = self.authenticated(&tag, command);
                self.conn.send(&reply).await?;
                return Ok(Flow::Continue);
            }
        };
        self.conn.send(reply.as_bytes()).await?;
        Ok(Flow::Continue)
    }

    /// AUTHENTICATE: XOAUTH2 in SASL-IR or continuation form; PLAIN (a password) always
    /// fails, since Basic authentication is off.
    async fn authenticate(
        &mut self,
        tag: &str,
        mechanism: &str,
        initial: Option<Vec<u8>>,
    ) -> io::Result<Flow> {
        let failed = format!("{tag} NO AUTHENTICATE failed.\r\n");
        if mechanism != "XOAUTH2" && mechanism != "PLAIN" {
            self.conn.send(failed.as_bytes()).await?;
            return Ok(Flow::Continue);
        }
        let response = match initial {
            Some(r) => r,
            None => {
                self.conn.send(b"+ \r\n").await?;
                let Some(line) = self.read_line().await? else {
                    return Ok(Flow::Close);
                };
                let line = trim_eol(&line).to_vec();
                if line == b"*" {
                    let reply = format!("{tag} BAD AUTHENTICATE aborted.\r\n");
                    self.conn.send(reply.as_bytes()).await?;
                    return Ok(Flow::Continue);
                }
                line
            }
        };
        if mechanism == "PLAIN" {
            self.conn.send(failed.as_bytes()).await?;
            return Ok(Flow::Continue);
        }
        let reply = match xoauth2::authenticate(
            &self.directory,
            Protocol::Imap,
            &response,
            self.connected_at,
        ) {
            Ok(login) => {
                self.phase = match self.directory.open_session(Protocol::Imap, &login.mailbox) {
                    Some(slot) => Phase::Authenticated {
                        mailbox: login.mailbox,
                        token: login.token,
                        selected: None,
                        _slot: slot,
                    },
                    None => Phase::NotConnected {
                        token: login.token,
                        strikes: 0,
                    },
                };
                format!("{tag} OK AUTHENTICATE completed.\r\n")
            }
            Err(_) => failed,
        };
        self.conn.send(reply.as_bytes()).await?;
        Ok(Flow::Continue)
    }

    /// IDLE: pushes EXISTS/EXPUNGE as the store changes, ends on DONE, and ends the session
    /// with the expiry BYE when the token expires meanwhile.
    async fn idle(&mut self, tag: &str) -> io::Result<Flow> {
        self.conn
            .send(b"+ IDLE accepted, awaiting DONE command.\r\n")
            .await?;
        let mut changes = self.directory.subscribe();
        changes.borrow_and_update();
        loop {
            let news = match &mut self.phase {
                Phase::Authenticated {
                    selected: Some(selection),
                    ..
                } => selection.sync(&self.directory, true),
                _ => Vec::new(),
            };
            if !news.is_empty() {
                self.conn.send(&news).await?;
            }
            let left = self.token_time_left().unwrap_or(Duration::ZERO);
            if left.is_zero() {
                self.conn.send(BYE_EXPIRED.as_bytes()).await?;
                return Ok(Flow::Close);
            }
            tokio::select! {
                line = tokio::time::timeout(INACTIVITY, self.conn.read_line(MAX_LINE)) => {
                    let reply = match line {
                        Ok(Ok(line)) if trim_eol(&line).eq_ignore_ascii_case(b"DONE") => {
                            format!("{tag} OK IDLE completed.\r\n")
                        }
                        Ok(Ok(_)) => format!("{tag} {BAD_ARGUMENTS}\r\n"),
                        Ok(Err(ReadError::Io(e))) => return Err(e),
                        Ok(Err(_)) => return Ok(Flow::Close),
                        Err(_) => {
                            self.conn.send(BYE_IDLE.as_bytes()).await?;
                            return Ok(Flow::Close);
                        }
                    };
                    self.conn.send(reply.as_bytes()).await?;
                    return Ok(Flow::Continue);
                }
                _ = changes.changed() => {}
                _ = tokio::time::sleep(left) => {}
            }
        }
    }

    /// Commands of the authenticated and selected states; returns the whole reply (bytes:
    /// message content need not be UTF-8).
    fn authenticated(&mut self, tag: &str, command: Command) -> Vec<u8> {
        let Phase::Authenticated {
            mailbox, selected, ..
        } = &mut self.phase
        else {
            return format!("{tag} {INVALID_STATE}\r\n").into_bytes();
        };
        let directory = &self.directory;
        let mut out: Vec<u8> = Vec::new();
        // Whether the news appended afterwards may include EXPUNGE responses.
        let mut allow_expunge = true;
        let status = match command {
            Command::Noop => "OK NOOP completed.".to_string(),
            Command::Check => "OK CHECK completed.".to_string(),
            Command::Namespace => {
                out.extend_from_slice(b"* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n");
                "OK NAMESPACE completed.".to_string()
            }
            Command::List {
                reference,
                pattern,
                lsub,
            } => {
                out.extend(folders::list(
                    directory, mailbox, &reference, &pattern, lsub,
                ));
                format!("OK {} completed.", if lsub { "LSUB" } else { "LIST" })
            }
            Command::Status {
                mailbox: folder,
                items,
            } => match folders::status(directory, mailbox, &folder, &items) {
                Some(line) => {
                    out.extend(line);
                    "OK STATUS completed.".to_string()
                }
                None => "NO The requested item could not be found.".to_string(),
            },
            Command::Select {
                mailbox: folder,
                read_only,
            } => {
                *selected = None;
                match Selection::open(directory, mailbox, &folder, read_only) {
                    Some((selection, lines)) => {
                        out.extend(lines);
                        *selected = Some(selection);
                        if read_only {
                            "OK [READ-ONLY] EXAMINE completed.".to_string()
                        } else {
                            "OK [READ-WRITE] SELECT completed.".to_string()
                        }
                    }
                    None => "NO The requested item could not be found.".to_string(),
                }
            }
            Command::Create(folder) => match directory.create_folder(mailbox, &folder) {
                Ok(()) => "OK CREATE completed.".to_string(),
                Err(_) => "NO Mailbox already exists.".to_string(),
            },
            Command::Delete(folder) => match directory.delete_folder(mailbox, &folder) {
                Ok(()) => "OK DELETE completed.".to_string(),
                Err(_) => "NO The requested item could not be found.".to_string(),
            },
            Command::Subscribe(_) => "OK SUBSCRIBE completed.".to_string(),
            Command::Unsubscribe(_) => "OK UNSUBSCRIBE completed.".to_string(),
            Command::Append {
                mailbox: folder,
                flags,
                date,
                message,
            } => {
                let when = match date.as_deref().map(parse_imap_datetime) {
                    None => Some(SystemTime::now()),
                    Some(parsed) => parsed,
                };
                match when {
                    None => BAD_ARGUMENTS.to_string(),
                    Some(when) => {
                        let appended = directory.append(
                            mailbox,
                            &folder,
                            Bytes::from(message),
                            Flags::new(&flags),
                            when,
                        );
                        match appended {
                            Ok((validity, uid)) => {
                                format!("OK [APPENDUID {validity} {uid}] APPEND completed.")
                            }
                            Err(StoreError::NoFolder) => {
                                "NO [TRYCREATE] Mailbox doesn't exist.".to_string()
                            }
                            Err(_) => "NO APPEND failed.".to_string(),
                        }
                    }
                }
            }
            Command::Authenticate { .. } | Command::Login | Command::StartTls => {
                INVALID_STATE.to_string()
            }
            Command::Capability | Command::Logout | Command::Id | Command::Idle => {
                // Handled in dispatch.
                INVALID_STATE.to_string()
            }
            command => {
                let Some(selection) = selected.as_mut() else {
                    return format!("{tag} {INVALID_STATE}\r\n").into_bytes();
                };
                match command {
                    Command::Close | Command::Unselect => {
                        let close = matches!(command, Command::Close);
                        if let Some(selection) = selected.take() {
                            if close {
                                selection.close(directory);
                            }
                        }
                        format!("OK {} completed.", if close { "CLOSE" } else { "UNSELECT" })
                    }
                    Command::Expunge { uids } if !selection.read_only => {
                        out.extend(selection.expunge(directory, uids.as_ref()));
                        "OK EXPUNGE completed.".to_string()
                    }
                    Command::Fetch { uid, set, items } => {
                        allow_expunge = false;
                        out.extend(selection.sync(directory, false));
                        out.extend(selection.fetch(directory, uid, &set, &items));
                        "OK FETCH completed.".to_string()
                    }
                    Command::Store {
                        uid,
                        set,
                        mode,
                        silent,
                        flags,
                    } if !selection.read_only => {
                        allow_expunge = false;
                        out.extend(selection.store(directory, uid, &set, mode, silent, &flags));
                        "OK STORE completed.".to_string()
                    }
                    Command::Search { uid, criteria } => {
                        allow_expunge = false;
                        out.extend(selection.sync(directory, false));
                        match selection.search(directory, uid, &criteria) {
                            Some(lines) => {
                                out.extend(lines);
                                "OK SEARCH completed.".to_string()
                            }
                            None => BAD_ARGUMENTS.to_string(),
                        }
                    }
                    Command::Copy {
                        uid,
                        set,
                        mailbox: target,
                        moving,
                    } if !(moving && selection.read_only) => {
                        let verb = if moving { "MOVE" } else { "COPY" };
                        match selection.copy(directory, uid, &set, &target, moving) {
                            Ok((lines, code)) => {
                                out.extend(lines);
                                // MOVE sends COPYUID untagged, before its EXPUNGEs.
                                if moving {
                                    format!("OK {verb} completed.")
                                } else {
                                    format!("OK {code}{verb} completed.")
                                }
                            }
                            Err(StoreError::NoFolder) => {
                                "NO [TRYCREATE] Mailbox doesn't exist.".to_string()
                            }
                            Err(_) => format!("NO {verb} failed."),
                        }
                    }
                    Command::Expunge { .. } | Command::Store { .. } | Command::Copy { .. } => {
                        "NO Mailbox is read-only.".to_string()
                    }
                    _ => INVALID_STATE.to_string(),
                }
            }
        };
        if let Some(selection) = selected.as_mut() {
            out.extend(selection.sync(directory, allow_expunge));
        }
        out.extend_from_slice(format!("{tag} {status}\r\n").as_bytes());
        out
    }
}
