//! A fixed-capacity ring: the dashboard keeps "the last N" of several things (recent
//! interventions, a customer's recent scores) and must never grow past N, whatever
//! the input rate.

use std::collections::VecDeque;

/// The newest `capacity` items pushed; pushing into a full ring drops the oldest.
#[derive(Debug, Clone, PartialEq)]
pub struct Ring<T> {
    items: VecDeque<T>,
    capacity: usize,
}

impl<T> Ring<T> {
    /// An empty ring holding at most `capacity` items (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        // Reserve lazily: most customers' rings stay far below their capacity.
        Ring { items: VecDeque::new(), capacity }
    }

    /// Adds `item` as the newest; returns the oldest item when it had to make room.
    pub fn push(&mut self, item: T) -> Option<T> {
        let dropped = if self.items.len() == self.capacity { self.items.pop_front() } else { None };
        self.items.push_back(item);
        dropped
    }

    /// Number of items held.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Whether the ring is empty.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The most items the ring holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Items from the newest to the oldest.
    pub fn newest_first(&self) -> impl Iterator<Item = &T> {
        self.items.iter().rev()
    }

    /// Whether any item satisfies `pred`.
    pub fn any(&self, pred: impl FnMut(&T) -> bool) -> bool {
        self.items.iter().any(pred)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_never_exceeds_its_capacity_and_drops_the_oldest() {
        let mut ring = Ring::new(3);
        assert!(ring.is_empty());
        assert_eq!(ring.push(1), None);
        assert_eq!(ring.push(2), None);
        assert_eq!(ring.push(3), None);
        assert_eq!(ring.push(4), Some(1));
        assert_eq!(ring.push(5), Some(2));
        assert_eq!(ring.len(), 3);
        assert_eq!(ring.newest_first().copied().collect::<Vec<_>>(), [5, 4, 3]);
        for i in 0..1000 {
            ring.push(i);
        }
        assert_eq!(ring.len(), ring.capacity());
        assert_eq!(ring.newest_first().next(), Some(&999));
    }

    #[test]
    fn zero_capacity_means_one() {
        let mut ring = Ring::new(0);
        ring.push("a");
        assert_eq!(ring.push("b"), Some("a"));
        assert_eq!(ring.capacity(), 1);
    }
}
