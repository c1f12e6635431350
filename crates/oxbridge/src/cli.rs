//! The command line.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// An OAuth2-terminating IMAP/POP3/SMTP proxy for Exchange Online.
#[derive(Debug, Parser)]
#[command(name = "oxbridge", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy.
    Serve {
        #[arg(
            long,
            short,
            env = "OXBRIDGE_CONFIG",
            default_value = "/etc/oxbridge/oxbridge.toml"
        )]
        config: PathBuf,
    },
    /// Validate a configuration file and print every problem.
    CheckConfig {
        #[arg(
            long,
            short,
            env = "OXBRIDGE_CONFIG",
            default_value = "/etc/oxbridge/oxbridge.toml"
        )]
        config: PathBuf,
    },
    /// Run the proxy in front of a built-in fake Exchange Online with a demo account.
    Demo(DemoArgs),
    /// Manage accounts.
    Account(AccountArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port of the implicit-TLS IMAP listener.
    #[arg(long, default_value_t = 1993)]
    pub imap_port: u16,
    /// Port of the STARTTLS IMAP listener.
    #[arg(long, default_value_t = 1143)]
    pub imap_starttls_port: u16,
    /// Port of the admin endpoints (/metrics, /healthz, /readyz).
    #[arg(long, default_value_t = 9190)]
    pub admin_port: u16,
    /// Keep the demo's data here instead of a temporary directory.
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct AccountArgs {
    #[arg(
        long,
        short,
        env = "OXBRIDGE_CONFIG",
        default_value = "/etc/oxbridge/oxbridge.toml",
        global = true
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: AccountCommand,
}

/// Where a secret comes from: never the command line.
#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct PasswordSource {
    /// Read the local password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Read the local password from a file.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct GrantSource {
    /// App-only access with the app's client credentials.
    #[arg(long)]
    pub client_credentials: bool,
    /// Import a delegated refresh token from a file.
    #[arg(long, value_name = "PATH")]
    pub refresh_token_file: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Add an account mapping a local login to a mailbox and a grant.
    Add {
        /// The local user name clients log in with.
        user: String,
        /// The mailbox (XOAUTH2 user=), e.g. scanner@contoso.com.
        #[arg(long)]
        mailbox: String,
        /// The [[app]] this account's grant belongs to.
        #[arg(long)]
        app: String,
        /// Protocols the account may use.
        #[arg(long, value_delimiter = ',', default_value = "imap,pop3,smtp")]
        protocols: Vec<String>,
        #[command(flatten)]
        grant: GrantSource,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// List accounts.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Show one account.
    Show {
        user: String,
        #[arg(long)]
        json: bool,
    },
    /// Remove an account.
    Remove { user: String },
    /// Set an account's local password.
    Passwd {
        user: String,
        #[command(flatten)]
        password: PasswordSource,
    },
    /// Replace an account's refresh token (after re-consent) and mark it active.
    ImportToken {
        user: String,
        #[arg(long, value_name = "PATH")]
        refresh_token_file: PathBuf,
    },
}
