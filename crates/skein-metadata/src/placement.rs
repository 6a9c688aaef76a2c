//! Replica placement for new partitions, Kafka's rack-aware striping.
//!
//! The candidate brokers are arranged in a rack-alternating list (one broker of each rack in
//! turn, racks and brokers in id order; a broker without a rack forms a rack of its own). Partition
//! `p`'s first replica (its preferred leader) is `list[(p + start) % n]`, so leaders of
//! consecutive partitions stripe over every broker and stay balanced; the other replicas
//! follow at a shift that grows every `n` partitions, skipping brokers whose rack already holds a
//! replica until every rack has one. `start` and the shift come from a seed the caller draws,
//! so two topics do not pile their leaders on the same broker, and a test replays exactly.

use std::collections::{BTreeMap, BTreeSet};

/// A broker that can receive replicas, with its rack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub id: i32,
    pub rack: Option<String>,
}

/// Brokers ordered so that consecutive entries alternate racks.
pub fn rack_alternating(candidates: &[Candidate]) -> Vec<Candidate> {
    let mut by_rack: BTreeMap<Option<&str>, Vec<&Candidate>> = BTreeMap::new();
    for c in candidates {
        by_rack.entry(c.rack.as_deref()).or_default().push(c);
    }
    for list in by_rack.values_mut() {
        list.sort_by_key(|c| c.id);
        list.dedup_by_key(|c| c.id);
    }
    let mut out = Vec::with_capacity(candidates.len());
    let longest = by_rack.values().map(Vec::len).max().unwrap_or(0);
    for i in 0..longest {
        for list in by_rack.values() {
            if let Some(c) = list.get(i) {
                out.push((*c).clone());
            }
        }
    }
    out
}

/// Where the stripe starts: the first replica's index in the list, and the follower shift.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    pub start: usize,
    pub shift: usize,
}

impl Stripe {
    /// A stripe drawn from `seed` for `n` brokers.
    pub fn from_seed(seed: u64, n: usize) -> Stripe {
        let n = n.max(1) as u64;
        Stripe {
            start: (seed % n) as usize,
            shift: ((seed / n) % n) as usize,
        }
    }
}

/// Replica lists for partitions `first..first + count` over `arranged` (from
/// [`rack_alternating`]) with `rf` replicas each. `None` when `rf` is 0 or exceeds the brokers.
pub fn place(
    arranged: &[Candidate],
    first: usize,
    count: usize,
    rf: usize,
    stripe: Stripe,
) -> Option<Vec<Vec<i32>>> {
    let n = arranged.len();
    if rf == 0 || rf > n {
        return None;
    }
    let num_racks = arranged
        .iter()
        .map(|c| c.rack.as_deref())
        .collect::<BTreeSet<_>>()
        .len();
    let mut out = Vec::with_capacity(count);
    // The shift grows once per full round of the list, as Kafka's does.
    let mut shift = stripe.shift + first / n;
    for p in first..first + count {
        if p > first && p % n == 0 {
            shift += 1;
        }
        let leader_index = (p + stripe.start) % n;
        let leader = &arranged[leader_index];
        let mut replicas = vec![leader.id];
        let mut racks: BTreeSet<Option<&str>> = BTreeSet::from([leader.rack.as_deref()]);
        let mut k = 0usize;
        while replicas.len() < rf {
            // n >= 2 here: rf >= 2 and rf <= n.
            let offset = 1 + (shift * num_racks + k) % (n - 1);
            let c = &arranged[(leader_index + offset) % n];
            let rack_ok = !racks.contains(&c.rack.as_deref()) || racks.len() == num_racks;
            let broker_ok = !replicas.contains(&c.id);
            if (rack_ok || k >= 2 * n) && broker_ok {
                replicas.push(c.id);
                racks.insert(c.rack.as_deref());
            }
            k += 1;
            if k > 4 * n {
                return None; // Cannot happen with distinct ids; never loop forever.
            }
        }
        out.push(replicas);
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: i32, rack: Option<&str>) -> Candidate {
        Candidate {
            id,
            rack: rack.map(String::from),
        }
    }

    #[test]
    fn alternates_racks() {
        let list = rack_alternating(&[
            c(1, Some("a")),
            c(2, Some("a")),
            c(3, Some("b")),
            c(4, Some("b")),
            c(5, Some("c")),
        ]);
        let ids: Vec<i32> = list.iter().map(|c| c.id).collect();
        assert_eq!(ids, vec![1, 3, 5, 2, 4]);
    }

    #[test]
    fn spreads_over_racks_and_balances_leaders() {
        let arranged = rack_alternating(&[
            c(1, Some("a")),
            c(2, Some("a")),
            c(3, Some("b")),
            c(4, Some("b")),
            c(5, Some("c")),
            c(6, Some("c")),
        ]);
        for seed in 0..50 {
            let placed = place(&arranged, 0, 12, 3, Stripe::from_seed(seed, 6)).unwrap();
            let mut leaders = BTreeMap::new();
            for replicas in &placed {
                let racks: BTreeSet<_> = replicas
                    .iter()
                    .map(|id| arranged.iter().find(|c| c.id == *id).unwrap().rack.clone())
                    .collect();
                assert_eq!(racks.len(), 3, "seed {seed}: {replicas:?}");
                *leaders.entry(replicas[0]).or_insert(0) += 1;
            }
            assert!(
                leaders.values().all(|&n| n == 2),
                "seed {seed}: {leaders:?}"
            );
        }
    }

    #[test]
    fn refuses_impossible_factors() {
        let arranged = rack_alternating(&[c(1, None), c(2, None)]);
        assert!(place(&arranged, 0, 1, 3, Stripe::from_seed(1, 2)).is_none());
        assert!(place(&arranged, 0, 1, 0, Stripe::from_seed(1, 2)).is_none());
        let one = place(&arranged, 0, 4, 2, Stripe::from_seed(7, 2)).unwrap();
        assert!(one.iter().all(|r| r.len() == 2 && r[0] != r[1]));
    }
}
