//! The plan of `skein group reset-offsets`: for each partition, the committed offset now and
//! the one it will get. Pure, so it is tested without a broker; the command gathers the
//! offsets and prints or applies the plan.

/// Where to move a group's offsets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResetTarget {
    Earliest,
    Latest,
    Offset(i64),
    /// The first record at or after this time (Unix milliseconds).
    Datetime(i64),
    ShiftBy(i64),
}

/// What is known about one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionOffsets {
    pub topic: String,
    pub partition: i32,
    /// The group's committed offset, if it has one.
    pub current: Option<i64>,
    /// The log start offset.
    pub earliest: i64,
    /// The log end offset.
    pub latest: i64,
    /// For [`ResetTarget::Datetime`]: the offset of the first record at or after the time,
    /// `None` when every record is older.
    pub at_datetime: Option<i64>,
}

/// One line of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlanRow {
    pub topic: String,
    pub partition: i32,
    pub current: Option<i64>,
    pub new: i64,
}

/// Computes the new offset of every partition. Explicit and shifted offsets are kept within
/// the log (`earliest..=latest`), as Kafka's tool does; a shift needs a committed offset.
pub fn plan(target: ResetTarget, partitions: &[PartitionOffsets]) -> Result<Vec<PlanRow>, String> {
    partitions
        .iter()
        .map(|p| {
            let clamp = |o: i64| o.clamp(p.earliest, p.latest.max(p.earliest));
            let new = match target {
                ResetTarget::Earliest => p.earliest,
                ResetTarget::Latest => p.latest,
                ResetTarget::Offset(o) => clamp(o),
                ResetTarget::Datetime(_) => p.at_datetime.map_or(p.latest, clamp),
                ResetTarget::ShiftBy(n) => {
                    let current = p.current.ok_or_else(|| {
                        format!(
                            "cannot shift the offset of {}:{}: the group has no committed offset there",
                            p.topic, p.partition
                        )
                    })?;
                    clamp(current.saturating_add(n))
                }
            };
            Ok(PlanRow {
                topic: p.topic.clone(),
                partition: p.partition,
                current: p.current,
                new,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn part(partition: i32, current: Option<i64>, at_datetime: Option<i64>) -> PartitionOffsets {
        PartitionOffsets {
            topic: "t".to_owned(),
            partition,
            current,
            earliest: 10,
            latest: 100,
            at_datetime,
        }
    }

    fn news(target: ResetTarget, parts: &[PartitionOffsets]) -> Vec<i64> {
        plan(target, parts).unwrap().iter().map(|r| r.new).collect()
    }

    #[test]
    fn earliest_and_latest() {
        let parts = [part(0, Some(50), None), part(1, None, None)];
        assert_eq!(news(ResetTarget::Earliest, &parts), vec![10, 10]);
        assert_eq!(news(ResetTarget::Latest, &parts), vec![100, 100]);
        let rows = plan(ResetTarget::Latest, &parts).unwrap();
        assert_eq!(rows[0].current, Some(50));
        assert_eq!(rows[1].current, None);
    }

    #[test]
    fn explicit_offsets_are_clamped_to_the_log() {
        let parts = [part(0, Some(50), None)];
        assert_eq!(news(ResetTarget::Offset(42), &parts), vec![42]);
        assert_eq!(news(ResetTarget::Offset(5), &parts), vec![10]);
        assert_eq!(news(ResetTarget::Offset(500), &parts), vec![100]);
    }

    #[test]
    fn shifting_moves_from_the_committed_offset_within_the_log() {
        let parts = [part(0, Some(50), None), part(1, Some(95), None)];
        assert_eq!(news(ResetTarget::ShiftBy(-20), &parts), vec![30, 75]);
        assert_eq!(news(ResetTarget::ShiftBy(10), &parts), vec![60, 100]);
        assert_eq!(news(ResetTarget::ShiftBy(-100), &parts), vec![10, 10]);
        assert_eq!(news(ResetTarget::ShiftBy(i64::MAX), &parts), vec![100, 100]);
        let err = plan(ResetTarget::ShiftBy(1), &[part(3, None, None)]).unwrap_err();
        assert!(err.contains("t:3"), "{err}");
    }

    #[test]
    fn datetime_uses_the_lookup_or_the_end() {
        let parts = [part(0, Some(50), Some(20)), part(1, Some(50), None)];
        assert_eq!(news(ResetTarget::Datetime(0), &parts), vec![20, 100]);
    }

    #[test]
    fn an_empty_log_resets_to_its_end() {
        let empty = PartitionOffsets {
            earliest: 7,
            latest: 7,
            ..part(0, Some(3), None)
        };
        assert_eq!(
            news(ResetTarget::Offset(0), std::slice::from_ref(&empty)),
            vec![7]
        );
        assert_eq!(news(ResetTarget::ShiftBy(-1), &[empty]), vec![7]);
    }
}
