//! IMAP sequence sets (`1`, `2,4:6`, `1:*`), for message sequence numbers and UIDs alike.

/// One end of a range; `*` is the largest number in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Bound {
    Num(u32),
    Star,
}

/// A parsed sequence set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequenceSet(Vec<(Bound, Bound)>);

impl SequenceSet {
    /// Parses `set = (num / num ":" num) *("," ...)`, with `*` for either number; also
    /// accepts `$`-free forms only (no SEARCHRES). Zero is not a valid number.
    pub fn parse(s: &str) -> Option<SequenceSet> {
        let bound = |b: &str| -> Option<Bound> {
            if b == "*" {
                return Some(Bound::Star);
            }
            if b.is_empty() || !b.bytes().all(|c| c.is_ascii_digit()) {
                return None;
            }
            match b.parse::<u32>().ok()? {
                0 => None,
                n => Some(Bound::Num(n)),
            }
        };
        let ranges = s
            .split(',')
            .map(|item| match item.split_once(':') {
                Some((a, b)) => Some((bound(a)?, bound(b)?)),
                None => bound(item).map(|b| (b, b)),
            })
            .collect::<Option<Vec<_>>>()?;
        Some(SequenceSet(ranges))
    }

    /// Whether `n` is in the set when `*` stands for `largest`.
    pub fn contains(&self, n: u32, largest: u32) -> bool {
        let value = |b: Bound| match b {
            Bound::Num(v) => v,
            Bound::Star => largest,
        };
        self.0.iter().any(|&(a, b)| {
            let (a, b) = (value(a), value(b));
            (a.min(b)..=a.max(b)).contains(&n)
        })
    }
}

/// Renders UIDs compactly (`3:5,9`) for COPYUID.
pub fn compact(uids: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < uids.len() {
        let start = uids[i];
        let mut end = start;
        while i + 1 < uids.len() && uids[i + 1] == end.wrapping_add(1) {
            i += 1;
            end = uids[i];
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}:{end}")
        });
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_matches() {
        let s = SequenceSet::parse("2,4:6").unwrap();
        let hits: Vec<u32> = (1..=8).filter(|&n| s.contains(n, 8)).collect();
        assert_eq!(hits, vec![2, 4, 5, 6]);
        let all = SequenceSet::parse("1:*").unwrap();
        assert!(all.contains(1, 3) && all.contains(3, 3));
        let reversed = SequenceSet::parse("*:2").unwrap();
        assert!(reversed.contains(2, 5) && reversed.contains(5, 5) && !reversed.contains(1, 5));
        // `n:*` with n above the largest still includes the largest (RFC 3501 §6.4.8).
        assert!(SequenceSet::parse("100:*").unwrap().contains(50, 50));
        assert!(SequenceSet::parse("*").unwrap().contains(7, 7));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "0", "1:", "a", "1,,2", "1:2:3", "-1", "1 2"] {
            assert_eq!(SequenceSet::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn compacts_uid_lists() {
        assert_eq!(compact(&[3, 4, 5, 9, 11, 12]), "3:5,9,11:12");
        assert_eq!(compact(&[]), "");
    }
}
