//! Deterministic simulation of replication (followers, ISR, high watermark, acks=all) together
//! with the controller, in one process, seeded (in the spirit of TigerBeetle's VOPR and
//! FoundationDB's simulator).
//!
//! **What is real.** The controller is the real [`QuorumController`] deciding against the real
//! [`MetadataImage`] (registration, heartbeats, fencing on session expiry, AlterPartition,
//! leader election from the ISR, epoch bumps); its records are encoded and applied as log
//! entries. The leader's side of replication is the real
//! [`skein_broker::replication::LeaderState`] (follower progress, `on_fetch`,
//! `high_watermark`, `wanted_isr`, pending ISR changes), and followers use the real
//! `diverging_epoch` and `truncation_offset` rules.
//!
//! **What is modeled** (after `partition.rs`, `fetcher.rs`, `api/fetch.rs`, `api/produce.rs`
//! and `broker.rs`, each step commented where it is done):
//! - Nodes (3, sometimes 5) each hosting a replica of one partition (RF = number of nodes).
//!   A replica is a log of records (leader epoch, unique value, batch boundary), an epoch
//!   cache with skein-log's `assign`/`end_offset_for`/`truncate_from_end`, a durable prefix
//!   (what was fsynced: a group-commit fsync, usually quick, now and then stalling up to
//!   1.5 s, covers the whole log as it was when it started, and is started for a follower's
//!   append and an acks=all write, so acks=1 data waits for the next one), a high watermark
//!   and its checkpoint (written every second). A crash loses the unfsynced
//!   tail, possibly only part of it (cut at a batch boundary, as recovery does); the epoch
//!   cache is then trimmed at the new log end and the high watermark restarts from its
//!   (periodic, possibly stale) checkpoint.
//! - Each node registers (after fencing its previous process's registration, as
//!   `register_self` does), heartbeats, fetches the committed metadata log and applies it as
//!   `Broker::apply_delta` does (a new leader assigns its epoch at its log end, then
//!   `sync_role`, then `advance_high_watermark`). A restarted node serves clients and
//!   followers, and runs its fetcher and ISR checks, only once it is registered and unfenced
//!   (`start_quorum` returns then).
//! - Followers fetch one request at a time (`fetch_offset` = log end, `last_fetched_epoch` =
//!   latest epoch of the log), truncate on a diverging epoch or an out-of-range answer,
//!   append at the leader's offsets, take the leader's high watermark up to their log end,
//!   and fsync before their next fetch.
//! - Leaders check the follower's leader epoch, answer diverging epochs, record fetches,
//!   advance the high watermark, and every ISR check (0.5 s) ask for `wanted_isr` with
//!   AlterPartition (new members' broker epochs -1, as `check_isrs` sends them). A call
//!   times out after the call timeout, also when the leader has not applied the committed
//!   change by then (`wait_applied`).
//! - Clients: an acks=all producer (and, in some seeds, an acks=1 producer) writing unique
//!   values to the leader they believe in (refreshed from a random broker's metadata). The
//!   leader refuses acks=all with NOT_ENOUGH_REPLICAS when its ISR is smaller than
//!   `min.insync.replicas`=2, appends, fsyncs, and answers success only once its high
//!   watermark passed the batch while it still leads in the same epoch (NOT_LEADER_OR_FOLLOWER
//!   otherwise, REQUEST_TIMED_OUT after the produce timeout). acks=1 is answered after the
//!   append.
//! - A network of delayed, dropped and reordered messages; nodes cut off from the other
//!   nodes and the controller (their clients may still reach them); crashes and restarts;
//!   pauses (SIGSTOP: nothing runs, messages wait) and resumes.
//!
//! **Models** ([`Model`]). This simulation found four places where the code broke an
//! invariant, since fixed in the broker (the tests at the end keep each one caught):
//! - `Partition::advance_high_watermark` counted the leader's log end, not its fsynced end;
//! - `append_as_leader` moved the high watermark for acks=0/1 appends with a minimum ISR of 1;
//! - `check_isrs` cleared the pending ISR change whenever any AlterPartition call failed or
//!   timed out;
//! - `LeaderState::wanted_isr` proposed (and `mark_pending` recorded) a new ISR change once
//!   one had been pending for `PENDING_ISR_RETRY_MS`, forgetting the old one's additions.
//!
//! The main test runs [`Model::spec`], which is what the code does now (fsynced end; min ISR
//! always `min.insync.replicas`; only a definite refusal of the call that set it clears a
//! pending change; a change still pending is asked again as it is). [`Model::code`] is the
//! code as it was; `SKEIN_SIM_MODEL=code` (or `code-hw`, `code-acks1`, `code-pending`,
//! `code-retry`: the spec with one of the old choices) runs it for exploring.
//!
//! **Simplifications** (each is a place where a bug could hide from this simulation):
//! one controller that never fails (its log is committed as soon as decided: Raft is tested
//! elsewhere); one partition, no retention (log start 0), no idempotent producer state, no
//! long-polling (an empty fetch is answered at once and the follower retries after a short
//! pause); a truncation is durable at once; a dropped message stands for a broken connection;
//! timeouts are scaled down (session 3 s, heartbeat 0.6 s, replica lag 4 s, controller call
//! 6 s, produce 6 s; `PENDING_ISR_RETRY_MS` stays the crate's 5 s); a restarted broker
//! catches up with the whole metadata log in one step before acting on it (as a broker
//! loading its snapshot does), where the real one replays its local metadata log.
//!
//! **Invariants, checked after every step** (see [`Sim::check`]):
//! 1. *No acknowledged record lost*: every value acknowledged to the acks=all producer at
//!    offset `o` is at `o` in the fsynced log of every member of the controller's committed
//!    ISR (up or down). This is the strongest statement Kafka's design makes with
//!    `min.insync.replicas=2`, unclean election off and (Skein's default) fsync before acks:
//!    the leader acknowledges only when every member of its (maximal) ISR has fsynced the
//!    record, a replica joins the ISR only once it holds everything below the high
//!    watermark, ISR members only truncate divergent suffixes above it, and the controller
//!    elects only from the ISR and never empties it. It implies that any elected leader has
//!    every acknowledged record.
//! 2. *Replicas agree below the high watermark*: for any two live replicas `i`, `j`, every
//!    offset below `min(hw_i, hw_j)` holds the same record on both (a replica's divergent
//!    suffix above its own high watermark may differ until it truncates, as in Kafka).
//! 3. *Committed records never change*: the records any leader ever exposed below its high
//!    watermark (what read_uncommitted consumers may read) stay, at their offsets, below
//!    every later leader's high watermark.
//! 4. *One leader per leader epoch*: the controller never names two leaders for one epoch,
//!    and no node acts as leader (holds a `LeaderState`) in an epoch whose leader is another.
//! 5. *High watermark monotonic*: while a node leads in one epoch (same process incarnation)
//!    its high watermark never decreases; in any role a node's high watermark decreases only
//!    when a follower truncates its log below it or the node restarts (from its checkpoint).
//!    Across leader changes, the committed prefix of (3) is what never goes back.
//! 6. *The ISR is never empty*, and is a subset of the replicas; a leader is in the ISR.
//! 7. No two different values acknowledged at one offset.
//! 8. *The high watermark does not move while the leader's ISR is below
//!    `min.insync.replicas`* (the rule; checked where it moves).
//!
//! After the faults, everything heals and the cluster must settle: one leader whose log holds
//! every acknowledged value below its high watermark.
//!
//! `the_simulation_catches_broken_replication` shows the invariants bite: three deliberate
//! bugs (followers reporting unfsynced data, no diverging-epoch answers, a high watermark
//! that skips unconfirmed ISR members) are each caught within a few seeds.
//!
//! Re-run one seed with `SKEIN_SIM_SEED=<seed> cargo test -p skein-broker --test
//! replication_sim` (a failure prints the seed, the state and the last steps, replaying the
//! seed with tracing on to get them); `SKEIN_SIM_SEEDS=<n>` runs seeds 1..=n instead of the
//! default budget (`A..=B` a range); `SKEIN_SIM_TRACE=1` prints every step;
//! `SKEIN_SIM_KEEP_GOING=1` lists every failing seed instead of stopping at the first.

use std::collections::{BTreeMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};

use skein_broker::partition::Assignment;
use skein_broker::replication::{diverging_epoch, truncation_offset, LeaderState};
use skein_metadata::controller::{AlterPartition, ControllerConfig, Heartbeat, RegisterBroker};
use skein_metadata::image::{Endpoint, NO_LEADER};
use skein_metadata::{encode_batch, ErrorCode, MetadataImage, QuorumController};
use skein_protocol::{MetadataRecord, Uuid};

/// Seeds run by default, and steps of faults per seed (then a settle phase).
const DEFAULT_SEEDS: u64 = 1_000;
const CHAOS_STEPS: usize = 350;
const SETTLE_STEPS: usize = 350;
/// Seeds a deliberate bug gets to be caught in.
const MUTATION_SEEDS: u64 = 300;
/// Lines of trace printed for a failing seed.
const TRACE_LINES: usize = 60;

// Scaled-down timeouts (ms of simulated time).
const SESSION_TIMEOUT: u64 = 3_000;
const HEARTBEAT_INTERVAL: u64 = 600;
const REPLICA_LAG_MAX: i64 = 4_000;
const ISR_CHECK: u64 = 500;
const FETCH_BACKOFF: u64 = 200;
const FETCH_TIMEOUT: u64 = 2_000;
const CALL_TIMEOUT: u64 = 6_000;
const PRODUCE_TIMEOUT: u64 = 6_000;
const CLIENT_TIMEOUT: u64 = 8_000;
const METADATA_INTERVAL: u64 = 150;
/// A registration call unanswered this long is made again (the call timeout).
const REGISTER_RETRY: u64 = CALL_TIMEOUT;
const HW_CHECKPOINT_INTERVAL: u64 = 1_000;
/// The topic's `min.insync.replicas`.
const MIN_INSYNC: usize = 2;
/// The most records one fetch answer carries (whole batches; at least one).
const FETCH_MAX_RECORDS: usize = 6;

/// Which rules the model follows where the code and the rules differ.
#[derive(Debug, Clone, Copy)]
struct Model {
    /// The leader counts its own log for the high watermark only as far as it is fsynced
    /// (the rule). The code (`Partition::advance_high_watermark`) passes the log end.
    leader_hw_counts_durable_only: bool,
    /// An acks=1 append advances the high watermark with a minimum ISR of 1, as
    /// `append_as_leader` does (`acks_all_min_insync.unwrap_or(1)`).
    acks1_advances_with_min_insync_1: bool,
    /// Any failed or timed-out AlterPartition call clears whatever ISR change is pending
    /// (`check_isrs`). When false, Kafka's rule (`Partition.handleAlterPartitionError`): only
    /// INELIGIBLE_REPLICA (the controller saw the current epochs and did not apply the
    /// change) answering the very call that set the pending change clears it; any other
    /// error or a timeout leaves it pending until the metadata shows the outcome, because an
    /// earlier identical call may have been applied.
    clear_pending_on_any_call_failure: bool,
    /// A pending ISR change still unresolved after `PENDING_ISR_RETRY_MS` is replaced by
    /// whatever `wanted_isr` computes now (the crate's `LeaderState`). When false, the same
    /// change is asked again and stays pending (Kafka's AlterPartitionManager resends the
    /// same item), so the maximal ISR keeps counting its additions.
    retry_recomputes_pending: bool,
    /// Run the acks=1 producer too.
    acks1_client: bool,
    /// Check invariant 8 (the high watermark frozen below `min.insync.replicas`); off to see
    /// what the code's acks=1 rule leads to further on.
    check_frozen_hw: bool,
    /// A deliberate bug, to show the simulation catches it.
    mutation: Option<Mutation>,
}

/// Deliberate bugs (`the_simulation_catches_broken_replication`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mutation {
    /// Followers fetch again (reporting their new log end) before their fsync completes.
    FetchBeforeFsync,
    /// Leaders never answer a diverging epoch: followers keep divergent suffixes.
    NoDivergingEpoch,
    /// The high watermark skips ISR members that have not fetched in this leader epoch (a
    /// new leader exposes an unconfirmed high watermark).
    HwSkipsUnconfirmed,
}

impl Model {
    /// The code as it was before the four fixes (see the crate docs).
    fn code() -> Model {
        Model {
            leader_hw_counts_durable_only: false,
            acks1_advances_with_min_insync_1: true,
            clear_pending_on_any_call_failure: true,
            retry_recomputes_pending: true,
            acks1_client: true,
            check_frozen_hw: false,
            mutation: None,
        }
    }

    /// The rules as the issue states them (and Kafka has them), where the code differs:
    /// the leader's own log counts only as far as it is fsynced, the high watermark never
    /// moves while the ISR is below `min.insync.replicas`, and only a definite refusal of
    /// its own call clears a pending ISR change.
    fn spec() -> Model {
        Model {
            leader_hw_counts_durable_only: true,
            acks1_advances_with_min_insync_1: false,
            clear_pending_on_any_call_failure: false,
            retry_recomputes_pending: false,
            acks1_client: true,
            check_frozen_hw: true,
            mutation: None,
        }
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi - lo + 1)
    }
}

/// One record of a replica's log (its offset is its index).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    epoch: i32,
    value: u64,
    /// The first record of a batch (crash recovery and fetches cut at batch boundaries).
    batch_start: bool,
}

// ---- skein-log's leader-epoch cache, modeled ----

fn epoch_assign(entries: &mut Vec<(i32, i64)>, epoch: i32, start: i64) {
    if epoch < 0 || start < 0 || entries.last().map(|e| e.0) == Some(epoch) {
        return;
    }
    entries.retain(|&(e, s)| e < epoch && s < start);
    entries.push((epoch, start));
}

fn epoch_end_offset_for(entries: &[(i32, i64)], requested: i32, leo: i64) -> Option<(i32, i64)> {
    let &(latest, _) = entries.last()?;
    if requested < 0 {
        return None;
    }
    if requested == latest {
        return Some((latest, leo));
    }
    let higher = entries.iter().position(|&(e, _)| e > requested)?;
    let end = entries[higher].1;
    if higher == 0 {
        Some((requested, end))
    } else {
        Some((entries[higher - 1].0, end))
    }
}

fn epoch_truncate_from_end(entries: &mut Vec<(i32, i64)>, end: i64) {
    entries.retain(|&(_, s)| s < end);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Addr {
    Node(i32),
    Controller,
    /// Client 0: acks=all; client 1: acks=1.
    Client(usize),
}

#[derive(Debug, Clone)]
enum FetchAnswer {
    Error(ErrorCode),
    Diverging {
        epoch: i32,
        end_offset: i64,
    },
    OutOfRange {
        high_watermark: i64,
    },
    Records {
        recs: Vec<(i64, Rec)>,
        high_watermark: i64,
    },
}

#[derive(Debug, Clone)]
enum Body {
    Register {
        incarnation: u64,
        req: u64,
    },
    Registered {
        req: u64,
        result: Result<i64, ErrorCode>,
    },
    Heartbeat {
        broker_epoch: i64,
        metadata_offset: u64,
        want_fence: bool,
    },
    /// The result: whether the broker is fenced.
    HeartbeatResp {
        broker_epoch: i64,
        result: Result<bool, ErrorCode>,
    },
    MetaFetch {
        have: usize,
    },
    MetaEntries {
        from: usize,
        entries: Vec<(u64, Vec<u8>)>,
    },
    Fetch {
        req: u64,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    },
    FetchResp {
        req: u64,
        answer: FetchAnswer,
    },
    Alter {
        req: u64,
        broker_epoch: i64,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    AlterResp {
        req: u64,
        result: Result<u64, ErrorCode>,
    },
    Produce {
        req: u64,
        values: Vec<u64>,
    },
    ProduceResp {
        req: u64,
        result: Result<i64, ErrorCode>,
    },
}

#[derive(Debug, Clone)]
struct Msg {
    at: u64,
    seq: u64,
    from: Addr,
    to: Addr,
    /// The incarnation of a node sender/receiver when sent (its connections die with it).
    from_inc: u64,
    to_inc: u64,
    body: Body,
}

struct PendingProduce {
    client: usize,
    req: u64,
    base: i64,
    last: i64,
    leader_epoch: i32,
    deadline: u64,
}

struct PendingAlter {
    req: u64,
    sent: u64,
    /// The pending change this call set (to tell it from a later one).
    pending: Option<skein_broker::replication::PendingIsr>,
    /// The metadata offset the controller committed the change at, once answered.
    committed: Option<u64>,
}

struct Node {
    id: i32,
    up: bool,
    paused: bool,
    inc: u64,
    log: Vec<Rec>,
    durable: usize,
    epochs: Vec<(i32, i64)>,
    hw: i64,
    hw_ckpt: i64,
    next_hw_ckpt: u64,
    /// The group-commit fsync in flight: (log end it covers, when it completes).
    fsync: Option<(usize, u64)>,
    /// The log end some writer waits to see fsynced.
    sync_wanted: usize,
    image: MetadataImage,
    applied: usize,
    assignment: Option<Assignment>,
    leader: Option<LeaderState>,
    broker_epoch: Option<i64>,
    /// Registered and unfenced once since the (re)start: only then does the broker serve
    /// clients and followers and run its fetchers and ISR checks (`start_quorum`).
    serving: bool,
    reg: Option<(u64, u64)>,
    next_heartbeat: u64,
    next_meta: u64,
    meta_sent: Option<u64>,
    /// The fetch in flight: (request id, leader asked, leader epoch asked in, when sent).
    fetch: Option<(u64, i32, i32, u64)>,
    fetch_not_before: u64,
    /// The log end a follower must have fsynced before its next fetch.
    fetch_needs_durable: usize,
    alters: Vec<PendingAlter>,
    next_isr_check: u64,
    produces: Vec<PendingProduce>,
    /// (leader epoch, high watermark) while leading, for the monotonic check.
    led: Option<(i32, i64)>,
    /// The high watermark after the last check, and whether it may have gone down since
    /// (truncation or restart).
    last_hw: i64,
    hw_may_drop: bool,
}

impl Node {
    fn new(id: i32) -> Node {
        Node {
            id,
            up: true,
            paused: false,
            inc: 1,
            log: Vec::new(),
            durable: 0,
            epochs: Vec::new(),
            hw: 0,
            hw_ckpt: 0,
            next_hw_ckpt: 0,
            fsync: None,
            sync_wanted: 0,
            image: MetadataImage::new(),
            applied: 0,
            assignment: None,
            leader: None,
            broker_epoch: None,
            serving: true,
            reg: None,
            next_heartbeat: 0,
            next_meta: 0,
            meta_sent: None,
            fetch: None,
            fetch_not_before: 0,
            fetch_needs_durable: 0,
            alters: Vec::new(),
            next_isr_check: 0,
            produces: Vec::new(),
            led: None,
            last_hw: 0,
            hw_may_drop: false,
        }
    }

    fn leo(&self) -> i64 {
        self.log.len() as i64
    }

    fn live(&self) -> bool {
        self.up && !self.paused
    }

    fn metadata_offset(&self) -> u64 {
        self.image.last_offset().unwrap_or(0)
    }

    /// `Log::truncate_to` (at a batch boundary here, as the leader's offsets are) plus the
    /// follower's `cut_to`.
    fn cut_to(&mut self, target: i64) {
        let target = target.max(0) as usize;
        if target >= self.log.len() {
            return;
        }
        self.log.truncate(target);
        let leo = self.leo();
        self.hw = self.hw.min(leo);
        self.hw_may_drop = true;
        self.durable = self.durable.min(target);
        if let Some((end, _)) = &mut self.fsync {
            *end = (*end).min(target);
        }
        self.sync_wanted = self.sync_wanted.min(target);
        epoch_truncate_from_end(&mut self.epochs, leo);
    }
}

struct Client {
    acks_all: bool,
    belief: Option<(i32, i32)>,
    inflight: Option<(u64, Vec<u64>, u64, i32)>,
    next_send: u64,
}

struct Sim {
    seed: u64,
    rng: Rng,
    model: Model,
    now: u64,
    step: usize,
    phase: &'static str,
    next_seq: u64,
    next_req: u64,
    next_value: u64,
    net: Vec<Msg>,
    /// Nodes cut off from the other nodes and the controller, until when.
    isolated: BTreeMap<i32, u64>,
    /// Nodes their clients cannot reach, until when.
    client_cut: BTreeMap<i32, u64>,
    ctl: QuorumController,
    image: MetadataImage,
    entries: Vec<(u64, Vec<u8>)>,
    topic: Uuid,
    /// Every leader the controller named, by leader epoch.
    epoch_leaders: BTreeMap<i32, i32>,
    nodes: Vec<Node>,
    clients: Vec<Client>,
    /// Acknowledged acks=all values: value → offset, and offset → value.
    acked: BTreeMap<u64, i64>,
    acked_at: BTreeMap<i64, u64>,
    /// Records ever exposed below a leader's high watermark.
    committed: Vec<Rec>,
    trace: Option<VecDeque<String>>,
    print_trace: bool,
    stats: BTreeMap<&'static str, u64>,
}

fn node_uuid(id: i32, inc: u64) -> Uuid {
    let mut raw = [7u8; 16];
    raw[..4].copy_from_slice(&id.to_be_bytes());
    raw[4..12].copy_from_slice(&inc.to_be_bytes());
    Uuid(raw)
}

fn assignment_of(image: &MetadataImage, topic: Uuid) -> Option<Assignment> {
    image.partition(topic, 0).map(|s| Assignment {
        leader: s.leader,
        leader_epoch: s.leader_epoch,
        partition_epoch: s.partition_epoch,
        replicas: s.replicas.clone(),
        isr: s.isr.clone(),
    })
}

impl Sim {
    fn new(seed: u64, model: Model, trace: bool) -> Sim {
        let mut rng = Rng(seed);
        let n = if rng.chance(4) { 5 } else { 3 };
        let ctl = QuorumController::new(ControllerConfig {
            session_timeout_ms: SESSION_TIMEOUT,
            ..ControllerConfig::default()
        });
        let acks1 = model.acks1_client && rng.chance(2);
        let mut sim = Sim {
            seed,
            rng,
            model,
            now: 0,
            step: 0,
            phase: "setup",
            next_seq: 0,
            next_req: 0,
            next_value: 1,
            net: Vec::new(),
            isolated: BTreeMap::new(),
            client_cut: BTreeMap::new(),
            ctl,
            image: MetadataImage::new(),
            entries: Vec::new(),
            topic: Uuid([0; 16]),
            epoch_leaders: BTreeMap::new(),
            nodes: (1..=n).map(Node::new).collect(),
            clients: (0..if acks1 { 2 } else { 1 })
                .map(|i| Client {
                    acks_all: i == 0,
                    belief: None,
                    inflight: None,
                    next_send: 0,
                })
                .collect(),
            acked: BTreeMap::new(),
            acked_at: BTreeMap::new(),
            committed: Vec::new(),
            trace: trace.then(VecDeque::new),
            print_trace: std::env::var_os("SKEIN_SIM_TRACE").is_some(),
            stats: BTreeMap::new(),
        };
        sim.bootstrap();
        sim
    }

    /// Every broker registers and is unfenced, then the topic is created on all of them (in
    /// a shuffled preferred order); every broker starts with that metadata applied.
    fn bootstrap(&mut self) {
        let mut epochs = Vec::new();
        for i in 0..self.nodes.len() {
            let id = self.nodes[i].id;
            let out = self
                .ctl
                .register_broker(&self.image, &self.registration(id, 1), 0)
                .expect("bootstrap registration");
            self.commit(out.records);
            epochs.push(out.reply.broker_epoch);
        }
        for (i, epoch) in epochs.iter().enumerate() {
            let hb = Heartbeat {
                broker_id: self.nodes[i].id,
                broker_epoch: *epoch,
                metadata_offset: self.image.last_offset().unwrap_or(0),
                want_fence: false,
                want_shutdown: false,
            };
            let out = self.ctl.heartbeat(&self.image, &hb, 0).expect("bootstrap");
            self.commit(out.records);
        }
        let mut replicas: Vec<i32> = self.nodes.iter().map(|n| n.id).collect();
        for i in (1..replicas.len()).rev() {
            let j = self.rng.below(i as u64 + 1) as usize;
            replicas.swap(i, j);
        }
        let out = self.ctl.create_topics(
            &self.image,
            &[skein_metadata::controller::NewTopic {
                name: "t".into(),
                num_partitions: -1,
                replication_factor: -1,
                assignments: vec![replicas],
                configs: vec![],
            }],
            false,
            self.seed,
        );
        let created = out.reply[0].result.clone().expect("topic created");
        self.topic = created.topic_id;
        self.commit(out.records);
        for (i, epoch) in epochs.into_iter().enumerate() {
            self.nodes[i].broker_epoch = Some(epoch);
            self.nodes[i].next_heartbeat = self.rng.below(HEARTBEAT_INTERVAL);
            self.apply_metadata(i, 0, self.entries.clone());
        }
        self.phase = "chaos";
    }

    fn registration(&self, id: i32, inc: u64) -> RegisterBroker {
        RegisterBroker {
            broker_id: id,
            incarnation_id: node_uuid(id, inc),
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + id as u16,
                security_protocol: 0,
            }],
            rack: None,
            // The modelled logs keep every acknowledged record (fsync before acks): intact.
            previous_broker_epoch: self.image.broker(id).map_or(-1, |b| b.epoch),
        }
    }

    // ---- reporting ----

    fn note(&mut self, what: impl FnOnce() -> String) {
        let print = self.print_trace;
        if let Some(t) = &mut self.trace {
            let line = format!("[{} t={}] {}", self.step, self.now, what());
            if print {
                eprintln!("{line}");
            }
            t.push_back(line);
            if t.len() > TRACE_LINES {
                t.pop_front();
            }
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    fn fail(&self, invariant: &str, detail: String) -> ! {
        let nodes: Vec<String> = self
            .nodes
            .iter()
            .map(|n| {
                format!(
                    "  node {}: up {} paused {} inc {} broker epoch {:?} metadata {} leads {:?} log end {} durable {} hw {} epochs {:?} assignment {:?}",
                    n.id,
                    n.up,
                    n.paused,
                    n.inc,
                    n.broker_epoch,
                    n.metadata_offset(),
                    n.leader.as_ref().map(|l| l.leader_epoch),
                    n.leo(),
                    n.durable,
                    n.hw,
                    n.epochs,
                    n.assignment
                )
            })
            .collect();
        panic!(
            "seed {}: invariant `{invariant}` violated at step {} (t={}ms, {}): {detail}\ncontroller: {:?}, brokers {:?}\n{}",
            self.seed,
            self.step,
            self.now,
            self.phase,
            self.image.partition(self.topic, 0),
            self.image
                .brokers()
                .values()
                .map(|b| (b.id, b.epoch, b.fenced))
                .collect::<Vec<_>>(),
            nodes.join("\n")
        );
    }

    fn idx(&self, id: i32) -> usize {
        self.nodes
            .iter()
            .position(|n| n.id == id)
            .expect("a node id")
    }

    // ---- the controller (one, never failing: a decision is committed at once) ----

    fn commit(&mut self, records: Vec<MetadataRecord>) -> Option<u64> {
        if records.is_empty() {
            return None;
        }
        let offset = self.image.last_offset().map_or(1, |o| o + 1);
        let entry = encode_batch(&records).to_vec();
        if let Err(e) = self.image.apply_entry(offset, &entry) {
            self.fail("controller records apply", format!("{e}"));
        }
        self.entries.push((offset, entry));
        if let Some(s) = self.image.partition(self.topic, 0).cloned() {
            if s.isr.is_empty() {
                self.fail("the ISR is never empty", format!("{s:?}"));
            }
            if !s.isr.iter().all(|r| s.replicas.contains(r)) {
                self.fail("ISR ⊆ replicas", format!("{s:?}"));
            }
            if s.leader != NO_LEADER && !s.isr.contains(&s.leader) {
                self.fail("the leader is in the ISR", format!("{s:?}"));
            }
            if s.leader != NO_LEADER {
                match self.epoch_leaders.get(&s.leader_epoch) {
                    Some(l) if *l != s.leader => self.fail(
                        "one leader per leader epoch (controller)",
                        format!("epoch {} led by {l} and {}", s.leader_epoch, s.leader),
                    ),
                    Some(_) => {}
                    None => {
                        self.epoch_leaders.insert(s.leader_epoch, s.leader);
                        self.count("leaders elected");
                    }
                }
            }
            self.note(|| format!("controller commits offset {offset}: {s:?}"));
        }
        Some(offset)
    }

    fn controller_receive(&mut self, from: i32, from_inc: u64, body: Body) {
        let now = self.now;
        match body {
            Body::Register { incarnation, req } => {
                let request = self.registration(from, incarnation);
                let result = match self.ctl.register_broker(&self.image, &request, now) {
                    Ok(out) => {
                        let epoch = out.reply.broker_epoch;
                        self.commit(out.records);
                        self.count("registrations");
                        Ok(epoch)
                    }
                    Err(e) => Err(e.code),
                };
                self.note(|| format!("controller: register {from} -> {result:?}"));
                self.send_to_node(
                    Addr::Controller,
                    0,
                    from,
                    from_inc,
                    Body::Registered { req, result },
                );
            }
            Body::Heartbeat {
                broker_epoch,
                metadata_offset,
                want_fence,
            } => {
                let hb = Heartbeat {
                    broker_id: from,
                    broker_epoch,
                    metadata_offset,
                    want_fence,
                    want_shutdown: false,
                };
                let result = match self.ctl.heartbeat(&self.image, &hb, now) {
                    Ok(out) => {
                        if !out.records.is_empty() {
                            self.note(|| format!("controller: heartbeat of {from} (epoch {broker_epoch}, fence {want_fence}) changes {:?}", out.reply));
                        }
                        self.commit(out.records);
                        Ok(out.reply.is_fenced)
                    }
                    Err(e) => Err(e.code),
                };
                self.send_to_node(
                    Addr::Controller,
                    0,
                    from,
                    from_inc,
                    Body::HeartbeatResp {
                        broker_epoch,
                        result,
                    },
                );
            }
            Body::MetaFetch { have } => {
                let entries = self.entries[have.min(self.entries.len())..].to_vec();
                self.send_to_node(
                    Addr::Controller,
                    0,
                    from,
                    from_inc,
                    Body::MetaEntries {
                        from: have,
                        entries,
                    },
                );
            }
            Body::Alter {
                req,
                broker_epoch,
                leader_epoch,
                partition_epoch,
                isr,
            } => {
                let change = AlterPartition {
                    topic_id: self.topic,
                    partition: 0,
                    leader_epoch,
                    partition_epoch,
                    // As `check_isrs` sends it: no broker epochs (-1).
                    new_isr: isr.iter().map(|r| (*r, -1)).collect(),
                };
                let result =
                    match self
                        .ctl
                        .alter_partition(&self.image, from, broker_epoch, &[change])
                    {
                        Ok(out) => {
                            let r = out.reply[0].result.clone();
                            let offset = self.commit(out.records);
                            match r {
                                Ok(_) => {
                                    Ok(offset
                                        .unwrap_or_else(|| self.image.last_offset().unwrap_or(0)))
                                }
                                Err(e) => Err(e.code),
                            }
                        }
                        Err(e) => Err(e.code),
                    };
                self.count(if result.is_ok() {
                    "ISR changes"
                } else {
                    "ISR changes refused"
                });
                self.note(|| format!("controller: AlterPartition from {from} to {isr:?} (le {leader_epoch}, pe {partition_epoch}) -> {result:?}"));
                self.send_to_node(
                    Addr::Controller,
                    0,
                    from,
                    from_inc,
                    Body::AlterResp { req, result },
                );
            }
            _ => {}
        }
    }

    // ---- the network ----

    fn send(&mut self, from: Addr, from_inc: u64, to: Addr, to_inc: u64, body: Body) {
        if self.rng.chance(60) {
            self.count("messages dropped");
            return;
        }
        let delay = if self.rng.chance(25) {
            self.rng.range(100, 1_500)
        } else {
            self.rng.range(1, 60)
        };
        self.next_seq += 1;
        self.net.push(Msg {
            at: self.now + delay,
            seq: self.next_seq,
            from,
            to,
            from_inc,
            to_inc,
            body,
        });
    }

    fn send_to_node(&mut self, from: Addr, from_inc: u64, to: i32, to_inc: u64, body: Body) {
        self.send(from, from_inc, Addr::Node(to), to_inc, body);
    }

    fn cut(&self, a: Addr, b: Addr) -> bool {
        let isolated = |x: Addr| matches!(x, Addr::Node(id) if self.isolated.contains_key(&id));
        let client_cut = |x: Addr| matches!(x, Addr::Node(id) if self.client_cut.contains_key(&id));
        let client = |x: Addr| matches!(x, Addr::Client(_));
        if client(a) || client(b) {
            client_cut(a) || client_cut(b)
        } else {
            isolated(a) || isolated(b)
        }
    }

    /// Delivers every message due by now, oldest first (messages to a paused node wait; what
    /// is sent meanwhile is due in a later step, every delay being at least 1 ms).
    fn deliver_due(&mut self) {
        let now = self.now;
        let paused: Vec<i32> = self
            .nodes
            .iter()
            .filter(|n| n.up && n.paused)
            .map(|n| n.id)
            .collect();
        let (mut due, rest): (Vec<Msg>, Vec<Msg>) = std::mem::take(&mut self.net)
            .into_iter()
            .partition(|m| m.at <= now && !matches!(m.to, Addr::Node(id) if paused.contains(&id)));
        self.net = rest;
        due.sort_by_key(|m| (m.at, m.seq));
        for m in due {
            if self.cut(m.from, m.to) {
                self.count("messages cut");
                continue;
            }
            if let Addr::Node(id) = m.from {
                let n = &self.nodes[self.idx(id)];
                if !n.up || n.inc != m.from_inc {
                    continue; // its connection died with it
                }
            }
            match m.to {
                Addr::Node(id) => {
                    let i = self.idx(id);
                    if !self.nodes[i].up || self.nodes[i].inc != m.to_inc {
                        continue;
                    }
                    self.node_receive(i, m.from, m.from_inc, m.body);
                }
                Addr::Controller => {
                    if let Addr::Node(id) = m.from {
                        self.controller_receive(id, m.from_inc, m.body);
                    }
                }
                Addr::Client(c) => self.client_receive(c, m.from, m.body),
            }
        }
    }

    // ---- brokers ----

    /// Applies metadata entries (`Broker::apply_delta`): the image, then the partition's role.
    fn apply_metadata(&mut self, i: usize, from: usize, entries: Vec<(u64, Vec<u8>)>) {
        let n = &mut self.nodes[i];
        if from > n.applied {
            return; // a gap: an older request's answer is still to come
        }
        let mut changed = false;
        for (k, (offset, entry)) in entries.iter().enumerate() {
            if from + k < n.applied {
                continue;
            }
            n.image
                .apply_entry(*offset, entry)
                .expect("committed entries apply");
            n.applied += 1;
            changed = true;
        }
        if !changed {
            return;
        }
        let Some(a) = assignment_of(&n.image, self.topic) else {
            return;
        };
        if n.assignment.as_ref() == Some(&a) {
            return;
        }
        let now = self.now as i64;
        let node = n.id;
        if a.leader == node && n.epochs.last().is_none_or(|e| e.0 < a.leader_epoch) {
            // A new leader epoch starts at this replica's log end (Kafka's rule).
            let leo = n.leo();
            epoch_assign(&mut n.epochs, a.leader_epoch, leo);
        }
        n.assignment = Some(a.clone());
        // `Partition::sync_role`.
        if a.leader != node {
            n.leader = None;
        } else {
            match &mut n.leader {
                Some(l) if l.leader_epoch == a.leader_epoch => l.reassigned(&a, now),
                _ => n.leader = Some(LeaderState::new(&a, n.leo(), now)),
            }
        }
        if n.fetch.is_some_and(|(_, leader, _, _)| leader != a.leader) {
            // The fetcher for the old leader is stopped (`reconcile_fetchers`).
            n.fetch = None;
        }
        self.advance_hw(i, MIN_INSYNC);
        let (id, leads) = (self.nodes[i].id, self.nodes[i].leader.is_some());
        self.note(|| format!("node {id} applies {a:?} (leads: {leads})"));
    }

    /// `Partition::advance_high_watermark`.
    fn advance_hw(&mut self, i: usize, min_insync: usize) {
        let durable_only = self.model.leader_hw_counts_durable_only;
        let n = &mut self.nodes[i];
        let (Some(l), Some(a)) = (n.leader.as_ref(), n.assignment.as_ref()) else {
            return;
        };
        let own = if durable_only {
            n.durable as i64
        } else {
            n.leo()
        };
        let hw = if self.model.mutation == Some(Mutation::HwSkipsUnconfirmed) {
            let mut confirmed = a.clone();
            confirmed.isr.retain(|r| {
                *r == l.leader || l.followers.get(r).is_some_and(|f| f.log_end_offset >= 0)
            });
            if confirmed.isr.len() < min_insync {
                n.hw
            } else {
                l.high_watermark(&confirmed, own, n.hw, 1)
            }
        } else {
            l.high_watermark(a, own, n.hw, min_insync)
        };
        if hw > n.hw {
            let (id, before, isr) = (n.id, n.hw, a.isr.clone());
            n.hw = hw.clamp(0, n.leo());
            if isr.len() < MIN_INSYNC && self.model.check_frozen_hw {
                self.fail(
                    "the high watermark does not move while the ISR is below min.insync.replicas",
                    format!("leader {id} with ISR {isr:?}: {before} -> {hw}"),
                );
            }
        }
    }

    fn check_leader(n: &Node, current_leader_epoch: i32) -> ErrorCode {
        let Some(a) = &n.assignment else {
            return ErrorCode::UNKNOWN_TOPIC_OR_PARTITION;
        };
        if a.leader != n.id {
            ErrorCode::NOT_LEADER_OR_FOLLOWER
        } else if current_leader_epoch < 0 || current_leader_epoch == a.leader_epoch {
            ErrorCode::NONE
        } else if current_leader_epoch > a.leader_epoch {
            ErrorCode::UNKNOWN_LEADER_EPOCH
        } else {
            ErrorCode::FENCED_LEADER_EPOCH
        }
    }

    /// The leader's side of a follower's fetch (`read_partition` + `follower_fetched`).
    fn serve_fetch(
        &mut self,
        i: usize,
        follower: i32,
        current_leader_epoch: i32,
        fetch_offset: i64,
        last_fetched_epoch: i32,
    ) -> FetchAnswer {
        let now = self.now as i64;
        let n = &mut self.nodes[i];
        let check = Self::check_leader(n, current_leader_epoch);
        if check != ErrorCode::NONE {
            return FetchAnswer::Error(check);
        }
        let leo = n.leo();
        let leader_end = (last_fetched_epoch >= 0)
            .then(|| epoch_end_offset_for(&n.epochs, last_fetched_epoch, leo))
            .flatten();
        if let Some((epoch, end_offset)) =
            diverging_epoch(last_fetched_epoch, fetch_offset, leader_end)
        {
            if self.model.mutation != Some(Mutation::NoDivergingEpoch) {
                return FetchAnswer::Diverging { epoch, end_offset };
            }
        }
        if fetch_offset > leo || fetch_offset < 0 {
            return FetchAnswer::OutOfRange {
                high_watermark: n.hw,
            };
        }
        let Some(l) = n.leader.as_mut() else {
            return FetchAnswer::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        };
        if !l.on_fetch(follower, fetch_offset, leo, now) {
            return FetchAnswer::Error(ErrorCode::NOT_LEADER_OR_FOLLOWER);
        }
        self.advance_hw(i, MIN_INSYNC);
        let n = &self.nodes[i];
        let mut recs = Vec::new();
        let mut o = fetch_offset as usize;
        while o < n.log.len() {
            let mut end = o + 1;
            while end < n.log.len() && !n.log[end].batch_start {
                end += 1;
            }
            if !recs.is_empty() && recs.len() + (end - o) > FETCH_MAX_RECORDS {
                break;
            }
            for k in o..end {
                recs.push((k as i64, n.log[k]));
            }
            o = end;
        }
        FetchAnswer::Records {
            recs,
            high_watermark: n.hw,
        }
    }

    /// A follower applies a fetch answer (`handle_fetch_response` and the partition's
    /// `truncate_diverged`, `reset_out_of_range`, `append_as_follower`).
    fn follower_apply(&mut self, i: usize, asked_epoch: i32, answer: FetchAnswer) {
        let now = self.now;
        let n = &mut self.nodes[i];
        let id = n.id;
        match answer {
            FetchAnswer::Error(code) => {
                n.fetch_not_before = now + FETCH_BACKOFF;
                self.note(|| format!("node {id}: fetch refused: {code:?}"));
            }
            FetchAnswer::Diverging { epoch, end_offset } => {
                let own_end =
                    epoch_end_offset_for(&n.epochs, epoch, n.leo()).map_or(n.leo(), |(_, e)| e);
                let target = truncation_offset(end_offset, own_end);
                let before = n.leo();
                n.cut_to(target);
                let after = n.leo();
                self.count("truncations (diverging epoch)");
                self.note(|| format!("node {id}: diverging epoch {epoch} ends at {end_offset}: truncated {before} -> {after}"));
            }
            FetchAnswer::OutOfRange { high_watermark } => {
                // `reset_out_of_range` with log start 0: cut to the leader's high watermark.
                let before = n.leo();
                n.cut_to(high_watermark);
                let after = n.leo();
                self.count("truncations (out of range)");
                self.note(|| format!("node {id}: out of range: truncated {before} -> {after}"));
            }
            FetchAnswer::Records {
                recs,
                high_watermark,
            } => {
                let Some(a) = &n.assignment else { return };
                if a.leader == n.id || a.leader_epoch != asked_epoch {
                    n.fetch_not_before = now + FETCH_BACKOFF;
                    return; // FENCED_LEADER_EPOCH: fetched in another epoch
                }
                let count = recs.len();
                for (offset, rec) in recs {
                    if offset != n.leo() {
                        let leo = n.leo();
                        self.fail(
                            "the model: replicated records arrive at the log end",
                            format!("node {id} at {leo} got offset {offset}"),
                        );
                    }
                    if rec.batch_start
                        && rec.epoch >= 0
                        && n.epochs.last().is_none_or(|e| rec.epoch > e.0)
                    {
                        epoch_assign(&mut n.epochs, rec.epoch, offset);
                    }
                    n.log.push(rec);
                }
                let hw = high_watermark.min(n.leo());
                if hw > n.hw {
                    n.hw = hw;
                }
                if count > 0 {
                    // fsync before the next fetch reports the new log end.
                    n.fetch_needs_durable = n.log.len();
                    n.sync_wanted = n.sync_wanted.max(n.log.len());
                    let (leo, hwm) = (n.leo(), n.hw);
                    self.note(|| {
                        format!("node {id}: appended {count} records, log end {leo}, hw {hwm}")
                    });
                } else {
                    n.fetch_not_before = now + self.rng.range(20, 300);
                }
            }
        }
    }

    fn node_receive(&mut self, i: usize, from: Addr, from_inc: u64, body: Body) {
        let now = self.now;
        let id = self.nodes[i].id;
        let inc = self.nodes[i].inc;
        match body {
            Body::Registered { req, result } => {
                let n = &mut self.nodes[i];
                if n.reg.map(|r| r.0) != Some(req) {
                    return;
                }
                n.reg = None;
                match result {
                    Ok(epoch) => {
                        n.broker_epoch = Some(epoch);
                        n.next_heartbeat = now;
                    }
                    Err(_) => n.reg = Some((0, now)), // retry after REGISTER_RETRY
                }
            }
            Body::HeartbeatResp {
                broker_epoch,
                result,
            } => {
                let n = &mut self.nodes[i];
                if n.broker_epoch == Some(broker_epoch) && result == Ok(false) && !n.serving {
                    // `start_quorum` returns: the broker serves from now on.
                    n.serving = true;
                    self.note(|| format!("node {id} is unfenced and serves"));
                    return;
                }
                if n.broker_epoch == Some(broker_epoch)
                    && result == Err(ErrorCode::STALE_BROKER_EPOCH)
                {
                    // Our registration was replaced (a registration call answered after we
                    // gave up on it): register again.
                    n.broker_epoch = None;
                    n.reg = None;
                    self.count("re-registrations after a stale epoch");
                }
            }
            Body::MetaEntries { from, entries } => {
                self.nodes[i].meta_sent = None;
                self.apply_metadata(i, from, entries);
            }
            Body::Fetch {
                req,
                current_leader_epoch,
                fetch_offset,
                last_fetched_epoch,
            } => {
                let Addr::Node(follower) = from else { return };
                if !self.nodes[i].serving {
                    return; // not listening yet
                }
                let answer = self.serve_fetch(
                    i,
                    follower,
                    current_leader_epoch,
                    fetch_offset,
                    last_fetched_epoch,
                );
                self.send(
                    Addr::Node(id),
                    inc,
                    from,
                    from_inc,
                    Body::FetchResp { req, answer },
                );
            }
            Body::FetchResp { req, answer } => {
                let n = &self.nodes[i];
                let Some((r, _, asked_epoch, _)) = n.fetch else {
                    return;
                };
                if r != req {
                    return;
                }
                self.nodes[i].fetch = None;
                self.follower_apply(i, asked_epoch, answer);
            }
            Body::AlterResp { req, result } => {
                let n = &mut self.nodes[i];
                let Some(k) = n.alters.iter().position(|a| a.req == req) else {
                    return;
                };
                match result {
                    Ok(offset) => n.alters[k].committed = Some(offset),
                    Err(code) => {
                        let call = n.alters.remove(k);
                        let any = self.model.clear_pending_on_any_call_failure;
                        if let Some(l) = n.leader.as_mut() {
                            if any
                                || (code == ErrorCode::INELIGIBLE_REPLICA
                                    && l.pending == call.pending)
                            {
                                l.pending = None;
                            }
                        }
                        self.note(|| format!("node {id}: ISR change refused: {code:?}"));
                    }
                }
            }
            Body::Produce { req, values } => {
                let Addr::Client(c) = from else { return };
                if !self.nodes[i].serving {
                    return; // not listening yet
                }
                self.produce(i, c, req, values);
            }
            _ => {}
        }
    }

    /// A produce at a node (`write` + `append_as_leader`, then the acks=all wait).
    fn produce(&mut self, i: usize, client: usize, req: u64, values: Vec<u64>) {
        let acks_all = self.clients[client].acks_all;
        let now = self.now;
        let n = &mut self.nodes[i];
        let id = n.id;
        let check = Self::check_leader(n, -1);
        let reply = |code| Body::ProduceResp {
            req,
            result: Err(code),
        };
        if check != ErrorCode::NONE {
            let inc = n.inc;
            self.send(Addr::Node(id), inc, Addr::Client(client), 0, reply(check));
            return;
        }
        let a = n.assignment.clone().expect("checked");
        if acks_all && a.isr.len() < MIN_INSYNC {
            let inc = n.inc;
            self.count("NOT_ENOUGH_REPLICAS");
            self.send(
                Addr::Node(id),
                inc,
                Addr::Client(client),
                0,
                reply(ErrorCode::NOT_ENOUGH_REPLICAS),
            );
            return;
        }
        let base = n.leo();
        for (k, v) in values.iter().enumerate() {
            n.log.push(Rec {
                epoch: a.leader_epoch,
                value: *v,
                batch_start: k == 0,
            });
        }
        let last = n.leo() - 1;
        if n.epochs.last().is_none_or(|e| a.leader_epoch > e.0) {
            epoch_assign(&mut n.epochs, a.leader_epoch, base);
        }
        let min_insync = if acks_all || !self.model.acks1_advances_with_min_insync_1 {
            MIN_INSYNC
        } else {
            1
        };
        self.advance_hw(i, min_insync);
        let hw = self.nodes[i].hw;
        self.note(|| {
            format!(
                "node {id}: appends {values:?} at {base}..={last} in epoch {} (acks={}), hw {hw}",
                a.leader_epoch,
                if acks_all { "all" } else { "1" }
            )
        });
        let n = &mut self.nodes[i];
        if acks_all {
            n.sync_wanted = n.sync_wanted.max(n.log.len());
            n.produces.push(PendingProduce {
                client,
                req,
                base,
                last,
                leader_epoch: a.leader_epoch,
                deadline: now + PRODUCE_TIMEOUT,
            });
        } else {
            let inc = n.inc;
            self.send(
                Addr::Node(id),
                inc,
                Addr::Client(client),
                0,
                Body::ProduceResp {
                    req,
                    result: Ok(base),
                },
            );
        }
    }

    /// A node's own work this step: fsync completion, registration, heartbeats, metadata,
    /// fetching, ISR checks, acks=all answers, the high-watermark checkpoint.
    fn node_tick(&mut self, i: usize) {
        let now = self.now;
        if !self.nodes[i].live() {
            return;
        }
        let (id, inc) = (self.nodes[i].id, self.nodes[i].inc);
        // Group commit.
        {
            let n = &mut self.nodes[i];
            if let Some((end, done)) = n.fsync {
                if done <= now {
                    n.durable = n.durable.max(end.min(n.log.len()));
                    n.fsync = None;
                }
            }
            // An fsync covers everything appended when it starts; it is asked for by a
            // follower's append and by an acks=all write (acks=1 data waits for the next).
            if n.fsync.is_none() && n.durable < n.sync_wanted.min(n.log.len()) {
                // Usually quick; now and then the disk stalls.
                let delay = if self.rng.chance(15) {
                    self.rng.range(50, 1_500)
                } else {
                    self.rng.range(1, 30)
                };
                n.fsync = Some((n.log.len(), now + delay));
            }
        }
        if self.nodes[i].next_hw_ckpt <= now {
            let n = &mut self.nodes[i];
            n.hw_ckpt = n.hw;
            n.next_hw_ckpt = now + HW_CHECKPOINT_INTERVAL;
        }
        // Registration and heartbeats.
        match self.nodes[i].broker_epoch {
            None => {
                // `register_self`: once the metadata is loaded, fence this node's previous
                // registration (another incarnation's) if it is still unfenced, then register
                // (one call at a time; a call that gets no answer is tried again).
                let due = self.nodes[i]
                    .reg
                    .is_none_or(|(_, sent)| now >= sent + REGISTER_RETRY);
                if due && self.nodes[i].applied > 0 {
                    let previous = self.nodes[i]
                        .image
                        .broker(id)
                        .filter(|b| b.incarnation_id != node_uuid(id, inc) && !b.fenced)
                        .map(|b| b.epoch);
                    self.next_req += 1;
                    let req = self.next_req;
                    self.nodes[i].reg = Some((req, now));
                    let metadata_offset = self.nodes[i].metadata_offset();
                    let body = match previous {
                        Some(broker_epoch) => Body::Heartbeat {
                            broker_epoch,
                            metadata_offset,
                            want_fence: true,
                        },
                        None => Body::Register {
                            incarnation: inc,
                            req,
                        },
                    };
                    self.send(Addr::Node(id), inc, Addr::Controller, 0, body);
                }
            }
            Some(epoch) => {
                if self.nodes[i].next_heartbeat <= now {
                    self.nodes[i].next_heartbeat = now + HEARTBEAT_INTERVAL;
                    let metadata_offset = self.nodes[i].metadata_offset();
                    self.send(
                        Addr::Node(id),
                        inc,
                        Addr::Controller,
                        0,
                        Body::Heartbeat {
                            broker_epoch: epoch,
                            metadata_offset,
                            want_fence: false,
                        },
                    );
                }
            }
        }
        // Metadata.
        {
            let n = &self.nodes[i];
            let stale = n.meta_sent.is_some_and(|s| now >= s + 2_000);
            if n.next_meta <= now && (n.meta_sent.is_none() || stale) {
                let have = n.applied;
                self.nodes[i].meta_sent = Some(now);
                self.nodes[i].next_meta = now + METADATA_INTERVAL;
                self.send(
                    Addr::Node(id),
                    inc,
                    Addr::Controller,
                    0,
                    Body::MetaFetch { have },
                );
            }
        }
        if !self.nodes[i].serving {
            return;
        }
        // The follower's fetcher.
        {
            let n = &mut self.nodes[i];
            if n.fetch
                .is_some_and(|(_, _, _, sent)| now >= sent + FETCH_TIMEOUT)
            {
                n.fetch = None; // the connection is dropped and the fetch sent again
            }
            let follows = n
                .assignment
                .as_ref()
                .filter(|a| a.leader >= 0 && a.leader != n.id && a.replicas.contains(&n.id))
                .map(|a| (a.leader, a.leader_epoch));
            if let Some((leader, epoch)) = follows {
                let synced = n.durable >= n.fetch_needs_durable.min(n.log.len())
                    || self.model.mutation == Some(Mutation::FetchBeforeFsync);
                if n.fetch.is_none() && n.fetch_not_before <= now && synced {
                    self.next_req += 1;
                    let req = self.next_req;
                    n.fetch = Some((req, leader, epoch, now));
                    let body = Body::Fetch {
                        req,
                        current_leader_epoch: epoch,
                        fetch_offset: n.leo(),
                        last_fetched_epoch: n.epochs.last().map_or(-1, |e| e.0),
                    };
                    let li = self.idx(leader);
                    let to_inc = self.nodes[li].inc;
                    self.send(Addr::Node(id), inc, Addr::Node(leader), to_inc, body);
                }
            }
        }
        // Leaders: AlterPartition calls that time out or whose commit was not applied in time
        // fail, and `check_isrs` clears the pending change.
        {
            let clear = self.model.clear_pending_on_any_call_failure;
            let n = &mut self.nodes[i];
            let applied = n.metadata_offset();
            let mut failed = false;
            n.alters.retain(|a| {
                if a.committed.is_some_and(|o| applied >= o) {
                    return false; // answered
                }
                if now >= a.sent + CALL_TIMEOUT {
                    failed = true;
                    return false;
                }
                true
            });
            if failed && clear {
                if let Some(l) = n.leader.as_mut() {
                    l.pending = None;
                }
                self.count("ISR calls timed out");
                self.note(|| {
                    format!("node {id}: AlterPartition timed out: pending change cleared")
                });
            }
        }
        if self.nodes[i].next_isr_check <= now {
            self.nodes[i].next_isr_check = now + ISR_CHECK;
            let n = &mut self.nodes[i];
            if let (Some(a), Some(l)) = (n.assignment.clone(), n.leader.as_mut()) {
                if a.replicas.len() >= 2 {
                    let resend = (!self.model.retry_recomputes_pending)
                        .then(|| l.pending.clone())
                        .flatten();
                    let (wanted, based_on) = match resend {
                        // Ask the same change again once it has been pending long enough.
                        Some(p) => (
                            (now as i64 - p.sent_ms
                                >= skein_broker::replication::PENDING_ISR_RETRY_MS)
                                .then_some(p.isr),
                            p.based_on_partition_epoch,
                        ),
                        None => (
                            l.wanted_isr(&a, n.hw, now as i64, REPLICA_LAG_MAX),
                            a.partition_epoch,
                        ),
                    };
                    if let Some(isr) = wanted {
                        l.mark_pending(isr.clone(), based_on, now as i64);
                        self.next_req += 1;
                        let req = self.next_req;
                        n.alters.push(PendingAlter {
                            req,
                            sent: now,
                            pending: l.pending.clone(),
                            committed: None,
                        });
                        let broker_epoch = n.broker_epoch.unwrap_or(-1);
                        self.note(|| format!("node {id}: asks ISR {:?} -> {isr:?}", a.isr));
                        self.send(
                            Addr::Node(id),
                            inc,
                            Addr::Controller,
                            0,
                            Body::Alter {
                                req,
                                broker_epoch,
                                leader_epoch: a.leader_epoch,
                                partition_epoch: based_on,
                                isr,
                            },
                        );
                    }
                }
            }
        }
        // acks=all answers (`wait_for_commits`), after the leader's own fsync.
        let mut answers = Vec::new();
        {
            let n = &mut self.nodes[i];
            let a = n.assignment.clone();
            let (durable, hw, node) = (n.durable as i64, n.hw, n.id);
            n.produces.retain(|p| {
                let moved = a
                    .as_ref()
                    .is_none_or(|a| a.leader != node || a.leader_epoch != p.leader_epoch);
                if moved {
                    answers.push((p.client, p.req, Err(ErrorCode::NOT_LEADER_OR_FOLLOWER)));
                    return false;
                }
                if durable > p.last && hw > p.last {
                    answers.push((p.client, p.req, Ok(p.base)));
                    return false;
                }
                if now >= p.deadline {
                    answers.push((p.client, p.req, Err(ErrorCode::REQUEST_TIMED_OUT)));
                    return false;
                }
                true
            });
        }
        for (client, req, result) in answers {
            if result.is_ok() {
                let hw = self.nodes[i].hw;
                self.note(|| format!("node {id}: acks=all request {req} done (hw {hw})"));
            }
            self.send(
                Addr::Node(id),
                inc,
                Addr::Client(client),
                0,
                Body::ProduceResp { req, result },
            );
        }
    }

    // ---- clients ----

    fn client_receive(&mut self, c: usize, from: Addr, body: Body) {
        let Body::ProduceResp { req, result } = body else {
            return;
        };
        let Some((r, values, _, _)) = self.clients[c].inflight.clone() else {
            return;
        };
        if r != req {
            return;
        }
        self.clients[c].inflight = None;
        self.clients[c].next_send = self.now + self.rng.range(0, 200);
        match result {
            Ok(base) if self.clients[c].acks_all => {
                for (k, v) in values.iter().enumerate() {
                    let offset = base + k as i64;
                    if let Some(other) = self.acked_at.get(&offset) {
                        self.fail(
                            "no two values acknowledged at one offset",
                            format!("{v} and {other} at {offset}"),
                        );
                    }
                    self.acked.insert(*v, offset);
                    self.acked_at.insert(offset, *v);
                }
                self.count("acks=all acknowledged");
                self.note(|| format!("client {c}: acknowledged {values:?} at {base} by {from:?}"));
            }
            Ok(_) => self.count("acks=1 acknowledged"),
            Err(code) => {
                self.clients[c].belief = None;
                self.note(|| format!("client {c}: {values:?} failed: {code:?}"));
            }
        }
    }

    fn client_tick(&mut self, c: usize) {
        let now = self.now;
        if self.clients[c]
            .inflight
            .as_ref()
            .is_some_and(|(_, _, sent, _)| now >= sent + CLIENT_TIMEOUT)
        {
            self.clients[c].inflight = None; // outcome unknown
            self.clients[c].belief = None;
        }
        if self.clients[c].belief.is_none() || self.rng.chance(40) {
            // Metadata from a random reachable broker, which may be stale.
            let reachable: Vec<usize> = (0..self.nodes.len())
                .filter(|i| {
                    self.nodes[*i].live() && !self.client_cut.contains_key(&self.nodes[*i].id)
                })
                .collect();
            if !reachable.is_empty() {
                let i = reachable[self.rng.below(reachable.len() as u64) as usize];
                self.clients[c].belief = self.nodes[i]
                    .assignment
                    .as_ref()
                    .filter(|a| a.leader >= 0)
                    .map(|a| (a.leader, a.leader_epoch));
            }
        }
        if self.phase != "chaos"
            || self.clients[c].inflight.is_some()
            || self.clients[c].next_send > now
        {
            return;
        }
        let Some((leader, _)) = self.clients[c].belief else {
            return;
        };
        let k = self.rng.range(1, 3);
        let values: Vec<u64> = (0..k).map(|j| self.next_value + j).collect();
        self.next_value += k;
        self.next_req += 1;
        let req = self.next_req;
        self.clients[c].inflight = Some((req, values.clone(), now, leader));
        let li = self.idx(leader);
        let to_inc = self.nodes[li].inc;
        self.send(
            Addr::Client(c),
            0,
            Addr::Node(leader),
            to_inc,
            Body::Produce { req, values },
        );
    }

    // ---- faults ----

    fn crash(&mut self, i: usize) {
        let keep_extra = {
            let n = &self.nodes[i];
            let unsynced = n.log.len() - n.durable;
            self.rng.below(unsynced as u64 + 1) as usize
        };
        let n = &mut self.nodes[i];
        // The unfsynced tail is lost, maybe only in part; recovery keeps whole batches.
        let mut keep = n.durable + keep_extra;
        while keep > n.durable && keep < n.log.len() && !n.log[keep].batch_start {
            keep -= 1;
        }
        let before = n.log.len();
        n.log.truncate(keep);
        n.durable = keep;
        n.sync_wanted = keep;
        let leo = n.leo();
        epoch_truncate_from_end(&mut n.epochs, leo);
        n.up = false;
        n.paused = false;
        n.fsync = None;
        n.leader = None;
        n.assignment = None;
        n.produces.clear();
        n.alters.clear();
        n.fetch = None;
        n.led = None;
        let id = n.id;
        self.count("crashes");
        self.note(|| format!("node {id} crashes: log {before} -> {keep} (durable {keep})"));
    }

    fn restart(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        let id = n.id;
        n.up = true;
        n.inc += 1;
        n.hw = n.hw_ckpt.clamp(0, n.leo());
        n.hw_may_drop = true;
        n.image = MetadataImage::new();
        n.applied = 0;
        n.broker_epoch = None;
        n.serving = false;
        n.reg = None;
        n.meta_sent = None;
        n.next_meta = self.now;
        n.fetch_needs_durable = 0;
        n.fetch_not_before = 0;
        n.next_isr_check = self.now;
        let (leo, hw) = (n.leo(), n.hw);
        self.count("restarts");
        self.note(|| format!("node {id} restarts: log end {leo}, hw {hw}"));
    }

    fn chaos(&mut self) {
        let i = self.rng.below(self.nodes.len() as u64) as usize;
        let id = self.nodes[i].id;
        let now = self.now;
        match self.rng.below(1_000) {
            0..=5 if self.nodes[i].up => self.crash(i),
            6..=40 if !self.nodes[i].up => self.restart(i),
            41..=47 if self.nodes[i].live() => {
                self.nodes[i].paused = true;
                self.count("pauses");
                self.note(|| format!("node {id} paused"));
            }
            48..=80 if self.nodes[i].paused => {
                self.nodes[i].paused = false;
                self.note(|| format!("node {id} resumed"));
            }
            81..=88 if !self.isolated.contains_key(&id) => {
                let until = now + self.rng.range(500, 8_000);
                self.isolated.insert(id, until);
                self.count("isolations");
                self.note(|| format!("node {id} cut off from the others until {until}"));
            }
            89..=92 if !self.client_cut.contains_key(&id) => {
                let until = now + self.rng.range(500, 5_000);
                self.client_cut.insert(id, until);
                self.note(|| format!("node {id} cut off from its clients until {until}"));
            }
            _ => {}
        }
        self.isolated.retain(|_, until| *until > now);
        self.client_cut.retain(|_, until| *until > now);
    }

    // ---- invariants ----

    fn check(&mut self) {
        let isr: Vec<i32> = self
            .image
            .partition(self.topic, 0)
            .map(|s| s.isr.clone())
            .unwrap_or_default();
        if isr.is_empty() {
            self.fail("the ISR is never empty", String::new());
        }
        // 1. Acknowledged records are in every ISR member's fsynced log.
        for r in &isr {
            let n = &self.nodes[self.idx(*r)];
            for (v, o) in &self.acked {
                let ok = (*o as usize) < n.durable && n.log[*o as usize].value == *v;
                if !ok {
                    self.fail(
                        "no acknowledged record lost (every ISR member has it fsynced)",
                        format!(
                            "value {v} acknowledged at offset {o}; ISR {isr:?}; node {} has {:?} (durable {}, log end {}, hw {})",
                            n.id,
                            n.log.get(*o as usize),
                            n.durable,
                            n.leo(),
                            n.hw
                        ),
                    );
                }
            }
        }
        // 2. Live replicas agree below both high watermarks.
        for a in 0..self.nodes.len() {
            for b in a + 1..self.nodes.len() {
                let (x, y) = (&self.nodes[a], &self.nodes[b]);
                if !x.up || !y.up {
                    continue;
                }
                let upto = x.hw.min(y.hw).max(0) as usize;
                if let Some(o) = (0..upto).find(|o| x.log[*o] != y.log[*o]) {
                    self.fail(
                        "replicas agree below the high watermark",
                        format!(
                            "offset {o}: node {} has {:?} (hw {}), node {} has {:?} (hw {})",
                            x.id, x.log[o], x.hw, y.id, y.log[o], y.hw
                        ),
                    );
                }
            }
        }
        // 3. What a leader exposed below its high watermark never changes.
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if !n.up || n.leader.is_none() {
                continue;
            }
            let hw = n.hw.max(0) as usize;
            let known = self.committed.len().min(hw);
            if let Some(o) = (0..known).find(|o| n.log[*o] != self.committed[*o]) {
                self.fail(
                    "committed records never change (a leader's prefix below its high watermark)",
                    format!(
                        "offset {o}: once exposed as {:?}, now leader {} (epoch {:?}) has {:?} below its hw {}",
                        self.committed[o],
                        n.id,
                        n.leader.as_ref().map(|l| l.leader_epoch),
                        n.log[o],
                        n.hw
                    ),
                );
            }
            if hw > self.committed.len() {
                let more = n.log[self.committed.len()..hw].to_vec();
                self.committed.extend(more);
            }
        }
        // 4. One leader per epoch, 5. monotonic high watermarks.
        for i in 0..self.nodes.len() {
            let n = &self.nodes[i];
            if n.up {
                if let Some(l) = &n.leader {
                    match self.epoch_leaders.get(&l.leader_epoch) {
                        Some(c) if *c == n.id => {}
                        other => self.fail(
                            "one leader per leader epoch (a node leads only the epoch the controller gave it)",
                            format!("node {} leads epoch {} which the controller gave to {other:?}", n.id, l.leader_epoch),
                        ),
                    }
                    if let Some((e, hw)) = n.led {
                        if e == l.leader_epoch && n.hw < hw {
                            self.fail(
                                "the high watermark never goes back while a node leads in one epoch",
                                format!("node {} epoch {e}: {hw} -> {}", n.id, n.hw),
                            );
                        }
                    }
                }
                if n.hw < n.last_hw && !n.hw_may_drop {
                    self.fail(
                        "a high watermark drops only on truncation or restart",
                        format!("node {}: {} -> {}", n.id, n.last_hw, n.hw),
                    );
                }
                if n.hw > n.leo() || n.durable > n.log.len() {
                    self.fail("hw ≤ log end, durable ≤ log end", format!("node {}", n.id));
                }
            }
            let n = &mut self.nodes[i];
            n.led = n.leader.as_ref().map(|l| (l.leader_epoch, n.hw));
            n.last_hw = n.hw;
            n.hw_may_drop = false;
        }
    }

    // ---- driving ----

    fn step_once(&mut self, chaos: bool) {
        self.step += 1;
        self.now += self.rng.range(5, 120);
        if chaos {
            self.chaos();
        }
        self.deliver_due();
        let out = self.ctl.tick(&self.image, self.now);
        if !out.reply.fenced.is_empty() {
            let fenced = out.reply.fenced.clone();
            self.note(|| format!("controller fences {fenced:?}"));
            self.count("fencings");
        }
        self.commit(out.records);
        for i in 0..self.nodes.len() {
            self.node_tick(i);
        }
        for c in 0..self.clients.len() {
            self.client_tick(c);
        }
        self.check();
    }

    fn run(&mut self) {
        for _ in 0..CHAOS_STEPS {
            self.step_once(true);
        }
        // Heal: every node back, nothing cut off, no more faults or writes.
        self.phase = "settle";
        self.note(|| "healing".into());
        self.isolated.clear();
        self.client_cut.clear();
        for i in 0..self.nodes.len() {
            if !self.nodes[i].up {
                self.restart(i);
            }
            self.nodes[i].paused = false;
        }
        for _ in 0..SETTLE_STEPS {
            self.step_once(false);
        }
        let leader = self
            .image
            .partition(self.topic, 0)
            .map(|s| s.leader)
            .unwrap_or(NO_LEADER);
        if leader == NO_LEADER {
            self.fail(
                "a healed cluster elects a leader",
                format!("{:?}", self.image.partition(self.topic, 0)),
            );
        }
        let n = &self.nodes[self.idx(leader)];
        for (v, o) in &self.acked {
            if *o >= n.hw || n.log[*o as usize].value != *v {
                self.fail(
                    "after healing, the leader serves every acknowledged record",
                    format!(
                        "value {v} at {o}; leader {leader} hw {} log end {}",
                        n.hw,
                        n.leo()
                    ),
                );
            }
        }
    }
}

/// Runs one seed; on failure, runs it again recording a trace and prints the last steps.
fn run_seed(seed: u64, model: Model) -> Result<BTreeMap<&'static str, u64>, String> {
    install_quiet_hook();
    QUIET.with(|q| q.set(true));
    let first = catch_unwind(AssertUnwindSafe(|| {
        let mut sim = Sim::new(seed, model, std::env::var_os("SKEIN_SIM_TRACE").is_some());
        sim.run();
        sim.stats
    }));
    let result = match first {
        Ok(stats) => Ok(stats),
        Err(e) => {
            let message = panic_message(&e);
            // Replay with the trace on (the run is deterministic, so it fails the same way).
            let mut sim = Sim::new(seed, model, true);
            sim.print_trace = false;
            let replay = catch_unwind(AssertUnwindSafe(|| sim.run()));
            let trace: Vec<String> = sim.trace.take().map(Vec::from).unwrap_or_default();
            let same = replay.as_ref().err().map(panic_message);
            Err(format!(
                "{message}\nlast {} steps of seed {seed}:\n{}\n(replay {}; run it alone with SKEIN_SIM_SEED={seed} cargo test -p skein-broker --test replication_sim)",
                trace.len(),
                trace.join("\n"),
                if same.as_deref() == Some(message.as_str()) { "failed identically" } else { "DIVERGED: the simulation is not deterministic" }
            ))
        }
    };
    QUIET.with(|q| q.set(false));
    result
}

thread_local! {
    /// Set while this thread runs a seed whose panic is caught and reported.
    static QUIET: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// A panic hook, installed once, that stays silent for caught invariant failures (they are
/// reported with their trace) and prints every other panic as usual.
fn install_quiet_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !QUIET.with(|q| q.get()) {
                default(info);
            }
        }));
    });
}

fn panic_message(e: &Box<dyn std::any::Any + Send>) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_else(|| "panic".into())
}

fn seeds() -> Vec<u64> {
    match std::env::var("SKEIN_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SKEIN_SIM_SEED must be a number")],
        Err(_) => match std::env::var("SKEIN_SIM_SEEDS") {
            // `N` (seeds 1..=N) or `A..=B`.
            Ok(v) => match v.split_once("..=") {
                Some((a, b)) => (a.parse().expect("a seed")..=b.parse().expect("a seed")).collect(),
                None => (1..=v.parse().expect("SKEIN_SIM_SEEDS must be N or A..=B")).collect(),
            },
            Err(_) => (1..=DEFAULT_SEEDS).collect(),
        },
    }
}

fn run_seeds(name: &str, model: Model) {
    let seeds = seeds();
    let started = std::time::Instant::now();
    let mut totals: BTreeMap<&'static str, u64> = BTreeMap::new();
    // `SKEIN_SIM_KEEP_GOING=1`: list every failing seed (first line) instead of stopping.
    let keep_going = std::env::var_os("SKEIN_SIM_KEEP_GOING").is_some();
    let mut failed = Vec::new();
    for seed in &seeds {
        match run_seed(*seed, model) {
            Ok(stats) => {
                for (k, v) in stats {
                    *totals.entry(k).or_default() += v;
                }
            }
            Err(report) if keep_going => {
                eprintln!("FAILED {}", report.lines().next().unwrap_or_default());
                failed.push(*seed);
            }
            Err(report) => panic!("{name}: {report}"),
        }
    }
    assert!(failed.is_empty(), "{name}: seeds {failed:?} failed");
    // Straight to stderr, past the test harness's capture: the seeds run are part of the
    // test output even when it passes.
    use std::io::Write;
    let _ = writeln!(
        std::io::stderr(),
        "{name}: seeds {}..={} ({} seeds x {} steps) passed in {:.1?}: {totals:?}",
        seeds.first().unwrap_or(&0),
        seeds.last().unwrap_or(&0),
        seeds.len(),
        CHAOS_STEPS + SETTLE_STEPS,
        started.elapsed()
    );
}

/// The model named by `SKEIN_SIM_MODEL` (for exploring): `spec` (default) or `code`, or
/// `spec` with one of the code's choices: `code-hw`, `code-acks1`, `code-pending`,
/// `code-retry`.
fn model_from_env() -> Model {
    let spec = Model::spec();
    match std::env::var("SKEIN_SIM_MODEL").as_deref() {
        Ok("code") => Model::code(),
        Ok("code-hw") => Model {
            leader_hw_counts_durable_only: false,
            ..spec
        },
        Ok("code-acks1") => Model {
            acks1_advances_with_min_insync_1: true,
            ..spec
        },
        Ok("code-pending") => Model {
            clear_pending_on_any_call_failure: true,
            ..spec
        },
        Ok("code-retry") => Model {
            retry_recomputes_pending: true,
            ..spec
        },
        _ => spec,
    }
}

/// A test must be able to fail: with each deliberate bug, some seed of the budget breaks an
/// invariant.
#[test]
fn the_simulation_catches_broken_replication() {
    for mutation in [
        Mutation::FetchBeforeFsync,
        Mutation::NoDivergingEpoch,
        Mutation::HwSkipsUnconfirmed,
    ] {
        let model = Model {
            mutation: Some(mutation),
            ..Model::spec()
        };
        let caught =
            (1..=MUTATION_SEEDS).find_map(|seed| run_seed(seed, model).err().map(|e| (seed, e)));
        match caught {
            Some((seed, report)) => eprintln!(
                "{mutation:?} caught by seed {seed}: {}",
                report.lines().next().unwrap_or_default()
            ),
            None => panic!("{mutation:?} was not caught by seeds 1..={MUTATION_SEEDS}"),
        }
    }
}

#[test]
fn replication_simulation() {
    run_seeds("replication simulation", model_from_env());
}

/// Replays one seed, which must pass.
fn replay(seed: u64, model: Model) {
    if let Err(report) = run_seed(seed, model) {
        panic!("{report}");
    }
}

/// Found by this simulation and fixed: `LeaderState::wanted_isr` used to let a leader ask a
/// new ISR change once one had been pending for `PENDING_ISR_RETRY_MS`, and `mark_pending`
/// replaced the old one, whose outcome was unknown, so the maximal ISR forgot its additions.
/// Seed 4344: leader 1 (ISR [1, 3]) asks to add 2; the controller commits [1, 3, 2], but
/// leader 1 is cut off before it applies that; 5 s later it asked [1] instead, its high
/// watermark no longer waited for node 2 and moved from 55 to 61 over records node 2 never
/// had; node 2 (in the committed ISR) was elected and wrote other records at offsets 55-56.
/// Now `wanted_isr` asks the same change again (as Kafka's AlterPartitionManager resends the
/// same item), so this replay, through the real `wanted_isr`, passes.
#[test]
fn pending_isr_change_is_resent_not_replaced() {
    replay(
        4344,
        Model {
            retry_recomputes_pending: true,
            ..Model::spec()
        },
    );
}

/// The other three bugs this simulation found, each fixed in the broker, stay caught: with
/// the old behaviour put back in the model, the seed that exposed it fails again.
/// - 6016: `check_isrs` cleared the pending ISR change when any AlterPartition call failed
///   or timed out; an earlier identical call timed out just as a later one was committed,
///   and the leader acknowledged an acks=all write at offset 32 without node 3, which the
///   committed ISR held. Now only INELIGIBLE_REPLICA/INVALID_REQUEST answering the very call
///   that set it clears it (Kafka's `handleAlterPartitionError`).
/// - 1550: the leader counted its unfsynced log end for the high watermark: it exposed
///   offsets 5-8, crashed and lost them, stayed the ISR's last member, came back as leader
///   of epoch 2 and wrote other records at 5-6. Now `LeaderState::durable_only`.
/// - 2: acks=0/1 appends moved the high watermark with a minimum ISR of 1 (ISR [2], 34 ->
///   43). Now every append uses the topic's `min.insync.replicas`.
/// - 215: the code as it was (all four): a leader alone in the ISR moved its high watermark
///   to 45 with unfsynced acks=1 writes, crashed back to 14 and wrote another record at 14.
#[test]
fn the_bugs_it_found_stay_caught() {
    let spec = Model::spec();
    let old = [
        (
            6016,
            Model {
                clear_pending_on_any_call_failure: true,
                ..spec
            },
        ),
        (
            1550,
            Model {
                leader_hw_counts_durable_only: false,
                ..spec
            },
        ),
        (
            2,
            Model {
                acks1_advances_with_min_insync_1: true,
                ..spec
            },
        ),
        (215, Model::code()),
    ];
    for (seed, model) in old {
        match run_seed(seed, model) {
            Err(report) => eprintln!(
                "old behaviour caught by seed {seed}: {}",
                report.lines().next().unwrap_or_default()
            ),
            Ok(_) => panic!("seed {seed} no longer exposes the old behaviour"),
        }
        replay(seed, spec);
    }
}
