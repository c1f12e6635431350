//! Onboarding flows, certificate credentials, grant health and the re-consent hook against
//! the canned token endpoint.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use oxbridge_store::{AccountStatus, GrantKind};
use prometheus::Registry;

use super::endpoint::{Canned, FakeEndpoint};
use super::store::MemoryStore;
use super::{account, app, sample, setup};
use crate::assertion::tests::openssl_certificate;
use crate::consent::{Callback, Consent, ConsentError};
use crate::{
    AssertionAlgorithm, BrokerSettings, ClientCertificate, GrantObserver, ReconsentEvent,
    TokenBroker,
};

fn device_code_body(interval: u64) -> Canned {
    Canned::json(
        200,
        format!(
            r#"{{"user_code":"GF3KQ8XLM","device_code":"dc-1","verification_uri":"https://microsoft.com/devicelogin","expires_in":900,"interval":{interval},"message":"To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code GF3KQ8XLM to authenticate."}}"#
        ),
    )
}

fn poll_error(error: &str, code: u32) -> Canned {
    Canned::entra_error(400, error, code, "device code poll")
}

#[tokio::test]
async fn device_code_polls_until_success() {
    let endpoint = FakeEndpoint::start(vec![
        device_code_body(0),
        poll_error("authorization_pending", 70016),
        poll_error("authorization_pending", 70016),
        Canned::token("at-1", 3599, Some("rt-from-device")),
    ])
    .await;
    let consent = Consent::new(&app(&endpoint.authority), Duration::from_secs(5)).expect("builds");
    let code = consent.start_device_code(None).await.expect("device code");
    assert_eq!(code.user_code(), "GF3KQ8XLM");
    assert_eq!(code.verification_uri(), "https://microsoft.com/devicelogin");
    assert!(code.message().is_some_and(|m| m.contains("GF3KQ8XLM")));
    assert_eq!(code.expires_in(), Duration::from_secs(900));
    let waits = Mutex::new(0);
    let rt = consent
        .finish_device_code(&code, |_| *waits.lock().expect("lock") += 1)
        .await
        .expect("grant");
    assert_eq!(rt.expose_str(), Some("rt-from-device"));
    assert_eq!(*waits.lock().expect("lock"), 3, "one wait before each poll");
    let paths = endpoint.paths();
    assert!(paths[0].ends_with("/oauth2/v2.0/devicecode"), "{paths:?}");
    let bodies = endpoint.bodies();
    assert!(bodies[0].contains("offline_access"), "{}", bodies[0]);
    assert!(bodies[1].contains("grant_type=urn%3Aietf%3Aparams%3Aoauth%3Agrant-type%3Adevice_code"));
    assert!(bodies[1].contains("device_code=dc-1"));
}

#[tokio::test]
async fn device_code_declined_and_expired() {
    for (canned, expect_declined) in [
        (poll_error("authorization_declined", 70000), true),
        (poll_error("expired_token", 70020), false),
    ] {
        let endpoint = FakeEndpoint::start(vec![device_code_body(0), canned]).await;
        let consent =
            Consent::new(&app(&endpoint.authority), Duration::from_secs(5)).expect("builds");
        let code = consent.start_device_code(None).await.expect("device code");
        let error = consent
            .finish_device_code(&code, |_| {})
            .await
            .expect_err("fails");
        match error {
            ConsentError::Declined => assert!(expect_declined),
            ConsentError::Expired(_) => assert!(!expect_declined),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn device_code_start_refused_is_classified() {
    let endpoint = FakeEndpoint::start(vec![Canned::entra_error(
        400,
        "unauthorized_client",
        700016,
        "no app",
    )])
    .await;
    let consent = Consent::new(&app(&endpoint.authority), Duration::from_secs(5)).expect("builds");
    let error = consent.start_device_code(None).await.expect_err("refused");
    assert_eq!(error.class(), Some(crate::FailureClass::Configuration));
    assert!(error.to_string().contains("700016"), "{error}");
}

#[tokio::test]
async fn auth_code_with_pkce_checks_state_and_sends_the_verifier() {
    let endpoint =
        FakeEndpoint::start(vec![Canned::token("at", 3599, Some("rt-from-browser"))]).await;
    let consent = Consent::new(&app(&endpoint.authority), Duration::from_secs(5)).expect("builds");
    let request = consent
        .authorization_request("http://localhost:53682/", Some("alex@contoso.com"), None)
        .expect("request");
    let url = request.url.clone();
    assert!(url.contains("/oauth2/v2.0/authorize?"), "{url}");
    for needle in [
        "response_type=code",
        "code_challenge_method=S256",
        "code_challenge=",
        "state=",
        "redirect_uri=http%3A%2F%2Flocalhost%3A53682%2F",
        "login_hint=alex%40contoso.com",
        "offline_access",
    ] {
        assert!(url.contains(needle), "{needle} missing in {url}");
    }
    let state = url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("state")
        .to_owned();

    // A redirect with someone else's state is refused before any request.
    let forged = Callback {
        code: Some("code-1".into()),
        state: Some("forged".into()),
        ..Callback::default()
    };
    let again = consent
        .authorization_request("http://localhost:53682/", None, None)
        .expect("request");
    assert!(matches!(
        consent.redeem(again, &forged).await,
        Err(ConsentError::StateMismatch)
    ));
    assert_eq!(endpoint.requests(), 0);

    let callback = Callback {
        code: Some("code-1".into()),
        state: Some(state),
        ..Callback::default()
    };
    let rt = consent.redeem(request, &callback).await.expect("grant");
    assert_eq!(rt.expose_str(), Some("rt-from-browser"));
    let body = &endpoint.bodies()[0];
    assert!(body.contains("grant_type=authorization_code"), "{body}");
    assert!(body.contains("code=code-1"), "{body}");
    assert!(body.contains("code_verifier="), "{body}");
    assert!(
        body.contains("redirect_uri=http%3A%2F%2Flocalhost%3A53682%2F"),
        "{body}"
    );
}

#[tokio::test]
async fn authorize_errors_come_back_as_such() {
    let endpoint = FakeEndpoint::start(vec![]).await;
    let consent = Consent::new(&app(&endpoint.authority), Duration::from_secs(5)).expect("builds");
    let request = consent
        .authorization_request("http://localhost:1/", None, None)
        .expect("request");
    let state = request
        .url
        .split(['?', '&'])
        .find_map(|p| p.strip_prefix("state="))
        .expect("state")
        .to_owned();
    let callback = Callback {
        state: Some(state),
        error: Some("access_denied".into()),
        error_description: Some("AADSTS65004: User declined to consent".into()),
        ..Callback::default()
    };
    assert!(matches!(
        consent.redeem(request, &callback).await,
        Err(ConsentError::Declined)
    ));
}

#[tokio::test]
async fn certificate_credentials_send_an_assertion_instead_of_a_secret() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (cert, key) = openssl_certificate(dir.path());
    let endpoint = FakeEndpoint::start(vec![Canned::token("at-cert", 3599, None)]).await;
    let mut registration = app(&endpoint.authority);
    registration.client_secret = None;
    registration.certificate = Some(ClientCertificate {
        certificate: cert,
        private_key: key,
        algorithm: AssertionAlgorithm::Ps256,
    });
    let broker = TokenBroker::new(
        vec![registration.clone()],
        Arc::new(MemoryStore::default()),
        BrokerSettings::default(),
        &Registry::new(),
    )
    .expect("broker builds");
    broker
        .access_token(&account(1, GrantKind::ClientCredentials))
        .await
        .expect("token");
    let body = &endpoint.bodies()[0];
    assert!(body.contains("client_assertion_type=urn%3Aietf%3Aparams%3Aoauth%3Aclient-assertion-type%3Ajwt-bearer"), "{body}");
    assert!(body.contains("client_assertion=ey"), "{body}");
    assert!(!body.contains("client_secret"), "{body}");

    // A secret and a certificate together are a configuration mistake.
    registration.client_secret = Some("s".into());
    assert!(TokenBroker::new(
        vec![registration],
        Arc::new(MemoryStore::default()),
        BrokerSettings::default(),
        &Registry::new(),
    )
    .is_err());
}

#[derive(Debug, Default)]
struct Recorder(Mutex<Vec<ReconsentEvent>>);

impl GrantObserver for Recorder {
    fn needs_reconsent(&self, event: &ReconsentEvent) {
        self.0.lock().expect("lock").push(event.clone());
    }
}

#[tokio::test]
async fn reconsent_is_reported_once_per_transition_and_health_recorded() {
    let s = setup(
        vec![Canned::entra_error(
            400,
            "invalid_grant",
            700082,
            "The refresh token has expired due to inactivity.",
        )],
        MemoryStore::with_refresh_token(9, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let recorder = Arc::new(Recorder::default());
    let broker = TokenBroker::new(
        vec![app(&s.endpoint.authority)],
        s.store.clone(),
        BrokerSettings::default(),
        &Registry::new(),
    )
    .expect("builds")
    .with_observer(recorder.clone());
    let mut acct = account(9, GrantKind::RefreshToken);
    broker.access_token(&acct).await.expect_err("dead");
    // A new request after the grant changed (another refresh token saved) fails again, but
    // the account is already marked: no second notification.
    acct.refresh_token_updated_at = Some(1);
    broker.access_token(&acct).await.expect_err("dead");
    assert_eq!(s.endpoint.requests(), 2);
    let events = recorder.0.lock().expect("lock").clone();
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].account, "user9");
    assert_eq!(events[0].codes, vec![700082]);
    assert!(events[0].reason.contains("oxbridge account consent user9"));
    assert!(s
        .store
        .statuses()
        .iter()
        .all(|(_, status, _)| *status == AccountStatus::NeedsReconsent));

    // Health records are written in the background.
    for _ in 0..50 {
        if s.store.failures.lock().expect("lock").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let failures = s.store.failures.lock().expect("lock").clone();
    assert_eq!(failures.len(), 2);
    assert_eq!(failures[0].1.class, "reconsent");
    assert_eq!(failures[0].1.codes, vec![700082]);
    let _ = sample;
}

#[tokio::test]
async fn success_records_health_and_refresh_grant_bypasses_the_cache() {
    let s = setup(
        vec![
            Canned::token("at-1", 3599, Some("rt-2")),
            Canned::token("at-2", 3599, Some("rt-3")),
        ],
        MemoryStore::with_refresh_token(3, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(3, GrantKind::RefreshToken);
    s.broker.access_token(&acct).await.expect("token");
    let forced = s.broker.refresh_grant(&acct).await.expect("refreshed");
    assert_eq!(forced.secret.expose_str(), Some("at-2"));
    assert!(forced.fresh);
    assert_eq!(s.endpoint.requests(), 2);
    assert_eq!(s.store.stored_refresh_token(3).as_deref(), Some("rt-3"));
    for _ in 0..50 {
        if s.store.successes.lock().expect("lock").len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(s.store.successes.lock().expect("lock").len(), 2);
    assert_eq!(
        sample(
            &s.registry,
            r#"oxbridge_grant_requests_total{app="contoso",result="ok"}"#
        ),
        2.0
    );
}
