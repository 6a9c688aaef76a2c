//! KIP-848 server-side assignors: `uniform` (balanced and sticky) and `range`.
//!
//! Both are pure functions from (members' subscriptions, topic partition counts, previous
//! target) to a new target assignment. Every partition of a subscribed topic is assigned to
//! exactly one subscribed member.

use std::collections::{BTreeMap, BTreeSet};

use crate::config::Assignor;
use crate::record::TopicId;

/// Partitions per topic.
pub(crate) type Assignment = BTreeMap<TopicId, BTreeSet<i32>>;

type Tp = (TopicId, i32);

/// Computes the target assignment.
pub(crate) fn assign(
    assignor: Assignor,
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut out = match assignor {
        Assignor::Uniform => uniform(subscriptions, partition_counts, previous),
        Assignor::Range => range(subscriptions, partition_counts),
    };
    for m in subscriptions.keys() {
        out.entry(m.clone()).or_default();
    }
    out
}

fn range(
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = BTreeMap::new();
    for (topic, &count) in partition_counts {
        let subscribers: Vec<&String> = subscriptions
            .iter()
            .filter(|(_, topics)| topics.contains(topic))
            .map(|(m, _)| m)
            .collect();
        if subscribers.is_empty() || count <= 0 {
            continue;
        }
        let n = subscribers.len() as i32;
        let base = count / n;
        let extra = count % n;
        let mut start = 0;
        for (i, m) in subscribers.into_iter().enumerate() {
            let len = base + i32::from((i as i32) < extra);
            if len > 0 {
                out.entry(m.clone())
                    .or_default()
                    .entry(*topic)
                    .or_default()
                    .extend(start..start + len);
            }
            start += len;
        }
    }
    out
}

fn uniform(
    subscriptions: &BTreeMap<String, BTreeSet<TopicId>>,
    partition_counts: &BTreeMap<TopicId, i32>,
    previous: &BTreeMap<String, Assignment>,
) -> BTreeMap<String, Assignment> {
    let mut owner: BTreeMap<Tp, String> = BTreeMap::new();
    let mut owned: BTreeMap<String, BTreeSet<Tp>> = subscriptions
        .keys()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();

    // Keep what each member had, where still valid.
    for (member, assignment) in previous {
        let Some(topics) = subscriptions.get(member) else {
            continue;
        };
        for (topic, partitions) in assignment {
            let Some(&count) = partition_counts.get(topic) else {
                continue;
            };
            if !topics.contains(topic) {
                continue;
            }
            for &p in partitions {
                if p >= 0 && p < count && !owner.contains_key(&(*topic, p)) {
                    owner.insert((*topic, p), member.clone());
                    owned
                        .get_mut(member)
                        .expect("subscribed")
                        .insert((*topic, p));
                }
            }
        }
    }

    let all: Vec<Tp> = partition_counts
        .iter()
        .filter(|(t, _)| subscriptions.values().any(|s| s.contains(*t)))
        .flat_map(|(t, &c)| (0..c.max(0)).map(move |p| (*t, p)))
        .collect();

    let homogeneous = {
        let mut it = subscriptions.values();
        match it.next() {
            Some(first) => it.all(|s| s == first),
            None => true,
        }
    };

    if homogeneous && !owned.is_empty() {
        let n = owned.len();
        let base = all.len() / n;
        let extra = all.len() % n;
        // Members keeping the most get the larger quotas: fewest moves.
        let mut order: Vec<String> = owned.keys().cloned().collect();
        order.sort_by(|a, b| owned[b].len().cmp(&owned[a].len()).then(a.cmp(b)));
        let mut quota: BTreeMap<String, usize> = BTreeMap::new();
        for (i, m) in order.iter().enumerate() {
            quota.insert(m.clone(), base + usize::from(i < extra));
        }
        for (m, set) in owned.iter_mut() {
            while set.len() > quota[m] {
                let last = *set.iter().next_back().expect("non-empty");
                set.remove(&last);
                owner.remove(&last);
            }
        }
        let free: Vec<Tp> = all
            .iter()
            .filter(|tp| !owner.contains_key(tp))
            .copied()
            .collect();
        let mut unassigned = free.into_iter();
        for m in &order {
            let set = owned.get_mut(m).expect("member");
            while set.len() < quota[m] {
                let Some(tp) = unassigned.next() else { break };
                set.insert(tp);
                owner.insert(tp, m.clone());
            }
        }
    } else {
        // Heterogeneous subscriptions: greedy to the least loaded eligible member, then
        // move partitions while that reduces the imbalance.
        for tp in &all {
            if owner.contains_key(tp) {
                continue;
            }
            let target = subscriptions
                .iter()
                .filter(|(_, s)| s.contains(&tp.0))
                .map(|(m, _)| m)
                .min_by(|a, b| owned[*a].len().cmp(&owned[*b].len()).then(a.cmp(b)));
            if let Some(m) = target {
                owned.get_mut(m).expect("member").insert(*tp);
                owner.insert(*tp, m.clone());
            }
        }
        let max_moves = all.len().saturating_mul(subscriptions.len().max(1));
        let mut moves = 0;
        loop {
            let mut moved = false;
            for tp in &all {
                let Some(from) = owner.get(tp).cloned() else {
                    continue;
                };
                let from_len = owned[&from].len();
                let to = subscriptions
                    .iter()
                    .filter(|(m, s)| s.contains(&tp.0) && owned[*m].len() + 1 < from_len)
                    .map(|(m, _)| m)
                    .min_by(|a, b| owned[*a].len().cmp(&owned[*b].len()).then(a.cmp(b)))
                    .cloned();
                if let Some(to) = to {
                    owned.get_mut(&from).expect("member").remove(tp);
                    owned.get_mut(&to).expect("member").insert(*tp);
                    owner.insert(*tp, to);
                    moved = true;
                    moves += 1;
                }
            }
            if !moved || moves >= max_moves {
                break;
            }
        }
    }

    owned
        .into_iter()
        .map(|(m, set)| {
            let mut a = Assignment::new();
            for (t, p) in set {
                a.entry(t).or_default().insert(p);
            }
            (m, a)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tid(b: u8) -> TopicId {
        [b; 16]
    }

    fn subs(members: &[(&str, &[u8])]) -> BTreeMap<String, BTreeSet<TopicId>> {
        members
            .iter()
            .map(|(m, ts)| (m.to_string(), ts.iter().map(|b| tid(*b)).collect()))
            .collect()
    }

    fn count(a: &Assignment) -> usize {
        a.values().map(BTreeSet::len).sum()
    }

    fn check_complete(
        out: &BTreeMap<String, Assignment>,
        s: &BTreeMap<String, BTreeSet<TopicId>>,
        counts: &BTreeMap<TopicId, i32>,
    ) {
        let mut seen = BTreeSet::new();
        for (m, a) in out {
            for (t, ps) in a {
                assert!(s[m].contains(t), "{m} got unsubscribed topic");
                for p in ps {
                    assert!(seen.insert((*t, *p)), "partition assigned twice");
                }
            }
        }
        let expected: usize = counts
            .iter()
            .filter(|(t, _)| s.values().any(|x| x.contains(*t)))
            .map(|(_, c)| *c as usize)
            .sum();
        assert_eq!(seen.len(), expected);
    }

    #[test]
    fn uniform_balanced_and_sticky() {
        let s = subs(&[("a", &[1, 2]), ("b", &[1, 2]), ("c", &[1, 2])]);
        let counts: BTreeMap<TopicId, i32> = [(tid(1), 4), (tid(2), 3)].into();
        let first = assign(Assignor::Uniform, &s, &counts, &BTreeMap::new());
        check_complete(&first, &s, &counts);
        for a in first.values() {
            assert!(count(a) == 2 || count(a) == 3);
        }
        // Remove c: a and b keep everything they had.
        let s2 = subs(&[("a", &[1, 2]), ("b", &[1, 2])]);
        let second = assign(Assignor::Uniform, &s2, &counts, &first);
        check_complete(&second, &s2, &counts);
        for m in ["a", "b"] {
            for (t, ps) in &first[m] {
                for p in ps {
                    assert!(second[m][t].contains(p));
                }
            }
        }
    }

    #[test]
    fn uniform_heterogeneous() {
        let s = subs(&[("a", &[1]), ("b", &[1, 2]), ("c", &[2])]);
        let counts: BTreeMap<TopicId, i32> = [(tid(1), 6), (tid(2), 6)].into();
        let out = assign(Assignor::Uniform, &s, &counts, &BTreeMap::new());
        check_complete(&out, &s, &counts);
        for a in out.values() {
            assert_eq!(count(a), 4);
        }
    }

    #[test]
    fn range_contiguous() {
        let s = subs(&[("a", &[1]), ("b", &[1])]);
        let counts: BTreeMap<TopicId, i32> = [(tid(1), 5)].into();
        let out = assign(Assignor::Range, &s, &counts, &BTreeMap::new());
        check_complete(&out, &s, &counts);
        assert_eq!(out["a"][&tid(1)], [0, 1, 2].into());
        assert_eq!(out["b"][&tid(1)], [3, 4].into());
    }
}
