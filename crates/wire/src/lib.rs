//! What the oxbridge protocols share: secrets that redact themselves, the login a front-end
//! hands over, line framing with hard limits, SASL codecs, upstream TLS connections, the
//! sans-IO session contract every protocol implements, and the splice.
//!
//! Nothing here knows about a particular protocol; the protocol crates build on these pieces
//! so that a new protocol is one crate plus a few lines of wiring in the server.

#![forbid(unsafe_code)]

pub mod line;
pub mod login;
pub mod password_sasl;
pub mod pool;
pub mod protocol;
pub mod sasl;
pub mod secret;
pub mod session;
pub mod splice;
pub mod tls;
pub mod upstream;

pub use login::{Login, LoginRejection, RelayRejection, RelayRequest};
pub use protocol::Protocol;
pub use secret::Secret;
pub use session::{BackEnd, FrontEnd, Next, UpstreamSession};
pub use upstream::{UpstreamEndpoint, UpstreamError, UpstreamStream, UpstreamTls};
