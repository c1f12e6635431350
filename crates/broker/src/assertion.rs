//! Certificate client credentials: the `client_assertion` JWT an app signs with its private
//! key instead of sending a client secret (EXCHANGE.md §4.3, S5).
//!
//! A certificate is the credential Microsoft recommends for app-only access: nothing secret
//! crosses the wire, a leaked assertion expires in minutes, and the private key can live in a
//! file only oxbridge reads. Each token request gets a fresh assertion (new `jti`, `nbf` now),
//! so a captured one cannot be replayed beyond its short window.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use oxbridge_wire::Secret;
use rand::RngCore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;
use serde::Serialize;

/// The `client_assertion_type` every assertion is sent with.
pub(crate) const JWT_BEARER: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";

/// How long an assertion is valid: inside Entra's accepted 5–10 minutes (S5).
const LIFETIME: Duration = Duration::from_secs(10 * 60);

/// The signature scheme of the assertion and the thumbprint header that goes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AssertionAlgorithm {
    /// `PS256` with `x5t#S256`: what Microsoft documents today; the default.
    #[default]
    Ps256,
    /// `RS256` with the SHA-1 `x5t`: what older samples and tenants use.
    Rs256,
}

impl AssertionAlgorithm {
    pub fn as_str(self) -> &'static str {
        match self {
            AssertionAlgorithm::Ps256 => "ps256",
            AssertionAlgorithm::Rs256 => "rs256",
        }
    }
}

impl FromStr for AssertionAlgorithm {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "ps256" => Ok(AssertionAlgorithm::Ps256),
            "rs256" => Ok(AssertionAlgorithm::Rs256),
            other => Err(format!("assertion {other:?} is not \"ps256\" or \"rs256\"")),
        }
    }
}

/// Where an app's certificate credential is, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientCertificate {
    /// PEM certificate (the first one in the file is used): uploaded to the app registration.
    pub certificate: PathBuf,
    /// PEM RSA private key (PKCS#1 or PKCS#8) belonging to the certificate.
    pub private_key: PathBuf,
    pub algorithm: AssertionAlgorithm,
}

/// Signs assertions for one app; built once at start-up so a bad key fails early.
pub(crate) struct AssertionSigner {
    key: EncodingKey,
    header: Header,
    client_id: String,
    audience: String,
}

impl fmt::Debug for AssertionSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AssertionSigner")
            .field("alg", &self.header.alg)
            .field("client_id", &self.client_id)
            .finish_non_exhaustive()
    }
}

#[derive(Serialize)]
struct Claims<'a> {
    aud: &'a str,
    iss: &'a str,
    sub: &'a str,
    jti: String,
    nbf: u64,
    iat: u64,
    exp: u64,
}

impl AssertionSigner {
    /// Reads the certificate and key. `audience` is the exact token endpoint URL.
    pub fn load(
        config: &ClientCertificate,
        client_id: &str,
        audience: &str,
    ) -> Result<AssertionSigner, String> {
        let cert_pem = std::fs::read(&config.certificate)
            .map_err(|e| format!("cannot read {}: {e}", config.certificate.display()))?;
        let der = CertificateDer::pem_slice_iter(&cert_pem)
            .next()
            .ok_or_else(|| format!("{}: no PEM certificate", config.certificate.display()))?
            .map_err(|e| format!("{}: {e}", config.certificate.display()))?;
        let key_pem = zeroize::Zeroizing::new(
            std::fs::read(&config.private_key)
                .map_err(|e| format!("cannot read {}: {e}", config.private_key.display()))?,
        );
        let key = EncodingKey::from_rsa_pem(&key_pem).map_err(|e| {
            format!(
                "{}: not an RSA private key in PEM ({e})",
                config.private_key.display()
            )
        })?;
        let mut header = match config.algorithm {
            AssertionAlgorithm::Ps256 => {
                let mut h = Header::new(Algorithm::PS256);
                h.x5t_s256 = Some(thumbprint_s256(der.as_ref()));
                h
            }
            AssertionAlgorithm::Rs256 => {
                let mut h = Header::new(Algorithm::RS256);
                h.x5t = Some(thumbprint_sha1(der.as_ref()));
                h
            }
        };
        header.typ = Some("JWT".into());
        let signer = AssertionSigner {
            key,
            header,
            client_id: client_id.to_owned(),
            audience: audience.to_owned(),
        };
        // Sign once now: a key that does not match the algorithm fails at start-up, not at
        // the first login.
        signer.sign(SystemTime::now(), LIFETIME)?;
        Ok(signer)
    }

    /// A fresh assertion valid from `now` for `lifetime`.
    pub fn sign(&self, now: SystemTime, lifetime: Duration) -> Result<Secret, String> {
        let now = now
            .duration_since(UNIX_EPOCH)
            .map_err(|_| "system clock before 1970".to_string())?
            .as_secs();
        let claims = Claims {
            aud: &self.audience,
            iss: &self.client_id,
            sub: &self.client_id,
            jti: random_guid(),
            nbf: now,
            iat: now,
            exp: now + lifetime.as_secs(),
        };
        jsonwebtoken::encode(&self.header, &claims, &self.key)
            .map(Secret::from)
            .map_err(|e| format!("cannot sign the client assertion: {e}"))
    }

    /// A fresh assertion with the standard lifetime.
    pub fn assertion(&self) -> Result<Secret, String> {
        self.sign(SystemTime::now(), LIFETIME)
    }
}

/// `x5t#S256`: base64url of the SHA-256 of the certificate's DER.
pub(crate) fn thumbprint_s256(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der))
}

/// `x5t`: base64url of the SHA-1 of the certificate's DER (legacy, as Entra still accepts).
pub(crate) fn thumbprint_sha1(der: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der,
    ))
}

/// A random version-4 GUID for `jti`.
fn random_guid() -> String {
    let mut b = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// An RSA certificate and key made by the `openssl` command, as an operator would.
    pub(crate) fn openssl_certificate(dir: &std::path::Path) -> (PathBuf, PathBuf) {
        let cert = dir.join("app-cert.pem");
        let key = dir.join("app-key.pem");
        let status = std::process::Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
            ])
            .args(["-subj", "/CN=oxbridge-test-app", "-keyout"])
            .arg(&key)
            .arg("-out")
            .arg(&cert)
            .stderr(std::process::Stdio::null())
            .status()
            .expect("openssl runs");
        assert!(status.success(), "openssl failed");
        (cert, key)
    }

    fn decode_part(part: &str) -> serde_json::Value {
        let bytes = URL_SAFE_NO_PAD.decode(part).expect("base64url");
        serde_json::from_slice(&bytes).expect("json")
    }

    #[test]
    fn signs_ps256_with_x5t_s256_and_rs256_with_x5t() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = openssl_certificate(dir.path());
        for (algorithm, alg, thumb) in [
            (AssertionAlgorithm::Ps256, "PS256", "x5t#S256"),
            (AssertionAlgorithm::Rs256, "RS256", "x5t"),
        ] {
            let config = ClientCertificate {
                certificate: cert.clone(),
                private_key: key.clone(),
                algorithm,
            };
            let signer = AssertionSigner::load(
                &config,
                "client-1",
                "https://login.example/t/oauth2/v2.0/token",
            )
            .expect("loads");
            let jwt = signer.assertion().expect("signs");
            let text = jwt.expose_str().expect("ascii").to_owned();
            let parts: Vec<&str> = text.split('.').collect();
            assert_eq!(parts.len(), 3);
            let header = decode_part(parts[0]);
            assert_eq!(header["alg"], alg);
            assert_eq!(header["typ"], "JWT");
            assert!(header[thumb].as_str().is_some_and(|t| !t.is_empty()));
            let claims = decode_part(parts[1]);
            assert_eq!(claims["aud"], "https://login.example/t/oauth2/v2.0/token");
            assert_eq!(claims["iss"], "client-1");
            assert_eq!(claims["sub"], "client-1");
            let nbf = claims["nbf"].as_u64().expect("nbf");
            assert_eq!(claims["exp"].as_u64(), Some(nbf + 600));
            let again = signer.assertion().expect("signs");
            let again = again.expose_str().expect("ascii");
            let jti = |t: &str| decode_part(t.split('.').nth(1).expect("claims"))["jti"].clone();
            assert_ne!(jti(&text), jti(again), "every assertion has its own jti");
        }
        assert!(!format!("{:?}", {
            let c = ClientCertificate {
                certificate: cert.clone(),
                private_key: key.clone(),
                algorithm: AssertionAlgorithm::Ps256,
            };
            AssertionSigner::load(&c, "x", "y").expect("loads")
        })
        .contains("PRIVATE"));
    }

    #[test]
    fn bad_files_are_reported() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = openssl_certificate(dir.path());
        let missing = ClientCertificate {
            certificate: dir.path().join("absent.pem"),
            private_key: key.clone(),
            algorithm: AssertionAlgorithm::Ps256,
        };
        assert!(AssertionSigner::load(&missing, "c", "a").is_err());
        let swapped = ClientCertificate {
            certificate: cert.clone(),
            private_key: cert,
            algorithm: AssertionAlgorithm::Ps256,
        };
        assert!(AssertionSigner::load(&swapped, "c", "a").is_err());
        assert_eq!("PS256".parse(), Ok(AssertionAlgorithm::Ps256));
        assert_eq!("rs256".parse(), Ok(AssertionAlgorithm::Rs256));
        assert!("es256".parse::<AssertionAlgorithm>().is_err());
    }
}
