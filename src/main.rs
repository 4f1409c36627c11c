//! The `tern` binary: parse flags, start, wait for shutdown.

use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};
use tern::bench::options::{BenchArgs, Mode as BenchMode};
use tern::config::{
    online_cpus, parse_cpu_list, parse_size, ServeConfig, CONNECTION_WRITE_TIMEOUT, REQUEST_BYTES_MAX_DEFAULT,
};
use tern::storage::{FlushPolicy, SyncMode};

#[derive(Debug, Parser)]
#[command(name = "tern", version, about = "Kafka-compatible event streaming broker, thread-per-core on io_uring")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the broker.
    #[command(args_override_self = true)]
    Serve(Box<ServeArgs>),
    /// Create, list, describe, delete topics, change their configs, move their replicas.
    Topic(tern::admin::topic::TopicArgs),
    /// List, describe (members, offsets, lag), delete groups and reset their offsets.
    Group(tern::admin::group::GroupArgs),
    /// List and describe transactions (transactional ids, their state and partitions).
    Transaction(tern::admin::transaction::TransactionArgs),
    /// Show a cluster's brokers, controller and partitions without a leader.
    Cluster(tern::admin::cluster::ClusterArgs),
    /// Produce the lines of stdin as records.
    Produce(tern::admin::produce::ProduceArgs),
    /// Print a topic's records.
    Consume(tern::admin::consume::ConsumeArgs),
    /// Compare host settings with the recommended ones (--check) or change them (--apply).
    Tune(TuneArgs),
    /// Load-test a Kafka-compatible broker (Tern, Apache Kafka, Redpanda).
    Bench {
        /// produce: producers only; consume: consumers only; e2e: both, with
        /// produce-to-consume latency.
        #[arg(value_enum)]
        mode: BenchMode,
        #[command(flatten)]
        args: BenchArgs,
    },
}

/// `--sync-mode` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum SyncModeArg {
    Dsync,
    Fdatasync,
}

#[derive(Debug, Args, serde::Serialize)]
struct ServeArgs {
    /// Read settings from this TOML file (keys are these flags' names); flags given
    /// here override it.
    #[arg(long)]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Print the effective settings (file, flags and defaults merged) as TOML and exit.
    #[arg(long)]
    #[serde(skip)]
    print_config: bool,
    /// Address to accept Kafka clients on; every shard binds it (SO_REUSEPORT).
    #[arg(long, default_value = "127.0.0.1:9092")]
    listen: String,
    /// host:port clients are told to connect to (Metadata); defaults to --listen.
    #[arg(long)]
    advertised_address: Option<String>,
    /// Directory holding every partition's segments and the cluster metadata.
    #[arg(long, default_value = "./tern-data")]
    data_dir: PathBuf,
    /// CPUs to run one shard each on, e.g. `0-3,6`. Default: all online CPUs.
    #[arg(long)]
    cores: Option<String>,
    /// Do not pin shards to their CPUs (containers, laptops).
    #[arg(long)]
    no_pin: bool,
    /// This broker's node id, reported in Metadata (in a cluster: its entry in --peers,
    /// 1 or more). Default: 0 standalone, required with --peers.
    #[arg(long)]
    node_id: Option<i32>,
    /// Cluster mode: this node's inter-broker address (the metadata quorum and
    /// forwarded controller requests travel over it). Needs --node-id and --peers.
    #[arg(long)]
    cluster_listen: Option<String>,
    /// Cluster mode: every node's inter-broker address, this one included:
    /// `1@host:port,2@host:port,3@host:port`. The same list on every node.
    #[arg(long)]
    peers: Option<String>,
    /// Cluster mode: this broker's rack (reported in Metadata and DescribeCluster).
    #[arg(long)]
    rack: Option<String>,
    /// Cluster mode: the metadata quorum's election timeout; a controller that dies is
    /// replaced within one to two of these.
    #[arg(long, default_value_t = 800)]
    metadata_election_timeout_ms: u64,
    /// Cluster mode: how often a broker heartbeats to the controller.
    #[arg(long, default_value_t = 500)]
    broker_heartbeat_interval_ms: u64,
    /// Cluster mode: a broker that has not heartbeated for this long is fenced: it leads
    /// nothing until it is back (Kafka's broker.session.timeout.ms).
    #[arg(long, default_value_t = 9000)]
    broker_session_timeout_ms: u64,
    /// Cluster mode: the election timeout of partition replica groups; a partition
    /// leader that dies is replaced within one to two of these.
    #[arg(long, default_value_t = 800)]
    replica_election_timeout_ms: u64,
    /// Cluster mode: bytes per second a leader serves to followers catching up from its
    /// segments (too far behind for Raft's in-memory entries), so catch-up does not
    /// starve live traffic.
    #[arg(long, default_value_t = 100 << 20)]
    replica_catch_up_bytes_per_sec: u64,
    /// Cluster mode: how often a partition leader checks whether its preferred replica
    /// (the first of the partition's replicas) is back and caught up, and hands it the
    /// leadership, so leaders spread over the brokers again after failovers (Kafka's
    /// auto.leader.rebalance.enable). 0 turns it off.
    #[arg(long, default_value_t = 10_000)]
    auto_leader_rebalance_interval_ms: u64,
    /// Replicas of topics created with replication factor -1 (auto creation, most
    /// clients' default); Kafka's default.replication.factor.
    #[arg(long, default_value_t = 1)]
    default_replication_factor: i16,
    /// io_uring buffer memory per shard, in bytes (suffixes K, M, G allowed). Counts
    /// against the locked-memory limit (ulimit -l).
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    memory: u64,
    /// Largest request frame accepted; bigger ones close the connection.
    #[arg(long, default_value_t = REQUEST_BYTES_MAX_DEFAULT as u64, value_parser = parse_size)]
    max_request_bytes: u64,
    /// Create topics on first Metadata request for them.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    auto_create_topics: bool,
    /// Partitions of auto-created topics and of CreateTopics with -1 partitions.
    #[arg(long, default_value_t = 1)]
    default_partitions: i32,
    /// Acknowledge produces before fdatasync and sync at most every this many ms
    /// (relaxed durability; default: acknowledge after fdatasync).
    #[arg(long)]
    flush_interval_ms: Option<u64>,
    /// How an acknowledged write is made durable: `dsync` opens the active segment with
    /// O_DSYNC (one io_uring write that returns once the data is on stable storage);
    /// `fdatasync` writes, then syncs each log with fdatasync (group commit).
    #[arg(long, value_enum, default_value_t = SyncModeArg::Dsync)]
    sync_mode: SyncModeArg,
    /// Keep the file of a segment that retention deleted (one per partition, until its
    /// next roll) and write the next segment into it: appends then overwrite written
    /// blocks instead of converting freshly allocated ones, which costs the disk and the
    /// kernel less per durable write.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    recycle_segments: bool,
    /// How often each core checks its partitions for segments that retention.ms,
    /// retention.bytes or DeleteRecords no longer keeps (Kafka's
    /// log.retention.check.interval.ms).
    #[arg(long, default_value_t = tern::config::RETENTION_CHECK_INTERVAL.as_millis() as u64, value_parser = clap::value_parser!(u64).range(1..))]
    retention_check_interval_ms: u64,
    /// With --flush-interval-ms: also sync after this many unsynced bytes.
    #[arg(long, default_value = "1M", value_parser = parse_size)]
    flush_bytes: u64,
    /// How long the first rebalance of an empty consumer group waits for more members
    /// (Kafka's group.initial.rebalance.delay.ms).
    #[arg(long, default_value_t = 3000)]
    group_initial_rebalance_delay_ms: i64,
    /// Smallest session timeout a consumer group member may ask for (Kafka's
    /// group.min.session.timeout.ms); test setups often lower it.
    #[arg(long, default_value_t = 6000)]
    group_min_session_timeout_ms: i32,
    /// Largest session timeout a consumer group member may ask for (Kafka's
    /// group.max.session.timeout.ms).
    #[arg(long, default_value_t = 1_800_000)]
    group_max_session_timeout_ms: i32,
    /// Committed offsets of a group that is empty and has not committed for this long
    /// are deleted (Kafka's offsets.retention.minutes; default 7 days).
    #[arg(long, default_value_t = 7 * 24 * 60 * 60 * 1000)]
    offsets_retention_ms: i64,
    /// The longest transaction timeout (transaction.timeout.ms) a transactional producer
    /// may ask for; longer ones are refused with INVALID_TRANSACTION_TIMEOUT (Kafka's
    /// transaction.max.timeout.ms). A transaction open longer than its own timeout is
    /// aborted by the coordinator.
    #[arg(long, default_value_t = 900_000)]
    transaction_max_timeout_ms: i32,
    /// Memory per shard for recently appended batches, from which tailing consumers are
    /// served (least recently used evicted first). Ordinary heap memory, not locked.
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    batch_cache_bytes: u64,
    /// Address of the admin HTTP endpoint: Prometheus `/metrics` and readiness `/health`
    /// (`off` disables it; port 0 picks a free port, logged at startup).
    #[arg(long, default_value = "127.0.0.1:9644")]
    admin_listen: String,
    /// Close a connection that has sent nothing and has no request in flight for this
    /// long (Kafka's connections.max.idle.ms).
    #[arg(long, default_value_t = 600_000)]
    connections_max_idle_ms: u64,
    /// Close a connection whose request stops arriving halfway for this long.
    #[arg(long, default_value_t = 30_000)]
    request_read_timeout_ms: u64,
    /// Close a connection whose responses make no progress for this long (a client that
    /// pipelines requests and stops reading); its pending responses are dropped.
    #[arg(long, default_value_t = CONNECTION_WRITE_TIMEOUT.as_millis() as u64)]
    response_write_timeout_ms: u64,
    /// Bytes of requests the broker holds being read or handled, split over the shards
    /// (Kafka's queued.max.request.bytes): past it, connections are not read until
    /// earlier requests finish. A request larger than a shard's share waits for all of it.
    #[arg(long, default_value = "512M", value_parser = parse_size)]
    queued_max_request_bytes: u64,
    /// Client connections accepted over all shards (Kafka's max.connections); more are
    /// closed at once, so descriptors never run out. Default: 90% of the open-files limit
    /// (raised to its hard limit at startup) divided by 2 descriptors of headroom.
    #[arg(long)]
    max_connections: Option<usize>,
    /// Client connections accepted from one IP address (Kafka's max.connections.per.ip).
    /// Default: no limit per address.
    #[arg(long)]
    max_connections_per_ip: Option<usize>,
    /// New client connections accepted per second, for the whole broker (split over the
    /// shards; Kafka's max.connection.creation.rate). Past it, new connections wait in
    /// the kernel's accept backlog, so a connection storm cannot take the shards' CPU
    /// from established clients. Default: no limit.
    #[arg(long)]
    max_connection_creation_rate: Option<u64>,
    /// Seconds the kernel holds a new connection that has sent nothing (TCP_DEFER_ACCEPT)
    /// before a shard accepts it. Kafka clients speak first, so they are accepted with
    /// their first request; connections that are opened and reset at once (a connection
    /// storm, port scans, TCP health checks) never reach the broker. 0 turns it off.
    #[arg(long, default_value_t = 1)]
    defer_accept_secs: u32,
    /// MB per second each shard may read from disk for fetches while the broker is also
    /// taking writes (a consumer or replica catching up on old data): past the budget those
    /// reads wait, so that durable produce writes do not queue behind them at the disk.
    /// Reads of data still in memory, and all reads while the broker takes no writes, are
    /// not limited. 0 turns the budget off.
    #[arg(long, default_value_t = 50)]
    cold_read_budget_mb: u64,
    /// A broker default for topic configs, by its Kafka name (repeatable):
    /// `--broker-config log.retention.hours=24 --broker-config compression.type=zstd`.
    /// Topics that do not set the config get this value; DescribeConfigs reports it as
    /// STATIC_BROKER_CONFIG. In the config file: `broker-config = ["log.retention.hours=24"]`.
    #[arg(long = "broker-config", value_name = "NAME=VALUE")]
    broker_config: Vec<String>,
    /// Run the log cleaner, which compacts cleanup.policy=compact topics (Kafka's
    /// log.cleaner.enable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    log_cleaner_enable: bool,
    /// Pause between the cleaner's rounds over a shard's compacted partitions (Kafka's
    /// log.cleaner.backoff.ms).
    #[arg(long, default_value_t = 15_000)]
    log_cleaner_backoff_ms: u64,
    /// Memory for the cleaner's key -> latest offset map, for the whole broker (split
    /// evenly over the shards; Kafka's log.cleaner.dedupe.buffer.size). A pass whose
    /// keys do not fit cleans part of the dirty range and the next pass goes on.
    #[arg(long, default_value = "128M", value_parser = parse_size)]
    log_cleaner_dedupe_buffer_size: u64,
    /// Disk bytes (read + written) per second the cleaner may use, for the whole broker
    /// (split over the shards; Kafka's log.cleaner.io.max.bytes.per.second; 0: no limit),
    /// so compaction does not take the disk from produce and fetch.
    #[arg(long, default_value = "100M", value_parser = parse_size)]
    log_cleaner_io_max_bytes_per_second: u64,
    /// The flags given explicitly (filled in after parsing, not a flag).
    #[arg(skip)]
    #[serde(skip)]
    explicit_flags: std::collections::BTreeSet<String>,
}

#[derive(Debug, Args)]
struct TuneArgs {
    /// Only read and report (the default); exit code 1 when anything differs.
    #[arg(long, conflicts_with = "apply")]
    check: bool,
    /// Change what differs (needs root); one line per change.
    #[arg(long)]
    apply: bool,
    /// CPUs the broker will run shards on (for the IRQ and memlock checks).
    #[arg(long)]
    cores: Option<String>,
    /// The broker's data dir (for the disk scheduler check).
    #[arg(long, default_value = "./tern-data")]
    data_dir: PathBuf,
    /// The broker's --memory per shard (for the memlock check).
    #[arg(long, default_value = "2M", value_parser = parse_size)]
    memory: u64,
    /// Read /proc and /sys under this directory instead of / (tests).
    #[arg(long, default_value = "/", hide = true)]
    root: PathBuf,
}

fn tune(args: TuneArgs) -> Result<(), String> {
    let cores = match &args.cores {
        Some(list) => parse_cpu_list(list)?,
        None => online_cpus(),
    };
    let fake_root = args.root != std::path::Path::new("/");
    let target =
        tern::tune::TuneTarget { data_dir: args.data_dir, cores, memory_per_shard: args.memory, root: args.root };
    let findings = tern::tune::check(&target);
    if !args.apply {
        print!("{}", tern::tune::render(&findings));
        let off = findings.iter().filter(|f| f.status == tern::tune::Status::Off).count();
        return if off == 0 { Ok(()) } else { Err(format!("{off} setting(s) differ from the recommendation")) };
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 && !fake_root {
        return Err("--apply changes kernel settings and needs root: run it with sudo".into());
    }
    let mut failed = 0;
    for line in tern::tune::apply(&findings) {
        match line {
            Ok(change) => println!("{change}"),
            Err(problem) => {
                failed += 1;
                println!("not changed: {problem}");
            }
        }
    }
    if failed == 0 {
        Ok(())
    } else {
        Err(format!("{failed} setting(s) could not be changed (see above)"))
    }
}

fn resolve(address: &str) -> Result<SocketAddr, String> {
    address
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {address:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address:?} resolves to no address"))
}

/// The cluster settings, if `--peers` (with `--node-id` and `--cluster-listen`) is given.
fn cluster_config(args: &ServeArgs) -> Result<Option<tern::cluster::ClusterConfig>, String> {
    let (node_id, listen, peers) = match (args.node_id, &args.cluster_listen, &args.peers) {
        (_, None, None) => return Ok(None),
        (Some(node_id), Some(listen), Some(peers)) => (node_id, listen, peers),
        _ => return Err("a cluster node needs all three of --node-id, --cluster-listen and --peers".into()),
    };
    let cluster_listen = resolve(listen)?;
    if cluster_listen == resolve(&args.listen)? {
        return Err(format!("--cluster-listen {listen} must differ from the client --listen"));
    }
    let peers = tern::cluster::parse_peers(peers, node_id, cluster_listen)?;
    let election_timeout = Duration::from_millis(args.metadata_election_timeout_ms.max(100));
    let heartbeat_interval = Duration::from_millis(args.broker_heartbeat_interval_ms.max(10));
    let session_timeout = Duration::from_millis(args.broker_session_timeout_ms);
    if session_timeout < 2 * heartbeat_interval {
        return Err("--broker-session-timeout-ms must be at least twice --broker-heartbeat-interval-ms".into());
    }
    Ok(Some(tern::cluster::ClusterConfig {
        node_id,
        cluster_listen,
        peers,
        rack: args.rack.clone(),
        election_timeout,
        heartbeat_interval,
        session_timeout,
        replica_election_timeout: Duration::from_millis(args.replica_election_timeout_ms.max(100)),
        catch_up_bytes_per_sec: args.replica_catch_up_bytes_per_sec.max(1 << 16),
        leader_rebalance_interval: (args.auto_leader_rebalance_interval_ms > 0)
            .then(|| Duration::from_millis(args.auto_leader_rebalance_interval_ms)),
    }))
}

fn serve_config(args: ServeArgs) -> Result<ServeConfig, String> {
    let cluster = cluster_config(&args)?;
    if args.default_replication_factor < 1 {
        return Err("--default-replication-factor must be at least 1".into());
    }
    let listen = resolve(&args.listen)?;
    let advertised = args.advertised_address.unwrap_or_else(|| args.listen.clone());
    let (host, port) =
        advertised.rsplit_once(':').ok_or_else(|| format!("--advertised-address {advertised:?} must be host:port"))?;
    let port: i32 = port.parse().map_err(|_| format!("bad port in --advertised-address {advertised:?}"))?;
    let cores = match &args.cores {
        Some(list) => parse_cpu_list(list)?,
        None => online_cpus(),
    };
    if args.group_min_session_timeout_ms < 1 || args.group_min_session_timeout_ms > args.group_max_session_timeout_ms {
        return Err(format!(
            "--group-min-session-timeout-ms {} must be at least 1 and at most --group-max-session-timeout-ms {}",
            args.group_min_session_timeout_ms, args.group_max_session_timeout_ms
        ));
    }
    if args.default_partitions < 1 {
        return Err("--default-partitions must be at least 1".into());
    }
    let flush = match args.flush_interval_ms {
        None => FlushPolicy::Durable,
        Some(ms) => {
            FlushPolicy::Interval { interval: Duration::from_millis(ms.max(1)), bytes: args.flush_bytes.max(1) }
        }
    };
    let mut static_broker_configs = tern::metadata::broker_config::parse_static(&args.broker_config)?;
    if let Some(ms) = args.flush_interval_ms {
        static_broker_configs.insert("log.flush.interval.ms".into(), ms.to_string());
    }
    if args.explicit_flags.contains("flush-bytes") {
        static_broker_configs.insert("log.flush.interval.bytes".into(), args.flush_bytes.to_string());
    }
    let shard_count = cores.len().max(1) as u64;
    let cleaner = tern::storage::CleanerConfig {
        enabled: args.log_cleaner_enable,
        backoff: Duration::from_millis(args.log_cleaner_backoff_ms.max(1)),
        map_bytes: usize::try_from(args.log_cleaner_dedupe_buffer_size / shard_count)
            .map_err(|_| "--log-cleaner-dedupe-buffer-size is too large")?
            .max(1 << 20),
        io_bytes_per_second: args.log_cleaner_io_max_bytes_per_second.div_ceil(shard_count),
    };
    Ok(ServeConfig {
        cleaner,
        listen,
        advertised_host: host.trim_matches(|c| c == '[' || c == ']').to_string(),
        advertised_port: port,
        // glommio opens directories with openat(-1, path), which fails with EBADF for a
        // relative path: every path the broker is given is made absolute here, once.
        data_dir: std::path::absolute(&args.data_dir)
            .map_err(|e| format!("cannot resolve --data-dir {}: {e}", args.data_dir.display()))?,
        cores,
        pin: !args.no_pin,
        node_id: args.node_id.unwrap_or(0),
        cluster,
        default_replication_factor: args.default_replication_factor,
        shard_io_memory_bytes: usize::try_from(args.memory).map_err(|_| "--memory is too large")?,
        request_bytes_max: usize::try_from(args.max_request_bytes).map_err(|_| "--max-request-bytes is too large")?,
        auto_create_topics: args.auto_create_topics,
        default_partitions: args.default_partitions,
        flush,
        sync_mode: match args.sync_mode {
            SyncModeArg::Dsync => SyncMode::WriteThrough,
            SyncModeArg::Fdatasync => SyncMode::Fdatasync,
        },
        recycle_segments: args.recycle_segments,
        retention_check_interval: std::time::Duration::from_millis(args.retention_check_interval_ms),
        group_initial_rebalance_delay_ms: args.group_initial_rebalance_delay_ms.max(0),
        group_min_session_timeout_ms: args.group_min_session_timeout_ms,
        group_max_session_timeout_ms: args.group_max_session_timeout_ms,
        offsets_retention_ms: args.offsets_retention_ms.max(1),
        transaction_max_timeout_ms: args.transaction_max_timeout_ms.max(1),
        batch_cache_bytes: usize::try_from(args.batch_cache_bytes).map_err(|_| "--batch-cache-bytes is too large")?,
        admin_listen: match args.admin_listen.as_str() {
            "off" | "" => None,
            address => Some(resolve(address)?),
        },
        connections_max_idle: Duration::from_millis(args.connections_max_idle_ms.max(1)),
        request_read_timeout: Duration::from_millis(args.request_read_timeout_ms.max(1)),
        response_write_timeout: Duration::from_millis(args.response_write_timeout_ms.max(1)),
        queued_request_bytes_per_shard: (args.queued_max_request_bytes / shard_count).max(1 << 20),
        max_connections: args.max_connections.unwrap_or_else(tern::broker::default_max_connections).max(1),
        max_connections_per_ip: args.max_connections_per_ip.unwrap_or(usize::MAX).max(1),
        connection_creation_rate_per_shard: args
            .max_connection_creation_rate
            .map(|rate| (rate as f64 / shard_count as f64).max(1.0)),
        defer_accept_secs: args.defer_accept_secs,
        cold_read_budget_bytes_per_sec: (args.cold_read_budget_mb > 0).then(|| args.cold_read_budget_mb * 1_000_000),
        static_broker_configs,
        explicit_flags: args.explicit_flags,
    })
}

fn main() -> ExitCode {
    tern::allocator::configure();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        // A log that cannot be written (its disk is full) must not stop the broker:
        // tracing-subscriber would report the failure with `eprintln!`, which panics
        // when stderr fails too, and a panic aborts the broker.
        .log_internal_errors(false)
        .init();
    let argv = match tern::config_file::expand(std::env::args_os().collect(), &Cli::command()) {
        Ok(argv) => argv,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "tern: {message}");
            return ExitCode::from(2);
        }
    };
    let matches = Cli::command().get_matches_from(argv);
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(error) => error.exit(),
    };
    if let (Command::Serve(args), Some(serve)) = (&mut cli.command, matches.subcommand_matches("serve")) {
        args.explicit_flags = explicit_flags(serve, Cli::command().find_subcommand("serve"));
    }
    if matches!(
        cli.command,
        Command::Tune(_) | Command::Topic(_) | Command::Group(_) | Command::Transaction(_) | Command::Cluster(_)
    ) {
        exit_quietly_on_closed_stdout();
    }
    let result = match cli.command {
        Command::Serve(args) if args.print_config => match toml::to_string(&args) {
            Ok(text) => {
                println!("{}", text.trim_end());
                Ok(())
            }
            Err(error) => Err(format!("cannot print the configuration: {error}")),
        },
        Command::Serve(args) => serve_config(*args).and_then(|config| {
            abort_on_shard_panic();
            tracing::info!(?config, "starting tern");
            tern::broker::run(config)
        }),
        Command::Tune(args) => tune(args),
        Command::Topic(args) => tern::admin::topic::run(args),
        Command::Group(args) => tern::admin::group::run(args),
        Command::Transaction(args) => tern::admin::transaction::run(args),
        Command::Cluster(args) => tern::admin::cluster::run(args),
        Command::Produce(args) => tern::admin::produce::run(args),
        Command::Consume(args) => tern::admin::consume::run(args),
        Command::Bench { mode, args } => tern::bench::run(mode, args).and_then(|summary| {
            if summary.failures.is_empty() && summary.errors.is_empty() {
                Ok(())
            } else {
                Err("the run saw errors (listed above)".into())
            }
        }),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "tern: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Long names of the flags given on the command line (the config file's settings are
/// command-line arguments too, see `config_file`).
fn explicit_flags(matches: &clap::ArgMatches, serve: Option<&clap::Command>) -> std::collections::BTreeSet<String> {
    let Some(serve) = serve else { return Default::default() };
    serve
        .get_arguments()
        .filter(|arg| matches.value_source(arg.get_id().as_str()) == Some(clap::parser::ValueSource::CommandLine))
        .filter_map(|arg| arg.get_long().map(str::to_string))
        .collect()
}

/// Report commands piped into `head` or `grep -q` end like other Unix tools when the
/// reader goes away (SIGPIPE) instead of panicking in `println!`. Rust ignores SIGPIPE by
/// default, which the broker keeps (its sockets report EPIPE), and so does `tern consume`,
/// which notices the closed stdout itself to commit what was printed before it exits.
fn exit_quietly_on_closed_stdout() {
    // SAFETY: restoring the default disposition of a signal has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// A panic on any shard is a bug, and a broker with a dead shard would hang every
/// connection routed to it: report it and stop the whole process so a supervisor
/// restarts it (recovery makes that safe).
fn abort_on_shard_panic() {
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        default_hook(info);
        // Not `eprintln!`: it panics when stderr fails (a full disk), and a panic
        // inside the panic hook loses this message too.
        let _ = writeln!(std::io::stderr(), "tern: a shard panicked; aborting so the broker can be restarted cleanly");
        std::process::abort();
    }));
}
