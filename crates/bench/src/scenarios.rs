//! The measurements. Each runs the same client code against the upstream directly and
//! through oxbridge, in this run, so the ratio is meaningful on a noisy machine.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;

use crate::client::{login_round_trip, Client, Credentials};
use crate::fake_process::MAILBOX;
use crate::line_client;
use crate::stats::{ms, percentile, Row};
use crate::world::World;
use crate::Args;

/// Sizes of one run.
struct Plan {
    sequential: usize,
    cold_accounts: usize,
    parallel_workers: usize,
    parallel_each: usize,
    rate_seconds: u64,
    message_mb: Vec<usize>,
    sessions: Vec<usize>,
    burst_connects: usize,
    token_burst: usize,
    only: Option<Vec<String>>,
}

impl Plan {
    fn new(args: &Args) -> Plan {
        if args.quick {
            Plan {
                sequential: 20,
                cold_accounts: 3,
                parallel_workers: 8,
                parallel_each: 5,
                rate_seconds: 2,
                message_mb: args.message_mb.clone().unwrap_or_else(|| vec![2]),
                sessions: args.sessions.clone().unwrap_or_else(|| vec![100]),
                burst_connects: 100,
                token_burst: 16,
                only: args.only.clone(),
            }
        } else {
            Plan {
                sequential: 200,
                cold_accounts: 30,
                parallel_workers: 64,
                parallel_each: 20,
                rate_seconds: 5,
                message_mb: args.message_mb.clone().unwrap_or_else(|| vec![20, 200]),
                sessions: args.sessions.clone().unwrap_or_else(|| vec![1000, 9000]),
                burst_connects: 1000,
                token_burst: 64,
                only: args.only.clone(),
            }
        }
    }
}

impl Plan {
    /// Whether the measurement group `name` is part of this run (`--only`).
    fn wants(&self, name: &str) -> bool {
        self.only
            .as_ref()
            .is_none_or(|only| only.iter().any(|o| o == name))
    }
}

pub async fn run_all(args: &Args, binary: &Path) -> anyhow::Result<Vec<Row>> {
    let plan = Plan::new(args);
    let mut world = World::start(binary, args.pool).await?;
    let warm = world.add_account("bench").await?;
    let mut rows = Vec::new();

    // Warm-up: fills oxbridge's token and credential caches and both TLS session caches.
    for _ in 0..5 {
        login_round_trip(world.proxy, &world.tls, &warm).await?;
        login_round_trip(world.direct, &world.tls, &world.direct_credentials).await?;
    }
    if plan.wants("latency") {
        latency(&world, &warm, &plan, &mut rows).await?;
    }
    if plan.wants("rate") {
        eprintln!("logins per second…");
        let (direct, _) = rate(world.direct, &world, &world.direct_credentials, &plan).await?;
        let cpu_before = world.proxy_cpu_seconds()?;
        let (proxy, logins) = rate(world.proxy, &world, &warm, &plan).await?;
        let cpu_ms_per_login = (world.proxy_cpu_seconds()? - cpu_before) * 1000.0 / logins as f64;
        rows.push(Row::both(
            "logins per second, sustained, warm",
            "logins/s",
            direct,
            proxy,
        ));
        // The benchmark client and the fake share the cores with oxbridge; what oxbridge
        // itself spends per login says what it could sustain with the cores to itself.
        rows.push(Row::proxy_only(
            "  oxbridge CPU time per login",
            "ms",
            cpu_ms_per_login,
        ));
        rows.push(Row::proxy_only(
            format!(
                "  logins/s oxbridge alone could sustain on {} cores",
                cores()
            ),
            "logins/s",
            cores() as f64 * 1000.0 / cpu_ms_per_login,
        ));
    }
    throughput(&world, &warm, &plan, &mut rows).await?;
    if plan.wants("tokens") {
        eprintln!("token requests per burst…");
        let fresh = world.add_account("burst").await?;
        let before = world.token_requests().await?;
        let successes = burst_logins(world.proxy, &world, &fresh, plan.token_burst).await;
        anyhow::ensure!(
            successes == plan.token_burst,
            "burst logins failed: {successes}"
        );
        rows.push(Row::proxy_only(
            format!(
                "token requests for a burst of {} cold logins",
                plan.token_burst
            ),
            "requests",
            (world.token_requests().await? - before) as f64,
        ));
    }
    if plan.wants("connects") {
        eprintln!("burst of {} simultaneous connects…", plan.burst_connects);
        let greeted = burst_connects(world.proxy, &world, plan.burst_connects).await;
        rows.push(Row::proxy_only(
            format!(
                "connections lost in a burst of {} connects",
                plan.burst_connects
            ),
            "connections",
            (plan.burst_connects - greeted) as f64,
        ));
    }
    // Memory last: each count runs in a fresh oxbridge, so nothing before has grown its heap,
    // and thousands of sessions torn down do not disturb the measurements above.
    if plan.wants("memory") {
        for &n in &plan.sessions {
            eprintln!("memory with {n} idle sessions…");
            world.start_proxy().await?;
            login_round_trip(world.proxy, &world.tls, &warm).await?;
            memory(&world, &warm, n, &mut rows).await?;
        }
    }
    world.stop_proxy().await;
    Ok(rows)
}

/// Login latency: sequential (with its phases), cold, and in parallel.
async fn latency(
    world: &World,
    warm: &Credentials,
    plan: &Plan,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    eprintln!("login latency, sequential…");
    let direct = sequential(
        world.direct,
        world,
        &world.direct_credentials,
        plan.sequential,
    )
    .await?;
    let proxy = sequential(world.proxy, world, warm, plan.sequential).await?;
    push_latency(rows, "login, sequential, warm cache", direct, proxy);

    let direct = phases(
        world.direct,
        world,
        &world.direct_credentials,
        plan.sequential,
    )
    .await?;
    let proxy = phases(world.proxy, world, warm, plan.sequential).await?;
    for (i, name) in ["connect + TLS + greeting", "login", "SELECT + LOGOUT"]
        .iter()
        .enumerate()
    {
        let pick = |all: &[crate::client::Phases]| -> Vec<Duration> {
            all.iter()
                .map(|p| [p.connect, p.login, p.rest][i])
                .collect()
        };
        rows.push(Row::both(
            format!("  phase: {name}, p50"),
            "ms",
            ms(percentile(&mut pick(&direct), 50.0)),
            ms(percentile(&mut pick(&proxy), 50.0)),
        ));
    }

    eprintln!("login latency, cold cache…");
    let mut cold = Vec::new();
    for i in 0..plan.cold_accounts {
        let credentials = world.add_account(&format!("cold{i}")).await?;
        let started = Instant::now();
        login_round_trip(world.proxy, &world.tls, &credentials).await?;
        cold.push(started.elapsed());
    }
    let direct = sequential(
        world.direct,
        world,
        &world.direct_credentials,
        plan.cold_accounts,
    )
    .await?;
    push_latency(
        rows,
        "login, sequential, cold cache (token + Argon2)",
        direct,
        cold,
    );

    eprintln!("login latency, {} in parallel…", plan.parallel_workers);
    let direct = parallel(world.direct, world, &world.direct_credentials, plan).await?;
    let proxy = parallel(world.proxy, world, warm, plan).await?;
    push_latency(
        rows,
        &format!("login, {} in parallel, warm", plan.parallel_workers),
        direct,
        proxy,
    );
    Ok(())
}

/// Large FETCH, RETR and DATA, each directly and through oxbridge.
async fn throughput(
    world: &World,
    warm: &Credentials,
    plan: &Plan,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    // The direct path logs in with an app-only token; through oxbridge, with `warm`.
    let direct = &world.direct_credentials;
    if plan.wants("fetch") {
        let mut meter = CpuPerMb::default();
        for &mb in &plan.message_mb {
            eprintln!("FETCH of a {mb} MB message…");
            let uid = world.deliver("Drafts", mb * 1_000_000).await?;
            let (d, p) = compare(world, &mut meter, mb, |proxied| async move {
                let (addr, credentials) = if proxied {
                    (world.proxy, warm)
                } else {
                    (world.direct, direct)
                };
                fetch_throughput(addr, world, credentials, uid).await
            })
            .await?;
            rows.push(Row::both(format!("FETCH {mb} MB message"), "MB/s", d, p));
        }
        rows.push(meter.row("FETCH"));
    }
    if plan.wants("pop3") {
        let mut meter = CpuPerMb::default();
        for (i, &mb) in plan.message_mb.iter().enumerate() {
            eprintln!("POP3 RETR of a {mb} MB message…");
            world.deliver("INBOX", mb * 1_000_000).await?;
            // Two small messages are there from the start; each size adds one.
            let number = 3 + i;
            let (d, p) = compare(world, &mut meter, mb, |proxied| async move {
                let (addr, credentials) = if proxied {
                    (world.proxy_pop3, warm)
                } else {
                    (world.direct_pop3, direct)
                };
                Ok(line_client::pop3_retr(addr, &world.tls, credentials, number).await?)
            })
            .await?;
            rows.push(Row::both(
                format!("POP3 RETR {mb} MB message"),
                "MB/s",
                d,
                p,
            ));
        }
        rows.push(meter.row("POP3 RETR"));
    }
    if plan.wants("smtp") {
        // Warm-up, outside the figures: the first submission through each path pays for
        // connection set-up and first allocations, and the fake's very first large message
        // goes much faster than every later one (it keeps three copies of each), which
        // would favour whichever path sent it.
        let largest = plan.message_mb.iter().max().copied().unwrap_or(1).min(150);
        for (addr, credentials, mb) in [
            (world.direct_smtp, direct, largest),
            (world.proxy_smtp, warm, 2),
        ] {
            let bytes = mb * 1_000_000;
            line_client::smtp_data(addr, &world.tls, credentials, MAILBOX, bytes).await?;
        }
        let mut meter = CpuPerMb::default();
        for &mb in &plan.message_mb {
            // Exchange Online (and the fake) refuse messages over SIZE 157286400.
            let mb = mb.min(150);
            eprintln!("SMTP DATA of a {mb} MB message…");
            let (d, p) = compare(world, &mut meter, mb, |proxied| async move {
                let (addr, credentials) = if proxied {
                    (world.proxy_smtp, warm)
                } else {
                    (world.direct_smtp, direct)
                };
                let bytes = mb * 1_000_000;
                Ok(line_client::smtp_data(addr, &world.tls, credentials, MAILBOX, bytes).await?)
            })
            .await?;
            rows.push(Row::both(
                format!("SMTP DATA {mb} MB message"),
                "MB/s",
                d,
                p,
            ));
        }
        rows.push(meter.row("SMTP DATA"));
    }
    Ok(())
}

/// Direct and proxied MB/s of one transfer: each path twice, in the order direct, proxied,
/// proxied, direct, keeping each path's better run. The fake slows down as large messages
/// pile up in its store, so whichever path went second used to lose; alternating the order
/// and keeping the better run takes that, and a neighbour's burst on this shared machine,
/// out of the ratio. oxbridge's CPU is counted over both proxied runs.
async fn compare<F, Fut>(
    world: &World,
    meter: &mut CpuPerMb,
    mb: usize,
    mut transfer: F,
) -> anyhow::Result<(f64, f64)>
where
    F: FnMut(bool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<f64>>,
{
    let mut best = [0.0f64; 2];
    for proxied in [false, true, true, false] {
        let cpu = world.proxy_cpu_seconds()?;
        let rate = transfer(proxied).await?;
        if proxied {
            meter.add(world, cpu, mb)?;
        }
        best[usize::from(proxied)] = best[usize::from(proxied)].max(rate);
    }
    Ok((best[0], best[1]))
}

/// oxbridge's CPU time over a protocol's transfers, per MB moved: what the proxy itself
/// costs, apart from the client and the fake it shares the cores with. Summed over all sizes,
/// because the clock it reads counts in 10 ms ticks.
#[derive(Default)]
struct CpuPerMb {
    seconds: f64,
    mb: usize,
}

impl CpuPerMb {
    /// Adds a transfer of `mb` that started when oxbridge had used `cpu_before` seconds.
    fn add(&mut self, world: &World, cpu_before: f64, mb: usize) -> anyhow::Result<()> {
        self.seconds += world.proxy_cpu_seconds()? - cpu_before;
        self.mb += mb;
        Ok(())
    }

    fn row(&self, what: &str) -> Row {
        Row::proxy_only(
            format!("  oxbridge CPU time per MB, {what}"),
            "ms",
            self.seconds * 1000.0 / self.mb.max(1) as f64,
        )
    }
}

fn push_latency(
    rows: &mut Vec<Row>,
    name: &str,
    mut direct: Vec<Duration>,
    mut proxy: Vec<Duration>,
) {
    for p in [50.0, 99.0] {
        rows.push(Row::both(
            format!("{name}, p{p}"),
            "ms",
            ms(percentile(&mut direct, p)),
            ms(percentile(&mut proxy, p)),
        ));
    }
}

async fn sequential(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    n: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut samples = Vec::with_capacity(n);
    for _ in 0..n {
        let started = Instant::now();
        login_round_trip(addr, &world.tls, credentials).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

async fn phases(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    n: usize,
) -> anyhow::Result<Vec<crate::client::Phases>> {
    let mut all = Vec::with_capacity(n);
    for _ in 0..n {
        all.push(crate::client::timed_round_trip(addr, &world.tls, credentials).await?);
    }
    Ok(all)
}

async fn parallel(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    plan: &Plan,
) -> anyhow::Result<Vec<Duration>> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.parallel_workers {
        let tls = world.tls.clone();
        let credentials = credentials.clone();
        let each = plan.parallel_each;
        tasks.spawn(async move {
            let mut samples = Vec::with_capacity(each);
            for _ in 0..each {
                let started = Instant::now();
                login_round_trip(addr, &tls, &credentials).await?;
                samples.push(started.elapsed());
            }
            Ok::<_, std::io::Error>(samples)
        });
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done??);
    }
    Ok(all)
}

/// Logins per second with 64 workers logging in back to back, and how many logins that was.
async fn rate(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    plan: &Plan,
) -> anyhow::Result<(f64, usize)> {
    let done = Arc::new(AtomicUsize::new(0));
    let deadline = Instant::now() + Duration::from_secs(plan.rate_seconds);
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..plan.parallel_workers {
        let (tls, credentials, done) = (world.tls.clone(), credentials.clone(), done.clone());
        tasks.spawn(async move {
            while Instant::now() < deadline {
                login_round_trip(addr, &tls, &credentials).await?;
                done.fetch_add(1, Ordering::Relaxed);
            }
            Ok::<_, std::io::Error>(())
        });
    }
    while let Some(finished) = tasks.join_next().await {
        finished??;
    }
    let logins = done.load(Ordering::Relaxed);
    Ok((logins as f64 / started.elapsed().as_secs_f64(), logins))
}

/// Cores this machine offers.
fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

async fn fetch_throughput(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    uid: u32,
) -> anyhow::Result<f64> {
    let mut client = Client::connect(addr, &world.tls).await?;
    client.login(credentials).await?;
    client.command("SELECT Drafts").await?;
    let started = Instant::now();
    let bytes = client
        .command(&format!("UID FETCH {uid} (BODY.PEEK[])"))
        .await?;
    let elapsed = started.elapsed();
    client.logout().await?;
    Ok(bytes as f64 / 1_000_000.0 / elapsed.as_secs_f64())
}

async fn burst_logins(
    addr: SocketAddr,
    world: &World,
    credentials: &Credentials,
    n: usize,
) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let (tls, credentials) = (world.tls.clone(), credentials.clone());
        tasks.spawn(async move { login_round_trip(addr, &tls, &credentials).await.is_ok() });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += usize::from(done.unwrap_or(false));
    }
    ok
}

/// Opens `n` connections at once and counts those that got their greeting.
async fn burst_connects(addr: SocketAddr, world: &World, n: usize) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        let tls = world.tls.clone();
        tasks.spawn(async move {
            match tokio::time::timeout(Duration::from_secs(30), Client::connect(addr, &tls)).await {
                Ok(Ok(client)) => client.logout().await.is_ok(),
                _ => false,
            }
        });
    }
    let mut ok = 0;
    while let Some(done) = tasks.join_next().await {
        ok += usize::from(done.unwrap_or(false));
    }
    ok
}

/// RSS per authenticated IDLE session, before and after each moved 64 KiB both ways.
async fn memory(
    world: &World,
    credentials: &Credentials,
    n: usize,
    rows: &mut Vec<Row>,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500)).await;
    let baseline = world.proxy_rss_kib()?;
    rows.push(Row::proxy_only(
        format!("RSS of oxbridge before {n} sessions"),
        "KiB",
        baseline as f64,
    ));
    let mut sessions = Vec::with_capacity(n);
    let mut opening = tokio::task::JoinSet::new();
    let next = Arc::new(AtomicUsize::new(0));
    for _ in 0..32 {
        let (tls, credentials, next, addr) = (
            world.tls.clone(),
            credentials.clone(),
            next.clone(),
            world.proxy,
        );
        opening.spawn(async move {
            let mut mine = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let mut client = Client::connect(addr, &tls).await?;
                client.login(&credentials).await?;
                client.command("SELECT INBOX").await?;
                let tag = client.idle().await?;
                mine.push((client, tag));
            }
            Ok::<_, std::io::Error>(mine)
        });
    }
    while let Some(done) = opening.join_next().await {
        sessions.extend(done?.context("opening idle sessions")?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = world.proxy_rss_kib()?;
    rows.push(Row::proxy_only(
        format!("RSS per idle IMAP session, {n} sessions"),
        "KiB",
        (idle.saturating_sub(baseline)) as f64 / n as f64,
    ));

    // Each session moves 64 KiB up (APPEND to a folder no one watches) and 64 KiB down
    // (FETCH), then idles again.
    let mut moved = Vec::with_capacity(n);
    let mut work = tokio::task::JoinSet::new();
    let chunk = sessions.len().div_ceil(32).max(1);
    while !sessions.is_empty() {
        let batch: Vec<_> = sessions.drain(..chunk.min(sessions.len())).collect();
        work.spawn(async move {
            let mut out = Vec::with_capacity(batch.len());
            for (mut client, tag) in batch {
                client.done(&tag).await?;
                client.command_append_elsewhere().await?;
                client.command("UID FETCH 2 (BODY.PEEK[])").await?;
                let tag = client.idle().await?;
                out.push((client, tag));
            }
            Ok::<_, std::io::Error>(out)
        });
    }
    while let Some(done) = work.join_next().await {
        moved.extend(done?.context("moving 64 KiB")?);
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = world.proxy_rss_kib()?;
    rows.push(Row::proxy_only(
        format!("RSS per idle IMAP session after 64 KiB each way, {n} sessions"),
        "KiB",
        (after.saturating_sub(baseline)) as f64 / n as f64,
    ));
    drop(moved);
    tokio::time::sleep(Duration::from_secs(2)).await;
    Ok(())
}
