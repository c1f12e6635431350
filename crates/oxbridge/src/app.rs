//! `oxbridge app …`: helpers for the Entra app registrations of the configuration. For now,
//! `consent-url` prints the admin-consent URL an administrator opens to grant an app its
//! permissions for the whole tenant (what app-only accounts need).

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::load_config;

#[derive(Debug, Args)]
pub struct AppArgs {
    #[arg(
        long,
        short,
        env = "OXBRIDGE_CONFIG",
        default_value = "/etc/oxbridge/oxbridge.toml",
        global = true
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: AppCommand,
}

#[derive(Debug, Subcommand)]
pub enum AppCommand {
    /// Print the admin-consent URL of an [[app]]; Entra redirects to --redirect-uri with
    /// admin_consent=True, or error=access_denied when the administrator declines.
    ConsentUrl {
        /// The [[app]] name.
        app: String,
        /// Where Entra sends the administrator afterwards; must be one of the app
        /// registration's redirect URIs.
        #[arg(long, default_value = "http://localhost/")]
        redirect_uri: String,
    },
}

pub fn run(args: AppArgs) -> anyhow::Result<()> {
    let config = load_config(&args.config)?;
    match args.command {
        AppCommand::ConsentUrl { app, redirect_uri } => {
            let registration = oxbridge_server::runtime::app_registrations(&config)
                .map_err(anyhow::Error::msg)?
                .into_iter()
                .find(|a| a.name == app)
                .with_context(|| {
                    format!("no [[app]] named {app:?} in {}", args.config.display())
                })?;
            let state = oxbridge_broker::consent::random_state();
            println!("{}", registration.admin_consent_url(&redirect_uri, &state)?);
        }
    }
    Ok(())
}
