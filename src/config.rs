//! `tern serve` configuration: flags, validated limits (units last), and the CPU list
//! syntax of `--cores`.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::time::Duration;

use crate::storage::{FlushPolicy, SyncMode};

/// Largest request frame accepted by default (Kafka's socket.request.max.bytes).
pub const REQUEST_BYTES_MAX_DEFAULT: usize = 100 << 20;
/// Requests one connection may have in flight before the broker stops reading from it.
pub const CONNECTION_INFLIGHT_MAX: usize = 64;
/// A response write that makes no progress for this long closes the connection (the
/// default of `--response-write-timeout-ms`).
pub const CONNECTION_WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// Once shutdown begins, a connection still writing responses gets this long; then it is
/// closed and its remaining responses dropped (a client that stopped reading must not
/// hold the shutdown for the whole write timeout).
pub const SHUTDOWN_WRITE_GRACE: Duration = Duration::from_secs(2);
/// On shutdown, connections get this long to finish their in-flight requests.
pub const CONNECTION_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// Capacity of each cross-shard channel; a full channel is backpressure.
pub const MESH_CHANNEL_CAPACITY: usize = 1024;
/// Threads per shard for zero-copy (sendfile) sends.
pub const SEND_POOL_THREADS: usize = 4;
/// How often each shard runs retention over its logs by default
/// (log.retention.check.interval.ms; `--retention-check-interval-ms`).
pub const RETENTION_CHECK_INTERVAL: Duration = Duration::from_secs(300);

/// Everything a shard needs to know about how it was started.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    pub listen: SocketAddr,
    /// Host:port clients are told to connect to (Metadata); defaults to `listen`.
    pub advertised_host: String,
    pub advertised_port: i32,
    pub data_dir: PathBuf,
    /// CPUs to run shards on; one shard per entry.
    pub cores: Vec<usize>,
    pub pin: bool,
    pub node_id: i32,
    /// Cluster mode (`--peers`); `None`: a standalone broker.
    pub cluster: Option<ClusterConfig>,
    /// default.replication.factor: replicas of topics created with -1.
    pub default_replication_factor: i16,
    /// io_uring buffer memory per shard.
    pub shard_io_memory_bytes: usize,
    pub request_bytes_max: usize,
    pub auto_create_topics: bool,
    pub default_partitions: i32,
    /// Default flush policy for topics that do not set one.
    pub flush: FlushPolicy,
    /// How the durable policy makes writes durable.
    pub sync_mode: SyncMode,
    /// Reuse retention-deleted segment files (`storage::recycle`).
    pub recycle_segments: bool,
    /// How often retention runs (log.retention.check.interval.ms).
    pub retention_check_interval: Duration,
    /// group.initial.rebalance.delay.ms
    pub group_initial_rebalance_delay_ms: i64,
    /// group.min.session.timeout.ms and group.max.session.timeout.ms
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    /// offsets.retention.minutes, in ms
    pub offsets_retention_ms: i64,
    /// transaction.max.timeout.ms: the longest transaction timeout a producer may ask for.
    pub transaction_max_timeout_ms: i32,
    /// Memory for recently appended batches, per shard (tailing consumers read from it).
    pub batch_cache_bytes: usize,
    /// Where `/metrics` and `/health` are served (`None`: not at all).
    pub admin_listen: Option<SocketAddr>,
    /// connections.max.idle.ms: a connection with no bytes read and no request in flight
    /// for this long is closed.
    pub connections_max_idle: Duration,
    /// A request whose bytes stop arriving (a frame started but not finished) is closed
    /// after this long.
    pub request_read_timeout: Duration,
    /// A response write that makes no progress for this long closes the connection.
    pub response_write_timeout: Duration,
    /// Bytes of requests one shard holds being read or handled (queued.max.request.bytes
    /// divided over the shards).
    pub queued_request_bytes_per_shard: u64,
    /// max.connections: client connections over all shards; more are closed on accept.
    pub max_connections: usize,
    /// max.connections.per.ip: client connections from one address.
    pub max_connections_per_ip: usize,
    /// max.connection.creation.rate divided over the shards: connections each shard
    /// accepts per second (`None`: no limit).
    pub connection_creation_rate_per_shard: Option<f64>,
    /// TCP_DEFER_ACCEPT on the listeners, in seconds (0: off): the kernel hands a
    /// connection to a shard only once its first bytes arrive, or after this long.
    pub defer_accept_secs: u32,
    /// Bytes per second each shard sends from disk for fetches while the broker is taking
    /// writes (`None`: no budget). See `server::sendfile`.
    pub cold_read_budget_bytes_per_sec: Option<u64>,
    /// The log cleaner (compaction), per shard.
    pub cleaner: crate::storage::CleanerConfig,
    /// Broker defaults of topic configs set at startup, by Kafka name
    /// (`--broker-config`, and flags such as `--flush-interval-ms`): DescribeConfigs
    /// reports them as STATIC_BROKER_CONFIG.
    pub static_broker_configs: BTreeMap<String, String>,
    /// The `tern serve` flags given explicitly (command line or config file), by long
    /// name: the broker configs they set are reported as static, the rest as defaults.
    pub explicit_flags: BTreeSet<String>,
}

/// Parses a CPU list such as `0-3,6` into sorted, unique CPU numbers.
pub fn parse_cpu_list(list: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a.trim(), b.trim()),
            None => (part, part),
        };
        let first: usize = first.parse().map_err(|_| format!("bad cpu number {first:?} in {list:?}"))?;
        let last: usize = last.parse().map_err(|_| format!("bad cpu number {last:?} in {list:?}"))?;
        if first > last {
            return Err(format!("bad cpu range {part:?}: start is after end"));
        }
        cpus.extend(first..=last);
    }
    cpus.sort_unstable();
    cpus.dedup();
    if cpus.is_empty() {
        return Err(format!("cpu list {list:?} names no cpus"));
    }
    Ok(cpus)
}

/// Parses a byte size: a number with an optional K, M or G suffix (powers of 1024).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let (digits, scale) = match text.char_indices().find(|(_, c)| !c.is_ascii_digit()) {
        None => (text, 1u64),
        Some((at, _)) => {
            let scale = match text[at..].trim().to_ascii_uppercase().as_str() {
                "K" | "KB" | "KIB" => 1 << 10,
                "M" | "MB" | "MIB" => 1 << 20,
                "G" | "GB" | "GIB" => 1 << 30,
                other => return Err(format!("unknown size suffix {other:?}: use K, M or G")),
            };
            (&text[..at], scale)
        }
    };
    let value: u64 = digits.parse().map_err(|_| format!("{text:?} is not a size"))?;
    value.checked_mul(scale).ok_or_else(|| format!("{text:?} is too large"))
}

/// Parses a duration: a number with a unit (`ms`, `s`, `m`, `h`); a bare number is
/// seconds. Fractions are allowed (`1.5s`).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 10s, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1e3,
        "us" => value / 1e6,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown duration unit {other:?}: use ms, s, m or h")),
    };
    Duration::try_from_secs_f64(seconds).map_err(|_| format!("{text:?} is out of range"))
}

/// CPUs this process may run on.
pub fn online_cpus() -> Vec<usize> {
    match core_affinity::get_core_ids() {
        Some(ids) if !ids.is_empty() => ids.into_iter().map(|id| id.id).collect(),
        _ => (0..std::thread::available_parallelism().map_or(1, |n| n.get())).collect(),
    }
}

/// One node of `--peers`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    pub node_id: i32,
    /// Its inter-broker (cluster) listener.
    pub address: SocketAddr,
}

/// How this node takes part in a cluster (`tern serve --node-id --cluster-listen --peers`).
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    pub node_id: i32,
    pub cluster_listen: SocketAddr,
    /// Every node of the cluster, this one included, sorted by node id.
    pub peers: Vec<Peer>,
    pub rack: Option<String>,
    /// The metadata quorum's election timeout (each election waits a random time between
    /// one and two of these); Raft heartbeats go out every fifth of it.
    pub election_timeout: Duration,
    /// How often a broker heartbeats to the controller.
    pub heartbeat_interval: Duration,
    /// A broker that has not heartbeated for this long is fenced
    /// (Kafka's broker.session.timeout.ms).
    pub session_timeout: Duration,
    /// Partition replica groups' election timeout (their Raft ticks are a tenth of it).
    pub replica_election_timeout: Duration,
    /// Catch-up reads a leader serves to far-behind followers, bytes per second.
    pub catch_up_bytes_per_sec: u64,
    /// How often leaders hand leadership back to a caught-up preferred replica (`None`:
    /// never).
    pub leader_rebalance_interval: Option<Duration>,
}

impl ClusterConfig {
    /// Ticks of the Raft clock per election timeout.
    pub const ELECTION_TICKS: usize = 10;
    pub const HEARTBEAT_TICKS: usize = 2;

    pub fn tick(&self) -> Duration {
        self.election_timeout / Self::ELECTION_TICKS as u32
    }

    /// The Raft tick of partition replica groups.
    pub fn replica_tick(&self) -> Duration {
        self.replica_election_timeout / Self::ELECTION_TICKS as u32
    }

    pub fn peer_ids(&self) -> Vec<i32> {
        self.peers.iter().map(|p| p.node_id).collect()
    }

    /// Votes needed for a majority.
    pub fn quorum_size(&self) -> usize {
        self.peers.len() / 2 + 1
    }
}

/// Parses `--peers 1@host:port,2@host:port,...` and checks it against this node.
pub fn parse_peers(list: &str, node_id: i32, cluster_listen: SocketAddr) -> Result<Vec<Peer>, String> {
    let mut peers = Vec::new();
    for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let (id, address) = item
            .split_once('@')
            .ok_or_else(|| format!("peer {item:?} is not NODE_ID@HOST:PORT (e.g. 1@10.0.0.1:9093)"))?;
        let node_id: i32 = id.trim().parse().map_err(|_| format!("peer {item:?}: {id:?} is not a node id"))?;
        if node_id < 1 {
            return Err(format!("peer {item:?}: node ids in a cluster start at 1"));
        }
        let address = address
            .to_socket_addrs()
            .map_err(|e| format!("peer {item:?}: cannot resolve {address:?}: {e}"))?
            .next()
            .ok_or_else(|| format!("peer {item:?}: {address:?} resolves to no address"))?;
        if peers.iter().any(|p: &Peer| p.node_id == node_id) {
            return Err(format!("--peers names node {node_id} twice"));
        }
        if peers.iter().any(|p: &Peer| p.address == address) {
            return Err(format!("--peers gives two nodes the address {address}"));
        }
        peers.push(Peer { node_id, address });
    }
    if peers.is_empty() {
        return Err("--peers lists no nodes".into());
    }
    let Some(me) = peers.iter().find(|p| p.node_id == node_id) else {
        return Err(format!("--peers must list this node (--node-id {node_id}) too"));
    };
    if me.address.port() != cluster_listen.port() {
        return Err(format!(
            "--peers gives node {node_id} the address {}, but --cluster-listen is {cluster_listen}",
            me.address
        ));
    }
    peers.sort_by_key(|p| p.node_id);
    Ok(peers)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists_parse_ranges_and_singles() {
        assert_eq!(parse_cpu_list("0-3,6").unwrap(), vec![0, 1, 2, 3, 6]);
        assert_eq!(parse_cpu_list("1, 1,0").unwrap(), vec![0, 1]);
        assert!(parse_cpu_list("3-1").is_err());
        assert!(parse_cpu_list("x").is_err());
        assert!(parse_cpu_list("").is_err());
    }

    #[test]
    fn sizes_and_durations_parse_with_units() {
        assert_eq!(parse_size("16K").unwrap(), 16 << 10);
        assert_eq!(parse_size("2 M").unwrap(), 2 << 20);
        assert_eq!(parse_size("100").unwrap(), 100);
        assert!(parse_size("1T").is_err());
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("7").unwrap(), Duration::from_secs(7));
        assert!(parse_duration("fast").is_err());
        assert!(parse_duration("5 years").is_err());
    }

    #[test]
    fn peers_parse_and_are_checked_against_this_node() {
        let listen: SocketAddr = "127.0.0.1:19093".parse().unwrap();
        let peers = parse_peers("2@127.0.0.1:19094, 1@127.0.0.1:19093,3@127.0.0.1:19095", 1, listen).unwrap();
        assert_eq!(peers.iter().map(|p| p.node_id).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert!(parse_peers("2@127.0.0.1:19094", 1, listen).unwrap_err().contains("this node"));
        assert!(parse_peers("1@127.0.0.1:19093,1@127.0.0.1:19094", 1, listen).unwrap_err().contains("twice"));
        assert!(parse_peers("1-127.0.0.1:19093", 1, listen).unwrap_err().contains("NODE_ID@HOST:PORT"));
        assert!(parse_peers("0@127.0.0.1:19093", 0, listen).unwrap_err().contains("start at 1"));
        assert!(parse_peers("1@127.0.0.1:19999", 1, listen).unwrap_err().contains("--cluster-listen"));
    }
}
