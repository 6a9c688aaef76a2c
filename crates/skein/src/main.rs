//! The `skein` binary: `skein serve` runs the broker; the other subcommands (`topic`,
//! `produce`, `consume`, `group`, `cluster`) are the operator's tool, speaking the Kafka protocol
//! to any broker. `serve` settings come from built-in defaults,
//! then a TOML file, then `SKEIN_…` environment variables, then flags (the last wins).

use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};

mod cli;
mod settings;

/// mimalloc keeps freed memory for reuse instead of handing large blocks back to the kernel
/// after each request, which with the system allocator made every fetch buffer a fresh
/// mmap, page faults on first touch, and a munmap (half the broker's CPU when consuming).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// How often partitions write their recovery checkpoints (Kafka's
/// `log.flush.offset.checkpoint.interval.ms` default).
const CHECKPOINT_INTERVAL: Duration = Duration::from_secs(60);
/// How often group session and rebalance timeouts are checked.
const GROUP_TICK: Duration = Duration::from_millis(100);
/// The longest a SIGTERM waits for the controller to release this broker.
const CONTROLLED_SHUTDOWN_LIMIT: Duration = Duration::from_secs(10);
/// The longest the runtime waits for background work once the broker has stopped.
const RUNTIME_STOP_LIMIT: Duration = Duration::from_secs(3);

#[derive(Parser)]
#[command(
    name = "skein",
    version,
    about = "Kafka-compatible event streaming in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a single-node broker.
    Serve(settings::ServeArgs),
    #[command(flatten)]
    Operator(cli::Command),
}

fn main() -> ExitCode {
    let started = Instant::now();
    let cli = Cli::parse();
    match cli.command {
        Command::Serve(args) => serve(args, started),
        Command::Operator(command) => cli::run(command),
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("SKEIN_LOG")
        // openraft warns several times a second while a peer is unreachable; the quorum's
        // state is in `skein cluster info` and /metrics instead.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,openraft=error"));
    use std::io::IsTerminal;
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        // A broker whose stderr was closed (its supervisor went away) keeps running: the
        // default would report the failed write with eprintln!, which panics on EPIPE.
        .log_internal_errors(false)
        .init();
}

fn serve(args: settings::ServeArgs, started: Instant) -> ExitCode {
    init_logging();
    let config = match settings::resolve(&args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("skein: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("skein")
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("skein: could not start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = runtime.block_on(run(config, started));
    // Everything that must reach the disk was flushed by `run`. A blocking task still in
    // flight (a peer's connection, a sync bridge waiting for a controller that is gone) must
    // not hold the exit.
    let stopping = Instant::now();
    runtime.shutdown_timeout(RUNTIME_STOP_LIMIT);
    if stopping.elapsed() >= RUNTIME_STOP_LIMIT {
        tracing::warn!(
            "some background work did not stop within {RUNTIME_STOP_LIMIT:?}; exiting anyway"
        );
    }
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("skein: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: skein_broker::BrokerConfig, started: Instant) -> anyhow::Result<()> {
    use anyhow::Context;
    let data_dir = config.data_dir.clone();
    let retention_every = Duration::from_millis(config.retention_check_interval_ms);
    let producer_expiry_every =
        Duration::from_millis(config.producer_id_expiration_check_interval_ms);
    let broker = tokio::task::spawn_blocking(move || skein_broker::Broker::open(config)).await??;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate());
    let server = skein_server::Server::bind(broker.clone())
        .await
        .context("could not bind the listeners")?;
    // A node of a cluster may wait for the quorum a long time: a SIGTERM meanwhile stops it.
    let stopped_early = tokio::select! {
        started = broker.start() => { started?; false }
        _ = shutdown_signal(term.as_mut().ok()) => true,
    };
    if stopped_early {
        tracing::info!("stopped before the node had joined its cluster");
        let b = broker.clone();
        tokio::task::spawn_blocking(move || b.shutdown()).await?;
        broker.stop_quorum().await;
        return Ok(());
    }
    let listeners: Vec<String> = server
        .listener_addrs()
        .into_iter()
        .map(|(name, addr)| format!("{name}://{addr}"))
        .collect();
    tracing::info!(
        "skein started kafka={} http={} listeners={} data_dir={} startup_ms={}",
        server.kafka_addr(),
        server.http_addr(),
        listeners.join(","),
        data_dir.display(),
        started.elapsed().as_millis()
    );
    // `__consumer_offsets` is compacted by the log cleaner (`start_cleaner` below).
    let retention = every(retention_every, &broker, |b| b.apply_retention());
    let producer_expiry = every(producer_expiry_every, &broker, |b| b.expire_producers());
    let _cleaner = broker.start_cleaner();
    let checkpoints = every(CHECKPOINT_INTERVAL, &broker, |b| b.checkpoint());
    // Async, unlike the others: a replay group coordinated by another broker is asked there.
    let dlt_metrics = {
        let broker = broker.clone();
        let period = Duration::from_millis(broker.config.dlt_metrics_interval_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            tick.tick().await;
            loop {
                tick.tick().await;
                broker.refresh_dlt_metrics().await;
            }
        })
    };
    let quorum_broker = broker.clone();
    let heartbeat_every = Duration::from_millis(broker.config.cluster.broker_heartbeat_interval_ms);
    let quorum_ticks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            quorum_broker.quorum_tick().await;
        }
    });
    let replication = tokio::spawn(broker.clone().run_replication());
    let group_broker = broker.clone();
    let group_ticks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(GROUP_TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            group_broker.group_tick();
        }
    });
    let txn_broker = broker.clone();
    let txn_tick_every = Duration::from_millis(
        (broker
            .config
            .setting_i64("transaction.abort.timed.out.transaction.cleanup.interval.ms")
            .clamp(1, 1000)) as u64,
    );
    let txn_ticks = tokio::spawn(async move {
        let mut tick = tokio::time::interval(txn_tick_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            txn_broker.txn_tick();
        }
    });
    let quorum_broker = broker.clone();
    server
        .run(async move {
            shutdown_signal(term.as_mut().ok()).await;
            // Kafka's controlled shutdown, while the listener still serves: the controller
            // moves this broker's leaderships away before it goes.
            quorum_broker
                .controlled_shutdown(CONTROLLED_SHUTDOWN_LIMIT)
                .await;
        })
        .await;
    // Stop the periodic work and wait until none of it runs any more: a task still running
    // when the runtime is dropped would find its timers gone.
    for task in [
        replication,
        group_ticks,
        txn_ticks,
        quorum_ticks,
        retention,
        checkpoints,
        producer_expiry,
        dlt_metrics,
    ] {
        task.abort();
        let _ = task.await;
    }
    tracing::info!("shutting down: flushing and closing partitions");
    let b = broker.clone();
    tokio::task::spawn_blocking(move || b.shutdown()).await?;
    broker.stop_quorum().await;
    tracing::info!("skein stopped");
    Ok(())
}

/// Runs `work` on a blocking thread every `period` (first after one period), until aborted.
fn every(
    period: Duration,
    broker: &Arc<skein_broker::Broker>,
    work: fn(&skein_broker::Broker),
) -> tokio::task::JoinHandle<()> {
    let broker = broker.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(period);
        tick.tick().await;
        loop {
            tick.tick().await;
            let b = broker.clone();
            let _ = tokio::task::spawn_blocking(move || work(&b)).await;
        }
    })
}

/// Waits for SIGTERM or SIGINT. `term` is registered before the broker says it has started,
/// so a SIGTERM that arrives at once is a graceful stop rather than the default exit.
async fn shutdown_signal(term: Option<&mut tokio::signal::unix::Signal>) {
    let Some(term) = term else {
        tracing::warn!("no SIGTERM handler");
        let _ = tokio::signal::ctrl_c().await;
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}
