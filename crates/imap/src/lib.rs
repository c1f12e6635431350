//! IMAP for oxbridge: the client-facing pre-auth dialog ([`ImapFrontEnd`], sans-IO) and the
//! upstream XOAUTH2 login ([`ImapBackEnd`]).
//!
//! Before login oxbridge answers CAPABILITY, ID, NOOP, LOGOUT, STARTTLS, LOGIN and
//! AUTHENTICATE PLAIN/LOGIN itself; after the upstream accepts the token, every byte is the
//! upstream's.

#![forbid(unsafe_code)]

mod back;
mod front;
mod parse;

pub use back::{parse_upstream_line, render_capabilities, ImapBackEnd};
pub use front::{ImapFrontEnd, ImapSettings};
pub use parse::{assemble, parse_command, Assembled, Command};
