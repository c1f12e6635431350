//! FETCH: parsing data items (macros, `BODY[section]<partial>`) and rendering one
//! message's `* n FETCH (...)` response. Body bytes are sent as literals, untouched.

use super::command::Arg;
use super::encode::{literal, string};
use super::structure::{body_structure, envelope};
use crate::clock::imap_datetime;
use crate::mailbox::StoredMessage;
use crate::message::{fields, Part};

/// The part of a section after its part numbers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SectionText {
    /// The whole entity (`BODY[]`, `BODY[1]`).
    Full,
    Header,
    Text,
    Mime,
    Fields {
        names: Vec<String>,
        not: bool,
    },
}

/// `[1.2.HEADER.FIELDS (FROM)]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Section {
    pub path: Vec<u32>,
    pub text: SectionText,
}

/// One FETCH data item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchItem {
    Flags,
    Uid,
    InternalDate,
    Rfc822Size,
    Envelope,
    BodyStructure,
    /// `BODY` without a section: the non-extensible structure.
    Body,
    Rfc822,
    Rfc822Header,
    Rfc822Text,
    Section {
        section: Section,
        peek: bool,
        /// `<offset.length>`.
        partial: Option<(u32, u32)>,
        /// The section spec as the client wrote it, echoed in the response.
        spec: String,
    },
}

impl FetchItem {
    /// Whether fetching this item marks the message `\Seen` (RFC 3501 §6.4.5).
    pub fn sets_seen(&self) -> bool {
        matches!(
            self,
            FetchItem::Rfc822 | FetchItem::Rfc822Text | FetchItem::Section { peek: false, .. }
        )
    }
}

/// Parses the item argument of FETCH: a macro, one item, or a list of items.
pub fn parse_items(arg: &Arg) -> Option<Vec<FetchItem>> {
    match arg {
        Arg::Atom(a) => match a.to_ascii_uppercase().as_str() {
            "ALL" => Some(vec![
                FetchItem::Flags,
                FetchItem::InternalDate,
                FetchItem::Rfc822Size,
                FetchItem::Envelope,
            ]),
            "FAST" => Some(vec![
                FetchItem::Flags,
                FetchItem::InternalDate,
                FetchItem::Rfc822Size,
            ]),
            "FULL" => Some(vec![
                FetchItem::Flags,
                FetchItem::InternalDate,
                FetchItem::Rfc822Size,
                FetchItem::Envelope,
                FetchItem::Body,
            ]),
            _ => parse_item(a).map(|i| vec![i]),
        },
        Arg::List(list) if !list.is_empty() => {
            list.iter().map(|a| a.atom().and_then(parse_item)).collect()
        }
        _ => None,
    }
}

fn parse_item(s: &str) -> Option<FetchItem> {
    let upper = s.to_ascii_uppercase();
    let simple = match upper.as_str() {
        "FLAGS" => Some(FetchItem::Flags),
        "UID" => Some(FetchItem::Uid),
        "INTERNALDATE" => Some(FetchItem::InternalDate),
        "RFC822.SIZE" => Some(FetchItem::Rfc822Size),
        "ENVELOPE" => Some(FetchItem::Envelope),
        "BODYSTRUCTURE" => Some(FetchItem::BodyStructure),
        "BODY" => Some(FetchItem::Body),
        "RFC822" => Some(FetchItem::Rfc822),
        "RFC822.HEADER" => Some(FetchItem::Rfc822Header),
        "RFC822.TEXT" => Some(FetchItem::Rfc822Text),
        _ => None,
    };
    if simple.is_some() {
        return simple;
    }
    let (peek, rest) = if upper.starts_with("BODY.PEEK[") {
        (true, &s["BODY.PEEK".len()..])
    } else if upper.starts_with("BODY[") {
        (false, &s["BODY".len()..])
    } else {
        return None;
    };
    let close = rest.rfind(']')?;
    let spec = rest.get(1..close)?.to_string();
    let partial = match &rest[close + 1..] {
        "" => None,
        p => {
            let (offset, length) = p.strip_prefix('<')?.strip_suffix('>')?.split_once('.')?;
            Some((offset.parse().ok()?, length.parse().ok()?))
        }
    };
    Some(FetchItem::Section {
        section: parse_section(&spec)?,
        peek,
        partial,
        spec,
    })
}

fn parse_section(spec: &str) -> Option<Section> {
    let mut path = Vec::new();
    let mut rest = spec.trim();
    while let Some(first) = rest.split('.').next() {
        if first.is_empty() || !first.bytes().all(|b| b.is_ascii_digit()) {
            break;
        }
        match first.parse::<u32>().ok()? {
            0 => return None,
            n => path.push(n),
        }
        rest = rest[first.len()..].strip_prefix('.').unwrap_or("");
    }
    let upper = rest.to_ascii_uppercase();
    let text = match upper.as_str() {
        "" => SectionText::Full,
        "HEADER" => SectionText::Header,
        "TEXT" => SectionText::Text,
        "MIME" if !path.is_empty() => SectionText::Mime,
        _ => {
            let (not, list) = if let Some(l) = upper.strip_prefix("HEADER.FIELDS.NOT") {
                (true, l)
            } else {
                (false, upper.strip_prefix("HEADER.FIELDS")?)
            };
            let names = list
                .trim()
                .strip_prefix('(')?
                .strip_suffix(')')?
                .split_ascii_whitespace()
                .map(|n| n.trim_matches('"').to_string())
                .collect::<Vec<_>>();
            if names.is_empty() {
                return None;
            }
            SectionText::Fields { names, not }
        }
    };
    Some(Section { path, text })
}

/// The bytes a section selects, or empty if the message has no such part.
pub fn section_bytes(raw: &[u8], section: &Section) -> Vec<u8> {
    let top = Part::parse(raw);
    let mut current = &top;
    for &n in &section.path {
        let children = current.numbered_children();
        let Some(next) = children.get(n as usize - 1) else {
            return Vec::new();
        };
        current = next;
    }
    // HEADER / TEXT of a part address the message inside a message/rfc822 part.
    let message = if section.path.is_empty() {
        Some(current)
    } else {
        current.embedded.as_deref()
    };
    match &section.text {
        SectionText::Full if section.path.is_empty() => raw.to_vec(),
        SectionText::Full => current.body.to_vec(),
        SectionText::Mime => current.header.to_vec(),
        SectionText::Header => message.map(|m| m.header.to_vec()).unwrap_or_default(),
        SectionText::Text => message.map(|m| m.body.to_vec()).unwrap_or_default(),
        SectionText::Fields { names, not } => {
            let Some(m) = message else {
                return Vec::new();
            };
            let mut out: Vec<u8> = fields(m.header)
                .into_iter()
                .filter(|f| names.iter().any(|n| n.eq_ignore_ascii_case(f.name)) != *not)
                .flat_map(|f| f.raw.iter().copied())
                .collect();
            out.extend_from_slice(b"\r\n");
            out
        }
    }
}

/// `* seq FETCH (...)\r\n` for one message. `include_uid` forces `UID` (UID FETCH);
/// `flags_changed` appends `FLAGS` when fetching set `\Seen` and FLAGS was not asked for.
pub fn render(
    seq: u32,
    msg: &StoredMessage,
    items: &[FetchItem],
    include_uid: bool,
    flags_changed: bool,
) -> Vec<u8> {
    let mut parts: Vec<Vec<u8>> = Vec::new();
    if include_uid && !items.contains(&FetchItem::Uid) {
        parts.push(format!("UID {}", msg.uid).into_bytes());
    }
    for item in items {
        parts.push(render_item(msg, item));
    }
    if flags_changed && !items.contains(&FetchItem::Flags) {
        parts.push(format!("FLAGS {}", msg.flags.to_imap()).into_bytes());
    }
    let mut out = format!("* {seq} FETCH (").into_bytes();
    out.extend_from_slice(&parts.join(&b' '));
    out.extend_from_slice(b")\r\n");
    out
}

fn render_item(msg: &StoredMessage, item: &FetchItem) -> Vec<u8> {
    let raw = &msg.raw[..];
    let mut out = Vec::new();
    match item {
        FetchItem::Flags => {
            out.extend_from_slice(format!("FLAGS {}", msg.flags.to_imap()).as_bytes())
        }
        FetchItem::Uid => out.extend_from_slice(format!("UID {}", msg.uid).as_bytes()),
        FetchItem::InternalDate => out.extend_from_slice(
            format!("INTERNALDATE \"{}\"", imap_datetime(msg.internal_date)).as_bytes(),
        ),
        FetchItem::Rfc822Size => {
            out.extend_from_slice(format!("RFC822.SIZE {}", raw.len()).as_bytes())
        }
        FetchItem::Envelope => {
            out.extend_from_slice(b"ENVELOPE ");
            envelope(&mut out, &Part::parse(raw));
        }
        FetchItem::BodyStructure | FetchItem::Body => {
            out.extend_from_slice(if *item == FetchItem::Body {
                b"BODY "
            } else {
                b"BODYSTRUCTURE "
            });
            body_structure(&mut out, &Part::parse(raw));
        }
        FetchItem::Rfc822 => {
            out.extend_from_slice(b"RFC822 ");
            literal(&mut out, raw);
        }
        FetchItem::Rfc822Header => {
            out.extend_from_slice(b"RFC822.HEADER ");
            literal(&mut out, crate::message::split(raw).0);
        }
        FetchItem::Rfc822Text => {
            out.extend_from_slice(b"RFC822.TEXT ");
            literal(&mut out, crate::message::split(raw).1);
        }
        FetchItem::Section {
            section,
            partial,
            spec,
            ..
        } => {
            let bytes = section_bytes(raw, section);
            out.extend_from_slice(format!("BODY[{spec}]").as_bytes());
            let bytes = match partial {
                Some((offset, length)) => {
                    out.extend_from_slice(format!("<{offset}>").as_bytes());
                    let start = (*offset as usize).min(bytes.len());
                    let end = start.saturating_add(*length as usize).min(bytes.len());
                    bytes[start..end].to_vec()
                }
                None => bytes,
            };
            out.push(b' ');
            if bytes.is_empty() && partial.is_none() {
                string(&mut out, b"");
            } else {
                literal(&mut out, &bytes);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, UNIX_EPOCH};

    use bytes::Bytes;

    use super::*;
    use crate::mailbox::Flags;

    const RAW: &[u8] = b"From: a@x\r\nSubject: Hi\r\nTo: b@y\r\n\r\nHello\r\n";

    fn msg() -> StoredMessage {
        StoredMessage {
            uid: 7,
            raw: Bytes::from_static(RAW),
            flags: Flags::new(["\\Seen"]),
            internal_date: UNIX_EPOCH + Duration::from_secs(1_573_684_390),
        }
    }

    fn items(s: &str) -> Vec<FetchItem> {
        let args = super::super::command::lex(s.as_bytes()).unwrap();
        parse_items(&args[0]).unwrap()
    }

    fn text(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    #[test]
    fn parses_macros_and_sections() {
        assert_eq!(items("FAST").len(), 3);
        assert_eq!(items("ALL").len(), 4);
        assert_eq!(items("FULL").len(), 5);
        let parsed =
            items("(UID BODY.PEEK[HEADER.FIELDS (From Subject)] BODY[]<0.5> BODY[1.2.MIME])");
        assert_eq!(parsed[0], FetchItem::Uid);
        assert!(matches!(
            &parsed[1],
            FetchItem::Section {
                peek: true,
                section: Section {
                    text: SectionText::Fields { not: false, .. },
                    ..
                },
                ..
            }
        ));
        assert!(matches!(
            &parsed[2],
            FetchItem::Section {
                partial: Some((0, 5)),
                ..
            }
        ));
        assert!(
            matches!(&parsed[3], FetchItem::Section { section: Section { path, text: SectionText::Mime }, .. } if path == &vec![1, 2])
        );
        for bad in ["(FOO)", "BODY[", "BODY[0]", "BODY[]<x>", "()", "BODY[MIME]"] {
            let args = super::super::command::lex(bad.as_bytes()).unwrap_or_default();
            assert!(args.first().and_then(parse_items).is_none(), "{bad}");
        }
    }

    #[test]
    fn renders_body_literals_byte_exact() {
        let out = text(render(3, &msg(), &items("(UID FLAGS BODY[])"), true, false));
        assert_eq!(
            out,
            format!(
                "* 3 FETCH (UID 7 FLAGS (\\Seen) BODY[] {{{}}}\r\n{})\r\n",
                RAW.len(),
                std::str::from_utf8(RAW).unwrap()
            )
        );
        let out = text(render(
            1,
            &msg(),
            &items("(BODY.PEEK[HEADER.FIELDS (SUBJECT)] RFC822.SIZE)"),
            true,
            false,
        ));
        assert_eq!(
            out,
            format!("* 1 FETCH (UID 7 BODY[HEADER.FIELDS (SUBJECT)] {{15}}\r\nSubject: Hi\r\n\r\n RFC822.SIZE {})\r\n", RAW.len())
        );
        let out = text(render(
            1,
            &msg(),
            &items("(BODY[TEXT] INTERNALDATE)"),
            false,
            true,
        ));
        assert_eq!(
            out,
            "* 1 FETCH (BODY[TEXT] {7}\r\nHello\r\n INTERNALDATE \"13-Nov-2019 22:33:10 +0000\" FLAGS (\\Seen))\r\n"
        );
        let out = text(render(1, &msg(), &items("BODY[]<2.3>"), false, false));
        assert_eq!(out, "* 1 FETCH (BODY[]<2> {3}\r\nom:)\r\n");
    }

    #[test]
    fn header_and_rfc822_items() {
        let out = text(render(1, &msg(), &items("(RFC822.HEADER)"), false, false));
        assert!(out.starts_with("* 1 FETCH (RFC822.HEADER {35}\r\nFrom: a@x\r\n"));
        assert!(out.ends_with("\r\n\r\n)\r\n"));
        assert!(items("RFC822")[0].sets_seen());
        assert!(!items("BODY.PEEK[]")[0].sets_seen());
        assert!(items("BODY[HEADER]")[0].sets_seen());
    }

    #[test]
    fn sections_of_multipart_messages() {
        let raw = b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\nContent-Type: text/plain\r\n\r\none\r\n--b\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ntwo\r\n--b--\r\n";
        let sec = |path: Vec<u32>, text: SectionText| section_bytes(raw, &Section { path, text });
        assert_eq!(sec(vec![1], SectionText::Full), b"one");
        assert_eq!(
            sec(vec![1], SectionText::Mime),
            b"Content-Type: text/plain\r\n\r\n"
        );
        assert_eq!(sec(vec![2], SectionText::Header), b"Subject: inner\r\n\r\n");
        assert_eq!(sec(vec![2], SectionText::Text), b"two");
        assert_eq!(sec(vec![3], SectionText::Full), b"");
        assert_eq!(
            section_bytes(
                RAW,
                &Section {
                    path: vec![1],
                    text: SectionText::Full
                }
            ),
            b"Hello\r\n"
        );
    }
}
