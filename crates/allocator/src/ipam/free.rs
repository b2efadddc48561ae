//! The free offsets of one address range, kept as disjoint, non-adjacent
//! inclusive intervals. Taking or giving back one offset and finding the
//! lowest free one are O(log k) in the number of intervals, which is at most
//! one more than the number of addresses in use, whatever the range's size:
//! a `/64` or `::/0` costs one interval until addresses are handed out.

use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FreeSpace {
    /// start -> end, both inclusive; no two intervals touch or overlap.
    intervals: BTreeMap<u128, u128>,
}

impl FreeSpace {
    /// Every offset in `0..=max_offset` is free.
    pub(crate) fn new(max_offset: u128) -> Self {
        Self {
            intervals: BTreeMap::from([(0, max_offset)]),
        }
    }

    /// The lowest free offset.
    pub(crate) fn first(&self) -> Option<u128> {
        self.intervals.first_key_value().map(|(start, _)| *start)
    }

    /// The interval holding `offset`, if it is free.
    fn interval_of(&self, offset: u128) -> Option<(u128, u128)> {
        self.intervals
            .range(..=offset)
            .next_back()
            .filter(|(_, end)| **end >= offset)
            .map(|(start, end)| (*start, *end))
    }

    pub(crate) fn is_free(&self, offset: u128) -> bool {
        self.interval_of(offset).is_some()
    }

    /// Marks `offset` used; false if it was not free.
    pub(crate) fn take(&mut self, offset: u128) -> bool {
        let Some((start, end)) = self.interval_of(offset) else {
            return false;
        };
        self.intervals.remove(&start);
        if start < offset {
            self.intervals.insert(start, offset - 1);
        }
        if offset < end {
            self.intervals.insert(offset + 1, end);
        }
        true
    }

    /// Marks every offset in `first..=last` used (whether free or not).
    pub(crate) fn take_span(&mut self, first: u128, last: u128) {
        let overlapping: Vec<(u128, u128)> = self
            .intervals
            .range(..=last)
            .rev()
            .take_while(|(_, end)| **end >= first)
            .map(|(s, e)| (*s, *e))
            .collect();
        for (start, end) in overlapping {
            self.intervals.remove(&start);
            if start < first {
                self.intervals.insert(start, first - 1);
            }
            if end > last {
                self.intervals.insert(last + 1, end);
            }
        }
    }

    /// Marks `offset` free again, merging with its neighbours; false if it
    /// was already free.
    pub(crate) fn give(&mut self, offset: u128) -> bool {
        if self.is_free(offset) {
            return false;
        }
        let mut start = offset;
        let mut end = offset;
        if let Some(before) = offset.checked_sub(1)
            && let Some((s, e)) = self.intervals.range(..=before).next_back()
            && *e == before
        {
            start = *s;
        }
        if let Some(after) = offset.checked_add(1)
            && let Some(e) = self.intervals.remove(&after)
        {
            end = e;
        }
        self.intervals.insert(start, end);
        true
    }

    /// Number of free offsets, saturating (only `::/0` with nothing used
    /// would not fit, and its mapped block is never free).
    pub(crate) fn count(&self) -> u128 {
        self.intervals
            .iter()
            .fold(0u128, |n, (s, e)| n.saturating_add(e - s).saturating_add(1))
    }

    pub(crate) fn intervals(&self) -> impl Iterator<Item = (u128, u128)> + '_ {
        self.intervals.iter().map(|(s, e)| (*s, *e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn take_and_give_keep_intervals_canonical() {
        let mut f = FreeSpace::new(9);
        assert_eq!(f.first(), Some(0));
        assert!(f.take(0));
        assert!(!f.take(0));
        assert_eq!(f.first(), Some(1));
        assert!(f.take(5));
        assert_eq!(f.intervals().collect::<Vec<_>>(), vec![(1, 4), (6, 9)]);
        assert!(f.give(0));
        assert!(!f.give(0));
        assert!(f.give(5));
        assert_eq!(f.intervals().collect::<Vec<_>>(), vec![(0, 9)]);
        for o in 0..=9 {
            assert!(f.take(o));
        }
        assert_eq!(f.first(), None);
        assert_eq!(f.count(), 0);
        assert!(f.give(9));
        assert!(f.give(7));
        assert!(f.give(8));
        assert_eq!(f.intervals().collect::<Vec<_>>(), vec![(7, 9)]);
        assert_eq!(f.count(), 3);
    }

    #[test]
    fn edges_of_u128() {
        let mut f = FreeSpace::new(u128::MAX);
        assert!(f.take(u128::MAX));
        assert!(f.take(0));
        assert_eq!(f.first(), Some(1));
        assert!(f.give(u128::MAX));
        assert!(f.give(0));
        assert_eq!(f.intervals().collect::<Vec<_>>(), vec![(0, u128::MAX)]);
        assert_eq!(f.count(), u128::MAX);
    }

    #[test]
    fn take_span_carves() {
        let mut f = FreeSpace::new(100);
        f.take(50);
        f.take_span(10, 60);
        assert_eq!(f.intervals().collect::<Vec<_>>(), vec![(0, 9), (61, 100)]);
        f.take_span(0, 100);
        assert_eq!(f.first(), None);
    }
}
