//! The fake Exchange Online IMAP service (implicit TLS, like `outlook.office365.com:993`):
//! greeting and capability lists byte for byte as EXCHANGE.md §2.2 records them, XOAUTH2
//! only, Exchange's failure strings, and an in-memory store good enough for real clients.

pub mod command;
pub mod encode;
pub mod fetch;
mod folders;
pub mod search;
mod selected;
pub mod sequence;
mod session;
mod structure;

use std::sync::Arc;

use tokio::net::TcpListener;

use crate::directory::Directory;
use crate::service::accept_tls;

/// Capabilities before login (EXO with Basic auth off still advertises AUTH=PLAIN).
pub const CAPABILITY_PRE_AUTH: &str =
    "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+";
/// Capabilities after login.
pub const CAPABILITY_AUTHENTICATED: &str = "IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+";

/// Sent (then the connection closes) on the first command after the token expired.
pub const BYE_EXPIRED: &str = "* BYE Session invalidated - AccessTokenExpired\r\n";
/// Sent after the second command of an "authenticated but not connected" session.
pub const BYE_NOT_CONNECTED: &str = "* BYE Connection closed. 14\r\n";
/// Sent when a client has been silent too long.
pub const BYE_IDLE: &str = "* BYE Connection is closed. 13\r\n";
/// Sent in answer to LOGOUT, before the tagged OK.
pub const BYE_LOGOUT: &str = "* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n";

/// `* OK The Microsoft Exchange IMAP4 service is ready. [<b64 UTF-16LE backend>]`.
pub fn greeting(backend_fqdn: &str) -> String {
    format!(
        "* OK The Microsoft Exchange IMAP4 service is ready. [{}]\r\n",
        utf16le_base64(backend_fqdn)
    )
}

/// Base64 of the UTF-16LE encoding, as EXO puts the backend name in its greetings.
pub fn utf16le_base64(s: &str) -> String {
    let bytes: Vec<u8> = s.encode_utf16().flat_map(u16::to_le_bytes).collect();
    oxbridge_wire::sasl::encode_base64(&bytes)
}

/// Serves IMAP on `listener` until the calling task is aborted.
pub(crate) async fn serve(
    directory: Directory,
    listener: TcpListener,
    tls: Arc<rustls::ServerConfig>,
    backend_fqdn: String,
) {
    let greeting: Arc<str> = greeting(&backend_fqdn).into();
    accept_tls(listener, tls, move |stream| {
        let resumed = stream.get_ref().1.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
        directory.record_imap_handshake(resumed);
        let session = session::Session::new(stream, directory.clone());
        let greeting = greeting.clone();
        async move {
            if let Err(e) = session.run(&greeting).await {
                tracing::debug!(error = %e, "fake IMAP session ended with an error");
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greeting_carries_utf16le_backend_name() {
        // The real sample from EXCHANGE.md §1.1.
        let b64 = utf16le_base64("FR3P281CA0157.DEUP281.PROD.OUTLOOK.COM");
        assert_eq!(
            b64,
            "RgBSADMAUAAyADgAMQBDAEEAMAAxADUANwAuAEQARQBVAFAAMgA4ADEALgBQAFIATwBEAC4ATwBVAFQATABPAE8ASwAuAEMATwBNAA=="
        );
        assert!(
            greeting("X").starts_with("* OK The Microsoft Exchange IMAP4 service is ready. [WAA=]")
        );
    }
}
