//! Relay rules: which client networks may submit mail without logging in, as which account,
//! and with which envelope senders. They replace Microsoft 365's relay connector (a static
//! public IP and an open port 25) for devices that cannot authenticate, such as many
//! multifunction printers. Without a matching rule a client must log in: oxbridge is never
//! an open relay.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::config::RelayConfig;

/// One rule, checked and normalised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelayRule {
    pub networks: Vec<IpNet>,
    /// The local account (by name) whose mailbox and grant submit the mail.
    pub account: String,
    /// Allowed envelope senders, lower case.
    senders: Vec<String>,
}

impl RelayRule {
    /// Whether `sender` (a `MAIL FROM` address) is one this rule allows; case-insensitive,
    /// as Exchange compares addresses.
    pub fn allows_sender(&self, sender: &str) -> bool {
        let sender = sender.trim().to_ascii_lowercase();
        self.senders.contains(&sender)
    }
}

/// Every rule of the configuration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayRules {
    rules: Vec<RelayRule>,
}

impl RelayRules {
    /// Checks and compiles `[[relay]]` sections; returns every problem at once.
    pub fn from_config(configs: &[RelayConfig]) -> Result<RelayRules, Vec<String>> {
        let mut problems = Vec::new();
        let mut rules = Vec::new();
        let mut seen: Vec<IpNet> = Vec::new();
        for (i, config) in configs.iter().enumerate() {
            let at = format!("[[relay]] #{} ({:?})", i + 1, config.account);
            if config.account.trim().is_empty() {
                problems.push(format!("{at}: account must not be empty"));
            }
            if config.networks.is_empty() {
                problems.push(format!("{at}: networks must list at least one network"));
            }
            if config.senders.is_empty() {
                problems.push(format!(
                    "{at}: senders must list at least one address the devices send as"
                ));
            }
            let mut networks = Vec::new();
            for text in &config.networks {
                match parse_network(text) {
                    Ok(net) if seen.contains(&net) => problems.push(format!(
                        "{at}: network {net} is already in another rule; which account would send?"
                    )),
                    Ok(net) => {
                        seen.push(net);
                        networks.push(net);
                    }
                    Err(e) => problems.push(format!("{at}: {e}")),
                }
            }
            for sender in &config.senders {
                let ok = sender.contains('@')
                    && !sender.starts_with('@')
                    && !sender
                        .chars()
                        .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>');
                if !ok {
                    problems.push(format!(
                        "{at}: sender {sender:?} is not an address like scanner@contoso.com"
                    ));
                }
            }
            rules.push(RelayRule {
                networks,
                account: config.account.trim().to_string(),
                senders: config
                    .senders
                    .iter()
                    .map(|s| s.trim().to_ascii_lowercase())
                    .collect(),
            });
        }
        if problems.is_empty() {
            Ok(RelayRules { rules })
        } else {
            Err(problems)
        }
    }

    /// The accounts the rules submit as, each once.
    pub fn accounts(&self) -> impl Iterator<Item = &str> {
        let mut seen: Vec<&str> = Vec::new();
        self.rules.iter().filter_map(move |rule| {
            let name = rule.account.as_str();
            (!seen.contains(&name)).then(|| {
                seen.push(name);
                name
            })
        })
    }

    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule for a client address: of the rules with a network containing it, the one
    /// with the most specific (longest-prefix) network, so a narrow rule for one printer can
    /// sit inside a broad one for an office.
    pub fn rule_for(&self, peer: IpAddr) -> Option<&RelayRule> {
        // A client on an IPv6 socket bound to `[::]` shows up as `::ffff:a.b.c.d`.
        let peer = peer.to_canonical();
        self.rules
            .iter()
            .flat_map(|rule| rule.networks.iter().map(move |net| (net, rule)))
            .filter(|(net, _)| net.contains(&peer))
            .max_by_key(|(net, _)| net.prefix_len())
            .map(|(_, rule)| rule)
    }
}

/// `192.0.2.0/24`, `2001:db8::/32`, or a bare address meaning that one host.
fn parse_network(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        if net != net.trunc() {
            return Err(format!(
                "network {text:?} has host bits set; did you mean {}?",
                net.trunc()
            ));
        }
        return Ok(net);
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("network {text:?} is not an address or CIDR like 192.0.2.0/24"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(networks: &[&str], account: &str, senders: &[&str]) -> RelayConfig {
        RelayConfig {
            networks: networks.iter().map(|s| s.to_string()).collect(),
            account: account.into(),
            senders: senders.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn the_most_specific_network_wins_and_senders_compare_case_insensitively() {
        let rules = RelayRules::from_config(&[
            config(&["192.0.2.0/24"], "office", &["office@contoso.com"]),
            config(
                &["192.0.2.7", "2001:db8::/32"],
                "scanner",
                &["Scanner@Contoso.com"],
            ),
        ])
        .unwrap();
        assert_eq!(rules.rule_for(ip("192.0.2.7")).unwrap().account, "scanner");
        assert_eq!(rules.rule_for(ip("192.0.2.8")).unwrap().account, "office");
        assert_eq!(
            rules.rule_for(ip("::ffff:192.0.2.7")).unwrap().account,
            "scanner"
        );
        assert_eq!(
            rules.rule_for(ip("2001:db8::1")).unwrap().account,
            "scanner"
        );
        assert!(rules.rule_for(ip("198.51.100.1")).is_none());
        let scanner = rules.rule_for(ip("192.0.2.7")).unwrap();
        assert!(scanner.allows_sender("scanner@contoso.com"));
        assert!(scanner.allows_sender("SCANNER@CONTOSO.COM"));
        assert!(!scanner.allows_sender("office@contoso.com"));
        assert!(!scanner.allows_sender(""));
        assert!(RelayRules::default().rule_for(ip("127.0.0.1")).is_none());
    }

    #[test]
    fn every_problem_is_reported() {
        let problems = RelayRules::from_config(&[
            config(&["192.0.2.1/24", "nonsense"], "", &["not-an-address"]),
            config(&[], "x", &[]),
            config(&["10.0.0.0/8"], "a", &["a@b"]),
            config(&["10.0.0.0/8"], "b", &["b@c"]),
        ])
        .unwrap_err();
        let all = problems.join("\n");
        for needle in [
            "host bits set; did you mean 192.0.2.0/24",
            "\"nonsense\" is not an address",
            "account must not be empty",
            "\"not-an-address\" is not an address",
            "networks must list",
            "senders must list",
            "10.0.0.0/8 is already in another rule",
        ] {
            assert!(all.contains(needle), "missing {needle:?} in\n{all}");
        }
    }
}
