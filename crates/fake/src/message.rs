//! A read-only view of an RFC 5322 / MIME message over its raw bytes: header and body
//! split, header fields, content types, the MIME tree, and address lists. Enough for IMAP
//! FETCH (sections, ENVELOPE, BODYSTRUCTURE), POP3 TOP and SMTP checks; it never copies or
//! rewrites the bytes, so what was delivered is what is served.

/// Deepest MIME nesting parsed; deeper parts are treated as opaque leaves.
const MAX_DEPTH: usize = 16;

/// Splits a message into its header (including the blank line that ends it) and its body.
/// Without a blank line the whole message is header.
pub fn split(raw: &[u8]) -> (&[u8], &[u8]) {
    let mut pos = 0;
    while pos < raw.len() {
        let end = raw[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(raw.len(), |i| pos + i + 1);
        let line = &raw[pos..end];
        if line == b"\r\n" || line == b"\n" {
            return raw.split_at(end);
        }
        pos = end;
    }
    (raw, &raw[raw.len()..])
}

/// One header field: its name and its raw bytes (name, value, folded lines and line end).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field<'a> {
    pub name: &'a str,
    pub raw: &'a [u8],
}

impl Field<'_> {
    /// The value unfolded and trimmed, lossily decoded as UTF-8.
    pub fn value(&self) -> String {
        let raw = String::from_utf8_lossy(self.raw);
        let value = raw.split_once(':').map_or("", |(_, v)| v);
        value
            .replace("\r\n", "")
            .replace('\n', "")
            .trim()
            .to_string()
    }
}

/// The fields of a header block, in order.
pub fn fields(header: &[u8]) -> Vec<Field<'_>> {
    let mut out: Vec<(usize, usize)> = Vec::new();
    let mut pos = 0;
    while pos < header.len() {
        let end = header[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(header.len(), |i| pos + i + 1);
        let line = &header[pos..end];
        if line == b"\r\n" || line == b"\n" {
            break;
        }
        match (line.first(), out.last_mut()) {
            (Some(b' ' | b'\t'), Some(last)) => last.1 = end,
            _ => out.push((pos, end)),
        }
        pos = end;
    }
    out.into_iter()
        .filter_map(|(start, end)| {
            let raw = &header[start..end];
            let colon = raw.iter().position(|&b| b == b':')?;
            let name = std::str::from_utf8(&raw[..colon]).ok()?.trim();
            Some(Field { name, raw })
        })
        .collect()
}

/// The unfolded value of the first field called `name` (case-insensitive).
pub fn field_value(header: &[u8], name: &str) -> Option<String> {
    fields(header)
        .into_iter()
        .find(|f| f.name.eq_ignore_ascii_case(name))
        .map(|f| f.value())
}

/// Number of lines in `bytes` (for BODYSTRUCTURE's line counts).
pub fn line_count(bytes: &[u8]) -> usize {
    let newlines = bytes.iter().filter(|&&b| b == b'\n').count();
    newlines + usize::from(!bytes.is_empty() && !bytes.ends_with(b"\n"))
}

/// A parsed `Content-Type`, lower-cased type and subtype.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub kind: String,
    pub subtype: String,
    pub params: Vec<(String, String)>,
}

impl ContentType {
    fn text_plain() -> ContentType {
        ContentType {
            kind: "text".into(),
            subtype: "plain".into(),
            params: vec![("charset".into(), "us-ascii".into())],
        }
    }

    /// Parses `type/subtype; name=value; name="quoted value"`.
    pub fn parse(value: &str) -> Option<ContentType> {
        let mut pieces = split_outside_quotes(value, ';').into_iter();
        let (kind, subtype) = pieces.next()?.split_once('/')?;
        let (kind, subtype) = (kind.trim(), subtype.trim());
        if kind.is_empty() || subtype.is_empty() {
            return None;
        }
        let params = pieces
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                let v = v.trim();
                let v = v
                    .strip_prefix('"')
                    .and_then(|v| v.strip_suffix('"'))
                    .unwrap_or(v);
                Some((k.trim().to_ascii_lowercase(), v.replace("\\\"", "\"")))
            })
            .collect();
        Some(ContentType {
            kind: kind.to_ascii_lowercase(),
            subtype: subtype.to_ascii_lowercase(),
            params,
        })
    }

    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn is_multipart(&self) -> bool {
        self.kind == "multipart"
    }

    pub fn is_message(&self) -> bool {
        self.kind == "message" && self.subtype == "rfc822"
    }
}

/// One MIME entity: a whole message, a body part, or a message embedded in a part.
#[derive(Debug, Clone)]
pub struct Part<'a> {
    pub header: &'a [u8],
    pub body: &'a [u8],
    pub content_type: ContentType,
    /// Sub-parts of a multipart entity.
    pub children: Vec<Part<'a>>,
    /// The message inside a `message/rfc822` entity.
    pub embedded: Option<Box<Part<'a>>>,
}

impl<'a> Part<'a> {
    /// Parses a message (or a body part) into its MIME tree.
    pub fn parse(raw: &'a [u8]) -> Part<'a> {
        Part::parse_at(raw, 0)
    }

    fn parse_at(raw: &'a [u8], depth: usize) -> Part<'a> {
        let (header, body) = split(raw);
        let content_type = field_value(header, "Content-Type")
            .and_then(|v| ContentType::parse(&v))
            .unwrap_or_else(ContentType::text_plain);
        let mut part = Part {
            header,
            body,
            content_type,
            children: Vec::new(),
            embedded: None,
        };
        if depth >= MAX_DEPTH {
            return part;
        }
        if part.content_type.is_multipart() {
            if let Some(boundary) = part.content_type.param("boundary") {
                part.children = split_multipart(body, boundary)
                    .into_iter()
                    .map(|p| Part::parse_at(p, depth + 1))
                    .collect();
            }
        } else if part.content_type.is_message() {
            part.embedded = Some(Box::new(Part::parse_at(body, depth + 1)));
        }
        part
    }

    pub fn field(&self, name: &str) -> Option<String> {
        field_value(self.header, name)
    }

    /// The entities numbered 1.. below this one in IMAP section numbering: a multipart's
    /// parts, an embedded message's parts, or (for a single part) the entity itself.
    pub fn numbered_children(&self) -> Vec<&Part<'a>> {
        if self.content_type.is_multipart() && !self.children.is_empty() {
            return self.children.iter().collect();
        }
        if let Some(inner) = &self.embedded {
            return inner.numbered_children();
        }
        vec![self]
    }
}

/// The bodies between `--boundary` delimiter lines (RFC 2046 §5.1.1); the line break
/// before each delimiter belongs to the delimiter.
fn split_multipart<'a>(body: &'a [u8], boundary: &str) -> Vec<&'a [u8]> {
    let delimiter = format!("--{boundary}");
    let mut parts = Vec::new();
    let mut start: Option<usize> = None;
    let mut pos = 0;
    while pos < body.len() {
        let line_end = body[pos..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(body.len(), |i| pos + i);
        let line = body[pos..line_end].trim_ascii_end();
        if let Some(rest) = line.strip_prefix(delimiter.as_bytes()) {
            let closing = rest.starts_with(b"--");
            if closing || rest.trim_ascii().is_empty() {
                if let Some(s) = start {
                    let mut end = pos;
                    if end > s && body[end - 1] == b'\n' {
                        end -= 1;
                        if end > s && body[end - 1] == b'\r' {
                            end -= 1;
                        }
                    }
                    parts.push(&body[s..end]);
                }
                if closing {
                    return parts;
                }
                start = Some((line_end + 1).min(body.len()));
            }
        }
        pos = line_end + 1;
    }
    if let Some(s) = start {
        parts.push(&body[s..]);
    }
    parts
}

/// Splits on `sep` outside double quotes, angle brackets and comments.
fn split_outside_quotes(s: &str, sep: char) -> Vec<&str> {
    let mut out = Vec::new();
    let (mut quoted, mut angle, mut comment, mut escaped) = (false, false, 0usize, false);
    let mut start = 0;
    for (i, c) in s.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' if comment == 0 => quoted = !quoted,
            '<' if !quoted && comment == 0 => angle = true,
            '>' if !quoted && comment == 0 => angle = false,
            '(' if !quoted => comment += 1,
            ')' if !quoted => comment = comment.saturating_sub(1),
            c if c == sep && !quoted && !angle && comment == 0 => {
                out.push(&s[start..i]);
                start = i + c.len_utf8();
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// An address from a `From:`/`To:`-style field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    pub name: Option<String>,
    pub mailbox: String,
    pub host: Option<String>,
}

/// Parses an address list (`"Name" <a@b>, c@d (comment)`); groups are flattened.
pub fn addresses(value: &str) -> Vec<Address> {
    split_outside_quotes(value, ',')
        .into_iter()
        .filter_map(|item| {
            let item = item.trim();
            // Flatten "Group: a@b;" by dropping the group label and terminator.
            let item = match (item.find(':'), item.find('<'), item.find('"')) {
                (Some(c), lt, q) if lt.is_none_or(|l| c < l) && q.is_none_or(|q| c < q) => {
                    item[c + 1..].trim().trim_end_matches(';').trim()
                }
                _ => item,
            };
            if item.is_empty() {
                return None;
            }
            let (name, spec) = match (item.rfind('<'), item.rfind('>')) {
                (Some(lt), Some(gt)) if lt < gt => {
                    let name = item[..lt].trim().trim_matches('"').trim();
                    let name = (!name.is_empty()).then(|| name.replace("\\\"", "\""));
                    (name, item[lt + 1..gt].trim())
                }
                _ => (None, strip_comments(item)),
            };
            let (mailbox, host) = match spec.rsplit_once('@') {
                Some((m, h)) => (m.to_string(), Some(h.to_string())),
                None => (spec.to_string(), None),
            };
            Some(Address {
                name,
                mailbox,
                host,
            })
        })
        .collect()
}

fn strip_comments(s: &str) -> &str {
    s.split('(').next().unwrap_or(s).trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIMPLE: &[u8] =
        b"From: \"Doe, Jane\" <jane@example.com>\r\nSubject: Hello\r\n  world\r\n\r\nLine 1\r\nLine 2\r\n";

    #[test]
    fn splits_and_unfolds() {
        let (h, b) = split(SIMPLE);
        assert!(h.ends_with(b"world\r\n\r\n"));
        assert_eq!(b, b"Line 1\r\nLine 2\r\n");
        assert_eq!(field_value(h, "subject").as_deref(), Some("Hello  world"));
        let f = fields(h);
        assert_eq!(f.len(), 2);
        assert_eq!(f[1].raw, b"Subject: Hello\r\n  world\r\n");
        assert_eq!(split(b"no blank line"), (&b"no blank line"[..], &b""[..]));
        assert_eq!(split(b"A: b\n\nbody"), (&b"A: b\n\n"[..], &b"body"[..]));
        assert_eq!(line_count(b"Line 1\r\nLine 2\r\n"), 2);
        assert_eq!(line_count(b"a\nb"), 2);
    }

    #[test]
    fn parses_addresses() {
        let a = addresses("\"Doe, Jane\" <jane@example.com>, bob@example.org (Bob), Team: x@y;");
        assert_eq!(a.len(), 3);
        assert_eq!(a[0].name.as_deref(), Some("Doe, Jane"));
        assert_eq!(
            (a[0].mailbox.as_str(), a[0].host.as_deref()),
            ("jane", Some("example.com"))
        );
        assert_eq!((a[1].name.clone(), a[1].mailbox.as_str()), (None, "bob"));
        assert_eq!(a[2].mailbox, "x");
    }

    #[test]
    fn parses_mime_trees() {
        let raw = b"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\npreamble\r\n--b1\r\nContent-Type: text/plain; charset=utf-8\r\n\r\nhello\r\n--b1\r\nContent-Type: message/rfc822\r\n\r\nSubject: inner\r\n\r\ninner body\r\n--b1--\r\nepilogue\r\n";
        let p = Part::parse(raw);
        assert!(p.content_type.is_multipart());
        assert_eq!(p.children.len(), 2);
        assert_eq!(p.children[0].body, b"hello");
        assert_eq!(p.children[0].content_type.param("charset"), Some("utf-8"));
        let inner = p.children[1].embedded.as_ref().unwrap();
        assert_eq!(inner.field("subject").as_deref(), Some("inner"));
        assert_eq!(inner.body, b"inner body");
        assert_eq!(p.numbered_children().len(), 2);
        let single = Part::parse(SIMPLE);
        assert_eq!(single.content_type.subtype, "plain");
        assert_eq!(single.numbered_children().len(), 1);
    }
}
