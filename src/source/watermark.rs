//! The contiguous per-partition watermark behind at-least-once delivery.
//!
//! Events of a partition are registered in the order they are read and acknowledged
//! in whatever order their deliveries complete. An offset may be committed only when
//! it and every earlier registered offset of its partition were acknowledged;
//! [`Watermark::ack`] returns that offset when it advances. A revoked partition is
//! forgotten: late acknowledgements for it (from an older assignment generation)
//! are ignored, so a rebalance never commits work it did not see through.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// Identifies a partition: topic and partition number.
pub type PartitionKey = (Arc<str>, i32);

#[derive(Debug, Default)]
struct PartitionState {
    generation: u64,
    /// Registered offsets in increasing order, with their acknowledgement.
    pending: VecDeque<(i64, bool)>,
}

/// Ticket returned at registration; hand it back to [`Watermark::ack`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub key: PartitionKey,
    pub offset: i64,
    generation: u64,
}

/// Tracks in-flight offsets of every assigned partition.
#[derive(Debug, Default)]
pub struct Watermark {
    partitions: HashMap<PartitionKey, PartitionState>,
    next_generation: u64,
}

impl Watermark {
    /// Registers an offset just read. Offsets of a partition must increase.
    pub fn register(&mut self, key: PartitionKey, offset: i64) -> Ticket {
        let next_generation = &mut self.next_generation;
        let state = self.partitions.entry(key.clone()).or_insert_with(|| {
            *next_generation += 1;
            PartitionState {
                generation: *next_generation,
                pending: VecDeque::new(),
            }
        });
        debug_assert!(state.pending.back().is_none_or(|(last, _)| *last < offset));
        state.pending.push_back((offset, false));
        Ticket {
            key,
            offset,
            generation: state.generation,
        }
    }

    /// Acknowledges a delivered offset. Returns the highest offset whose whole prefix
    /// is now acknowledged, if that advanced; store `returned` (librdkafka commits +1).
    pub fn ack(&mut self, ticket: &Ticket) -> Option<i64> {
        let state = self.partitions.get_mut(&ticket.key)?;
        if state.generation != ticket.generation {
            return None;
        }
        let i = state
            .pending
            .binary_search_by_key(&ticket.offset, |(o, _)| *o)
            .ok()?;
        state.pending[i].1 = true;
        let mut advanced = None;
        while let Some(&(offset, true)) = state.pending.front() {
            advanced = Some(offset);
            state.pending.pop_front();
        }
        advanced
    }

    /// Forgets a partition (revoked or lost); its outstanding tickets become stale.
    pub fn revoke(&mut self, key: &PartitionKey) {
        self.partitions.remove(key);
    }

    /// Number of registered, unacknowledged-prefix offsets over all partitions.
    pub fn in_flight(&self) -> usize {
        self.partitions.values().map(|s| s.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn key(p: i32) -> PartitionKey {
        (Arc::from("t"), p)
    }

    #[test]
    fn advances_only_over_contiguous_prefix() {
        let mut w = Watermark::default();
        let t: Vec<Ticket> = [5, 6, 9, 10]
            .iter()
            .map(|&o| w.register(key(0), o))
            .collect();
        assert_eq!(w.ack(&t[1]), None);
        assert_eq!(w.ack(&t[3]), None);
        assert_eq!(w.ack(&t[0]), Some(6));
        assert_eq!(w.ack(&t[2]), Some(10));
        assert_eq!(w.in_flight(), 0);
    }

    #[test]
    fn partitions_are_independent() {
        let mut w = Watermark::default();
        let a = w.register(key(0), 1);
        let b = w.register(key(1), 1);
        assert_eq!(w.ack(&b), Some(1));
        assert_eq!(w.in_flight(), 1);
        assert_eq!(w.ack(&a), Some(1));
    }

    #[test]
    fn stale_tickets_after_revoke_are_ignored() {
        let mut w = Watermark::default();
        let old = w.register(key(0), 7);
        w.revoke(&key(0));
        let new = w.register(key(0), 7);
        assert_eq!(
            w.ack(&old),
            None,
            "an ack from the old assignment must not commit"
        );
        assert_eq!(w.ack(&new), Some(7));
    }

    proptest! {
        /// Whatever the ack order, a returned offset always has its whole prefix acked,
        /// and after all acks the last offset was returned.
        #[test]
        fn never_commits_past_a_gap(n in 1usize..60, seed in any::<u64>()) {
            let mut w = Watermark::default();
            let tickets: Vec<Ticket> = (0..n).map(|i| w.register(key(0), i as i64 * 2)).collect();
            let mut order: Vec<usize> = (0..n).collect();
            let mut s = seed;
            for i in (1..n).rev() {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                order.swap(i, (s >> 33) as usize % (i + 1));
            }
            let mut acked = vec![false; n];
            let mut last = None;
            for &i in &order {
                acked[i] = true;
                if let Some(off) = w.ack(&tickets[i]) {
                    let upto = (off / 2) as usize;
                    prop_assert!(acked[..=upto].iter().all(|&a| a));
                    prop_assert!(last.is_none_or(|l| l < off));
                    last = Some(off);
                }
            }
            prop_assert_eq!(last, Some((n as i64 - 1) * 2));
        }
    }
}
