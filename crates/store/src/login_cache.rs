//! A short-lived memory of successful password checks, so a device that logs in every few
//! seconds does not pay for Argon2 each time.
//!
//! Entries are keyed by HMAC-SHA256 of (user, password) under a random per-process key, so
//! the plaintext password is never kept and the keys are useless outside this process. Each
//! entry remembers the account id and a digest of the verifier it was checked against; a hit
//! only counts if the account's *current* verifier still has that digest. That makes a
//! password change or removal effective at once, even when done by another process (the CLI)
//! and even if it races with a check in flight. In-process changes also drop the entries
//! eagerly. The cache is bounded; when full, the entry closest to expiry is evicted.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use oxbridge_wire::Secret;
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// How long a successful check is trusted.
pub(crate) const DEFAULT_TTL: Duration = Duration::from_secs(60);
/// Upper bound on remembered logins.
pub(crate) const DEFAULT_CAPACITY: usize = 10_000;

/// Keyed digest of a (user, password) pair.
pub(crate) type LoginTag = [u8; 32];
/// Digest of a stored password verifier (PHC string).
pub(crate) type VerifierDigest = [u8; 32];

#[derive(Debug, Clone, Copy)]
struct Entry {
    account_id: i64,
    verifier: VerifierDigest,
    expires: Instant,
}

/// Successful logins remembered for a short time.
pub(crate) struct LoginCache {
    key: Zeroizing<[u8; 32]>,
    ttl: Duration,
    capacity: usize,
    entries: Mutex<HashMap<LoginTag, Entry>>,
}

impl std::fmt::Debug for LoginCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoginCache")
            .field("ttl", &self.ttl)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

impl LoginCache {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Self {
        let mut key = Zeroizing::new([0u8; 32]);
        rand::rngs::OsRng.fill_bytes(key.as_mut());
        Self {
            key,
            ttl,
            capacity: capacity.max(1),
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// HMAC-SHA256 (RFC 2104) of the length-prefixed user name followed by the password.
    pub(crate) fn tag(&self, user: &str, password: &Secret) -> LoginTag {
        const BLOCK: usize = 64;
        let mut inner_pad = Zeroizing::new([0x36u8; BLOCK]);
        let mut outer_pad = Zeroizing::new([0x5cu8; BLOCK]);
        for (i, byte) in self.key.iter().enumerate() {
            inner_pad[i] ^= byte;
            outer_pad[i] ^= byte;
        }
        let inner = Sha256::new()
            .chain_update(inner_pad.as_ref())
            .chain_update((user.len() as u64).to_be_bytes())
            .chain_update(user.as_bytes())
            .chain_update(password.expose())
            .finalize();
        Sha256::new()
            .chain_update(outer_pad.as_ref())
            .chain_update(inner)
            .finalize()
            .into()
    }

    /// Whether `tag` was verified for this account recently against one of the account's
    /// *current* verifiers; returns that verifier's index in `verifiers`.
    pub(crate) fn hit(
        &self,
        tag: &LoginTag,
        account_id: i64,
        verifiers: &[VerifierDigest],
        now: Instant,
    ) -> Option<usize> {
        let mut entries = self.lock();
        let entry = entries.get(tag).copied()?;
        let fresh = now < entry.expires;
        let index = verifiers
            .iter()
            .position(|v| bool::from(entry.verifier.ct_eq(v)));
        let valid = fresh && entry.account_id == account_id && index.is_some();
        if !valid {
            entries.remove(tag);
            return None;
        }
        index
    }

    /// Remembers a successful check.
    pub(crate) fn insert(
        &self,
        tag: LoginTag,
        account_id: i64,
        verifier: VerifierDigest,
        now: Instant,
    ) {
        let mut entries = self.lock();
        if entries.len() >= self.capacity && !entries.contains_key(&tag) {
            entries.retain(|_, e| now < e.expires);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, e)| e.expires)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(
            tag,
            Entry {
                account_id,
                verifier,
                expires: now + self.ttl,
            },
        );
    }

    /// Drops every entry of one account (password changed, account removed).
    pub(crate) fn forget_account(&self, account_id: i64) {
        self.lock().retain(|_, e| e.account_id != account_id);
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<LoginTag, Entry>> {
        // A panic while holding this lock cannot leave the map inconsistent in a way that
        // matters: at worst an entry is missing and Argon2 runs again.
        self.entries
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Digest of a stored verifier, so the cache can tell whether it changed.
pub(crate) fn verifier_digest(phc: &str) -> VerifierDigest {
    Sha256::digest(phc.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tag_depends_on_user_password_and_process_key() {
        let cache = LoginCache::new(DEFAULT_TTL, 10);
        let pw = Secret::from("pw");
        assert_eq!(cache.tag("alice", &pw), cache.tag("alice", &pw));
        assert_ne!(
            cache.tag("alice", &pw),
            cache.tag("alice", &Secret::from("pw2"))
        );
        // The length prefix keeps ("ab", "c") apart from ("a", "bc").
        assert_ne!(
            cache.tag("ab", &Secret::from("c")),
            cache.tag("a", &Secret::from("bc"))
        );
        let other = LoginCache::new(DEFAULT_TTL, 10);
        assert_ne!(cache.tag("alice", &pw), other.tag("alice", &pw));
    }

    #[test]
    fn hit_requires_fresh_entry_same_account_and_verifier() {
        let cache = LoginCache::new(Duration::from_secs(60), 10);
        let now = Instant::now();
        let tag = cache.tag("alice", &Secret::from("pw"));
        let v = verifier_digest("$argon2id$one");
        cache.insert(tag, 1, v, now);
        let other = verifier_digest("$argon2id$other");
        assert_eq!(
            cache.hit(&tag, 1, &[other, v], now + Duration::from_secs(59)),
            Some(1)
        );
        assert!(cache
            .hit(&tag, 1, &[verifier_digest("$argon2id$two")], now)
            .is_none());
        cache.insert(tag, 1, v, now);
        assert!(cache.hit(&tag, 2, &[v], now).is_none());
        cache.insert(tag, 1, v, now);
        assert!(cache
            .hit(&tag, 1, &[v], now + Duration::from_secs(60))
            .is_none());
        assert_eq!(cache.len(), 0, "stale entries are dropped on sight");
    }

    #[test]
    fn forget_account_drops_its_entries() {
        let cache = LoginCache::new(DEFAULT_TTL, 10);
        let now = Instant::now();
        let v = verifier_digest("x");
        let a = cache.tag("a", &Secret::from("1"));
        let b = cache.tag("b", &Secret::from("1"));
        cache.insert(a, 1, v, now);
        cache.insert(b, 2, v, now);
        cache.forget_account(1);
        assert!(cache.hit(&a, 1, &[v], now).is_none());
        assert!(cache.hit(&b, 2, &[v], now).is_some());
    }

    #[test]
    fn bounded_in_size() {
        let cache = LoginCache::new(DEFAULT_TTL, 3);
        let now = Instant::now();
        let v = verifier_digest("x");
        for i in 0..10u64 {
            let tag = cache.tag(&format!("user{i}"), &Secret::from("pw"));
            cache.insert(tag, i as i64, v, now + Duration::from_millis(i));
        }
        assert_eq!(cache.len(), 3);
        let newest = cache.tag("user9", &Secret::from("pw"));
        assert!(cache
            .hit(&newest, 9, &[v], now + Duration::from_millis(10))
            .is_some());
        let oldest = cache.tag("user0", &Secret::from("pw"));
        assert!(cache
            .hit(&oldest, 0, &[v], now + Duration::from_millis(10))
            .is_none());
    }
}
