//! Random identifiers the fake hands out: opaque tokens and GUID-shaped ids.

use rand::distributions::{Alphanumeric, Distribution, Uniform};
use rand::Rng;

const URL_SAFE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// `len` random characters from the URL-safe base64 alphabet: safe in a form body, a JSON
/// string and an XOAUTH2 blob without escaping, like Entra's opaque tokens.
pub(crate) fn url_safe(len: usize) -> String {
    let pick = Uniform::from(0..URL_SAFE.len());
    let mut rng = rand::thread_rng();
    (0..len)
        .map(|_| char::from(URL_SAFE[pick.sample(&mut rng)]))
        .collect()
}

/// A random version-4 UUID in its hyphenated lower-case form (trace and correlation ids).
pub(crate) fn uuid() -> String {
    let mut b: [u8; 16] = rand::thread_rng().gen();
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[0..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..32]
    )
}

/// A short random upper-case alphanumeric string, for fake backend host names.
pub(crate) fn alnum_upper(len: usize) -> String {
    Alphanumeric
        .sample_iter(rand::thread_rng())
        .take(len)
        .map(|c| char::from(c).to_ascii_uppercase())
        .collect()
}

/// Whether `s` looks like a GUID (`8-4-4-4-12` hex digits), as Entra tenant ids do.
pub(crate) fn is_guid(s: &str) -> bool {
    let groups: Vec<&str> = s.split('-').collect();
    groups.len() == 5
        && groups
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(g, n)| g.len() == n && g.bytes().all(|b| b.is_ascii_hexdigit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuids_are_guid_shaped_and_distinct() {
        let a = uuid();
        assert!(is_guid(&a), "{a}");
        assert_ne!(a, uuid());
        assert!(!is_guid("contoso.onmicrosoft.com"));
    }

    #[test]
    fn url_safe_tokens_use_the_alphabet() {
        let t = url_safe(500);
        assert_eq!(t.len(), 500);
        assert!(t.bytes().all(|b| URL_SAFE.contains(&b)));
    }
}
