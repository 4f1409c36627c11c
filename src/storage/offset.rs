//! Offsets as distinct types, so a log start offset can never be passed where a high
//! watermark is expected.
//!
//! Invariant of every partition log: `log_start <= high_watermark <= log_end`.
//! - log start: the first offset a consumer can read (advanced by retention and
//!   DeleteRecords);
//! - high watermark: everything below it is acknowledged under the log's flush policy and
//!   visible to consumers;
//! - log end: the offset the next appended record will get.

use std::fmt;

/// A record offset within one partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Offset(pub i64);

impl Offset {
    pub fn value(self) -> i64 {
        self.0
    }
}

impl fmt::Display for Offset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

macro_rules! offset_newtype {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub Offset);

        impl $name {
            pub fn offset(self) -> Offset {
                self.0
            }
            pub fn value(self) -> i64 {
                self.0 .0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }
    };
}

offset_newtype!(
    /// The earliest offset still readable.
    LogStartOffset
);
offset_newtype!(
    /// Offsets below this are acknowledged and visible to consumers.
    HighWatermark
);
offset_newtype!(
    /// The offset the next appended record will be given.
    LogEndOffset
);

/// The three offsets of a log, read together.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogOffsets {
    pub log_start: LogStartOffset,
    pub high_watermark: HighWatermark,
    pub log_end: LogEndOffset,
}

impl LogOffsets {
    /// Builds the triple and asserts `log_start <= high_watermark <= log_end`.
    pub fn new(log_start: Offset, high_watermark: Offset, log_end: Offset) -> LogOffsets {
        assert!(
            log_start <= high_watermark && high_watermark <= log_end,
            "offset invariant broken: log_start {log_start} high_watermark {high_watermark} log_end {log_end}"
        );
        LogOffsets {
            log_start: LogStartOffset(log_start),
            high_watermark: HighWatermark(high_watermark),
            log_end: LogEndOffset(log_end),
        }
    }
}

/// A log's three offsets and the only ways they change. Every change asserts
/// `log_start <= high_watermark <= log_end`:
/// - appends move the log end up ([`OffsetTracker::assign_through`]);
/// - a completed fdatasync moves the high watermark up, never past the log end
///   ([`OffsetTracker::mark_durable`]);
/// - a write that failed for lack of space rolls the unacknowledged tail back, never
///   below the high watermark ([`OffsetTracker::roll_back`]);
/// - DeleteRecords and retention move the log start up, never past the high watermark
///   ([`OffsetTracker::advance_start`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OffsetTracker {
    log_start: Offset,
    high_watermark: Offset,
    log_end: Offset,
    /// Everything below this is on this node's disk.
    durable_end: Offset,
    /// Replicated logs: everything below this is committed by the partition's Raft group.
    /// The high watermark is then `min(durable_end, commit)`; standalone it is
    /// `durable_end`.
    commit: Option<Offset>,
}

impl OffsetTracker {
    /// A recovered log: everything found on disk is durable.
    pub fn recovered(log_start: Offset, log_end: Offset) -> OffsetTracker {
        let tracker = OffsetTracker { log_start, high_watermark: log_end, log_end, durable_end: log_end, commit: None };
        tracker.check("recovered");
        tracker
    }

    pub fn log_start(&self) -> Offset {
        self.log_start
    }

    pub fn high_watermark(&self) -> Offset {
        self.high_watermark
    }

    pub fn log_end(&self) -> Offset {
        self.log_end
    }

    /// A replicated log: its high watermark follows a Raft group's commit.
    pub fn is_replicated(&self) -> bool {
        self.commit.is_some()
    }

    pub fn snapshot(&self) -> LogOffsets {
        LogOffsets::new(self.log_start, self.high_watermark, self.log_end)
    }

    /// Offsets up to `end` (exclusive) have been given to appended batches.
    pub fn assign_through(&mut self, end: Offset) {
        assert!(end > self.log_end, "appends move the log end forward: {} -> {end}", self.log_end);
        self.log_end = end;
        self.check("assign");
    }

    /// Everything below this is durable on this node (above the high watermark on a
    /// replicated log whose group has not committed it yet).
    pub fn durable_end(&self) -> Offset {
        self.durable_end
    }

    /// Everything below `offset` is durable. Returns false when the durable end was
    /// already there.
    pub fn mark_durable(&mut self, offset: Offset) -> bool {
        if offset <= self.durable_end {
            return false;
        }
        self.durable_end = offset;
        self.update_high_watermark();
        self.check("mark durable");
        true
    }

    /// Makes this a replicated log whose group has committed everything below `commit`:
    /// from now on the high watermark is the smaller of that and the durable end. Called
    /// once, right after opening, so the high watermark may still go down here.
    pub fn replicate(&mut self, commit: Offset) {
        self.commit = Some(commit);
        self.high_watermark = self.durable_end.min(commit).max(self.log_start);
        self.check("replicate");
    }

    /// The group committed everything below `commit`. Returns true when the high
    /// watermark moved.
    pub fn set_commit(&mut self, commit: Offset) -> bool {
        let before = self.high_watermark;
        if self.commit.is_some_and(|c| commit > c) {
            self.commit = Some(commit);
            self.update_high_watermark();
        }
        self.check("commit");
        self.high_watermark != before
    }

    fn update_high_watermark(&mut self) {
        let visible = match self.commit {
            Some(commit) => self.durable_end.min(commit),
            None => self.durable_end,
        };
        self.high_watermark = self.high_watermark.max(visible);
    }

    /// The unacknowledged tail from `end` on was never written: the log end goes back.
    pub fn roll_back(&mut self, end: Offset) {
        assert!(end <= self.log_end, "a rollback never moves the log end forward: {} -> {end}", self.log_end);
        self.log_end = end;
        self.durable_end = self.durable_end.min(end);
        self.check("roll back");
    }

    /// Records below `start` are deleted. Returns false when the log start was already
    /// there or past it.
    pub fn advance_start(&mut self, start: Offset) -> bool {
        if start <= self.log_start {
            return false;
        }
        self.log_start = start;
        self.check("advance log start");
        true
    }

    fn check(&self, change: &str) {
        assert!(
            self.log_start <= self.high_watermark && self.high_watermark <= self.log_end,
            "offset invariant broken by {change}: log_start {} high_watermark {} log_end {}",
            self.log_start,
            self.high_watermark,
            self.log_end
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tracker_moves_by_its_rules() {
        let mut offsets = OffsetTracker::recovered(Offset(0), Offset(10));
        offsets.assign_through(Offset(15));
        assert!(offsets.mark_durable(Offset(12)));
        assert!(!offsets.mark_durable(Offset(11)), "never back");
        offsets.roll_back(Offset(12));
        assert!(offsets.advance_start(Offset(5)));
        assert_eq!(offsets.snapshot(), LogOffsets::new(Offset(5), Offset(12), Offset(12)));
    }

    #[test]
    fn a_replicated_log_shows_only_what_is_committed_and_durable() {
        let mut offsets = OffsetTracker::recovered(Offset(0), Offset(10));
        offsets.replicate(Offset(4));
        assert_eq!(offsets.high_watermark(), Offset(4), "recovered but uncommitted records are hidden");
        offsets.assign_through(Offset(20));
        assert!(offsets.set_commit(Offset(8)));
        assert_eq!(offsets.high_watermark(), Offset(8));
        assert!(offsets.set_commit(Offset(15)));
        assert_eq!(offsets.high_watermark(), Offset(10), "committed, but durable here only up to 10");
        assert!(offsets.mark_durable(Offset(20)));
        assert_eq!(offsets.high_watermark(), Offset(15));
        assert!(!offsets.set_commit(Offset(12)), "commit never goes back");
    }

    #[test]
    #[should_panic(expected = "offset invariant broken by roll back")]
    fn rolling_back_acknowledged_records_is_a_bug() {
        let mut offsets = OffsetTracker::recovered(Offset(0), Offset(10));
        offsets.roll_back(Offset(9));
    }

    #[test]
    #[should_panic(expected = "offset invariant broken by advance log start")]
    fn deleting_past_the_high_watermark_is_a_bug() {
        let mut offsets = OffsetTracker::recovered(Offset(0), Offset(10));
        offsets.assign_through(Offset(20));
        offsets.advance_start(Offset(11));
    }

    #[test]
    fn ordered_offsets_are_accepted() {
        let offsets = LogOffsets::new(Offset(1), Offset(5), Offset(9));
        assert_eq!(offsets.high_watermark.value(), 5);
    }

    #[test]
    #[should_panic(expected = "offset invariant broken")]
    fn high_watermark_past_log_end_is_a_bug() {
        LogOffsets::new(Offset(0), Offset(10), Offset(9));
    }
}
