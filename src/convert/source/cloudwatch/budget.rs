//! The request budget shared by every log group of a run: a token bucket.
//!
//! FilterLogEvents allows 5 transactions per second per account and Region, a quota that
//! cannot be raised (CloudWatch Logs quotas page). Reading several groups in parallel must stay
//! under it *together*, retries included, or every group gets throttled. The bucket is pure
//! ([`TokenBucket::try_take`] takes "now"); [`Budget`] is the thin async shell tasks share.

use std::sync::Arc;
use std::time::{Duration, Instant};

/// Tokens refilled continuously at `rate` per second, at most `capacity` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    capacity: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket. `rate` is clamped to at least 0.01 per second, `capacity` to at least 1.
    pub fn new(rate: f64, capacity: f64, now: Instant) -> Self {
        let capacity = capacity.max(1.0);
        TokenBucket {
            rate: rate.max(0.01),
            capacity,
            tokens: capacity,
            last: now,
        }
    }

    /// Takes a token, or says how long to wait before one is there.
    pub fn try_take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.capacity);
        self.last = now.max(self.last);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }

    /// Empties the bucket: after a throttling answer the service has told us the account is
    /// over its rate (other clients may share it), so nobody in this run sends for a while.
    pub fn drain(&mut self, now: Instant) {
        let _ = self.try_take(now);
        self.tokens = self.tokens.min(0.0);
    }
}

/// A [`TokenBucket`] shared by the tasks of one run. Cloning shares it.
#[derive(Debug, Clone)]
pub struct Budget(Arc<tokio::sync::Mutex<TokenBucket>>);

impl Budget {
    /// Whether `other` is this budget (a clone of it), not merely one of the same rate.
    pub fn shares(&self, other: &Budget) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// `rate` requests per second, evenly: no burst beyond one request, so that no second
    /// holds more than `rate` of them (plus the one at its very edge). A saved-up burst let a
    /// single second hold twice the rate (the poll bench measured 10 in one second at 5 per
    /// second), and the FilterLogEvents quota is counted per second.
    pub fn per_second(rate: f64) -> Self {
        let bucket = TokenBucket::new(rate, 1.0, now());
        Budget(Arc::new(tokio::sync::Mutex::new(bucket)))
    }

    /// Waits for a token. The lock is held while waiting, so waiters are served in order.
    pub async fn acquire(&self) {
        let mut bucket = self.0.lock().await;
        while let Err(wait) = bucket.try_take(now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// See [`TokenBucket::drain`].
    pub async fn drain(&self) {
        self.0.lock().await.drain(now());
    }
}

/// Tokio's clock (which tests can pause), as a std `Instant`.
fn now() -> Instant {
    tokio::time::Instant::now().into_std()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_then_the_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 5.0, t0);
        for _ in 0..5 {
            assert_eq!(b.try_take(t0), Ok(()));
        }
        let wait = b.try_take(t0).unwrap_err();
        assert!((wait.as_secs_f64() - 0.2).abs() < 1e-9, "{wait:?}");
        // 200 ms later exactly one more token.
        let t1 = t0 + Duration::from_millis(200);
        assert_eq!(b.try_take(t1), Ok(()));
        assert!(b.try_take(t1).is_err());
    }

    #[test]
    fn never_saves_more_than_its_capacity() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 5.0, t0);
        let later = t0 + Duration::from_secs(3600);
        let taken = (0..100).filter(|_| b.try_take(later).is_ok()).count();
        assert_eq!(taken, 5);
    }

    #[test]
    fn over_ten_seconds_grants_rate_times_ten_plus_the_burst() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 5.0, t0);
        let mut granted = 0;
        for ms in (0..=10_000).step_by(10) {
            let now = t0 + Duration::from_millis(ms);
            while b.try_take(now).is_ok() {
                granted += 1;
            }
        }
        assert_eq!(granted, 55);
    }

    #[test]
    fn drain_makes_everyone_wait() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(5.0, 5.0, t0);
        b.drain(t0);
        assert!(b.try_take(t0).is_err());
        assert!(b.try_take(t0 + Duration::from_millis(200)).is_ok());
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn shared_budget_paces_parallel_tasks() {
        let budget = Budget::per_second(5.0);
        let start = tokio::time::Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let b = budget.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..5 {
                    b.acquire().await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        // 15 requests: one at once, then 14 more at 5 per second.
        let elapsed = start.elapsed();
        assert!(elapsed >= Duration::from_millis(2790), "{elapsed:?}");
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn no_second_holds_more_than_the_rate() {
        let budget = Budget::per_second(5.0);
        let start = tokio::time::Instant::now();
        let mut at = Vec::new();
        for _ in 0..40 {
            budget.acquire().await;
            at.push(start.elapsed());
        }
        for (i, t) in at.iter().enumerate() {
            let in_window = at[i..]
                .iter()
                .take_while(|u| **u < *t + Duration::from_secs(1))
                .count();
            assert!(
                in_window <= 5,
                "{in_window} requests in the second from {t:?}"
            );
        }
    }
}
