//! The log cleaner's background tasks (`log.cleaner.threads` of them, like Kafka's
//! LogCleaner threads): each takes the dirtiest compacted log that is not being cleaned,
//! runs one pass of `skein_log::cleaner` over it and writes its cleaner checkpoint, or
//! sleeps `log.cleaner.backoff.ms` when no log needs cleaning.
//!
//! A partition's lock is held only to look at its segments, to swap a cleaned group in and
//! to read its checkpoint state: reading the old segments and writing the cleaned copies
//! happen without it, so appends and fetches go on meanwhile. All tasks share one I/O budget,
//! `log.cleaner.io.max.bytes.per.second`, and split `log.cleaner.dedupe.buffer.size` between
//! their key maps.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use skein_log::cleaner::{self, CleanStats, OffsetMap};
use skein_log::CleanerCheckpoint;

use crate::broker::Broker;
use crate::partition::Partition;

/// Throttles the cleaner tasks' reads and writes to a rate (Kafka's Throttler).
struct Throttle {
    rate: f64,
    window: Mutex<(Instant, u64)>,
}

impl Throttle {
    /// Counts `bytes` and sleeps while the rate of the current window is above the limit.
    fn take(&self, bytes: u64) {
        if !self.rate.is_finite() || self.rate >= f64::MAX / 2.0 {
            return;
        }
        let sleep = {
            let mut w = self.window.lock().unwrap_or_else(|e| e.into_inner());
            let elapsed = w.0.elapsed();
            if elapsed > Duration::from_secs(1) {
                *w = (Instant::now(), 0);
            }
            w.1 += bytes;
            let allowed = Duration::from_secs_f64(w.1 as f64 / self.rate);
            allowed.saturating_sub(w.0.elapsed())
        };
        if !sleep.is_zero() {
            std::thread::sleep(sleep);
        }
    }
}

/// What the cleaner tasks share.
pub struct CleanerShared {
    throttle: Throttle,
    /// Partition directories being cleaned.
    in_progress: Mutex<HashSet<PathBuf>>,
    /// Cleaner checkpoints by partition directory (read from the file the first time).
    checkpoints: Mutex<HashMap<PathBuf, CleanerCheckpoint>>,
    /// Bytes read and written by the cleaner since start.
    pub bytes_cleaned: AtomicU64,
    /// Records removed since start.
    pub records_removed: AtomicU64,
    /// When the last pass ended (ms since the epoch; 0 = none yet).
    pub last_clean_ms: AtomicI64,
}

impl CleanerShared {
    fn checkpoint(&self, dir: &Path) -> CleanerCheckpoint {
        let mut all = self.checkpoints.lock().unwrap_or_else(|e| e.into_inner());
        *all.entry(dir.to_path_buf())
            .or_insert_with(|| CleanerCheckpoint::read(dir))
    }
}

/// Releases a partition directory from `in_progress` when a pass ends (even by panic).
struct Claim<'a> {
    shared: &'a CleanerShared,
    dir: PathBuf,
}

impl Drop for Claim<'_> {
    fn drop(&mut self) {
        self.shared
            .in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&self.dir);
    }
}

impl Broker {
    /// Starts the cleaner tasks (none when `log.cleaner.enable` is false or
    /// `log.cleaner.threads` is 0). They run until the process exits.
    pub fn start_cleaner(self: &Arc<Self>) -> Option<Arc<CleanerShared>> {
        let settings = self.config.cleaner.clone();
        if !settings.enable || settings.threads == 0 {
            return None;
        }
        let shared = Arc::new(CleanerShared {
            throttle: Throttle {
                rate: settings.io_max_bytes_per_second,
                window: Mutex::new((Instant::now(), 0)),
            },
            in_progress: Mutex::new(HashSet::new()),
            checkpoints: Mutex::new(HashMap::new()),
            bytes_cleaned: AtomicU64::new(0),
            records_removed: AtomicU64::new(0),
            last_clean_ms: AtomicI64::new(0),
        });
        let buffer = settings.dedupe_buffer_bytes / settings.threads;
        for i in 0..settings.threads {
            let broker = Arc::clone(self);
            let shared = Arc::clone(&shared);
            let backoff = Duration::from_millis(settings.backoff_ms.max(1));
            let load_factor = settings.load_factor;
            let spawned = std::thread::Builder::new()
                .name(format!("log-cleaner-{i}"))
                .spawn(move || loop {
                    let cleaned = broker.clean_dirtiest(&shared, buffer, load_factor);
                    if !cleaned {
                        std::thread::sleep(backoff);
                    }
                });
            if let Err(e) = spawned {
                tracing::warn!("could not start log cleaner task {i}: {e}");
            }
        }
        Some(shared)
    }

    /// Picks the dirtiest compacted log that needs cleaning and cleans it. Returns whether
    /// it found one.
    fn clean_dirtiest(&self, shared: &CleanerShared, buffer: usize, load_factor: f64) -> bool {
        let now = self.now_ms();
        let mut best: Option<(f64, Arc<Partition>, PathBuf, skein_log::CleanParams)> = None;
        for topic in self.topics() {
            let effective = topic.effective();
            if !effective.compacted {
                continue;
            }
            let params = skein_log::CleanParams {
                now_ms: now,
                ..effective.compaction
            };
            for p in topic.partitions() {
                let state = p.lock();
                let Some(log) = state.log.as_ref() else {
                    continue;
                };
                let dir = log.dir().to_path_buf();
                let busy = shared
                    .in_progress
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .contains(&dir);
                if busy {
                    continue;
                }
                // Never at or past the last stable offset (open transactions, high watermark).
                let lso = Partition::last_stable_offset(&state);
                let cleanable = log.cleanable_below(&shared.checkpoint(&dir), &params, lso);
                drop(state);
                if !cleanable.should_clean(&params) {
                    continue;
                }
                // Overdue logs and passed tombstone horizons go first, then the dirtiest.
                let score = if cleanable.overdue || cleanable.horizon_passed {
                    2.0 + cleanable.ratio()
                } else {
                    cleanable.ratio()
                };
                if best.as_ref().is_none_or(|(s, ..)| score > *s) {
                    best = Some((score, p, dir, params));
                }
            }
        }
        let Some((_, partition, dir, params)) = best else {
            return false;
        };
        if !shared
            .in_progress
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.clone())
        {
            return true;
        }
        let _claim = Claim {
            shared,
            dir: dir.clone(),
        };
        let started = Instant::now();
        match self.clean_partition(shared, &partition, &dir, params, buffer, load_factor) {
            Ok(Some(stats)) => {
                shared
                    .bytes_cleaned
                    .fetch_add(stats.bytes_read + stats.bytes_written, Ordering::Relaxed);
                shared
                    .records_removed
                    .fetch_add(stats.records_removed, Ordering::Relaxed);
                shared.last_clean_ms.store(self.now_ms(), Ordering::Relaxed);
                let metrics = self.metrics();
                metrics
                    .cleaner_bytes
                    .inc_by(stats.bytes_read + stats.bytes_written);
                metrics
                    .cleaner_records_removed
                    .inc_by(stats.records_removed);
                metrics.cleaner_passes.inc();
                metrics
                    .cleaner_last_pass_ms
                    .store(self.now_ms(), Ordering::Relaxed);
                tracing::info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    cleaned_to = stats.cleaned_to,
                    groups = stats.groups_swapped,
                    abandoned = stats.groups_abandoned,
                    records_removed = stats.records_removed,
                    bytes_read = stats.bytes_read,
                    bytes_written = stats.bytes_written,
                    ms = started.elapsed().as_millis() as u64,
                    "cleaned log"
                );
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(topic = %partition.topic, partition = partition.index, "log cleaning failed: {e}");
                // Do not pick it again at once.
                std::thread::sleep(Duration::from_millis(self.config.cleaner.backoff_ms.max(1)));
            }
        }
        true
    }

    /// One pass over one partition's log; the partition lock is held only to plan and to swap.
    fn clean_partition(
        &self,
        shared: &CleanerShared,
        partition: &Partition,
        dir: &Path,
        params: skein_log::CleanParams,
        buffer: usize,
        load_factor: f64,
    ) -> Result<Option<CleanStats>, skein_log::LogError> {
        let checkpoint = shared.checkpoint(dir);
        let job = {
            let state = partition.lock();
            let Some(log) = state.log.as_ref() else {
                return Ok(None);
            };
            let lso = Partition::last_stable_offset(&state);
            let cleanable = log.cleanable_below(&checkpoint, &params, lso);
            if !cleanable.should_clean(&params) {
                return Ok(None);
            }
            log.clean_job(&cleanable)
        };
        if job.segments.is_empty() {
            return Ok(None);
        }
        let mut map = OffsetMap::with_buffer(buffer, load_factor);
        let mut pending = 0u64;
        let mut io = |bytes: u64| {
            pending += bytes;
            if pending >= 64 * 1024 {
                shared.throttle.take(pending);
                pending = 0;
            }
        };
        let mut install = |group| {
            let mut state = partition.lock();
            match state.log.as_mut() {
                Some(log) => log.install_cleaned(group, self.now_ms()),
                None => Ok(false),
            }
        };
        let stats = cleaner::clean(&job, &mut map, &params, &mut io, &mut install)?;
        let delete_horizon = if stats.groups_abandoned > 0 {
            match (checkpoint.delete_horizon, stats.delete_horizon) {
                (Some(a), Some(b)) => Some(a.min(b)),
                (a, b) => a.or(b),
            }
        } else {
            stats.delete_horizon
        };
        let next = CleanerCheckpoint {
            cleaned_to: stats.cleaned_to,
            delete_horizon,
        };
        next.write(dir)?;
        shared
            .checkpoints
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(dir.to_path_buf(), next);
        Ok(Some(stats))
    }
}
