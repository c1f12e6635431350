//! Client commands: the lexer for IMAP arguments (atoms, quoted strings, literals,
//! parenthesised lists) and the parser from a complete command, literals included, to a
//! typed [`Command`]. No I/O here; the session frames lines and literals.

use super::fetch::{self, FetchItem};
use super::sequence::SequenceSet;

/// Deepest parenthesis nesting accepted.
const MAX_NESTING: usize = 16;

/// One lexical argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Arg {
    /// An atom, including `NIL`, flags such as `\Seen`, and fetch attributes with a
    /// bracketed section (`BODY.PEEK[HEADER.FIELDS (FROM)]<0.10>`).
    Atom(String),
    /// A quoted string or a literal.
    Str(Vec<u8>),
    List(Vec<Arg>),
}

impl Arg {
    pub fn atom(&self) -> Option<&str> {
        match self {
            Arg::Atom(a) => Some(a),
            _ => None,
        }
    }

    /// An atom or a string, as text.
    pub fn astring(&self) -> Option<String> {
        match self {
            Arg::Atom(a) => Some(a.clone()),
            Arg::Str(s) => Some(String::from_utf8_lossy(s).into_owned()),
            Arg::List(_) => None,
        }
    }
}

/// The argument text was not valid IMAP syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LexError;

/// If a command line (without its line end) ends in a literal announcement `{n}` or
/// `{n+}`, returns `n` and whether the client waits for a continuation (synchronising).
pub fn literal_suffix(line: &[u8]) -> Option<(u64, bool)> {
    let inner = line.strip_suffix(b"}")?;
    let open = inner.iter().rposition(|&b| b == b'{')?;
    let spec = &inner[open + 1..];
    let (digits, sync) = match spec.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (spec, true),
    };
    if digits.is_empty() || digits.len() > 12 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((n, sync))
}

/// Splits a complete command into arguments.
pub fn lex(input: &[u8]) -> Result<Vec<Arg>, LexError> {
    let mut lexer = Lexer { input, pos: 0 };
    let args = lexer.sequence(0)?;
    if lexer.pos < input.len() {
        return Err(LexError);
    }
    Ok(args)
}

struct Lexer<'a> {
    input: &'a [u8],
    pos: usize,
}

impl Lexer<'_> {
    fn peek(&self) -> Option<u8> {
        self.input.get(self.pos).copied()
    }

    /// Arguments up to the end of input (depth 0) or a closing parenthesis.
    fn sequence(&mut self, depth: usize) -> Result<Vec<Arg>, LexError> {
        let mut args = Vec::new();
        loop {
            while self.peek() == Some(b' ') {
                self.pos += 1;
            }
            match self.peek() {
                None if depth == 0 => return Ok(args),
                None => return Err(LexError),
                Some(b')') if depth > 0 => {
                    self.pos += 1;
                    return Ok(args);
                }
                Some(b')') => return Err(LexError),
                Some(b'(') => {
                    if depth >= MAX_NESTING {
                        return Err(LexError);
                    }
                    self.pos += 1;
                    args.push(Arg::List(self.sequence(depth + 1)?));
                }
                Some(b'"') => args.push(Arg::Str(self.quoted()?)),
                Some(b'{') => args.push(Arg::Str(self.literal()?)),
                Some(_) => args.push(Arg::Atom(self.atom()?)),
            }
        }
    }

    fn quoted(&mut self) -> Result<Vec<u8>, LexError> {
        self.pos += 1;
        let mut out = Vec::new();
        loop {
            match self.peek().ok_or(LexError)? {
                b'"' => {
                    self.pos += 1;
                    return Ok(out);
                }
                b'\\' => {
                    let escaped = *self.input.get(self.pos + 1).ok_or(LexError)?;
                    out.push(escaped);
                    self.pos += 2;
                }
                b'\r' | b'\n' => return Err(LexError),
                b => {
                    out.push(b);
                    self.pos += 1;
                }
            }
        }
    }

    fn literal(&mut self) -> Result<Vec<u8>, LexError> {
        let close = self.input[self.pos..]
            .iter()
            .position(|&b| b == b'}')
            .ok_or(LexError)?
            + self.pos;
        let (n, _) = literal_suffix(&self.input[self.pos..=close]).ok_or(LexError)?;
        let n = usize::try_from(n).map_err(|_| LexError)?;
        let mut start = close + 1;
        if self.input.get(start) == Some(&b'\r') {
            start += 1;
        }
        if self.input.get(start) != Some(&b'\n') {
            return Err(LexError);
        }
        start += 1;
        let end = start.checked_add(n).ok_or(LexError)?;
        let bytes = self.input.get(start..end).ok_or(LexError)?;
        self.pos = end;
        Ok(bytes.to_vec())
    }

    /// An atom; a `[` opens a section that may hold spaces and parentheses up to `]`.
    fn atom(&mut self) -> Result<String, LexError> {
        let start = self.pos;
        let mut brackets = 0usize;
        while let Some(b) = self.peek() {
            match b {
                b'[' => brackets += 1,
                b']' if brackets > 0 => brackets -= 1,
                b' ' | b'(' | b')' if brackets > 0 => {}
                b' ' | b'(' | b')' | b'"' | b'{' => break,
                b'\r' | b'\n' | 0 => return Err(LexError),
                _ => {}
            }
            self.pos += 1;
        }
        if brackets > 0 || self.pos == start {
            return Err(LexError);
        }
        String::from_utf8(self.input[start..self.pos].to_vec()).map_err(|_| LexError)
    }
}

/// How STORE changes flags.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreMode {
    Add,
    Remove,
    Replace,
}

/// A parsed client command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    Id,
    Namespace,
    StartTls,
    Check,
    Idle,
    Authenticate {
        mechanism: String,
        initial: Option<Vec<u8>>,
    },
    Login,
    Select {
        mailbox: String,
        read_only: bool,
    },
    Create(String),
    Delete(String),
    Subscribe(String),
    Unsubscribe(String),
    List {
        reference: String,
        pattern: String,
        lsub: bool,
    },
    Status {
        mailbox: String,
        items: Vec<String>,
    },
    Append {
        mailbox: String,
        flags: Vec<String>,
        date: Option<String>,
        message: Vec<u8>,
    },
    Close,
    Unselect,
    Expunge {
        uids: Option<SequenceSet>,
    },
    Search {
        uid: bool,
        criteria: Vec<Arg>,
    },
    Fetch {
        uid: bool,
        set: SequenceSet,
        items: Vec<FetchItem>,
    },
    Store {
        uid: bool,
        set: SequenceSet,
        mode: StoreMode,
        silent: bool,
        flags: Vec<String>,
    },
    Copy {
        uid: bool,
        set: SequenceSet,
        mailbox: String,
        moving: bool,
    },
}

/// A command with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tagged {
    pub tag: String,
    pub command: Command,
}

/// Why a command could not be parsed; the session answers with a tagged or untagged BAD.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// Not even a tag could be read.
    NoTag,
    /// A command name the fake does not know.
    Unknown { tag: String },
    /// A known command with bad arguments.
    BadArguments { tag: String },
}

/// The tag of a command line, if it has a well-formed one (for error replies).
pub fn tag_of(line: &[u8]) -> Option<String> {
    let end = line
        .iter()
        .position(|&b| b == b' ' || b == b'\r' || b == b'\n')
        .unwrap_or(line.len());
    let tag = std::str::from_utf8(&line[..end]).ok()?;
    let valid = !tag.is_empty()
        && tag.bytes().all(|b| {
            b.is_ascii_graphic()
                && !matches!(b, b'(' | b')' | b'{' | b'"' | b'%' | b'*' | b'+' | b'\\')
        });
    valid.then(|| tag.to_string())
}

/// Parses one complete command (literals inline, without the final line end).
pub fn parse(input: &[u8]) -> Result<Tagged, ParseError> {
    let tag = tag_of(input).ok_or(ParseError::NoTag)?;
    let bad = || ParseError::BadArguments { tag: tag.clone() };
    let args = lex(input).map_err(|_| bad())?;
    let mut args = args.into_iter().skip(1);
    let name = args
        .next()
        .and_then(|a| a.atom().map(str::to_ascii_uppercase))
        .ok_or_else(bad)?;
    let rest: Vec<Arg> = args.collect();
    let command = match name.as_str() {
        "UID" => {
            let (sub, rest) = rest.split_first().ok_or_else(bad)?;
            let sub = sub.atom().ok_or_else(bad)?.to_ascii_uppercase();
            parse_message_command(&sub, rest, true)
        }
        _ => parse_simple(&name, &rest).or_else(|| parse_message_command(&name, &rest, false)),
    };
    match command {
        Some(Ok(command)) => Ok(Tagged { tag, command }),
        Some(Err(())) => Err(bad()),
        None => Err(ParseError::Unknown { tag }),
    }
}

type Parsed = Option<Result<Command, ()>>;

fn mailbox_arg(arg: Option<&Arg>) -> Result<String, ()> {
    let name = arg.and_then(Arg::astring).ok_or(())?;
    Ok(if name.eq_ignore_ascii_case("INBOX") {
        "INBOX".to_string()
    } else {
        name
    })
}

fn exactly(rest: &[Arg], n: usize) -> Result<(), ()> {
    (rest.len() == n).then_some(()).ok_or(())
}

/// Commands outside the selected state.
fn parse_simple(name: &str, rest: &[Arg]) -> Parsed {
    let no_args = |c: Command| exactly(rest, 0).map(|_| c);
    let one_mailbox = |f: fn(String) -> Command| {
        exactly(rest, 1)?;
        mailbox_arg(rest.first()).map(f)
    };
    let command = match name {
        "CAPABILITY" => no_args(Command::Capability),
        "NOOP" => no_args(Command::Noop),
        "LOGOUT" => no_args(Command::Logout),
        "NAMESPACE" => no_args(Command::Namespace),
        "STARTTLS" => no_args(Command::StartTls),
        "CHECK" => no_args(Command::Check),
        "IDLE" => no_args(Command::Idle),
        "CLOSE" => no_args(Command::Close),
        "UNSELECT" => no_args(Command::Unselect),
        "ID" => exactly(rest, 1).map(|_| Command::Id),
        "LOGIN" => exactly(rest, 2).map(|_| Command::Login),
        "AUTHENTICATE" => parse_authenticate(rest),
        "SELECT" | "EXAMINE" => exactly(rest, 1).and_then(|_| {
            Ok(Command::Select {
                mailbox: mailbox_arg(rest.first())?,
                read_only: name == "EXAMINE",
            })
        }),
        "CREATE" => one_mailbox(Command::Create),
        "DELETE" => one_mailbox(Command::Delete),
        "SUBSCRIBE" => one_mailbox(Command::Subscribe),
        "UNSUBSCRIBE" => one_mailbox(Command::Unsubscribe),
        "LIST" | "LSUB" => exactly(rest, 2).and_then(|_| {
            Ok(Command::List {
                reference: rest[0].astring().ok_or(())?,
                pattern: rest[1].astring().ok_or(())?,
                lsub: name == "LSUB",
            })
        }),
        "STATUS" => parse_status(rest),
        "APPEND" => parse_append(rest),
        _ => return None,
    };
    Some(command)
}

fn parse_authenticate(rest: &[Arg]) -> Result<Command, ()> {
    let mechanism = rest
        .first()
        .and_then(Arg::atom)
        .ok_or(())?
        .to_ascii_uppercase();
    let initial = match rest.get(1) {
        None => None,
        Some(Arg::Atom(a)) => Some(a.as_bytes().to_vec()),
        Some(_) => return Err(()),
    };
    if rest.len() > 2 {
        return Err(());
    }
    Ok(Command::Authenticate { mechanism, initial })
}

fn parse_status(rest: &[Arg]) -> Result<Command, ()> {
    exactly(rest, 2)?;
    let Arg::List(items) = &rest[1] else {
        return Err(());
    };
    let items = items
        .iter()
        .map(|a| a.atom().map(str::to_ascii_uppercase).ok_or(()))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(Command::Status {
        mailbox: mailbox_arg(rest.first())?,
        items,
    })
}

fn parse_append(rest: &[Arg]) -> Result<Command, ()> {
    let mailbox = mailbox_arg(rest.first())?;
    let mut flags = Vec::new();
    let mut date = None;
    let mut i = 1;
    if let Some(Arg::List(list)) = rest.get(i) {
        flags = list
            .iter()
            .map(|f| f.atom().map(str::to_string).ok_or(()))
            .collect::<Result<_, _>>()?;
        i += 1;
    }
    if rest.len() == i + 2 {
        match &rest[i] {
            Arg::Str(d) => date = Some(String::from_utf8_lossy(d).into_owned()),
            _ => return Err(()),
        }
        i += 1;
    }
    exactly(&rest[i..], 1)?;
    match &rest[i] {
        Arg::Str(message) => Ok(Command::Append {
            mailbox,
            flags,
            date,
            message: message.clone(),
        }),
        _ => Err(()),
    }
}

/// Commands of the selected state, with or without the `UID` prefix.
fn parse_message_command(name: &str, rest: &[Arg], uid: bool) -> Parsed {
    let set = || {
        rest.first()
            .and_then(Arg::atom)
            .and_then(SequenceSet::parse)
            .ok_or(())
    };
    let command = match name {
        "FETCH" => exactly(rest, 2).and_then(|_| {
            Ok(Command::Fetch {
                uid,
                set: set()?,
                items: fetch::parse_items(&rest[1]).ok_or(())?,
            })
        }),
        "STORE" => parse_store(rest).and_then(|(mode, silent, flags)| {
            Ok(Command::Store {
                uid,
                set: set()?,
                mode,
                silent,
                flags,
            })
        }),
        "SEARCH" => Ok(Command::Search {
            uid,
            criteria: rest.to_vec(),
        }),
        "COPY" | "MOVE" => exactly(rest, 2).and_then(|_| {
            Ok(Command::Copy {
                uid,
                set: set()?,
                mailbox: mailbox_arg(rest.get(1))?,
                moving: name == "MOVE",
            })
        }),
        "EXPUNGE" if uid => {
            exactly(rest, 1).and_then(|_| Ok(Command::Expunge { uids: Some(set()?) }))
        }
        "EXPUNGE" => exactly(rest, 0).map(|_| Command::Expunge { uids: None }),
        _ if uid => Err(()),
        _ => return None,
    };
    Some(command)
}

/// `+FLAGS.SILENT (\Seen)` or `FLAGS \Seen \Deleted`: mode, silence and flags.
fn parse_store(rest: &[Arg]) -> Result<(StoreMode, bool, Vec<String>), ()> {
    let action = rest
        .get(1)
        .and_then(Arg::atom)
        .ok_or(())?
        .to_ascii_uppercase();
    let (mode, item) = match action.as_bytes().first() {
        Some(b'+') => (StoreMode::Add, &action[1..]),
        Some(b'-') => (StoreMode::Remove, &action[1..]),
        _ => (StoreMode::Replace, action.as_str()),
    };
    let silent = match item {
        "FLAGS" => false,
        "FLAGS.SILENT" => true,
        _ => return Err(()),
    };
    let flags: Vec<String> = match rest.get(2..) {
        Some([Arg::List(list)]) => list
            .iter()
            .map(|f| f.atom().map(str::to_string).ok_or(()))
            .collect::<Result<_, _>>()?,
        Some(atoms) if !atoms.is_empty() => atoms
            .iter()
            .map(|f| f.atom().map(str::to_string).ok_or(()))
            .collect::<Result<_, _>>()?,
        _ => return Err(()),
    };
    Ok((mode, silent, flags))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(s: &str) -> Command {
        parse(s.as_bytes()).unwrap().command
    }

    #[test]
    fn lexes_all_argument_kinds() {
        let args = lex(b"a1 FETCH 1:* (FLAGS BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.100>) \"q \\\"x\\\"\" {3}\r\nabc").unwrap();
        assert_eq!(args.len(), 6);
        assert_eq!(
            args[3],
            Arg::List(vec![
                Arg::Atom("FLAGS".into()),
                Arg::Atom("BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)]<0.100>".into())
            ])
        );
        assert_eq!(args[4], Arg::Str(b"q \"x\"".to_vec()));
        assert_eq!(args[5], Arg::Str(b"abc".to_vec()));
        assert!(lex(b"a (b").is_err());
        assert!(lex(b"a b)").is_err());
        assert!(lex(b"a {5}\r\nab").is_err());
        assert!(lex(b"a \"open").is_err());
    }

    #[test]
    fn literal_suffixes() {
        assert_eq!(literal_suffix(b"a APPEND INBOX {310}"), Some((310, true)));
        assert_eq!(literal_suffix(b"a APPEND INBOX {310+}"), Some((310, false)));
        assert_eq!(literal_suffix(b"a LIST \"\" *"), None);
        assert_eq!(literal_suffix(b"a {x}"), None);
        assert_eq!(literal_suffix(b"a {}"), None);
    }

    #[test]
    fn parses_commands() {
        assert_eq!(cmd("a CAPABILITY"), Command::Capability);
        assert_eq!(
            cmd("a authenticate xoauth2 dXNlcj0="),
            Command::Authenticate {
                mechanism: "XOAUTH2".into(),
                initial: Some(b"dXNlcj0=".to_vec())
            }
        );
        assert_eq!(
            cmd("a select inbox"),
            Command::Select {
                mailbox: "INBOX".into(),
                read_only: false
            }
        );
        assert_eq!(
            cmd("a LIST \"\" \"*\""),
            Command::List {
                reference: "".into(),
                pattern: "*".into(),
                lsub: false
            }
        );
        assert!(matches!(
            cmd("a UID FETCH 1:* (UID FLAGS)"),
            Command::Fetch { uid: true, .. }
        ));
        assert_eq!(
            cmd("a UID STORE 3 +FLAGS.SILENT (\\Seen \\Deleted)"),
            Command::Store {
                uid: true,
                set: SequenceSet::parse("3").unwrap(),
                mode: StoreMode::Add,
                silent: true,
                flags: vec!["\\Seen".into(), "\\Deleted".into()]
            }
        );
        assert!(matches!(
            cmd("a STORE 1 FLAGS \\Seen"),
            Command::Store {
                mode: StoreMode::Replace,
                ..
            }
        ));
        assert_eq!(
            cmd("a APPEND \"Sent Items\" (\\Seen) \"01-Jan-2024 10:00:00 +0000\" {2}\r\nhi"),
            Command::Append {
                mailbox: "Sent Items".into(),
                flags: vec!["\\Seen".into()],
                date: Some("01-Jan-2024 10:00:00 +0000".into()),
                message: b"hi".to_vec()
            }
        );
        assert!(matches!(
            cmd("a APPEND INBOX {2+}\r\nhi"),
            Command::Append { .. }
        ));
        assert!(matches!(
            cmd("a UID EXPUNGE 1:3"),
            Command::Expunge { uids: Some(_) }
        ));
        assert!(matches!(
            cmd("a STATUS INBOX (MESSAGES UIDNEXT)"),
            Command::Status { .. }
        ));
        assert!(matches!(
            cmd("a UID MOVE 1 Drafts"),
            Command::Copy { moving: true, .. }
        ));
    }

    #[test]
    fn reports_errors_with_tags() {
        assert_eq!(
            parse(b"a FROB"),
            Err(ParseError::Unknown { tag: "a".into() })
        );
        assert_eq!(
            parse(b"a FETCH x FLAGS"),
            Err(ParseError::BadArguments { tag: "a".into() })
        );
        assert_eq!(
            parse(b"a UID FROB 1"),
            Err(ParseError::BadArguments { tag: "a".into() })
        );
        assert_eq!(
            parse(b"a SELECT"),
            Err(ParseError::BadArguments { tag: "a".into() })
        );
        assert_eq!(parse(b"* NOOP"), Err(ParseError::NoTag));
        assert_eq!(parse(b""), Err(ParseError::NoTag));
    }
}
