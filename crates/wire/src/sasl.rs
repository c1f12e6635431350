//! SASL codecs: decoding the legacy mechanisms clients send (PLAIN, LOGIN) and encoding the
//! bearer mechanisms oxbridge sends upstream (XOAUTH2, OAUTHBEARER).

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

use crate::Secret;

/// Why a SASL message from a client could not be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SaslError {
    #[error("invalid base64")]
    Base64,
    #[error("malformed PLAIN message")]
    MalformedPlain,
    #[error("user name is not valid UTF-8")]
    UserNotUtf8,
    #[error("authentication cancelled")]
    Cancelled,
}

/// The credentials from a PLAIN message (RFC 4616).
#[derive(Debug)]
pub struct PlainCredentials {
    /// Authorization identity; oxbridge accepts it only if empty or equal to `user`.
    pub authzid: String,
    pub user: String,
    pub password: Secret,
}

/// Decodes one base64 client response line; `*` means the client cancelled (RFC 4422).
pub fn decode_response(line: &[u8]) -> Result<Secret, SaslError> {
    let line = line.trim_ascii();
    if line == b"*" {
        return Err(SaslError::Cancelled);
    }
    if line == b"=" {
        return Ok(Secret::default());
    }
    STANDARD
        .decode(line)
        .map(Secret::new)
        .map_err(|_| SaslError::Base64)
}

/// Decodes a PLAIN message: `authzid NUL authcid NUL passwd`.
pub fn decode_plain(message: &Secret) -> Result<PlainCredentials, SaslError> {
    let mut parts = message.expose().splitn(3, |&b| b == 0);
    let (Some(authzid), Some(user), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return Err(SaslError::MalformedPlain);
    };
    if user.is_empty() {
        return Err(SaslError::MalformedPlain);
    }
    let authzid = String::from_utf8(authzid.to_vec()).map_err(|_| SaslError::UserNotUtf8)?;
    let user = String::from_utf8(user.to_vec()).map_err(|_| SaslError::UserNotUtf8)?;
    if !authzid.is_empty() && authzid != user {
        return Err(SaslError::MalformedPlain);
    }
    Ok(PlainCredentials {
        authzid,
        user,
        password: Secret::new(password.to_vec()),
    })
}

/// The base64 prompt LOGIN sends for the user name ("Username:").
pub const LOGIN_USER_PROMPT: &str = "VXNlcm5hbWU6";
/// The base64 prompt LOGIN sends for the password ("Password:").
pub const LOGIN_PASSWORD_PROMPT: &str = "UGFzc3dvcmQ6";

/// Base64 (standard alphabet, padded), as SASL uses on every protocol.
pub fn encode_base64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

/// A bearer-token SASL mechanism used towards the upstream.
pub trait BearerMechanism {
    /// The mechanism name, upper case.
    const NAME: &'static str;

    /// The initial client response, base64-encoded, on one line.
    fn initial_response(user: &str, token: &Secret) -> Secret;

    /// What to answer to an error challenge before the server sends its final failure.
    fn error_reply() -> &'static [u8];
}

/// Microsoft's and Google's XOAUTH2: `user=U ^A auth=Bearer T ^A ^A`.
#[derive(Debug)]
pub struct XOAuth2;

impl BearerMechanism for XOAuth2 {
    const NAME: &'static str = "XOAUTH2";

    fn initial_response(user: &str, token: &Secret) -> Secret {
        let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(user.len() + token.len() + 24));
        raw.extend_from_slice(b"user=");
        raw.extend_from_slice(user.as_bytes());
        raw.extend_from_slice(b"\x01auth=Bearer ");
        raw.extend_from_slice(token.expose());
        raw.extend_from_slice(b"\x01\x01");
        Secret::new(STANDARD.encode(raw.as_slice()).into_bytes())
    }

    fn error_reply() -> &'static [u8] {
        b""
    }
}

/// RFC 7628 OAUTHBEARER, without host and port.
#[derive(Debug)]
pub struct OAuthBearer;

impl BearerMechanism for OAuthBearer {
    const NAME: &'static str = "OAUTHBEARER";

    fn initial_response(user: &str, token: &Secret) -> Secret {
        let mut raw = zeroize::Zeroizing::new(Vec::with_capacity(user.len() + token.len() + 24));
        raw.extend_from_slice(b"n,a=");
        raw.extend_from_slice(user.replace('=', "=3D").replace(',', "=2C").as_bytes());
        raw.extend_from_slice(b",\x01auth=Bearer ");
        raw.extend_from_slice(token.expose());
        raw.extend_from_slice(b"\x01\x01");
        Secret::new(STANDARD.encode(raw.as_slice()).into_bytes())
    }

    fn error_reply() -> &'static [u8] {
        b"AQ=="
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_matches_microsoft_vector() {
        let token = Secret::from("EwBAAl3BAAUFFpUAo7J3Ve0bjLBWZWCclRC3EoAA");
        let ir = XOAuth2::initial_response("test@contoso.onmicrosoft.com", &token);
        assert_eq!(
            ir.expose_str().unwrap(),
            "dXNlcj10ZXN0QGNvbnRvc28ub25taWNyb3NvZnQuY29tAWF1dGg9QmVhcmVyIEV3QkFBbDNCQUFVRkZwVUFvN0ozVmUwYmpMQldaV0NjbFJDM0VvQUEBAQ=="
        );
    }

    #[test]
    fn plain_decodes_with_and_without_authzid() {
        let c = decode_plain(&Secret::from("\0demo\0pw")).unwrap();
        assert_eq!((c.user.as_str(), c.password.expose()), ("demo", &b"pw"[..]));
        let c = decode_plain(&Secret::from("demo\0demo\0pw")).unwrap();
        assert_eq!(c.user, "demo");
        assert_eq!(
            decode_plain(&Secret::from("admin\0demo\0pw")).unwrap_err(),
            SaslError::MalformedPlain
        );
        assert_eq!(
            decode_plain(&Secret::from("nonul")).unwrap_err(),
            SaslError::MalformedPlain
        );
    }

    #[test]
    fn responses_decode_cancel_and_reject_garbage() {
        assert_eq!(decode_response(b"*").unwrap_err(), SaslError::Cancelled);
        assert_eq!(
            decode_response(b"!!notbase64").unwrap_err(),
            SaslError::Base64
        );
        assert_eq!(decode_response(b"ZGVtbw==").unwrap().expose(), b"demo");
        assert!(decode_response(b"=").unwrap().is_empty());
    }

    #[test]
    fn oauthbearer_error_reply_is_ctrl_a() {
        assert_eq!(
            STANDARD.decode(OAuthBearer::error_reply()).unwrap(),
            b"\x01"
        );
        assert!(XOAuth2::error_reply().is_empty());
    }
}
