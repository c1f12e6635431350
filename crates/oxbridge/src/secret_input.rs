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
