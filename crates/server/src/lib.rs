//! The oxbridge server: listeners, TLS, the session driver shared by every protocol,
//! connection limits, graceful shutdown, metrics and the admin endpoints.

#![forbid(unsafe_code)]

pub mod admin;
pub mod authenticate;
pub mod certificate;
pub mod config;
pub mod listener;
pub mod metrics;
pub mod proxy_protocol;
pub mod relay;
pub mod reload;
pub mod runtime;
pub mod session;
pub mod stream;
pub mod throttle;

pub use config::Config;
pub use runtime::{open_store, Server};
