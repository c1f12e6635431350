//! `oxbridge-bench`: measures oxbridge against a direct connection to the same fake upstream,
//! in the same run, and prints ratios (see docs/performance.md).

#![forbid(unsafe_code)]

mod client;
mod fake_process;
mod line_client;
mod scenarios;
mod stats;
mod world;

use std::path::PathBuf;

use clap::Parser;

/// Benchmarks oxbridge against a direct connection to the same upstream.
#[derive(Debug, Parser)]
#[command(name = "oxbridge-bench")]
pub struct Args {
    /// A short smoke run (about ten seconds) instead of the full benchmark.
    #[arg(long)]
    pub quick: bool,
    /// The oxbridge binary; default: the one next to this benchmark (built if missing).
    #[arg(long)]
    pub oxbridge: Option<PathBuf>,
    /// Where to write the machine-readable results.
    #[arg(long, default_value = "target/bench-results.json")]
    pub out: PathBuf,
    /// Greeted upstream connections oxbridge keeps ready (`[upstream.imap] pool_size`).
    #[arg(long, default_value_t = 0)]
    pub pool: usize,
    /// Message sizes for the throughput measurements, in MB (default 20,200; quick: 2).
    #[arg(long, value_delimiter = ',')]
    pub message_mb: Option<Vec<usize>>,
    /// Run only these groups: memory, latency, rate, fetch, pop3, smtp, tokens, connects.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<String>>,
    /// Internal: run as the fake Exchange Online process.
    #[arg(long, hide = true)]
    pub fake_server: bool,
    /// Idle-session counts for the memory measurement.
    #[arg(long, value_delimiter = ',')]
    pub sessions: Option<Vec<usize>>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    oxbridge_wire::tls::install_crypto_provider();
    if args.fake_server {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        return runtime.block_on(fake_process::serve());
    }
    let binary = match &args.oxbridge {
        Some(path) => path.clone(),
        None => sibling_binary()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let rows = runtime.block_on(scenarios::run_all(&args, &binary))?;
    stats::print_table(&rows);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(&rows)?)?;
    println!("\nresults written to {}", args.out.display());
    Ok(())
}

/// The `oxbridge` binary of the same build profile, built first if it is missing.
fn sibling_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name("oxbridge");
    if !binary.exists() {
        let release = exe
            .parent()
            .and_then(|p| p.file_name())
            .is_some_and(|n| n == "release");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut build = std::process::Command::new(cargo);
        build.args(["build", "-p", "oxbridge"]);
        if release {
            build.arg("--release");
        }
        anyhow::ensure!(build.status()?.success(), "building oxbridge failed");
    }
    Ok(binary)
}
