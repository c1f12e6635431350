//! The onboarding additions of the fake Entra: device code, authorization code with PKCE,
//! certificate assertions, and errors injected by class.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::{json, Value};

use super::{AuthorizeReply, DevicePoll, FakeEntra, InjectedError};
use crate::directory::Directory;

const TENANT: &str = "contoso.onmicrosoft.com";
const USER: &str = "alice@contoso.com";
const SCOPE: &str = "https%3A%2F%2Foutlook.office.com%2FIMAP.AccessAsUser.All+offline_access";

fn entra() -> (FakeEntra, Directory) {
    let d = Directory::new();
    d.add_mailbox(USER);
    let e = FakeEntra::new(TENANT, d.clone());
    e.register_app("public", "");
    e.register_app("app", "s3cret");
    (e, d)
}

async fn post(e: &FakeEntra, body: &str) -> (u16, Value) {
    let r = e.token_request(TENANT, None, body.as_bytes()).await;
    (r.status, r.json_body().unwrap_or(Value::Null))
}

fn device_code(e: &FakeEntra) -> (String, String) {
    let r = e.device_code_request(TENANT, format!("client_id=public&scope={SCOPE}").as_bytes());
    assert_eq!(r.status, 200, "{}", r.body);
    let v = r.json_body().expect("json");
    assert_eq!(v["verification_uri"], "https://microsoft.com/devicelogin");
    assert!(v["message"]
        .as_str()
        .is_some_and(|m| m.contains(v["user_code"].as_str().unwrap_or("?"))));
    (
        v["user_code"].as_str().expect("user_code").to_string(),
        v["device_code"].as_str().expect("device_code").to_string(),
    )
}

fn poll_body(device_code: &str) -> String {
    format!("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code&client_id=public&device_code={device_code}")
}

#[tokio::test]
async fn device_code_pending_scripted_then_approved_once() {
    let (e, d) = entra();
    e.set_device_code_timing(0, Duration::from_secs(60));
    let (user_code, device) = device_code(&e);
    e.script_device_polls(vec![DevicePoll::Pending, DevicePoll::SlowDown]);
    assert!(e.approve_device_code(&user_code, USER));
    let (s, v) = post(&e, &poll_body(&device)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (s, v) = post(&e, &poll_body(&device)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("slow_down")));
    // The interval is now 5 s: an immediate poll is too fast.
    let (_, v) = post(&e, &poll_body(&device)).await;
    assert_eq!(v["error"].as_str(), Some("slow_down"));
    let (count, gaps) = e.device_code_polls(&user_code);
    assert_eq!(count, 3);
    assert_eq!(gaps.len(), 2);
    assert!(!e.approve_device_code(&user_code, USER), "already acted on");
    assert!(!e.decline_device_code("NOSUCHCODE"));
    assert_eq!(
        post(&e, &poll_body("nope")).await.1["error"],
        "bad_verification_code"
    );
    let _ = d;
}

#[tokio::test]
async fn device_code_success_declined_and_expired() {
    let (e, d) = entra();
    e.set_device_code_timing(0, Duration::from_secs(60));
    let (user_code, device) = device_code(&e);
    assert_eq!(
        post(&e, &poll_body(&device)).await.1["error"],
        "authorization_pending"
    );
    assert!(e.approve_device_code(&user_code.to_lowercase(), USER));
    let (s, v) = post(&e, &poll_body(&device)).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["refresh_token"].as_str().is_some());
    let issued = d
        .token(v["access_token"].as_str().expect("at"))
        .expect("recorded");
    assert_eq!(issued.subject, USER);
    assert_eq!(
        post(&e, &poll_body(&device)).await.1["error"],
        "invalid_grant"
    );

    let (user_code, device) = device_code(&e);
    assert!(e.decline_device_code(&user_code));
    let (s, v) = post(&e, &poll_body(&device)).await;
    assert_eq!(
        (s, v["error"].as_str()),
        (400, Some("authorization_declined"))
    );

    e.set_device_code_timing(0, Duration::ZERO);
    let (_, device) = device_code(&e);
    let (s, v) = post(&e, &poll_body(&device)).await;
    assert_eq!((s, v["error"].as_str()), (400, Some("expired_token")));
    assert_eq!(v["error_codes"], json!([70020]));

    // A confidential app must authenticate its polls too.
    let r = e.device_code_request(TENANT, format!("client_id=app&scope={SCOPE}").as_bytes());
    let device = r.json_body().expect("json")["device_code"]
        .as_str()
        .expect("dc")
        .to_string();
    let body = poll_body(&device).replace("client_id=public", "client_id=app");
    assert_eq!(post(&e, &body).await.1["error"], "invalid_client");
    let r = e.device_code_request(TENANT, b"client_id=nobody");
    assert_eq!(r.status, 400);
}

fn pkce() -> (String, String) {
    let verifier = "a-verifier-of-enough-length-0123456789-abcdefghijklmnop".to_string();
    let challenge = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA256,
        verifier.as_bytes(),
    ));
    (verifier, challenge)
}

fn query_of(url: &str) -> std::collections::HashMap<String, String> {
    super::form::parse_form(url.split_once('?').map_or("", |(_, q)| q).as_bytes())
}

#[tokio::test]
async fn authorize_redirects_with_a_single_use_pkce_bound_code() {
    let (e, _) = entra();
    let (verifier, challenge) = pkce();
    let redirect = "http%3A%2F%2Flocalhost%3A53682%2F";
    let query = format!("client_id=public&response_type=code&redirect_uri={redirect}&scope={SCOPE}&state=st%26ate&code_challenge={challenge}&code_challenge_method=S256");
    assert!(
        matches!(e.authorize(TENANT, &query), AuthorizeReply::Redirect(l) if l.contains("error=login_required"))
    );
    e.set_signed_in_user(Some(USER));
    let AuthorizeReply::Redirect(location) = e.authorize(TENANT, &query) else {
        panic!("expected a redirect");
    };
    assert!(
        location.starts_with("http://localhost:53682/?code="),
        "{location}"
    );
    let q = query_of(&location);
    assert_eq!(q["state"], "st&ate");
    let code = q["code"].clone();
    let token = |verifier: &str, redirect: &str| {
        format!("grant_type=authorization_code&client_id=public&code={code}&redirect_uri={redirect}&code_verifier={verifier}")
    };
    let (s, v) = post(&e, &token("wrong-verifier", redirect)).await;
    assert_eq!((s, v["error_codes"][0].as_u64()), (400, Some(501481)));
    // The failed attempt spent the code.
    let (_, v) = post(&e, &token(&verifier, redirect)).await;
    assert_eq!(v["error_codes"][0].as_u64(), Some(54005));

    let AuthorizeReply::Redirect(location) = e.authorize(TENANT, &query) else {
        panic!("expected a redirect");
    };
    let code = query_of(&location)["code"].clone();
    let body = format!("grant_type=authorization_code&client_id=public&code={code}&redirect_uri={redirect}&code_verifier={verifier}");
    let (s, v) = post(&e, &body).await;
    assert_eq!(s, 200, "{v}");
    assert!(v["refresh_token"].as_str().is_some());
    assert_eq!(
        post(&e, &body).await.1["error_codes"][0].as_u64(),
        Some(54005)
    );

    // Non-loopback redirects get an error page, missing PKCE an error redirect.
    assert!(matches!(
        e.authorize(TENANT, &query.replace("localhost", "evil.example")),
        AuthorizeReply::Page { status: 400, .. }
    ));
    let no_pkce = query.replace("&code_challenge_method=S256", "");
    assert!(
        matches!(e.authorize(TENANT, &no_pkce), AuthorizeReply::Redirect(l) if l.contains("error=invalid_request"))
    );
    e.set_authorize_error(Some("access_denied"));
    assert!(
        matches!(e.authorize(TENANT, &query), AuthorizeReply::Redirect(l) if l.contains("error=access_denied") && l.contains("state=st%26ate"))
    );
}

/// An RSA certificate and its PKCS#8 key (DER), made with the `openssl` command.
fn openssl_rsa() -> (String, Vec<u8>) {
    let dir = tempfile_dir();
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=fake-test",
            "-keyout",
        ])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl runs");
    assert!(status.success());
    let cert_pem = std::fs::read_to_string(&cert).expect("cert");
    let key_pem = std::fs::read(&key).expect("key");
    let _ = std::fs::remove_dir_all(&dir);
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_slice(&key_pem).expect("pkcs8");
    (cert_pem, der.secret_pkcs8_der().to_vec())
}

fn tempfile_dir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("oxbridge-fake-{}", crate::ids::url_safe(12)));
    std::fs::create_dir_all(&dir).expect("dir");
    dir
}

fn sign(header: &Value, claims: &Value, key: &[u8], pss: bool) -> String {
    let h = URL_SAFE_NO_PAD.encode(header.to_string());
    let c = URL_SAFE_NO_PAD.encode(claims.to_string());
    let pair = ring::signature::RsaKeyPair::from_pkcs8(key).expect("key");
    let mut sig = vec![0u8; pair.public().modulus_len()];
    let alg: &dyn ring::signature::RsaEncoding = if pss {
        &ring::signature::RSA_PSS_SHA256
    } else {
        &ring::signature::RSA_PKCS1_SHA256
    };
    pair.sign(
        alg,
        &ring::rand::SystemRandom::new(),
        format!("{h}.{c}").as_bytes(),
        &mut sig,
    )
    .expect("sign");
    format!("{h}.{c}.{}", URL_SAFE_NO_PAD.encode(sig))
}

#[tokio::test]
async fn certificate_assertions_are_validated() {
    let (e, _) = entra();
    let (cert_pem, key) = openssl_rsa();
    assert!(e.register_app_certificate("cert-app", &cert_pem));
    assert!(!e.register_app_certificate("cert-app", "not a certificate"));
    let der = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("der")
    };
    let s256 = URL_SAFE_NO_PAD.encode(ring::digest::digest(&ring::digest::SHA256, der.as_ref()));
    let sha1 = URL_SAFE_NO_PAD.encode(ring::digest::digest(
        &ring::digest::SHA1_FOR_LEGACY_USE_ONLY,
        der.as_ref(),
    ));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("time")
        .as_secs();
    let aud = format!("https://login.example/{TENANT}/oauth2/v2.0/token");
    let claims = |jti: &str, aud: &str, iss: &str, nbf: u64| json!({"aud": aud, "iss": iss, "sub": "cert-app", "jti": jti, "nbf": nbf, "exp": nbf + 600});
    let ps256 = json!({"alg": "PS256", "typ": "JWT", "x5t#S256": s256});
    let rs256 = json!({"alg": "RS256", "typ": "JWT", "x5t": sha1});
    let request = |jwt: String| {
        format!("grant_type=client_credentials&client_id=cert-app&scope=https%3A%2F%2Foutlook.office365.com%2F.default&client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer&client_assertion={jwt}")
    };
    let code = |v: &Value| v["error_codes"][0].as_u64().unwrap_or(0);

    let (s, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j1", &aud, "cert-app", now),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    let (s, v) = post(
        &e,
        &request(sign(
            &rs256,
            &claims("j2", &aud, "cert-app", now),
            &key,
            false,
        )),
    )
    .await;
    assert_eq!(s, 200, "{v}");
    // Replay of j1.
    let (s, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j1", &aud, "cert-app", now),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!((s, code(&v)), (401, 700027));
    // PS256 header on a PKCS#1 v1.5 signature: the signature does not verify.
    let (_, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j3", &aud, "cert-app", now),
            &key,
            false,
        )),
    )
    .await;
    assert_eq!(code(&v), 700027);
    let (_, v) = post(
        &e,
        &request(sign(
            &json!({"alg": "PS256", "x5t#S256": "unknown"}),
            &claims("j4", &aud, "cert-app", now),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!(code(&v), 700027);
    let (_, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims(
                "j5",
                "https://login.example/other/oauth2/v2.0/token",
                "cert-app",
                now,
            ),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!(code(&v), 50012);
    let (_, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j6", &aud, "someone-else", now),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!(code(&v), 50048);
    let (_, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j7", &aud, "cert-app", now - 7200),
            &key,
            true,
        )),
    )
    .await;
    assert_eq!(code(&v), 500133);
    let (_, v) = post(
        &e,
        &request(sign(
            &ps256,
            &claims("j8", &aud, "cert-app", now),
            &key,
            true,
        ))
        .replace("client_id=cert-app", "client_id=app"),
    )
    .await;
    assert_eq!(code(&v), 700021);
    // With the Host known, aud must be exactly this endpoint's URL.
    let r = e
        .token_request_from(
            Some("127.0.0.1:4443"),
            TENANT,
            None,
            request(sign(
                &ps256,
                &claims("j9", &aud, "cert-app", now),
                &key,
                true,
            ))
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 401);
    let exact = format!("https://127.0.0.1:4443/{TENANT}/oauth2/v2.0/token");
    let r = e
        .token_request_from(
            Some("127.0.0.1:4443"),
            TENANT,
            None,
            request(sign(
                &ps256,
                &claims("j10", &exact, "cert-app", now),
                &key,
                true,
            ))
            .as_bytes(),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.body);
    // A certificate app that sends no credential at all.
    let (_, v) = post(&e, "grant_type=client_credentials&client_id=cert-app&scope=https%3A%2F%2Foutlook.office365.com%2F.default").await;
    assert_eq!(code(&v), 7000218);
}

#[tokio::test]
async fn errors_injected_by_class() {
    let (e, _) = entra();
    let body = "grant_type=client_credentials&client_id=app&client_secret=s3cret&scope=https%3A%2F%2Foutlook.office365.com%2F.default";
    for (class, status, error) in [
        ("reconsent", 400, "invalid_grant"),
        ("interaction", 400, "invalid_grant"),
        ("configuration", 401, "invalid_client"),
        ("transient", 503, "temporarily_unavailable"),
        ("throttled", 429, "temporarily_unavailable"),
    ] {
        e.inject_error(InjectedError::of_class(class));
        let (s, v) = post(&e, body).await;
        assert_eq!((s, v["error"].as_str()), (status, Some(error)), "{class}");
        if class == "interaction" {
            assert_eq!(v["suberror"], "basic_action");
            assert!(v["claims"].as_str().is_some_and(|c| c.contains("capolids")));
        }
    }
    assert!(InjectedError::of_class("nonsense").is_none());
}

#[test]
fn claims_passed_on_at_sign_in_are_recorded() {
    let (e, _) = entra();
    assert!(e.claims_received().is_empty());
    let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    let encoded: String = claims
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    let r = e.device_code_request(
        TENANT,
        format!("client_id=public&scope={SCOPE}&claims={encoded}").as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.body);
    e.authorize(
        TENANT,
        &format!("client_id=public&redirect_uri=http%3A%2F%2Flocalhost%2F&claims={encoded}"),
    );
    assert_eq!(e.claims_received(), [claims, claims]);
}
