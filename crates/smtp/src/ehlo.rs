//! The upstream's SMTP service extensions: learned from its own EHLO reply after TLS,
//! cached per upstream, and rewritten into what oxbridge advertises to its clients.
//!
//! Capability fidelity is the point: a client that sees `SIZE 157286400`, `CHUNKING` or
//! `SMTPUTF8` from oxbridge will use them on the spliced session, so they must be what the
//! upstream said. Only the extensions about securing and authenticating the hop are
//! oxbridge's own (`STARTTLS`, `AUTH PLAIN LOGIN`).

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use tokio::time::Instant;

use crate::reply::Reply;

/// Extensions that describe the hop to the upstream rather than the mail service; oxbridge
/// answers for these itself. `X-EXPS` and `X-ANONYMOUSTLS` are Exchange's own auth and TLS
/// variants.
const HOP_EXTENSIONS: [&str; 4] = ["AUTH", "STARTTLS", "X-EXPS", "X-ANONYMOUSTLS"];

/// The mechanisms oxbridge offers clients.
const CLIENT_AUTH: &str = "AUTH PLAIN LOGIN";

/// The EHLO keywords (with their parameters) of one upstream, in the upstream's order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Extensions {
    lines: Vec<String>,
}

impl Extensions {
    /// From an EHLO reply: every line but the first, which is the server's name.
    pub fn from_ehlo(reply: &Reply) -> Self {
        Self::from_lines(reply.lines.iter().skip(1).cloned())
    }

    /// From extension lines such as `SIZE 157286400`.
    pub fn from_lines(lines: impl IntoIterator<Item = String>) -> Self {
        Extensions {
            lines: lines
                .into_iter()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect(),
        }
    }

    /// The upstream's lines, as it sent them.
    pub fn lines(&self) -> &[String] {
        &self.lines
    }

    /// The parameters of `keyword` (`Some("")` if it has none), or `None` if absent.
    pub fn get(&self, keyword: &str) -> Option<&str> {
        self.lines.iter().find_map(|line| match parse_line(line) {
            Line::Extension {
                keyword: word,
                params,
            } => word.eq_ignore_ascii_case(keyword).then_some(params),
            Line::OldStyleAuth | Line::Malformed => None,
        })
    }

    /// What oxbridge's EHLO reply lists after its greeting line: the upstream's extensions
    /// in the upstream's order, with the hop extensions replaced by oxbridge's (`STARTTLS`
    /// when `starttls`, `AUTH PLAIN LOGIN` when `auth`) where the upstream had its `AUTH`.
    /// Lines that are not well-formed extensions are left out: what cannot be parsed cannot
    /// be vetted, and must not reach the client as if oxbridge offered it.
    pub fn advertised(&self, starttls: bool, auth: bool) -> Vec<String> {
        let ours: Vec<String> = [(starttls, "STARTTLS"), (auth, CLIENT_AUTH)]
            .into_iter()
            .filter(|(on, _)| *on)
            .map(|(_, line)| line.to_string())
            .collect();
        let mut out = Vec::with_capacity(self.lines.len() + ours.len());
        let mut placed = false;
        for line in &self.lines {
            match parse_line(line) {
                Line::Extension { keyword, .. }
                    if !HOP_EXTENSIONS
                        .iter()
                        .any(|h| keyword.eq_ignore_ascii_case(h)) =>
                {
                    out.push(line.clone());
                }
                Line::Extension { keyword, .. }
                    if keyword.eq_ignore_ascii_case("AUTH") && !placed =>
                {
                    out.extend(ours.iter().cloned());
                    placed = true;
                }
                Line::Extension { .. } | Line::OldStyleAuth | Line::Malformed => {}
            }
        }
        if !placed {
            out.extend(ours);
        }
        out
    }
}

/// One line of an EHLO reply, after the status code.
enum Line<'a> {
    /// `ehlo-keyword *(SP ehlo-param)` (RFC 5321 §4.1.1.1); tabs are taken for spaces.
    Extension { keyword: &'a str, params: &'a str },
    /// `AUTH=LOGIN`: the pre-RFC 2554 spelling some servers still add.
    OldStyleAuth,
    /// Anything else: an empty keyword, or one followed by neither a space nor the end.
    Malformed,
}

fn parse_line(line: &str) -> Line<'_> {
    let end = line
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-'))
        .unwrap_or(line.len());
    let (keyword, rest) = line.split_at(end);
    if keyword.is_empty() {
        return Line::Malformed;
    }
    if rest.is_empty() || rest.starts_with([' ', '\t']) {
        Line::Extension {
            keyword,
            params: rest.trim_matches([' ', '\t']),
        }
    } else if rest.starts_with('=') && keyword.eq_ignore_ascii_case("AUTH") {
        Line::OldStyleAuth
    } else {
        Line::Malformed
    }
}

/// What the cache knows about one upstream.
#[derive(Debug, Clone)]
enum Entry {
    Known(Arc<Extensions>),
    /// Probing failed at this instant; do not try again for a while, so that clients
    /// connecting while the upstream is down are not each held up by a probe.
    Failed(Instant),
}

/// The answer of [`ExtensionCache::lookup`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheLookup {
    Known(Arc<Extensions>),
    /// Never learned: probe the upstream.
    Unknown,
    /// A probe failed recently: advertise nothing beyond oxbridge's own extensions.
    Unreachable,
}

/// Extensions per upstream address. Every successful login refreshes its upstream's entry
/// (the back-end sees the post-TLS EHLO anyway), so the cache follows upstream changes
/// without a timer.
#[derive(Debug)]
pub struct ExtensionCache {
    entries: RwLock<HashMap<String, Entry>>,
    retry_after: Duration,
}

impl Default for ExtensionCache {
    fn default() -> Self {
        Self::new(Duration::from_secs(30))
    }
}

impl ExtensionCache {
    /// A cache that waits `retry_after` after a failed probe before the next one.
    pub fn new(retry_after: Duration) -> Self {
        ExtensionCache {
            entries: RwLock::new(HashMap::new()),
            retry_after,
        }
    }

    pub fn lookup(&self, upstream: &str) -> CacheLookup {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        match entries.get(upstream) {
            Some(Entry::Known(extensions)) => CacheLookup::Known(extensions.clone()),
            Some(Entry::Failed(at)) if at.elapsed() < self.retry_after => CacheLookup::Unreachable,
            Some(Entry::Failed(_)) | None => CacheLookup::Unknown,
        }
    }

    /// Records what `upstream` advertised after TLS.
    pub fn learn(&self, upstream: &str, extensions: Extensions) {
        self.entries
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(upstream.to_string(), Entry::Known(Arc::new(extensions)));
    }

    /// Records a failed probe, unless something was learned meanwhile.
    pub fn probe_failed(&self, upstream: &str) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if !matches!(entries.get(upstream), Some(Entry::Known(_))) {
            entries.insert(upstream.to_string(), Entry::Failed(Instant::now()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Exchange Online's EHLO reply after STARTTLS (EXCHANGE.md §2.4).
    fn exchange_after_tls() -> Reply {
        Reply {
            code: 250,
            lines: [
                "AM3PR05CA0094.outlook.office365.com Hello [203.0.113.7]",
                "SIZE 157286400",
                "PIPELINING",
                "DSN",
                "ENHANCEDSTATUSCODES",
                "AUTH LOGIN XOAUTH2",
                "8BITMIME",
                "BINARYMIME",
                "CHUNKING",
                "SMTPUTF8",
            ]
            .map(String::from)
            .to_vec(),
        }
    }

    #[test]
    fn auth_is_replaced_in_place_and_the_rest_kept_in_order() {
        let ext = Extensions::from_ehlo(&exchange_after_tls());
        assert_eq!(ext.get("size"), Some("157286400"));
        assert_eq!(ext.get("CHUNKING"), Some(""));
        assert_eq!(ext.get("STARTTLS"), None);
        assert_eq!(
            ext.advertised(false, true),
            [
                "SIZE 157286400",
                "PIPELINING",
                "DSN",
                "ENHANCEDSTATUSCODES",
                "AUTH PLAIN LOGIN",
                "8BITMIME",
                "BINARYMIME",
                "CHUNKING",
                "SMTPUTF8"
            ]
        );
    }

    #[test]
    fn before_tls_starttls_is_offered_and_auth_only_if_plaintext_is_allowed() {
        let ext = Extensions::from_ehlo(&exchange_after_tls());
        let plain = ext.advertised(true, false);
        assert!(plain.contains(&"STARTTLS".to_string()));
        assert!(!plain.iter().any(|l| l.starts_with("AUTH")));
        let lax = ext.advertised(true, true);
        let pos = |l: &str| lax.iter().position(|x| x == l).unwrap();
        assert_eq!(pos("STARTTLS") + 1, pos("AUTH PLAIN LOGIN"));
    }

    #[test]
    fn hop_extensions_of_the_upstream_never_leak() {
        let ext = Extensions::from_lines(
            [
                "STARTTLS",
                "X-EXPS GSSAPI NTLM",
                "X-ANONYMOUSTLS",
                "AUTH=LOGIN",
                "8BITMIME",
            ]
            .map(String::from),
        );
        assert_eq!(
            ext.advertised(false, true),
            ["8BITMIME", "AUTH PLAIN LOGIN"]
        );
        assert_eq!(Extensions::default().advertised(true, false), ["STARTTLS"]);
    }

    #[test]
    fn malformed_and_non_ascii_extension_lines_are_left_out_without_panicking() {
        // fuzz/smtp_front: a keyword with a multi-byte character across byte 5 panicked.
        let ext = Extensions::from_lines([
            "AUTH\u{fffd}X".to_string(),
            "AUT\u{e9}=1".to_string(),
            "=SIZE".to_string(),
            "8BITMIME".to_string(),
        ]);
        assert_eq!(
            ext.advertised(false, true),
            ["8BITMIME", "AUTH PLAIN LOGIN"]
        );
    }

    #[test]
    fn a_tab_separated_upstream_auth_line_is_still_replaced() {
        let ext = Extensions::from_lines([
            "SIZE\t157286400".to_string(),
            "AUTH\tLOGIN XOAUTH2".to_string(),
        ]);
        assert_eq!(
            ext.advertised(false, true),
            ["SIZE\t157286400", "AUTH PLAIN LOGIN"]
        );
        assert_eq!(ext.get("size"), Some("157286400"));
    }

    #[tokio::test(start_paused = true)]
    async fn cache_learns_and_forgets_failures_after_a_while() {
        let cache = ExtensionCache::new(Duration::from_secs(30));
        assert_eq!(cache.lookup("smtp:587"), CacheLookup::Unknown);
        cache.probe_failed("smtp:587");
        assert_eq!(cache.lookup("smtp:587"), CacheLookup::Unreachable);
        tokio::time::advance(Duration::from_secs(31)).await;
        assert_eq!(cache.lookup("smtp:587"), CacheLookup::Unknown);
        let ext = Extensions::from_ehlo(&exchange_after_tls());
        cache.learn("smtp:587", ext.clone());
        cache.probe_failed("smtp:587");
        assert_eq!(cache.lookup("smtp:587"), CacheLookup::Known(Arc::new(ext)));
        assert_eq!(cache.lookup("other:587"), CacheLookup::Unknown);
    }
}
