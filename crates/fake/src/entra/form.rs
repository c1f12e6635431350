//! Decoding what a token request carries: an `application/x-www-form-urlencoded` body and
//! optional HTTP Basic client credentials (RFC 6749 §2.3.1, components form-encoded).

use std::collections::HashMap;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;

/// Decodes `a=1&b=x%20y+z`; later duplicates win, undecodable pairs are skipped (Entra
/// would then report the parameter as missing).
pub(crate) fn parse_form(body: &[u8]) -> HashMap<String, String> {
    body.split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .filter_map(|pair| {
            let mut kv = pair.splitn(2, |&b| b == b'=');
            let k = percent_decode(kv.next()?)?;
            let v = percent_decode(kv.next().unwrap_or_default())?;
            Some((k, v))
        })
        .collect()
}

/// Form decoding of one component: `+` is a space, `%XX` a byte; the result must be UTF-8.
pub(crate) fn percent_decode(input: &[u8]) -> Option<String> {
    let mut out = Vec::with_capacity(input.len());
    let mut i = 0;
    while i < input.len() {
        match input[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = input.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

/// `(client_id, client_secret)` from an `Authorization: Basic …` header value.
pub(crate) fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, rest) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("Basic") {
        return None;
    }
    let decoded = STANDARD.decode(rest.trim()).ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (id, secret) = text.split_once(':')?;
    Some((
        percent_decode(id.as_bytes())?,
        percent_decode(secret.as_bytes())?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_forms() {
        let f = parse_form(b"grant_type=refresh_token&scope=https%3A%2F%2Foutlook.office.com%2F.default+offline_access&empty=&x");
        assert_eq!(f["grant_type"], "refresh_token");
        assert_eq!(
            f["scope"],
            "https://outlook.office.com/.default offline_access"
        );
        assert_eq!(f["empty"], "");
        assert_eq!(f["x"], "");
        assert!(parse_form(b"bad=%zz").is_empty());
        assert!(parse_form(b"bad=%4").is_empty());
    }

    #[test]
    fn decodes_basic_auth() {
        let h = format!("Basic {}", STANDARD.encode("my%20app:s3cr%3At"));
        assert_eq!(
            basic_credentials(&h),
            Some(("my app".to_string(), "s3cr:t".to_string()))
        );
        assert_eq!(basic_credentials("Bearer abc"), None);
        assert_eq!(basic_credentials("Basic !!"), None);
    }
}
