//! The certificate shown to clients: the configured one, or one generated on first start
//! and kept in the data directory so clients that pinned it keep working after restarts.
//! Also when a certificate expires, for the expiry metric and its alert.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use oxbridge_wire::tls::{load_certs, load_key, server_config, TlsSetupError};

/// Loads the configured certificate, or generates and persists a self-signed one.
pub fn load_or_generate(
    cert: Option<&Path>,
    key: Option<&Path>,
    data_dir: &Path,
) -> Result<Arc<rustls::ServerConfig>, String> {
    let (cert, key) = match (cert, key) {
        (Some(c), Some(k)) => (c.to_path_buf(), k.to_path_buf()),
        _ => generated(data_dir)?,
    };
    let certs = load_certs(&cert).map_err(|e| e.to_string())?;
    let key = load_key(&key).map_err(|e| e.to_string())?;
    let config = server_config(certs, key).map_err(|e: TlsSetupError| e.to_string())?;
    // Lets an implicit-TLS session send its greeting in the handshake's first flight.
    let mut config = Arc::unwrap_or_clone(config);
    config.send_half_rtt_data = true;
    Ok(Arc::new(config))
}

fn generated(data_dir: &Path) -> Result<(PathBuf, PathBuf), String> {
    let dir = data_dir.join("tls");
    let cert = dir.join("cert.pem");
    let key = dir.join("key.pem");
    if cert.exists() && key.exists() {
        return Ok((cert, key));
    }
    std::fs::create_dir_all(&dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
    if let Ok(host) = std::fs::read_to_string("/etc/hostname") {
        let host = host.trim();
        if !host.is_empty() {
            names.push(host.to_string());
        }
    }
    let generated = rcgen::generate_simple_self_signed(names)
        .map_err(|e| format!("cannot generate a certificate: {e}"))?;
    write_private(&key, generated.key_pair.serialize_pem().as_bytes())?;
    std::fs::write(&cert, generated.cert.pem())
        .map_err(|e| format!("cannot write {}: {e}", cert.display()))?;
    tracing::info!(cert = %cert.display(), "generated a self-signed certificate for clients");
    Ok((cert, key))
}

/// Writes a file readable by its owner only.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), String> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    file.write_all(bytes)
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Where the certificate shown to clients is: the configured file, or the generated one.
pub fn path(configured: Option<&Path>, data_dir: &Path) -> PathBuf {
    configured.map_or_else(|| data_dir.join("tls").join("cert.pem"), Path::to_path_buf)
}

/// The not-after time (Unix seconds) of the first certificate in a PEM file.
pub fn expiry(cert: &Path) -> Result<i64, String> {
    let certs = load_certs(cert).map_err(|e| e.to_string())?;
    let first = certs
        .first()
        .ok_or_else(|| format!("{}: no certificate", cert.display()))?;
    not_after(first.as_ref())
        .ok_or_else(|| format!("{}: cannot read the validity period", cert.display()))
}

/// Reads `tbsCertificate.validity.notAfter` from a DER certificate (RFC 5280 §4.1). A few
/// dozen lines of DER walking, bounded by the input, instead of an X.509 crate for one
/// field.
pub fn not_after(der: &[u8]) -> Option<i64> {
    let (certificate, _) = der_element(der, 0x30)?;
    let (tbs, _) = der_element(certificate, 0x30)?;
    let mut rest = tbs;
    if rest.first() == Some(&0xa0) {
        rest = der_any(rest)?.2; // [0] version
    }
    for _ in 0..3 {
        rest = der_any(rest)?.2; // serialNumber, signature, issuer
    }
    let (validity, _) = der_element(rest, 0x30)?;
    let (_, _, after_not_before) = der_any(validity)?;
    let (tag, time, _) = der_any(after_not_before)?;
    let text = std::str::from_utf8(time).ok()?;
    let (year, rest) = match tag {
        // UTCTime: YYMMDDHHMMSSZ, years 1950–2049.
        0x17 if text.len() == 13 => {
            let yy: i64 = text.get(..2)?.parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &text[2..])
        }
        // GeneralizedTime: YYYYMMDDHHMMSSZ.
        0x18 if text.len() == 15 => (text.get(..4)?.parse().ok()?, &text[4..]),
        _ => return None,
    };
    if !rest.ends_with('Z') || !rest[..10].bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let field = |at: usize| rest[at..at + 2].parse::<i64>().ok();
    let (month, day) = (field(0)?, field(2)?);
    let (hour, minute, second) = (field(4)?, field(6)?, field(8)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || minute > 59 {
        return None;
    }
    Some(days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second)
}

/// One DER element with the expected tag: its contents and what follows it.
fn der_element(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    let (found, contents, rest) = der_any(input)?;
    (found == tag).then_some((contents, rest))
}

/// One DER element: tag, contents, and what follows. Lengths up to four octets.
fn der_any(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, input) = input.split_first()?;
    let (&first, mut input) = input.split_first()?;
    let length = if first < 0x80 {
        usize::from(first)
    } else {
        let octets = usize::from(first & 0x7f);
        if octets == 0 || octets > 4 || input.len() < octets {
            return None;
        }
        let mut length = 0usize;
        for &b in &input[..octets] {
            length = (length << 8) | usize::from(b);
        }
        input = &input[octets..];
        length
    };
    if input.len() < length {
        return None;
    }
    Some((tag, &input[..length], &input[length..]))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month_index = (month + 9) % 12;
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certificate_expiring(year: i32, month: u8, day: u8) -> Vec<u8> {
        let mut params = rcgen::CertificateParams::new(vec!["mail.contoso.com".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(year, month, day);
        let key = rcgen::KeyPair::generate().unwrap();
        params.self_signed(&key).unwrap().der().to_vec()
    }

    #[test]
    fn reads_not_after_in_utc_time_and_generalized_time() {
        // 2031-05-17T00:00:00Z and 2051-01-02T00:00:00Z (rcgen writes GeneralizedTime
        // from 2050 on, as RFC 5280 requires).
        assert_eq!(
            not_after(&certificate_expiring(2031, 5, 17)),
            Some(1_936_742_400)
        );
        assert_eq!(
            not_after(&certificate_expiring(2051, 1, 2)),
            Some(2_556_230_400)
        );
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn truncated_or_garbage_input_gives_none() {
        let der = certificate_expiring(2031, 5, 17);
        for cut in [0, 1, 2, 10, 40, 100] {
            assert_eq!(not_after(&der[..cut]), None, "cut at {cut}");
        }
        assert_eq!(not_after(b"\x30\x84\xff\xff\xff\xff"), None);
        assert_eq!(not_after(b"not a certificate"), None);
    }

    #[test]
    fn reads_the_expiry_of_a_pem_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut params = rcgen::CertificateParams::new(vec!["x".into()]).unwrap();
        params.not_after = rcgen::date_time_ymd(2030, 1, 1);
        let key = rcgen::KeyPair::generate().unwrap();
        let pem = params.self_signed(&key).unwrap().pem();
        let file = dir.path().join("cert.pem");
        std::fs::write(&file, pem).unwrap();
        assert_eq!(expiry(&file), Ok(1_893_456_000));
        assert!(expiry(&dir.path().join("missing.pem")).is_err());
        assert_eq!(path(None, dir.path()), dir.path().join("tls/cert.pem"));
        assert_eq!(path(Some(&file), dir.path()), file);
    }
}
