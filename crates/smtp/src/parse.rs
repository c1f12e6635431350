//! SMTP client commands before login, parsed with nom from one line (without its line
//! ending; framing and its length limit are the front-end's).
//!
//! The parser is deliberately lenient where real devices are sloppy (`MAIL FROM: <a@b>`
//! with a space, `MAIL FROM:a@b` without brackets, lower-case verbs) and strict where it
//! matters: a verb must be a whole word, and an address may not contain control characters.

use nom::branch::alt;
use nom::bytes::complete::{tag_no_case, take_till, take_while, take_while1};
use nom::character::complete::{char, digit1, space0, space1};
use nom::combinator::{all_consuming, eof, map, map_res, opt, rest, value};
use nom::sequence::{delimited, preceded, terminated, tuple};
use nom::IResult;

/// Longest reverse-path RFC 5321 §4.5.3.1.3 allows (256 octets including the brackets).
const MAX_PATH: usize = 256;

/// A command from a client that has not logged in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Ehlo(String),
    Helo(String),
    StartTls,
    Auth {
        /// Upper case.
        mechanism: String,
        initial_response: Option<Vec<u8>>,
    },
    /// `MAIL FROM:<sender> [parameters]`; the sender without brackets, empty for `<>`.
    Mail {
        sender: String,
    },
    Rcpt,
    Data,
    /// `BDAT size [LAST]`: `size` bytes of message data follow the line at once.
    Bdat {
        size: u64,
    },
    Rset,
    Noop,
    Quit,
    Help,
    Vrfy,
    Expn,
    /// A known verb with arguments that do not parse.
    Syntax,
    /// Not a command oxbridge knows.
    Unknown,
}

/// Parses one command line (without CRLF).
pub fn parse_command(line: &[u8]) -> Command {
    match command(line) {
        Ok((_, command)) => command,
        Err(_) => Command::Unknown,
    }
}

fn command(input: &[u8]) -> IResult<&[u8], Command> {
    alt((
        hello("EHLO", Command::Ehlo),
        hello("HELO", Command::Helo),
        bare("STARTTLS", Command::StartTls),
        auth,
        mail,
        with_arguments("RCPT", Command::Rcpt),
        bare("DATA", Command::Data),
        bdat,
        bare("RSET", Command::Rset),
        with_arguments("NOOP", Command::Noop),
        bare("QUIT", Command::Quit),
        with_arguments("HELP", Command::Help),
        with_arguments("VRFY", Command::Vrfy),
        with_arguments("EXPN", Command::Expn),
    ))(input)
}

/// The verb as a whole word: followed by a space or the end of the line.
fn verb<'a>(name: &'static str) -> impl FnMut(&'a [u8]) -> IResult<&'a [u8], &'a [u8]> {
    terminated(tag_no_case(name), alt((space1, eof)))
}

/// A verb that takes no arguments (trailing spaces tolerated); anything else is [`Command::Syntax`].
fn bare<'a>(
    name: &'static str,
    command: Command,
) -> impl FnMut(&'a [u8]) -> IResult<&'a [u8], Command> {
    preceded(
        verb(name),
        alt((value(command, eof), value(Command::Syntax, rest))),
    )
}

/// A verb whose arguments oxbridge does not need before login.
fn with_arguments<'a>(
    name: &'static str,
    command: Command,
) -> impl FnMut(&'a [u8]) -> IResult<&'a [u8], Command> {
    value(command, preceded(verb(name), rest))
}

/// `EHLO domain` / `HELO domain`: the first word is the client's name; an empty one is
/// [`Command::Syntax`] (RFC 5321 requires it).
fn hello<'a>(
    name: &'static str,
    make: fn(String) -> Command,
) -> impl FnMut(&'a [u8]) -> IResult<&'a [u8], Command> {
    preceded(
        verb(name),
        alt((
            map(
                terminated(take_while1(is_graphic), rest),
                move |domain: &[u8]| make(String::from_utf8_lossy(domain).into_owned()),
            ),
            value(Command::Syntax, rest),
        )),
    )
}

/// `AUTH mechanism [initial-response]`.
fn auth(input: &[u8]) -> IResult<&[u8], Command> {
    preceded(
        verb("AUTH"),
        alt((
            all_consuming(map(
                tuple((
                    take_while1(|b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    opt(preceded(space1, take_while1(is_graphic))),
                    space0,
                )),
                |(mechanism, ir, _): (&[u8], Option<&[u8]>, _)| Command::Auth {
                    mechanism: String::from_utf8_lossy(mechanism).to_ascii_uppercase(),
                    initial_response: ir.map(<[u8]>::to_vec),
                },
            )),
            value(Command::Syntax, rest),
        )),
    )(input)
}

/// `MAIL FROM:<path> [parameters]`, with the leniencies real devices need.
fn mail(input: &[u8]) -> IResult<&[u8], Command> {
    preceded(
        verb("MAIL"),
        alt((
            map(
                preceded(
                    tuple((tag_no_case("FROM:"), space0)),
                    terminated(path, alt((preceded(space1, rest), eof))),
                ),
                |sender| Command::Mail { sender },
            ),
            value(Command::Syntax, rest),
        )),
    )(input)
}

/// A reverse-path: `<>`, `<user@domain>`, `<@relay:user@domain>` (source route dropped), or
/// a bare `user@domain`.
fn path(input: &[u8]) -> IResult<&[u8], String> {
    let (rest, raw) = alt((
        delimited(char('<'), take_till(|b| b == b'>' || b < 0x20), char('>')),
        take_while1(is_graphic),
    ))(input)?;
    let address = match raw.iter().position(|&b| b == b':') {
        Some(colon) if raw.first() == Some(&b'@') => &raw[colon + 1..],
        _ => raw,
    };
    if raw.len() + 2 > MAX_PATH || address.iter().any(|&b| b == b'<' || b == b'>' || b == 0x7f) {
        return Err(nom::Err::Error(nom::error::Error::new(
            input,
            nom::error::ErrorKind::Verify,
        )));
    }
    Ok((rest, String::from_utf8_lossy(address).into_owned()))
}

/// `BDAT size [LAST]`.
fn bdat(input: &[u8]) -> IResult<&[u8], Command> {
    preceded(
        verb("BDAT"),
        alt((
            all_consuming(map(
                tuple((
                    map_res(map_res(digit1, std::str::from_utf8), str::parse::<u64>),
                    opt(preceded(space1, tag_no_case("LAST"))),
                    take_while(|b| b == b' '),
                )),
                |(size, _, _)| Command::Bdat { size },
            )),
            value(Command::Syntax, rest),
        )),
    )(input)
}

/// Printable ASCII and any non-ASCII byte (UTF-8 in SMTPUTF8 addresses), no spaces.
fn is_graphic(b: u8) -> bool {
    b > 0x20 && b != 0x7f
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mail(sender: &str) -> Command {
        Command::Mail {
            sender: sender.into(),
        }
    }

    #[test]
    fn hello_commands_take_the_client_name() {
        assert_eq!(
            parse_command(b"EHLO client.example"),
            Command::Ehlo("client.example".into())
        );
        assert_eq!(
            parse_command(b"helo [192.0.2.7]"),
            Command::Helo("[192.0.2.7]".into())
        );
        assert_eq!(parse_command(b"EHLO"), Command::Syntax);
        assert_eq!(parse_command(b"EHLO "), Command::Syntax);
        assert_eq!(parse_command(b"EHLOX a"), Command::Unknown);
    }

    #[test]
    fn auth_with_and_without_initial_response() {
        assert_eq!(
            parse_command(b"AUTH plain AGRlbW8AcHc="),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some(b"AGRlbW8AcHc=".to_vec())
            }
        );
        assert_eq!(
            parse_command(b"auth LOGIN"),
            Command::Auth {
                mechanism: "LOGIN".into(),
                initial_response: None
            }
        );
        assert_eq!(
            parse_command(b"AUTH PLAIN ="),
            Command::Auth {
                mechanism: "PLAIN".into(),
                initial_response: Some(b"=".to_vec())
            }
        );
        assert_eq!(parse_command(b"AUTH"), Command::Syntax);
        assert_eq!(parse_command(b"AUTH PLAIN a b"), Command::Syntax);
    }

    #[test]
    fn mail_from_in_the_forms_devices_send() {
        assert_eq!(
            parse_command(b"MAIL FROM:<scan@contoso.com>"),
            mail("scan@contoso.com")
        );
        assert_eq!(
            parse_command(b"mail from:<scan@contoso.com> BODY=8BITMIME SIZE=1234"),
            mail("scan@contoso.com")
        );
        assert_eq!(
            parse_command(b"MAIL FROM: <scan@contoso.com>"),
            mail("scan@contoso.com")
        );
        assert_eq!(
            parse_command(b"MAIL FROM:scan@contoso.com"),
            mail("scan@contoso.com")
        );
        assert_eq!(parse_command(b"MAIL FROM:<>"), mail(""));
        assert_eq!(
            parse_command(b"MAIL FROM:<@relay.example:scan@contoso.com>"),
            mail("scan@contoso.com")
        );
        assert_eq!(
            parse_command("MAIL FROM:<j\u{f6}rg@contoso.com> SMTPUTF8".as_bytes()),
            mail("j\u{f6}rg@contoso.com")
        );
    }

    #[test]
    fn malformed_mail_from_is_a_syntax_error() {
        for bad in [
            &b"MAIL"[..],
            b"MAIL TO:<a@b>",
            b"MAIL FROM:",
            b"MAIL FROM:<a@b",
            b"MAIL FROM:<a\x01b@c>",
            b"MAIL FROM:<a@b>junk",
        ] {
            assert_eq!(parse_command(bad), Command::Syntax, "{bad:?}");
        }
        let long = format!("MAIL FROM:<{}@example.com>", "a".repeat(300));
        assert_eq!(parse_command(long.as_bytes()), Command::Syntax);
    }

    #[test]
    fn simple_verbs_and_bdat() {
        assert_eq!(parse_command(b"STARTTLS"), Command::StartTls);
        assert_eq!(parse_command(b"starttls "), Command::StartTls);
        assert_eq!(parse_command(b"STARTTLS now"), Command::Syntax);
        assert_eq!(parse_command(b"RSET"), Command::Rset);
        assert_eq!(parse_command(b"NOOP hello"), Command::Noop);
        assert_eq!(parse_command(b"QUIT"), Command::Quit);
        assert_eq!(parse_command(b"HELP AUTH"), Command::Help);
        assert_eq!(parse_command(b"RCPT TO:<a@b>"), Command::Rcpt);
        assert_eq!(parse_command(b"DATA"), Command::Data);
        assert_eq!(parse_command(b"VRFY postmaster"), Command::Vrfy);
        assert_eq!(parse_command(b"EXPN staff"), Command::Expn);
        assert_eq!(
            parse_command(b"BDAT 1024 LAST"),
            Command::Bdat { size: 1024 }
        );
        assert_eq!(parse_command(b"BDAT 7"), Command::Bdat { size: 7 });
        assert_eq!(parse_command(b"BDAT x"), Command::Syntax);
        assert_eq!(
            parse_command(b"BDAT 99999999999999999999999"),
            Command::Syntax
        );
        assert_eq!(parse_command(b"FROB"), Command::Unknown);
        assert_eq!(parse_command(b""), Command::Unknown);
        assert_eq!(parse_command(b"\xff\xfe"), Command::Unknown);
    }
}
