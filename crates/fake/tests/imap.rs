//! End-to-end scenarios against a running fake: a token from the HTTPS token endpoint, then
//! IMAP over TLS with the exact Exchange Online strings.

mod support;

use std::time::Duration;

use support::{access_token, tenant, xoauth2, Client, USER};

const MESSAGE: &[u8] = b"From: Bob <bob@fabrikam.com>\r\nTo: alice@contoso.onmicrosoft.com\r\nSubject: Hello\r\nDate: Mon, 1 Jan 2024 10:00:00 +0000\r\nMessage-ID: <1@fabrikam.com>\r\n\r\nHi Alice,\r\nbinary \xff\xfe bytes\r\n";

#[tokio::test]
async fn token_then_login_then_fetch_byte_exact() {
    let (fake, rt) = tenant().await;
    fake.directory().deliver(USER, "INBOX", MESSAGE);
    let token = access_token(&fake, &rt).await;
    assert_eq!(fake.entra().token_requests(), 1);

    let (mut c, greeting) = Client::connect(&fake).await;
    assert!(greeting.starts_with("* OK The Microsoft Exchange IMAP4 service is ready. ["));
    assert!(greeting.ends_with("]\r\n"));
    assert_eq!(
        c.command("a1", "CAPABILITY").await,
        vec![
            "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS ID UNSELECT CHILDREN IDLE NAMESPACE LITERAL+\r\n",
            "a1 OK CAPABILITY completed.\r\n"
        ]
    );
    assert_eq!(
        c.command("a2", "SELECT INBOX").await,
        vec!["a2 BAD Command received in Invalid state.\r\n"]
    );
    c.login(USER, &token).await;
    assert_eq!(fake.directory().active_imap_sessions(USER), 1);
    assert_eq!(
        c.command("a3", "CAPABILITY").await[0],
        "* CAPABILITY IMAP4 IMAP4rev1 AUTH=PLAIN AUTH=XOAUTH2 SASL-IR UIDPLUS MOVE ID UNSELECT CLIENTACCESSRULES CLIENTNETWORKPRESENCELOCATION BACKENDAUTHENTICATE CHILDREN IDLE NAMESPACE LITERAL+\r\n"
    );
    let select = c.command("a4", "SELECT INBOX").await;
    assert_eq!(select[0], "* 1 EXISTS\r\n");
    assert_eq!(
        select.last().map(String::as_str),
        Some("a4 OK [READ-WRITE] SELECT completed.\r\n")
    );

    c.send("a5 UID FETCH 1 (UID BODY[])\r\n").await;
    let fetched = c.raw_line().await;
    let mut expected = format!("* 1 FETCH (UID 1 BODY[] {{{}}}\r\n", MESSAGE.len()).into_bytes();
    expected.extend_from_slice(MESSAGE);
    expected.extend_from_slice(b" FLAGS (\\Seen))\r\n");
    assert_eq!(fetched, expected);
    assert_eq!(c.line().await, "a5 OK FETCH completed.\r\n");
    assert_eq!(
        fake.directory().messages(USER, "INBOX"),
        vec![MESSAGE.to_vec()]
    );

    assert_eq!(
        c.command("a6", "LOGOUT").await,
        vec![
            "* BYE Microsoft Exchange Server IMAP4 server signing off.\r\n",
            "a6 OK LOGOUT completed.\r\n"
        ]
    );
    assert_eq!(c.line().await, "");
    let logins = fake.directory().xoauth_logins();
    assert_eq!(logins.len(), 1);
    assert!(logins[0].ok && logins[0].protocol == "imap" && logins[0].user == USER);
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(fake.directory().active_imap_sessions(USER), 0);
}

#[tokio::test]
async fn continuation_form_big_token_and_failures() {
    let (fake, rt) = tenant().await;
    fake.entra().set_token_padding(6000);
    let token = access_token(&fake, &rt).await;
    assert!(token.len() >= 6000);

    let (mut c, _) = Client::connect(&fake).await;
    assert_eq!(
        c.command("a1", "LOGIN alice secret").await,
        vec!["a1 NO LOGIN failed.\r\n"]
    );
    c.send("a2 AUTHENTICATE PLAIN AGFsaWNlAHNlY3JldA==\r\n")
        .await;
    assert_eq!(c.line().await, "a2 NO AUTHENTICATE failed.\r\n");
    // Wrong user for a delegated token.
    c.send(&format!(
        "a3 AUTHENTICATE XOAUTH2 {}\r\n",
        xoauth2("bob@contoso.onmicrosoft.com", &token)
    ))
    .await;
    assert_eq!(c.line().await, "a3 NO AUTHENTICATE failed.\r\n");
    // Continuation form with a 6 KB token.
    c.send("a4 AUTHENTICATE XOAUTH2\r\n").await;
    assert_eq!(c.line().await, "+ \r\n");
    c.send(&format!("{}\r\n", xoauth2(USER, &token))).await;
    assert_eq!(c.line().await, "a4 OK AUTHENTICATE completed.\r\n");
    assert_eq!(
        c.command("a5", "AUTHENTICATE XOAUTH2 x").await,
        vec!["a5 BAD Command received in Invalid state.\r\n"]
    );
    let oks: Vec<bool> = fake
        .directory()
        .xoauth_logins()
        .iter()
        .map(|l| l.ok)
        .collect();
    assert_eq!(oks, vec![false, true]);

    // IMAP disabled for the mailbox.
    fake.directory().set_imap_enabled(USER, false);
    let (mut c, _) = Client::connect(&fake).await;
    let reply = c
        .command(
            "b1",
            &format!("AUTHENTICATE XOAUTH2 {}", xoauth2(USER, &token)),
        )
        .await;
    assert_eq!(reply, vec!["b1 NO AUTHENTICATE failed.\r\n"]);
}

#[tokio::test]
async fn authenticated_but_not_connected() {
    let (fake, rt) = tenant().await;
    let token = access_token(&fake, &rt).await;
    fake.directory().set_not_connected(USER, true);
    let (mut c, _) = Client::connect(&fake).await;
    c.login(USER, &token).await;
    assert_eq!(
        c.command("a1", "NAMESPACE").await,
        vec!["a1 BAD User is authenticated but not connected.\r\n"]
    );
    c.send("a2 LIST \"\" \"INBOX\"\r\n").await;
    assert_eq!(
        c.line().await,
        "a2 BAD User is authenticated but not connected.\r\n"
    );
    assert_eq!(c.line().await, "* BYE Connection closed. 14\r\n");
    assert_eq!(c.line().await, "");

    // Over the connection cap behaves the same.
    fake.directory().set_not_connected(USER, false);
    fake.directory().set_connection_cap(1);
    let (mut first, _) = Client::connect(&fake).await;
    first.login(USER, &token).await;
    let (mut second, _) = Client::connect(&fake).await;
    second.login(USER, &token).await;
    assert_eq!(
        second.command("b1", "NOOP").await,
        vec!["b1 BAD User is authenticated but not connected.\r\n"]
    );
    assert_eq!(
        first.command("c1", "NOOP").await,
        vec!["c1 OK NOOP completed.\r\n"]
    );
}

#[tokio::test]
async fn token_expiry_ends_the_session() {
    let (fake, rt) = tenant().await;
    let token = access_token(&fake, &rt).await;
    let (mut c, _) = Client::connect(&fake).await;
    c.login(USER, &token).await;
    fake.entra().expire_access_tokens();
    c.send("a1 LIST \"\" *\r\n").await;
    assert_eq!(
        c.line().await,
        "* BYE Session invalidated - AccessTokenExpired\r\n"
    );
    assert_eq!(c.line().await, "");

    // During IDLE the BYE comes unsolicited.
    let token = access_token(&fake, &rt).await;
    let (mut c, _) = Client::connect(&fake).await;
    c.login(USER, &token).await;
    c.send("b1 IDLE\r\n").await;
    assert_eq!(
        c.line().await,
        "+ IDLE accepted, awaiting DONE command.\r\n"
    );
    fake.entra().expire_access_tokens();
    assert_eq!(
        c.line().await,
        "* BYE Session invalidated - AccessTokenExpired\r\n"
    );
}

#[tokio::test]
async fn idle_append_store_search_expunge() {
    let (fake, rt) = tenant().await;
    let token = access_token(&fake, &rt).await;
    let (mut c, _) = Client::connect(&fake).await;
    c.login(USER, &token).await;
    c.command("a1", "SELECT INBOX").await;
    c.send("a2 IDLE\r\n").await;
    assert_eq!(
        c.line().await,
        "+ IDLE accepted, awaiting DONE command.\r\n"
    );
    fake.directory().deliver(USER, "INBOX", MESSAGE);
    assert_eq!(c.line().await, "* 1 EXISTS\r\n");
    c.send("DONE\r\n").await;
    assert_eq!(c.line().await, "a2 OK IDLE completed.\r\n");

    // Synchronising literal.
    c.send("a3 APPEND INBOX (\\Flagged) {5}\r\n").await;
    assert_eq!(c.line().await, "+ Ready for additional command text.\r\n");
    c.send("hello\r\n").await;
    let reply = c.until_tagged("a3").await;
    assert!(
        reply.last().is_some_and(
            |l| l.starts_with("a3 OK [APPENDUID ") && l.ends_with(" 2] APPEND completed.\r\n")
        ),
        "{reply:?}"
    );
    // Non-synchronising literal.
    let append = c.command("a4", "APPEND \"Sent Items\" {3+}\r\nabc").await;
    assert!(
        append
            .last()
            .is_some_and(|l| l.ends_with(" 1] APPEND completed.\r\n")),
        "{append:?}"
    );
    assert_eq!(
        fake.directory().messages(USER, "Sent Items"),
        vec![b"abc".to_vec()]
    );

    let search = c.command("a5", "UID SEARCH FLAGGED").await;
    assert!(search.contains(&"* SEARCH 2\r\n".to_string()), "{search:?}");
    let store = c.command("a6", "STORE 1 +FLAGS (\\Deleted)").await;
    assert!(
        store.contains(&"* 1 FETCH (FLAGS (\\Deleted))\r\n".to_string()),
        "{store:?}"
    );
    assert_eq!(
        c.command("a7", "EXPUNGE").await,
        vec!["* 1 EXPUNGE\r\n", "a7 OK EXPUNGE completed.\r\n"]
    );
    assert_eq!(
        fake.directory().messages(USER, "INBOX"),
        vec![b"hello".to_vec()]
    );
    let status = c
        .command("a8", "STATUS INBOX (MESSAGES UIDNEXT UNSEEN)")
        .await;
    assert_eq!(
        status[0],
        "* STATUS INBOX (MESSAGES 1 UIDNEXT 3 UNSEEN 1)\r\n"
    );
    assert_eq!(
        c.command("a9", "FROB").await,
        vec!["a9 BAD Command Error. 12\r\n"]
    );
}
