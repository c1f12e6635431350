//! A faithful fake of Exchange Online (IMAP and POP3 serve one shared [`Directory`]; SMTP
//! delivers into it) and of Entra ID's token endpoint, for end-to-end tests, benchmarks and
//! `oxbridge demo`.
//!
//! The fake reproduces what EXCHANGE.md records about the real services byte for byte where
//! clients or the proxy depend on it: greetings, capability lists before and after login,
//! XOAUTH2 in SASL-IR and continuation form, the exact failure strings, "authenticated but
//! not connected", `* BYE Session invalidated - AccessTokenExpired`, refresh-token rotation
//! and AADSTS error bodies. Switches on [`Directory`] and [`FakeEntra`] turn each quirk on
//! and off so tests can provoke them.
//!
//! Everything binds to `127.0.0.1:0` and uses a throw-away [`TestPki`], so tests run in
//! parallel without fixed ports or committed keys.

#![forbid(unsafe_code)]

mod clock;
mod conn;
pub mod directory;
pub mod entra;
pub mod exchange;
mod ids;
pub mod imap;
pub mod mailbox;
pub mod message;
pub mod pki;
pub mod pop3;
mod service;
pub mod smtp;
pub mod xoauth2;

pub use directory::{Directory, IssuedToken, XoauthLogin};
pub use entra::{FakeEntra, InjectedError};
pub use exchange::{FakeExchange, FakeOptions};
pub use pki::TestPki;
pub use pop3::Pop3Switches;
pub use smtp::{SmtpSwitches, Submission};
