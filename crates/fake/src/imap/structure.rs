//! ENVELOPE and BODYSTRUCTURE (RFC 3501 §7.4.2) built from a message's MIME tree.

use super::encode::{nstring, string};
use crate::message::{addresses, Part};

/// `(date subject from sender reply-to to cc bcc in-reply-to message-id)`.
pub(crate) fn envelope(out: &mut Vec<u8>, part: &Part<'_>) {
    let field = |name: &str| part.field(name).filter(|v| !v.is_empty());
    let from = field("From");
    out.push(b'(');
    nstring(out, field("Date").as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, field("Subject").as_deref().map(str::as_bytes));
    for (name, fallback) in [
        ("From", None),
        ("Sender", from.as_deref()),
        ("Reply-To", from.as_deref()),
        ("To", None),
        ("Cc", None),
        ("Bcc", None),
    ] {
        out.push(b' ');
        address_list(out, field(name).as_deref().or(fallback));
    }
    out.push(b' ');
    nstring(out, field("In-Reply-To").as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(out, field("Message-ID").as_deref().map(str::as_bytes));
    out.push(b')');
}

fn address_list(out: &mut Vec<u8>, value: Option<&str>) {
    let list = value.map(addresses).unwrap_or_default();
    if list.is_empty() {
        out.extend_from_slice(b"NIL");
        return;
    }
    out.push(b'(');
    for a in list {
        out.push(b'(');
        nstring(out, a.name.as_deref().map(str::as_bytes));
        out.extend_from_slice(b" NIL ");
        string(out, a.mailbox.as_bytes());
        out.push(b' ');
        nstring(out, a.host.as_deref().map(str::as_bytes));
        out.push(b')');
    }
    out.push(b')');
}

/// The non-extensible body structure, which is also a valid BODYSTRUCTURE.
pub(crate) fn body_structure(out: &mut Vec<u8>, part: &Part<'_>) {
    let ct = &part.content_type;
    if ct.is_multipart() && !part.children.is_empty() {
        out.push(b'(');
        for child in &part.children {
            body_structure(out, child);
        }
        out.push(b' ');
        string(out, ct.subtype.to_ascii_uppercase().as_bytes());
        out.push(b')');
        return;
    }
    // A multipart without parseable parts is shown as an opaque leaf.
    let (kind, subtype) = if ct.is_multipart() {
        ("APPLICATION".to_string(), "OCTET-STREAM".to_string())
    } else {
        (
            ct.kind.to_ascii_uppercase(),
            ct.subtype.to_ascii_uppercase(),
        )
    };
    out.push(b'(');
    string(out, kind.as_bytes());
    out.push(b' ');
    string(out, subtype.as_bytes());
    out.push(b' ');
    if ct.params.is_empty() || ct.is_multipart() {
        out.extend_from_slice(b"NIL");
    } else {
        out.push(b'(');
        for (i, (k, v)) in ct.params.iter().enumerate() {
            if i > 0 {
                out.push(b' ');
            }
            string(out, k.to_ascii_uppercase().as_bytes());
            out.push(b' ');
            string(out, v.as_bytes());
        }
        out.push(b')');
    }
    out.push(b' ');
    nstring(out, part.field("Content-ID").as_deref().map(str::as_bytes));
    out.push(b' ');
    nstring(
        out,
        part.field("Content-Description")
            .as_deref()
            .map(str::as_bytes),
    );
    out.push(b' ');
    let encoding = part
        .field("Content-Transfer-Encoding")
        .filter(|e| !e.is_empty())
        .map_or_else(|| "7BIT".to_string(), |e| e.to_ascii_uppercase());
    string(out, encoding.as_bytes());
    out.extend_from_slice(format!(" {}", part.body.len()).as_bytes());
    if kind == "TEXT" {
        out.extend_from_slice(format!(" {}", crate::message::line_count(part.body)).as_bytes());
    } else if let (true, Some(inner)) = (ct.is_message(), &part.embedded) {
        out.push(b' ');
        envelope(out, inner);
        out.push(b' ');
        body_structure(out, inner);
        out.extend_from_slice(format!(" {}", crate::message::line_count(part.body)).as_bytes());
    }
    out.push(b')');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(f: fn(&mut Vec<u8>, &Part<'_>), raw: &[u8]) -> String {
        let mut out = Vec::new();
        f(&mut out, &Part::parse(raw));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn envelope_from_headers() {
        let raw = b"Date: Mon, 1 Jan 2024 10:00:00 +0000\r\nFrom: \"Jane Doe\" <jane@example.com>\r\nTo: a@x, b@y\r\nSubject: Hi \"there\"\r\nMessage-ID: <1@x>\r\n\r\nbody\r\n";
        assert_eq!(
            render(envelope, raw),
            "(\"Mon, 1 Jan 2024 10:00:00 +0000\" \"Hi \\\"there\\\"\" ((\"Jane Doe\" NIL \"jane\" \"example.com\")) ((\"Jane Doe\" NIL \"jane\" \"example.com\")) ((\"Jane Doe\" NIL \"jane\" \"example.com\")) ((NIL NIL \"a\" \"x\")(NIL NIL \"b\" \"y\")) NIL NIL NIL \"<1@x>\")"
        );
        assert_eq!(
            render(envelope, b"\r\n"),
            "(NIL NIL NIL NIL NIL NIL NIL NIL NIL NIL)"
        );
    }

    #[test]
    fn body_structures() {
        assert_eq!(
            render(body_structure, b"Subject: x\r\n\r\nhello\r\nworld\r\n"),
            "(\"TEXT\" \"PLAIN\" (\"CHARSET\" \"us-ascii\") NIL NIL \"7BIT\" 14 2)"
        );
        let multi = b"Content-Type: multipart/alternative; boundary=zz\r\n\r\n--zz\r\nContent-Type: text/plain\r\n\r\nhi\r\n--zz\r\nContent-Type: text/html; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n<b>hi</b>\r\n--zz--\r\n";
        assert_eq!(
            render(body_structure, multi),
            "((\"TEXT\" \"PLAIN\" NIL NIL NIL \"7BIT\" 2 1)(\"TEXT\" \"HTML\" (\"CHARSET\" \"utf-8\") NIL NIL \"QUOTED-PRINTABLE\" 9 1) \"ALTERNATIVE\")"
        );
    }
}
