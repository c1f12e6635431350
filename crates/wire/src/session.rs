//! The contract between the session driver (in the server crate) and a protocol crate.
//!
//! A [`FrontEnd`] is a sans-IO state machine for the client's pre-auth dialog: the driver
//! feeds it bytes and performs what it asks for. A [`BackEnd`] logs in upstream with a
//! bearer token and hands back the authenticated connection for the splice.

use std::future::Future;

use bytes::BytesMut;

use crate::{
    Login, LoginRejection, RelayRejection, RelayRequest, Secret, UpstreamEndpoint, UpstreamError,
    UpstreamStream,
};

/// What the driver does after [`FrontEnd::receive`] returns (after writing `out`).
#[derive(Debug)]
pub enum Next {
    /// Read more client input, then call `receive` again.
    Read,
    /// Start TLS on the client connection. The driver discards any input already buffered
    /// (bytes pipelined behind STARTTLS must not be executed), then calls `tls_started`.
    StartTls,
    /// Authenticate this login, then call `login_succeeded` or `login_failed`.
    Login(Login),
    /// Log in upstream as the account a relay rule assigns to the client's network (no
    /// client credentials; SMTP only). On success the driver calls `login_succeeded`, then
    /// sends `replay` upstream ahead of any buffered client input: it is the client command
    /// that asked for the relay (`MAIL FROM`), which the upstream then answers itself. On
    /// failure it calls `relay_refused`, `login_failed` or `upstream_refused`.
    Relay {
        request: RelayRequest,
        replay: Vec<u8>,
    },
    /// Close the connection.
    Close,
}

/// A protocol's pre-authentication dialog with the client.
pub trait FrontEnd: Send {
    /// The greeting sent when the connection (or implicit TLS) is up.
    fn greeting(&mut self, out: &mut Vec<u8>);

    /// Consumes complete commands from `input`, appending replies to `out`. Must leave in
    /// `input` only an incomplete command within the protocol's limits; enforcing those
    /// limits here is what keeps the driver's buffer bounded.
    fn receive(&mut self, input: &mut BytesMut, out: &mut Vec<u8>) -> Next;

    /// TLS is now active on the client connection.
    fn tls_started(&mut self);

    /// The upstream accepted the login; write the success reply. The driver splices next,
    /// forwarding any client input still buffered.
    fn login_succeeded(&mut self, upstream: &UpstreamSession, out: &mut Vec<u8>);

    /// The login failed; write the protocol's failure reply. Returns what to do next
    /// (usually [`Next::Read`], so the client may try again).
    fn login_failed(&mut self, why: LoginRejection, out: &mut Vec<u8>) -> Next;

    /// The upstream refused the token and said why in its own words: `reply` is what the
    /// back-end reported in [`UpstreamError::Rejected`] (the SMTP back-end puts the whole
    /// final reply there, lines joined by CRLF, without the last CRLF). Protocols whose
    /// clients act on the upstream's exact reply (SMTP's enhanced status codes, e.g.
    /// `535 5.7.139 … SmtpClientAuthentication is disabled`) pass it through; by default it
    /// is answered like any [`LoginRejection::UpstreamRejected`].
    fn upstream_refused(&mut self, reply: &str, out: &mut Vec<u8>) -> Next {
        let _ = reply;
        self.login_failed(LoginRejection::UpstreamRejected, out)
    }

    /// The relay rules refused a [`Next::Relay`] request; write the refusal. Only
    /// front-ends that ask for relays are called; the default closes the connection.
    fn relay_refused(&mut self, why: RelayRejection, out: &mut Vec<u8>) -> Next {
        let _ = (why, out);
        Next::Close
    }

    /// The pre-auth time limit passed; write a goodbye if the protocol has one.
    fn timed_out(&mut self, out: &mut Vec<u8>);

    /// The server is shutting down; write a goodbye if the protocol has one.
    fn shutting_down(&mut self, out: &mut Vec<u8>);

    /// What the driver may write to the client when the server ends a *spliced* session
    /// (the drain at shutdown), or `None` to close without a word. Asked once, before the
    /// front-end is dropped for the splice. The driver writes it only where the upstream's
    /// output stopped at a line end, but it cannot know whether that end is between two
    /// responses, so only a protocol that allows an unsolicited line anywhere between
    /// responses should say anything: IMAP does (an untagged `* BYE`, RFC 9051 §7.1.5);
    /// POP3 and SMTP do not (an `-ERR` or `421` could be taken as the answer to a command
    /// in flight, or as part of a multi-line reply), so they close silently and their
    /// clients see a dropped connection, which they treat as temporary.
    fn spliced_goodbye(&self) -> Option<&'static [u8]> {
        None
    }
}

/// An authenticated upstream connection.
#[derive(Debug)]
pub struct UpstreamSession {
    /// Boxed: the TLS state is over a kilobyte, and a session task reserves room for every
    /// value it holds across an await in any of its states (the login's result, then the
    /// splice's), so inline it would be paid for more than once, for the whole session.
    pub stream: Box<UpstreamStream>,
    /// Bytes read from the upstream after the login reply; they go to the client first.
    pub leftover: BytesMut,
    /// The upstream's post-auth capabilities, for protocols that report them on login.
    pub capabilities: Option<String>,
}

/// A protocol's upstream login with a bearer token.
pub trait BackEnd: Send + Sync + 'static {
    fn login(
        &self,
        endpoint: &UpstreamEndpoint,
        mailbox: &str,
        token: &Secret,
    ) -> impl Future<Output = Result<UpstreamSession, UpstreamError>> + Send;
}
