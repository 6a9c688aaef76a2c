//! The log's error type.

use std::io;
use std::path::PathBuf;

/// Everything that can go wrong in a partition log.
///
/// Kafka error codes are decided by the broker; this enum only says what happened here.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// An I/O operation failed without a more specific context.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// An I/O operation on a named file failed.
    #[error("I/O error on {path}: {source}")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The requested offset is outside `[log_start, log_end]`.
    #[error("offset {requested} is out of range [{log_start}, {log_end}]")]
    OffsetOutOfRange {
        requested: i64,
        log_start: i64,
        log_end: i64,
    },

    /// Data on disk is damaged in a place where the log cannot repair it by truncation
    /// (below the recovery point, or in the middle of a read).
    #[error("corrupt log file {path} at byte {position}: {reason}")]
    Corrupt {
        path: PathBuf,
        position: u64,
        reason: String,
    },

    /// The bytes given to `append` are not a well-formed sequence of v2 record batches.
    #[error("invalid record batch at byte {position} of the append: {reason}")]
    InvalidBatch { position: usize, reason: String },

    /// A checkpoint file exists but cannot be parsed.
    #[error("invalid checkpoint file {path}: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
}

/// Attaches a path to an I/O error.
pub(crate) trait IoContext<T> {
    fn at(self, path: &std::path::Path) -> Result<T, LogError>;
}

impl<T> IoContext<T> for Result<T, io::Error> {
    fn at(self, path: &std::path::Path) -> Result<T, LogError> {
        self.map_err(|source| LogError::File {
            path: path.to_path_buf(),
            source,
        })
    }
}
