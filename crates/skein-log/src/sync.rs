//! `SyncHandle`: fsync the active segment outside the partition lock (group commit).

use std::fs::File;
use std::io;
use std::path::PathBuf;
use std::sync::Arc;

/// A cloneable handle on the active segment's log file, taken under the partition lock and
/// used after releasing it.
///
/// `sync` fdatasyncs the file and returns the log end offset at the time the handle was taken:
/// every offset below it is durable afterwards. This holds even if the segment rolled in the
/// meantime, because rolling fsyncs the old segment before the new one takes writes. Report the
/// result back with `Log::mark_durable` so the recovery point advances.
#[derive(Debug, Clone)]
pub struct SyncHandle {
    pub(crate) file: Arc<File>,
    pub(crate) path: PathBuf,
    pub(crate) end_offset: i64,
}

impl SyncHandle {
    /// fdatasyncs the segment; returns the offset durable up to (exclusive).
    pub fn sync(&self) -> io::Result<i64> {
        self.file.sync_data()?;
        Ok(self.end_offset)
    }

    /// The log end offset when the handle was taken.
    pub fn end_offset(&self) -> i64 {
        self.end_offset
    }

    /// The segment file this handle syncs.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }
}
