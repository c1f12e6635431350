//! The INBOX as one POP3 session sees it (RFC 1939 §5): a snapshot taken at login, so
//! message numbers stay fixed for the session, with deletion marks that reach the shared
//! [`Directory`] only when the client says QUIT.

use bytes::Bytes;

use crate::directory::Directory;
use crate::message;

const NO_SUCH_MESSAGE: &str = "-ERR The specified message is out of range.\r\n";
const ALREADY_DELETED: &str = "-ERR The specified message has been deleted.\r\n";

#[derive(Debug, Clone)]
struct Entry {
    uid: u32,
    raw: Bytes,
    deleted: bool,
}

/// One session's view of the INBOX.
#[derive(Debug, Clone)]
pub struct Maildrop {
    mailbox: String,
    uid_validity: u32,
    messages: Vec<Entry>,
}

impl Maildrop {
    /// The INBOX of `mailbox` as it is now (empty if there is none).
    pub fn snapshot(directory: &Directory, mailbox: &str) -> Maildrop {
        let folder = directory.folder(mailbox, "INBOX");
        Maildrop {
            mailbox: mailbox.to_string(),
            uid_validity: folder.as_ref().map_or(1, |f| f.uid_validity),
            messages: folder
                .map(|f| {
                    f.messages
                        .into_iter()
                        .map(|m| Entry {
                            uid: m.uid,
                            raw: m.raw,
                            deleted: false,
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    fn live(&self) -> impl Iterator<Item = (usize, &Entry)> {
        self.messages
            .iter()
            .enumerate()
            .filter(|(_, m)| !m.deleted)
            .map(|(i, m)| (i + 1, m))
    }

    /// Message `number` (1-based) unless it is out of range or marked deleted.
    fn get(&self, number: u32) -> Result<&Entry, &'static str> {
        let index = (number as usize).checked_sub(1).ok_or(NO_SUCH_MESSAGE)?;
        match self.messages.get(index) {
            None => Err(NO_SUCH_MESSAGE),
            Some(m) if m.deleted => Err(ALREADY_DELETED),
            Some(m) => Ok(m),
        }
    }

    /// A unique id that stays the same across sessions (RFC 1939 §7: printable, at most
    /// 70 characters).
    fn unique_id(&self, entry: &Entry) -> String {
        format!("AAQkAD{:08X}{:08X}", self.uid_validity, entry.uid)
    }

    pub fn stat(&self) -> Vec<u8> {
        let (count, size) = self
            .live()
            .fold((0, 0), |(c, s), (_, m)| (c + 1, s + m.raw.len()));
        format!("+OK {count} {size}\r\n").into_bytes()
    }

    pub fn list(&self, number: Option<u32>) -> Vec<u8> {
        self.scan(number, |_, m| m.raw.len().to_string())
    }

    pub fn uidl(&self, number: Option<u32>) -> Vec<u8> {
        self.scan(number, |this, m| this.unique_id(m))
    }

    /// LIST and UIDL: one message on the status line, or all live ones as a multi-line reply.
    fn scan(&self, number: Option<u32>, value: impl Fn(&Self, &Entry) -> String) -> Vec<u8> {
        match number {
            Some(n) => match self.get(n) {
                Ok(m) => format!("+OK {n} {}\r\n", value(self, m)).into_bytes(),
                Err(e) => e.as_bytes().to_vec(),
            },
            None => {
                let mut out = b"+OK\r\n".to_vec();
                for (n, m) in self.live() {
                    out.extend_from_slice(format!("{n} {}\r\n", value(self, m)).as_bytes());
                }
                out.extend_from_slice(b".\r\n");
                out
            }
        }
    }

    pub fn retr(&self, number: u32) -> Vec<u8> {
        match self.get(number) {
            Ok(m) => {
                let mut out = format!("+OK {} octets\r\n", m.raw.len()).into_bytes();
                multi_line(&m.raw, &mut out);
                out
            }
            Err(e) => e.as_bytes().to_vec(),
        }
    }

    /// The header, the blank line and the first `lines` lines of the body.
    pub fn top(&self, number: u32, lines: usize) -> Vec<u8> {
        match self.get(number) {
            Ok(m) => {
                let (header, body) = message::split(&m.raw);
                let end = body
                    .iter()
                    .enumerate()
                    .filter(|(_, &b)| b == b'\n')
                    .nth(lines.saturating_sub(1))
                    .map_or(body.len(), |(i, _)| i + 1);
                let end = if lines == 0 { 0 } else { end };
                let mut shown = header.to_vec();
                shown.extend_from_slice(&body[..end]);
                let mut out = b"+OK\r\n".to_vec();
                multi_line(&shown, &mut out);
                out
            }
            Err(e) => e.as_bytes().to_vec(),
        }
    }

    pub fn dele(&mut self, number: u32) -> Vec<u8> {
        let index = match self.get(number) {
            Ok(_) => number as usize - 1,
            Err(e) => return e.as_bytes().to_vec(),
        };
        self.messages[index].deleted = true;
        b"+OK Marked to be deleted.\r\n".to_vec()
    }

    pub fn rset(&mut self) -> Vec<u8> {
        for m in &mut self.messages {
            m.deleted = false;
        }
        b"+OK\r\n".to_vec()
    }

    /// The UPDATE state: removes the messages marked deleted from the INBOX.
    pub fn commit(&self, directory: &Directory) {
        let doomed: Vec<u32> = self
            .messages
            .iter()
            .filter(|m| m.deleted)
            .map(|m| m.uid)
            .collect();
        if doomed.is_empty() {
            return;
        }
        let _ = directory.modify_folder(&self.mailbox, "INBOX", |folder| {
            folder.expunge(|m| doomed.contains(&m.uid))
        });
    }
}

/// Appends `content` as a multi-line response body (RFC 1939 §3): every line ends in CRLF,
/// a line starting with `.` gets another `.`, and `.` CRLF terminates.
pub fn multi_line(content: &[u8], out: &mut Vec<u8>) {
    if !content.is_empty() {
        let content = content.strip_suffix(b"\n").unwrap_or(content);
        for line in content.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.first() == Some(&b'.') {
                out.push(b'.');
            }
            out.extend_from_slice(line);
            out.extend_from_slice(b"\r\n");
        }
    }
    out.extend_from_slice(b".\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &[u8] = b"Subject: a\r\n\r\nline 1\r\n.hidden dot\r\nline 3\r\n";
    const B: &[u8] = b"Subject: b\r\n\r\nbody\r\n";

    fn maildrop() -> (Directory, Maildrop) {
        let d = Directory::new();
        d.deliver("m@x", "INBOX", A);
        d.deliver("m@x", "INBOX", B);
        let drop = Maildrop::snapshot(&d, "m@x");
        (d, drop)
    }

    fn text(bytes: Vec<u8>) -> String {
        String::from_utf8(bytes).unwrap()
    }

    #[test]
    fn pop3_stat_list_uidl() {
        let (_, m) = maildrop();
        assert_eq!(text(m.stat()), format!("+OK 2 {}\r\n", A.len() + B.len()));
        assert_eq!(
            text(m.list(None)),
            format!("+OK\r\n1 {}\r\n2 {}\r\n.\r\n", A.len(), B.len())
        );
        assert_eq!(text(m.list(Some(2))), format!("+OK 2 {}\r\n", B.len()));
        assert_eq!(text(m.list(Some(3))), NO_SUCH_MESSAGE);
        assert_eq!(text(m.list(Some(0))), NO_SUCH_MESSAGE);
        let uidl = text(m.uidl(None));
        let ids: Vec<&str> = uidl.lines().skip(1).take(2).collect();
        assert_ne!(ids[0].split(' ').nth(1), ids[1].split(' ').nth(1));
        assert!(ids.iter().all(|l| l.len() < 75));
    }

    #[test]
    fn pop3_retr_dot_stuffs_and_top_cuts_the_body() {
        let (_, m) = maildrop();
        assert_eq!(
            m.retr(1),
            format!(
                "+OK {} octets\r\nSubject: a\r\n\r\nline 1\r\n..hidden dot\r\nline 3\r\n.\r\n",
                A.len()
            )
            .into_bytes()
        );
        assert_eq!(text(m.top(1, 0)), "+OK\r\nSubject: a\r\n\r\n.\r\n");
        assert_eq!(
            text(m.top(1, 2)),
            "+OK\r\nSubject: a\r\n\r\nline 1\r\n..hidden dot\r\n.\r\n"
        );
        assert_eq!(text(m.top(2, 50)), "+OK\r\nSubject: b\r\n\r\nbody\r\n.\r\n");
    }

    #[test]
    fn pop3_multi_line_normalises_line_ends() {
        let mut out = Vec::new();
        multi_line(b"a\nb\r\n.\nno end", &mut out);
        assert_eq!(out, b"a\r\nb\r\n..\r\nno end\r\n.\r\n");
        let mut out = Vec::new();
        multi_line(b"", &mut out);
        assert_eq!(out, b".\r\n");
    }

    #[test]
    fn pop3_deletions_apply_only_at_commit_and_rset_undoes_them() {
        let (d, mut m) = maildrop();
        assert_eq!(text(m.dele(1)), "+OK Marked to be deleted.\r\n");
        assert_eq!(text(m.dele(1)), ALREADY_DELETED);
        assert_eq!(text(m.retr(1)), ALREADY_DELETED);
        assert_eq!(text(m.stat()), format!("+OK 1 {}\r\n", B.len()));
        assert_eq!(text(m.list(None)), format!("+OK\r\n2 {}\r\n.\r\n", B.len()));
        assert_eq!(d.messages("m@x", "INBOX").len(), 2);
        m.rset();
        assert_eq!(text(m.stat()), format!("+OK 2 {}\r\n", A.len() + B.len()));
        m.dele(2);
        m.commit(&d);
        assert_eq!(d.messages("m@x", "INBOX"), vec![A.to_vec()]);
    }
}
