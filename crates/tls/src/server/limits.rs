//! Small building blocks that keep what an unauthenticated peer can cost bounded: a token bucket
//! (how fast new connections are taken on) and a log throttle (how many lines a flood of refused
//! connections can write).

use std::time::Duration;

use parking_lot::Mutex;
use tokio::time::Instant;

/// A token bucket: `burst` tokens at most, refilled at `per_second`. Time is passed in, so tests
/// drive it without sleeping.
#[derive(Debug)]
pub struct TokenBucket {
    burst: f64,
    per_second: f64,
    tokens: f64,
    refilled_at: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(burst: u32, per_second: u32, now: Instant) -> TokenBucket {
        TokenBucket {
            burst: f64::from(burst),
            per_second: f64::from(per_second),
            tokens: f64::from(burst),
            refilled_at: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.refilled_at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        self.refilled_at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// At most one log line per interval for one kind of event; the others are counted and the count
/// goes out with the next line that is written. A flood of refused connections then writes a
/// line a second, not a line per connection (21,000 idle connections once wrote 24,000 lines).
#[derive(Debug)]
pub struct LogThrottle {
    interval: Duration,
    state: Mutex<ThrottleState>,
}

#[derive(Debug)]
struct ThrottleState {
    next: Option<Instant>,
    suppressed: u64,
}

impl LogThrottle {
    /// One line per second.
    pub const fn per_second() -> LogThrottle {
        LogThrottle {
            interval: Duration::from_secs(1),
            state: parking_lot::const_mutex(ThrottleState { next: None, suppressed: 0 }),
        }
    }

    /// `Some(n)`: write this line, and say that `n` lines of its kind were left out since the
    /// previous one. `None`: leave it out (it is counted).
    pub fn admit(&self) -> Option<u64> {
        self.admit_at(Instant::now())
    }

    pub fn admit_at(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock();
        match state.next {
            Some(next) if now < next => {
                state.suppressed += 1;
                None
            }
            _ => {
                state.next = Some(now + self.interval);
                Some(std::mem::take(&mut state.suppressed))
            }
        }
    }
}

impl Default for LogThrottle {
    fn default() -> Self {
        LogThrottle::per_second()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(3, 2, start);
        assert_eq!((0..5).map(|_| bucket.try_take(start)).collect::<Vec<_>>(), [true, true, true, false, false]);
        // Half a second refills one token at 2/s; never more than the burst.
        assert!(bucket.try_take(start + Duration::from_millis(500)));
        assert!(!bucket.try_take(start + Duration::from_millis(500)));
        let later = start + Duration::from_secs(60);
        assert_eq!((0..4).filter(|_| bucket.try_take(later)).count(), 3);
    }

    #[test]
    fn a_throttle_writes_one_line_per_interval_and_counts_the_rest() {
        let throttle = LogThrottle::per_second();
        let start = Instant::now();
        assert_eq!(throttle.admit_at(start), Some(0));
        for i in 1..=9 {
            assert_eq!(throttle.admit_at(start + Duration::from_millis(i * 100)), None);
        }
        assert_eq!(throttle.admit_at(start + Duration::from_millis(1000)), Some(9));
        assert_eq!(throttle.admit_at(start + Duration::from_millis(1500)), None);
        assert_eq!(throttle.admit_at(start + Duration::from_secs(5)), Some(1));
    }
}
