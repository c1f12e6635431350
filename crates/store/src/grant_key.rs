//! Password-sealed grants: a per-account grant key, wrapped once per local password.
//!
//! With the default sealing, whoever holds the database *and* the master key can open every
//! refresh token. An account may opt in to more: its refresh token is sealed under a random
//! per-account [`GrantKey`] first (and then under the master key as usual, so it stays bound
//! to its row), and the grant key itself is stored only wrapped, once per named password,
//! under a key derived from that password with Argon2id: key slots, as LUKS has. The server
//! can then open the grant only while it holds one of the passwords, that is during a login.
//!
//! Each slot has its own random salt, apart from the verifier's: the verifier's Argon2 output
//! is stored, so it must never be the wrapping key. Opening a slot therefore costs one more
//! Argon2 run, which is paid only when a refresh is due, not at every login.
//!
//! The trade-off, by design: no background refresh and no relay use for such accounts, and a
//! forgotten set of passwords means a new sign-in (`oxbridge account consent`).

use std::fmt;
use std::time::Instant;

use argon2::Argon2;
use oxbridge_wire::Secret;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::key::MasterKey;
use crate::login_cache::{self, LoginCache};
use crate::password::Argon2Pool;
use crate::seal::{self, Purpose};

/// Length of a grant key and of the keys that wrap it.
const KEY_LEN: usize = 32;
/// Length of a slot's Argon2 salt.
const SALT_LEN: usize = 16;
/// Format of a key slot: `1 || salt || sealed grant key`, the key derived with Argon2id and
/// the argon2 crate's default parameters (m=19456 KiB, t=2, p=1), as the verifiers use.
const SLOT_VERSION: u8 = 1;

/// How an account's refresh token is sealed at rest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sealing {
    /// Under the server's master key (the default): the server can refresh at any time.
    #[default]
    MasterKey,
    /// Under a grant key only the account's passwords unwrap, and then the master key.
    Password,
}

impl Sealing {
    /// The name used in the database and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Sealing::MasterKey => "master-key",
            Sealing::Password => "password",
        }
    }

    pub(crate) fn parse(text: &str) -> Result<Sealing, StoreError> {
        match text {
            "master-key" => Ok(Sealing::MasterKey),
            "password" => Ok(Sealing::Password),
            other => Err(StoreError::Corrupt(format!("unknown sealing {other:?}"))),
        }
    }
}

/// The random key a password-sealed account's refresh token is sealed under. Zeroed on
/// drop; `Debug` prints `***`. Only a store hands one out, after a password opened it.
pub struct GrantKey(Zeroizing<[u8; KEY_LEN]>);

impl fmt::Debug for GrantKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("GrantKey(***)")
    }
}

impl GrantKey {
    pub(crate) fn generate() -> GrantKey {
        let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        GrantKey(bytes)
    }

    /// A copy to move into blocking work; both copies are zeroed on drop.
    pub(crate) fn duplicate(&self) -> GrantKey {
        GrantKey(Zeroizing::new(*self.0))
    }
}

/// One password of an account as the unlock needs it: verifier and key slot.
pub(crate) struct SlotRow<'a> {
    pub name: &'a str,
    pub hash: &'a str,
    pub key_slot: Option<&'a [u8]>,
}

/// The grant key of account `account_id` (login name `user`), opened with `password`: the
/// password is matched against the verifiers first (the login cache, else one Argon2 run for
/// all of them), then only the matching password's slot is opened (one more run). `None` if
/// the password is none of the account's.
pub(crate) async fn unlock(
    argon2: &Argon2Pool,
    logins: &LoginCache,
    user: &str,
    account_id: i64,
    rows: &[SlotRow<'_>],
    password: &Secret,
) -> Result<Option<GrantKey>, StoreError> {
    let verifiers: Vec<_> = rows
        .iter()
        .map(|row| login_cache::verifier_digest(row.hash))
        .collect();
    let tag = logins.tag(user, password);
    let index = match logins.hit(&tag, account_id, &verifiers, Instant::now()) {
        Some(index) => Some(index),
        None => {
            let hashes = rows.iter().map(|row| row.hash.to_owned()).collect();
            argon2.verify_any(password, hashes).await?
        }
    };
    let Some(row) = index.and_then(|i| rows.get(i)) else {
        return Ok(None);
    };
    let slot = row.key_slot.map(<[u8]>::to_vec).ok_or_else(|| {
        StoreError::Sealed(format!(
            "password {:?} has no key slot; add it again with `oxbridge account passwd`",
            row.name
        ))
    })?;
    let password = password.clone();
    argon2
        .run(move || open_slot(&slot, &password, account_id))
        .await?
}

/// [`make_slot`] on the Argon2 pool.
pub(crate) async fn new_slot(
    argon2: &Argon2Pool,
    key: &GrantKey,
    password: &Secret,
    account_id: i64,
) -> Result<Vec<u8>, StoreError> {
    let key = key.duplicate();
    let password = password.clone();
    argon2
        .run(move || make_slot(&key, &password, account_id))
        .await?
}

/// Argon2id of `password` with `salt`: the key that wraps the grant key in one slot.
fn derive(password: &Secret, salt: &[u8]) -> Result<Zeroizing<[u8; KEY_LEN]>, StoreError> {
    let mut kek = Zeroizing::new([0u8; KEY_LEN]);
    Argon2::default()
        .hash_password_into(password.expose(), salt, kek.as_mut())
        .map_err(|e| StoreError::Invalid(format!("cannot derive the password key: {e}")))?;
    Ok(kek)
}

/// A new key slot: `key` wrapped under a key derived from `password` with a fresh salt.
/// Blocking (one Argon2 run): call it on the store's Argon2 pool.
pub(crate) fn make_slot(
    key: &GrantKey,
    password: &Secret,
    account_id: i64,
) -> Result<Vec<u8>, StoreError> {
    let mut salt = [0u8; SALT_LEN];
    rand::rngs::OsRng.fill_bytes(&mut salt);
    let kek = derive(password, &salt)?;
    let wrapped = seal::seal_with(&kek, Purpose::GrantKey(account_id), key.0.as_ref())?;
    let mut slot = Vec::with_capacity(1 + SALT_LEN + wrapped.len());
    slot.push(SLOT_VERSION);
    slot.extend_from_slice(&salt);
    slot.extend_from_slice(&wrapped);
    Ok(slot)
}

/// Unwraps the grant key from `slot` with `password`; `None` if the password is not the
/// slot's. Blocking (one Argon2 run): call it on the store's Argon2 pool.
pub(crate) fn open_slot(
    slot: &[u8],
    password: &Secret,
    account_id: i64,
) -> Result<Option<GrantKey>, StoreError> {
    let (version, rest) = slot
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("key slot is empty".into()))?;
    if *version != SLOT_VERSION || rest.len() < SALT_LEN {
        return Err(StoreError::Corrupt(format!(
            "key slot version {version} or length not understood"
        )));
    }
    let (salt, wrapped) = rest.split_at(SALT_LEN);
    let kek = derive(password, salt)?;
    let Ok(opened) = seal::open_with(&kek, Purpose::GrantKey(account_id), wrapped) else {
        return Ok(None);
    };
    let bytes: [u8; KEY_LEN] = opened
        .as_slice()
        .try_into()
        .map_err(|_| StoreError::Corrupt("grant key has the wrong length".into()))?;
    Ok(Some(GrantKey(Zeroizing::new(bytes))))
}

/// Seals a refresh token for the `refresh_token` column: under the master key, and first
/// under the grant key if the account is password-sealed.
pub(crate) fn seal_refresh_token(
    master: &MasterKey,
    sealing: Sealing,
    key: Option<&GrantKey>,
    account_id: i64,
    token: &Secret,
) -> Result<Vec<u8>, StoreError> {
    match sealing {
        Sealing::MasterKey => seal::seal(master, Purpose::RefreshToken(account_id), token.expose()),
        Sealing::Password => {
            let key = key.ok_or_else(|| locked(account_id))?;
            let inner = Zeroizing::new(seal::seal_with(
                &key.0,
                Purpose::SealedRefreshToken(account_id),
                token.expose(),
            )?);
            seal::seal(master, Purpose::RefreshToken(account_id), &inner)
        }
    }
}

/// Opens what [`seal_refresh_token`] sealed. A password-sealed token without its grant key
/// is [`StoreError::Sealed`]; with the wrong one, [`StoreError::Corrupt`].
pub(crate) fn open_refresh_token(
    master: &MasterKey,
    sealing: Sealing,
    key: Option<&GrantKey>,
    account_id: i64,
    blob: &[u8],
) -> Result<Secret, StoreError> {
    let outer = seal::open(master, Purpose::RefreshToken(account_id), blob)?;
    match sealing {
        Sealing::MasterKey => Ok(Secret::new(outer.to_vec())),
        Sealing::Password => {
            let key = key.ok_or_else(|| locked(account_id))?;
            let inner = seal::open_with(&key.0, Purpose::SealedRefreshToken(account_id), &outer)
                .map_err(|_| {
                    StoreError::Corrupt("the grant key does not open this refresh token".into())
                })?;
            Ok(Secret::new(inner.to_vec()))
        }
    }
}

/// `import-token` cannot seal under passwords it does not have.
pub(crate) fn import_refused(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{name:?} is password-sealed: store a new grant with `oxbridge account consent {name}`, \
         which asks for one of its passwords"
    ))
}

pub(crate) fn needs_current(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "{name:?} is password-sealed: a new password needs one of its current passwords, which \
         opens the grant for it"
    ))
}

pub(crate) fn wrong_current(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "the current password given is none of {name:?}'s passwords"
    ))
}

pub(crate) fn no_slot_opens(name: &str) -> StoreError {
    StoreError::Invalid(format!(
        "the password given is none of {name:?}'s passwords; give one of them to keep them all, \
         or --reset-passwords to make it the only one"
    ))
}

fn locked(account_id: i64) -> StoreError {
    StoreError::Sealed(format!(
        "the grant of account id {account_id} is sealed under its passwords; it opens only \
         at a login"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_slot_opens_with_its_password_only() {
        let key = GrantKey::generate();
        let slot = make_slot(&key, &Secret::from("pw-one"), 7).expect("slot");
        let opened = open_slot(&slot, &Secret::from("pw-one"), 7)
            .expect("opens")
            .expect("right password");
        assert_eq!(opened.0.as_ref(), key.0.as_ref());
        assert!(open_slot(&slot, &Secret::from("pw-two"), 7)
            .expect("no error")
            .is_none());
        // Bound to the account: a slot copied to another row opens nothing.
        assert!(open_slot(&slot, &Secret::from("pw-one"), 8)
            .expect("no error")
            .is_none());
        assert!(open_slot(&[], &Secret::from("pw-one"), 7).is_err());
        assert_eq!(format!("{key:?}"), "GrantKey(***)");
    }

    #[test]
    fn a_sealed_token_needs_the_master_key_and_the_grant_key() {
        let master = MasterKey::generate();
        let key = GrantKey::generate();
        let token = Secret::from("0.AX-refresh-token");
        let blob =
            seal_refresh_token(&master, Sealing::Password, Some(&key), 3, &token).expect("sealed");
        assert!(!blob.windows(6).any(|w| w == b"0.AX-r"));
        let opened =
            open_refresh_token(&master, Sealing::Password, Some(&key), 3, &blob).expect("opens");
        assert_eq!(opened.expose(), token.expose());
        // The master key alone does not yield it, however the blob is read.
        assert!(matches!(
            open_refresh_token(&master, Sealing::Password, None, 3, &blob),
            Err(StoreError::Sealed(_))
        ));
        let outer_only = open_refresh_token(&master, Sealing::MasterKey, None, 3, &blob)
            .expect("outer layer opens");
        assert!(!outer_only
            .expose()
            .windows(token.expose().len())
            .any(|w| w == token.expose()));
        let other = GrantKey::generate();
        assert!(matches!(
            open_refresh_token(&master, Sealing::Password, Some(&other), 3, &blob),
            Err(StoreError::Corrupt(_))
        ));
        assert!(seal_refresh_token(&master, Sealing::Password, None, 3, &token).is_err());
    }
}
