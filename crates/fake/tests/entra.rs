//! The token endpoint over real HTTPS: status codes, headers and bodies as Entra sends them,
//! and an app-only token that opens a mailbox only after FullAccess is granted.

mod support;

use oxbridge_fake::InjectedError;
use support::{refresh, tenant, xoauth2, Client, CLIENT_ID, SECRET, USER};

fn http_client(fake: &oxbridge_fake::FakeExchange) -> reqwest::Client {
    let ca = reqwest::Certificate::from_pem(fake.pki().ca_pem().as_bytes()).expect("CA");
    reqwest::Client::builder()
        .add_root_certificate(ca)
        .build()
        .expect("client")
}

#[tokio::test]
async fn rotation_and_errors_over_https() {
    let (fake, rt) = tenant().await;
    let (status, first) = refresh(&fake, &rt).await;
    assert_eq!(status, 200);
    assert!(first["expires_in"].is_u64());
    assert_ne!(first["refresh_token"].as_str(), Some(rt.as_str()));

    fake.entra().set_strict_rotation(true);
    let (status, body) = refresh(&fake, &rt).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(body["error_codes"][0], 70008);
    let description = body["error_description"].as_str().unwrap_or_default();
    assert!(description.starts_with("AADSTS70008: ") && description.contains("\r\nTrace ID: "));

    fake.entra().revoke_refresh_tokens(USER);
    let newest = first["refresh_token"].as_str().unwrap_or_default();
    let (status, body) = refresh(&fake, newest).await;
    assert_eq!(
        (status, body["error_codes"][0].as_u64()),
        (400, Some(50173))
    );

    fake.entra()
        .inject_error(Some(InjectedError::TooManyRequests {
            retry_after_secs: 7,
        }));
    let response = http_client(&fake)
        .post(format!(
            "{}/organizations/oauth2/v2.0/token",
            fake.authority()
        ))
        .form(&[("grant_type", "refresh_token")])
        .send()
        .await
        .expect("POST");
    assert_eq!(response.status().as_u16(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    assert_eq!(
        response.headers()["content-type"],
        "application/json; charset=utf-8"
    );
    fake.entra().inject_error(None);
    fake.entra().set_unavailable(true);
    assert_eq!(refresh(&fake, newest).await.0, 503);
    assert_eq!(fake.entra().token_requests(), 5);
}

#[tokio::test]
async fn app_only_token_needs_full_access() {
    let (fake, _) = tenant().await;
    let http = http_client(&fake);
    let url = format!("{}/{}/oauth2/v2.0/token", fake.authority(), fake.tenant());
    let form = |secret: &'static str| {
        [
            ("grant_type", "client_credentials"),
            ("client_id", CLIENT_ID),
            ("client_secret", secret),
            ("scope", "https://outlook.office365.com/.default"),
        ]
    };
    let bad = http
        .post(&url)
        .form(&form("wrong"))
        .send()
        .await
        .expect("POST");
    assert_eq!(bad.status().as_u16(), 401);
    let body: serde_json::Value = bad.json().await.expect("JSON");
    assert_eq!(body["error"], "invalid_client");
    assert_eq!(body["error_codes"][0], 7000215);

    let ok: serde_json::Value = http
        .post(&url)
        .form(&form(SECRET))
        .send()
        .await
        .expect("POST")
        .json()
        .await
        .expect("JSON");
    assert!(ok.get("refresh_token").is_none());
    let token = ok["access_token"].as_str().expect("token");

    let (mut c, _) = Client::connect(&fake).await;
    let reply = c
        .command(
            "a1",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(USER, token)),
        )
        .await;
    assert_eq!(reply, vec!["a1 NO AUTHENTICATE failed.\r\n"]);
    fake.entra().grant_app_access(CLIENT_ID, USER);
    c.login(USER, token).await;
}
