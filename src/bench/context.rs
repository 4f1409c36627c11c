//! What every load worker of one executor shares: the flags, the client, the executor's
//! probe, the stop flag and the record budget (`--records`), plus the rate schedule and a
//! timeout helper.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::{select, Either};

use super::options::BenchArgs;
use super::stats::SharedProbe;
use crate::client::Client;

/// Shared across executors (threads).
#[derive(Debug)]
pub struct RunControl {
    /// Set by the reporter when the time is up; workers finish what is in flight and stop.
    pub stop: AtomicBool,
    /// Records still to produce (`--records`; `u64::MAX` when unbounded).
    produce_budget: AtomicU64,
    /// Records consumed so far by all consumers.
    pub consumed: AtomicU64,
}

impl RunControl {
    pub fn new(produce_records: Option<u64>) -> RunControl {
        RunControl {
            stop: AtomicBool::new(false),
            produce_budget: AtomicU64::new(produce_records.unwrap_or(u64::MAX)),
            consumed: AtomicU64::new(0),
        }
    }

    pub fn stopped(&self) -> bool {
        self.stop.load(Ordering::Relaxed)
    }

    /// Claims up to `wanted` records of the produce budget; 0 once it is spent.
    pub fn claim(&self, wanted: u64) -> u64 {
        let mut left = self.produce_budget.load(Ordering::Relaxed);
        loop {
            let take = left.min(wanted);
            if take == 0 {
                return 0;
            }
            match self.produce_budget.compare_exchange_weak(left, left - take, Ordering::Relaxed, Ordering::Relaxed) {
                Ok(_) => return take,
                Err(now) => left = now,
            }
        }
    }
}

/// One executor's view.
#[derive(Debug)]
pub struct WorkerContext {
    pub args: Arc<BenchArgs>,
    pub client: Client,
    pub probe: SharedProbe,
    pub control: Arc<RunControl>,
}

pub type SharedContext = Rc<WorkerContext>;

/// Runs `future` for at most `limit`; `None` if the time ran out first.
pub async fn within<T>(limit: Duration, future: impl Future<Output = T>) -> Option<T> {
    match select(Box::pin(future), Box::pin(glommio::timer::sleep(limit))).await {
        Either::Left((value, _)) => Some(value),
        Either::Right(_) => None,
    }
}

/// A fixed-rate send schedule: record `i` is due at `start + i / rate`.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start_ns: u64,
    rate_per_sec: u64,
}

impl Schedule {
    pub fn new(start_ns: u64, rate_per_sec: u64) -> Schedule {
        Schedule { start_ns, rate_per_sec: rate_per_sec.max(1) }
    }

    /// When record `index` is due.
    pub fn due_at(&self, index: u64) -> u64 {
        self.start_ns + (u128::from(index) * 1_000_000_000 / u128::from(self.rate_per_sec)) as u64
    }

    /// How many records are due by `now_ns` (records 0..n).
    pub fn due_by(&self, now_ns: u64) -> u64 {
        if now_ns < self.start_ns {
            return 0;
        }
        (u128::from(now_ns - self.start_ns) * u128::from(self.rate_per_sec) / 1_000_000_000) as u64 + 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_claims_never_exceed_the_total() {
        let control = RunControl::new(Some(10));
        assert_eq!(control.claim(4), 4);
        assert_eq!(control.claim(4), 4);
        assert_eq!(control.claim(4), 2);
        assert_eq!(control.claim(4), 0);
        assert_eq!(RunControl::new(None).claim(1 << 40), 1 << 40);
    }

    #[test]
    fn schedule_spaces_records_evenly() {
        let schedule = Schedule::new(1_000, 1_000); // one per ms
        assert_eq!(schedule.due_by(999), 0);
        assert_eq!(schedule.due_by(1_000), 1);
        assert_eq!(schedule.due_by(1_000 + 999_999), 1);
        assert_eq!(schedule.due_by(1_000 + 1_000_000), 2);
        assert_eq!(schedule.due_at(3), 1_000 + 3_000_000);
    }
}
