//! PgStore against a real throwaway PostgreSQL (tests/pg/start.sh); skipped loudly without
//! one, failed under `OXBRIDGE_REQUIRE_PG=1`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use oxbridge_wire::{Protocol, Secret};

use super::*;

struct Cluster {
    dir: String,
    url: String,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let stop = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pg/stop.sh");
        let _ = Command::new("bash").arg(stop).arg(&self.dir).output();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cluster(test: &str) -> Option<Cluster> {
    let start = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/pg/start.sh");
    let out = Command::new("bash").arg(start).output().expect("bash");
    if out.status.code() == Some(3) {
        assert!(
            std::env::var_os("OXBRIDGE_REQUIRE_PG").is_none(),
            "PostgreSQL is not installed and OXBRIDGE_REQUIRE_PG is set"
        );
        eprintln!("\n*** SKIPPED {test}: PostgreSQL is not installed ***\n");
        return None;
    }
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let value = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(&format!("{key}=")))
            .expect("printed")
            .to_owned()
    };
    Some(Cluster {
        url: value("OXBRIDGE_TEST_PG_URL"),
        dir: value("OXBRIDGE_TEST_PG_DIR"),
    })
}

fn same_key(key: &MasterKey) -> MasterKey {
    MasterKey::from_base64(key.to_base64().expose_str().unwrap()).unwrap()
}

fn delegated(name: &str) -> NewAccount {
    NewAccount {
        name: name.into(),
        mailbox: format!("{name}@contoso.com"),
        app: "contoso".into(),
        protocols: vec![Protocol::Imap],
        grant: NewGrant::RefreshToken(Secret::from("rt-1")),
        password: Secret::from("pw"),
        sealing: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn store_contract_refresh_lock_and_shared_tokens() {
    let Some(pg) = cluster("pg::store_contract_refresh_lock_and_shared_tokens") else {
        return;
    };
    let key = MasterKey::generate();
    let store = PgStore::open(&pg.url, same_key(&key), &PgSettings::default()).unwrap();
    // A second replica on the same database, and a wrong key refused at open.
    let other = PgStore::open(&pg.url, same_key(&key), &PgSettings::default()).unwrap();
    assert!(matches!(
        PgStore::open(&pg.url, MasterKey::generate(), &PgSettings::default()),
        Err(StoreError::Corrupt(_))
    ));

    let account = store.add_account(delegated("alex")).await.unwrap();
    assert!(matches!(
        other.add_account(delegated("alex")).await,
        Err(StoreError::AlreadyExists(_))
    ));
    assert!(other
        .verify_login("alex", &Secret::from("pw"))
        .await
        .unwrap()
        .is_some());
    assert!(other
        .verify_login("alex", &Secret::from("nope"))
        .await
        .unwrap()
        .is_none());
    let rt = other
        .refresh_token(account.id, None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rt.expose(), b"rt-1");

    // Replica A takes the lock; B waits until A commits, then sees A's token and the
    // rotated refresh token.
    let mut lock = store.lock_refresh(account.id).await.unwrap();
    assert!(lock.shared_token().is_none());
    assert_eq!(
        lock.refresh_token(None).await.unwrap().unwrap().expose(),
        b"rt-1"
    );
    let waiter = {
        let other = other.clone();
        tokio::spawn(async move {
            let mut lock = other.lock_refresh(account.id).await.unwrap();
            let shared = lock.shared_token();
            let rt = lock.refresh_token(None).await.unwrap();
            (shared, rt)
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !waiter.is_finished(),
        "the second replica waits for the lock"
    );
    let version = lock
        .commit(
            Some(&Secret::from("rt-2")),
            None,
            &Secret::from("at-1"),
            unix_now() + 3600,
        )
        .await
        .unwrap();
    let (shared, rt) = waiter.await.unwrap();
    let shared = shared.expect("A's token is visible under the lock");
    assert_eq!(shared.secret.expose(), b"at-1");
    assert_eq!(shared.version, version);
    assert_eq!(rt.unwrap().expose(), b"rt-2");
    assert_eq!(
        other.grant_version(account.id).await.unwrap(),
        Some(version)
    );

    // A dropped lock changes nothing; a grant change clears the shared token.
    drop(store.lock_refresh(account.id).await.unwrap());
    assert_eq!(
        store
            .load_shared_token(account.id)
            .await
            .unwrap()
            .unwrap()
            .version,
        version
    );
    store
        .import_refresh_token("alex", &Secret::from("rt-3"))
        .await
        .unwrap();
    assert!(store.load_shared_token(account.id).await.unwrap().is_none());
    assert!(store.grant_version(account.id).await.unwrap() > Some(version));
    assert!(store.check_health().await.is_ok());
}

#[tokio::test(flavor = "multi_thread")]
async fn password_sealed_grants_open_only_with_a_password_under_the_refresh_lock() {
    let Some(pg) = cluster("pg::password_sealed_grants") else {
        return;
    };
    let key = MasterKey::generate();
    let store = PgStore::open(&pg.url, same_key(&key), &PgSettings::default()).unwrap();
    let account = store
        .add_account(NewAccount {
            sealing: Sealing::Password,
            ..delegated("sam")
        })
        .await
        .unwrap();
    let id = account.id;
    assert!(account.password_sealed());
    assert!(matches!(
        store.refresh_token(id, None).await,
        Err(StoreError::Sealed(_))
    ));
    assert!(store
        .open_grant_key(id, &Secret::from("nope"))
        .await
        .unwrap()
        .is_none());
    let grant = store
        .open_grant_key(id, &Secret::from("pw"))
        .await
        .unwrap()
        .unwrap();

    let mut lock = store.lock_refresh(id).await.unwrap();
    assert!(matches!(
        lock.refresh_token(None).await,
        Err(StoreError::Sealed(_))
    ));
    let rt = lock.refresh_token(Some(&grant)).await.unwrap().unwrap();
    assert_eq!(rt.expose(), b"rt-1");
    lock.commit(
        Some(&Secret::from("rt-2")),
        Some(&grant),
        &Secret::from("at-1"),
        unix_now() + 3600,
    )
    .await
    .unwrap();
    let rt = store
        .refresh_token(id, Some(&grant))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rt.expose(), b"rt-2");

    // A second password gets its own slot; a reset replaces them all under a new key.
    let erp = Secret::from("erp-pw");
    store
        .add_password("sam", "erp", &erp, Some(&Secret::from("pw")))
        .await
        .unwrap();
    assert!(store.open_grant_key(id, &erp).await.unwrap().is_some());
    let removed = store
        .reseal_grant("sam", &Secret::from("rt-3"), &Secret::from("new"), true)
        .await
        .unwrap();
    assert_eq!(removed, ["erp"]);
    assert!(store.open_grant_key(id, &erp).await.unwrap().is_none());
    let grant = store
        .open_grant_key(id, &Secret::from("new"))
        .await
        .unwrap()
        .unwrap();
    let rt = store
        .refresh_token(id, Some(&grant))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rt.expose(), b"rt-3");
}
