//! Broker scenarios against a fake token endpoint on 127.0.0.1 and an in-memory store.

mod endpoint;
mod onboarding;
mod store;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use oxbridge_store::{Account, AccountStatus, GrantKind};
use oxbridge_wire::{Protocol, Secret};
use prometheus::{Encoder, Registry, TextEncoder};

use crate::{AppRegistration, BrokerError, BrokerSettings, FailureClass, TokenBroker, TokenError};
use endpoint::{Canned, FakeEndpoint};
use store::MemoryStore;

const APP: &str = "contoso";
const TENANT: &str = "contoso.onmicrosoft.com";

fn app(authority: &str) -> AppRegistration {
    AppRegistration {
        name: APP.into(),
        authority: format!("{authority}/"),
        tenant: TENANT.into(),
        client_id: "client-1".into(),
        client_secret: Some(Secret::from("client-secret-1")),
        certificate: None,
        allow_password_grant: false,
        delegated_scopes: Vec::new(),
        app_scope: None,
        extra_ca: Vec::new(),
    }
}

fn account(id: i64, grant: GrantKind) -> Account {
    Account {
        id,
        name: format!("user{id}"),
        mailbox: format!("user{id}@contoso.com"),
        app: APP.into(),
        grant,
        protocols: vec![Protocol::Imap],
        status: AccountStatus::Active,
        status_reason: None,
        created_at: 0,
        updated_at: 0,
        last_login_at: None,
        refresh_token_updated_at: None,
        identities: Default::default(),
        health: Default::default(),
        sealing: Default::default(),
    }
}

fn fast_settings() -> BrokerSettings {
    BrokerSettings {
        refresh_margin: Duration::from_secs(300),
        request_timeout: Duration::from_secs(5),
        backoff_initial: Duration::from_millis(100),
        backoff_max: Duration::from_millis(200),
    }
}

struct Setup {
    broker: Arc<TokenBroker>,
    endpoint: FakeEndpoint,
    store: Arc<MemoryStore>,
    registry: Registry,
}

async fn setup(script: Vec<Canned>, store: MemoryStore, settings: BrokerSettings) -> Setup {
    let endpoint = FakeEndpoint::start(script).await;
    let store = Arc::new(store);
    let registry = Registry::new();
    let broker = TokenBroker::new(
        vec![app(&endpoint.authority)],
        store.clone(),
        settings,
        &registry,
    )
    .expect("broker builds");
    Setup {
        broker: Arc::new(broker),
        endpoint,
        store,
        registry,
    }
}

/// The value of one sample in the registry's text exposition, e.g.
/// `oxbridge_token_requests_total{grant="refresh_token",result="ok"}`.
fn sample(registry: &Registry, series: &str) -> f64 {
    let mut out = Vec::new();
    TextEncoder::new()
        .encode(&registry.gather(), &mut out)
        .expect("encode");
    let text = String::from_utf8(out).expect("utf8");
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

fn requests_metric(registry: &Registry, grant: &str, result: &str) -> f64 {
    sample(
        registry,
        &format!(r#"oxbridge_token_requests_total{{grant="{grant}",result="{result}"}}"#),
    )
}

fn secret_text(secret: &Secret) -> &str {
    secret.expose_str().expect("utf8")
}

#[tokio::test]
async fn client_credentials_success_then_cache_hit() {
    let s = setup(
        vec![Canned::token("at-app-1", 3599, None)],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);

    let before = SystemTime::now();
    let first = s.broker.access_token(&acct).await.expect("token");
    assert_eq!(secret_text(&first.secret), "at-app-1");
    assert!(first.fresh);
    let lifetime = first.expires_at.duration_since(before).expect("future");
    assert!(lifetime <= Duration::from_secs(3600) && lifetime > Duration::from_secs(3590));

    let second = s.broker.access_token(&acct).await.expect("token");
    assert_eq!(secret_text(&second.secret), "at-app-1");
    assert!(!second.fresh);
    assert_eq!(s.endpoint.requests(), 1);
    assert_eq!(s.broker.cached_accounts(), 1);

    assert_eq!(
        s.endpoint.paths(),
        vec![format!("/{TENANT}/oauth2/v2.0/token")]
    );
    let body = &s.endpoint.bodies()[0];
    assert!(body.contains("grant_type=client_credentials"), "{body}");
    assert!(
        body.contains("scope=https%3A%2F%2Foutlook.office365.com%2F.default"),
        "{body}"
    );
    assert!(body.contains("client_id=client-1"), "{body}");
    assert!(body.contains("client_secret=client-secret-1"), "{body}");

    assert_eq!(
        requests_metric(&s.registry, "client_credentials", "ok"),
        1.0
    );
    assert_eq!(sample(&s.registry, "oxbridge_token_cache_hits_total"), 1.0);
    assert_eq!(
        sample(
            &s.registry,
            r#"oxbridge_token_request_duration_seconds_count{grant="client_credentials"}"#
        ),
        1.0
    );
}

#[tokio::test]
async fn refresh_persists_the_rotated_token_before_returning() {
    let s = setup(
        vec![Canned::token("at-1", 3599, Some("rt-2"))],
        MemoryStore::with_refresh_token(7, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let token = s
        .broker
        .access_token(&account(7, GrantKind::RefreshToken))
        .await
        .expect("token");
    // By the time the caller has the access token, the new refresh token is stored.
    assert_eq!(s.store.stored_refresh_token(7).as_deref(), Some("rt-2"));
    assert_eq!(s.store.writes.load(Ordering::SeqCst), 1);
    assert_eq!(secret_text(&token.secret), "at-1");
    assert!(token.fresh);

    let body = &s.endpoint.bodies()[0];
    assert!(body.contains("grant_type=refresh_token"), "{body}");
    assert!(body.contains("refresh_token=rt-1"), "{body}");
    assert!(body.contains("IMAP.AccessAsUser.All"), "{body}");
    assert!(body.contains("SMTP.Send"), "{body}");
    assert!(body.contains("offline_access"), "{body}");
    assert_eq!(requests_metric(&s.registry, "refresh_token", "ok"), 1.0);
}

#[tokio::test]
async fn refresh_without_rotation_keeps_the_stored_token() {
    let s = setup(
        vec![Canned::token("at-1", 3599, None)],
        MemoryStore::with_refresh_token(7, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    s.broker
        .access_token(&account(7, GrantKind::RefreshToken))
        .await
        .expect("token");
    assert_eq!(s.store.writes.load(Ordering::SeqCst), 0);
    assert_eq!(s.store.stored_refresh_token(7).as_deref(), Some("rt-1"));
}

#[tokio::test]
async fn fifty_concurrent_callers_cause_one_request() {
    let s = setup(
        vec![Canned::token("at-1", 3599, Some("rt-2")).delayed(Duration::from_millis(200))],
        MemoryStore::with_refresh_token(3, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(3, GrantKind::RefreshToken);
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let broker = s.broker.clone();
        let acct = acct.clone();
        tasks.push(tokio::spawn(
            async move { broker.access_token(&acct).await },
        ));
    }
    let mut fresh = 0;
    for task in tasks {
        let token = task.await.expect("join").expect("token");
        assert_eq!(secret_text(&token.secret), "at-1");
        fresh += usize::from(token.fresh);
    }
    assert_eq!(s.endpoint.requests(), 1);
    assert_eq!(fresh, 1);
    assert_eq!(s.store.writes.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn concurrent_callers_for_different_accounts_do_not_wait_on_each_other() {
    let s = setup(
        vec![Canned::token("at", 3599, None).delayed(Duration::from_millis(100))],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let mut tasks = Vec::new();
    for id in 0..5 {
        let broker = s.broker.clone();
        tasks.push(tokio::spawn(async move {
            broker
                .access_token(&account(id, GrantKind::ClientCredentials))
                .await
        }));
    }
    for task in tasks {
        task.await.expect("join").expect("token");
    }
    assert_eq!(s.endpoint.requests(), 5);
    assert_eq!(s.broker.cached_accounts(), 5);
}

#[tokio::test]
async fn expired_refresh_token_marks_the_account_for_reconsent() {
    let s = setup(
        vec![Canned::entra_error(
            400,
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity.",
        )],
        MemoryStore::with_refresh_token(9, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(9, GrantKind::RefreshToken);
    let error = s.broker.access_token(&acct).await.expect_err("fails");
    assert!(error.needs_reconsent());
    assert!(!error.is_temporary());
    match &error {
        TokenError::Provider {
            class,
            error,
            codes,
            description,
            ..
        } => {
            assert_eq!(*class, FailureClass::Reconsent);
            assert_eq!(error, "invalid_grant");
            assert_eq!(codes, &vec![70008]);
            assert!(description.starts_with("AADSTS70008: "), "{description}");
            assert!(!description.contains("Trace ID"), "{description}");
        }
        other => panic!("unexpected {other:?}"),
    }

    let statuses = s.store.statuses();
    assert_eq!(statuses.len(), 1);
    let (id, status, reason) = &statuses[0];
    assert_eq!(*id, 9);
    assert_eq!(*status, AccountStatus::NeedsReconsent);
    let reason = reason.as_deref().expect("reason");
    assert!(reason.starts_with("AADSTS70008: "), "{reason}");
    assert!(!reason.contains("rt-1"));

    // A second login within the negative-cache window (the account as the store now has
    // it) is answered without a request.
    let mut acct = acct.clone();
    acct.status = AccountStatus::NeedsReconsent;
    let again = s.broker.access_token(&acct).await.expect_err("fails");
    assert!(matches!(again, TokenError::BackingOff { .. }));
    assert!(again.needs_reconsent());
    assert_eq!(s.endpoint.requests(), 1);
    assert_eq!(
        requests_metric(&s.registry, "refresh_token", "reconsent"),
        1.0
    );
}

#[tokio::test]
async fn missing_refresh_token_needs_reconsent_without_a_request() {
    let s = setup(
        vec![Canned::token("at", 3599, None)],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let error = s
        .broker
        .access_token(&account(4, GrantKind::RefreshToken))
        .await
        .expect_err("fails");
    assert!(matches!(error, TokenError::NoRefreshToken));
    assert_eq!(s.endpoint.requests(), 0);
    let statuses = s.store.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].1, AccountStatus::NeedsReconsent);
}

#[tokio::test]
async fn mfa_requirement_needs_interaction_and_a_new_sign_in() {
    let s = setup(
        vec![Canned::json(
            400,
            r#"{"error":"invalid_grant","error_description":"AADSTS50076: Due to a configuration change you must use multi-factor authentication.\r\nTrace ID: x","error_codes":[50076],"suberror":"basic_action","claims":"{\"access_token\":{\"capolids\":{\"essential\":true,\"values\":[\"1\"]}}}"}"#,
        )],
        MemoryStore::with_refresh_token(5, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let error = s
        .broker
        .access_token(&account(5, GrantKind::RefreshToken))
        .await
        .expect_err("fails");
    assert_eq!(error.class(), FailureClass::Interaction);
    // Only an interactive sign-in (with MFA) revives the grant: the account says so, with
    // the next step for the operator.
    let statuses = s.store.statuses();
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].1, AccountStatus::NeedsReconsent);
    let reason = statuses[0].2.clone().unwrap_or_default();
    assert!(reason.starts_with("AADSTS50076"), "{reason}");
    assert!(reason.contains("multi-factor"), "{reason}");
    assert!(
        reason.contains("oxbridge account consent user5"),
        "{reason}"
    );
    assert_eq!(
        requests_metric(&s.registry, "refresh_token", "interaction"),
        1.0
    );
}

#[tokio::test]
async fn invalid_client_secret_is_configuration() {
    let s = setup(
        vec![Canned::entra_error(
            401,
            "invalid_client",
            7000215,
            "Invalid client secret provided.",
        )],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let error = s
        .broker
        .access_token(&account(1, GrantKind::ClientCredentials))
        .await
        .expect_err("fails");
    assert_eq!(error.class(), FailureClass::Configuration);
    assert!(!error.to_string().contains("client-secret-1"));
    assert!(s.store.statuses().is_empty());
}

#[tokio::test]
async fn service_unavailable_is_transient_then_backs_off_without_a_request() {
    let s = setup(
        vec![Canned::plain(503, "<html>Service Unavailable</html>")],
        MemoryStore::with_refresh_token(2, "rt-1"),
        fast_settings(),
    )
    .await;
    let acct = account(2, GrantKind::RefreshToken);
    let error = s.broker.access_token(&acct).await.expect_err("fails");
    assert_eq!(error.class(), FailureClass::Transient);
    assert!(error.is_temporary());
    assert!(matches!(error, TokenError::Provider { .. }));

    for _ in 0..20 {
        let again = s.broker.access_token(&acct).await.expect_err("fails");
        match again {
            TokenError::BackingOff { retry_after, last } => {
                assert!(retry_after <= Duration::from_millis(200));
                assert_eq!(last.class(), FailureClass::Transient);
            }
            other => panic!("expected BackingOff, got {other:?}"),
        }
    }
    assert_eq!(s.endpoint.requests(), 1);
    assert!(s.store.statuses().is_empty());
    assert_eq!(
        requests_metric(&s.registry, "refresh_token", "transient"),
        1.0
    );

    // Once the backoff has passed the next call retries, and success clears the backoff.
    tokio::time::sleep(Duration::from_millis(250)).await;
    s.endpoint
        .set_script(vec![Canned::token("at-1", 3599, None)]);
    let token = s.broker.access_token(&acct).await.expect("recovers");
    assert!(token.fresh);
    assert_eq!(s.endpoint.requests(), 2);
}

#[tokio::test]
async fn repeated_transient_failures_back_off_longer() {
    let settings = BrokerSettings {
        backoff_initial: Duration::from_millis(40),
        backoff_max: Duration::from_secs(10),
        ..fast_settings()
    };
    let s = setup(
        vec![Canned::plain(502, "bad gateway")],
        MemoryStore::default(),
        settings,
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);
    s.broker.access_token(&acct).await.expect_err("fails");
    tokio::time::sleep(Duration::from_millis(60)).await;
    s.broker.access_token(&acct).await.expect_err("fails again");
    assert_eq!(s.endpoint.requests(), 2);
    // Second failure: backoff between 40 and 80 ms.
    match s.broker.access_token(&acct).await.expect_err("held off") {
        TokenError::BackingOff { retry_after, .. } => {
            assert!(retry_after > Duration::from_millis(20), "{retry_after:?}");
            assert!(retry_after <= Duration::from_millis(80), "{retry_after:?}");
        }
        other => panic!("expected BackingOff, got {other:?}"),
    }
}

#[tokio::test]
async fn throttling_honours_retry_after() {
    let s = setup(
        vec![Canned::json(429, "").header("Retry-After", "42")],
        MemoryStore::default(),
        fast_settings(),
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);
    let error = s.broker.access_token(&acct).await.expect_err("fails");
    assert_eq!(error.class(), FailureClass::Throttled);
    assert_eq!(error.retry_after(), Some(Duration::from_secs(42)));
    assert!(matches!(error, TokenError::Provider { .. }));

    // Held off for Retry-After, even though backoff_max is much shorter.
    tokio::time::sleep(Duration::from_millis(300)).await;
    match s.broker.access_token(&acct).await.expect_err("held off") {
        TokenError::BackingOff { retry_after, last } => {
            assert!(retry_after > Duration::from_secs(40), "{retry_after:?}");
            assert!(retry_after <= Duration::from_secs(42), "{retry_after:?}");
            assert_eq!(last.class(), FailureClass::Throttled);
        }
        other => panic!("expected BackingOff, got {other:?}"),
    }
    assert_eq!(s.endpoint.requests(), 1);
    assert_eq!(
        requests_metric(&s.registry, "client_credentials", "throttled"),
        1.0
    );
}

#[tokio::test]
async fn throttling_with_an_entra_body_keeps_codes_and_retry_after() {
    let s = setup(
        vec![
            Canned::entra_error(429, "temporarily_unavailable", 50196, "Loop detected.")
                .header("Retry-After", "7"),
        ],
        MemoryStore::default(),
        fast_settings(),
    )
    .await;
    let error = s
        .broker
        .access_token(&account(1, GrantKind::ClientCredentials))
        .await
        .expect_err("fails");
    match error {
        TokenError::Provider {
            class,
            codes,
            retry_after,
            ..
        } => {
            assert_eq!(class, FailureClass::Throttled);
            assert_eq!(codes, vec![50196]);
            assert_eq!(retry_after, Some(Duration::from_secs(7)));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[tokio::test]
async fn expiry_within_the_margin_triggers_a_refresh() {
    let s = setup(
        vec![
            Canned::token("at-1", 200, Some("rt-2")),
            Canned::token("at-2", 3599, Some("rt-3")),
        ],
        MemoryStore::with_refresh_token(1, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(1, GrantKind::RefreshToken);
    let first = s.broker.access_token(&acct).await.expect("token");
    assert_eq!(secret_text(&first.secret), "at-1");
    // 200 s left is inside the 5-minute margin: refresh with the rotated token.
    let second = s.broker.access_token(&acct).await.expect("token");
    assert_eq!(secret_text(&second.secret), "at-2");
    assert!(second.fresh);
    assert_eq!(s.endpoint.requests(), 2);
    assert!(s.endpoint.bodies()[1].contains("refresh_token=rt-2"));
    assert_eq!(s.store.stored_refresh_token(1).as_deref(), Some("rt-3"));
    // And now it is served from the cache.
    let third = s.broker.access_token(&acct).await.expect("token");
    assert!(!third.fresh);
    assert_eq!(s.endpoint.requests(), 2);
}

#[tokio::test]
async fn cached_token_is_served_while_the_endpoint_is_down() {
    let s = setup(
        vec![Canned::token("at-1", 200, None)],
        MemoryStore::default(),
        fast_settings(),
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);
    s.broker.access_token(&acct).await.expect("token");

    // The endpoint goes away; the token (200 s left, inside the margin) is still usable.
    s.endpoint.set_script(vec![Canned::hang_up()]);
    let during = s.broker.access_token(&acct).await.expect("cached token");
    assert_eq!(secret_text(&during.secret), "at-1");
    assert!(!during.fresh);
    assert_eq!(s.endpoint.requests(), 2);

    // While backing off, no request is made and the cached token keeps being served.
    for _ in 0..10 {
        let again = s.broker.access_token(&acct).await.expect("cached token");
        assert_eq!(secret_text(&again.secret), "at-1");
    }
    assert_eq!(s.endpoint.requests(), 2);

    s.endpoint.set_script(vec![Canned::plain(503, "down")]);
    tokio::time::sleep(Duration::from_millis(250)).await;
    let after = s.broker.access_token(&acct).await.expect("cached token");
    assert_eq!(secret_text(&after.secret), "at-1");
    assert_eq!(s.endpoint.requests(), 3);
}

#[tokio::test]
async fn store_write_failure_is_an_error_and_nothing_is_cached() {
    let s = setup(
        vec![Canned::token("at-1", 3599, Some("rt-2"))],
        MemoryStore::with_refresh_token(1, "rt-1"),
        fast_settings(),
    )
    .await;
    s.store.fail_writes.store(true, Ordering::SeqCst);
    let acct = account(1, GrantKind::RefreshToken);
    let error = s.broker.access_token(&acct).await.expect_err("fails");
    assert!(matches!(error, TokenError::Store(_)), "{error:?}");
    assert!(error.is_temporary());
    assert_eq!(s.broker.cached_accounts(), 0);
    assert_eq!(s.store.stored_refresh_token(1).as_deref(), Some("rt-1"));

    // The store recovers: the next call refreshes again (no hold-off for store failures).
    s.store.fail_writes.store(false, Ordering::SeqCst);
    let token = s.broker.access_token(&acct).await.expect("token");
    assert!(token.fresh);
    assert_eq!(s.endpoint.requests(), 2);
    assert!(s.endpoint.bodies()[1].contains("refresh_token=rt-1"));
    assert_eq!(s.store.stored_refresh_token(1).as_deref(), Some("rt-2"));
}

#[tokio::test]
async fn invalidate_forces_a_new_request() {
    let s = setup(
        vec![
            Canned::token("at-1", 3599, None),
            Canned::token("at-2", 3599, None),
        ],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);
    s.broker.access_token(&acct).await.expect("token");
    s.broker.invalidate(1);
    s.broker.invalidate(999); // unknown ids are fine
    assert_eq!(s.broker.cached_accounts(), 0);
    let token = s.broker.access_token(&acct).await.expect("token");
    assert_eq!(secret_text(&token.secret), "at-2");
    assert!(token.fresh);
    assert_eq!(s.endpoint.requests(), 2);
}

#[tokio::test]
async fn expires_in_as_a_string_is_accepted() {
    let s = setup(
        vec![Canned::json(
            200,
            r#"{"token_type":"Bearer","expires_in":"3600","access_token":"at-1"}"#,
        )],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let acct = account(1, GrantKind::ClientCredentials);
    let token = s.broker.access_token(&acct).await.expect("token");
    let left = token
        .expires_at
        .duration_since(SystemTime::now())
        .expect("future");
    assert!(left > Duration::from_secs(3500));
    assert!(!s.broker.access_token(&acct).await.expect("token").fresh);
}

#[tokio::test]
async fn garbage_success_body_is_a_network_error() {
    let s = setup(
        vec![Canned::json(200, "{not json")],
        MemoryStore::default(),
        fast_settings(),
    )
    .await;
    let error = s
        .broker
        .access_token(&account(1, GrantKind::ClientCredentials))
        .await
        .expect_err("fails");
    assert!(matches!(error, TokenError::Network(_)), "{error:?}");
    assert!(error.is_temporary());
}

#[tokio::test]
async fn unreachable_endpoint_is_a_network_error() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let authority = format!("http://{}", listener.local_addr().expect("addr"));
    drop(listener);
    let broker = TokenBroker::new(
        vec![app(&authority)],
        Arc::new(MemoryStore::default()),
        fast_settings(),
        &Registry::new(),
    )
    .expect("builds");
    let error = broker
        .access_token(&account(1, GrantKind::ClientCredentials))
        .await
        .expect_err("fails");
    assert!(matches!(error, TokenError::Network(_)), "{error:?}");
    assert_eq!(error.class(), FailureClass::Transient);
}

#[tokio::test]
async fn unknown_app_is_configuration_without_a_request() {
    let s = setup(
        vec![Canned::token("at", 3599, None)],
        MemoryStore::default(),
        BrokerSettings::default(),
    )
    .await;
    let mut acct = account(1, GrantKind::ClientCredentials);
    acct.app = "fabrikam".into();
    let error = s.broker.access_token(&acct).await.expect_err("fails");
    assert!(matches!(error, TokenError::UnknownApp(ref name) if name == "fabrikam"));
    assert_eq!(error.class(), FailureClass::Configuration);
    assert_eq!(s.endpoint.requests(), 0);
}

#[tokio::test]
async fn public_client_sends_no_secret_and_custom_scopes() {
    let endpoint = FakeEndpoint::start(vec![Canned::token("at", 3599, None)]).await;
    let mut registration = app(&endpoint.authority);
    registration.client_secret = None;
    registration.delegated_scopes = vec![
        "https://outlook.office.com/IMAP.AccessAsUser.All".into(),
        "offline_access".into(),
    ];
    let broker = TokenBroker::new(
        vec![registration],
        Arc::new(MemoryStore::with_refresh_token(1, "rt-1")),
        BrokerSettings::default(),
        &Registry::new(),
    )
    .expect("builds");
    broker
        .access_token(&account(1, GrantKind::RefreshToken))
        .await
        .expect("token");
    let body = &endpoint.bodies()[0];
    assert!(!body.contains("client_secret"), "{body}");
    assert!(!body.contains("SMTP.Send"), "{body}");
    assert!(body.contains("client_id=client-1"), "{body}");
}

#[tokio::test]
async fn construction_errors() {
    let store: Arc<MemoryStore> = Arc::new(MemoryStore::default());
    let registry = Registry::new();
    let duplicate = TokenBroker::new(
        vec![app("https://login.example"), app("https://login.example")],
        store.clone(),
        BrokerSettings::default(),
        &registry,
    );
    assert!(matches!(duplicate, Err(BrokerError::DuplicateApp(_))));

    let mut bad = app("https://login.example");
    bad.authority = "not a url".into();
    let invalid = TokenBroker::new(
        vec![bad],
        store.clone(),
        BrokerSettings::default(),
        &registry,
    );
    assert!(matches!(invalid, Err(BrokerError::InvalidApp { .. })));

    TokenBroker::new(
        vec![app("https://login.example")],
        store.clone(),
        BrokerSettings::default(),
        &registry,
    )
    .expect("first broker registers its metrics");
    let twice = TokenBroker::new(Vec::new(), store, BrokerSettings::default(), &registry);
    assert!(matches!(twice, Err(BrokerError::Metrics(_))));
}

#[tokio::test]
async fn debug_output_never_shows_tokens_or_secrets() {
    let s = setup(
        vec![Canned::token(
            "at-secret-value",
            3599,
            Some("rt-secret-value"),
        )],
        MemoryStore::with_refresh_token(1, "rt-1"),
        BrokerSettings::default(),
    )
    .await;
    let token = s
        .broker
        .access_token(&account(1, GrantKind::RefreshToken))
        .await
        .expect("token");
    let text = format!("{token:?} {:?}", s.broker);
    assert!(!text.contains("secret-value"), "{text}");
    assert!(!text.contains("client-secret-1"), "{text}");
}

/// The server spawns login tasks that await `access_token`, and shares the broker in an `Arc`.
#[test]
fn broker_is_shareable_and_its_future_is_send() {
    fn assert_send_sync<T: Send + Sync>() {}
    fn assert_send<T: Send>(_: &T) {}
    assert_send_sync::<TokenBroker>();
    let broker = TokenBroker::new(
        Vec::new(),
        Arc::new(MemoryStore::default()),
        BrokerSettings::default(),
        &Registry::new(),
    )
    .expect("builds");
    let acct = account(1, GrantKind::ClientCredentials);
    let future = broker.access_token(&acct);
    assert_send(&future);
}
