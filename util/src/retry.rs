//! Retries with exponential backoff, defined once for every loop that waits and tries again
//! (delivery attempts, outcome writes, claims, Genesys calls, receipts, the operator's
//! reconciles): a [`Backoff`] says how long to wait before retry `n`, [`run`] tries an
//! operation until it succeeds, is told to give up, or runs out of attempts.

use rand::Rng;
use std::time::Duration;

/// How the wait before a retry is spread around its ceiling.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Jitter {
    /// Exactly the ceiling.
    None,
    /// Uniform in `[0, ceiling]` ("full jitter"): replicas retrying after one outage spread
    /// out instead of stampeding.
    Full,
    /// Uniform in `[ceiling / 2, ceiling]` ("equal jitter"): spread, but never much sooner.
    Equal,
}

/// Exponential backoff: the ceiling before retry `n` (1 for the first) is
/// `min(max, initial * multiplier^(n-1))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub initial: Duration,
    pub max: Duration,
    pub multiplier: f64,
    pub jitter: Jitter,
}

impl Backoff {
    /// Doubling from `initial` up to `max`, with `jitter`.
    pub const fn doubling(initial: Duration, max: Duration, jitter: Jitter) -> Self {
        Backoff { initial, max, multiplier: 2.0, jitter }
    }

    /// The cap of the wait before retry `n` (1-based).
    pub fn ceiling(&self, n: u32) -> Duration {
        let exp = self.multiplier.powi(n.saturating_sub(1).min(1000) as i32);
        let secs = self.initial.as_secs_f64() * exp;
        if !secs.is_finite() || secs >= self.max.as_secs_f64() { self.max } else { Duration::from_secs_f64(secs) }
    }

    /// The wait before retry `n`, jittered with `rng`.
    pub fn delay_with(&self, n: u32, rng: &mut impl Rng) -> Duration {
        let ceiling = self.ceiling(n);
        let c = ceiling.as_secs_f64();
        match self.jitter {
            Jitter::None => ceiling,
            Jitter::Full => Duration::from_secs_f64(rng.random_range(0.0..=c)),
            Jitter::Equal => Duration::from_secs_f64(rng.random_range(c / 2.0..=c)),
        }
    }

    /// The wait before retry `n`.
    pub fn delay(&self, n: u32) -> Duration {
        self.delay_with(n, &mut rand::rng())
    }

    /// The wait before retry `n` when the other side asked for `floor` (a `Retry-After`):
    /// never sooner than it, never later than `max`.
    pub fn delay_at_least(&self, n: u32, floor: Option<Duration>, rng: &mut impl Rng) -> Duration {
        let d = self.delay_with(n, rng);
        match floor {
            Some(f) => d.max(f).min(self.max),
            None => d,
        }
    }
}

/// What to do after a failed try.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Try again after the backoff's wait.
    Retry,
    /// Try again after exactly this wait (the other side said when).
    RetryIn(Duration),
    /// Stop and return this error.
    GiveUp,
}

/// How many tries and how long between them.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    /// Tries in all, the first included (at least 1).
    pub attempts: u32,
    pub backoff: Backoff,
}

/// Runs `op(try number)` (1 for the first) until it succeeds, `should_retry` says to give
/// up, or `schedule.attempts` tries failed; returns the last result. `should_retry(error, n)`
/// is also where a caller logs the failure of try `n`.
pub async fn run<T, E, Op, Fut>(
    schedule: Schedule,
    mut op: Op,
    mut should_retry: impl FnMut(&E, u32) -> Next,
) -> Result<T, E>
where
    Op: FnMut(u32) -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let attempts = schedule.attempts.max(1);
    let mut n = 1;
    loop {
        let e = match op(n).await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if n >= attempts {
            return Err(e);
        }
        let wait = match should_retry(&e, n) {
            Next::GiveUp => return Err(e),
            Next::Retry => schedule.backoff.delay(n),
            Next::RetryIn(d) => d,
        };
        tokio::time::sleep(wait).await;
        n += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn policy(jitter: Jitter) -> Backoff {
        Backoff { initial: Duration::from_secs(1), max: Duration::from_secs(60), multiplier: 2.0, jitter }
    }

    #[test]
    fn ceiling_grows_and_caps() {
        let p = policy(Jitter::None);
        assert_eq!(p.ceiling(1), Duration::from_secs(1));
        assert_eq!(p.ceiling(2), Duration::from_secs(2));
        assert_eq!(p.ceiling(4), Duration::from_secs(8));
        assert_eq!(p.ceiling(7), Duration::from_secs(60));
        assert_eq!(p.ceiling(u32::MAX), Duration::from_secs(60));
        assert_eq!(p.delay(3), Duration::from_secs(4));
    }

    #[test]
    fn full_jitter_stays_within_the_ceiling_and_spreads() {
        let p = policy(Jitter::Full);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let delays: Vec<Duration> = (0..1000).map(|_| p.delay_with(4, &mut rng)).collect();
        assert!(delays.iter().all(|d| *d <= Duration::from_secs(8)));
        let below_half = delays.iter().filter(|d| **d < Duration::from_secs(4)).count();
        assert!((350..650).contains(&below_half), "uniform jitter: {below_half}/1000 below half");
    }

    #[test]
    fn equal_jitter_stays_in_the_upper_half() {
        let p = policy(Jitter::Equal);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..1000 {
            let d = p.delay_with(3, &mut rng);
            assert!(d >= Duration::from_secs(2) && d <= Duration::from_secs(4), "{d:?}");
        }
    }

    #[test]
    fn a_floor_is_honoured_up_to_the_cap() {
        let p = policy(Jitter::Full);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert!(p.delay_at_least(1, Some(Duration::from_secs(30)), &mut rng) >= Duration::from_secs(30));
        }
        assert_eq!(p.delay_at_least(1, Some(Duration::from_secs(3600)), &mut rng), Duration::from_secs(60));
    }

    #[tokio::test(start_paused = true)]
    async fn run_retries_until_success_give_up_or_the_last_attempt() {
        let schedule = Schedule {
            attempts: 4,
            backoff: Backoff::doubling(Duration::from_millis(100), Duration::from_secs(1), Jitter::None),
        };
        let start = tokio::time::Instant::now();
        let mut tries = vec![];
        let r: Result<u32, &str> = run(
            schedule,
            |n| {
                tries.push(n);
                async move { if n < 3 { Err("busy") } else { Ok(n) } }
            },
            |_, _| Next::Retry,
        )
        .await;
        assert_eq!(r, Ok(3));
        assert_eq!(tries, [1, 2, 3]);
        assert_eq!(start.elapsed(), Duration::from_millis(300), "100 ms, then 200 ms");

        let r: Result<(), &str> = run(schedule, |_| async { Err("no") }, |_, _| Next::GiveUp).await;
        assert_eq!(r, Err("no"));
        let mut n_seen = 0;
        let r: Result<(), u32> = run(
            schedule,
            |n| async move { Err(n) },
            |_, n| {
                n_seen = n;
                Next::RetryIn(Duration::from_secs(5))
            },
        )
        .await;
        assert_eq!((r, n_seen), (Err(4), 3), "the last try's error comes back");
    }
}
