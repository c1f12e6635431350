//! The server master key that seals refresh tokens at rest.

use std::fmt;
use std::fs;
use std::path::Path;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use oxbridge_wire::Secret;
use rand::RngCore;
use zeroize::Zeroizing;

use crate::error::StoreError;
use crate::files;

/// Length of the master key in bytes (an XChaCha20-Poly1305 key).
pub const MASTER_KEY_LEN: usize = 32;

/// File name of the master key inside the data directory.
pub const MASTER_KEY_FILE: &str = "master.key";

/// 32 secret bytes that seal every refresh token in the store.
///
/// Kept apart from the database (its own file, mode 0600) so that a copied database alone
/// yields no usable token. Zeroed on drop; `Debug` prints `***`.
pub struct MasterKey(Zeroizing<[u8; MASTER_KEY_LEN]>);

impl MasterKey {
    /// A fresh random key from the operating system's CSPRNG.
    pub fn generate() -> MasterKey {
        let mut bytes = Zeroizing::new([0u8; MASTER_KEY_LEN]);
        rand::rngs::OsRng.fill_bytes(bytes.as_mut());
        MasterKey(bytes)
    }

    /// Parses standard base64 of exactly 32 bytes; surrounding whitespace is ignored, so a key
    /// from a file or an environment variable with a trailing newline works.
    pub fn from_base64(text: &str) -> Result<MasterKey, StoreError> {
        let decoded = Zeroizing::new(
            STANDARD
                .decode(text.trim())
                .map_err(|_| StoreError::Key("master key is not valid base64".into()))?,
        );
        let bytes: [u8; MASTER_KEY_LEN] = decoded.as_slice().try_into().map_err(|_| {
            StoreError::Key(format!(
                "master key must be {MASTER_KEY_LEN} bytes, found {}",
                decoded.len()
            ))
        })?;
        Ok(MasterKey(Zeroizing::new(bytes)))
    }

    /// The key as base64, for writing it to a file or showing it once to an operator.
    pub fn to_base64(&self) -> Secret {
        Secret::from(STANDARD.encode(self.0.as_ref()))
    }

    /// Reads a key file holding base64 of 32 bytes. Refuses a file that group or other may
    /// read or write, because the key is the only thing protecting the tokens in the database.
    pub fn load(path: &Path) -> Result<MasterKey, StoreError> {
        let loose = files::group_other_bits(path).map_err(|e| {
            StoreError::Key(format!("cannot read master key {}: {e}", path.display()))
        })?;
        if loose != 0 {
            return Err(StoreError::Key(format!(
                "master key {} is accessible by group or other users (mode bits {loose:03o}); \
                 run `chmod 600 {}`",
                path.display(),
                path.display()
            )));
        }
        let text = Zeroizing::new(fs::read_to_string(path).map_err(|e| {
            StoreError::Key(format!("cannot read master key {}: {e}", path.display()))
        })?);
        MasterKey::from_base64(&text)
            .map_err(|e| StoreError::Key(format!("{}: {e}", path.display())))
    }

    /// Loads `data_dir/master.key`, creating the directory (mode 0700) and a fresh key
    /// (mode 0600, written atomically) on first start.
    pub fn load_or_create(data_dir: &Path) -> Result<MasterKey, StoreError> {
        files::create_private_dir(data_dir).map_err(|e| {
            StoreError::Key(format!(
                "cannot create data directory {}: {e}",
                data_dir.display()
            ))
        })?;
        let path = data_dir.join(MASTER_KEY_FILE);
        if !path.exists() {
            let key = MasterKey::generate();
            let mut text = Zeroizing::new(key.to_base64().expose().to_vec());
            text.push(b'\n');
            let created = files::create_private_file_atomically(&path, &text).map_err(|e| {
                StoreError::Key(format!("cannot create master key {}: {e}", path.display()))
            })?;
            if created {
                tracing::info!(path = %path.display(), "created a new master key");
                return Ok(key);
            }
        }
        MasterKey::load(&path)
    }

    pub(crate) fn bytes(&self) -> &[u8; MASTER_KEY_LEN] {
        &self.0
    }
}

impl fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trip_and_length_check() {
        let key = MasterKey::generate();
        let text = key.to_base64();
        let back = MasterKey::from_base64(text.expose_str().expect("ascii")).expect("parses");
        assert_eq!(back.bytes(), key.bytes());
        assert!(matches!(
            MasterKey::from_base64("c2hvcnQ="),
            Err(StoreError::Key(_))
        ));
        assert!(matches!(
            MasterKey::from_base64("not base64!"),
            Err(StoreError::Key(_))
        ));
    }

    #[test]
    fn debug_hides_the_key() {
        let key = MasterKey::generate();
        let debug = format!("{key:?}");
        assert_eq!(debug, "MasterKey(***)");
    }

    #[test]
    fn load_or_create_is_stable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        let first = MasterKey::load_or_create(&data).expect("create");
        let second = MasterKey::load_or_create(&data).expect("load");
        assert_eq!(first.bytes(), second.bytes());
    }

    #[test]
    fn missing_file_is_a_key_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        let err = MasterKey::load(&dir.path().join("absent")).expect_err("missing");
        assert!(matches!(err, StoreError::Key(_)));
    }

    #[cfg(unix)]
    #[test]
    fn created_with_mode_0600_and_loose_file_refused() {
        use std::os::unix::fs::PermissionsExt;

        let dir = tempfile::tempdir().expect("tempdir");
        let data = dir.path().join("data");
        MasterKey::load_or_create(&data).expect("create");
        let path = data.join(MASTER_KEY_FILE);
        let mode = fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(&data).expect("meta").permissions().mode();
        assert_eq!(dir_mode & 0o777, 0o700);

        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = MasterKey::load(&path).expect_err("loose key refused");
        assert!(
            matches!(&err, StoreError::Key(m) if m.contains("chmod 600")),
            "{err}"
        );
        assert!(MasterKey::load_or_create(&data).is_err());
    }
}
