//! Exponential backoff, capped, optionally with jitter: for the watches' retries against the
//! API server and the sync loop's retries of pods whose interface is not there yet.
//!
//! Each delay doubles the one before up to the cap. With jitter, a delay is drawn from the
//! upper half of its step ("equal jitter": `[d/2, d]`): at least half the schedule is kept,
//! so an outage costs a bounded number of attempts, and the other half spreads the agents of
//! every node of a cluster apart, so that they do not all list again in the same second when
//! the API server comes back.

use std::{collections::hash_map::RandomState, hash::BuildHasher as _, time::Duration};

pub struct Backoff {
    initial: Duration,
    cap: Duration,
    /// The next delay before jitter.
    step: Duration,
    jitter: Option<Jitter>,
}

impl Backoff {
    /// `initial` doubling to `cap`, each delay drawn from `[d/2, d]`.
    pub fn jittered(initial: Duration, cap: Duration) -> Self {
        Self {
            jitter: Some(Jitter::default()),
            ..Self::exact(initial, cap)
        }
    }

    /// `initial` doubling to `cap`, exactly.
    pub fn exact(initial: Duration, cap: Duration) -> Self {
        Self {
            initial,
            cap,
            step: initial.min(cap),
            jitter: None,
        }
    }

    /// The delay before the next attempt; the one after is longer, up to the cap.
    pub fn next(&mut self) -> Duration {
        let unit = self.jitter.as_mut().map_or(1.0, Jitter::unit);
        self.next_at(unit)
    }

    /// As [`Self::next`], with the random draw given: `unit` in `[0, 1]` picks the delay in
    /// `[d/2, d]` (ignored without jitter).
    fn next_at(&mut self, unit: f64) -> Duration {
        let step = self.step;
        self.step = (step * 2).min(self.cap);
        if self.jitter.is_none() {
            return step;
        }
        step.mul_f64(0.5 + 0.5 * unit.clamp(0.0, 1.0))
    }

    /// Back to the initial delay.
    pub fn reset(&mut self) {
        self.step = self.initial.min(self.cap);
    }
}

/// Uniform draws in `[0, 1]` without a random number crate: the standard library's hasher
/// with a key of its own per instance (random, from the OS), applied to a counter.
#[derive(Default)]
struct Jitter {
    key: RandomState,
    draws: u64,
}

impl Jitter {
    fn unit(&mut self) -> f64 {
        self.draws += 1;
        // The top 53 bits: every value exactly representable.
        (self.key.hash_one(self.draws) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::Backoff;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_from_the_initial_one_until_the_cap_then_stay() {
        let mut backoff = Backoff::exact(800 * MS, 30_000 * MS);
        let delays: Vec<u64> = (0..9).map(|_| backoff.next().as_millis() as u64).collect();
        assert_eq!(
            delays,
            [
                800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000, 30_000
            ]
        );
    }

    #[test]
    fn a_jittered_delay_is_within_the_upper_half_of_its_step() {
        let mut low = Backoff::jittered(800 * MS, 30_000 * MS);
        let mut high = Backoff::jittered(800 * MS, 30_000 * MS);
        let lows: Vec<u64> = (0..8)
            .map(|_| low.next_at(0.0).as_millis() as u64)
            .collect();
        let highs: Vec<u64> = (0..8)
            .map(|_| high.next_at(1.0).as_millis() as u64)
            .collect();
        assert_eq!(lows, [400, 800, 1600, 3200, 6400, 12_800, 15_000, 15_000]);
        assert_eq!(
            highs,
            [800, 1600, 3200, 6400, 12_800, 25_600, 30_000, 30_000]
        );
    }

    #[test]
    fn random_delays_stay_in_bounds_and_are_not_all_equal() {
        let steps = [800, 1600, 3200, 6400, 12_800, 25_600, 30_000];
        let mut seen_at_cap = Vec::new();
        for _ in 0..50 {
            let mut backoff = Backoff::jittered(800 * MS, 30_000 * MS);
            for step in steps {
                let delay = backoff.next();
                let step = step * MS;
                assert!(
                    delay >= step / 2 && delay <= step,
                    "{delay:?} outside [{:?}, {step:?}]",
                    step / 2
                );
                if step == 30_000 * MS {
                    seen_at_cap.push(delay);
                }
            }
        }
        seen_at_cap.sort_unstable();
        seen_at_cap.dedup();
        assert!(seen_at_cap.len() > 40, "jitter spreads: {seen_at_cap:?}");
    }

    #[test]
    fn reset_starts_the_schedule_again() {
        let mut backoff = Backoff::exact(250 * MS, 30_000 * MS);
        for _ in 0..10 {
            backoff.next();
        }
        assert_eq!(backoff.next(), 30_000 * MS);
        backoff.reset();
        assert_eq!(backoff.next(), 250 * MS);
        assert_eq!(backoff.next(), 500 * MS);
    }

    #[test]
    fn an_initial_delay_over_the_cap_is_the_cap() {
        let mut backoff = Backoff::exact(60_000 * MS, 30_000 * MS);
        assert_eq!(backoff.next(), 30_000 * MS);
        backoff.reset();
        assert_eq!(backoff.next(), 30_000 * MS);
    }
}
