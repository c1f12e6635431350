//! IMAP client commands before login: framing a command with its literals under hard
//! limits ([`assemble`]), then parsing it with nom ([`parse_command`]).

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take, take_while1};
use nom::character::complete::{char, digit1};
use nom::combinator::{map, map_res, opt, rest, value};
use nom::sequence::{delimited, preceded, terminated, tuple};
use nom::IResult;

use oxbridge_wire::line::{next_line, trim_eol, LineTooLong};

/// The outcome of looking for one complete command at the start of the input.
#[derive(Debug, PartialEq, Eq)]
pub enum Assembled {
    /// A whole command (lines and literals) is the first `len` bytes.
    Complete { len: usize },
    /// More bytes are needed. `continuation` is set when the client waits for `+` before
    /// sending the literal announced last (a synchronizing literal not yet acknowledged).
    Incomplete { continuation: bool },
    /// A literal larger than allowed was announced. `synchronizing` literals can be
    /// refused and the command dropped (`skip` bytes); a non-synchronizing one cannot be
    /// skipped safely, so the connection must close.
    LiteralTooLarge {
        tag: String,
        synchronizing: bool,
        skip: usize,
    },
    /// A line longer than allowed.
    LineTooLong,
}

/// The most bytes one pre-auth command may take, lines and literals together: room for
/// LOGIN's two literals at their largest. Without a bound on the whole, a command whose every
/// line ends in another literal (`{0}` after `{0}` …) never completes and the buffer holding
/// it grows until the pre-auth timeout (found by `fuzz/imap_front`).
pub fn max_command(max_line: usize, max_literal: usize) -> usize {
    max_line.saturating_add(max_literal.saturating_mul(2))
}

/// Finds one command at the start of `input`. `acknowledged` counts the synchronizing
/// literals of this command the caller has already answered with `+`; it is updated when a
/// new continuation is due.
///
/// While the command is incomplete, `input` holds at most [`max_command`] bytes of it: a
/// line that would pass that is [`Assembled::LineTooLong`], a literal that would is
/// [`Assembled::LiteralTooLarge`].
pub fn assemble(
    input: &[u8],
    max_line: usize,
    max_literal: usize,
    acknowledged: &mut usize,
) -> Assembled {
    let budget = max_command(max_line, max_literal);
    let mut pos = 0;
    let mut literal_index = 0;
    loop {
        // The line may take what the command's budget has left (next_line refuses a line
        // once `limit` bytes arrived without its end, so `+ 1` lets it fill the budget).
        let limit = max_line.min(budget.saturating_sub(pos).saturating_add(1));
        let line_len = match next_line(&input[pos..], limit) {
            Ok(Some(len)) => len,
            Ok(None) => {
                return Assembled::Incomplete {
                    continuation: false,
                }
            }
            Err(LineTooLong { .. }) => return Assembled::LineTooLong,
        };
        let line = trim_eol(&input[pos..pos + line_len]);
        let Some((size, synchronizing)) = literal_suffix(line) else {
            return Assembled::Complete {
                len: pos + line_len,
            };
        };
        let after_line = (pos + line_len) as u64;
        if size > max_literal as u64 || after_line.saturating_add(size) > budget as u64 {
            return Assembled::LiteralTooLarge {
                tag: command_tag(&input[..pos + line_len]),
                synchronizing,
                skip: pos + line_len,
            };
        }
        literal_index += 1;
        let end = pos + line_len + size as usize;
        if input.len() < end {
            let continuation = synchronizing && literal_index > *acknowledged;
            if continuation {
                *acknowledged = literal_index;
            }
            return Assembled::Incomplete { continuation };
        }
        pos = end;
    }
}

/// `{123}` or `{123+}` at the end of a line: the literal's size and whether it is
/// synchronizing.
fn literal_suffix(line: &[u8]) -> Option<(u64, bool)> {
    let body = line.strip_suffix(b"}")?;
    let open = body.iter().rposition(|&b| b == b'{')?;
    let inner = &body[open + 1..];
    let (digits, synchronizing) = match inner.strip_suffix(b"+") {
        Some(d) => (d, false),
        None => (inner, true),
    };
    if digits.is_empty() || digits.len() > 19 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let size = std::str::from_utf8(digits).ok()?.parse().ok()?;
    Some((size, synchronizing))
}

/// The tag of a (possibly partial) command, or `*` if it has none that is usable.
pub fn command_tag(command: &[u8]) -> String {
    match imap_tag(command) {
        Ok((_, tag)) => tag.to_string(),
        Err(_) => "*".to_string(),
    }
}

/// A pre-auth IMAP command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capability,
    Noop,
    Logout,
    StartTls,
    Id,
    Login {
        user: Vec<u8>,
        password: Vec<u8>,
    },
    Authenticate {
        mechanism: String,
        initial_response: Option<Vec<u8>>,
    },
    /// A command that only makes sense after login (SELECT, FETCH, …).
    NeedsAuth,
    /// Syntax we do not understand.
    Unknown,
}

/// Parses one assembled command into its tag and [`Command`]. `None` when not even a tag
/// could be read.
pub fn parse_command(input: &[u8]) -> Option<(String, Command)> {
    let input = trim_eol(input);
    let (rest, tag) = imap_tag(input).ok()?;
    let rest = rest.strip_prefix(b" ").unwrap_or(rest);
    let command = match command(rest) {
        Ok((b"", command)) => command,
        _ => Command::Unknown,
    };
    Some((tag.to_string(), command))
}

fn imap_tag(input: &[u8]) -> IResult<&[u8], &str> {
    map_res(
        take_while1(|b: u8| is_astring_char(b) && b != b'+'),
        std::str::from_utf8,
    )(input)
}

fn command(input: &[u8]) -> IResult<&[u8], Command> {
    alt((
        value(Command::Capability, tag_no_case("CAPABILITY")),
        value(Command::Noop, tag_no_case("NOOP")),
        value(Command::Logout, tag_no_case("LOGOUT")),
        value(Command::StartTls, tag_no_case("STARTTLS")),
        value(Command::Id, preceded(tag_no_case("ID "), rest)),
        login,
        authenticate,
        value(Command::NeedsAuth, preceded(post_auth_verb, rest)),
    ))(input)
}

fn login(input: &[u8]) -> IResult<&[u8], Command> {
    map(
        tuple((tag_no_case("LOGIN "), astring, char(' '), astring)),
        |(_, user, _, password)| Command::Login { user, password },
    )(input)
}

fn authenticate(input: &[u8]) -> IResult<&[u8], Command> {
    map(
        tuple((
            tag_no_case("AUTHENTICATE "),
            map_res(take_while1(is_atom_char), std::str::from_utf8),
            opt(preceded(
                char(' '),
                take_while1(|b| b != b'\r' && b != b'\n'),
            )),
        )),
        |(_, mechanism, ir): (_, &str, Option<&[u8]>)| Command::Authenticate {
            mechanism: mechanism.to_ascii_uppercase(),
            initial_response: ir.map(<[u8]>::to_vec),
        },
    )(input)
}

/// Commands of the authenticated and selected states.
fn post_auth_verb(input: &[u8]) -> IResult<&[u8], &[u8]> {
    terminated(
        alt((
            alt((
                tag_no_case("SELECT"),
                tag_no_case("EXAMINE"),
                tag_no_case("CREATE"),
                tag_no_case("DELETE"),
                tag_no_case("RENAME"),
                tag_no_case("SUBSCRIBE"),
                tag_no_case("UNSUBSCRIBE"),
                tag_no_case("LIST"),
                tag_no_case("LSUB"),
                tag_no_case("STATUS"),
                tag_no_case("APPEND"),
            )),
            alt((
                tag_no_case("CHECK"),
                tag_no_case("CLOSE"),
                tag_no_case("EXPUNGE"),
                tag_no_case("SEARCH"),
                tag_no_case("FETCH"),
                tag_no_case("STORE"),
                tag_no_case("COPY"),
                tag_no_case("MOVE"),
                tag_no_case("UID"),
                tag_no_case("IDLE"),
                tag_no_case("NAMESPACE"),
                tag_no_case("ENABLE"),
                tag_no_case("UNSELECT"),
            )),
        )),
        alt((tag(" "), nom::combinator::eof)),
    )(input)
}

/// astring = atom / quoted / literal (RFC 3501 §9, RFC 7888 for `{n+}`).
fn astring(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    alt((
        literal,
        quoted,
        map(take_while1(is_astring_char), <[u8]>::to_vec),
    ))(input)
}

/// A quoted string; `\\` and `\"` are the only escapes (RFC 3501 §4.3).
fn quoted(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (mut rest, _) = char('"')(input)?;
    let mut value = Vec::new();
    loop {
        match rest {
            [b'"', tail @ ..] => return Ok((tail, value)),
            [b'\\', c @ (b'"' | b'\\'), tail @ ..] => {
                value.push(*c);
                rest = tail;
            }
            [c, tail @ ..] if *c != b'\r' && *c != b'\n' && *c != b'\\' => {
                value.push(*c);
                rest = tail;
            }
            _ => {
                return Err(nom::Err::Error(nom::error::Error::new(
                    rest,
                    nom::error::ErrorKind::Escaped,
                )))
            }
        }
    }
}

fn literal(input: &[u8]) -> IResult<&[u8], Vec<u8>> {
    let (input, size) = delimited(
        char('{'),
        terminated(
            map_res(map_res(digit1, std::str::from_utf8), str::parse::<usize>),
            opt(char('+')),
        ),
        tag("}\r\n"),
    )(input)?;
    map(take(size), <[u8]>::to_vec)(input)
}

fn is_atom_char(b: u8) -> bool {
    b > 0x20 && b < 0x7f && !b"(){ %*\"\\]".contains(&b)
}

fn is_astring_char(b: u8) -> bool {
    is_atom_char(b) || b == b']'
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(user: &str, password: &str) -> Command {
        Command::Login {
            user: user.as_bytes().to_vec(),
            password: password.as_bytes().to_vec(),
        }
    }

    #[test]
    fn parses_login_in_every_string_form() {
        assert_eq!(
            parse_command(b"a1 LOGIN demo secret\r\n"),
            Some(("a1".into(), login("demo", "secret")))
        );
        assert_eq!(
            parse_command(b"a1 login \"de\\\"mo\" \"p w\"\r\n"),
            Some(("a1".into(), login("de\"mo", "p w")))
        );
        assert_eq!(
            parse_command(b"a1 LOGIN {4}\r\ndemo {3+}\r\np\x00w\r\n"),
            Some(("a1".into(), login("demo", "p\x00w")))
        );
        assert_eq!(
            parse_command(b"a1 LOGIN \"\" \"\"\r\n"),
            Some(("a1".into(), login("", "")))
        );
    }

    #[test]
    fn parses_authenticate_with_and_without_initial_response() {
        assert_eq!(
            parse_command(b"A2 authenticate plain AGRlbW8AcHc=\r\n"),
            Some((
                "A2".into(),
                Command::Authenticate {
                    mechanism: "PLAIN".into(),
                    initial_response: Some(b"AGRlbW8AcHc=".to_vec())
                }
            ))
        );
        assert_eq!(
            parse_command(b"A3 AUTHENTICATE LOGIN\r\n"),
            Some((
                "A3".into(),
                Command::Authenticate {
                    mechanism: "LOGIN".into(),
                    initial_response: None
                }
            ))
        );
    }

    #[test]
    fn classifies_other_commands() {
        assert_eq!(
            parse_command(b"x CAPABILITY\r\n").unwrap().1,
            Command::Capability
        );
        assert_eq!(
            parse_command(b"x select INBOX\r\n").unwrap().1,
            Command::NeedsAuth
        );
        assert_eq!(parse_command(b"x IDLE\r\n").unwrap().1, Command::NeedsAuth);
        assert_eq!(parse_command(b"x FROB\r\n").unwrap().1, Command::Unknown);
        assert_eq!(
            parse_command(b"x LOGIN onlyuser\r\n").unwrap().1,
            Command::Unknown
        );
        assert_eq!(parse_command(b"\r\n"), None);
        assert_eq!(parse_command(b"+ LOGIN a b\r\n"), None);
    }

    #[test]
    fn assembles_literals_and_asks_for_continuations_once() {
        let mut acked = 0;
        let cmd = b"a1 LOGIN {4}\r\ndemo {2}\r\npw\r\n";
        assert_eq!(
            assemble(&cmd[..14], 100, 100, &mut acked),
            Assembled::Incomplete { continuation: true }
        );
        assert_eq!(
            assemble(&cmd[..16], 100, 100, &mut acked),
            Assembled::Incomplete {
                continuation: false
            }
        );
        assert_eq!(
            assemble(&cmd[..25], 100, 100, &mut acked),
            Assembled::Incomplete { continuation: true }
        );
        assert_eq!(acked, 2);
        assert_eq!(
            assemble(cmd, 100, 100, &mut acked),
            Assembled::Complete { len: cmd.len() }
        );
    }

    #[test]
    fn refuses_huge_literals_without_waiting_for_them() {
        let mut acked = 0;
        assert_eq!(
            assemble(b"a1 LOGIN {104857600}\r\n", 100, 8192, &mut acked),
            Assembled::LiteralTooLarge {
                tag: "a1".into(),
                synchronizing: true,
                skip: 22
            }
        );
        assert!(matches!(
            assemble(b"a1 LOGIN {4294967296+}\r\n", 100, 8192, &mut acked),
            Assembled::LiteralTooLarge {
                synchronizing: false,
                ..
            }
        ));
        assert_eq!(acked, 0);
    }

    #[test]
    fn chained_literals_cannot_grow_a_command_without_bound() {
        // fuzz/imap_front: every line of a command may end in another literal, so `{0}`
        // lines never completed a command and the buffer grew until the pre-auth timeout.
        let mut endless = b"a ID (\"x\" {0}\r\n".to_vec();
        for _ in 0..10_000 {
            endless.extend_from_slice(b" {0}\r\n");
        }
        let mut acked = 0;
        assert_eq!(
            assemble(&endless, 1024, 256, &mut acked),
            Assembled::LineTooLong
        );
        // The reproducer: max_line 16, no literals allowed but empty ones, and a line
        // after an empty literal.
        let mut acked = 0;
        let input = b"{0}\na A-UTHENTICwATE \"OGIN\r";
        let result = assemble(&input[..16], 16, 0, &mut acked);
        assert!(matches!(result, Assembled::Incomplete { .. }), "{result:?}");
        assert_eq!(assemble(input, 16, 0, &mut acked), Assembled::LineTooLong);
        // Several literals up to the budget are still fine; one byte more is refused.
        let mut acked = 0;
        let login = b"a LOGIN {8}\r\n12345678 {8}\r\n12345678\r\n";
        assert!(login.len() <= max_command(24, 8));
        assert_eq!(
            assemble(login, 24, 8, &mut acked),
            Assembled::Complete { len: login.len() }
        );
        assert!(matches!(
            assemble(
                b"a LOGIN {8}\r\n12345678 {8}\r\n12345678 {1}\r\n",
                24,
                8,
                &mut acked
            ),
            Assembled::LiteralTooLarge { .. } | Assembled::LineTooLong
        ));
    }

    #[test]
    fn long_lines_are_refused() {
        let mut acked = 0;
        assert_eq!(
            assemble(&[b'a'; 50], 50, 10, &mut acked),
            Assembled::LineTooLong
        );
    }

    #[test]
    fn splitting_a_transcript_at_every_offset_never_changes_the_result() {
        let cmd = b"a1 LOGIN {4}\r\ndemo \"pw\"\r\n";
        for cut in 0..cmd.len() {
            let mut acked = 0;
            assert!(matches!(
                assemble(&cmd[..cut], 100, 100, &mut acked),
                Assembled::Incomplete { .. }
            ));
        }
        let mut acked = 0;
        assert_eq!(
            assemble(cmd, 100, 100, &mut acked),
            Assembled::Complete { len: cmd.len() }
        );
    }
}
