//! The selected state: one session's view of a folder (the UIDs behind its sequence
//! numbers), kept in step with the shared store, and the message commands that work on it
//! (FETCH, STORE, SEARCH, EXPUNGE, COPY/MOVE). Each returns the untagged response bytes;
//! the session adds the tagged reply.

use std::collections::HashMap;

use super::command::{Arg, StoreMode};
use super::fetch::{self, FetchItem};
use super::search::{self, Position};
use super::sequence::{compact, SequenceSet};
use crate::directory::Directory;
use crate::mailbox::{Flags, StoreError, StoredMessage, PERMANENT_FLAGS};

/// A selected folder as one session sees it.
#[derive(Debug)]
pub(crate) struct Selection {
    pub mailbox: String,
    pub folder: String,
    pub read_only: bool,
    /// UIDs in sequence-number order, as last told to the client.
    view: Vec<u32>,
}

impl Selection {
    /// Opens `folder`; returns the selection and the untagged SELECT/EXAMINE responses
    /// in Exchange Online's order and wording.
    pub fn open(
        directory: &Directory,
        mailbox: &str,
        folder: &str,
        read_only: bool,
    ) -> Option<(Selection, Vec<u8>)> {
        let f = directory.folder(mailbox, folder)?;
        let view: Vec<u32> = f.messages.iter().map(|m| m.uid).collect();
        let mut out = format!(
            "* {} EXISTS\r\n* 0 RECENT\r\n* FLAGS ({PERMANENT_FLAGS})\r\n",
            view.len()
        );
        let permanent = if read_only { "" } else { PERMANENT_FLAGS };
        out.push_str(&format!(
            "* OK [PERMANENTFLAGS ({permanent})] Permanent flags\r\n"
        ));
        if let Some(i) = f.messages.iter().position(|m| !m.flags.contains("\\Seen")) {
            out.push_str(&format!(
                "* OK [UNSEEN {}] Is the first unseen message\r\n",
                i + 1
            ));
        }
        out.push_str(&format!(
            "* OK [UIDVALIDITY {}] UIDVALIDITY value\r\n* OK [UIDNEXT {}] The next unique identifier value\r\n",
            f.uid_validity, f.uid_next
        ));
        let selection = Selection {
            mailbox: mailbox.to_string(),
            folder: f.name,
            read_only,
            view,
        };
        Some((selection, out.into_bytes()))
    }

    fn messages(&self, directory: &Directory) -> Vec<StoredMessage> {
        directory
            .folder(&self.mailbox, &self.folder)
            .map(|f| f.messages)
            .unwrap_or_default()
    }

    /// Tells the client about changes by others: `* n EXPUNGE` for vanished messages (only
    /// when `allow_expunge`, since FETCH/STORE/SEARCH must not renumber) and `* n EXISTS`
    /// for new ones.
    pub fn sync(&mut self, directory: &Directory, allow_expunge: bool) -> Vec<u8> {
        let current: Vec<u32> = self.messages(directory).iter().map(|m| m.uid).collect();
        let mut out = String::new();
        if allow_expunge {
            for i in (0..self.view.len()).rev() {
                if current.binary_search(&self.view[i]).is_err() {
                    self.view.remove(i);
                    out.push_str(&format!("* {} EXPUNGE\r\n", i + 1));
                }
            }
        }
        let last = self.view.last().copied().unwrap_or(0);
        let before = self.view.len();
        self.view.extend(current.iter().filter(|&&uid| uid > last));
        if self.view.len() != before {
            out.push_str(&format!("* {} EXISTS\r\n", self.view.len()));
        }
        out.into_bytes()
    }

    /// `(sequence number, uid)` of the messages `set` names.
    fn targets(&self, uid: bool, set: &SequenceSet) -> Vec<(u32, u32)> {
        let largest_seq = self.view.len() as u32;
        let largest_uid = self.view.last().copied().unwrap_or(0);
        self.view
            .iter()
            .enumerate()
            .map(|(i, &u)| (i as u32 + 1, u))
            .filter(|&(seq, u)| {
                if uid {
                    set.contains(u, largest_uid)
                } else {
                    set.contains(seq, largest_seq)
                }
            })
            .collect()
    }

    pub fn fetch(
        &mut self,
        directory: &Directory,
        uid: bool,
        set: &SequenceSet,
        items: &[FetchItem],
    ) -> Vec<u8> {
        let marks_seen = !self.read_only && items.iter().any(FetchItem::sets_seen);
        let by_uid: HashMap<u32, StoredMessage> = self
            .messages(directory)
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        let mut out = Vec::new();
        for (seq, u) in self.targets(uid, set) {
            let Some(mut msg) = by_uid.get(&u).cloned() else {
                continue;
            };
            let mut changed = false;
            if marks_seen && !msg.flags.contains("\\Seen") {
                let updated = directory.modify_folder(&self.mailbox, &self.folder, |f| {
                    f.get_mut(u).map(|m| {
                        m.flags.insert("\\Seen");
                        m.flags.clone()
                    })
                });
                if let Ok(Some(flags)) = updated {
                    msg.flags = flags;
                    changed = true;
                }
            }
            out.extend(fetch::render(seq, &msg, items, uid, changed));
        }
        out
    }

    pub fn store(
        &mut self,
        directory: &Directory,
        uid: bool,
        set: &SequenceSet,
        mode: StoreMode,
        silent: bool,
        flags: &[String],
    ) -> Vec<u8> {
        let mut out = String::new();
        for (seq, u) in self.targets(uid, set) {
            let updated = directory.modify_folder(&self.mailbox, &self.folder, |f| {
                f.get_mut(u).map(|m| {
                    match mode {
                        StoreMode::Add => flags.iter().for_each(|fl| {
                            m.flags.insert(fl);
                        }),
                        StoreMode::Remove => flags.iter().for_each(|fl| m.flags.remove(fl)),
                        StoreMode::Replace => m.flags = Flags::new(flags),
                    }
                    m.flags.clone()
                })
            });
            if let (false, Ok(Some(new_flags))) = (silent, updated) {
                let uid_part = if uid {
                    format!("UID {u} ")
                } else {
                    String::new()
                };
                out.push_str(&format!(
                    "* {seq} FETCH ({uid_part}FLAGS {})\r\n",
                    new_flags.to_imap()
                ));
            }
        }
        out.into_bytes()
    }

    /// `* SEARCH ...`, or `None` if the criteria do not parse.
    pub fn search(&self, directory: &Directory, uid: bool, criteria: &[Arg]) -> Option<Vec<u8>> {
        let criterion = search::parse(criteria)?;
        let by_uid: HashMap<u32, StoredMessage> = self
            .messages(directory)
            .into_iter()
            .map(|m| (m.uid, m))
            .collect();
        let largest_seq = self.view.len() as u32;
        let largest_uid = self.view.last().copied().unwrap_or(0);
        let mut out = String::from("* SEARCH");
        for (i, u) in self.view.iter().enumerate() {
            let Some(msg) = by_uid.get(u) else { continue };
            let pos = Position {
                seq: i as u32 + 1,
                largest_seq,
                largest_uid,
            };
            if search::matches(&criterion, msg, pos) {
                out.push_str(&format!(" {}", if uid { *u } else { pos.seq }));
            }
        }
        out.push_str("\r\n");
        Some(out.into_bytes())
    }

    /// Removes `\Deleted` messages (only those in `uids`, for UID EXPUNGE) and returns the
    /// `* n EXPUNGE` responses (with any news from other sessions).
    pub fn expunge(&mut self, directory: &Directory, uids: Option<&SequenceSet>) -> Vec<u8> {
        let largest_uid = self.view.last().copied().unwrap_or(0);
        let _ = directory.modify_folder(&self.mailbox, &self.folder, |f| {
            f.expunge(|m| {
                m.flags.contains("\\Deleted") && uids.is_none_or(|s| s.contains(m.uid, largest_uid))
            })
        });
        self.sync(directory, true)
    }

    /// Expunges silently (CLOSE).
    pub fn close(self, directory: &Directory) {
        if !self.read_only {
            let _ = directory.modify_folder(&self.mailbox, &self.folder, |f| {
                f.expunge(|m| m.flags.contains("\\Deleted"))
            });
        }
    }

    /// COPY or MOVE; returns the untagged responses and the `COPYUID` response code.
    pub fn copy(
        &mut self,
        directory: &Directory,
        uid: bool,
        set: &SequenceSet,
        target: &str,
        moving: bool,
    ) -> Result<(Vec<u8>, String), StoreError> {
        let uids: Vec<u32> = self.targets(uid, set).into_iter().map(|(_, u)| u).collect();
        let (validity, pairs) =
            directory.copy_messages(&self.mailbox, &self.folder, &uids, target)?;
        let (from, to): (Vec<u32>, Vec<u32>) = pairs.into_iter().unzip();
        let code = if from.is_empty() {
            String::new()
        } else {
            format!("[COPYUID {validity} {} {}] ", compact(&from), compact(&to))
        };
        let mut out = Vec::new();
        if moving {
            out.extend(format!("* OK {code}\r\n").into_bytes());
            let _ = directory.modify_folder(&self.mailbox, &self.folder, |f| {
                f.expunge(|m| from.contains(&m.uid))
            });
            out.extend(self.sync(directory, true));
        }
        Ok((out, code))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (Directory, Selection) {
        let d = Directory::new();
        d.add_mailbox("a@x");
        for i in 0..3 {
            d.deliver(
                "a@x",
                "INBOX",
                format!("Subject: {i}\r\n\r\nbody {i}\r\n").as_bytes(),
            );
        }
        let (sel, out) = Selection::open(&d, "a@x", "INBOX", false).unwrap();
        let out = String::from_utf8(out).unwrap();
        assert!(out.starts_with("* 3 EXISTS\r\n* 0 RECENT\r\n* FLAGS (\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent)\r\n"));
        assert!(out.contains("* OK [UNSEEN 1] Is the first unseen message\r\n"));
        assert!(out.contains("* OK [UIDNEXT 4] The next unique identifier value\r\n"));
        (d, sel)
    }

    fn s(v: Vec<u8>) -> String {
        String::from_utf8(v).unwrap()
    }

    fn set(x: &str) -> SequenceSet {
        SequenceSet::parse(x).unwrap()
    }

    #[test]
    fn fetch_marks_seen_unless_peek_or_read_only() {
        let (d, mut sel) = setup();
        let items = fetch::parse_items(&Arg::Atom("BODY[]".into())).unwrap();
        let out = s(sel.fetch(&d, false, &set("2"), &items));
        assert!(
            out.starts_with(
                "* 2 FETCH (BODY[] {22}\r\nSubject: 1\r\n\r\nbody 1\r\n FLAGS (\\Seen))\r\n"
            ),
            "{out}"
        );
        let peek = fetch::parse_items(&Arg::Atom("BODY.PEEK[]".into())).unwrap();
        let out = s(sel.fetch(&d, true, &set("3"), &peek));
        assert!(out.starts_with("* 3 FETCH (UID 3 BODY[] {22}"), "{out}");
        assert!(!out.contains("FLAGS"));
        let (mut ro, _) = Selection::open(&d, "a@x", "INBOX", true).unwrap();
        let _ = ro.fetch(&d, false, &set("1"), &items);
        assert_eq!(d.folder("a@x", "INBOX").unwrap().unseen(), 2);
    }

    #[test]
    fn store_search_expunge() {
        let (d, mut sel) = setup();
        let out = s(sel.store(
            &d,
            true,
            &set("1:2"),
            StoreMode::Add,
            false,
            &["\\Deleted".into()],
        ));
        assert_eq!(
            out,
            "* 1 FETCH (UID 1 FLAGS (\\Deleted))\r\n* 2 FETCH (UID 2 FLAGS (\\Deleted))\r\n"
        );
        assert!(sel
            .store(
                &d,
                false,
                &set("3"),
                StoreMode::Replace,
                true,
                &["\\Seen".into()]
            )
            .is_empty());
        let crit = super::super::command::lex(b"DELETED").unwrap();
        assert_eq!(s(sel.search(&d, false, &crit).unwrap()), "* SEARCH 1 2\r\n");
        let crit = super::super::command::lex(b"SEEN").unwrap();
        assert_eq!(s(sel.search(&d, true, &crit).unwrap()), "* SEARCH 3\r\n");
        assert_eq!(s(sel.expunge(&d, Some(&set("2")))), "* 2 EXPUNGE\r\n");
        assert_eq!(s(sel.expunge(&d, None)), "* 1 EXPUNGE\r\n");
        assert_eq!(d.messages("a@x", "INBOX").len(), 1);
    }

    #[test]
    fn sync_reports_deliveries_and_foreign_expunges() {
        let (d, mut sel) = setup();
        d.deliver("a@x", "INBOX", b"new");
        assert_eq!(s(sel.sync(&d, false)), "* 4 EXISTS\r\n");
        let _ = d.modify_folder("a@x", "INBOX", |f| f.expunge(|m| m.uid == 2));
        assert_eq!(s(sel.sync(&d, false)), "");
        assert_eq!(s(sel.sync(&d, true)), "* 2 EXPUNGE\r\n");
    }

    #[test]
    fn copy_and_move() {
        let (d, mut sel) = setup();
        let (out, code) = sel.copy(&d, false, &set("1:2"), "Drafts", false).unwrap();
        assert!(out.is_empty());
        assert_eq!(
            code,
            format!(
                "[COPYUID {} 1:2 1:2] ",
                d.folder("a@x", "Drafts").unwrap().uid_validity
            )
        );
        let (out, _) = sel.copy(&d, true, &set("3"), "Drafts", true).unwrap();
        assert!(s(out).ends_with("* 3 EXPUNGE\r\n"));
        assert_eq!(d.messages("a@x", "Drafts").len(), 3);
        assert_eq!(d.messages("a@x", "INBOX").len(), 2);
        assert!(sel.copy(&d, true, &set("1"), "Nope", false).is_err());
    }
}
