//! Calendar arithmetic for the few timestamps the fake prints or parses: Entra's
//! `2019-11-13 22:33:10Z`, IMAP's `17-Jul-1996 02:44:25 +0000` and IMAP search dates.
//! Hand-written (days-from-civil) so the crate needs no date library for three formats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// A UTC civil date and time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    secs_of_day: u64,
}

fn unix_secs(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_secs()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_secs()).unwrap_or(i64::MAX),
    }
}

/// Howard Hinnant's `civil_from_days`.
fn civil(t: SystemTime) -> Civil {
    let secs = unix_secs(t);
    let days = secs.div_euclid(86_400);
    let secs_of_day = secs.rem_euclid(86_400) as u64;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    Civil {
        year,
        month,
        day,
        secs_of_day,
    }
}

/// Howard Hinnant's `days_from_civil`.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = i64::from(month);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Entra's timestamp form: `2019-11-13 22:33:10Z`.
pub(crate) fn entra_timestamp(t: SystemTime) -> String {
    let c = civil(t);
    let s = c.secs_of_day;
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}Z",
        c.year,
        c.month,
        c.day,
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// IMAP `date-time` (RFC 3501), always in UTC: `17-Jul-1996 02:44:25 +0000`.
pub(crate) fn imap_datetime(t: SystemTime) -> String {
    let c = civil(t);
    let s = c.secs_of_day;
    format!(
        "{:02}-{}-{:04} {:02}:{:02}:{:02} +0000",
        c.day,
        MONTHS[(c.month - 1) as usize],
        c.year,
        s / 3600,
        s / 60 % 60,
        s % 60
    )
}

/// Days since the epoch of `t` (UTC), for IMAP's day-granular SEARCH dates.
pub(crate) fn day_number(t: SystemTime) -> i64 {
    unix_secs(t).div_euclid(86_400)
}

/// Parses an IMAP `date` (`1-Feb-2024`) into days since the epoch.
pub(crate) fn parse_imap_date(s: &str) -> Option<i64> {
    let mut parts = s.trim().split('-');
    let day: u32 = parts.next()?.trim().parse().ok()?;
    let month_name = parts.next()?;
    let month = MONTHS
        .iter()
        .position(|m| m.eq_ignore_ascii_case(month_name))? as u32
        + 1;
    let year: i64 = parts.next()?.parse().ok()?;
    if parts.next().is_some() || !(1..=31).contains(&day) {
        return None;
    }
    Some(days_from_civil(year, month, day))
}

/// Parses an IMAP `date-time` (`17-Jul-1996 02:44:25 -0700`) as used by APPEND.
pub(crate) fn parse_imap_datetime(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_ascii_whitespace();
    let days = parse_imap_date(parts.next()?)?;
    let mut hms = parts.next()?.split(':');
    let h: i64 = hms.next()?.parse().ok()?;
    let m: i64 = hms.next()?.parse().ok()?;
    let sec: i64 = hms.next()?.parse().ok()?;
    let zone = parts.next()?;
    if zone.len() != 5 || h > 23 || m > 59 || sec > 60 {
        return None;
    }
    let sign = match zone.as_bytes()[0] {
        b'+' => 1,
        b'-' => -1,
        _ => return None,
    };
    let zh: i64 = zone.get(1..3)?.parse().ok()?;
    let zm: i64 = zone.get(3..5)?.parse().ok()?;
    let secs = days * 86_400 + h * 3600 + m * 60 + sec - sign * (zh * 3600 + zm * 60);
    let secs = u64::try_from(secs).ok()?;
    Some(UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_known_instants() {
        let t = UNIX_EPOCH + Duration::from_secs(1_573_684_390);
        assert_eq!(entra_timestamp(t), "2019-11-13 22:33:10Z");
        assert_eq!(imap_datetime(t), "13-Nov-2019 22:33:10 +0000");
        assert_eq!(imap_datetime(UNIX_EPOCH), "01-Jan-1970 00:00:00 +0000");
    }

    #[test]
    fn parses_dates_and_date_times() {
        let t = UNIX_EPOCH + Duration::from_secs(1_573_684_390);
        assert_eq!(parse_imap_date("13-Nov-2019"), Some(day_number(t)));
        assert_eq!(parse_imap_date("13-nov-2019"), Some(day_number(t)));
        assert_eq!(parse_imap_datetime("13-Nov-2019 22:33:10 +0000"), Some(t));
        assert_eq!(parse_imap_datetime("13-Nov-2019 17:33:10 -0500"), Some(t));
        assert!(parse_imap_datetime(" 3-Mar-2020 00:00:00 +0000").is_some());
        assert_eq!(parse_imap_datetime("3-Mar-2020 00:00:00 0000"), None);
        assert_eq!(parse_imap_date("32-Jan-2020"), None);
        assert_eq!(parse_imap_date("1-Foo-2020"), None);
        let leap = parse_imap_date("29-Feb-2024")
            .and_then(|d| parse_imap_date("1-Mar-2024").map(|e| e - d));
        assert_eq!(leap, Some(1));
    }
}
