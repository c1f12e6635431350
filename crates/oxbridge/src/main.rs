//! oxbridge: lets mail software that only knows username + password keep working against
//! Exchange Online, by terminating the legacy login and authenticating upstream with OAuth 2.0.

#![forbid(unsafe_code)]

mod account;
mod app;
mod cli;
mod consent;
mod demo;
mod logging;
mod loopback;
mod secret_input;
mod store;
mod when;

use std::path::Path;
use std::process::ExitCode;

use clap::Parser;

/// mimalloc returns freed memory to the system promptly and keeps per-thread heaps small,
/// which keeps the resident size of thousands of idle sessions low after traffic bursts.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use oxbridge_server::{Config, Server};

use crate::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    // Each proxied session holds two descriptors; use all the host allows.
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("oxbridge: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async move {
        match cli.command {
            Command::Serve { config } => serve(&config).await,
            Command::CheckConfig { config } => check_config(&config),
            Command::Demo(args) => demo::run(args).await,
            Command::Account(args) => account::run(*args).await,
            Command::Store(args) => store::run(args).await,
            Command::App(args) => app::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("oxbridge: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Loads a configuration file, reporting every problem at once.
pub fn load_config(path: &Path) -> anyhow::Result<Config> {
    let config = Config::load(path).map_err(anyhow::Error::msg)?;
    Ok(config)
}

async fn serve(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    logging::init(&config.log.format);
    let path = path.to_path_buf();
    let loader = oxbridge_server::reload::ConfigLoader::new(move || Config::load(&path));
    start_server(config, Some(loader)).await
}

/// Builds and runs the server until SIGINT or SIGTERM.
pub async fn run_server(config: Config) -> anyhow::Result<()> {
    start_server(config, None).await
}

/// Builds and runs the server until SIGINT or SIGTERM; with a `loader`, SIGHUP (and the
/// admin `POST /reload`) reload the configuration through it.
async fn start_server(
    config: Config,
    loader: Option<oxbridge_server::reload::ConfigLoader>,
) -> anyhow::Result<()> {
    let mut server = Server::build(config).map_err(|problems| {
        anyhow::anyhow!(
            "the configuration has problems:\n  - {}",
            problems.join("\n  - ")
        )
    })?;
    if let Some(loader) = loader {
        server = server.reload_from(loader);
        let handle = server.reload_handle();
        tokio::spawn(async move {
            use tokio::signal::unix::{signal, SignalKind};
            let Ok(mut hangup) = signal(SignalKind::hangup()) else {
                return;
            };
            while hangup.recv().await.is_some() {
                tracing::info!("SIGHUP: reloading");
                // The server logs the outcome, every problem included.
                let _ = handle.reload().await;
            }
        });
    }
    server
        .run(shutdown_signal())
        .await
        .map_err(anyhow::Error::msg)
}

fn check_config(path: &Path) -> anyhow::Result<()> {
    let config = load_config(path)?;
    let problems = config.validate();
    if problems.is_empty() {
        println!("{}: OK", path.display());
        Ok(())
    } else {
        for p in &problems {
            println!("{}: {p}", path.display());
        }
        anyhow::bail!("{} problem(s) found", problems.len())
    }
}

/// Resolves on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(term) => term,
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}
