//! A controller's work queue: first in, first out, and an item already waiting is not
//! added again, so a burst of events for one object costs one pass.

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug, Clone)]
pub struct WorkQueue<W> {
    order: VecDeque<W>,
    waiting: HashSet<W>,
}

impl<W> Default for WorkQueue<W> {
    fn default() -> Self {
        Self {
            order: VecDeque::new(),
            waiting: HashSet::new(),
        }
    }
}

impl<W: Clone + Eq + Hash> WorkQueue<W> {
    /// Adds `work` at the back unless it is already waiting; says whether it was added.
    pub fn push(&mut self, work: W) -> bool {
        let added = self.waiting.insert(work.clone());
        if added {
            self.order.push_back(work);
        }
        added
    }

    /// The oldest item; pushing it again from now on queues it anew.
    pub fn pop(&mut self) -> Option<W> {
        let work = self.order.pop_front()?;
        self.waiting.remove(&work);
        Some(work)
    }

    /// Keeps only the waiting items `keep` accepts, in their order.
    pub fn retain(&mut self, mut keep: impl FnMut(&W) -> bool) {
        self.order.retain(|work| keep(work));
        self.waiting.retain(|work| keep(work));
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn drain(queue: &mut WorkQueue<&'static str>) -> Vec<&'static str> {
        std::iter::from_fn(|| queue.pop()).collect()
    }

    #[test]
    fn items_come_out_in_order_once_each() {
        let mut queue = WorkQueue::default();
        assert!(queue.push("a"));
        assert!(queue.push("b"));
        assert!(!queue.push("a"), "already waiting");
        assert_eq!(queue.len(), 2);
        assert_eq!(queue.pop(), Some("a"));
        assert!(queue.push("a"), "taken out, so queued anew");
        assert_eq!(drain(&mut queue), ["b", "a"]);
        assert!(queue.is_empty());
    }

    #[test]
    fn retain_drops_items_for_good() {
        let mut queue = WorkQueue::default();
        for item in ["config", "svc-a", "svc-b", "pools"] {
            queue.push(item);
        }
        queue.retain(|w| !w.starts_with("svc-"));
        assert!(queue.push("svc-a"), "a dropped item can be queued again");
        assert_eq!(drain(&mut queue), ["config", "pools", "svc-a"]);
    }
}
