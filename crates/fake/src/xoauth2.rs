//! Server-side XOAUTH2: decoding the client's blob and deciding, as Exchange Online does,
//! whether the token opens the mailbox named in `user=`. Shared by every protocol service;
//! each maps a refusal to its own single, uninformative failure string.

use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use oxbridge_wire::Protocol;

use crate::directory::{Directory, XoauthLogin};

/// Audiences Exchange Online accepts (the `.office.com` one for delegated tokens, the
/// `.office365.com` one for app-only tokens; both work in practice).
pub const OUTLOOK_AUDIENCES: [&str; 2] = [
    "https://outlook.office.com",
    "https://outlook.office365.com",
];

/// A decoded XOAUTH2 initial response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Xoauth2Blob {
    pub user: String,
    pub token: String,
}

/// Why the service refuses a login. EXO never tells the client which; tests and logs may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("malformed XOAUTH2 message")]
    Malformed,
    #[error("unknown access token")]
    UnknownToken,
    #[error("access token expired")]
    Expired,
    #[error("access token has the wrong audience")]
    WrongAudience,
    #[error("access token lacks the protocol's scope or role")]
    MissingScope,
    #[error("delegated token belongs to another user")]
    WrongUser,
    #[error("app has no FullAccess on the mailbox")]
    NoAppAccess,
    #[error("no such mailbox")]
    NoMailbox,
    #[error("protocol disabled for the mailbox")]
    ProtocolDisabled,
}

/// A login the service accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorized {
    /// The mailbox's canonical address.
    pub mailbox: String,
    /// The access token, so the session can watch its expiry.
    pub token: String,
}

/// Decodes base64 `user=U ^A auth=Bearer T ^A ^A`.
pub fn decode(b64: &[u8]) -> Result<Xoauth2Blob, Refusal> {
    let raw = STANDARD
        .decode(b64.trim_ascii())
        .map_err(|_| Refusal::Malformed)?;
    let text = std::str::from_utf8(&raw).map_err(|_| Refusal::Malformed)?;
    let body = text.strip_suffix("\x01\x01").ok_or(Refusal::Malformed)?;
    let (user_part, auth_part) = body.split_once('\x01').ok_or(Refusal::Malformed)?;
    let user = user_part.strip_prefix("user=").ok_or(Refusal::Malformed)?;
    let auth = auth_part.strip_prefix("auth=").ok_or(Refusal::Malformed)?;
    let (scheme, token) = auth.split_once(' ').ok_or(Refusal::Malformed)?;
    if !scheme.eq_ignore_ascii_case("Bearer") || token.is_empty() || user.is_empty() {
        return Err(Refusal::Malformed);
    }
    Ok(Xoauth2Blob {
        user: user.to_string(),
        token: token.to_string(),
    })
}

/// The delegated scope and the application role that open `protocol`.
fn required_permission(protocol: Protocol) -> (&'static str, &'static str) {
    match protocol {
        Protocol::Imap => ("IMAP.AccessAsUser.All", "IMAP.AccessAsApp"),
        Protocol::Pop3 => ("POP.AccessAsUser.All", "POP.AccessAsApp"),
        Protocol::Smtp => ("SMTP.Send", "SMTP.SendAsApp"),
    }
}

/// Checks a decoded blob against the issued-token table and the mailbox switches.
pub fn check(
    directory: &Directory,
    protocol: Protocol,
    blob: &Xoauth2Blob,
    now: SystemTime,
) -> Result<Authorized, Refusal> {
    let token = directory.token(&blob.token).ok_or(Refusal::UnknownToken)?;
    if token.is_expired(now) {
        return Err(Refusal::Expired);
    }
    if !OUTLOOK_AUDIENCES.contains(&token.audience.as_str()) {
        return Err(Refusal::WrongAudience);
    }
    let (scope, role) = required_permission(protocol);
    let needed = if token.app_only { role } else { scope };
    if !token.scopes.iter().any(|s| s.eq_ignore_ascii_case(needed)) {
        return Err(Refusal::MissingScope);
    }
    let mailbox = directory
        .canonical_address(&blob.user)
        .ok_or(Refusal::NoMailbox)?;
    if token.app_only {
        if !directory.app_has_access(&token.client_id, &mailbox) {
            return Err(Refusal::NoAppAccess);
        }
    } else if !token.subject.eq_ignore_ascii_case(blob.user.trim())
        && !directory.delegate_has_access(&token.subject, &mailbox)
    {
        return Err(Refusal::WrongUser);
    }
    if !directory.protocol_enabled(&mailbox, protocol) {
        return Err(Refusal::ProtocolDisabled);
    }
    Ok(Authorized {
        mailbox,
        token: blob.token.clone(),
    })
}

/// Decodes and checks one base64 XOAUTH2 response and records the attempt in the
/// directory's login log.
pub fn authenticate(
    directory: &Directory,
    protocol: Protocol,
    b64: &[u8],
    connected_at: std::time::Instant,
) -> Result<Authorized, Refusal> {
    let blob = decode(b64);
    let result = blob
        .as_ref()
        .map_err(|e| *e)
        .and_then(|b| check(directory, protocol, b, SystemTime::now()));
    directory.record_login(XoauthLogin {
        protocol: protocol.as_str(),
        user: blob.map(|b| b.user).unwrap_or_default(),
        ok: result.is_ok(),
        connected_at,
    });
    if let Err(why) = &result {
        tracing::debug!(%protocol, %why, "fake refused XOAUTH2");
    }
    result
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::directory::IssuedToken;

    const VECTOR: &str = "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ==";

    fn blob(user: &str, token: &str) -> String {
        STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
    }

    fn delegated(subject: &str, scopes: &[&str]) -> IssuedToken {
        IssuedToken {
            subject: subject.into(),
            client_id: "client".into(),
            app_only: false,
            audience: "https://outlook.office.com".into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            expires_at: SystemTime::now() + Duration::from_secs(3600),
        }
    }

    fn directory() -> Directory {
        let d = Directory::new();
        d.add_mailbox("test@contoso.onmicrosoft.com");
        d.add_mailbox("shared@contoso.onmicrosoft.com");
        d
    }

    #[test]
    fn decodes_the_microsoft_vector() {
        let b = decode(VECTOR.as_bytes()).unwrap();
        assert_eq!(b.user, "test@contoso.onmicrosoft.com");
        assert_eq!(b.token, "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
    }

    #[test]
    fn rejects_malformed_blobs() {
        for bad in [
            "!!!".to_string(),
            STANDARD.encode("user=a\x01auth=Bearer t\x01"),
            STANDARD.encode("user=a\x01auth=Basic t\x01\x01"),
            STANDARD.encode("a\x01auth=Bearer t\x01\x01"),
            STANDARD.encode("user=\x01auth=Bearer t\x01\x01"),
        ] {
            assert_eq!(decode(bad.as_bytes()), Err(Refusal::Malformed), "{bad}");
        }
    }

    #[test]
    fn delegated_token_opens_only_its_own_mailbox() {
        let d = directory();
        d.record_token(
            "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
            delegated("TEST@contoso.onmicrosoft.com", &["IMAP.AccessAsUser.All"]),
        );
        let ok = authenticate(&d, Protocol::Imap, VECTOR.as_bytes(), Instant::now()).unwrap();
        assert_eq!(ok.mailbox, "test@contoso.onmicrosoft.com");
        let other = blob(
            "shared@contoso.onmicrosoft.com",
            "EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA",
        );
        assert_eq!(
            authenticate(&d, Protocol::Imap, other.as_bytes(), Instant::now()),
            Err(Refusal::WrongUser)
        );
        assert_eq!(
            authenticate(&d, Protocol::Pop3, VECTOR.as_bytes(), Instant::now()),
            Err(Refusal::MissingScope)
        );
        let logins = d.xoauth_logins();
        assert_eq!(logins.len(), 3);
        assert!(logins[0].ok && !logins[1].ok);
        assert_eq!(logins[2].protocol, "pop3");
    }

    #[test]
    fn expiry_audience_mailbox_and_protocol_switch() {
        let d = directory();
        let user = "test@contoso.onmicrosoft.com";
        let mut t = delegated(user, &["IMAP.AccessAsUser.All"]);
        d.record_token("good", t.clone());
        t.audience = "https://graph.microsoft.com".into();
        d.record_token("graph", t.clone());
        t.audience = "https://outlook.office.com".into();
        t.subject = "ghost@contoso.onmicrosoft.com".into();
        d.record_token("ghost", t);
        let auth = |u: &str, tok: &str| {
            authenticate(&d, Protocol::Imap, blob(u, tok).as_bytes(), Instant::now())
        };
        assert_eq!(auth(user, "nope"), Err(Refusal::UnknownToken));
        assert_eq!(auth(user, "graph"), Err(Refusal::WrongAudience));
        assert_eq!(
            auth("ghost@contoso.onmicrosoft.com", "ghost"),
            Err(Refusal::NoMailbox)
        );
        d.set_imap_enabled(user, false);
        assert_eq!(auth(user, "good"), Err(Refusal::ProtocolDisabled));
        d.set_imap_enabled(user, true);
        assert!(auth(user, "good").is_ok());
        let later = SystemTime::now() + Duration::from_secs(7200);
        let b = decode(blob(user, "good").as_bytes()).unwrap();
        assert_eq!(check(&d, Protocol::Imap, &b, later), Err(Refusal::Expired));
    }

    #[test]
    fn app_only_token_needs_full_access() {
        let d = directory();
        d.record_token(
            "app",
            IssuedToken {
                subject: "client".into(),
                client_id: "client".into(),
                app_only: true,
                audience: "https://outlook.office365.com".into(),
                scopes: vec!["IMAP.AccessAsApp".into(), "POP.AccessAsApp".into()],
                expires_at: SystemTime::now() + Duration::from_secs(3600),
            },
        );
        let shared = blob("shared@contoso.onmicrosoft.com", "app");
        assert_eq!(
            authenticate(&d, Protocol::Imap, shared.as_bytes(), Instant::now()),
            Err(Refusal::NoAppAccess)
        );
        d.grant_app_access("client", "shared@contoso.onmicrosoft.com");
        assert!(authenticate(&d, Protocol::Imap, shared.as_bytes(), Instant::now()).is_ok());
        assert_eq!(
            authenticate(&d, Protocol::Smtp, shared.as_bytes(), Instant::now()),
            Err(Refusal::MissingScope)
        );
    }
}
