//! Checking a `client_assertion` JWT as Entra does (EXCHANGE.md §4.3): `RS256` or `PS256`,
//! a thumbprint (`x5t` or `x5t#S256`) naming a certificate registered for the app, a valid
//! signature by that certificate's key, `aud` the exact token URL, `iss` = `sub` = the
//! client id, the time window, and a `jti` never seen before.
//!
//! Deliberately written without a JWT library: the proxy signs with `jsonwebtoken`, and a
//! fake that verified with the same code would share its bugs instead of catching them.

use std::collections::HashSet;

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde_json::Value;

use super::error::AadError;

/// Clock skew tolerated on `nbf` and `exp`, as identity providers commonly allow.
const SKEW_SECS: i64 = 300;

/// A certificate uploaded to an app registration.
#[derive(Debug, Clone)]
pub(crate) struct RegisteredCertificate {
    der: Vec<u8>,
    x5t: String,
    x5t_s256: String,
}

impl RegisteredCertificate {
    /// The first certificate in `pem`.
    pub(crate) fn from_pem(pem: &str) -> Option<RegisteredCertificate> {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()?
            .ok()?;
        let der = der.as_ref().to_vec();
        Some(RegisteredCertificate {
            x5t: URL_SAFE_NO_PAD.encode(ring::digest::digest(
                &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
                &der,
            )),
            x5t_s256: URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, &der)),
            der,
        })
    }
}

/// What the token request says about the assertion's context.
pub(crate) struct Expected<'a> {
    /// `client_id` form field, if sent.
    pub client_id: Option<&'a str>,
    /// The exact token URL the request was sent to, if the host is known; otherwise only
    /// the path is checked.
    pub token_url: Option<String>,
    /// `/{tenant}/oauth2/v2.0/token`.
    pub token_path: String,
    pub now: i64,
}

fn invalid(code: u32) -> AadError {
    AadError::invalid_client(code)
}

fn decode_json(part: &str) -> Option<Value> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .or_else(|_| URL_SAFE.decode(part))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Validates `jwt`; `certificates` gives the certificates registered for a client id, `None`
/// if the app is unknown. Returns the authenticated client id.
pub(crate) fn verify(
    jwt: &str,
    expected: &Expected<'_>,
    certificates: impl Fn(&str) -> Option<Vec<RegisteredCertificate>>,
    seen_jtis: &mut HashSet<String>,
) -> Result<String, AadError> {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(sig), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid(700027));
    };
    let header = decode_json(h).ok_or_else(|| invalid(700027))?;
    let claims = decode_json(p).ok_or_else(|| invalid(700027))?;
    let signature = URL_SAFE_NO_PAD.decode(sig).map_err(|_| invalid(700027))?;

    let text = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
    let iss = text(&claims, "iss").ok_or_else(|| invalid(50048))?;
    let sub = text(&claims, "sub").ok_or_else(|| invalid(50048))?;
    if iss != sub {
        return Err(invalid(50048));
    }
    if expected.client_id.is_some_and(|id| id != sub) {
        return Err(invalid(700021));
    }
    let registered =
        certificates(&sub).ok_or_else(|| AadError::new(400, "unauthorized_client", 700016))?;

    let algorithm = match header.get("alg").and_then(Value::as_str) {
        Some("RS256") => webpki::ring::RSA_PKCS1_2048_8192_SHA256,
        Some("PS256") => webpki::ring::RSA_PSS_2048_8192_SHA256_LEGACY_KEY,
        _ => return Err(invalid(700027)),
    };
    let by_s256 = text(&header, "x5t#S256");
    let by_sha1 = text(&header, "x5t");
    let certificate = registered
        .iter()
        .find(|c| {
            by_s256.as_deref() == Some(c.x5t_s256.as_str())
                || by_sha1.as_deref() == Some(c.x5t.as_str())
        })
        .ok_or_else(|| invalid(700027))?;
    let der = CertificateDer::from(certificate.der.as_slice());
    let end_entity = webpki::EndEntityCert::try_from(&der).map_err(|_| invalid(700027))?;
    let signed = format!("{h}.{p}");
    end_entity
        .verify_signature(algorithm, signed.as_bytes(), &signature)
        .map_err(|_| invalid(700027))?;

    let aud = text(&claims, "aud").unwrap_or_default();
    let aud_ok = match &expected.token_url {
        Some(url) => aud == *url,
        None => aud.ends_with(&expected.token_path) && aud.starts_with("https://"),
    };
    if !aud_ok {
        return Err(invalid(50012));
    }
    let number = |k: &str| claims.get(k).and_then(Value::as_i64);
    let (Some(nbf), Some(exp)) = (number("nbf"), number("exp")) else {
        return Err(invalid(500133));
    };
    if expected.now + SKEW_SECS < nbf || expected.now - SKEW_SECS > exp {
        return Err(invalid(500133));
    }
    let jti = text(&claims, "jti")
        .filter(|j| !j.is_empty())
        .ok_or_else(|| invalid(700027))?;
    if !seen_jtis.insert(format!("{sub}/{jti}")) {
        return Err(invalid(700027));
    }
    Ok(sub)
}
