//! Argon2id password verifiers, computed off the reactor behind a concurrency bound.
//!
//! Argon2 is deliberately slow (about 19 MiB and tens of milliseconds per check with the
//! crate's defaults, m=19456 KiB, t=2, p=1). Running it on the async reactor would stall every
//! connection, and running unboundedly on the blocking pool would let a login flood exhaust
//! memory; so each hash or check takes a permit from a semaphore sized to the CPU count and
//! runs on `spawn_blocking`. The permit moves into the blocking task, so a cancelled login
//! still holds it until the work is really done.

use std::sync::{Arc, OnceLock};

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
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

    async fn run<T: Send + 'static>(
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
    async fn garbage_verifier_is_corrupt() {
        let pool = Argon2Pool::new();
        let err = pool
            .verify(&Secret::from("x"), Some("nonsense".into()))
            .await;
        assert!(matches!(err, Err(StoreError::Corrupt(_))));
    }
}
