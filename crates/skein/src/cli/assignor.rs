//! The classic "consumer" protocol's client side: the subscription a member sends in
//! JoinGroup, the assignment it gets back from SyncGroup, and the "range" assignor the group
//! leader runs, computed as Kafka's `RangeAssignor` does.

use std::collections::BTreeMap;

use anyhow::Result;
use skein_protocol::messages::consumer_protocol_assignment::{
    ConsumerProtocolAssignment, TopicPartition as AssignedTopic,
};
use skein_protocol::messages::consumer_protocol_subscription::ConsumerProtocolSubscription;

use super::client::{decode_versioned, encode_versioned};

/// The protocol type of consumer groups.
pub const CONSUMER_PROTOCOL_TYPE: &str = "consumer";
/// The assignor this client offers.
pub const RANGE: &str = "range";
/// The newest version of the embedded consumer-protocol messages this client knows.
const EMBEDDED_VERSION: i16 = 3;

/// Topics and their partitions, sorted.
pub type Assignment = BTreeMap<String, Vec<i32>>;

/// The JoinGroup metadata of a member subscribed to `topics`.
pub fn encode_subscription(topics: &[String]) -> Result<Vec<u8>> {
    let subscription = ConsumerProtocolSubscription {
        topics: topics.to_vec(),
        user_data: None,
        owned_partitions: Vec::new(),
        generation_id: -1,
        rack_id: None,
        ..Default::default()
    };
    encode_versioned(&subscription, EMBEDDED_VERSION)
}

/// The topics a member's JoinGroup metadata subscribes to.
pub fn decode_subscription(metadata: &[u8]) -> Result<Vec<String>> {
    let (_, s): (_, ConsumerProtocolSubscription) = decode_versioned(metadata, EMBEDDED_VERSION)?;
    Ok(s.topics)
}

/// SyncGroup's assignment bytes for `assignment`.
pub fn encode_assignment(assignment: &Assignment) -> Result<Vec<u8>> {
    let value = ConsumerProtocolAssignment {
        assigned_partitions: assignment
            .iter()
            .map(|(topic, partitions)| AssignedTopic {
                topic: topic.clone(),
                partitions: partitions.clone(),
                ..Default::default()
            })
            .collect(),
        user_data: None,
        ..Default::default()
    };
    encode_versioned(&value, EMBEDDED_VERSION)
}

/// The partitions in SyncGroup's (or DescribeGroups') assignment bytes; empty bytes are an
/// empty assignment.
pub fn decode_assignment(bytes: &[u8]) -> Result<Assignment> {
    if bytes.is_empty() {
        return Ok(Assignment::new());
    }
    let (_, a): (_, ConsumerProtocolAssignment) = decode_versioned(bytes, EMBEDDED_VERSION)?;
    let mut out = Assignment::new();
    for t in a.assigned_partitions {
        let partitions = out.entry(t.topic).or_default();
        partitions.extend(t.partitions);
        partitions.sort_unstable();
        partitions.dedup();
    }
    Ok(out)
}

/// A member as the assignor sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberSubscription {
    pub member_id: String,
    pub group_instance_id: Option<String>,
    pub topics: Vec<String>,
}

/// Kafka's `RangeAssignor`: for each topic, the subscribed members in order (static members
/// by instance id first, then the rest by member id) each take a contiguous range of
/// `partitions / members` partitions, the first `partitions % members` one more. Topics
/// missing from `partition_counts` are skipped. Every member gets an entry.
pub fn range_assign(
    members: &[MemberSubscription],
    partition_counts: &BTreeMap<String, i32>,
) -> BTreeMap<String, Assignment> {
    let mut out: BTreeMap<String, Assignment> = members
        .iter()
        .map(|m| (m.member_id.clone(), Assignment::new()))
        .collect();
    let mut sorted: Vec<&MemberSubscription> = members.iter().collect();
    sorted.sort_by(|a, b| match (&a.group_instance_id, &b.group_instance_id) {
        (Some(x), Some(y)) => x.cmp(y).then_with(|| a.member_id.cmp(&b.member_id)),
        (Some(_), None) => std::cmp::Ordering::Less,
        (None, Some(_)) => std::cmp::Ordering::Greater,
        (None, None) => a.member_id.cmp(&b.member_id),
    });
    for (topic, count) in partition_counts {
        let subscribed: Vec<&&MemberSubscription> = sorted
            .iter()
            .filter(|m| m.topics.iter().any(|t| t == topic))
            .collect();
        if subscribed.is_empty() || *count <= 0 {
            continue;
        }
        let n = subscribed.len() as i32;
        let per_member = count / n;
        let with_extra = count % n;
        for (i, member) in subscribed.iter().enumerate() {
            let i = i as i32;
            let start = per_member * i + i.min(with_extra);
            let len = per_member + i32::from(i < with_extra);
            if len > 0 {
                out.get_mut(&member.member_id)
                    .expect("every member has an entry")
                    .insert(topic.clone(), (start..start + len).collect());
            }
        }
    }
    out
}

/// `orders:0,1,2 payments:0` — an assignment on one line.
pub fn assignment_text(assignment: &Assignment) -> String {
    if assignment.is_empty() {
        return "-".to_owned();
    }
    assignment
        .iter()
        .map(|(topic, parts)| {
            let list: Vec<String> = parts.iter().map(i32::to_string).collect();
            format!("{topic}:{}", list.join(","))
        })
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instance: Option<&str>, topics: &[&str]) -> MemberSubscription {
        MemberSubscription {
            member_id: id.to_owned(),
            group_instance_id: instance.map(str::to_owned),
            topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn range_gives_the_first_members_the_extra_partitions() {
        let members = [
            member("c", None, &["t1", "t2"]),
            member("a", None, &["t1"]),
            member("b", None, &["t1", "t2"]),
        ];
        let counts = BTreeMap::from([("t1".to_owned(), 7), ("t2".to_owned(), 1)]);
        let out = range_assign(&members, &counts);
        assert_eq!(out["a"], BTreeMap::from([("t1".to_owned(), vec![0, 1, 2])]));
        assert_eq!(
            out["b"],
            BTreeMap::from([("t1".to_owned(), vec![3, 4]), ("t2".to_owned(), vec![0])])
        );
        assert_eq!(out["c"], BTreeMap::from([("t1".to_owned(), vec![5, 6])]));
    }

    #[test]
    fn static_members_sort_first_and_spare_members_get_nothing() {
        let members = [
            member("a", None, &["t"]),
            member("z", Some("instance-1"), &["t"]),
            member("m", None, &["t"]),
        ];
        let counts = BTreeMap::from([("t".to_owned(), 2)]);
        let out = range_assign(&members, &counts);
        assert_eq!(out["z"], BTreeMap::from([("t".to_owned(), vec![0])]));
        assert_eq!(out["a"], BTreeMap::from([("t".to_owned(), vec![1])]));
        assert!(out["m"].is_empty());
    }

    #[test]
    fn subscriptions_and_assignments_round_trip() {
        let bytes = encode_subscription(&["a".to_owned(), "bb".to_owned()]).unwrap();
        assert_eq!(&bytes[..2], &[0, 3]);
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["a", "bb"]);
        let assignment = BTreeMap::from([("t".to_owned(), vec![0, 2])]);
        let bytes = encode_assignment(&assignment).unwrap();
        assert_eq!(decode_assignment(&bytes).unwrap(), assignment);
        assert!(decode_assignment(&[]).unwrap().is_empty());
        assert_eq!(assignment_text(&assignment), "t:0,2");
    }

    #[test]
    fn a_version_0_subscription_from_an_old_client_is_read() {
        // version 0: topics ["x"], then null user data.
        let bytes = [0, 0, 0, 0, 0, 1, 0, 1, b'x', 0xff, 0xff, 0xff, 0xff];
        assert_eq!(decode_subscription(&bytes).unwrap(), vec!["x"]);
    }
}
