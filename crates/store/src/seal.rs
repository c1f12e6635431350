//! Sealing secrets at rest with XChaCha20-Poly1305 under the master key (or, for
//! password-sealed grants, under a per-account grant key: see `grant_key`).
//!
//! A sealed blob is `version (1 byte) || nonce (24 bytes) || ciphertext+tag`. The associated
//! data names the purpose and the row, so a blob copied to another account (or used for
//! another purpose) fails to open instead of handing one account another's token. The random
//! 24-byte nonce is large enough that random choice never repeats in practice.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::key::MasterKey;

/// Format version of sealed blobs; a new algorithm or layout gets a new number.
const VERSION: u8 = 1;
const NONCE_LEN: usize = 24;

/// What a sealed value is for, and which row it belongs to.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// The refresh token of the account with this id.
    RefreshToken(i64),
    /// A known value that proves the master key matches the database.
    KeyCheck,
    /// The access token shared between replicas (PostgreSQL store) of this account id.
    AccessToken(i64),
    /// The inner layer of a password-sealed refresh token: sealed under the account's grant
    /// key, then sealed again under the master key as [`Purpose::RefreshToken`].
    SealedRefreshToken(i64),
    /// The grant key of this account, wrapped under a key derived from one of its passwords.
    GrantKey(i64),
}

impl Purpose {
    fn associated_data(self) -> Vec<u8> {
        match self {
            Purpose::RefreshToken(id) => format!("oxbridge/v1/refresh_token/{id}").into_bytes(),
            Purpose::KeyCheck => b"oxbridge/v1/key_check".to_vec(),
            Purpose::AccessToken(id) => format!("oxbridge/v1/access_token/{id}").into_bytes(),
            Purpose::SealedRefreshToken(id) => {
                format!("oxbridge/v1/sealed_refresh_token/{id}").into_bytes()
            }
            Purpose::GrantKey(id) => format!("oxbridge/v1/grant_key/{id}").into_bytes(),
        }
    }
}

/// Seals `plaintext` for `purpose`.
pub(crate) fn seal(
    key: &MasterKey,
    purpose: Purpose,
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    seal_with(key.bytes(), purpose, plaintext)
}

/// Opens a blob sealed for `purpose`; any mismatch (other key, other row, tampering) is
/// [`StoreError::Corrupt`], deliberately without saying which.
pub(crate) fn open(
    key: &MasterKey,
    purpose: Purpose,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    open_with(key.bytes(), purpose, blob)
}

/// [`seal`] under any 32-byte key (a grant key, or a key derived from a password).
pub(crate) fn seal_with(
    key: &[u8; 32],
    purpose: Purpose,
    plaintext: &[u8],
) -> Result<Vec<u8>, StoreError> {
    let cipher = XChaCha20Poly1305::new(key.into());
    let mut nonce = [0u8; NONCE_LEN];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = purpose.associated_data();
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad: &aad,
            },
        )
        .map_err(|_| StoreError::Corrupt("sealing failed".into()))?;
    let mut blob = Vec::with_capacity(1 + NONCE_LEN + ciphertext.len());
    blob.push(VERSION);
    blob.extend_from_slice(&nonce);
    blob.extend_from_slice(&ciphertext);
    Ok(blob)
}

/// [`open`] under any 32-byte key.
pub(crate) fn open_with(
    key: &[u8; 32],
    purpose: Purpose,
    blob: &[u8],
) -> Result<Zeroizing<Vec<u8>>, StoreError> {
    let (version, rest) = blob
        .split_first()
        .ok_or_else(|| StoreError::Corrupt("sealed value is empty".into()))?;
    if *version != VERSION {
        return Err(StoreError::Corrupt(format!(
            "unknown sealed value version {version}"
        )));
    }
    if rest.len() < NONCE_LEN {
        return Err(StoreError::Corrupt("sealed value is truncated".into()));
    }
    let (nonce, ciphertext) = rest.split_at(NONCE_LEN);
    let cipher = XChaCha20Poly1305::new(key.into());
    let aad = purpose.associated_data();
    cipher
        .decrypt(
            XNonce::from_slice(nonce),
            Payload {
                msg: ciphertext,
                aad: &aad,
            },
        )
        .map(Zeroizing::new)
        .map_err(|_| {
            StoreError::Corrupt(
                "sealed value does not open: wrong master key, or data moved or altered".into(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let key = MasterKey::generate();
        let blob = seal(&key, Purpose::RefreshToken(7), b"token").expect("seal");
        assert_eq!(blob[0], VERSION);
        assert!(!blob.windows(5).any(|w| w == b"token"));
        let opened = open(&key, Purpose::RefreshToken(7), &blob).expect("open");
        assert_eq!(opened.as_slice(), b"token");
    }

    #[test]
    fn bound_to_row_key_and_content() {
        let key = MasterKey::generate();
        let blob = seal(&key, Purpose::RefreshToken(7), b"token").expect("seal");
        let moved = open(&key, Purpose::RefreshToken(8), &blob);
        assert!(matches!(moved, Err(StoreError::Corrupt(_))));
        let other_key = open(&MasterKey::generate(), Purpose::RefreshToken(7), &blob);
        assert!(matches!(other_key, Err(StoreError::Corrupt(_))));
        let mut tampered = blob.clone();
        if let Some(last) = tampered.last_mut() {
            *last ^= 1;
        }
        assert!(open(&key, Purpose::RefreshToken(7), &tampered).is_err());
        assert!(open(&key, Purpose::RefreshToken(7), &blob[..10]).is_err());
        assert!(open(&key, Purpose::RefreshToken(7), &[]).is_err());
    }

    #[test]
    fn nonces_differ() {
        let key = MasterKey::generate();
        let a = seal(&key, Purpose::KeyCheck, b"x").expect("seal");
        let b = seal(&key, Purpose::KeyCheck, b"x").expect("seal");
        assert_ne!(a, b);
    }
}
