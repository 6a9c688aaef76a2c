//! Group commit: acks=all writes wait here for an fsync that many writers share.
//!
//! Handlers append to the page cache under the partition lock, then hand the log's
//! [`SyncHandle`] to the syncer and wait outside the lock. One thread drains every request
//! that queued while the previous fsync ran and syncs each partition once, so concurrent
//! producers (and pipelined requests of one producer) share fsyncs.

use std::collections::HashMap;
use std::io;
use std::sync::mpsc;
use std::thread;

use prometheus_client::metrics::histogram::Histogram;
use skein_log::SyncHandle;
use tokio::sync::oneshot;

struct SyncRequest {
    /// Identifies the partition (the address of its state), so one fsync serves all waiters.
    partition_key: usize,
    handle: SyncHandle,
    done: oneshot::Sender<Result<(), String>>,
}

/// The group-commit thread's handle.
#[derive(Clone)]
pub struct Syncer {
    tx: mpsc::Sender<SyncRequest>,
}

impl Syncer {
    /// Starts the thread; each fsync's duration goes into `latency` (seconds).
    pub fn start(latency: Histogram) -> io::Result<Syncer> {
        let (tx, rx) = mpsc::channel::<SyncRequest>();
        thread::Builder::new()
            .name("skein-fsync".into())
            .spawn(move || run(rx, latency))?;
        Ok(Syncer { tx })
    }

    /// Waits until everything the handle covers is on disk.
    pub async fn sync(&self, partition_key: usize, handle: SyncHandle) -> Result<(), String> {
        let (done, wait) = oneshot::channel();
        self.tx
            .send(SyncRequest {
                partition_key,
                handle,
                done,
            })
            .map_err(|_| "the fsync thread has stopped".to_string())?;
        wait.await
            .map_err(|_| "the fsync thread has stopped".to_string())?
    }
}

fn run(rx: mpsc::Receiver<SyncRequest>, latency: Histogram) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while let Ok(more) = rx.try_recv() {
            batch.push(more);
        }
        // The newest handle of a partition covers the older ones: a rolled segment was
        // fsynced when it was rolled.
        let mut newest: HashMap<usize, SyncHandle> = HashMap::new();
        for r in &batch {
            newest
                .entry(r.partition_key)
                .and_modify(|h| {
                    if r.handle.end_offset() > h.end_offset() {
                        *h = r.handle.clone();
                    }
                })
                .or_insert_with(|| r.handle.clone());
        }
        let results: HashMap<usize, Result<(), String>> = newest
            .into_iter()
            .map(|(k, h)| {
                let started = std::time::Instant::now();
                let result = h.sync().map(|_| ()).map_err(|e| e.to_string());
                latency.observe(started.elapsed().as_secs_f64());
                (k, result)
            })
            .collect();
        for r in batch {
            let result = results.get(&r.partition_key).cloned().unwrap_or(Ok(()));
            let _ = r.done.send(result);
        }
    }
}
