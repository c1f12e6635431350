//! SMTP replies (RFC 5321 §4.2): one line at a time as the upstream sends them, and whole
//! (possibly multi-line) replies as the back-end acts on them and the front-end passes them
//! through.

use nom::branch::alt;
use nom::bytes::complete::take_while_m_n;
use nom::character::complete::one_of;
use nom::combinator::{eof, map, map_res, rest, value};
use nom::sequence::tuple;
use nom::IResult;

use oxbridge_wire::line::trim_eol;

/// One reply line: `250-SIZE 157286400` is code 250, not last, text `SIZE 157286400`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplyLine {
    pub code: u16,
    /// `false` for a `NNN-` continuation line, `true` for the final `NNN ` (or bare `NNN`).
    pub last: bool,
    pub text: String,
}

/// Parses one reply line (with or without its line ending). `None` if it is not one: the
/// code must be three digits from 200 to 599, followed by `-`, a space or nothing.
pub fn parse_reply_line(line: &[u8]) -> Option<ReplyLine> {
    let (_, (code, last, text)) = reply_line(trim_eol(line)).ok()?;
    (200..600).contains(&code).then(|| ReplyLine {
        code,
        last,
        text: String::from_utf8_lossy(text).into_owned(),
    })
}

fn reply_line(input: &[u8]) -> IResult<&[u8], (u16, bool, &[u8])> {
    tuple((
        map_res(take_while_m_n(3, 3, |b: u8| b.is_ascii_digit()), |d| {
            std::str::from_utf8(d)
                .map_err(|_| ())
                .and_then(|d| d.parse().map_err(|_| ()))
        }),
        alt((map(one_of("- "), |c| c == ' '), value(true, eof))),
        rest,
    ))(input)
}

/// A complete reply: its code and the text of each line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub code: u16,
    pub lines: Vec<String>,
}

impl Reply {
    /// `2yz`: the command succeeded.
    pub fn is_positive(&self) -> bool {
        (200..300).contains(&self.code)
    }

    /// `4yz`: try again later.
    pub fn is_transient(&self) -> bool {
        (400..500).contains(&self.code)
    }

    /// `5yz`: do not try again as is.
    pub fn is_permanent(&self) -> bool {
        (500..600).contains(&self.code)
    }

    /// The reply as it goes on the wire, lines joined by CRLF, without the final CRLF.
    /// Line text is cleaned of CR and LF so a reply can never inject a line of its own.
    pub fn to_wire(&self) -> String {
        let count = self.lines.len().max(1);
        (0..count)
            .map(|i| {
                let text = self.lines.get(i).map_or("", String::as_str);
                let text: String = text.chars().filter(|c| !matches!(c, '\r' | '\n')).collect();
                let separator = if i + 1 == count { ' ' } else { '-' };
                if text.is_empty() && i + 1 == count {
                    format!("{}", self.code)
                } else {
                    format!("{}{separator}{text}", self.code)
                }
            })
            .collect::<Vec<_>>()
            .join("\r\n")
    }

    /// Parses a reply in wire form (as [`Reply::to_wire`] makes it, or with a final CRLF).
    /// Every line must carry the same code and only the last may be final.
    pub fn from_wire(text: &str) -> Option<Reply> {
        let mut lines = Vec::new();
        let mut code = None;
        let mut finished = false;
        for raw in text.split_inclusive('\n') {
            if finished {
                return None;
            }
            let line = parse_reply_line(raw.as_bytes())?;
            if *code.get_or_insert(line.code) != line.code {
                return None;
            }
            finished = line.last;
            lines.push(line.text);
        }
        match (code, finished) {
            (Some(code), true) => Some(Reply { code, lines }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_continuation_final_and_bare_lines() {
        assert_eq!(
            parse_reply_line(b"250-SIZE 157286400\r\n"),
            Some(ReplyLine {
                code: 250,
                last: false,
                text: "SIZE 157286400".into()
            })
        );
        assert_eq!(
            parse_reply_line(b"250 SMTPUTF8\r\n"),
            Some(ReplyLine {
                code: 250,
                last: true,
                text: "SMTPUTF8".into()
            })
        );
        // Exchange's XOAUTH2 challenge is "334 " with an empty text; some servers send "334".
        for line in [&b"334 \r\n"[..], b"334\r\n"] {
            let l = parse_reply_line(line).unwrap();
            assert_eq!((l.code, l.last, l.text.as_str()), (334, true, ""));
        }
    }

    #[test]
    fn refuses_what_is_not_a_reply_line() {
        for bad in [
            &b"25 short\r\n"[..],
            b"abc text\r\n",
            b"250OK\r\n",
            b"650 out of range\r\n",
            b"\r\n",
        ] {
            assert_eq!(parse_reply_line(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn wire_form_round_trips_and_rejects_mixed_codes() {
        let reply = Reply {
            code: 535,
            lines: vec![
                "5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the Tenant.".into(),
            ],
        };
        let wire = reply.to_wire();
        assert!(wire.starts_with("535 5.7.139 "));
        assert_eq!(Reply::from_wire(&wire), Some(reply));
        let multi = Reply {
            code: 250,
            lines: vec!["a".into(), "b".into()],
        };
        assert_eq!(multi.to_wire(), "250-a\r\n250 b");
        assert_eq!(Reply::from_wire("250-a\r\n250 b\r\n"), Some(multi));
        assert_eq!(Reply::from_wire("250-a\r\n251 b"), None);
        assert_eq!(Reply::from_wire("250 a\r\n250 b"), None);
        assert_eq!(Reply::from_wire("250-a"), None);
        assert_eq!(Reply::from_wire("hello"), None);
    }

    #[test]
    fn line_breaks_in_text_cannot_inject_lines() {
        let reply = Reply {
            code: 535,
            lines: vec!["bad\r\n250 fake".into()],
        };
        assert_eq!(reply.to_wire(), "535 bad250 fake");
    }
}
