//! Reading secrets from standard input or files, never from the command line.

use std::io::Read;
use std::path::Path;

use anyhow::Context;
use oxbridge_wire::Secret;

/// Reads a secret from stdin, dropping one trailing line break.
pub fn from_stdin() -> anyhow::Result<Secret> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    finish(bytes)
}

/// Reads a secret from a file, dropping one trailing line break.
pub fn from_file(path: &Path) -> anyhow::Result<Secret> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    finish(bytes)
}

/// Reads two secrets from stdin, one per line (the first line break separates them).
pub fn two_from_stdin() -> anyhow::Result<(Secret, Secret)> {
    let mut bytes = Vec::new();
    std::io::stdin()
        .read_to_end(&mut bytes)
        .context("cannot read standard input")?;
    let at = bytes
        .iter()
        .position(|b| *b == b'\n')
        .context("standard input must hold two lines: the current password, then the new one")?;
    let second = bytes.split_off(at + 1);
    Ok((finish(bytes)?, finish(second)?))
}

fn finish(mut bytes: Vec<u8>) -> anyhow::Result<Secret> {
    if bytes.ends_with(b"\n") {
        bytes.pop();
        if bytes.ends_with(b"\r") {
            bytes.pop();
        }
    }
    let secret = Secret::new(bytes);
    anyhow::ensure!(!secret.is_empty(), "the secret is empty");
    Ok(secret)
}
