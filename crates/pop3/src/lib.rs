//! POP3 for oxbridge: the client-facing pre-auth dialog ([`Pop3FrontEnd`], sans-IO) and the
//! upstream XOAUTH2 login ([`Pop3BackEnd`]).
//!
//! Before login oxbridge answers CAPA, STLS, USER/PASS, AUTH PLAIN/LOGIN, NOOP and QUIT
//! itself; after the upstream accepts the token, every byte (STAT, LIST, RETR, DELE, …) is the
//! upstream's.

#![forbid(unsafe_code)]

mod back;
mod capa;
mod front;
mod parse;

pub use back::Pop3BackEnd;
/// The upstream login dialog and reply classifier, for tests and the fuzz targets.
pub use back::{
    authenticate as upstream_dialog, reply as parse_upstream_reply, Reply as UpstreamReply,
};
pub use capa::UpstreamCapabilities;
pub use front::{Pop3FrontEnd, Pop3Settings};
pub use parse::{parse_command, Command};
