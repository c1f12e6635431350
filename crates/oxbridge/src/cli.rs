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
    Account(Box<AccountArgs>),
    /// Whole-store operations: migrate between SQLite and PostgreSQL.
    Store(crate::store::StoreArgs),
    /// Entra app registrations: the admin-consent URL.
    App(crate::app::AppArgs),
}

#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Port of the implicit-TLS IMAP listener.
    #[arg(long, default_value_t = 1993)]
    pub imap_port: u16,
    /// Port of the STARTTLS IMAP listener.
    #[arg(long, default_value_t = 1143)]
    pub imap_starttls_port: u16,
    /// Port of the implicit-TLS POP3 listener.
    #[arg(long, default_value_t = 1995)]
    pub pop3_port: u16,
    /// Port of the SMTP submission listener (STARTTLS).
    #[arg(long, default_value_t = 1587)]
    pub smtp_port: u16,
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

/// A password for `passwd`, which needs none to revoke or list.
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct OptionalPasswordSource {
    /// Read the password from standard input.
    #[arg(long)]
    pub password_stdin: bool,
    /// Read the password from a file.
    #[arg(long, value_name = "PATH")]
    pub password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[group(required = true, multiple = false)]
pub struct GrantSource {
    /// App-only access with the app's client credentials (secret or certificate).
    #[arg(long)]
    pub client_credentials: bool,
    /// Import a delegated refresh token from a file.
    #[arg(long, value_name = "PATH")]
    pub refresh_token_file: Option<PathBuf>,
    /// Sign in now with the device-code flow (works headless, e.g. over `docker exec`).
    #[arg(long)]
    pub device_code: bool,
    /// Sign in now in a browser (authorization code + PKCE, loopback redirect).
    #[arg(long)]
    pub browser: bool,
    /// Resource-owner password grant: the local password is the user's Entra password and
    /// Entra checks it (needs `allow_password_grant = true` on the app; the weakest option).
    #[arg(long)]
    pub password_grant: bool,
}

/// One of the account's current passwords, which opens a password-sealed grant: from a
/// file, or from standard input (when the new password also comes from standard input, the
/// current one is its first line and the new one its second).
#[derive(Debug, Args)]
#[group(required = false, multiple = false)]
pub struct CurrentPasswordSource {
    /// Read one of the account's current passwords from standard input.
    #[arg(long)]
    pub current_password_stdin: bool,
    /// Read one of the account's current passwords from a file.
    #[arg(long, value_name = "PATH")]
    pub current_password_file: Option<PathBuf>,
}

/// How an interactive sign-in runs (`consent`, `add --device-code|--browser`).
#[derive(Debug, Args)]
pub struct SignInOptions {
    /// Pre-fill the sign-in page with this user (browser sign-in).
    #[arg(long, value_name = "UPN")]
    pub login_hint: Option<String>,
    /// Port of the loopback redirect `http://localhost:PORT/` (browser; 0 = any free port).
    #[arg(long, default_value_t = 0)]
    pub redirect_port: u16,
    /// How long to wait for the browser's redirect, in seconds.
    #[arg(long, default_value_t = 300)]
    pub browser_timeout: u64,
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
        /// A different XOAUTH2 user= for one protocol, e.g. `smtp=delegate@contoso.com`
        /// (repeatable): a shared mailbox over IMAP/POP3, its delegate over SMTP.
        #[arg(long = "identity", value_name = "PROTOCOL=MAILBOX")]
        identities: Vec<String>,
        #[command(flatten)]
        grant: GrantSource,
        /// Seal the refresh token under the local password as well (Argon2id key slots), so
        /// the database and the master key alone cannot yield it. Delegated grants only; such
        /// an account is refreshed only at logins (no background refresh, no relay rules).
        #[arg(long)]
        password_sealed: bool,
        #[command(flatten)]
        sign_in: SignInOptions,
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
    /// Set an account's local password, or manage its named app passwords.
    ///
    /// Without --add/--revoke/--list, replaces the password named "default".
    Passwd {
        user: String,
        /// Add a named password (one per device or application).
        #[arg(long, value_name = "NAME", conflicts_with_all = ["revoke", "list"])]
        add: Option<String>,
        /// Revoke one named password; the others and the grant stay as they are.
        #[arg(long, value_name = "NAME", conflicts_with = "list")]
        revoke: Option<String>,
        /// List the account's passwords with creation and last-use times.
        #[arg(long)]
        list: bool,
        #[command(flatten)]
        password: OptionalPasswordSource,
        /// A password-sealed account needs one of its current passwords to add or change one.
        #[command(flatten)]
        current: CurrentPasswordSource,
    },
    /// Sign in again for a delegated account (device code by default, or --browser) and
    /// store the new refresh token; the account becomes active. A pending claims challenge
    /// (Conditional Access, MFA) is passed on to the sign-in.
    Consent {
        user: String,
        /// Use a browser on this machine (auth code + PKCE) instead of a device code.
        #[arg(long)]
        browser: bool,
        #[command(flatten)]
        sign_in: SignInOptions,
        /// A password-sealed account needs one of its passwords to seal the new grant.
        #[command(flatten)]
        password: OptionalPasswordSource,
        /// Password-sealed account whose passwords are all forgotten: the password given
        /// becomes its only one, under a new grant key; the others are removed.
        #[arg(long)]
        reset_passwords: bool,
    },
    /// Set or clear the XOAUTH2 user= an account presents for one protocol.
    Identity {
        user: String,
        /// imap, pop3 or smtp.
        protocol: String,
        /// The mailbox to present; omit with --clear to use the account's mailbox again.
        #[arg(required_unless_present = "clear")]
        mailbox: Option<String>,
        #[arg(long, conflicts_with = "mailbox")]
        clear: bool,
    },
    /// Replace an account's refresh token (after re-consent) and mark it active.
    ImportToken {
        user: String,
        #[arg(long, value_name = "PATH")]
        refresh_token_file: PathBuf,
    },
}
