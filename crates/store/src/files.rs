//! Creating files and directories that only the service user can read.
//!
//! The master key and the database are created with restrictive modes from the start (never
//! created loose and tightened later), so there is no window in which another user can open
//! them.

use std::fs;
use std::io::{self, Write};
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Creates `dir` (and missing parents) with mode 0700 if it does not exist yet.
pub(crate) fn create_private_dir(dir: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(0o700);
    builder.create(dir)
}

fn private_options() -> fs::OpenOptions {
    let mut options = fs::OpenOptions::new();
    options.write(true);
    #[cfg(unix)]
    options.mode(0o600);
    options
}

/// Creates an empty file with mode 0600 unless it already exists.
pub(crate) fn create_private_file_if_absent(path: &Path) -> io::Result<()> {
    match private_options().create_new(true).open(path) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(e),
    }
}

/// Writes `contents` to `path` with mode 0600 unless `path` exists, atomically: the bytes go
/// to a temporary file in the same directory, are synced, then hard-linked into place.
/// Linking (unlike rename) fails if another process won the race, so two processes starting
/// together never end up with different files. Returns whether this call created the file.
pub(crate) fn create_private_file_atomically(path: &Path, contents: &[u8]) -> io::Result<bool> {
    let dir = path.parent().unwrap_or_else(|| Path::new("."));
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temp = dir.join(format!(
        ".{file_name}.tmp-{}-{:016x}",
        std::process::id(),
        rand::random::<u64>()
    ));
    let result = (|| {
        let mut file = private_options().create_new(true).open(&temp)?;
        file.write_all(contents)?;
        file.sync_all()?;
        drop(file);
        match fs::hard_link(&temp, path) {
            Ok(()) => {
                sync_dir(dir);
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(e),
        }
    })();
    let _ = fs::remove_file(&temp);
    result
}

/// Best effort: makes a new directory entry durable; not every platform supports it.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = fs::File::open(dir) {
        let _ = handle.sync_all();
    }
}

/// The permission bits group and other have on `path` (`mode & 0o077`); 0 on non-Unix.
pub(crate) fn group_other_bits(path: &Path) -> io::Result<u32> {
    let metadata = fs::metadata(path)?;
    #[cfg(unix)]
    {
        Ok(metadata.permissions().mode() & 0o077)
    }
    #[cfg(not(unix))]
    {
        let _ = metadata;
        Ok(0)
    }
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    #[test]
    fn created_files_and_dirs_are_private() {
        let root = tempfile::tempdir().expect("tempdir");
        let dir = root.path().join("a/b");
        create_private_dir(&dir).expect("dir");
        assert_eq!(
            fs::metadata(&dir).expect("meta").permissions().mode() & 0o777,
            0o700
        );

        let file = dir.join("f");
        assert!(create_private_file_atomically(&file, b"one").expect("create"));
        assert!(!create_private_file_atomically(&file, b"two").expect("second"));
        assert_eq!(fs::read(&file).expect("read"), b"one");
        assert_eq!(group_other_bits(&file).expect("bits"), 0);
        let leftovers = fs::read_dir(&dir).expect("list").count();
        assert_eq!(leftovers, 1, "temporary files are removed");
    }
}
