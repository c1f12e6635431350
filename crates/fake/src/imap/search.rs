//! SEARCH criteria (RFC 3501 §6.4.4): parsing the argument list into a tree and matching
//! it against one message. Dates compare against the internal date, day-granular.

use super::command::Arg;
use super::sequence::SequenceSet;
use crate::clock::{day_number, parse_imap_date};
use crate::mailbox::StoredMessage;
use crate::message::{fields, split};

/// Deepest NOT/OR/list nesting accepted.
const MAX_DEPTH: usize = 32;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Criterion {
    All,
    /// A flag that must be set (`true`) or unset (`false`).
    Flag(String, bool),
    /// Matches nothing: the fake never reports `\Recent`.
    Nothing,
    Uid(SequenceSet),
    Seq(SequenceSet),
    Not(Box<Criterion>),
    Or(Box<Criterion>, Box<Criterion>),
    And(Vec<Criterion>),
    /// Header field name and a substring of its value.
    Header(String, String),
    Body(String),
    Text(String),
    Larger(u64),
    Smaller(u64),
    Since(i64),
    Before(i64),
    On(i64),
}

/// What a message is matched as: its sequence number and the `*` values.
#[derive(Debug, Clone, Copy)]
pub struct Position {
    pub seq: u32,
    pub largest_seq: u32,
    pub largest_uid: u32,
}

/// Parses a whole SEARCH argument list (an implicit AND), ignoring a leading `CHARSET x`.
pub fn parse(args: &[Arg]) -> Option<Criterion> {
    let mut args = args;
    if args
        .first()
        .and_then(Arg::atom)
        .is_some_and(|a| a.eq_ignore_ascii_case("CHARSET"))
    {
        args = args.get(2..)?;
    }
    let mut it = args.iter();
    let mut all = Vec::new();
    while let Some(c) = parse_one(&mut it, 0)? {
        all.push(c);
    }
    if all.is_empty() {
        return None;
    }
    Some(Criterion::And(all))
}

fn text<'a>(it: &mut impl Iterator<Item = &'a Arg>) -> Option<String> {
    it.next().and_then(Arg::astring)
}

/// `Some(None)` at the end of input, `None` on a syntax error.
fn parse_one<'a>(
    it: &mut impl Iterator<Item = &'a Arg>,
    depth: usize,
) -> Option<Option<Criterion>> {
    if depth > MAX_DEPTH {
        return None;
    }
    let Some(arg) = it.next() else {
        return Some(None);
    };
    let word = match arg {
        Arg::List(list) => {
            let mut inner = list.iter();
            let mut all = Vec::new();
            while let Some(c) = parse_one(&mut inner, depth + 1)? {
                all.push(c);
            }
            return (!all.is_empty()).then_some(Some(Criterion::And(all)));
        }
        Arg::Str(_) => return None,
        Arg::Atom(a) => a.to_ascii_uppercase(),
    };
    let flag = |name: &str, on: bool| Criterion::Flag(name.to_string(), on);
    let c = match word.as_str() {
        "ALL" | "OLD" => Criterion::All,
        "NEW" | "RECENT" => Criterion::Nothing,
        "ANSWERED" => flag("\\Answered", true),
        "DELETED" => flag("\\Deleted", true),
        "DRAFT" => flag("\\Draft", true),
        "FLAGGED" => flag("\\Flagged", true),
        "SEEN" => flag("\\Seen", true),
        "UNANSWERED" => flag("\\Answered", false),
        "UNDELETED" => flag("\\Deleted", false),
        "UNDRAFT" => flag("\\Draft", false),
        "UNFLAGGED" => flag("\\Flagged", false),
        "UNSEEN" => flag("\\Seen", false),
        "KEYWORD" => Criterion::Flag(text(it)?, true),
        "UNKEYWORD" => Criterion::Flag(text(it)?, false),
        "FROM" | "TO" | "CC" | "BCC" | "SUBJECT" => Criterion::Header(word.clone(), text(it)?),
        "HEADER" => {
            let name = text(it)?;
            Criterion::Header(name, text(it)?)
        }
        "BODY" => Criterion::Body(text(it)?),
        "TEXT" => Criterion::Text(text(it)?),
        "LARGER" => Criterion::Larger(text(it)?.parse().ok()?),
        "SMALLER" => Criterion::Smaller(text(it)?.parse().ok()?),
        "SINCE" | "SENTSINCE" => Criterion::Since(parse_imap_date(&text(it)?)?),
        "BEFORE" | "SENTBEFORE" => Criterion::Before(parse_imap_date(&text(it)?)?),
        "ON" | "SENTON" => Criterion::On(parse_imap_date(&text(it)?)?),
        "UID" => Criterion::Uid(SequenceSet::parse(&text(it)?)?),
        "NOT" => Criterion::Not(Box::new(parse_one(it, depth + 1)??)),
        "OR" => {
            let a = parse_one(it, depth + 1)??;
            let b = parse_one(it, depth + 1)??;
            Criterion::Or(Box::new(a), Box::new(b))
        }
        other => Criterion::Seq(SequenceSet::parse(other)?),
    };
    Some(Some(c))
}

fn contains_ci(haystack: &[u8], needle: &str) -> bool {
    let needle = needle.as_bytes();
    needle.is_empty()
        || haystack
            .windows(needle.len())
            .any(|w| w.eq_ignore_ascii_case(needle))
}

/// Whether `msg` at `pos` satisfies `c`.
pub fn matches(c: &Criterion, msg: &StoredMessage, pos: Position) -> bool {
    let day = || day_number(msg.internal_date);
    match c {
        Criterion::All => true,
        Criterion::Nothing => false,
        Criterion::Flag(name, on) => msg.flags.contains(name) == *on,
        Criterion::Uid(set) => set.contains(msg.uid, pos.largest_uid),
        Criterion::Seq(set) => set.contains(pos.seq, pos.largest_seq),
        Criterion::Not(inner) => !matches(inner, msg, pos),
        Criterion::Or(a, b) => matches(a, msg, pos) || matches(b, msg, pos),
        Criterion::And(all) => all.iter().all(|c| matches(c, msg, pos)),
        Criterion::Header(name, value) => fields(split(&msg.raw).0)
            .iter()
            .any(|f| f.name.eq_ignore_ascii_case(name) && contains_ci(f.value().as_bytes(), value)),
        Criterion::Body(s) => contains_ci(split(&msg.raw).1, s),
        Criterion::Text(s) => contains_ci(&msg.raw, s),
        Criterion::Larger(n) => msg.raw.len() as u64 > *n,
        Criterion::Smaller(n) => (msg.raw.len() as u64) < *n,
        Criterion::Since(d) => day() >= *d,
        Criterion::Before(d) => day() < *d,
        Criterion::On(d) => day() == *d,
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::mailbox::Flags;

    fn msg(uid: u32, flags: &[&str]) -> StoredMessage {
        StoredMessage {
            uid,
            raw: Bytes::from_static(
                b"From: Alice <alice@x>\r\nSubject: Quarterly report\r\n\r\nNumbers inside\r\n",
            ),
            flags: Flags::new(flags),
            internal_date: UNIX_EPOCH + Duration::from_secs(1_573_684_390),
        }
    }

    fn hits(query: &str, msgs: &[StoredMessage]) -> Vec<u32> {
        let args = super::super::command::lex(query.as_bytes()).unwrap();
        let c = parse(&args).unwrap();
        let largest_uid = msgs.last().map_or(0, |m| m.uid);
        msgs.iter()
            .enumerate()
            .filter(|(i, m)| {
                let pos = Position {
                    seq: *i as u32 + 1,
                    largest_seq: msgs.len() as u32,
                    largest_uid,
                };
                matches(&c, m, pos)
            })
            .map(|(_, m)| m.uid)
            .collect()
    }

    #[test]
    fn flags_sets_and_logic() {
        let msgs = [
            msg(3, &["\\Seen"]),
            msg(5, &[]),
            msg(9, &["\\Deleted", "\\Seen"]),
        ];
        assert_eq!(hits("ALL", &msgs), vec![3, 5, 9]);
        assert_eq!(hits("UNSEEN", &msgs), vec![5]);
        assert_eq!(hits("SEEN NOT DELETED", &msgs), vec![3]);
        assert_eq!(hits("DELETED", &msgs), vec![9]);
        assert_eq!(hits("UID 4:*", &msgs), vec![5, 9]);
        assert_eq!(hits("2:*", &msgs), vec![5, 9]);
        assert_eq!(hits("OR UID 3 UNSEEN", &msgs), vec![3, 5]);
        assert_eq!(hits("CHARSET UTF-8 (UNDELETED SEEN)", &msgs), vec![3]);
        assert_eq!(hits("NEW", &msgs), Vec::<u32>::new());
    }

    #[test]
    fn text_size_and_dates() {
        let msgs = [msg(1, &[])];
        assert_eq!(hits("SUBJECT quarterly", &msgs), vec![1]);
        assert_eq!(hits("FROM \"alice@x\"", &msgs), vec![1]);
        assert_eq!(hits("HEADER Subject nope", &msgs), Vec::<u32>::new());
        assert_eq!(hits("BODY numbers", &msgs), vec![1]);
        assert_eq!(hits("TEXT Alice", &msgs), vec![1]);
        assert_eq!(hits("LARGER 10 SMALLER 1000", &msgs), vec![1]);
        assert_eq!(hits("ON 13-Nov-2019", &msgs), vec![1]);
        assert_eq!(hits("SINCE 14-Nov-2019", &msgs), Vec::<u32>::new());
        assert_eq!(hits("BEFORE 14-Nov-2019", &msgs), vec![1]);
    }

    #[test]
    fn rejects_bad_criteria() {
        for bad in ["", "FROB", "UID", "NOT", "OR SEEN", "SINCE yesterday", "()"] {
            let args = super::super::command::lex(bad.as_bytes()).unwrap_or_default();
            assert!(parse(&args).is_none(), "{bad}");
        }
    }
}
