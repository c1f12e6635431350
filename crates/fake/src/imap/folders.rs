//! Folder-level responses: LIST/LSUB with wildcard patterns, and STATUS.

use super::encode::mailbox as mailbox_name;
use crate::directory::Directory;
use crate::mailbox::{Folder, DELIMITER};

/// Longest LIST pattern matched (the matcher is O(name × pattern)).
const MAX_PATTERN: usize = 1024;

/// IMAP LIST wildcard matching: `*` matches anything, `%` anything but the delimiter.
/// INBOX matches case-insensitively.
pub(crate) fn pattern_matches(pattern: &str, name: &str) -> bool {
    let (p, n): (Vec<char>, Vec<char>) = if name == "INBOX" {
        (
            pattern.to_uppercase().chars().collect(),
            name.chars().collect(),
        )
    } else {
        (pattern.chars().collect(), name.chars().collect())
    };
    if p.len() > MAX_PATTERN {
        return false;
    }
    // dp[j]: pattern[..i] matches name[..j].
    let mut dp = vec![false; n.len() + 1];
    dp[0] = true;
    for &pc in &p {
        let mut next = vec![false; n.len() + 1];
        match pc {
            '*' | '%' => {
                next[0] = dp[0];
                for j in 1..=n.len() {
                    let can_eat = pc == '*' || n[j - 1] != DELIMITER;
                    next[j] = dp[j] || (can_eat && next[j - 1]);
                }
            }
            c => {
                for j in 1..=n.len() {
                    next[j] = dp[j - 1] && n[j - 1] == c;
                }
            }
        }
        dp = next;
    }
    dp[n.len()]
}

fn attributes(folder: &Folder, all: &[Folder]) -> String {
    let prefix = format!("{}{}", folder.name, DELIMITER);
    let children = all.iter().any(|f| f.name.starts_with(&prefix));
    let mut attrs = vec![if children {
        "\\HasChildren"
    } else {
        "\\HasNoChildren"
    }];
    attrs.extend(folder.special_use);
    attrs.join(" ")
}

/// The untagged `* LIST` (or `* LSUB`) lines for `reference` + `pattern`.
pub(crate) fn list(
    directory: &Directory,
    mailbox: &str,
    reference: &str,
    pattern: &str,
    lsub: bool,
) -> Vec<u8> {
    let verb = if lsub { "LSUB" } else { "LIST" };
    if pattern.is_empty() {
        // RFC 3501: the hierarchy delimiter and root name.
        return if lsub {
            Vec::new()
        } else {
            format!("* LIST (\\Noselect) \"{DELIMITER}\" \"\"\r\n").into_bytes()
        };
    }
    let full = format!("{reference}{pattern}");
    let folders = directory.folders(mailbox);
    let mut out = String::new();
    for folder in folders.iter().filter(|f| pattern_matches(&full, &f.name)) {
        out.push_str(&format!(
            "* {verb} ({}) \"{DELIMITER}\" {}\r\n",
            attributes(folder, &folders),
            mailbox_name(&folder.name)
        ));
    }
    out.into_bytes()
}

/// `* STATUS name (MESSAGES n ...)`, or `None` if the folder does not exist or an item is
/// unknown.
pub(crate) fn status(
    directory: &Directory,
    mailbox: &str,
    folder: &str,
    items: &[String],
) -> Option<Vec<u8>> {
    let f = directory.folder(mailbox, folder)?;
    let values = items
        .iter()
        .map(|item| {
            let value = match item.as_str() {
                "MESSAGES" => f.messages.len() as u64,
                "RECENT" => 0,
                "UIDNEXT" => u64::from(f.uid_next),
                "UIDVALIDITY" => u64::from(f.uid_validity),
                "UNSEEN" => f.unseen() as u64,
                _ => return None,
            };
            Some(format!("{item} {value}"))
        })
        .collect::<Option<Vec<_>>>()?;
    Some(
        format!(
            "* STATUS {} ({})\r\n",
            mailbox_name(&f.name),
            values.join(" ")
        )
        .into_bytes(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(pattern_matches("*", "Sent Items"));
        assert!(pattern_matches("%", "INBOX"));
        assert!(pattern_matches("inbox", "INBOX"));
        assert!(!pattern_matches("inbox", "Inbox2"));
        assert!(pattern_matches("*", "a/b"));
        assert!(!pattern_matches("%", "a/b"));
        assert!(pattern_matches("a/%", "a/b"));
        assert!(pattern_matches("S*s", "Sent Items"));
        assert!(!pattern_matches("Drafts", "drafts"));
    }

    #[test]
    fn list_and_status_lines() {
        let d = Directory::new();
        d.add_mailbox("a@x");
        d.create_folder("a@x", "Drafts/old").unwrap();
        d.deliver("a@x", "INBOX", b"x");
        let all = String::from_utf8(list(&d, "a@x", "", "*", false)).unwrap();
        assert!(all.contains("* LIST (\\HasNoChildren) \"/\" INBOX\r\n"));
        assert!(all.contains("* LIST (\\HasChildren \\Drafts) \"/\" Drafts\r\n"));
        assert!(all.contains("* LIST (\\HasNoChildren \\Trash) \"/\" \"Deleted Items\"\r\n"));
        assert_eq!(all.lines().count(), 5);
        let top = String::from_utf8(list(&d, "a@x", "", "%", true)).unwrap();
        assert_eq!(top.lines().count(), 4);
        assert!(top.starts_with("* LSUB "));
        assert_eq!(
            list(&d, "a@x", "", "", false),
            b"* LIST (\\Noselect) \"/\" \"\"\r\n".to_vec()
        );
        let s = status(
            &d,
            "a@x",
            "inbox",
            &["MESSAGES".into(), "UNSEEN".into(), "UIDNEXT".into()],
        );
        assert_eq!(
            s.unwrap(),
            b"* STATUS INBOX (MESSAGES 1 UNSEEN 1 UIDNEXT 2)\r\n".to_vec()
        );
        assert!(status(&d, "a@x", "nope", &["MESSAGES".into()]).is_none());
        assert!(status(&d, "a@x", "INBOX", &["FROB".into()]).is_none());
    }
}
