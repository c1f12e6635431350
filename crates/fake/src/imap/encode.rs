//! IMAP response atoms: quoted strings, literals, NIL, and mailbox names.

/// A string as a quoted string when it is short 7-bit text, else as a literal.
pub(crate) fn string(out: &mut Vec<u8>, bytes: &[u8]) {
    let quotable = bytes.len() < 1024 && bytes.iter().all(|&b| (0x20..0x7f).contains(&b));
    if quotable {
        out.push(b'"');
        for &b in bytes {
            if b == b'"' || b == b'\\' {
                out.push(b'\\');
            }
            out.push(b);
        }
        out.push(b'"');
    } else {
        literal(out, bytes);
    }
}

/// `NIL` or a string.
pub(crate) fn nstring(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => string(out, v),
        None => out.extend_from_slice(b"NIL"),
    }
}

/// `{n}\r\n` followed by the bytes, verbatim.
pub(crate) fn literal(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(format!("{{{}}}\r\n", bytes.len()).as_bytes());
    out.extend_from_slice(bytes);
}

/// A mailbox name as an atom when that is unambiguous, else quoted.
pub(crate) fn mailbox(name: &str) -> String {
    let atom = !name.is_empty()
        && name.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'"' | b'\\' | b'%' | b'*' | b']')
        });
    if atom {
        name.to_string()
    } else {
        let mut out = Vec::new();
        string(&mut out, name.as_bytes());
        String::from_utf8_lossy(&out).into_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(f: impl Fn(&mut Vec<u8>)) -> String {
        let mut out = Vec::new();
        f(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_quote_or_literal() {
        assert_eq!(s(|o| string(o, b"a \"b\" \\c")), "\"a \\\"b\\\" \\\\c\"");
        assert_eq!(s(|o| string(o, b"caf\xc3\xa9")), "{5}\r\ncaf\u{e9}");
        assert_eq!(s(|o| string(o, b"a\r\nb")), "{4}\r\na\r\nb");
        assert_eq!(s(|o| nstring(o, None)), "NIL");
    }

    #[test]
    fn mailbox_names() {
        assert_eq!(mailbox("INBOX"), "INBOX");
        assert_eq!(mailbox("Sent Items"), "\"Sent Items\"");
        assert_eq!(mailbox(""), "\"\"");
    }
}
