//! The log cleaner's state of a topic's partitions, for `tern topic describe`: Kafka's
//! protocol has no request for it (Kafka shows it over JMX), so it is read from the
//! broker's admin endpoint (`/metrics`, the `tern_partition_*` cleaner gauges).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// One compacted partition's cleaner figures.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CleanerRow {
    pub dirty_ratio: f64,
    pub dirty_bytes: f64,
    pub first_dirty_offset: f64,
    pub passes: f64,
    pub records_removed: f64,
    pub bytes_read: f64,
    pub bytes_written: f64,
    pub last_run_seconds: f64,
}

/// GET `/metrics` from the admin endpoint at `address` (host:port).
pub fn fetch_metrics(address: &str) -> Result<String, String> {
    let target = address
        .to_socket_addrs()
        .map_err(|e| format!("{address}: {e}"))?
        .next()
        .ok_or_else(|| format!("{address} resolves to no address"))?;
    let timeout = Duration::from_secs(3);
    let mut stream = TcpStream::connect_timeout(&target, timeout).map_err(|e| format!("{address}: {e}"))?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream
        .write_all(format!("GET /metrics HTTP/1.0\r\nHost: {address}\r\n\r\n").as_bytes())
        .map_err(|e| format!("{address}: {e}"))?;
    let mut response = String::new();
    stream.read_to_string(&mut response).map_err(|e| format!("{address}: {e}"))?;
    match response.split_once("\r\n\r\n") {
        Some((head, body)) if head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200") => Ok(body.into()),
        _ => Err(format!("{address} did not answer /metrics with 200")),
    }
}

/// The cleaner rows of `topic` found in a Prometheus exposition, by partition.
pub fn cleaner_rows(metrics: &str, topic: &str) -> BTreeMap<i32, CleanerRow> {
    let mut rows: BTreeMap<i32, CleanerRow> = BTreeMap::new();
    let topic_label = format!("topic=\"{}\"", topic.replace('\\', "\\\\").replace('"', "\\\""));
    for line in metrics.lines() {
        let Some((name, rest)) = line.split_once('{') else { continue };
        let Some((labels, value)) = rest.rsplit_once("} ") else { continue };
        if !labels.split(',').any(|label| label == topic_label) {
            continue;
        }
        let Some(partition) = labels
            .split(',')
            .find_map(|l| l.strip_prefix("partition=\""))
            .and_then(|p| p.trim_end_matches('"').parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(value) = value.trim().parse::<f64>() else { continue };
        let row = rows.entry(partition).or_default();
        let field = match name {
            "tern_partition_dirty_ratio" => &mut row.dirty_ratio,
            "tern_partition_dirty_bytes" => &mut row.dirty_bytes,
            "tern_partition_first_dirty_offset" => &mut row.first_dirty_offset,
            "tern_partition_cleaner_passes_total" => &mut row.passes,
            "tern_partition_cleaner_records_removed_total" => &mut row.records_removed,
            "tern_partition_cleaner_bytes_read_total" => &mut row.bytes_read,
            "tern_partition_cleaner_bytes_written_total" => &mut row.bytes_written,
            "tern_partition_cleaner_last_run_timestamp_seconds" => &mut row.last_run_seconds,
            _ => continue,
        };
        *field = value;
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_picked_out_by_topic_and_partition() {
        let metrics = "tern_partition_dirty_ratio{topic=\"t\",partition=\"1\"} 0.25\n\
                       tern_partition_cleaner_passes_total{topic=\"t\",partition=\"1\"} 3\n\
                       tern_partition_dirty_ratio{topic=\"other\",partition=\"1\"} 0.9\n\
                       tern_partition_size_bytes{topic=\"t\",partition=\"1\"} 100\n";
        let rows = cleaner_rows(metrics, "t");
        assert_eq!(rows.len(), 1);
        assert_eq!((rows[&1].dirty_ratio, rows[&1].passes), (0.25, 3.0));
    }
}
