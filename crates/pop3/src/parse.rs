//! POP3 client commands before login, parsed with nom from one line (RFC 1939 §3: a keyword
//! of three or four letters, case-insensitive, then arguments separated by single spaces).
//!
//! Framing (finding the line under a length limit) is the front-end's job; this module only
//! turns a complete line into a [`Command`].

use nom::branch::alt;
use nom::bytes::complete::{tag, tag_no_case, take_till1, take_while1};
use nom::character::complete::{char, space0};
use nom::combinator::{all_consuming, eof, map, opt, rest, value, verify};
use nom::sequence::{preceded, terminated, tuple};
use nom::IResult;

/// A POP3 command in the AUTHORIZATION state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Capa,
    Stls,
    /// `USER name`: the bytes after the space, trailing blanks removed.
    User(Vec<u8>),
    /// `PASS secret`: everything after the space, verbatim (RFC 1939 lets a password hold
    /// spaces, since PASS has exactly one argument).
    Pass(Vec<u8>),
    /// `AUTH` alone lists the mechanisms; `AUTH mech [initial-response]` starts one
    /// (RFC 5034).
    Auth {
        mechanism: Option<String>,
        initial_response: Option<Vec<u8>>,
    },
    Apop,
    Noop,
    Quit,
    /// A TRANSACTION-state command (STAT, LIST, RETR, …): valid only after login.
    NeedsAuth,
    /// A known keyword with unusable arguments.
    BadSyntax,
    /// Not a POP3 command we know.
    Unknown,
}

/// Parses one command line (without its line ending).
pub fn parse_command(line: &[u8]) -> Command {
    match command(line) {
        Ok((_, command)) => command,
        Err(_) => Command::Unknown,
    }
}

fn command(input: &[u8]) -> IResult<&[u8], Command> {
    alt((
        bare("CAPA", Command::Capa),
        bare("STLS", Command::Stls),
        bare("NOOP", Command::Noop),
        bare("QUIT", Command::Quit),
        user,
        pass,
        auth,
        value(
            Command::Apop,
            all_consuming(preceded(keyword("APOP"), rest)),
        ),
        value(
            Command::NeedsAuth,
            all_consuming(preceded(transaction_keyword, rest)),
        ),
        // A known keyword whose arguments did not parse above.
        value(
            Command::BadSyntax,
            all_consuming(preceded(
                alt((
                    keyword("CAPA"),
                    keyword("STLS"),
                    keyword("NOOP"),
                    keyword("QUIT"),
                    keyword("USER"),
                    keyword("PASS"),
                    keyword("AUTH"),
                )),
                rest,
            )),
        ),
    ))(input)
}

/// `word` as a whole keyword: followed by a space or the end of the line.
fn keyword(word: &'static str) -> impl Fn(&[u8]) -> IResult<&[u8], &[u8]> {
    move |input| {
        terminated(
            tag_no_case(word),
            nom::combinator::peek(alt((tag(" "), eof))),
        )(input)
    }
}

/// A command without arguments (trailing blanks tolerated, as some clients send them).
fn bare(word: &'static str, command: Command) -> impl Fn(&[u8]) -> IResult<&[u8], Command> {
    move |input| {
        value(
            command.clone(),
            all_consuming(tuple((tag_no_case(word), space0))),
        )(input)
    }
}

fn user(input: &[u8]) -> IResult<&[u8], Command> {
    map(
        all_consuming(preceded(
            tuple((tag_no_case("USER"), char(' '))),
            verify(rest, |name: &[u8]| !name.trim_ascii().is_empty()),
        )),
        |name: &[u8]| Command::User(name.trim_ascii_end().to_vec()),
    )(input)
}

fn pass(input: &[u8]) -> IResult<&[u8], Command> {
    map(
        all_consuming(preceded(tuple((tag_no_case("PASS"), char(' '))), rest)),
        |password: &[u8]| Command::Pass(password.to_vec()),
    )(input)
}

fn auth(input: &[u8]) -> IResult<&[u8], Command> {
    let (input, _) = tag_no_case("AUTH")(input)?;
    alt((
        value(
            Command::Auth {
                mechanism: None,
                initial_response: None,
            },
            all_consuming(space0),
        ),
        map(
            all_consuming(tuple((
                char(' '),
                take_while1(is_mechanism_char),
                opt(preceded(char(' '), take_till1(|b| b == b' '))),
                space0,
            ))),
            |(_, mechanism, initial_response, _): (_, &[u8], Option<&[u8]>, _)| Command::Auth {
                // Mechanism characters are ASCII by construction.
                mechanism: Some(String::from_utf8_lossy(mechanism).to_ascii_uppercase()),
                initial_response: initial_response.map(<[u8]>::to_vec),
            },
        ),
    ))(input)
}

/// SASL mechanism names: upper-case letters, digits, `-` and `_` (RFC 4422 §3.1); lower
/// case is accepted too.
fn is_mechanism_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Keywords of the TRANSACTION state (RFC 1939, RFC 2449 for UIDL/TOP) and the obsolete
/// LAST and RPOP.
fn transaction_keyword(input: &[u8]) -> IResult<&[u8], &[u8]> {
    alt((
        keyword("STAT"),
        keyword("LIST"),
        keyword("RETR"),
        keyword("DELE"),
        keyword("RSET"),
        keyword("TOP"),
        keyword("UIDL"),
        keyword("LAST"),
        keyword("RPOP"),
    ))(input)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(mechanism: Option<&str>, ir: Option<&[u8]>) -> Command {
        Command::Auth {
            mechanism: mechanism.map(str::to_string),
            initial_response: ir.map(<[u8]>::to_vec),
        }
    }

    #[test]
    fn bare_commands_any_case() {
        assert_eq!(parse_command(b"CAPA"), Command::Capa);
        assert_eq!(parse_command(b"capa"), Command::Capa);
        assert_eq!(parse_command(b"Stls "), Command::Stls);
        assert_eq!(parse_command(b"NOOP"), Command::Noop);
        assert_eq!(parse_command(b"quit"), Command::Quit);
    }

    #[test]
    fn keywords_must_be_whole_words() {
        assert_eq!(parse_command(b"CAPABILITY"), Command::Unknown);
        assert_eq!(parse_command(b"QUITE"), Command::Unknown);
        assert_eq!(parse_command(b"USERNAME bob"), Command::Unknown);
        assert_eq!(parse_command(b"TOPS 1 2"), Command::Unknown);
        assert_eq!(parse_command(b""), Command::Unknown);
        assert_eq!(parse_command(b"\x00\xff"), Command::Unknown);
    }

    #[test]
    fn user_and_pass_keep_their_argument() {
        assert_eq!(parse_command(b"USER demo"), Command::User(b"demo".to_vec()));
        assert_eq!(
            parse_command(b"user alex@contoso.com  "),
            Command::User(b"alex@contoso.com".to_vec())
        );
        assert_eq!(
            parse_command(b"PASS correct horse  "),
            Command::Pass(b"correct horse  ".to_vec())
        );
        assert_eq!(parse_command(b"PASS "), Command::Pass(Vec::new()));
        assert_eq!(parse_command(b"USER"), Command::BadSyntax);
        assert_eq!(parse_command(b"USER  "), Command::BadSyntax);
        assert_eq!(parse_command(b"PASS"), Command::BadSyntax);
        assert_eq!(parse_command(b"CAPA now"), Command::BadSyntax);
    }

    #[test]
    fn auth_with_and_without_mechanism_and_initial_response() {
        assert_eq!(parse_command(b"AUTH"), auth(None, None));
        assert_eq!(parse_command(b"auth plain"), auth(Some("PLAIN"), None));
        assert_eq!(
            parse_command(b"AUTH PLAIN AGRlbW8AcHc="),
            auth(Some("PLAIN"), Some(b"AGRlbW8AcHc="))
        );
        assert_eq!(
            parse_command(b"AUTH LOGIN ="),
            auth(Some("LOGIN"), Some(b"="))
        );
        assert_eq!(parse_command(b"AUTH XOAUTH2"), auth(Some("XOAUTH2"), None));
        assert_eq!(parse_command(b"AUTH PLAIN a b"), Command::BadSyntax);
        assert_eq!(parse_command(b"AUTH  PLAIN"), Command::BadSyntax);
    }

    #[test]
    fn apop_and_transaction_commands_are_recognised() {
        assert_eq!(
            parse_command(b"APOP mrose c4c9334bac560ecc979e58001b3e22fb"),
            Command::Apop
        );
        for line in [
            &b"STAT"[..],
            b"LIST",
            b"list 1",
            b"RETR 1",
            b"DELE 2",
            b"RSET",
            b"TOP 1 10",
            b"UIDL",
            b"LAST",
        ] {
            assert_eq!(parse_command(line), Command::NeedsAuth, "{line:?}");
        }
    }
}
