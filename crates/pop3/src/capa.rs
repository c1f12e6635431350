//! The upstream's POP3 capabilities that oxbridge passes on to clients before login.
//!
//! A client reads CAPA once, before it logs in, and then sends its mailbox commands straight
//! to the upstream through the splice. So the capabilities about those commands (TOP, UIDL,
//! PIPELINING, EXPIRE, LOGIN-DELAY) must be the upstream's, or a client would use a command
//! the upstream lacks. Everything about logging in (USER, SASL, STLS) is oxbridge's own.

use std::sync::Arc;

/// Capabilities describing the upstream's mailbox session, in the upstream's order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCapabilities(Arc<[String]>);

/// The capability names that describe what happens after login (RFC 2449 §6).
const SESSION_CAPABILITIES: [&str; 5] = ["TOP", "UIDL", "PIPELINING", "EXPIRE", "LOGIN-DELAY"];

impl UpstreamCapabilities {
    /// Exchange Online's (EXCHANGE.md §2.3: `TOP`, `UIDL`); assumed until the back-end has
    /// read the configured upstream's own list.
    pub fn exchange_online() -> Self {
        Self(Arc::from(["TOP".to_string(), "UIDL".to_string()]))
    }

    /// Keeps the session capabilities from the lines of a CAPA reply (without the `+OK`
    /// line and the terminating `.`). A line with a control character (a bare CR, a NUL) is
    /// dropped: it would be repeated inside oxbridge's own CAPA reply to clients, where a bare
    /// CR can read as a line break (found by fuzz/pop3_reply).
    pub fn from_capa_lines<'a>(lines: impl IntoIterator<Item = &'a str>) -> Self {
        let kept: Vec<String> = lines
            .into_iter()
            .map(str::trim)
            .filter(|line| !line.chars().any(char::is_control))
            .filter(|line| {
                let name = line.split(' ').next().unwrap_or_default();
                SESSION_CAPABILITIES
                    .iter()
                    .any(|c| c.eq_ignore_ascii_case(name))
            })
            .map(str::to_string)
            .collect();
        Self(kept.into())
    }

    /// The capability lines, e.g. `TOP`, `EXPIRE 30`.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }

    /// Whether the capability `name` is present (case-insensitive, arguments ignored).
    pub fn has(&self, name: &str) -> bool {
        self.iter().any(|line| {
            line.split(' ')
                .next()
                .is_some_and(|n| n.eq_ignore_ascii_case(name))
        })
    }
}

impl Default for UpstreamCapabilities {
    fn default() -> Self {
        Self::exchange_online()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_only_what_describes_the_mailbox_session() {
        let caps = UpstreamCapabilities::from_capa_lines([
            "TOP",
            "UIDL",
            "SASL PLAIN XOAUTH2",
            "USER",
            "STLS",
            "pipelining",
            "EXPIRE 30 USER",
            "IMPLEMENTATION Exchange",
            "RESP-CODES",
        ]);
        assert_eq!(
            caps.iter().collect::<Vec<_>>(),
            ["TOP", "UIDL", "pipelining", "EXPIRE 30 USER"]
        );
        assert!(caps.has("PIPELINING") && caps.has("expire") && !caps.has("SASL"));
    }

    #[test]
    fn lines_with_control_characters_are_dropped() {
        // fuzz/pop3_reply: a bare CR inside an upstream CAPA line reached the client's CAPA.
        let caps = UpstreamCapabilities::from_capa_lines([
            "EXPIRE 30\rZ LOGIN-DELAY 900",
            "TOP\0",
            "UIDL",
        ]);
        assert_eq!(caps.iter().collect::<Vec<_>>(), ["UIDL"]);
    }

    #[test]
    fn exchange_online_is_the_default() {
        let caps = UpstreamCapabilities::default();
        assert_eq!(caps.iter().collect::<Vec<_>>(), ["TOP", "UIDL"]);
        assert!(!caps.has("PIPELINING"));
    }
}
