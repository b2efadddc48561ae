//! Write-echo suppression for a controller that writes the objects it watches.
//!
//! A controller that decides on an object while its own write to it is under way, or on
//! the version the watch held before that write came back, undoes the write. So work for
//! an object waits while a write is in flight and until the watch has brought back the
//! resourceVersion the write produced; work that arrived meanwhile is deferred and
//! released once the echo (or a re-list) is in, exactly once.

use std::collections::{HashMap, HashSet};

/// Keys are the objects' `namespace/name`.
#[derive(Debug, Clone, Default)]
pub struct WriteEchoes {
    /// Writes under way, with the versions the watch delivered meanwhile (the write's own
    /// version can arrive before the write is heard to finish).
    in_flight: HashMap<String, Vec<String>>,
    /// The version our last write produced, until the watch brings it.
    expected: HashMap<String, String>,
    /// Keys whose work waits for an in-flight write or its echo.
    deferred: HashSet<String>,
}

impl WriteEchoes {
    /// A write to `key` starts.
    pub fn started(&mut self, key: &str) {
        self.in_flight.insert(key.to_owned(), Vec::new());
    }

    /// The write to `key` finished; `produced` is the version it wrote (`None` when it
    /// failed or wrote nothing). True when deferred work for `key` may run now.
    pub fn finished(&mut self, key: &str, produced: Option<String>) -> bool {
        let seen = self.in_flight.remove(key).unwrap_or_default();
        if let Some(version) = produced.filter(|v| !seen.contains(v)) {
            self.expected.insert(key.to_owned(), version);
        }
        !self.expected.contains_key(key) && self.deferred.remove(key)
    }

    /// The watch delivered `version` of `key`. True when it is the awaited echo and work
    /// deferred for `key` may run now.
    pub fn observed(&mut self, key: &str, version: &str) -> bool {
        if let Some(seen) = self.in_flight.get_mut(key) {
            seen.push(version.to_owned());
        }
        if self.expected.get(key).is_some_and(|v| v == version) {
            self.expected.remove(key);
            return !self.in_flight.contains_key(key) && self.deferred.remove(key);
        }
        false
    }

    /// After a re-list the watch may have skipped versions, so no echo is awaited any
    /// more. Returns the deferred keys that may run now.
    pub fn relisted(&mut self) -> Vec<String> {
        self.expected.clear();
        let released: Vec<String> = self
            .deferred
            .iter()
            .filter(|key| !self.in_flight.contains_key(*key))
            .cloned()
            .collect();
        for key in &released {
            self.deferred.remove(key);
        }
        released
    }

    /// Whether work for `key`, whose cached object is at version `current` (`None`: gone
    /// from the cache), may run now. If not, it is deferred until [`Self::finished`] or
    /// [`Self::observed`] releases it.
    pub fn admit(&mut self, key: &str, current: Option<&str>) -> bool {
        let awaiting = self
            .expected
            .get(key)
            .is_some_and(|v| current.is_some_and(|c| c != v));
        if self.in_flight.contains_key(key) || awaiting {
            self.deferred.insert(key.to_owned());
            return false;
        }
        true
    }

    /// Whether a write to `key` is under way or its echo is awaited: the cache is behind
    /// what the controller last decided.
    pub fn pending(&self, key: &str) -> bool {
        self.in_flight.contains_key(key) || self.expected.contains_key(key)
    }

    /// `key` is gone: nothing is awaited for it any more.
    pub fn forget(&mut self, key: &str) {
        self.expected.remove(key);
        self.deferred.remove(key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_waits_for_the_write_and_its_echo() {
        let mut echoes = WriteEchoes::default();
        assert!(echoes.admit("ns/a", Some("1")));
        echoes.started("ns/a");
        assert!(echoes.pending("ns/a"));
        assert!(!echoes.admit("ns/a", Some("1")), "write in flight");
        assert!(
            !echoes.finished("ns/a", Some("2".into())),
            "echo not in yet"
        );
        assert!(
            !echoes.admit("ns/a", Some("1")),
            "the cache still holds the old version"
        );
        assert!(!echoes.observed("ns/a", "1"), "not the echo");
        assert!(
            echoes.observed("ns/a", "2"),
            "the echo releases the deferred work"
        );
        assert!(!echoes.observed("ns/a", "2"), "released once");
        assert!(!echoes.pending("ns/a"));
        assert!(echoes.admit("ns/a", Some("2")));
    }

    #[test]
    fn an_echo_before_the_write_is_heard_to_finish() {
        let mut echoes = WriteEchoes::default();
        echoes.started("ns/a");
        assert!(!echoes.admit("ns/a", Some("1")));
        assert!(
            !echoes.observed("ns/a", "2"),
            "the write is still in flight"
        );
        assert!(
            echoes.finished("ns/a", Some("2".into())),
            "its echo was already seen"
        );
        assert!(!echoes.pending("ns/a"));
    }

    #[test]
    fn a_cache_already_at_the_written_version_is_admitted() {
        let mut echoes = WriteEchoes::default();
        echoes.started("ns/a");
        echoes.finished("ns/a", Some("2".into()));
        assert!(echoes.admit("ns/a", Some("2")));
        assert!(
            echoes.admit("ns/a", None),
            "a deleted object is admitted to be cleaned up"
        );
    }

    #[test]
    fn failed_writes_and_relists_release_deferred_work() {
        let mut echoes = WriteEchoes::default();
        echoes.started("ns/a");
        assert!(!echoes.admit("ns/a", Some("1")));
        assert!(echoes.finished("ns/a", None), "nothing to wait for");
        echoes.started("ns/b");
        echoes.finished("ns/b", Some("5".into()));
        assert!(!echoes.admit("ns/b", Some("4")));
        echoes.started("ns/c");
        assert!(!echoes.admit("ns/c", Some("1")));
        assert_eq!(
            echoes.relisted(),
            ["ns/b"],
            "ns/c's write is still in flight"
        );
        assert!(!echoes.pending("ns/b"));
        echoes.forget("ns/c");
        assert!(
            !echoes.finished("ns/c", None),
            "forgotten, so nothing is released"
        );
    }
}
