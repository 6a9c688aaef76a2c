//! Per-partition log configuration (Kafka's topic-level `segment.*` / `retention.*` settings).

/// Settings of one partition log. Field names follow Kafka's topic configs, units last.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// `segment.bytes`: roll to a new segment when an append would make the active one larger.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first batch is older than this.
    pub segment_ms: i64,
    /// `retention.ms`: delete segments whose newest timestamp is older than this; -1 = forever.
    pub retention_ms: i64,
    /// `retention.bytes`: delete oldest segments while the log is larger than this; -1 = no limit.
    pub retention_bytes: i64,
    /// Whether `cleanup.policy` includes `delete`: only then do `retention_ms` and
    /// `retention_bytes` delete old segments. A `compact`-only log (such as
    /// `__consumer_offsets`) keeps every segment, as a record in an old segment may be the
    /// only copy of a live key; compaction, not retention, is what shrinks such a log.
    pub delete_retention: bool,
    /// `index.interval.bytes`: log bytes between two sparse index entries.
    pub index_interval_bytes: u32,
    /// `segment.index.bytes`: the largest an index file may grow before the segment rolls.
    pub segment_index_bytes: u32,
    /// `file.delete.delay.ms`: accepted for compatibility. Deleted segments are removed at once,
    /// because reads copy bytes out under the partition lock and never hold a segment open.
    pub file_delete_delay_ms: i64,
}

impl Default for LogConfig {
    /// Kafka's defaults.
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1024 * 1024 * 1024,
            segment_ms: 7 * 24 * 60 * 60 * 1000,
            retention_ms: 168 * 60 * 60 * 1000,
            retention_bytes: -1,
            delete_retention: true,
            index_interval_bytes: 4096,
            segment_index_bytes: 10 * 1024 * 1024,
            file_delete_delay_ms: 60_000,
        }
    }
}
