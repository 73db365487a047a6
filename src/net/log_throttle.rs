//! Keeps a flood of failing connections from flooding the log: the first few failures of each
//! interval are logged in full, the rest are counted and summarised in one line when the
//! interval ends.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

/// Failures logged in full per interval.
pub(crate) const DETAILED_PER_INTERVAL: u32 = 10;
/// The interval.
pub(crate) const INTERVAL: Duration = Duration::from_secs(10);

/// Counts failures per interval; see the module docs.
pub(crate) struct LogThrottle {
    state: Mutex<Window>,
    detailed: u32,
    interval: Duration,
}

struct Window {
    start: Option<Instant>,
    logged: u32,
    suppressed: u64,
}

/// What to do with one failure.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Log it in full.
    Log,
    /// Log it in full, after a line saying how many were suppressed in the last interval.
    LogAfterSummary(u64),
    /// Count it only. `first` is true for the first one counted in this interval (the caller
    /// arranges for [`LogThrottle::take_summary`] when the interval ends).
    Suppress { first: bool },
}

impl LogThrottle {
    pub fn new(detailed: u32, interval: Duration) -> Arc<LogThrottle> {
        Arc::new(LogThrottle {
            state: Mutex::new(Window {
                start: None,
                logged: 0,
                suppressed: 0,
            }),
            detailed,
            interval,
        })
    }

    /// One failure at `now`.
    pub fn failure(&self, now: Instant) -> Verdict {
        let mut w = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let fresh = w
            .start
            .is_none_or(|start| now.saturating_duration_since(start) >= self.interval);
        if fresh {
            let earlier = std::mem::take(&mut w.suppressed);
            w.start = Some(now);
            w.logged = 1;
            return match earlier {
                0 => Verdict::Log,
                n => Verdict::LogAfterSummary(n),
            };
        }
        if w.logged < self.detailed {
            w.logged += 1;
            return Verdict::Log;
        }
        w.suppressed += 1;
        Verdict::Suppress {
            first: w.suppressed == 1,
        }
    }

    /// The failures suppressed so far in this interval (then zero).
    pub fn take_summary(&self) -> u64 {
        std::mem::take(
            &mut self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .suppressed,
        )
    }

    /// How long the interval is.
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_few_are_logged_the_rest_summarised_per_interval() {
        let t = LogThrottle::new(3, Duration::from_secs(10));
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        assert_eq!(t.failure(at(0)), Verdict::Log);
        assert_eq!(t.failure(at(1)), Verdict::Log);
        assert_eq!(t.failure(at(2)), Verdict::Log);
        assert_eq!(t.failure(at(3)), Verdict::Suppress { first: true });
        for _ in 0..1000 {
            assert_eq!(t.failure(at(4)), Verdict::Suppress { first: false });
        }
        // The next interval starts with a summary of the last one.
        assert_eq!(t.failure(at(10)), Verdict::LogAfterSummary(1001));
        assert_eq!(t.failure(at(11)), Verdict::Log);
        assert_eq!(t.failure(at(12)), Verdict::Log);
        assert_eq!(t.failure(at(13)), Verdict::Suppress { first: true });
        // A timer that fires at the interval's end takes the count; nothing is told twice.
        assert_eq!(t.take_summary(), 1);
        assert_eq!(t.failure(at(25)), Verdict::Log);
    }
}
