//! The known, justified differences between Skein and Apache Kafka: scenario name -> reason.
//! A scenario whose observations differ must be listed here, and a listed scenario must
//! still differ, so the table (and docs/compatibility.md, generated from the results) stays
//! true.

pub const KNOWN_DIFFERENCES: &[(&str, &str)] = &[
    (
        "api_versions.advertised",
        "Skein serves a subset of Kafka's APIs: no delegation tokens, share groups, client \
         telemetry or feature updates, and transactions only in version 1 \
         (EndTxn up to v4: no KIP-890 part 2) \
         (docs/compatibility.md lists every API either side advertises). It still \
         advertises Produce from v0 (librdkafka turns compression off when Produce starts \
         above v0) and other old versions Kafka 4 dropped (KIP-896), and its newest versions \
         stop short of Kafka 4.1's for Produce (11 vs 13), Fetch, Metadata, DescribeGroups, \
         DescribeCluster, ConsumerGroupDescribe and AlterPartitionReassignments (one each; \
         v1 of the last, KIP-860's allowReplicationFactorChange, is not in Skein's specs).",
    ),
    (
        "admin.describe_configs_broker",
        "Skein cannot change broker settings at runtime, so it reports them all read-only \
         (Kafka's message.max.bytes is dynamically updatable); and it describes the settings \
         it has, not Kafka's aliases such as log.retention.hours (Skein has log.retention.ms).",
    ),
];

/// The reason a scenario is allowed to differ, if it is.
pub fn reason(scenario: &str) -> Option<&'static str> {
    KNOWN_DIFFERENCES
        .iter()
        .find(|(name, _)| *name == scenario)
        .map(|(_, r)| *r)
}
