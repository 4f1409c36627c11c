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

#[cfg(test)]
mod tests {
    use super::*;

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
