//! Argon2id password verifiers, computed off the reactor behind a concurrency bound.
//!
//! Argon2 is deliberately slow (about 19 MiB and tens of milliseconds per check with the
//! crate's defaults, m=19456 KiB, t=2, p=1). Running it on the async reactor would stall every
//! connection, and running unboundedly on the blocking pool would let a login flood exhaust
//! memory; so each hash or check takes a permit from a semaphore sized to the CPU count and
//! runs on `spawn_blocking`. The permit moves into the blocking task, so a cancelled login
//! still holds it until the work is really done.
//!
//! An account may hold several named passwords (one per device). They all share the
//! account's salt and parameters, so a login computes Argon2 **once** and compares the
//! result with every stored output in constant time: a login costs the same whether the
//! account has one password or sixteen, and the same as a login for an unknown name, so
//! timing still reveals nothing. The price, equal outputs for equal passwords within one
//! account, tells an attacker holding the database nothing they could use.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Argon2, Params};
use oxbridge_wire::Secret;
use rand::RngCore;
use tokio::sync::Semaphore;

use crate::error::StoreError;

/// Bounded Argon2 work shared by every login of one store.
#[derive(Debug, Clone)]
pub(crate) struct Argon2Pool {
    permits: Arc<Semaphore>,
    /// A verifier of a random password, checked for unknown users so that "no such user" costs
    /// the same as "wrong password" and login timing does not reveal which names exist.
    dummy: Arc<OnceLock<String>>,
}

impl Argon2Pool {
    pub(crate) fn new() -> Self {
        let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            permits: Arc::new(Semaphore::new(cpus)),
            dummy: Arc::new(OnceLock::new()),
        }
    }

    /// A new Argon2id PHC string for `password`, with a random salt.
    pub(crate) async fn hash(&self, password: &Secret) -> Result<String, StoreError> {
        let password = password.clone();
        self.run(move || hash_now(&password)).await?
    }

    /// A verifier for another password of the same account: same salt and parameters as
    /// `sibling` (one of the account's existing verifiers), so that [`Argon2Pool::verify_any`]
    /// needs one Argon2 run for all of them. Without a sibling, a fresh salt.
    pub(crate) async fn hash_like(
        &self,
        password: &Secret,
        sibling: Option<String>,
    ) -> Result<String, StoreError> {
        let password = password.clone();
        self.run(move || match sibling {
            Some(phc) => hash_with_salt_of(&password, &phc),
            None => hash_now(&password),
        })
        .await?
    }

    /// Which of `phcs` (an account's verifiers) `password` matches, if any. One Argon2 run
    /// per distinct salt and parameter set (normally one), every output compared. With no
    /// verifiers at all, the dummy is checked instead so the cost stays the same.
    pub(crate) async fn verify_any(
        &self,
        password: &Secret,
        phcs: Vec<String>,
    ) -> Result<Option<usize>, StoreError> {
        if phcs.is_empty() {
            return self.verify(password, None).await.map(|_| None);
        }
        let password = password.clone();
        self.run(move || match_any(&password, &phcs)).await?
    }

    /// Checks `password` against `phc`, or against the dummy verifier when the user is unknown
    /// (`phc` is `None`; the answer is then always false).
    pub(crate) async fn verify(
        &self,
        password: &Secret,
        phc: Option<String>,
    ) -> Result<bool, StoreError> {
        let password = password.clone();
        let dummy = Arc::clone(&self.dummy);
        self.run(move || match phc {
            Some(phc) => verify_now(&password, &phc),
            None => {
                let dummy = match dummy.get() {
                    Some(d) => d.clone(),
                    None => {
                        let made = hash_now(&Secret::new(random_bytes().to_vec()))?;
                        dummy.get_or_init(|| made).clone()
                    }
                };
                verify_now(&password, &dummy).map(|_| false)
            }
        })
        .await?
    }

    /// Runs blocking Argon2 work (verifiers, key slots of password-sealed grants) on the
    /// blocking pool, under this pool's bound.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, StoreError> {
        let permit = Arc::clone(&self.permits)
            .acquire_owned()
            .await
            .map_err(|e| StoreError::unavailable("password check", e))?;
        tokio::task::spawn_blocking(move || {
            let result = work();
            drop(permit);
            result
        })
        .await
        .map_err(|e| StoreError::unavailable("password check", e))
    }
}

fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    bytes
}

fn hash_now(password: &Secret) -> Result<String, StoreError> {
    let salt = SaltString::encode_b64(&random_bytes())
        .map_err(|e| StoreError::Invalid(format!("password salt: {e}")))?;
    Argon2::default()
        .hash_password(password.expose(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash password: {e}")))
}

/// Hashes `password` with the salt, algorithm, version and parameters of `sibling`.
fn hash_with_salt_of(password: &Secret, sibling: &str) -> Result<String, StoreError> {
    let parsed = PasswordHash::new(sibling)
        .map_err(|e| StoreError::Corrupt(format!("stored password verifier: {e}")))?;
    let salt = parsed
        .salt
        .ok_or_else(|| StoreError::Corrupt("stored password verifier has no salt".into()))?;
    let params = Params::try_from(&parsed)
        .map_err(|e| StoreError::Corrupt(format!("stored password verifier: {e}")))?;
    Argon2::default()
        .hash_password_customized(
            password.expose(),
            Some(parsed.algorithm),
            parsed.version,
            params,
            salt,
        )
        .map(|hash| hash.to_string())
        .map_err(|e| StoreError::Invalid(format!("cannot hash password: {e}")))
}

/// The index of the first verifier `password` matches. Verifiers are grouped by everything
/// but their output; each group costs one Argon2 run, and every output is compared (no early
/// exit) so the time does not depend on which one matched.
fn match_any(password: &Secret, phcs: &[String]) -> Result<Option<usize>, StoreError> {
    let corrupt = |e: argon2::password_hash::Error| {
        StoreError::Corrupt(format!("stored password verifier: {e}"))
    };
    let parsed = phcs
        .iter()
        .map(|phc| PasswordHash::new(phc).map_err(corrupt))
        .collect::<Result<Vec<_>, _>>()?;
    let mut computed: Vec<(String, Option<argon2::password_hash::Output>)> = Vec::new();
    let mut found = None;
    for (index, hash) in parsed.iter().enumerate() {
        let group = group_key(hash);
        let output = match computed.iter().find(|(key, _)| *key == group) {
            Some((_, output)) => *output,
            None => {
                let salt = hash
                    .salt
                    .ok_or_else(|| StoreError::Corrupt("verifier without salt".into()))?;
                let params = Params::try_from(hash).map_err(corrupt)?;
                let output = Argon2::default()
                    .hash_password_customized(
                        password.expose(),
                        Some(hash.algorithm),
                        hash.version,
                        params,
                        salt,
                    )
                    .map_err(corrupt)?
                    .hash;
                computed.push((group, output));
                output
            }
        };
        // `Output`'s equality is constant-time.
        if output.is_some() && output == hash.hash && found.is_none() {
            found = Some(index);
        }
    }
    Ok(found)
}

/// Everything of a PHC string except its output: verifiers with equal keys share one run.
fn group_key(hash: &PasswordHash<'_>) -> String {
    format!(
        "{}${:?}${}${}",
        hash.algorithm,
        hash.version,
        hash.params,
        hash.salt.map(|s| s.to_string()).unwrap_or_default()
    )
}

fn verify_now(password: &Secret, phc: &str) -> Result<bool, StoreError> {
    let parsed = PasswordHash::new(phc)
        .map_err(|e| StoreError::Corrupt(format!("stored password verifier: {e}")))?;
    match Argon2::default().verify_password(password.expose(), &parsed) {
        Ok(()) => Ok(true),
        Err(argon2::password_hash::Error::Password) => Ok(false),
        Err(e) => Err(StoreError::Corrupt(format!(
            "stored password verifier: {e}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_is_argon2id_and_verifies() {
        let pool = Argon2Pool::new();
        let phc = pool.hash(&Secret::from("s3cret")).await.expect("hash");
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(!phc.contains("s3cret"));
        assert!(pool
            .verify(&Secret::from("s3cret"), Some(phc.clone()))
            .await
            .expect("ok"));
        assert!(!pool
            .verify(&Secret::from("other"), Some(phc))
            .await
            .expect("ok"));
    }

    #[tokio::test]
    async fn unknown_user_never_verifies() {
        let pool = Argon2Pool::new();
        assert!(!pool
            .verify(&Secret::from("anything"), None)
            .await
            .expect("ok"));
        assert!(!pool
            .verify(&Secret::from("anything"), None)
            .await
            .expect("ok"));
    }

    #[tokio::test]
    async fn sibling_passwords_share_salt_and_match_by_index() {
        let pool = Argon2Pool::new();
        let first = pool.hash(&Secret::from("one")).await.expect("hash");
        let second = pool
            .hash_like(&Secret::from("two"), Some(first.clone()))
            .await
            .expect("hash");
        let salt = |phc: &str| phc.rsplit('$').nth(1).map(str::to_owned);
        assert_eq!(salt(&first), salt(&second));
        assert_ne!(first, second);
        let both = vec![first.clone(), second.clone()];
        assert_eq!(
            pool.verify_any(&Secret::from("one"), both.clone())
                .await
                .expect("ok"),
            Some(0)
        );
        assert_eq!(
            pool.verify_any(&Secret::from("two"), both.clone())
                .await
                .expect("ok"),
            Some(1)
        );
        assert_eq!(
            pool.verify_any(&Secret::from("three"), both)
                .await
                .expect("ok"),
            None
        );
        // Verifiers with different salts still work (two runs).
        let other = pool.hash(&Secret::from("four")).await.expect("hash");
        assert_eq!(
            pool.verify_any(&Secret::from("four"), vec![first, other])
                .await
                .expect("ok"),
            Some(1)
        );
        assert_eq!(
            pool.verify_any(&Secret::from("x"), Vec::new())
                .await
                .expect("ok"),
            None
        );
    }

    #[tokio::test]
    async fn garbage_verifier_is_corrupt() {
        let pool = Argon2Pool::new();
        let err = pool
            .verify(&Secret::from("x"), Some("nonsense".into()))
            .await;
        assert!(matches!(err, Err(StoreError::Corrupt(_))));
    }
}
