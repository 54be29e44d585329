//! `runnel`: the one binary. `runnel server` runs the single-node platform.

use std::path::PathBuf;

mod groups;
mod tools;
mod transactions;

use anyhow::Context;

/// mimalloc, for speed, and because it maps large allocations with MAP_NORESERVE: the
/// protocol crate sizes a decoded array by the count a request claims, so a 20-byte
/// request claiming 2^31 entries asks for hundreds of GiB. Reserved lazily, that
/// allocation succeeds untouched, the decode then fails on the missing bytes, and the
/// connection is closed, where the system allocator would abort the whole broker.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;
use clap::{Parser, Subcommand};
use runnel_broker::{Broker, BrokerConfig, config::parse_properties, server};

#[derive(Parser)]
#[command(
    name = "runnel",
    version,
    about = "Runnel: an event streaming platform that speaks the Kafka protocol"
)]
struct Cli {
    #[command(flatten)]
    bootstrap: tools::Bootstrap,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker (Kafka protocol on 127.0.0.1:9092, data in ./runnel-data).
    Server(ServerArgs),
    /// Create, list, describe, alter and delete topics.
    #[command(subcommand)]
    Topics(tools::TopicsCmd),
    /// Console producer: one record per stdin line.
    Produce(tools::ProduceArgs),
    /// Console consumer.
    Consume(tools::ConsumeArgs),
    /// Throughput and latency tests.
    #[command(subcommand)]
    Perf(tools::PerfCmd),
    /// List, describe, delete consumer groups and reset their offsets.
    #[command(subcommand)]
    Groups(groups::GroupsCmd),
    /// List and describe transactions and the producers of a partition.
    #[command(subcommand)]
    Transactions(transactions::TransactionsCmd),
}

#[derive(Parser)]
struct ServerArgs {
    /// A Kafka-style server.properties file.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Listeners, e.g. PLAINTEXT://127.0.0.1:9092 (overrides `listeners`).
    #[arg(long)]
    listeners: Option<String>,
    /// Data directory (overrides `log.dirs`).
    #[arg(long = "log-dirs")]
    log_dirs: Option<String>,
    /// Any property as key=value; repeatable; applied last.
    #[arg(long = "override", short = 'o', value_name = "KEY=VALUE")]
    overrides: Vec<String>,
}

fn load_config(args: &ServerArgs) -> anyhow::Result<BrokerConfig> {
    let mut pairs = vec![
        (
            "listeners".to_string(),
            "PLAINTEXT://127.0.0.1:9092".to_string(),
        ),
        ("log.dirs".to_string(), "./runnel-data".to_string()),
    ];
    let mut explicit = Vec::new();
    if let Some(path) = &args.config {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        explicit.extend(
            parse_properties(&text).with_context(|| format!("parsing {}", path.display()))?,
        );
    }
    if let Some(l) = &args.listeners {
        explicit.push(("listeners".into(), l.clone()));
    }
    if let Some(d) = &args.log_dirs {
        explicit.push(("log.dirs".into(), d.clone()));
    }
    for o in &args.overrides {
        let (k, v) = o
            .split_once('=')
            .with_context(|| format!("--override expects key=value, got '{o}'"))?;
        explicit.push((k.trim().to_string(), v.trim().to_string()));
    }
    pairs.extend(explicit);
    Ok(BrokerConfig::from_pairs(&pairs)?)
}

async fn run_server(args: ServerArgs) -> anyhow::Result<()> {
    let config = load_config(&args)?;
    tracing::info!(log_dir = %config.log_dir().display(), "starting Runnel broker");
    let broker = tokio::task::spawn_blocking(move || Broker::open(config)).await??;
    let running = server::start(broker).await?;
    for addr in &running.local_addrs {
        tracing::info!("Runnel broker listening on {addr}");
    }
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => tracing::info!("interrupted; shutting down"),
        _ = term.recv() => tracing::info!("terminated; shutting down"),
    }
    running.shutdown().await?;
    Ok(())
}

fn main() -> std::process::ExitCode {
    match real_main() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("runnel: error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The server logs its life at info; the tools stay quiet unless something is wrong.
    let default_level = if matches!(cli.command, Command::Server(_)) {
        "info"
    } else {
        "warn"
    };
    runnel_broker::loggers::init(default_level);
    // Every command runs on the worker pool, `perf consume` included: with two workers the
    // next fetch response is read from the socket while the last one is decoded. It ran on
    // one thread for a while, which was faster under the bbr congestion control this
    // project's VM defaults to, where every hand-over between CPUs also woke the paced
    // sender (1M × 1 KiB: +19% MB/s). Under cubic, Linux's default and the benchmark's
    // setting, one thread left the copy and the decoding in turn: each 6 MiB answer waited
    // ~0.5 ms for the one before it to be decoded, then took ~1.3 ms to copy out of the
    // socket. 500k × 1 KiB, alternating, 10 runs each: 3,236 MiB/s on the pool against
    // 2,532 on one thread under cubic; 1,343 against 1,621 under bbr (6 runs each).
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let b = cli.bootstrap;
    match cli.command {
        Command::Server(args) => rt.block_on(run_server(args)),
        Command::Topics(cmd) => rt.block_on(tools::topics(&b, cmd)),
        Command::Produce(args) => rt.block_on(tools::produce(&b, args)),
        Command::Consume(args) => rt.block_on(tools::consume(&b, args)),
        // On a worker thread rather than in `block_on`: the main thread is not one of the
        // runtime's workers, so each send from it has to wake a worker to drive the I/O.
        Command::Perf(cmd) => {
            rt.block_on(
                async move { tokio::spawn(async move { tools::perf(&b, cmd).await }).await? },
            )
        }
        Command::Groups(cmd) => rt.block_on(groups::groups(&b, cmd)),
        Command::Transactions(cmd) => rt.block_on(transactions::transactions(&b, cmd)),
    }
}
