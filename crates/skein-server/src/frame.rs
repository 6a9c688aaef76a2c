//! Reading request frames with memory that grows only with the bytes received, under a
//! broker-wide budget (`queued.max.request.bytes`).
//!
//! A frame starts with a 4-byte size that the client chooses, so nothing is reserved from it.
//! Before the buffer grows, the reader asks the kernel how many bytes are waiting
//! (`FIONREAD`); the buffer then grows to hold those, or to twice what it already holds
//! (so a large frame is copied only a few times), but never past the frame's size. A client
//! that announces 100 MB and sends one byte costs one byte; one that sends half of it costs
//! at most that half again.
//!
//! Every byte of buffer is first taken from the [`RequestBudget`], a semaphore counting
//! bytes, and is given back when the frame has been handled or its connection dropped. A
//! connection that cannot get budget stops reading (its bytes wait in the kernel, and TCP
//! slows the client down) instead of allocating. Partly received frames that hold the whole
//! budget between them would wait on each other forever, so one frame at a time may go on
//! past the budget (the overdraft): the memory held for requests is at most
//! `queued.max.request.bytes` plus one frame of `socket.request.max.bytes`.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes};
use prometheus_client::metrics::gauge::Gauge;
use tokio::io::{AsyncRead, AsyncReadExt, Interest};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ConnectionError;

/// Budget is taken in steps of at most this many bytes, so a frame that wants a large step
/// does not sit at the head of the semaphore's queue ahead of small requests for long.
const BUDGET_STEP: usize = 1024 * 1024;

/// The broker-wide bound on bytes of request frames held in memory.
#[derive(Clone)]
pub(crate) struct RequestBudget {
    /// Permits are bytes; `None` when unbounded (`queued.max.request.bytes=-1`).
    bytes: Option<Arc<Semaphore>>,
    /// The size of the budget, in bytes.
    limit: usize,
    /// One permit: the frame that may go on past an exhausted budget.
    overdraft: Arc<Semaphore>,
    /// Bytes held, as `skein_request_bytes_queued` shows them.
    gauge: Gauge,
}

impl RequestBudget {
    /// A budget of `limit` bytes (`None`: unbounded) that reports what is held in `gauge`.
    pub(crate) fn new(limit: Option<usize>, gauge: Gauge) -> RequestBudget {
        let limit_bytes = limit.map(|l| l.min(Semaphore::MAX_PERMITS));
        RequestBudget {
            bytes: limit_bytes.map(|l| Arc::new(Semaphore::new(l))),
            limit: limit_bytes.unwrap_or(usize::MAX),
            overdraft: Arc::new(Semaphore::new(1)),
            gauge,
        }
    }

    /// An empty hold on this budget, for one frame.
    fn hold(&self) -> Held {
        Held {
            budget: self.clone(),
            permits: None,
            overdraft: None,
            bytes: 0,
        }
    }
}

/// The budget one frame's buffer holds; given back when dropped.
pub(crate) struct Held {
    budget: RequestBudget,
    permits: Option<OwnedSemaphorePermit>,
    overdraft: Option<OwnedSemaphorePermit>,
    bytes: usize,
}

impl Held {
    /// Takes `n` more bytes of budget, waiting while there is none (the connection stops
    /// reading meanwhile). If the budget stays exhausted and no other frame is over it, this
    /// frame takes the overdraft and the rest of it needs no budget.
    async fn grow(&mut self, n: usize) {
        let mut left = n;
        while left > 0 && self.overdraft.is_none() {
            let Some(semaphore) = &self.budget.bytes else {
                break;
            };
            let step = left.min(BUDGET_STEP).min(self.budget.limit).max(1);
            // A step is at most BUDGET_STEP, which fits in u32.
            let step_u32 = step as u32;
            let permit = match semaphore.clone().try_acquire_many_owned(step_u32) {
                Ok(p) => p,
                Err(_) => {
                    tracing::debug!(
                        wanted = step,
                        held = self.bytes,
                        "queued.max.request.bytes reached: reading paused"
                    );
                    let overdraft = self.budget.overdraft.clone();
                    tokio::select! {
                        biased;
                        p = semaphore.clone().acquire_many_owned(step_u32) => match p {
                            Ok(p) => p,
                            Err(_) => break, // never closed
                        },
                        o = overdraft.acquire_owned() => {
                            tracing::debug!(held = self.bytes, "frame goes on past queued.max.request.bytes");
                            self.overdraft = o.ok();
                            break;
                        }
                    }
                }
            };
            match &mut self.permits {
                Some(held) => held.merge(permit),
                None => self.permits = Some(permit),
            }
            left -= step;
        }
        self.bytes += n;
        self.budget.gauge.inc_by(n as i64);
    }

    /// Bytes this frame holds.
    #[cfg(test)]
    pub(crate) fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.gauge.dec_by(self.bytes as i64);
    }
}

/// A whole request frame (without its size prefix) and the budget it holds.
pub(crate) struct Frame {
    pub(crate) bytes: Bytes,
    pub(crate) held: Held,
}

/// Reads the next frame: `Ok(None)` when the peer closed between frames.
///
/// `max` is `socket.request.max.bytes`; `idle` is how long the peer may send nothing
/// (`connections.max.idle.ms`). Time spent waiting for budget does not count as idle.
pub(crate) async fn read_frame(
    stream: &TcpStream,
    max: usize,
    budget: &RequestBudget,
    idle: Duration,
) -> Result<Option<Frame>, ConnectionError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        wait_readable(stream, idle).await?;
        match stream.try_read(&mut prefix[got..]) {
            Ok(0) if got == 0 => return Ok(None),
            Ok(0) => return Err(eof()),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
    let size = frame_size(prefix, max)?;
    let mut held = budget.hold();
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < size {
        if buf.len() == buf.capacity() {
            let waiting = bytes_waiting(stream, idle).await?;
            let len = buf.len();
            let grow = waiting.max(len).min(size - len);
            held.grow(grow).await;
            buf.reserve_exact(grow);
        }
        let room = size - buf.len();
        match stream.try_read_buf(&mut (&mut buf).limit(room)) {
            Ok(0) => return Err(eof()),
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                wait_readable(stream, idle).await?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(Some(Frame {
        bytes: Bytes::from(buf),
        held,
    }))
}

/// How much a frame's buffer may grow ahead of the bytes received on a stream whose waiting
/// bytes cannot be counted (TLS: the kernel holds ciphertext): one TLS record's plaintext.
const STREAM_GROWTH: usize = 16 * 1024;

/// [`read_frame`] for a stream read through `AsyncRead` (a TLS session): the same limits,
/// but the buffer grows by what it holds (at least [`STREAM_GROWTH`]) instead of by the
/// bytes the kernel counts, so it stays within twice the bytes received plus one record.
pub(crate) async fn read_frame_io<R: AsyncRead + Unpin>(
    stream: &mut R,
    max: usize,
    budget: &RequestBudget,
    idle: Duration,
) -> Result<Option<Frame>, ConnectionError> {
    let mut prefix = [0u8; 4];
    let mut got = 0;
    while got < prefix.len() {
        let n = tokio::time::timeout(idle, stream.read(&mut prefix[got..]))
            .await
            .map_err(|_| ConnectionError::Idle)??;
        match n {
            0 if got == 0 => return Ok(None),
            0 => return Err(eof()),
            n => got += n,
        }
    }
    let size = frame_size(prefix, max)?;
    let mut held = budget.hold();
    let mut buf: Vec<u8> = Vec::new();
    while buf.len() < size {
        if buf.len() == buf.capacity() {
            let len = buf.len();
            let grow = len.max(STREAM_GROWTH).min(size - len);
            held.grow(grow).await;
            buf.reserve_exact(grow);
        }
        let room = (size - buf.len()).min(buf.capacity() - buf.len());
        let n = tokio::time::timeout(idle, stream.read_buf(&mut (&mut buf).limit(room)))
            .await
            .map_err(|_| ConnectionError::Idle)??;
        if n == 0 {
            return Err(eof());
        }
    }
    Ok(Some(Frame {
        bytes: Bytes::from(buf),
        held,
    }))
}

fn eof() -> ConnectionError {
    ConnectionError::Io(std::io::ErrorKind::UnexpectedEof.into())
}

async fn wait_readable(stream: &TcpStream, idle: Duration) -> Result<(), ConnectionError> {
    // A connection that sends nothing for connections.max.idle.ms is closed, as Kafka does,
    // so idle or stalled clients cannot hold connection slots forever.
    tokio::time::timeout(idle, stream.readable())
        .await
        .map_err(|_| ConnectionError::Idle)??;
    Ok(())
}

/// Waits until bytes have arrived and returns how many the kernel holds for us (at least 1).
async fn bytes_waiting(stream: &TcpStream, idle: Duration) -> Result<usize, ConnectionError> {
    loop {
        wait_readable(stream, idle).await?;
        let waiting = stream.try_io(Interest::READABLE, || {
            rustix::io::ioctl_fionread(stream).map_err(std::io::Error::from)
        });
        match waiting {
            Ok(0) => {
                // Nothing waiting: the peer closed, or the readiness was stale. A one-byte
                // peek tells which (and waits for bytes in the second case).
                let mut probe = [0u8; 1];
                match tokio::time::timeout(idle, stream.peek(&mut probe)).await {
                    Err(_) => return Err(ConnectionError::Idle),
                    Ok(Ok(0)) => return Err(eof()),
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(e.into()),
                }
            }
            Ok(n) => return Ok(usize::try_from(n).unwrap_or(usize::MAX)),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e.into()),
        }
    }
}

/// The length a frame's 4-byte prefix announces, refused when negative or over `max`.
fn frame_size(prefix: [u8; 4], max: usize) -> Result<usize, ConnectionError> {
    let size = i32::from_be_bytes(prefix);
    if size < 0 || size as usize > max {
        return Err(ConnectionError::FrameSize {
            size: size as i64,
            max,
        });
    }
    Ok(size as usize)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    const IDLE: Duration = Duration::from_secs(30);
    const MAX: usize = 100 * 1024 * 1024;

    async fn pair() -> (TcpStream, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server)
    }

    /// Waits (up to 10 s) until `cond` holds.
    async fn until(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(tokio::time::Instant::now() < deadline, "timed out: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn prefix(size: usize) -> [u8; 4] {
        (size as i32).to_be_bytes()
    }

    /// Reads frames from `server` in a task; the gauge shows what the partial frame holds.
    fn spawn_reader(
        server: TcpStream,
        budget: RequestBudget,
    ) -> tokio::task::JoinHandle<Result<Option<Frame>, ConnectionError>> {
        tokio::spawn(async move { read_frame(&server, MAX, &budget, IDLE).await })
    }

    #[tokio::test]
    async fn buffer_grows_with_the_bytes_received_not_the_size_prefix() {
        let gauge = Gauge::default();
        let budget = RequestBudget::new(Some(MAX), gauge.clone());
        let (mut client, server) = pair().await;
        let size = 100_000_000;
        let reader = spawn_reader(server, budget.clone());
        client.write_all(&prefix(size)).await.unwrap();
        client.write_all(&[7]).await.unwrap();
        until("the first byte to be held", || gauge.get() == 1).await;
        let mut sent = 1usize;
        for chunk in [10usize, 1000, 50_000, 300_000] {
            client.write_all(&vec![7; chunk]).await.unwrap();
            sent += chunk;
            // The buffer holds what arrived and at most as much again.
            until("the chunk to be read", || gauge.get() as usize >= sent).await;
            let held = gauge.get() as usize;
            assert!(held <= 2 * sent, "{held} bytes held for {sent} received");
        }
        assert!(!reader.is_finished());
        // Closing mid-frame is an error and gives the budget back.
        drop(client);
        let result = reader.await.unwrap();
        assert!(
            matches!(result, Err(ConnectionError::Io(_))),
            "{:?}",
            result.err()
        );
        assert_eq!(gauge.get(), 0);
        assert_eq!(budget.bytes.as_ref().unwrap().available_permits(), MAX);
    }

    #[tokio::test]
    async fn frames_are_read_whole_and_in_order() {
        let gauge = Gauge::default();
        let budget = RequestBudget::new(Some(1 << 20), gauge.clone());
        let (mut client, server) = pair().await;
        let frames: Vec<Vec<u8>> = (0..20u8)
            .map(|i| vec![i; (i as usize) * 997])
            .chain([vec![9; 3_000_000]])
            .collect();
        let writer = {
            let frames = frames.clone();
            tokio::spawn(async move {
                for f in &frames {
                    client.write_all(&prefix(f.len())).await.unwrap();
                    client.write_all(f).await.unwrap();
                }
                client
            })
        };
        for expected in &frames {
            let frame = read_frame(&server, MAX, &budget, IDLE)
                .await
                .unwrap()
                .expect("a frame");
            assert_eq!(&frame.bytes[..], &expected[..]);
            assert!(frame.held.bytes() >= expected.len());
            drop(frame);
            assert_eq!(gauge.get(), 0);
        }
        let client = writer.await.unwrap();
        drop(client);
        assert!(read_frame(&server, MAX, &budget, IDLE)
            .await
            .unwrap()
            .is_none());
    }

    #[tokio::test]
    async fn oversized_and_negative_sizes_are_refused() {
        let budget = RequestBudget::new(Some(1024), Gauge::default());
        for size in [-1i32, 1025] {
            let (mut client, server) = pair().await;
            client.write_all(&size.to_be_bytes()).await.unwrap();
            let result = read_frame(&server, 1024, &budget, IDLE).await;
            assert!(
                matches!(result, Err(ConnectionError::FrameSize { .. })),
                "{:?}",
                result.err()
            );
        }
    }

    #[tokio::test]
    async fn reading_pauses_when_the_budget_is_spent_and_resumes_when_it_is_given_back() {
        let limit = 64 * 1024;
        let gauge = Gauge::default();
        let budget = RequestBudget::new(Some(limit), gauge.clone());

        // A takes the whole budget and then the overdraft with a frame it never finishes.
        let (mut a, a_server) = pair().await;
        let a_reader = spawn_reader(a_server, budget.clone());
        a.write_all(&prefix(1_000_000)).await.unwrap();
        a.write_all(&vec![1; 200_000]).await.unwrap();
        until("A to read past the budget", || gauge.get() >= 200_000).await;
        assert_eq!(
            budget.overdraft.available_permits(),
            0,
            "A holds the overdraft"
        );
        let held_by_a = gauge.get();

        // B sends a whole small frame, but there is no budget and no overdraft: it waits,
        // holding nothing, while its bytes stay in the kernel.
        let (mut b, b_server) = pair().await;
        let b_reader = spawn_reader(b_server, budget.clone());
        b.write_all(&prefix(5)).await.unwrap();
        b.write_all(b"hello").await.unwrap();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!b_reader.is_finished(), "B was read with no budget left");
        assert_eq!(gauge.get(), held_by_a, "B allocated with no budget left");

        // A goes away: its budget and overdraft come back and B is read.
        drop(a);
        assert!(a_reader.await.unwrap().is_err());
        let frame = tokio::time::timeout(Duration::from_secs(10), b_reader)
            .await
            .expect("B resumed")
            .unwrap()
            .unwrap()
            .expect("a frame");
        assert_eq!(&frame.bytes[..], b"hello");
        assert_eq!(gauge.get(), 5);
        drop(frame);
        assert_eq!(gauge.get(), 0);
        assert_eq!(budget.bytes.as_ref().unwrap().available_permits(), limit);
        assert_eq!(budget.overdraft.available_permits(), 1);
    }

    #[tokio::test]
    async fn frames_over_the_budget_complete_one_at_a_time() {
        // Three frames, each larger than the whole budget, sent at once: the budget alone
        // could never hold any of them, and partial frames could hold it between them.
        let limit = 10_000;
        let gauge = Gauge::default();
        let budget = RequestBudget::new(Some(limit), gauge.clone());
        let mut readers = Vec::new();
        let mut writers = Vec::new();
        for i in 0..3u8 {
            let (mut client, server) = pair().await;
            let budget = budget.clone();
            // Each frame is handled (dropped) as soon as it is complete, as the server does,
            // so the next one can go on.
            readers.push(tokio::spawn(async move {
                let frame = read_frame(&server, MAX, &budget, IDLE).await;
                let frame = frame.unwrap().expect("a frame");
                (frame.bytes.len(), frame.bytes[0])
            }));
            writers.push(tokio::spawn(async move {
                client.write_all(&prefix(500_000)).await.unwrap();
                client.write_all(&vec![i; 500_000]).await.unwrap();
                client
            }));
        }
        let mut done = Vec::new();
        for reader in readers {
            let (len, first) = tokio::time::timeout(Duration::from_secs(20), reader)
                .await
                .expect("no deadlock")
                .unwrap();
            assert_eq!(len, 500_000);
            done.push(first);
        }
        assert_eq!(done, vec![0, 1, 2]);
        assert_eq!(gauge.get(), 0);
        assert_eq!(budget.bytes.as_ref().unwrap().available_permits(), limit);
        for w in writers {
            drop(w.await.unwrap());
        }
    }

    #[tokio::test]
    async fn unbounded_budget_only_counts() {
        let gauge = Gauge::default();
        let budget = RequestBudget::new(None, gauge.clone());
        let (mut client, server) = pair().await;
        let reader = spawn_reader(server, budget);
        client.write_all(&prefix(3)).await.unwrap();
        client.write_all(b"abc").await.unwrap();
        let frame = reader.await.unwrap().unwrap().expect("a frame");
        assert_eq!(&frame.bytes[..], b"abc");
        assert_eq!(gauge.get(), 3);
        drop(frame);
        assert_eq!(gauge.get(), 0);
    }
}
