//! Small checkpoint files in the partition directory, written atomically.
//!
//! Single-value files (`recovery-point-offset-checkpoint`, `log-start-offset`,
//! `high-watermark`) hold a version line `0` and the value on the next line. The
//! `leader-epoch-checkpoint` file uses Kafka's layout: version `0`, the entry count, then one
//! `epoch start_offset` line per entry. Every write goes to `<name>.tmp`, is fsynced, renamed
//! over the old file, and the directory is fsynced, so a crash leaves either the old or the
//! new content, never a mix.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

use crate::error::{IoContext, LogError};

pub(crate) const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
pub(crate) const LOG_START_OFFSET_FILE: &str = "log-start-offset";
pub(crate) const HIGH_WATERMARK_FILE: &str = "high-watermark";
pub(crate) const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
pub(crate) const CLEAN_SHUTDOWN_FILE: &str = ".clean-shutdown";

const VERSION: &str = "0";

/// fsyncs a directory so that file creations, renames and removals in it are durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), LogError> {
    File::open(dir).and_then(|d| d.sync_all()).at(dir)
}

/// Replaces `dir/name` with `content` atomically and durably.
pub(crate) fn write_atomic(dir: &Path, name: &str, content: &str) -> Result<(), LogError> {
    write_atomic_many(dir, &[(name, content.to_string())])
}

/// Replaces several files of `dir` atomically and durably, with one directory fsync for all:
/// each is written to a temporary file and fsynced (an empty one needs no fsync), then all
/// are renamed into place. Each file is atomic on its own, not the set.
pub(crate) fn write_atomic_many(dir: &Path, files: &[(&str, String)]) -> Result<(), LogError> {
    if files.is_empty() {
        return Ok(());
    }
    for (name, content) in files {
        let tmp = dir.join(format!("{name}.tmp"));
        let mut f = File::create(&tmp).at(&tmp)?;
        if !content.is_empty() {
            f.write_all(content.as_bytes()).at(&tmp)?;
            f.sync_all().at(&tmp)?;
        }
    }
    for (name, _) in files {
        let target = dir.join(name);
        fs::rename(dir.join(format!("{name}.tmp")), &target).at(&target)?;
    }
    sync_dir(dir)
}

/// The content of a single-value checkpoint.
pub(crate) fn value_content(value: i64) -> String {
    format!("{VERSION}\n{value}\n")
}

fn read_optional(path: &Path) -> Result<Option<String>, LogError> {
    match fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LogError::File {
            path: path.to_path_buf(),
            source: e,
        }),
    }
}

fn invalid(path: &Path, reason: impl Into<String>) -> LogError {
    LogError::Checkpoint {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

/// Writes a single-value checkpoint.
pub(crate) fn write_value(dir: &Path, name: &str, value: i64) -> Result<(), LogError> {
    write_atomic(dir, name, &value_content(value))
}

/// Reads a single-value checkpoint; `Ok(None)` when the file does not exist.
pub(crate) fn read_value(dir: &Path, name: &str) -> Result<Option<i64>, LogError> {
    let path = dir.join(name);
    let Some(text) = read_optional(&path)? else {
        return Ok(None);
    };
    let mut lines = text.lines();
    match lines.next() {
        Some(VERSION) => {}
        other => return Err(invalid(&path, format!("unknown version line {other:?}"))),
    }
    let value = lines
        .next()
        .ok_or_else(|| invalid(&path, "missing value line"))?
        .trim()
        .parse::<i64>()
        .map_err(|e| invalid(&path, format!("bad value: {e}")))?;
    Ok(Some(value))
}

/// Writes the leader-epoch checkpoint.
pub(crate) fn write_epochs(dir: &Path, entries: &[(i32, i64)]) -> Result<(), LogError> {
    let mut s = format!("{VERSION}\n{}\n", entries.len());
    for (epoch, start) in entries {
        s.push_str(&format!("{epoch} {start}\n"));
    }
    write_atomic(dir, LEADER_EPOCH_FILE, &s)
}

/// Reads the leader-epoch checkpoint; an empty list when the file does not exist.
pub(crate) fn read_epochs(dir: &Path) -> Result<Vec<(i32, i64)>, LogError> {
    let path = dir.join(LEADER_EPOCH_FILE);
    let Some(text) = read_optional(&path)? else {
        return Ok(Vec::new());
    };
    let mut lines = text.lines();
    match lines.next() {
        Some(VERSION) => {}
        other => return Err(invalid(&path, format!("unknown version line {other:?}"))),
    }
    let count: usize = lines
        .next()
        .ok_or_else(|| invalid(&path, "missing count line"))?
        .trim()
        .parse()
        .map_err(|e| invalid(&path, format!("bad count: {e}")))?;
    // The count is not trusted for allocation: entries are collected line by line.
    let mut entries = Vec::new();
    for line in lines.by_ref().take(count) {
        let mut parts = line.split_whitespace();
        let (Some(e), Some(o), None) = (parts.next(), parts.next(), parts.next()) else {
            return Err(invalid(&path, format!("bad entry line {line:?}")));
        };
        let epoch = e
            .parse::<i32>()
            .map_err(|err| invalid(&path, format!("bad epoch {e:?}: {err}")))?;
        let offset = o
            .parse::<i64>()
            .map_err(|err| invalid(&path, format!("bad offset {o:?}: {err}")))?;
        entries.push((epoch, offset));
    }
    if entries.len() != count {
        return Err(invalid(
            &path,
            format!("expected {count} entries, found {}", entries.len()),
        ));
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_and_epochs_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(read_value(dir.path(), HIGH_WATERMARK_FILE).unwrap(), None);
        write_value(dir.path(), HIGH_WATERMARK_FILE, 42).unwrap();
        assert_eq!(
            read_value(dir.path(), HIGH_WATERMARK_FILE).unwrap(),
            Some(42)
        );
        assert!(!dir.path().join("high-watermark.tmp").exists());

        assert_eq!(read_epochs(dir.path()).unwrap(), vec![]);
        write_epochs(dir.path(), &[(1, 0), (4, 100)]).unwrap();
        assert_eq!(
            fs::read_to_string(dir.path().join(LEADER_EPOCH_FILE)).unwrap(),
            "0\n2\n1 0\n4 100\n"
        );
        assert_eq!(read_epochs(dir.path()).unwrap(), vec![(1, 0), (4, 100)]);
    }

    #[test]
    fn malformed_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        for bad in ["", "1\n5\n", "0\n", "0\nx\n"] {
            fs::write(dir.path().join(RECOVERY_POINT_FILE), bad).unwrap();
            assert!(
                read_value(dir.path(), RECOVERY_POINT_FILE).is_err(),
                "{bad:?}"
            );
        }
        for bad in [
            "0\n2\n1 0\n",
            "0\n1\n1\n",
            "0\n999999999999\n",
            "0\n1\n1 0 3\n",
        ] {
            fs::write(dir.path().join(LEADER_EPOCH_FILE), bad).unwrap();
            assert!(read_epochs(dir.path()).is_err(), "{bad:?}");
        }
    }
}
