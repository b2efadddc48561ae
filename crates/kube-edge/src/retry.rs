//! Per-key retries with exponential backoff, as a controller's work queue wants them.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::mpsc;

/// The first retry's delay; it doubles with every consecutive failure.
pub const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest delay.
pub const MAX_DELAY: Duration = Duration::from_secs(300);

/// The delay before the retry that follows `failures` earlier consecutive failures:
/// [`FIRST_DELAY`] doubling to [`MAX_DELAY`].
pub fn backoff(failures: u32) -> Duration {
    FIRST_DELAY
        .saturating_mul(1 << failures.min(12))
        .min(MAX_DELAY)
}

/// Counts consecutive failures per key and sends the key back, wrapped, once its backoff
/// has passed.
pub struct Retries<M> {
    failures: HashMap<String, u32>,
    tx: mpsc::UnboundedSender<M>,
    wrap: fn(String) -> M,
}

impl<M: Send + 'static> Retries<M> {
    /// Retries go to `tx` as `wrap(key)`.
    pub fn new(tx: mpsc::UnboundedSender<M>, wrap: fn(String) -> M) -> Self {
        Self {
            failures: HashMap::new(),
            tx,
            wrap,
        }
    }

    /// `key` failed: sends `wrap(key)` after its backoff, which doubles for the next failure.
    pub fn schedule(&mut self, key: &str) {
        let failures = self.failures.entry(key.to_owned()).or_insert(0);
        let delay = backoff(*failures);
        *failures = failures.saturating_add(1);
        let (tx, input) = (self.tx.clone(), (self.wrap)(key.to_owned()));
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            let _ = tx.send(input);
        });
    }

    /// `key` succeeded or is gone: its next failure starts from [`FIRST_DELAY`] again.
    pub fn forget(&mut self, key: &str) {
        self.failures.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100_ms_to_5_minutes() {
        assert_eq!(backoff(0), Duration::from_millis(100));
        assert_eq!(backoff(1), Duration::from_millis(200));
        assert_eq!(backoff(11), Duration::from_millis(204_800));
        assert_eq!(backoff(12), MAX_DELAY);
        assert_eq!(backoff(u32::MAX), MAX_DELAY);
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_comes_back_after_its_backoff_and_forget_resets_it() {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let mut retries = Retries::new(tx, |key| key);
        let start = tokio::time::Instant::now();
        retries.schedule("a");
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), FIRST_DELAY);
        retries.schedule("a");
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), FIRST_DELAY * 3);
        retries.forget("a");
        retries.schedule("a");
        assert_eq!(rx.recv().await.as_deref(), Some("a"));
        assert_eq!(start.elapsed(), FIRST_DELAY * 4);
    }
}
