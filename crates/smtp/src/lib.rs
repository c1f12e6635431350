//! SMTP submission for oxbridge: the client-facing pre-auth dialog ([`SmtpFrontEnd`],
//! sans-IO) and the upstream XOAUTH2 login ([`SmtpBackEnd`]).
//!
//! Before login oxbridge answers the greeting, EHLO/HELO, STARTTLS, AUTH PLAIN/LOGIN, RSET,
//! NOOP, HELP and QUIT itself. The EHLO reply advertises what the upstream really offers
//! ([`Extensions`], learned from the upstream's own EHLO after TLS and cached per upstream),
//! with `AUTH PLAIN LOGIN` in place of the upstream's `AUTH … XOAUTH2`. A `MAIL FROM` from a
//! client that has not logged in becomes a relay request, which the server's relay rules
//! decide on; after a relay login the upstream answers that `MAIL FROM` itself. After the
//! upstream's `235`, every byte is the upstream's.

#![forbid(unsafe_code)]

mod back;
mod ehlo;
mod front;
mod parse;
mod reply;

pub use back::SmtpBackEnd;
pub use ehlo::{CacheLookup, ExtensionCache, Extensions};
pub use front::{SmtpFrontEnd, SmtpSettings};
pub use parse::{parse_command, Command};
pub use reply::{parse_reply_line, Reply, ReplyLine};

/// The name oxbridge gives itself in its SMTP greeting and EHLO, towards clients and the
/// upstream alike.
pub const HOSTNAME: &str = "oxbridge";
