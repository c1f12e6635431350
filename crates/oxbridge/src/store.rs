//! `oxbridge store …`: whole-store operations. `migrate` copies every account between the
//! embedded SQLite store and a shared PostgreSQL store, either way.

use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use oxbridge_server::Config;
use oxbridge_store::key::MASTER_KEY_FILE;
use oxbridge_store::transfer::{self, Location};
use oxbridge_store::MasterKey;

#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The configuration whose master key ([store] master_key_file / master_key_env, or
    /// data_dir/master.key) seals both stores.
    #[arg(
        long,
        short,
        env = "OXBRIDGE_CONFIG",
        default_value = "/etc/oxbridge/oxbridge.toml",
        global = true
    )]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: StoreCommand,
}

#[derive(Debug, Subcommand)]
pub enum StoreCommand {
    /// Copy every account, password and sealed grant from one store into another, empty one:
    /// SQLite → PostgreSQL or back. Sealed secrets are copied as is, so both stores use the
    /// configured master key. Stop the replicas writing to the source first.
    Migrate {
        /// Source: a SQLite file (or the data directory holding oxbridge.db) or a
        /// postgres:// URL.
        #[arg(long, value_name = "URL_OR_PATH")]
        from: String,
        /// Target, the same forms; must hold no accounts yet.
        #[arg(long, value_name = "URL_OR_PATH")]
        to: String,
    },
}

pub async fn run(args: StoreArgs) -> anyhow::Result<()> {
    let config = crate::load_config(&args.config)?;
    match args.command {
        StoreCommand::Migrate { from, to } => {
            let key = master_key(&config)?;
            let from = Location::parse(&from);
            let to = Location::parse(&to);
            if let Location::Sqlite(path) = &from {
                if !path.exists() {
                    anyhow::bail!("source {} does not exist", path.display());
                }
            }
            let copied = transfer::migrate(&from, &to, &key).await?;
            println!(
                "copied {} account(s), {} password(s), {} refresh token(s) from {} to {}",
                copied.accounts,
                copied.passwords,
                copied.refresh_tokens,
                from.describe(),
                to.describe()
            );
            Ok(())
        }
    }
}

/// The configured master key; never created here (a migration with a new key could only
/// produce a store whose secrets do not open).
fn master_key(config: &Config) -> anyhow::Result<MasterKey> {
    if let Some(var) = &config.store.master_key_env {
        let value = std::env::var(var)
            .map_err(|_| anyhow::anyhow!("[store] master_key_env: {var} is not set"))?;
        return Ok(MasterKey::from_base64(value.trim())?);
    }
    let path = config
        .store
        .master_key_file
        .clone()
        .unwrap_or_else(|| Path::new(&config.data_dir).join(MASTER_KEY_FILE));
    Ok(MasterKey::load(&path)?)
}
