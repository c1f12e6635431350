//! POP3 commands as the fake server reads them (RFC 1939, RFC 2449 CAPA, RFC 5034 AUTH).

/// One client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    User,
    Pass,
    Apop,
    /// `AUTH` alone, or `AUTH mechanism [initial-response]`.
    Auth {
        mechanism: Option<String>,
        initial_response: Option<Vec<u8>>,
    },
    Stat,
    List(Option<u32>),
    Uidl(Option<u32>),
    Retr(u32),
    Top {
        message: u32,
        lines: usize,
    },
    Dele(u32),
    Rset,
    Noop,
    Quit,
    /// A known command with missing or unusable arguments.
    BadArguments,
    Unknown,
}

/// Parses one line (without its line ending).
pub fn parse(line: &[u8]) -> Command {
    let mut words = line.split(|&b| b == b' ').filter(|w| !w.is_empty());
    let Some(keyword) = words.next() else {
        return Command::Unknown;
    };
    let keyword = String::from_utf8_lossy(keyword).to_ascii_uppercase();
    let args: Vec<&[u8]> = words.collect();
    let number = |i: usize| -> Option<u32> {
        let arg = std::str::from_utf8(args.get(i)?).ok()?;
        if arg.bytes().all(|b| b.is_ascii_digit()) {
            arg.parse().ok()
        } else {
            None
        }
    };
    let optional = |build: fn(Option<u32>) -> Command| match args.len() {
        0 => build(None),
        1 => number(0).map_or(Command::BadArguments, |n| build(Some(n))),
        _ => Command::BadArguments,
    };
    let one = |build: fn(u32) -> Command| match (args.len(), number(0)) {
        (1, Some(n)) => build(n),
        _ => Command::BadArguments,
    };
    match keyword.as_str() {
        "CAPA" => Command::Capa,
        "STLS" => Command::Stls,
        "USER" if !args.is_empty() => Command::User,
        "PASS" if !args.is_empty() => Command::Pass,
        "APOP" => Command::Apop,
        "AUTH" => match args.as_slice() {
            [] => Command::Auth {
                mechanism: None,
                initial_response: None,
            },
            [mechanism] | [mechanism, _] => Command::Auth {
                mechanism: Some(String::from_utf8_lossy(mechanism).to_ascii_uppercase()),
                initial_response: args.get(1).map(|r| r.to_vec()),
            },
            _ => Command::BadArguments,
        },
        "STAT" => Command::Stat,
        "LIST" => optional(Command::List),
        "UIDL" => optional(Command::Uidl),
        "RETR" => one(Command::Retr),
        "DELE" => one(Command::Dele),
        "TOP" => match (args.len(), number(0), number(1)) {
            (2, Some(message), Some(lines)) => Command::Top {
                message,
                lines: lines as usize,
            },
            _ => Command::BadArguments,
        },
        "RSET" => Command::Rset,
        "NOOP" => Command::Noop,
        "QUIT" => Command::Quit,
        "USER" | "PASS" => Command::BadArguments,
        _ => Command::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pop3_commands_and_arguments() {
        assert_eq!(parse(b"capa"), Command::Capa);
        assert_eq!(parse(b"LIST"), Command::List(None));
        assert_eq!(parse(b"LIST 2"), Command::List(Some(2)));
        assert_eq!(parse(b"uidl 1"), Command::Uidl(Some(1)));
        assert_eq!(parse(b"RETR 3"), Command::Retr(3));
        assert_eq!(
            parse(b"TOP 1 0"),
            Command::Top {
                message: 1,
                lines: 0
            }
        );
        assert_eq!(parse(b"DELE 1"), Command::Dele(1));
        assert_eq!(
            parse(b"AUTH XOAUTH2"),
            Command::Auth {
                mechanism: Some("XOAUTH2".into()),
                initial_response: None
            }
        );
        assert_eq!(
            parse(b"AUTH xoauth2 dXNlcj0="),
            Command::Auth {
                mechanism: Some("XOAUTH2".into()),
                initial_response: Some(b"dXNlcj0=".to_vec())
            }
        );
        assert_eq!(parse(b"USER bob"), Command::User);
    }

    #[test]
    fn pop3_bad_arguments_and_unknown_commands() {
        assert_eq!(parse(b"RETR"), Command::BadArguments);
        assert_eq!(parse(b"RETR -1"), Command::BadArguments);
        assert_eq!(parse(b"RETR 1 2"), Command::BadArguments);
        assert_eq!(parse(b"TOP 1"), Command::BadArguments);
        assert_eq!(parse(b"LIST x"), Command::BadArguments);
        assert_eq!(parse(b"USER"), Command::BadArguments);
        assert_eq!(parse(b"RETR 99999999999"), Command::BadArguments);
        assert_eq!(parse(b"XTND"), Command::Unknown);
        assert_eq!(parse(b""), Command::Unknown);
    }
}
