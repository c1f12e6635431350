//! Behaviour of the SQLite store as the server and CLI see it.

use std::path::Path;

use oxbridge_wire::{Protocol, Secret};
use tempfile::TempDir;

use super::*;

const PASSWORD: &str = "correct-horse-battery-staple-7f3a";
const TOKEN: &str = "0.ARoA-refresh-token-plaintext-marker-91c2";
const ROTATED: &str = "0.ARoA-rotated-refresh-token-marker-55d0";

fn key_text() -> String {
    MasterKey::generate()
        .to_base64()
        .expose_str()
        .expect("ascii")
        .to_owned()
}

fn key(text: &str) -> MasterKey {
    MasterKey::from_base64(text).expect("key")
}

fn open(dir: &Path, key_text: &str) -> SqliteStore {
    SqliteStore::open_in_data_dir(dir, key(key_text)).expect("open store")
}

fn fresh() -> (TempDir, String, SqliteStore) {
    let dir = tempfile::tempdir().expect("tempdir");
    let text = key_text();
    let store = open(dir.path(), &text);
    (dir, text, store)
}

fn new_account(name: &str, grant: NewGrant) -> NewAccount {
    NewAccount {
        name: name.into(),
        mailbox: format!("{name}@contoso.com"),
        app: "contoso".into(),
        protocols: vec![Protocol::Smtp, Protocol::Imap],
        grant,
        password: Secret::from(PASSWORD),
        sealing: Default::default(),
    }
}

fn with_token(name: &str) -> NewAccount {
    new_account(name, NewGrant::RefreshToken(Secret::from(TOKEN)))
}

fn app_only(name: &str) -> NewAccount {
    new_account(name, NewGrant::ClientCredentials)
}

#[tokio::test]
async fn add_list_show_remove() {
    let (_dir, _, store) = fresh();
    let added = store.add_account(with_token("alice")).await.expect("add");
    assert_eq!(added.name, "alice");
    assert_eq!(added.mailbox, "alice@contoso.com");
    assert_eq!(added.app, "contoso");
    assert_eq!(added.grant, GrantKind::RefreshToken);
    assert_eq!(added.protocols, vec![Protocol::Imap, Protocol::Smtp]);
    assert_eq!(added.status, AccountStatus::Active);
    assert!(added.allows(Protocol::Imap) && !added.allows(Protocol::Pop3));
    assert!(added.refresh_token_updated_at.is_some());
    assert!(added.last_login_at.is_none());
    store.add_account(app_only("bob")).await.expect("add");

    let names: Vec<_> = store
        .list_accounts()
        .await
        .expect("list")
        .into_iter()
        .map(|a| a.name)
        .collect();
    assert_eq!(names, ["alice", "bob"]);

    let shown = store.account("bob").await.expect("show").expect("exists");
    assert_eq!(shown.grant, GrantKind::ClientCredentials);
    assert!(shown.refresh_token_updated_at.is_none());
    assert!(
        store.account("Bob").await.expect("show").is_none(),
        "names are case-sensitive"
    );

    assert!(store.remove_account("alice").await.expect("remove"));
    assert!(!store.remove_account("alice").await.expect("remove again"));
    assert!(store.account("alice").await.expect("show").is_none());

    // Ids are never reused, so id-keyed caches elsewhere cannot mix accounts up.
    let again = store.add_account(app_only("alice")).await.expect("re-add");
    assert!(again.id > shown.id);
}

#[tokio::test]
async fn add_rejects_duplicates_and_bad_input() {
    let (_dir, _, store) = fresh();
    store.add_account(app_only("alice")).await.expect("add");
    let dup = store.add_account(app_only("alice")).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(n)) if n == "alice"));

    let mut bad = app_only("carol");
    bad.mailbox = "carol".into();
    assert!(matches!(
        store.add_account(bad).await,
        Err(StoreError::Invalid(_))
    ));
    let mut bad = app_only("carol");
    bad.protocols.clear();
    assert!(matches!(
        store.add_account(bad).await,
        Err(StoreError::Invalid(_))
    ));
    let bad = new_account("carol", NewGrant::RefreshToken(Secret::default()));
    assert!(matches!(
        store.add_account(bad).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.add_account(app_only("a b")).await,
        Err(StoreError::Invalid(_))
    ));
    assert_eq!(store.list_accounts().await.expect("list").len(), 1);
}

#[tokio::test]
async fn verify_login_ok_wrong_and_unknown() {
    let (_dir, _, store) = fresh();
    let added = store.add_account(app_only("alice")).await.expect("add");
    let ok = store
        .verify_login("alice", &Secret::from(PASSWORD))
        .await
        .expect("verify");
    assert_eq!(ok.map(|a| a.id), Some(added.id));
    let wrong = store
        .verify_login("alice", &Secret::from("nope"))
        .await
        .expect("verify");
    assert!(wrong.is_none());
    let unknown = store
        .verify_login("mallory", &Secret::from(PASSWORD))
        .await
        .expect("verify");
    assert!(unknown.is_none());
    let wrong_case = store
        .verify_login("Alice", &Secret::from(PASSWORD))
        .await
        .expect("verify");
    assert!(wrong_case.is_none());
    // A cached success is still the current account, status included.
    store
        .set_status(added.id, AccountStatus::Disabled, None)
        .await
        .expect("status");
    let cached = store
        .verify_login("alice", &Secret::from(PASSWORD))
        .await
        .expect("verify");
    assert_eq!(cached.map(|a| a.status), Some(AccountStatus::Disabled));
}

#[tokio::test]
async fn set_password_invalidates_cached_login() {
    let (_dir, _, store) = fresh();
    store.add_account(app_only("alice")).await.expect("add");
    let old = Secret::from(PASSWORD);
    assert!(store
        .verify_login("alice", &old)
        .await
        .expect("verify")
        .is_some());
    assert!(store
        .verify_login("alice", &old)
        .await
        .expect("cached")
        .is_some());

    let new = Secret::from("a-new-password");
    store
        .set_password("alice", &new, None)
        .await
        .expect("passwd");
    assert!(store
        .verify_login("alice", &old)
        .await
        .expect("verify")
        .is_none());
    assert!(store
        .verify_login("alice", &new)
        .await
        .expect("verify")
        .is_some());

    let missing = store.set_password("nobody", &new, None).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    let empty = store.set_password("alice", &Secret::default(), None).await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn password_change_by_another_process_invalidates_cached_login() {
    let (dir, text, server) = fresh();
    server.add_account(app_only("alice")).await.expect("add");
    let old = Secret::from(PASSWORD);
    assert!(server
        .verify_login("alice", &old)
        .await
        .expect("verify")
        .is_some());

    let cli = open(dir.path(), &text);
    cli.set_password("alice", &Secret::from("changed"), None)
        .await
        .expect("passwd");
    assert!(server
        .verify_login("alice", &old)
        .await
        .expect("verify")
        .is_none());
}

#[tokio::test]
async fn removal_invalidates_cached_login() {
    let (_dir, _, store) = fresh();
    store.add_account(app_only("alice")).await.expect("add");
    let pw = Secret::from(PASSWORD);
    assert!(store
        .verify_login("alice", &pw)
        .await
        .expect("verify")
        .is_some());
    assert!(store.remove_account("alice").await.expect("remove"));
    assert!(store
        .verify_login("alice", &pw)
        .await
        .expect("verify")
        .is_none());

    let again = store.add_account(app_only("alice")).await.expect("re-add");
    let login = store.verify_login("alice", &pw).await.expect("verify");
    assert_eq!(login.map(|a| a.id), Some(again.id));
}

#[tokio::test]
async fn refresh_token_round_trip_and_rotation() {
    let (_dir, _, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    let token = store
        .refresh_token(alice.id, None)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(token, Secret::from(TOKEN));

    store
        .replace_refresh_token(alice.id, &Secret::from(ROTATED), None)
        .await
        .expect("rotate");
    let token = store
        .refresh_token(alice.id, None)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(token, Secret::from(ROTATED));
    let shown = store.account("alice").await.expect("show").expect("exists");
    assert!(shown.refresh_token_updated_at.is_some());

    let bob = store.add_account(app_only("bob")).await.expect("add");
    assert!(store
        .refresh_token(bob.id, None)
        .await
        .expect("read")
        .is_none());

    let missing = store
        .replace_refresh_token(9999, &Secret::from(ROTATED), None)
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
    assert!(matches!(
        store.refresh_token(9999, None).await,
        Err(StoreError::NotFound(_))
    ));
    let empty = store
        .replace_refresh_token(alice.id, &Secret::default(), None)
        .await;
    assert!(matches!(empty, Err(StoreError::Invalid(_))));
}

#[tokio::test]
async fn import_refresh_token_switches_grant_and_reactivates() {
    let (_dir, _, store) = fresh();
    let bob = store.add_account(app_only("bob")).await.expect("add");
    store
        .set_status(
            bob.id,
            AccountStatus::NeedsReconsent,
            Some("AADSTS70008: expired"),
        )
        .await
        .expect("status");
    let shown = store.account("bob").await.expect("show").expect("exists");
    assert_eq!(shown.status, AccountStatus::NeedsReconsent);
    assert_eq!(shown.status_reason.as_deref(), Some("AADSTS70008: expired"));

    store
        .import_refresh_token("bob", &Secret::from(TOKEN))
        .await
        .expect("import");
    let shown = store.account("bob").await.expect("show").expect("exists");
    assert_eq!(shown.grant, GrantKind::RefreshToken);
    assert_eq!(shown.status, AccountStatus::Active);
    assert!(shown.status_reason.is_none());
    let token = store
        .refresh_token(bob.id, None)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(token, Secret::from(TOKEN));

    let missing = store
        .import_refresh_token("nobody", &Secret::from(TOKEN))
        .await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn status_and_login_timestamps() {
    let (_dir, _, store) = fresh();
    let alice = store.add_account(app_only("alice")).await.expect("add");
    store.record_login(alice.id).await.expect("record");
    let first = store
        .account("alice")
        .await
        .expect("show")
        .expect("exists")
        .last_login_at;
    assert!(first.is_some());
    store.record_login(alice.id).await.expect("record again");
    assert!(matches!(
        store.record_login(9999).await,
        Err(StoreError::NotFound(_))
    ));
    let missing = store.set_status(9999, AccountStatus::Disabled, None).await;
    assert!(matches!(missing, Err(StoreError::NotFound(_))));
}

#[tokio::test]
async fn sealed_token_moved_to_another_row_does_not_open() {
    let (dir, _, store) = fresh();
    store.add_account(with_token("alice")).await.expect("add");
    let mallory = store.add_account(with_token("mallory")).await.expect("add");
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw open");
    raw.execute(
        "UPDATE accounts SET refresh_token = \
         (SELECT refresh_token FROM accounts WHERE name = 'alice') WHERE name = 'mallory'",
        [],
    )
    .expect("copy blob");
    drop(raw);
    let stolen = store.refresh_token(mallory.id, None).await;
    assert!(matches!(stolen, Err(StoreError::Corrupt(_))), "{stolen:?}");
}

#[tokio::test]
async fn wrong_master_key_is_corrupt() {
    let (dir, _, store) = fresh();
    store.add_account(with_token("alice")).await.expect("add");
    drop(store);
    let other = SqliteStore::open_in_data_dir(dir.path(), MasterKey::generate());
    assert!(matches!(other, Err(StoreError::Corrupt(_))), "{other:?}");
}

#[tokio::test]
async fn newer_schema_is_refused_at_open() {
    let (dir, text, store) = fresh();
    drop(store);
    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw open");
    raw.pragma_update(None, "user_version", schema::CURRENT_VERSION + 1)
        .expect("bump");
    drop(raw);
    let reopened = SqliteStore::open_in_data_dir(dir.path(), key(&text));
    assert!(
        matches!(reopened, Err(StoreError::Corrupt(_))),
        "{reopened:?}"
    );
}

#[tokio::test]
async fn data_survives_reopen() {
    let (dir, text, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    store
        .replace_refresh_token(alice.id, &Secret::from(ROTATED), None)
        .await
        .expect("rotate");
    drop(store);
    let store = open(dir.path(), &text);
    let token = store
        .refresh_token(alice.id, None)
        .await
        .expect("read")
        .expect("present");
    assert_eq!(token, Secret::from(ROTATED));
    assert!(store
        .verify_login("alice", &Secret::from(PASSWORD))
        .await
        .expect("ok")
        .is_some());
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// Every file SQLite keeps for the database: main file, WAL, shared memory.
fn database_files(dir: &Path) -> Vec<(String, Vec<u8>)> {
    std::fs::read_dir(dir)
        .expect("list")
        .filter_map(|entry| {
            let entry = entry.expect("entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            name.starts_with(DATABASE_FILE)
                .then(|| (name, std::fs::read(entry.path()).expect("read")))
        })
        .collect()
}

fn assert_no_plaintext(dir: &Path, secrets: &[&str]) {
    let files = database_files(dir);
    assert!(!files.is_empty());
    for (name, bytes) in &files {
        for secret in secrets {
            assert!(
                !contains(bytes, secret),
                "{name} contains a secret in plaintext"
            );
        }
    }
}

#[tokio::test]
async fn no_secret_in_the_database_files() {
    let (dir, text, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    assert!(store
        .verify_login("alice", &Secret::from(PASSWORD))
        .await
        .expect("ok")
        .is_some());
    store
        .replace_refresh_token(alice.id, &Secret::from(ROTATED), None)
        .await
        .expect("rotate");
    store
        .set_password("alice", &Secret::from("second-password-x9"), None)
        .await
        .expect("passwd");
    let secrets = [
        PASSWORD,
        TOKEN,
        ROTATED,
        "second-password-x9",
        text.as_str(),
    ];

    // The WAL holds the recent writes before a checkpoint.
    assert!(database_files(dir.path())
        .iter()
        .any(|(n, _)| n.ends_with("-wal")));
    assert_no_plaintext(dir.path(), &secrets);

    let raw = rusqlite::Connection::open(dir.path().join(DATABASE_FILE)).expect("raw open");
    raw.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
        .expect("checkpoint");
    drop(raw);
    assert_no_plaintext(dir.path(), &secrets);
    drop(store);
    assert_no_plaintext(dir.path(), &secrets);
    // Sanity check of the check itself: the account name is stored in the clear.
    let main = std::fs::read(dir.path().join(DATABASE_FILE)).expect("read");
    assert!(contains(&main, "alice@contoso.com"));
}

#[cfg(unix)]
#[tokio::test]
async fn database_files_are_private() {
    use std::os::unix::fs::PermissionsExt;

    let (dir, _, store) = fresh();
    store.add_account(app_only("alice")).await.expect("add");
    for (name, _) in database_files(dir.path()) {
        let mode = std::fs::metadata(dir.path().join(&name))
            .expect("meta")
            .permissions()
            .mode();
        assert_eq!(mode & 0o077, 0, "{name} has mode {mode:o}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_all_succeed() {
    let (_dir, _, store) = fresh();
    for i in 0..5 {
        store
            .add_account(app_only(&format!("user{i}")))
            .await
            .expect("add");
    }
    let mut tasks = Vec::new();
    for n in 0..50 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let name = format!("user{}", n % 5);
            store.verify_login(&name, &Secret::from(PASSWORD)).await
        }));
    }
    for task in tasks {
        let login = task.await.expect("join").expect("verify");
        assert!(login.is_some());
    }
}

#[tokio::test]
async fn named_passwords_each_log_in_and_revoke_alone() {
    let (_dir, _, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    let scanner = Secret::from("scanner-password-1");
    let erp = Secret::from("erp-password-2");
    store
        .add_password("alice", "scanner", &scanner, None)
        .await
        .expect("add scanner");
    store
        .add_password("alice", "erp", &erp, None)
        .await
        .expect("add erp");
    let dup = store.add_password("alice", "erp", &scanner, None).await;
    assert!(matches!(dup, Err(StoreError::AlreadyExists(_))), "{dup:?}");
    assert!(matches!(
        store.add_password("alice", "bad name", &erp, None).await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.add_password("nobody", "x", &erp, None).await,
        Err(StoreError::NotFound(_))
    ));

    for pw in [Secret::from(PASSWORD), scanner.clone(), erp.clone()] {
        let login = store.verify_login("alice", &pw).await.expect("verify");
        assert_eq!(login.map(|a| a.id), Some(alice.id));
    }
    assert!(store
        .verify_login("alice", &Secret::from("other"))
        .await
        .expect("verify")
        .is_none());

    // Use is recorded in the background; give it a moment.
    let mut used = Vec::new();
    for _ in 0..50 {
        used = store.passwords("alice").await.expect("list");
        if used.iter().all(|p| p.last_used_at.is_some()) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let names: Vec<_> = used.iter().map(|p| p.name.as_str()).collect();
    assert_eq!(names, ["default", "erp", "scanner"]);
    assert!(used
        .iter()
        .all(|p| p.last_used_at.is_some() && p.created_at > 0));

    // Revoking one (even after a cached success) leaves the others and the grant alone.
    assert!(store
        .revoke_password("alice", "scanner")
        .await
        .expect("revoke"));
    assert!(!store
        .revoke_password("alice", "scanner")
        .await
        .expect("again"));
    assert!(store
        .verify_login("alice", &scanner)
        .await
        .expect("verify")
        .is_none());
    assert!(store
        .verify_login("alice", &erp)
        .await
        .expect("verify")
        .is_some());
    assert_eq!(
        store.refresh_token(alice.id, None).await.expect("rt"),
        Some(Secret::from(TOKEN))
    );
    store
        .revoke_password("alice", "default")
        .await
        .expect("revoke");
    let last = store.revoke_password("alice", "erp").await;
    assert!(matches!(last, Err(StoreError::Invalid(_))), "{last:?}");
    // Changing the default password later re-creates it without touching the others.
    store
        .set_password("alice", &Secret::from("new-default"), None)
        .await
        .expect("passwd");
    assert!(store
        .verify_login("alice", &erp)
        .await
        .expect("verify")
        .is_some());
    assert!(store
        .verify_login("alice", &Secret::from("new-default"))
        .await
        .expect("verify")
        .is_some());
}

#[tokio::test]
async fn named_passwords_are_capped() {
    let (_dir, _, store) = fresh();
    store.add_account(app_only("alice")).await.expect("add");
    for i in 1..crate::MAX_PASSWORDS {
        store
            .add_password(
                "alice",
                &format!("device{i}"),
                &Secret::from(format!("pw{i}")),
                None,
            )
            .await
            .expect("add");
    }
    let over = store
        .add_password("alice", "one-too-many", &Secret::from("x"), None)
        .await;
    assert!(matches!(over, Err(StoreError::Invalid(_))), "{over:?}");
    // Still one Argon2 run for all of them: the last one added verifies.
    let n = crate::MAX_PASSWORDS - 1;
    assert!(store
        .verify_login("alice", &Secret::from(format!("pw{n}")))
        .await
        .expect("verify")
        .is_some());
}

#[tokio::test]
async fn identities_per_protocol() {
    let (_dir, _, store) = fresh();
    store.add_account(with_token("shared")).await.expect("add");
    store
        .set_identity("shared", Protocol::Smtp, Some("delegate@contoso.com"))
        .await
        .expect("set");
    let shown = store
        .account("shared")
        .await
        .expect("show")
        .expect("exists");
    assert_eq!(shown.mailbox_for(Protocol::Imap), "shared@contoso.com");
    assert_eq!(shown.mailbox_for(Protocol::Smtp), "delegate@contoso.com");
    assert!(matches!(
        store
            .set_identity("shared", Protocol::Imap, Some("not-an-address"))
            .await,
        Err(StoreError::Invalid(_))
    ));
    assert!(matches!(
        store.set_identity("nobody", Protocol::Imap, None).await,
        Err(StoreError::NotFound(_))
    ));
    store
        .set_identity("shared", Protocol::Smtp, None)
        .await
        .expect("clear");
    let shown = store
        .account("shared")
        .await
        .expect("show")
        .expect("exists");
    assert!(shown.identities.is_empty());
}

#[tokio::test]
async fn grant_health_and_reconsent_transition() {
    let (_dir, _, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    assert_eq!(alice.health, crate::GrantHealth::default());
    store
        .record_grant_success(alice.id, 1_900_000_000)
        .await
        .expect("success");
    let failure = crate::GrantFailure {
        at: 1_800_000_000,
        class: "reconsent".into(),
        codes: vec![700082, 70000],
        reason: "AADSTS700082: expired".into(),
        claims: Some("{\"access_token\":{}}".into()),
    };
    store
        .record_grant_failure(alice.id, &failure)
        .await
        .expect("failure");
    let shown = store.account("alice").await.expect("show").expect("exists");
    assert!(shown.health.last_refresh_at.is_some());
    assert_eq!(shown.health.access_token_expires_at, Some(1_900_000_000));
    assert_eq!(shown.health.last_failure, Some(failure));

    assert!(store
        .mark_needs_reconsent(alice.id, "AADSTS700082: expired")
        .await
        .expect("mark"));
    assert!(
        !store
            .mark_needs_reconsent(alice.id, "again")
            .await
            .expect("mark"),
        "only the first caller sees the transition"
    );
    let shown = store.account("alice").await.expect("show").expect("exists");
    assert_eq!(shown.status, AccountStatus::NeedsReconsent);
    assert_eq!(
        shown.status_reason.as_deref(),
        Some("AADSTS700082: expired")
    );
    store
        .import_refresh_token("alice", &Secret::from(ROTATED))
        .await
        .expect("import");
    assert!(store
        .mark_needs_reconsent(alice.id, "again")
        .await
        .expect("mark"));
}

fn sealed(name: &str) -> NewAccount {
    NewAccount {
        sealing: Sealing::Password,
        ..with_token(name)
    }
}

/// Every byte SQLite keeps for the store: the database, its WAL and shared memory.
fn database_bytes(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for suffix in ["", "-wal", "-shm"] {
        let path = dir.join(format!("{DATABASE_FILE}{suffix}"));
        all.extend(std::fs::read(path).unwrap_or_default());
    }
    all
}

#[tokio::test]
async fn a_password_sealed_token_does_not_open_with_the_database_and_master_key_alone() {
    let (dir, key_text, store) = fresh();
    let account = store.add_account(sealed("alice")).await.expect("add");
    let id = account.id;
    assert!(account.password_sealed());
    assert!(!contains(&database_bytes(dir.path()), TOKEN));

    // The database and the master key, as an attacker holding both would use them.
    let thief = open(dir.path(), &key_text);
    assert!(matches!(
        thief.refresh_token(id, None).await,
        Err(StoreError::Sealed(_))
    ));
    let blob: Vec<u8> = thief
        .with_db(move |conn, _| {
            Ok(conn.query_row(
                "SELECT refresh_token FROM accounts WHERE id = ?1",
                [id],
                |r| r.get(0),
            )?)
        })
        .await
        .expect("raw blob");
    let outer = seal::open(&key(&key_text), Purpose::RefreshToken(id), &blob).expect("outer");
    assert!(!outer.windows(TOKEN.len()).any(|w| w == TOKEN.as_bytes()));
    let slots: Vec<Vec<u8>> = thief
        .with_db(move |conn, _| {
            Ok(queries::password_rows(conn, id)?
                .into_iter()
                .filter_map(|row| row.key_slot)
                .collect())
        })
        .await
        .expect("slots");
    assert_eq!(slots.len(), 1, "one key slot per password");

    // A wrong password opens nothing; the right one opens the token.
    assert!(store
        .open_grant_key(id, &Secret::from("guess"))
        .await
        .expect("no error")
        .is_none());
    let grant = store
        .open_grant_key(id, &Secret::from(PASSWORD))
        .await
        .expect("opens")
        .expect("right password");
    let token = store.refresh_token(id, Some(&grant)).await.expect("token");
    assert_eq!(token.expect("some").expose(), TOKEN.as_bytes());

    // A rotated token is sealed the same way; without the key it cannot be stored.
    assert!(matches!(
        store
            .replace_refresh_token(id, &Secret::from(ROTATED), None)
            .await,
        Err(StoreError::Sealed(_))
    ));
    store
        .replace_refresh_token(id, &Secret::from(ROTATED), Some(&grant))
        .await
        .expect("rotated");
    assert!(!contains(&database_bytes(dir.path()), ROTATED));
    let token = store.refresh_token(id, Some(&grant)).await.expect("token");
    assert_eq!(token.expect("some").expose(), ROTATED.as_bytes());
    // `import-token` cannot seal under passwords it does not have.
    assert!(matches!(
        store
            .import_refresh_token("alice", &Secret::from(TOKEN))
            .await,
        Err(StoreError::Invalid(_))
    ));
}

#[tokio::test]
async fn new_passwords_of_a_sealed_account_need_a_current_one() {
    let (_dir, _, store) = fresh();
    let id = store.add_account(sealed("alice")).await.expect("add").id;
    let erp = Secret::from("erp-password-2");
    for current in [None, Some(Secret::from("not-a-password"))] {
        assert!(matches!(
            store
                .add_password("alice", "erp", &erp, current.as_ref())
                .await,
            Err(StoreError::Invalid(_))
        ));
    }
    store
        .add_password("alice", "erp", &erp, Some(&Secret::from(PASSWORD)))
        .await
        .expect("added with a current password");
    assert!(store.open_grant_key(id, &erp).await.expect("ok").is_some());
    assert!(store
        .verify_login("alice", &erp)
        .await
        .expect("ok")
        .is_some());

    // Revoking a password removes its slot; the other still opens the grant.
    assert!(store.revoke_password("alice", "default").await.expect("ok"));
    assert!(store
        .open_grant_key(id, &Secret::from(PASSWORD))
        .await
        .expect("ok")
        .is_none());
    let changed = Secret::from("new-default-3");
    store
        .set_password("alice", &changed, Some(&erp))
        .await
        .expect("default set again");
    assert!(store
        .open_grant_key(id, &changed)
        .await
        .expect("ok")
        .is_some());
    // An account that is not sealed needs no current password and has no slots.
    store.add_account(with_token("bob")).await.expect("add");
    store
        .add_password("bob", "erp", &erp, None)
        .await
        .expect("plain");
}

#[tokio::test]
async fn resealing_keeps_every_password_or_resets_them_all() {
    let (_dir, _, store) = fresh();
    let id = store.add_account(sealed("alice")).await.expect("add").id;
    let erp = Secret::from("erp-password-2");
    store
        .add_password("alice", "erp", &erp, Some(&Secret::from(PASSWORD)))
        .await
        .expect("erp");
    store
        .set_status(id, AccountStatus::NeedsReconsent, Some("x"))
        .await
        .expect("dead");
    let fresh_token = Secret::from("0.AX-after-consent");
    assert!(matches!(
        store
            .reseal_grant("alice", &fresh_token, &Secret::from("forgotten"), false)
            .await,
        Err(StoreError::Invalid(_))
    ));
    let removed = store
        .reseal_grant("alice", &fresh_token, &Secret::from(PASSWORD), false)
        .await
        .expect("resealed");
    assert!(removed.is_empty());
    assert_eq!(
        store
            .account("alice")
            .await
            .expect("ok")
            .expect("some")
            .status,
        AccountStatus::Active
    );
    let grant = store
        .open_grant_key(id, &erp)
        .await
        .expect("ok")
        .expect("erp opens");
    let token = store.refresh_token(id, Some(&grant)).await.expect("ok");
    assert_eq!(token.expect("some").expose(), fresh_token.expose());

    // Every password forgotten: a new grant key, and the password given is the only one.
    let reset = Secret::from("brand-new-pass");
    let removed = store
        .reseal_grant("alice", &Secret::from(ROTATED), &reset, true)
        .await
        .expect("reset");
    assert_eq!(removed, ["erp"]);
    assert!(store.open_grant_key(id, &erp).await.expect("ok").is_none());
    assert!(store
        .verify_login("alice", &Secret::from(PASSWORD))
        .await
        .expect("ok")
        .is_none());
    let grant = store
        .open_grant_key(id, &reset)
        .await
        .expect("ok")
        .expect("opens");
    let token = store.refresh_token(id, Some(&grant)).await.expect("ok");
    assert_eq!(token.expect("some").expose(), ROTATED.as_bytes());
    let names: Vec<_> = store
        .passwords("alice")
        .await
        .expect("ok")
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["default"]);
}

#[tokio::test]
async fn claims_of_a_failure_are_kept_within_a_bound() {
    let (_dir, _, store) = fresh();
    let alice = store.add_account(with_token("alice")).await.expect("add");
    let claims = r#"{"access_token":{"capolids":{"essential":true,"values":["p1"]}}}"#;
    let mut failure = crate::GrantFailure {
        at: unix_now() + 5,
        class: "interaction".into(),
        codes: vec![53003],
        reason: "AADSTS53003: blocked".into(),
        claims: Some(claims.into()),
    };
    store
        .record_grant_failure(alice.id, &failure)
        .await
        .expect("recorded");
    let shown = store.account("alice").await.expect("ok").expect("some");
    assert_eq!(shown.pending_claims(), Some(claims));
    failure.claims = Some("x".repeat(crate::MAX_CLAIMS + 1));
    store
        .record_grant_failure(alice.id, &failure)
        .await
        .expect("recorded");
    let shown = store.account("alice").await.expect("ok").expect("some");
    assert_eq!(
        shown.pending_claims(),
        None,
        "too long to be useful: not kept"
    );
}
