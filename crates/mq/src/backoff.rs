//! Bounded exponential backoff, used by reconnects and by publish retries.

use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::time::Instant;

/// Exponential backoff: `initial`, doubling up to `max`, for at most
/// `deadline` overall (forever when `None`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Backoff {
    /// First delay.
    #[serde(with = "duration_ms", rename = "initial_ms")]
    pub initial: Duration,
    /// Largest delay; doubling stops here.
    #[serde(with = "duration_ms", rename = "max_ms")]
    pub max: Duration,
    /// Give up once this much time has passed since the first failure.
    #[serde(with = "opt_duration_ms", rename = "deadline_ms")]
    pub deadline: Option<Duration>,
}

impl Default for Backoff {
    /// 100 ms doubling to 5 s, without deadline.
    fn default() -> Self {
        Self {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(5),
            deadline: None,
        }
    }
}

impl Backoff {
    /// Starts counting from now.
    pub fn start(&self) -> BackoffState {
        BackoffState {
            config: *self,
            next: self.initial,
            started: Instant::now(),
            attempts: 0,
        }
    }
}

/// A running backoff: how long the next wait is and when it started.
#[derive(Debug)]
pub struct BackoffState {
    config: Backoff,
    next: Duration,
    started: Instant,
    attempts: u32,
}

/// The backoff deadline passed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeadlineExceeded;

impl BackoffState {
    /// Sleeps for the next delay (cut short at the deadline). Returns
    /// `Err(DeadlineExceeded)` without sleeping once the deadline has passed.
    pub async fn wait(&mut self) -> Result<(), DeadlineExceeded> {
        let mut delay = self.next;
        if let Some(deadline) = self.config.deadline {
            let left = deadline.saturating_sub(self.started.elapsed());
            if left.is_zero() {
                return Err(DeadlineExceeded);
            }
            delay = delay.min(left);
        }
        self.attempts += 1;
        self.next = (self.next * 2).min(self.config.max);
        tokio::time::sleep(delay).await;
        Ok(())
    }

    /// Back to the first delay and a fresh deadline, after a success.
    pub fn reset(&mut self) {
        self.next = self.config.initial;
        self.started = Instant::now();
        self.attempts = 0;
    }

    /// Waits so far since the last reset.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    /// Time since the last reset.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }
}

/// Serde for a `Duration` as whole milliseconds.
pub(crate) mod duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        u64::deserialize(d).map(Duration::from_millis)
    }
}

/// Serde for an `Option<Duration>` as whole milliseconds or null.
pub(crate) mod opt_duration_ms {
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;

    pub(crate) fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
            None => s.serialize_none(),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        d: D,
    ) -> Result<Option<Duration>, D::Error> {
        Option::<u64>::deserialize(d).map(|ms| ms.map(Duration::from_millis))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn doubles_to_max_then_stops_at_deadline() {
        let backoff = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_millis(400),
            deadline: Some(Duration::from_millis(1000)),
        };
        let mut state = backoff.start();
        let t0 = Instant::now();
        let mut stamps = Vec::new();
        while state.wait().await.is_ok() {
            stamps.push(t0.elapsed().as_millis());
        }
        // 100, 200, 400, 400, then cut to the 100 ms left before the deadline.
        assert_eq!(stamps, vec![100, 300, 700, 1000]);
        assert_eq!(state.attempts(), 4);
        state.reset();
        assert!(state.wait().await.is_ok());
    }

    #[test]
    fn serde_round_trip_in_milliseconds() {
        let json = r#"{"initial_ms":50,"max_ms":2000,"deadline_ms":null}"#;
        let backoff: Backoff = serde_json::from_str(json).unwrap();
        assert_eq!(backoff.initial, Duration::from_millis(50));
        assert_eq!(backoff.deadline, None);
        assert_eq!(serde_json::to_string(&backoff).unwrap(), json);
    }
}
