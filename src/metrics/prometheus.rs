//! Prometheus text exposition (version 0.0.4) of every shard's probes, merged at scrape
//! time: counters and histograms per shard (label `shard`), partition gauges and consumer
//! group lag (committed offsets joined with the partitions' high watermarks).

use std::collections::HashMap;
use std::fmt::Write;

use kafka_protocol::messages::ApiKey;

use super::histogram::{HistogramSnapshot, BUCKETS_SECONDS};
use super::{readiness, ShardProbes, ShardSnapshot};

fn shard_label(probes: &ShardProbes, snapshot: &ShardSnapshot) -> String {
    match snapshot.shard {
        Some(id) => id.to_string(),
        None => probes.thread.clone(),
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

fn histogram(out: &mut String, name: &str, labels: &str, h: &HistogramSnapshot) {
    for (bound, count) in BUCKETS_SECONDS.iter().zip(&h.cumulative) {
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {count}");
    }
    let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {}", h.count);
    let _ = writeln!(out, "{name}_sum{{{labels}}} {}", h.sum_seconds);
    let _ = writeln!(out, "{name}_count{{{labels}}} {}", h.count);
}

/// Renders everything registered.
/// The metadata quorum's gauges (cluster mode only).
fn render_cluster(out: &mut String) {
    use std::sync::atomic::Ordering::Relaxed;
    let gauges = super::cluster_gauges();
    if !gauges.enabled.load(Relaxed) {
        return;
    }
    let rows: [(&str, &str, &str, i64); 6] = [
        (
            "tern_cluster_controller_id",
            "gauge",
            "The controller's node id (-1: none).",
            gauges.controller_id.load(Relaxed),
        ),
        (
            "tern_cluster_is_controller",
            "gauge",
            "1 when this node is the controller.",
            gauges.is_controller.load(Relaxed) as i64,
        ),
        (
            "tern_cluster_brokers_live",
            "gauge",
            "Registered brokers not fenced.",
            gauges.brokers_live.load(Relaxed) as i64,
        ),
        (
            "tern_cluster_brokers_fenced",
            "gauge",
            "Registered brokers fenced (missed their session).",
            gauges.brokers_fenced.load(Relaxed) as i64,
        ),
        (
            "tern_cluster_metadata_applied_index",
            "gauge",
            "Index of the last metadata-log entry applied here.",
            gauges.applied_index.load(Relaxed) as i64,
        ),
        (
            "tern_cluster_controller_changes_total",
            "counter",
            "Times this node saw the controller change.",
            gauges.leader_changes.load(Relaxed) as i64,
        ),
    ];
    render_rows(out, &rows);
    let replication = super::replication_gauges();
    let counts = replication.totals();
    let rows: [(&str, &str, &str, i64); 8] = [
        ("tern_replication_groups", "gauge", "Partition replicas (Raft groups) on this node.", counts.groups as i64),
        ("tern_replication_leaders", "gauge", "Replicated partitions this node leads.", counts.leaders as i64),
        (
            "tern_replication_quiesced_groups",
            "gauge",
            "Replica groups gone quiet (nothing to replicate: no ticks, no heartbeats).",
            counts.quiesced as i64,
        ),
        (
            "tern_replication_under_replicated_partitions",
            "gauge",
            "Partitions led here with fewer in-sync replicas than replicas (Kafka's UnderReplicatedPartitions).",
            counts.under_replicated as i64,
        ),
        (
            "tern_replication_leader_changes_total",
            "counter",
            "Leader changes seen by this node's replicas.",
            replication.leader_changes.load(Relaxed) as i64,
        ),
        (
            "tern_replication_truncations_total",
            "counter",
            "Uncommitted log tails cut by this node's replicas.",
            replication.truncations.load(Relaxed) as i64,
        ),
        (
            "tern_replication_catch_ups_total",
            "counter",
            "Copies of a leader's log finished by this node's replicas.",
            replication.catch_ups.load(Relaxed) as i64,
        ),
        (
            "tern_replication_catch_up_bytes_total",
            "counter",
            "Bytes this node's replicas copied from leaders' logs.",
            replication.catch_up_bytes.load(Relaxed) as i64,
        ),
    ];
    render_rows(out, &rows);
}

/// Node-level rows without labels: (name, type, help, value).
fn render_rows(out: &mut String, rows: &[(&str, &str, &str, i64)]) {
    for (name, kind, help, value) in rows {
        header(out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
}

pub fn render(all: &[std::sync::Arc<ShardProbes>]) -> String {
    // Only shard threads publish snapshots; other threads (pools) have none worth showing.
    let shards: Vec<(&ShardProbes, ShardSnapshot)> = all
        .iter()
        .map(|p| (p.as_ref(), p.snapshot.lock().expect("snapshot").clone()))
        .filter(|(_, s)| s.shard.is_some())
        .collect();
    let mut out = String::with_capacity(16 << 10);
    let (ready, total) = readiness();
    header(&mut out, "tern_shards_ready", "gauge", "Shards that recovered their logs and accept connections.");
    let _ = writeln!(out, "tern_shards_ready {ready}");
    header(&mut out, "tern_shards", "gauge", "Shards configured (--cores).");
    let _ = writeln!(out, "tern_shards {}", if total == usize::MAX { 0 } else { total });
    render_cluster(&mut out);

    type Get = fn(&ShardProbes) -> u64;
    let counters: [(&str, &str, Get); 24] = [
        ("tern_bytes_received_total", "Request bytes received.", |p| p.bytes_received.get()),
        ("tern_bytes_sent_total", "Response bytes sent.", |p| p.bytes_sent.get()),
        (
            "tern_connections_accepted_total",
            "Client connections the listener accepted (with --defer-accept-secs, only those that sent bytes or waited it out).",
            |p| p.connections_accepted.get(),
        ),
        ("tern_connections_opened_total", "Client connections that sent a first request and are served.", |p| {
            p.connections_opened.get()
        }),
        ("tern_connections_closed_total", "Client connections closed.", |p| p.connections_closed.get()),
        (
            "tern_connections_refused_total",
            "Connections closed at accept (max.connections or max.connections.per.ip).",
            |p| p.connections_refused.get(),
        ),
        (
            "tern_connections_timed_out_total",
            "Connections closed idle (connections.max.idle.ms) or mid-request (request-read timeout).",
            |p| p.connections_timed_out.get(),
        ),
        ("tern_connections_bad_total", "Connections closed for bad input (malformed frames, refused requests).", |p| {
            p.connections_bad.get()
        }),
        (
            "tern_connections_creation_throttled_total",
            "Accepts that waited for max.connection.creation.rate.",
            |p| p.connection_creation_throttled.get(),
        ),
        (
            "tern_request_budget_waits_total",
            "Requests that waited for the shard's share of --queued-max-request-bytes (connections not read meanwhile).",
            |p| p.request_budget_waits.get(),
        ),
        ("tern_cross_shard_calls_total", "Requests sent to another shard over the mesh.", |p| {
            p.cross_shard_calls.get()
        }),
        (
            "tern_event_loop_stalls_total",
            "Times a task kept the shard's event loop busy past the stall threshold.",
            |p| p.event_loop_stalls.get(),
        ),
        ("tern_sendfile_bytes_total", "Record bytes sent with sendfile (zero-copy cold reads).", |p| {
            p.sendfile_bytes.get()
        }),
        ("tern_sendfile_calls_total", "sendfile(2) calls.", |p| p.sendfile_calls.get()),
        (
            "tern_paced_read_bytes_total",
            "Of the sendfile bytes, those read while the broker was taking writes (paced cold reads).",
            |p| p.paced_read_bytes.get(),
        ),
        (
            "tern_cold_read_budget_waits_total",
            "Paced cold reads that waited for the shard's --cold-read-budget-mb.",
            |p| p.cold_read_budget_waits.get(),
        ),
        ("tern_segment_bytes_read_total", "Record bytes read from segments into memory (copying path).", |p| {
            p.segment_bytes_read.get()
        }),
        (
            "tern_segments_recycled_total",
            "Segments started in the file of a segment retention deleted (blocks already written).",
            |p| p.segments_recycled.get(),
        ),
        ("tern_segment_header_bytes_read_total", "Bytes read to find batch boundaries for zero-copy sends.", |p| {
            p.segment_header_bytes_read.get()
        }),
        ("tern_batch_cache_bytes_served_total", "Record bytes fetches got from the batch cache.", |p| {
            p.batch_cache_bytes_served.get()
        }),
        ("tern_cleaner_passes_total", "Log cleaner passes run (compacted partitions).", |p| p.cleaner_passes.get()),
        ("tern_cleaner_bytes_read_total", "Bytes the log cleaner read from segments.", |p| p.cleaner_bytes_read.get()),
        ("tern_cleaner_bytes_written_total", "Bytes of cleaned segments the log cleaner wrote.", |p| {
            p.cleaner_bytes_written.get()
        }),
        (
            "tern_cleaner_records_removed_total",
            "Records the log cleaner removed (superseded, expired tombstones).",
            |p| p.cleaner_records_removed.get(),
        ),
    ];
    for (name, help, get) in counters {
        header(&mut out, name, "counter", help);
        for (probes, snapshot) in &shards {
            let _ = writeln!(out, "{name}{{shard=\"{}\"}} {}", shard_label(probes, snapshot), get(probes));
        }
    }

    header(&mut out, "tern_requests_total", "counter", "Requests received, by API.");
    header(&mut out, "tern_request_errors_total", "counter", "Requests that failed as a whole, by API.");
    for (probes, snapshot) in &shards {
        let shard = shard_label(probes, snapshot);
        for key in 0..super::API_KEYS {
            let (requests, errors) = (probes.requests[key].get(), probes.request_errors[key].get());
            if requests == 0 && errors == 0 {
                continue;
            }
            let api = ApiKey::try_from(key as i16).map_or_else(|_| format!("key{key}"), |k| format!("{k:?}"));
            let _ = writeln!(out, "tern_requests_total{{shard=\"{shard}\",api=\"{api}\"}} {requests}");
            let _ = writeln!(out, "tern_request_errors_total{{shard=\"{shard}\",api=\"{api}\"}} {errors}");
        }
    }

    type GetHistogram = fn(&ShardProbes) -> HistogramSnapshot;
    let histograms: [(&str, &str, GetHistogram); 10] = [
        ("tern_produce_latency_seconds", "Produce request to response, seconds.", |p| p.produce_latency.snapshot()),
        ("tern_fetch_latency_seconds", "Fetch request to response (long polls included), seconds.", |p| {
            p.fetch_latency.snapshot()
        }),
        ("tern_fsync_latency_seconds", "fdatasync duration of partition logs, seconds.", |p| {
            p.fsync_latency.snapshot()
        }),
        (
            "tern_log_queue_wait_seconds",
            "Time the oldest append of a write round waited for the log's writer, seconds.",
            |p| p.log_queue_wait.snapshot(),
        ),
        (
            "tern_log_write_seconds",
            "Duration of a write round (with the flush for write-through segments), seconds.",
            |p| p.log_write.snapshot(),
        ),
        ("tern_log_sync_wait_seconds", "Time written data waited for the fdatasync that covers it, seconds.", |p| {
            p.log_sync_wait.snapshot()
        }),
        (
            "tern_produce_response_write_seconds",
            "From a produce response being ready to its last byte handed to the socket, seconds.",
            |p| p.produce_response_write.snapshot(),
        ),
        (
            "tern_replication_commit_seconds",
            "Replicated acks=all batches, from proposal at the leader to commit (on disk on a majority), seconds.",
            |p| p.replication_commit.snapshot(),
        ),
        (
            "tern_replication_follower_ack_seconds",
            "Follower: from an append's arrival to its acknowledgement leaving (its write included), seconds.",
            |p| p.replication_follower_ack.snapshot(),
        ),
        (
            "tern_event_loop_lag_seconds",
            "Lateness of the shard watchdog timer (10 ms while busy, 1 s while idle), seconds.",
            |p| p.event_loop_lag.snapshot(),
        ),
    ];
    for (name, help, get) in histograms {
        header(&mut out, name, "histogram", help);
        for (probes, snapshot) in &shards {
            histogram(&mut out, name, &format!("shard=\"{}\"", shard_label(probes, snapshot)), &get(probes));
        }
    }

    header(&mut out, "tern_batch_cache_hits_total", "counter", "Batch cache reads that found the offset.");
    header(&mut out, "tern_batch_cache_misses_total", "counter", "Batch cache reads that went to the segments.");
    header(&mut out, "tern_batch_cache_evictions_total", "counter", "Batches evicted from the batch cache.");
    header(&mut out, "tern_batch_cache_bytes", "gauge", "Bytes held by the batch cache.");
    header(&mut out, "tern_batch_cache_budget_bytes", "gauge", "The batch cache's budget (--batch-cache-bytes).");
    header(&mut out, "tern_tasks_executed_total", "counter", "glommio tasks the shard ran.");
    header(&mut out, "tern_task_runtime_seconds_total", "counter", "Time the shard spent running tasks.");
    for (probes, s) in &shards {
        let shard = shard_label(probes, s);
        let _ = writeln!(out, "tern_batch_cache_hits_total{{shard=\"{shard}\"}} {}", s.cache.hits);
        let _ = writeln!(out, "tern_batch_cache_misses_total{{shard=\"{shard}\"}} {}", s.cache.misses);
        let _ = writeln!(out, "tern_batch_cache_evictions_total{{shard=\"{shard}\"}} {}", s.cache.evictions);
        let _ = writeln!(out, "tern_batch_cache_bytes{{shard=\"{shard}\"}} {}", s.cache.bytes);
        let _ = writeln!(out, "tern_batch_cache_budget_bytes{{shard=\"{shard}\"}} {}", s.cache.budget_bytes);
        let _ = writeln!(out, "tern_tasks_executed_total{{shard=\"{shard}\"}} {}", s.tasks_executed);
        let _ = writeln!(out, "tern_task_runtime_seconds_total{{shard=\"{shard}\"}} {}", s.task_runtime_seconds);
    }

    let mut high_watermarks: HashMap<(String, i32), i64> = HashMap::new();
    for name in ["log_start_offset", "high_watermark", "log_end_offset", "size_bytes"] {
        header(&mut out, &format!("tern_partition_{name}"), "gauge", &format!("Partition {}.", name.replace('_', " ")));
    }
    for (_, s) in &shards {
        for p in &s.partitions {
            let labels = format!("topic=\"{}\",partition=\"{}\"", escape(&p.topic), p.partition);
            let _ = writeln!(out, "tern_partition_log_start_offset{{{labels}}} {}", p.log_start);
            let _ = writeln!(out, "tern_partition_high_watermark{{{labels}}} {}", p.high_watermark);
            let _ = writeln!(out, "tern_partition_log_end_offset{{{labels}}} {}", p.log_end);
            let _ = writeln!(out, "tern_partition_size_bytes{{{labels}}} {}", p.size_bytes);
            high_watermarks.insert((p.topic.clone(), p.partition), p.high_watermark);
        }
    }
    type GetCleaner = fn(&super::CleanerGauge) -> f64;
    let cleaner_series: [(&str, &str, &str, GetCleaner); 9] = [
        ("tern_partition_dirty_ratio", "gauge", "uncleaned share of its cleanable bytes", |c| c.dirty_ratio),
        ("tern_partition_dirty_bytes", "gauge", "bytes of closed segments not cleaned yet", |c| c.dirty_bytes as f64),
        ("tern_partition_first_dirty_offset", "gauge", "where its uncleaned part starts", |c| {
            c.first_dirty_offset as f64
        }),
        ("tern_partition_cleaner_last_run_timestamp_seconds", "gauge", "start of the last pass (0: never)", |c| {
            c.last_run_ms as f64 / 1e3
        }),
        ("tern_partition_cleaner_last_duration_seconds", "gauge", "duration of the last pass", |c| {
            c.last_duration_ms as f64 / 1e3
        }),
        ("tern_partition_cleaner_passes_total", "counter", "cleaner passes", |c| c.passes as f64),
        ("tern_partition_cleaner_bytes_read_total", "counter", "bytes the cleaner read", |c| c.bytes_read as f64),
        ("tern_partition_cleaner_bytes_written_total", "counter", "bytes of cleaned segments written", |c| {
            c.bytes_written as f64
        }),
        ("tern_partition_cleaner_records_removed_total", "counter", "records the cleaner removed", |c| {
            c.records_removed as f64
        }),
    ];
    for (name, kind, help, get) in cleaner_series {
        header(&mut out, name, kind, &format!("Compacted partition: {help}."));
        for (_, s) in &shards {
            for p in &s.partitions {
                let Some(cleaner) = &p.cleaner else { continue };
                let labels = format!("topic=\"{}\",partition=\"{}\"", escape(&p.topic), p.partition);
                let _ = writeln!(out, "{name}{{{labels}}} {}", get(cleaner));
            }
        }
    }
    header(&mut out, "tern_consumer_group_committed_offset", "gauge", "A group's committed offset.");
    header(&mut out, "tern_consumer_group_lag", "gauge", "High watermark minus the group's committed offset.");
    for (_, s) in &shards {
        for c in &s.committed {
            let labels =
                format!("group=\"{}\",topic=\"{}\",partition=\"{}\"", escape(&c.group), escape(&c.topic), c.partition);
            let _ = writeln!(out, "tern_consumer_group_committed_offset{{{labels}}} {}", c.offset);
            if let Some(hw) = high_watermarks.get(&(c.topic.clone(), c.partition)) {
                let _ = writeln!(out, "tern_consumer_group_lag{{{labels}}} {}", (hw - c.offset).max(0));
            }
        }
    }
    out
}
