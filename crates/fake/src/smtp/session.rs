//! One submission connection: the greeting, the dialog before and after STARTTLS, AUTH, and
//! mail transactions (DATA and BDAT) ending in delivery to the fake mailboxes.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use oxbridge_wire::line::trim_eol;
use oxbridge_wire::sasl::{LOGIN_PASSWORD_PROMPT, LOGIN_USER_PROMPT};
use oxbridge_wire::Protocol;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::conn::{ReadError, SmtpConn};
use super::{
    Service, Submission, SubmitterSlot, TlsMode, AUTH_CONTINUE, AUTH_OK, BASIC_AUTH_RETIRED,
    CLOSING, EHLO_AFTER_TLS, EHLO_BEFORE_TLS, MAX_MESSAGE_SIZE, NOT_AUTHENTICATED, RECIPIENT_OK,
    SENDER_OK, STARTTLS_READY, START_MAIL_INPUT, TOO_BIG, UNRECOGNIZED_AUTH,
};
use crate::xoauth2::{self, Refusal};

/// Longest command line: an AUTH line with a 6 KB token is about 8 KB (EXCHANGE.md §2.1).
const MAX_LINE: usize = 64 * 1024;
/// Silence after which the service hangs up.
const INACTIVITY: Duration = Duration::from_secs(10 * 60);
/// Bound on the STARTTLS or implicit TLS handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The base64 JSON challenge Gmail sends before refusing a token (EXCHANGE.md §5.1):
/// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`.
const ERROR_CHALLENGE: &str = "334 eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==";

/// Runs one connection from greeting to close.
pub(super) async fn run(
    tcp: TcpStream,
    peer: SocketAddr,
    mode: TlsMode,
    service: &Service,
) -> io::Result<()> {
    let mut session = Session {
        service,
        peer,
        tls: false,
        greeted: false,
        login: None,
        transaction: None,
        connected_at: std::time::Instant::now(),
    };
    match mode {
        TlsMode::Implicit => {
            let mut conn = SmtpConn::new(handshake(service, tcp).await?);
            session.tls = true;
            conn.reply(&service.names.greeting()).await?;
            session.serve(&mut conn).await?;
            conn.close().await;
        }
        TlsMode::StartTls => {
            let mut conn = SmtpConn::new(tcp);
            conn.reply(&service.names.greeting()).await?;
            if let Flow::StartTls = session.serve(&mut conn).await? {
                let mut conn = SmtpConn::new(handshake(service, conn.into_inner()).await?);
                session.tls = true;
                session.greeted = false;
                session.serve(&mut conn).await?;
                conn.close().await;
            } else {
                conn.close().await;
            }
        }
    }
    Ok(())
}

async fn handshake(
    service: &Service,
    tcp: TcpStream,
) -> io::Result<tokio_rustls::server::TlsStream<TcpStream>> {
    tokio::time::timeout(HANDSHAKE_TIMEOUT, service.acceptor.accept(tcp))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))?
}

/// Why [`Session::serve`] returned.
enum Flow {
    Close,
    /// STARTTLS was accepted: continue over TLS.
    StartTls,
}

/// The mailbox a session authenticated as.
struct Login {
    mailbox: String,
    /// One of the mailbox's concurrent submission slots, if one was free.
    slot: Option<SubmitterSlot>,
}

/// A mail transaction after MAIL FROM.
struct Transaction {
    sender: String,
    recipients: Vec<String>,
    /// BDAT chunks received so far; `None` until the first BDAT.
    chunks: Option<Vec<u8>>,
    too_big: bool,
}

struct Session<'a> {
    service: &'a Service,
    peer: SocketAddr,
    tls: bool,
    greeted: bool,
    login: Option<Login>,
    transaction: Option<Transaction>,
    connected_at: std::time::Instant,
}

impl Session<'_> {
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
    ) -> io::Result<Flow> {
        loop {
            let line = match tokio::time::timeout(INACTIVITY, conn.read_line(MAX_LINE)).await {
                Ok(Ok(line)) => line,
                Ok(Err(ReadError::Eof)) => return Ok(Flow::Close),
                Ok(Err(ReadError::TooLong)) => {
                    conn.reply(&self.service.names.unrecognized()).await?;
                    return Ok(Flow::Close);
                }
                Ok(Err(ReadError::Io(e))) => return Err(e),
                Err(_) => {
                    conn.reply("421 4.4.1 Connection timed out").await?;
                    return Ok(Flow::Close);
                }
            };
            let line = String::from_utf8_lossy(trim_eol(&line)).into_owned();
            let (verb, args) = match line.split_once(' ') {
                Some((verb, args)) => (verb.to_ascii_uppercase(), args.trim()),
                None => (line.to_ascii_uppercase(), ""),
            };
            match verb.as_str() {
                "EHLO" => {
                    self.greeted = true;
                    self.transaction = None;
                    conn.reply(&self.ehlo()).await?;
                }
                "HELO" => {
                    self.greeted = true;
                    self.transaction = None;
                    let host = &self.service.names.host;
                    conn.reply(&format!("250 {host} Hello [{}]", self.peer.ip()))
                        .await?;
                }
                "STARTTLS" if !self.tls => {
                    conn.reply(STARTTLS_READY).await?;
                    return Ok(Flow::StartTls);
                }
                "AUTH" => self.auth(conn, args).await?,
                "MAIL" => {
                    let reply = self.mail(args);
                    conn.reply(&reply).await?;
                }
                "RCPT" => {
                    let reply = self.rcpt(args);
                    conn.reply(&reply).await?;
                }
                "DATA" => self.data(conn).await?,
                "BDAT" => self.bdat(conn, args).await?,
                "RSET" => {
                    self.transaction = None;
                    conn.reply("250 2.0.0 Resetting").await?;
                }
                "NOOP" => conn.reply("250 2.0.0 OK").await?,
                "QUIT" => {
                    conn.reply(CLOSING).await?;
                    return Ok(Flow::Close);
                }
                _ => conn.reply(&self.service.names.unrecognized()).await?,
            }
        }
    }

    fn ehlo(&self) -> String {
        let list = if self.tls {
            EHLO_AFTER_TLS
        } else {
            EHLO_BEFORE_TLS
        };
        let mut lines = vec![format!(
            "250-{} Hello [{}]",
            self.service.names.host,
            self.peer.ip()
        )];
        for (i, ext) in list.iter().enumerate() {
            let separator = if i + 1 == list.len() { ' ' } else { '-' };
            lines.push(format!("250{separator}{ext}"));
        }
        lines.join("\r\n")
    }

    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
        args: &str,
    ) -> io::Result<()> {
        if !self.greeted {
            return conn.reply("503 5.5.2 Send hello first").await;
        }
        if self.login.is_some() {
            return conn.reply("503 5.5.2 Already authenticated").await;
        }
        let (mechanism, initial) = match args.split_once(' ') {
            Some((m, ir)) => (m, Some(ir.trim())),
            None => (args, None),
        };
        let switches = self.service.switches.switches();
        let case_ok =
            !switches.strict_mechanism_case || mechanism.chars().all(|c| !c.is_ascii_lowercase());
        // AUTH is offered only after TLS; before it, every mechanism is unknown.
        if !self.tls || !case_ok {
            return conn.reply(UNRECOGNIZED_AUTH).await;
        }
        if mechanism.eq_ignore_ascii_case("XOAUTH2") {
            self.xoauth2(conn, initial).await
        } else if mechanism.eq_ignore_ascii_case("LOGIN") {
            self.basic(conn, initial).await
        } else {
            conn.reply(UNRECOGNIZED_AUTH).await
        }
    }

    /// XOAUTH2: the initial response inline or after `334 `.
    async fn xoauth2<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
        initial: Option<&str>,
    ) -> io::Result<()> {
        let names = &self.service.names;
        let blob = match initial {
            Some(blob) => blob.as_bytes().to_vec(),
            None => {
                conn.reply(AUTH_CONTINUE).await?;
                match self.response_line(conn).await? {
                    Some(line) => line,
                    None => return Ok(()),
                }
            }
        };
        if blob == b"*" {
            // Exchange answers a cancel with 535, not RFC 4954's 501.
            return conn.reply(&names.bad_token()).await;
        }
        let switches = self.service.switches.switches();
        if switches.tenant_auth_disabled {
            return conn.reply(&names.auth_disabled("Tenant")).await;
        }
        match xoauth2::authenticate(
            &self.service.directory,
            Protocol::Smtp,
            &blob,
            self.connected_at,
        ) {
            Ok(authorized) => {
                let slot = self.service.switches.take_slot(&authorized.mailbox);
                self.login = Some(Login {
                    mailbox: authorized.mailbox,
                    slot,
                });
                conn.reply(AUTH_OK).await
            }
            Err(Refusal::ProtocolDisabled) => conn.reply(&names.auth_disabled("Mailbox")).await,
            Err(_) => {
                if switches.error_challenge {
                    conn.reply(ERROR_CHALLENGE).await?;
                    if self.response_line(conn).await?.is_none() {
                        return Ok(());
                    }
                }
                conn.reply(&names.bad_token()).await
            }
        }
    }

    /// AUTH LOGIN with a password: prompts like Exchange, then refuses, since Basic auth is
    /// off (or retired) for client submission.
    async fn basic<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
        initial: Option<&str>,
    ) -> io::Result<()> {
        let prompts = if initial.is_some() {
            &[LOGIN_PASSWORD_PROMPT][..]
        } else {
            &[LOGIN_USER_PROMPT, LOGIN_PASSWORD_PROMPT][..]
        };
        for prompt in prompts {
            conn.reply(&format!("334 {prompt}")).await?;
            match self.response_line(conn).await? {
                Some(line) if line == b"*" => {
                    return conn.reply(&self.service.names.bad_token()).await
                }
                Some(_) => {}
                None => return Ok(()),
            }
        }
        if self.service.switches.switches().basic_auth_retired {
            conn.reply(BASIC_AUTH_RETIRED).await
        } else {
            conn.reply(&self.service.names.basic_disabled()).await
        }
    }

    /// One SASL response line, trimmed; `None` if the client went away.
    async fn response_line<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
    ) -> io::Result<Option<Vec<u8>>> {
        match tokio::time::timeout(INACTIVITY, conn.read_line(MAX_LINE)).await {
            Ok(Ok(line)) => Ok(Some(trim_eol(&line).trim_ascii().to_vec())),
            Ok(Err(ReadError::Io(e))) => Err(e),
            Ok(Err(_)) | Err(_) => Ok(None),
        }
    }

    fn mail(&mut self, args: &str) -> String {
        if !self.greeted {
            return "503 5.5.2 Send hello first".into();
        }
        if self.login.is_none() {
            return NOT_AUTHENTICATED.into();
        }
        if self.transaction.is_some() {
            return "503 5.5.2 Sender already specified".into();
        }
        let Some((sender, params)) = path_after(args, "FROM:") else {
            return "501 5.5.4 Invalid arguments".into();
        };
        let size = params.split_ascii_whitespace().find_map(|p| {
            let (k, v) = p.split_once('=')?;
            k.eq_ignore_ascii_case("SIZE")
                .then(|| v.parse::<u64>().ok())?
        });
        if size.is_some_and(|s| s > MAX_MESSAGE_SIZE as u64) {
            return TOO_BIG.into();
        }
        self.transaction = Some(Transaction {
            sender,
            recipients: Vec::new(),
            chunks: None,
            too_big: false,
        });
        SENDER_OK.into()
    }

    fn rcpt(&mut self, args: &str) -> String {
        let Some(transaction) = self.transaction.as_mut() else {
            return "503 5.5.2 Need mail command".into();
        };
        match path_after(args, "TO:") {
            Some((recipient, _)) if !recipient.is_empty() => {
                transaction.recipients.push(recipient);
                RECIPIENT_OK.into()
            }
            _ => "501 5.5.4 Invalid arguments".into(),
        }
    }

    /// Why a transaction may not take message data now, if it may not.
    fn data_refusal(&self) -> Option<&'static str> {
        match &self.transaction {
            None => Some("503 5.5.2 Need mail command"),
            Some(t) if t.recipients.is_empty() => Some("503 5.5.2 Need rcpt command"),
            _ => None,
        }
    }

    async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
    ) -> io::Result<()> {
        if let Some(refusal) = self.data_refusal() {
            return conn.reply(refusal).await;
        }
        if self
            .transaction
            .as_ref()
            .is_some_and(|t| t.chunks.is_some())
        {
            return conn.reply("503 5.5.2 DATA after BDAT").await;
        }
        conn.reply(START_MAIL_INPUT).await?;
        let message = match conn.read_data(MAX_MESSAGE_SIZE).await {
            Ok(message) => message,
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => return Ok(()),
        };
        let reply = self.submit(message);
        conn.reply(&reply).await
    }

    async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        conn: &mut SmtpConn<S>,
        args: &str,
    ) -> io::Result<()> {
        let mut words = args.split_ascii_whitespace();
        let size = words.next().and_then(|s| s.parse::<u64>().ok());
        let last = words.next().is_some_and(|w| w.eq_ignore_ascii_case("LAST"));
        let Some(size) = size else {
            return conn.reply("501 5.5.4 Invalid arguments").await;
        };
        let refusal = self.data_refusal();
        let transaction = self.transaction.as_mut().filter(|_| refusal.is_none());
        let sink = transaction.and_then(|t| {
            let chunks = t.chunks.get_or_insert_with(Vec::new);
            if t.too_big || chunks.len() as u64 + size > MAX_MESSAGE_SIZE as u64 {
                t.too_big = true;
                *chunks = Vec::new();
                None
            } else {
                Some(chunks)
            }
        });
        // The chunk follows at once and must be read even when it is refused.
        match conn.read_chunk(size, sink).await {
            Ok(()) => {}
            Err(ReadError::Io(e)) => return Err(e),
            Err(_) => return Ok(()),
        }
        if let Some(refusal) = refusal {
            return conn.reply(refusal).await;
        }
        if !last {
            return conn.reply("250 2.6.0 CHUNK received OK").await;
        }
        let message = self
            .transaction
            .as_mut()
            .and_then(|t| (!t.too_big).then(|| t.chunks.take().unwrap_or_default()));
        let reply = self.submit(message);
        conn.reply(&reply).await
    }

    /// Ends the transaction with the message (`None`: too big) and returns the reply.
    fn submit(&mut self, message: Option<Vec<u8>>) -> String {
        let names = &self.service.names;
        let switches = &self.service.switches;
        let (Some(transaction), Some(login)) = (self.transaction.take(), self.login.as_mut())
        else {
            return "503 5.5.2 Need mail command".into();
        };
        let Some(message) = message else {
            return TOO_BIG.into();
        };
        if login.slot.is_none() {
            login.slot = switches.take_slot(&login.mailbox);
        }
        if login.slot.is_none() {
            return names.thread_limit();
        }
        if !switches.may_send_as(&login.mailbox, &transaction.sender) {
            return names.send_as_denied(&login.mailbox, &transaction.sender);
        }
        let directory = &self.service.directory;
        for recipient in &transaction.recipients {
            if directory.has_mailbox(recipient) {
                directory.deliver(recipient, "INBOX", &message);
            }
        }
        directory.deliver(&login.mailbox, "Sent Items", &message);
        switches.record(Submission {
            mailbox: login.mailbox.clone(),
            sender: transaction.sender,
            recipients: transaction.recipients,
            message,
        });
        names.queued()
    }
}

/// `FROM:<a@b> PARAMS` (with `prefix` = `FROM:`): the address without brackets and the
/// parameters.
fn path_after<'a>(args: &'a str, prefix: &str) -> Option<(String, &'a str)> {
    let head = args.get(..prefix.len())?;
    if !head.eq_ignore_ascii_case(prefix) {
        return None;
    }
    let rest = args[prefix.len()..].trim_start();
    let (path, params) = match rest.strip_prefix('<') {
        Some(inner) => {
            let end = inner.find('>')?;
            (&inner[..end], &inner[end + 1..])
        }
        None => rest.split_once(' ').unwrap_or((rest, "")),
    };
    Some((path.to_string(), params.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_with_and_without_brackets_and_parameters() {
        assert_eq!(
            path_after("FROM:<a@b> SIZE=10 BODY=8BITMIME", "FROM:"),
            Some(("a@b".into(), "SIZE=10 BODY=8BITMIME"))
        );
        assert_eq!(path_after("from: <>", "FROM:"), Some(("".into(), "")));
        assert_eq!(path_after("TO:c@d", "TO:"), Some(("c@d".into(), "")));
        assert_eq!(path_after("TO:<c@d", "TO:"), None);
        assert_eq!(path_after("FROM<a@b>", "FROM:"), None);
    }
}
