//! One mailbox's folders and messages, independent of any protocol: IMAP reads and writes
//! it through UIDs and flags, POP3 lists, retrieves and deletes from INBOX, and SMTP
//! delivers into it. Locking is the [`Directory`](crate::Directory)'s job.

use std::collections::{btree_map, BTreeMap};
use std::time::SystemTime;

use bytes::Bytes;

/// The folders every new mailbox gets, with the special-use attribute Exchange Online shows
/// for each in LIST.
pub const DEFAULT_FOLDERS: [(&str, Option<&str>); 4] = [
    ("INBOX", None),
    ("Sent Items", Some("\\Sent")),
    ("Drafts", Some("\\Drafts")),
    ("Deleted Items", Some("\\Trash")),
];

/// Folder hierarchy delimiter, as Exchange Online reports it.
pub const DELIMITER: char = '/';

/// The system flags Exchange Online lets clients set (plus `$MDNSent`).
pub const PERMANENT_FLAGS: &str = "\\Seen \\Answered \\Flagged \\Deleted \\Draft $MDNSent";

/// A message as stored: the raw bytes are kept exactly as delivered.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    pub uid: u32,
    pub raw: Bytes,
    pub flags: Flags,
    pub internal_date: SystemTime,
}

/// Message flags, compared case-insensitively as IMAP requires, kept in insertion order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags(Vec<String>);

impl Flags {
    pub fn new<I: IntoIterator<Item = S>, S: AsRef<str>>(flags: I) -> Flags {
        let mut out = Flags::default();
        for f in flags {
            out.insert(f.as_ref());
        }
        out
    }

    pub fn contains(&self, flag: &str) -> bool {
        self.0.iter().any(|f| f.eq_ignore_ascii_case(flag))
    }

    /// Adds `flag` (system flags in their canonical spelling); returns whether it was new.
    pub fn insert(&mut self, flag: &str) -> bool {
        if flag.is_empty() || self.contains(flag) {
            return false;
        }
        self.0.push(canonical_flag(flag));
        true
    }

    pub fn remove(&mut self, flag: &str) {
        self.0.retain(|f| !f.eq_ignore_ascii_case(flag));
    }

    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// The IMAP list form, e.g. `(\Seen \Flagged)`.
    pub fn to_imap(&self) -> String {
        format!("({})", self.0.join(" "))
    }
}

fn canonical_flag(flag: &str) -> String {
    const SYSTEM: [&str; 6] = [
        "\\Seen",
        "\\Answered",
        "\\Flagged",
        "\\Deleted",
        "\\Draft",
        "\\Recent",
    ];
    SYSTEM
        .iter()
        .find(|s| s.eq_ignore_ascii_case(flag))
        .map_or_else(|| flag.to_string(), |s| s.to_string())
}

/// One folder: its UID space and its messages in UID order.
#[derive(Debug, Clone)]
pub struct Folder {
    pub name: String,
    pub special_use: Option<&'static str>,
    pub uid_validity: u32,
    pub uid_next: u32,
    pub messages: Vec<StoredMessage>,
}

impl Folder {
    fn new(name: &str, special_use: Option<&'static str>, uid_validity: u32) -> Folder {
        Folder {
            name: name.to_string(),
            special_use,
            uid_validity,
            uid_next: 1,
            messages: Vec::new(),
        }
    }

    /// Appends a message and returns its new UID.
    pub fn append(&mut self, raw: Bytes, flags: Flags, internal_date: SystemTime) -> u32 {
        let uid = self.uid_next;
        self.uid_next = self.uid_next.saturating_add(1);
        self.messages.push(StoredMessage {
            uid,
            raw,
            flags,
            internal_date,
        });
        uid
    }

    pub fn get_mut(&mut self, uid: u32) -> Option<&mut StoredMessage> {
        let i = self.messages.binary_search_by_key(&uid, |m| m.uid).ok()?;
        self.messages.get_mut(i)
    }

    /// Removes the messages `doomed` selects; returns their UIDs.
    pub fn expunge(&mut self, doomed: impl Fn(&StoredMessage) -> bool) -> Vec<u32> {
        let mut removed = Vec::new();
        self.messages.retain(|m| {
            let gone = doomed(m);
            if gone {
                removed.push(m.uid);
            }
            !gone
        });
        removed
    }

    pub fn unseen(&self) -> usize {
        self.messages
            .iter()
            .filter(|m| !m.flags.contains("\\Seen"))
            .count()
    }
}

/// Why a store operation could not be done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    #[error("no such mailbox")]
    NoMailbox,
    #[error("no such folder")]
    NoFolder,
    #[error("folder already exists")]
    FolderExists,
    #[error("this folder cannot be removed")]
    Protected,
}

/// A mailbox: its folders keyed by canonical name.
#[derive(Debug, Clone)]
pub struct Mailbox {
    pub address: String,
    folders: BTreeMap<String, Folder>,
    next_uid_validity: u32,
}

impl Mailbox {
    /// A mailbox with the [`DEFAULT_FOLDERS`].
    pub fn new(address: &str) -> Mailbox {
        let mut mailbox = Mailbox {
            address: address.to_string(),
            folders: BTreeMap::new(),
            next_uid_validity: 14,
        };
        for (name, special) in DEFAULT_FOLDERS {
            mailbox.insert_folder(name, special);
        }
        mailbox
    }

    /// The folder `name`, inserted with a fresh UID validity if it does not exist yet.
    fn insert_folder(&mut self, name: &str, special_use: Option<&'static str>) -> &mut Folder {
        match self.folders.entry(folder_key(name)) {
            btree_map::Entry::Occupied(o) => o.into_mut(),
            btree_map::Entry::Vacant(v) => {
                let validity = self.next_uid_validity;
                self.next_uid_validity += 1;
                v.insert(Folder::new(
                    &canonical_folder_name(name),
                    special_use,
                    validity,
                ))
            }
        }
    }

    pub fn folder(&self, name: &str) -> Option<&Folder> {
        self.folders.get(&folder_key(name))
    }

    pub fn folder_mut(&mut self, name: &str) -> Option<&mut Folder> {
        self.folders.get_mut(&folder_key(name))
    }

    /// The folder, created on first use (deliveries to a folder that does not exist yet).
    pub fn folder_or_create(&mut self, name: &str) -> &mut Folder {
        self.insert_folder(name, None)
    }

    pub fn create_folder(&mut self, name: &str) -> Result<(), StoreError> {
        if self.folder(name).is_some() {
            return Err(StoreError::FolderExists);
        }
        self.insert_folder(name, None);
        Ok(())
    }

    pub fn delete_folder(&mut self, name: &str) -> Result<(), StoreError> {
        let key = folder_key(name);
        if key == "INBOX" {
            return Err(StoreError::Protected);
        }
        self.folders
            .remove(&key)
            .map(|_| ())
            .ok_or(StoreError::NoFolder)
    }

    pub fn folders(&self) -> impl Iterator<Item = &Folder> {
        self.folders.values()
    }
}

/// INBOX is case-insensitive (RFC 3501); every other name is case-sensitive.
fn canonical_folder_name(name: &str) -> String {
    if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name.to_string()
    }
}

fn folder_key(name: &str) -> String {
    canonical_folder_name(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_case_insensitive_and_canonical() {
        let mut f = Flags::new(["\\seen", "$Label"]);
        assert!(f.contains("\\SEEN"));
        assert!(!f.insert("\\Seen"));
        assert_eq!(f.to_imap(), "(\\Seen $Label)");
        f.remove("$label");
        assert_eq!(f.to_imap(), "(\\Seen)");
    }

    #[test]
    fn folders_have_uid_spaces_and_expunge() {
        let mut m = Mailbox::new("a@b");
        assert!(m.folder("inbox").is_some());
        let inbox = m.folder_or_create("INBOX");
        let now = SystemTime::now();
        assert_eq!(
            inbox.append(Bytes::from_static(b"x"), Flags::default(), now),
            1
        );
        assert_eq!(
            inbox.append(Bytes::from_static(b"y"), Flags::new(["\\Deleted"]), now),
            2
        );
        assert_eq!(inbox.unseen(), 2);
        assert_eq!(inbox.expunge(|m| m.flags.contains("\\Deleted")), vec![2]);
        assert_eq!(inbox.uid_next, 3);
        assert!(m.delete_folder("INBOX").is_err());
        assert!(m.create_folder("Drafts").is_err());
        m.create_folder("Projects/2026").unwrap();
        let created = m.folder("Projects/2026").unwrap();
        assert_ne!(
            created.uid_validity,
            m.folder("INBOX").unwrap().uid_validity
        );
        m.folder_or_create("Archive");
        assert_eq!(m.folders().count(), 6);
    }
}
