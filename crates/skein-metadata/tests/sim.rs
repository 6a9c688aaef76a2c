//! Deterministic simulation of the quorum controller with brokers that register, heartbeat,
//! go silent, crash, come back and shut down in a controlled way, while topics are created,
//! deleted and grown, configs change and producer-id blocks are handed out, and the active
//! controller fails over now and then.
//!
//! The controller's records are encoded as log entries and applied to an image after every
//! operation (one at a time against the committed image, as the real controller runs), and
//! the invariants are checked after EVERY step (every committed entry, the only thing that
//! changes the image; the session invariant after every tick): ISR ⊆ replicas, ISR never empty, leader in the
//! ISR or -1, never a fenced leader, epochs never decrease, the leader epoch grows with every
//! leader change and the partition epoch with every change, no partition offline while an
//! unfenced ISR member exists, fenced and shutting-down brokers out of every ISR they are not
//! the last member of, no shutting-down leader while an active ISR member exists, distinct
//! replicas, a broker silent past the session timeout fenced within one tick, new topics
//! spread over racks with balanced leaders, a controlled shutdown finished only when nothing
//! can be handed over, replies that match the committed image. Snapshots are
//! restored and compared along the way. After the chaos every broker comes back and the
//! cluster must settle with every broker unfenced and every partition led.
//!
//! Every other seed runs with KIP-966 eligible leader replicas on (and a random
//! `min.insync.replicas` of 1-3; restarting brokers now and then lost their logs): the ISR
//! may then empty (never holding a fenced broker), a non-empty ELR means ISR < min ISR and
//! ISR + ELR <= min ISR, the ELR is disjoint from the ISR, a new leader comes from the ISR or
//! the ELR (unless elected uncleanly), no partition is offline while its ISR is empty and an
//! unfenced ELR member exists, and a settled cluster leads every partition except those whose
//! eligible replicas all lost their logs (they wait for an unclean election).
//!
//! Re-run one seed with `SKEIN_SIM_SEED=<seed> cargo test -p skein-metadata --test sim`;
//! `SKEIN_SIM_STATS=1` prints what each seed exercised, `SKEIN_SIM_TRACE=1` every call,
//! `SKEIN_SIM_SEEDS=<n>` runs seeds 1..=n instead of the default 100.

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};

use skein_metadata::controller::{
    AlterConfigs, AlterPartition, ConfigOp, ControllerConfig, Heartbeat, NewPartitions, NewTopic,
    RegisterBroker, TopicRef,
};
use skein_metadata::image::{ConfigResource, Endpoint, NO_LEADER};
use skein_metadata::{encode_batch, ErrorCode, MetadataImage, QuorumController};
use skein_protocol::{MetadataRecord, Uuid};

const SESSION_TIMEOUT: u64 = 9_000;
const HEARTBEAT_INTERVAL: u64 = 2_000;

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
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Run {
    /// Not running.
    Down,
    /// Running; heartbeats unless silent.
    Up,
}

#[derive(Debug)]
struct Broker {
    id: i32,
    rack: Option<String>,
    run: Run,
    incarnation: u64,
    /// The epoch of its current registration, once registered.
    epoch: Option<i64>,
    /// The last metadata offset it applied.
    metadata_offset: u64,
    next_heartbeat: u64,
    /// When the controller last heard from it (registration or accepted heartbeat).
    last_contact: u64,
    /// Running but its heartbeats are lost (paused, cut off).
    silent: bool,
    /// Asked for a controlled shutdown.
    shutting_down: bool,
}

struct Sim {
    rng: Rng,
    now: u64,
    step: usize,
    offset: u64,
    ctl: QuorumController,
    image: MetadataImage,
    brokers: Vec<Broker>,
    stats: BTreeMap<&'static str, u64>,
    /// Faults on (brokers ask to be fenced now and then).
    chaos: bool,
    /// KIP-966 eligible leader replicas on (every other seed), with this `min.insync.replicas`.
    elr: bool,
    min_isr: usize,
}

impl Sim {
    fn new(seed: u64) -> Self {
        let mut rng = Rng(seed);
        let n = 3 + rng.below(4) as i32;
        let rack_mode = rng.below(3);
        let racks = 2 + rng.below(2);
        let brokers = (1..=n)
            .map(|id| Broker {
                id,
                rack: match rack_mode {
                    0 => None,
                    1 => Some(format!("r{}", id as u64 % racks)),
                    _ => (id % 3 != 0).then(|| format!("r{}", id as u64 % racks)),
                },
                run: Run::Up,
                incarnation: 0,
                epoch: None,
                metadata_offset: 0,
                next_heartbeat: 0,
                last_contact: 0,
                silent: false,
                shutting_down: false,
            })
            .collect();
        let elr = seed.is_multiple_of(2);
        let min_isr = 1 + rng.below(3) as i32;
        let config = ControllerConfig {
            session_timeout_ms: SESSION_TIMEOUT,
            eligible_leader_replicas: elr,
            min_insync_replicas: min_isr,
            ..ControllerConfig::default()
        };
        let mut ctl = QuorumController::new(config);
        let image = MetadataImage::new();
        ctl.activate(&image, 0);
        Sim {
            rng,
            now: 0,
            step: 0,
            offset: 0,
            ctl,
            image,
            brokers,
            stats: BTreeMap::new(),
            chaos: true,
            elr,
            min_isr: min_isr as usize,
        }
    }

    fn fail(&self, invariant: &str, detail: String) -> ! {
        panic!(
            "invariant `{invariant}` violated at step {} (t={}): {detail}",
            self.step, self.now
        );
    }

    fn trace(&self, what: impl FnOnce() -> String) {
        if std::env::var_os("SKEIN_SIM_TRACE").is_some() {
            eprintln!("[{} t={}] {}", self.step, self.now, what());
        }
    }

    fn count(&mut self, what: &'static str) {
        *self.stats.entry(what).or_default() += 1;
    }

    /// Commits `records` as one entry (skipping an offset now and then, as Raft's own entries
    /// do) and checks what changed.
    fn commit(&mut self, records: Vec<MetadataRecord>) {
        if records.is_empty() {
            return;
        }
        self.offset += 1 + self.rng.below(2);
        let before = self.image.clone();
        let entry = encode_batch(&records);
        let delta = match self.image.apply_entry(self.offset, &entry) {
            Ok(d) => d,
            Err(e) => self.fail("controller records always apply", format!("{e}")),
        };
        self.count("entries");
        for ((topic, p), d) in &delta.partitions {
            if self.image.partition(*topic, *p) != Some(&d.after) {
                self.fail(
                    "the delta's partition state is the image's",
                    format!("{d:?}"),
                );
            }
        }
        for b in &self.brokers {
            let local = delta.local_changes(b.id);
            if local.leaders.iter().any(|l| l.state.leader != b.id)
                || local.followers.iter().any(|l| !l.state.hosts(b.id))
            {
                self.fail("local changes match the broker", format!("{local:?}"));
            }
        }
        self.check_transition(&before);
        self.check_image();
        for ((topic, p), d) in &delta.partitions {
            let Some(was) = before.partition(*topic, *p) else {
                continue;
            };
            if was.elr.is_empty() && !d.after.elr.is_empty() {
                self.count("ELRs formed");
            }
            if d.after.leader != was.leader && was.elr.contains(&d.after.leader) {
                self.count("leaders elected from an ELR");
            }
        }
    }

    fn check_transition(&self, before: &MetadataImage) {
        for (id, t) in self.image.topics() {
            let Some(old) = before.topic(*id) else {
                continue;
            };
            for (p, now) in t.partitions.iter().enumerate() {
                let Some(was) = old.partitions.get(p) else {
                    continue;
                };
                if now.leader_epoch < was.leader_epoch || now.partition_epoch < was.partition_epoch
                {
                    self.fail(
                        "epochs never decrease",
                        format!("{}-{p}: {was:?} -> {now:?}", t.name),
                    );
                }
                if now.leader != was.leader && now.leader_epoch <= was.leader_epoch {
                    self.fail(
                        "the leader epoch grows on every leader change",
                        format!("{}-{p}: {was:?} -> {now:?}", t.name),
                    );
                }
                if now.leader != was.leader
                    && now.leader != NO_LEADER
                    && !now.leader_recovering
                    && !was.isr.contains(&now.leader)
                    && !was.elr.contains(&now.leader)
                    // A live leader's AlterPartition may add a caught-up member and hand over
                    // to it (the leader shutting down) in one change.
                    && (was.leader == NO_LEADER || now.isr.iter().all(|r| was.isr.contains(r)))
                {
                    self.fail(
                        "a new leader comes from the ISR or the ELR (unless unclean)",
                        format!("{}-{p}: {was:?} -> {now:?}", t.name),
                    );
                }
                if now != was && now.partition_epoch <= was.partition_epoch {
                    self.fail(
                        "the partition epoch grows on every change",
                        format!("{}-{p}: {was:?} -> {now:?}", t.name),
                    );
                }
            }
        }
    }

    fn check_image(&self) {
        let unfenced = |id: i32| self.image.broker(id).is_some_and(|b| !b.fenced);
        let active = |id: i32| self.image.broker(id).is_some_and(|b| b.is_active());
        for t in self.image.topics().values() {
            for (p, s) in t.partitions.iter().enumerate() {
                let name = || format!("{}-{p} {s:?}", t.name);
                let distinct: BTreeSet<_> = s.replicas.iter().collect();
                if s.replicas.is_empty() || distinct.len() != s.replicas.len() {
                    self.fail("replicas are distinct and non-empty", name());
                }
                if s.isr.is_empty() && !self.elr {
                    self.fail("the ISR is never empty", name());
                }
                if s.isr.is_empty() && s.leader != NO_LEADER {
                    self.fail("an empty ISR has no leader", name());
                }
                let has_elr = !s.elr.is_empty() || !s.last_known_elr.is_empty();
                if !self.elr && has_elr {
                    self.fail("no ELR while it is off", name());
                }
                if !s
                    .elr
                    .iter()
                    .all(|r| s.replicas.contains(r) && !s.isr.contains(r))
                {
                    self.fail("ELR ⊆ replicas, disjoint from the ISR", name());
                }
                if !s.elr.is_empty()
                    && (s.isr.len() >= self.min_isr || s.isr.len() + s.elr.len() > self.min_isr)
                {
                    self.fail(
                        "a non-empty ELR means ISR < min ISR and ISR + ELR <= min ISR",
                        name(),
                    );
                }
                if self.elr && s.isr.iter().any(|r| !unfenced(*r)) {
                    self.fail("with the ELR on, no fenced broker is in an ISR", name());
                }
                if s.leader == NO_LEADER && s.isr.is_empty() && s.elr.iter().any(|r| unfenced(*r)) {
                    self.fail(
                        "no partition offline while the ISR is empty and an unfenced ELR member exists",
                        name(),
                    );
                }
                if !s.isr.iter().all(|r| s.replicas.contains(r)) {
                    self.fail("ISR ⊆ replicas", name());
                }
                if s.leader != NO_LEADER && !s.isr.contains(&s.leader) {
                    self.fail("the leader is in the ISR", name());
                }
                if s.leader != NO_LEADER && !unfenced(s.leader) {
                    self.fail("the leader is never fenced", name());
                }
                if s.isr.len() > 1 && !s.isr.iter().all(|r| active(*r)) {
                    self.fail(
                        "fenced and shutting-down brokers leave every ISR they are not the last of",
                        name(),
                    );
                }
                if s.leader != NO_LEADER
                    && !active(s.leader)
                    && s.isr.iter().any(|r| *r != s.leader && active(*r))
                {
                    self.fail(
                        "a shutting-down leader hands over when an active ISR member exists",
                        name(),
                    );
                }
                if s.leader == NO_LEADER && s.isr.iter().any(|r| unfenced(*r)) {
                    self.fail(
                        "no partition offline while an unfenced ISR member exists",
                        name(),
                    );
                }
            }
        }
    }

    /// After a tick: every unfenced broker has been heard from within the session timeout.
    fn check_sessions(&self) {
        for b in self.image.brokers().values().filter(|b| !b.fenced) {
            let sim = self.brokers.iter().find(|s| s.id == b.id).unwrap();
            if self.now > sim.last_contact + SESSION_TIMEOUT {
                self.fail(
                    "a broker silent past the session timeout is fenced within one tick",
                    format!(
                        "broker {} last heard at {}, epoch {}",
                        b.id, sim.last_contact, b.epoch
                    ),
                );
            }
        }
    }

    fn check_snapshot(&mut self) {
        let Some(at) = self.image.last_offset() else {
            return;
        };
        let mut restored = MetadataImage::new();
        if let Err(e) = restored.restore(at, &self.image.snapshot()) {
            self.fail("a snapshot restores", format!("{e}"));
        }
        if restored != self.image {
            self.fail(
                "snapshot → restore gives an equal image",
                format!("{restored:#?}\nvs\n{:#?}", self.image),
            );
        }
        self.count("snapshots");
    }

    fn register(&mut self, i: usize) {
        // With the ELR on, now and then the broker lost its log (an unclean shutdown).
        let id = self.brokers[i].id;
        let lost = self.elr && self.rng.chance(4);
        let previous_broker_epoch = match self.image.broker(id) {
            Some(r) if !lost => r.epoch,
            _ => -1,
        };
        if lost && self.image.broker(id).is_some() {
            self.count("unclean shutdowns");
        }
        let b = &self.brokers[i];
        let request = RegisterBroker {
            broker_id: b.id,
            incarnation_id: Uuid([
                b.id as u8,
                b.incarnation as u8,
                1,
                2,
                3,
                4,
                5,
                6,
                7,
                8,
                9,
                10,
                11,
                12,
                13,
                14,
            ]),
            endpoints: vec![Endpoint {
                name: "PLAINTEXT".into(),
                host: "127.0.0.1".into(),
                port: 9000 + b.id as u16,
                security_protocol: 0,
            }],
            rack: b.rack.clone(),
            previous_broker_epoch,
        };
        let result = self.ctl.register_broker(&self.image, &request, self.now);
        self.trace(|| {
            format!(
                "register {} -> {:?}",
                request.broker_id,
                result.as_ref().map(|o| o.reply)
            )
        });
        match result {
            Ok(out) => {
                self.commit(out.records);
                let epoch = out.reply.broker_epoch;
                if self.image.broker(request.broker_id).map(|r| r.epoch) != Some(epoch) {
                    self.fail("a registration commits its epoch", format!("{epoch}"));
                }
                let now = self.now;
                let jitter = self.rng.below(HEARTBEAT_INTERVAL);
                let b = &mut self.brokers[i];
                b.epoch = Some(epoch);
                b.last_contact = now;
                b.next_heartbeat = now + jitter;
                self.count("registrations");
            }
            Err(e) if e.code == ErrorCode::DUPLICATE_BROKER_REGISTRATION => {
                self.count("duplicate registrations refused");
            }
            Err(e) => self.fail("registration succeeds", format!("{e}")),
        }
    }

    fn heartbeat(&mut self, i: usize) {
        let Some(epoch) = self.brokers[i].epoch else {
            return self.register(i);
        };
        // The broker applies the log with some lag.
        if self.rng.below(4) != 0 {
            self.brokers[i].metadata_offset = self.image.last_offset().unwrap_or(0);
        }
        let b = &self.brokers[i];
        let hb = Heartbeat {
            broker_id: b.id,
            broker_epoch: epoch,
            metadata_offset: b.metadata_offset,
            want_fence: self.chaos && self.rng.chance(80),
            want_shutdown: b.shutting_down,
        };
        self.brokers[i].next_heartbeat = self.now + HEARTBEAT_INTERVAL;
        let result = self.ctl.heartbeat(&self.image, &hb, self.now);
        self.trace(|| {
            format!(
                "{hb:?} -> {:?}",
                result.as_ref().map(|o| (o.reply, o.records.len()))
            )
        });
        match result {
            Ok(out) => {
                self.commit(out.records);
                self.brokers[i].last_contact = self.now;
                let reg = self.image.broker(hb.broker_id).unwrap().clone();
                if reg.fenced != out.reply.is_fenced {
                    self.fail(
                        "the heartbeat reply's fenced flag is the committed one",
                        format!("{reg:?} {:?}", out.reply),
                    );
                }
                if out.reply.should_shut_down {
                    if !reg.fenced {
                        self.check_nothing_to_hand_over(hb.broker_id);
                    }
                    self.count("controlled shutdowns");
                    let b = &mut self.brokers[i];
                    b.run = Run::Down;
                    b.shutting_down = false;
                } else if !reg.fenced && hb.want_shutdown {
                    self.count("controlled shutdown heartbeats");
                }
                if reg.fenced
                    && !reg.in_controlled_shutdown
                    && !hb.want_fence
                    && !hb.want_shutdown
                    && out.reply.is_caught_up
                {
                    self.fail("a caught-up broker is unfenced", format!("{reg:?}"));
                }
            }
            Err(e) if e.code == ErrorCode::STALE_BROKER_EPOCH => {
                // Another incarnation registered in between: register again.
                self.brokers[i].epoch = None;
                self.register(i);
            }
            Err(e) => self.fail("heartbeat succeeds", format!("{e}")),
        }
    }

    fn check_nothing_to_hand_over(&self, id: i32) {
        let active = |r: i32| self.image.broker(r).is_some_and(|b| b.is_active());
        for t in self.image.topics().values() {
            for (p, s) in t.partitions.iter().enumerate() {
                if s.leader == id && s.isr.iter().any(|r| *r != id && active(*r)) {
                    self.fail(
                        "should_shut_down only once nothing can be handed over",
                        format!("{}-{p} {s:?}", t.name),
                    );
                }
            }
        }
    }

    fn tick(&mut self) {
        let out = self.ctl.tick(&self.image, self.now);
        if !out.reply.fenced.is_empty() {
            self.trace(|| format!("tick fenced {:?}", out.reply.fenced));
        }
        if !out.reply.fenced.is_empty() {
            self.count("session expiries");
        }
        self.commit(out.records);
        self.check_sessions();
    }

    fn create_topic(&mut self) {
        let name = format!("t{}", self.rng.below(12));
        let active: Vec<(i32, Option<String>)> = self
            .image
            .brokers()
            .values()
            .filter(|b| b.is_active())
            .map(|b| (b.id, b.rack.clone()))
            .collect();
        let manual = self.rng.chance(5) && !active.is_empty();
        let partitions = 1 + self.rng.below(9) as i32;
        let rf = 1 + self.rng.below(3) as i16;
        let topic = if manual {
            let assignments = (0..partitions)
                .map(|p| {
                    let n = (rf as usize).min(active.len());
                    (0..n)
                        .map(|k| active[(p as usize + k) % active.len()].0)
                        .collect()
                })
                .collect();
            NewTopic {
                name: name.clone(),
                num_partitions: -1,
                replication_factor: -1,
                assignments,
                configs: vec![("cleanup.policy".into(), "compact".into())],
            }
        } else {
            NewTopic {
                name: name.clone(),
                num_partitions: partitions,
                replication_factor: rf,
                assignments: vec![],
                configs: vec![],
            }
        };
        let existed = self.image.topic_by_name(&name).is_some();
        let seed = self.rng.next();
        let validate_only = self.rng.chance(10);
        let out = self.ctl.create_topics(
            &self.image,
            std::slice::from_ref(&topic),
            validate_only,
            seed,
        );
        let result = out.reply[0].result.clone();
        self.commit(out.records);
        match result {
            Ok(created) => {
                if existed {
                    self.fail("an existing topic is refused", name);
                }
                if validate_only {
                    if self.image.topic_by_name(&name).is_some() {
                        self.fail("validate_only creates nothing", name);
                    }
                    return;
                }
                self.count("topics created");
                let t =
                    self.image.topic_by_name(&name).cloned().unwrap_or_else(|| {
                        self.fail("a created topic is in the image", name.clone())
                    });
                if t.id != created.topic_id || t.partitions.len() != created.num_partitions as usize
                {
                    self.fail("the reply describes the topic", format!("{created:?}"));
                }
                if !manual {
                    self.check_placement(&t.partitions, rf as usize, &active);
                }
            }
            Err(e) => {
                let expected = if existed {
                    ErrorCode::TOPIC_ALREADY_EXISTS
                } else if manual {
                    ErrorCode::INVALID_REPLICA_ASSIGNMENT
                } else {
                    ErrorCode::INVALID_REPLICATION_FACTOR
                };
                if e.code != expected || (!existed && !manual && rf as usize <= active.len()) {
                    self.fail("topic creation fails only for a reason", format!("{e}"));
                }
                self.count("topic creations refused");
            }
        }
    }

    fn check_placement(
        &self,
        partitions: &[skein_metadata::image::PartitionState],
        rf: usize,
        active: &[(i32, Option<String>)],
    ) {
        let racks_of = |ids: &[i32]| -> BTreeSet<Option<String>> {
            ids.iter()
                .map(|id| active.iter().find(|(b, _)| b == id).unwrap().1.clone())
                .collect()
        };
        let all_racks = racks_of(&active.iter().map(|(b, _)| *b).collect::<Vec<_>>()).len();
        let mut leaders: BTreeMap<i32, usize> = active.iter().map(|(b, _)| (*b, 0)).collect();
        for (p, s) in partitions.iter().enumerate() {
            if s.replicas.len() != rf {
                self.fail("a new partition has rf replicas", format!("{p}: {s:?}"));
            }
            if racks_of(&s.replicas).len() != rf.min(all_racks) {
                self.fail(
                    "replicas spread over racks when there are enough racks",
                    format!("{p}: {s:?} over {active:?}"),
                );
            }
            if s.isr != s.replicas || s.leader != s.replicas[0] {
                self.fail(
                    "a new partition is led by its first replica",
                    format!("{s:?}"),
                );
            }
            *leaders.get_mut(&s.leader).unwrap() += 1;
        }
        if partitions.len() >= active.len() {
            let max = leaders.values().max().unwrap();
            let min = leaders.values().min().unwrap();
            if max - min > 1 {
                self.fail(
                    "leaders of a new topic are balanced",
                    format!("{leaders:?}"),
                );
            }
        }
    }

    fn delete_topic(&mut self) {
        let names: Vec<String> = self.image.topic_ids().keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let name = names[self.rng.below(names.len() as u64) as usize].clone();
        let topic = if self.rng.chance(2) {
            TopicRef::Name(name.clone())
        } else {
            TopicRef::Id(self.image.topic_by_name(&name).unwrap().id)
        };
        let out = self.ctl.delete_topics(&self.image, &[topic]);
        if out.reply[0].result.is_err() {
            self.fail("an existing topic can be deleted", name);
        }
        self.commit(out.records);
        if self.image.topic_by_name(&name).is_some()
            || self.image.configs(&ConfigResource::topic(&name)).is_some()
        {
            self.fail("a deleted topic and its configs are gone", name);
        }
        self.count("topics deleted");
    }

    fn grow_topic(&mut self) {
        let names: Vec<String> = self.image.topic_ids().keys().cloned().collect();
        if names.is_empty() {
            return;
        }
        let name = names[self.rng.below(names.len() as u64) as usize].clone();
        let before = self.image.topic_by_name(&name).unwrap().partitions.len();
        let count = before as i32 + self.rng.below(4) as i32 - 1;
        let out = self.ctl.create_partitions(
            &self.image,
            &[NewPartitions {
                name: name.clone(),
                count,
                assignments: None,
            }],
            false,
            self.rng.next(),
        );
        let ok = out.reply[0].result.is_ok();
        self.commit(out.records);
        let after = self.image.topic_by_name(&name).unwrap().partitions.len();
        if ok != (after == count as usize && after > before) || (!ok && after != before) {
            self.fail(
                "partitions only grow, to the count asked",
                format!("{name}: {before} -> {after} asked {count}: {:?}", out.reply),
            );
        }
        self.count(if ok {
            "topics grown"
        } else {
            "growths refused"
        });
    }

    fn alter_configs(&mut self) {
        let resource = if self.rng.chance(2) {
            let names: Vec<String> = self.image.topic_ids().keys().cloned().collect();
            if names.is_empty() {
                return;
            }
            ConfigResource::topic(names[self.rng.below(names.len() as u64) as usize].clone())
        } else {
            ConfigResource::broker(if self.rng.chance(2) {
                String::new()
            } else {
                "1".into()
            })
        };
        let key = format!("k{}", self.rng.below(3));
        let op = if self.rng.chance(3) {
            ConfigOp::Delete
        } else {
            ConfigOp::Set(format!("v{}", self.rng.below(100)))
        };
        let out = self.ctl.incremental_alter_configs(
            &self.image,
            &[AlterConfigs {
                resource: resource.clone(),
                ops: vec![(key.clone(), op.clone())],
            }],
            false,
        );
        if out.reply[0].result.is_err() {
            self.fail("valid config changes apply", format!("{:?}", out.reply));
        }
        self.commit(out.records);
        let value = self.image.configs(&resource).and_then(|c| c.get(&key));
        let expected = match &op {
            ConfigOp::Set(v) => Some(v),
            ConfigOp::Delete => None,
        };
        if value != expected {
            self.fail("configs hold what was set", format!("{resource:?} {key}"));
        }
        self.count("config changes");
    }

    fn allocate_producer_ids(&mut self) {
        let Some(b) = self.image.brokers().values().find(|b| !b.fenced).cloned() else {
            return;
        };
        let before = self.image.next_producer_id();
        match self.ctl.allocate_producer_ids(&self.image, b.id, b.epoch) {
            Ok(out) => {
                let block = out.reply;
                self.commit(out.records);
                if block.first != before
                    || self.image.next_producer_id() != before + i64::from(block.len)
                {
                    self.fail("producer-id blocks never overlap", format!("{block:?}"));
                }
                self.count("producer-id blocks");
            }
            Err(e) => self.fail("a registered broker gets producer ids", format!("{e}")),
        }
    }

    /// A leader asks to grow its ISR by an active replica or to shrink it (sometimes with a
    /// stale partition epoch, which must be refused).
    fn alter_isr(&mut self) {
        let candidates: Vec<(Uuid, i32)> = self
            .image
            .topics()
            .values()
            .flat_map(|t| {
                t.partitions
                    .iter()
                    .enumerate()
                    .filter(|(_, s)| s.leader != NO_LEADER)
                    .map(move |(p, _)| (t.id, p as i32))
            })
            .collect();
        if candidates.is_empty() {
            return;
        }
        let (topic, p) = candidates[self.rng.below(candidates.len() as u64) as usize];
        let before = self.image.partition(topic, p).unwrap().clone();
        let leader = self.image.broker(before.leader).unwrap().clone();
        let mut isr = before.isr.clone();
        let joiner = before
            .replicas
            .iter()
            .copied()
            .find(|r| !isr.contains(r) && self.image.broker(*r).is_some_and(|b| b.is_active()));
        match joiner {
            Some(j) if self.rng.chance(2) => isr.push(j),
            _ => {
                if let Some(pos) = isr.iter().position(|r| *r != before.leader) {
                    isr.remove(pos);
                }
            }
        }
        let stale = self.rng.chance(5);
        let change = AlterPartition {
            topic_id: topic,
            partition: p,
            leader_epoch: before.leader_epoch,
            partition_epoch: before.partition_epoch - i32::from(stale),
            new_isr: isr
                .iter()
                .map(|r| (*r, self.image.broker(*r).map_or(-1, |b| b.epoch)))
                .collect(),
        };
        let out = match self
            .ctl
            .alter_partition(&self.image, leader.id, leader.epoch, &[change])
        {
            Ok(out) => out,
            Err(e) => self.fail("the leader may alter its ISR", format!("{e}")),
        };
        let result = out.reply[0].result.clone();
        self.commit(out.records);
        let after = self.image.partition(topic, p).unwrap().clone();
        match result {
            Ok(state) if !stale => {
                // A member shutting down leaves the new ISR (unless last), and a shutting-down
                // leader hands over.
                let shutting = |r: &i32| self.image.broker(*r).is_some_and(|b| !b.is_active());
                let handed_over = after.leader != before.leader && shutting(&before.leader);
                let expected: Vec<i32> = if isr.len() > 1 {
                    isr.iter().copied().filter(|r| !shutting(r)).collect()
                } else {
                    isr.clone()
                };
                if state != after
                    || (after.isr != expected && !(expected.is_empty() && after.isr.len() == 1))
                    || (after.leader != before.leader && !handed_over)
                {
                    self.fail(
                        "an ISR change commits as answered",
                        format!("{before:?} -> {after:?}, answered {state:?}"),
                    );
                }
                self.count("ISR changes");
            }
            Err(e) if stale && e.code == ErrorCode::INVALID_UPDATE_VERSION => {
                if after != before {
                    self.fail("a refused ISR change changes nothing", format!("{after:?}"));
                }
                self.count("stale ISR changes refused");
            }
            other => self.fail(
                "ISR changes succeed unless stale",
                format!("stale={stale} {before:?} -> {isr:?}: {other:?}"),
            ),
        }
    }

    fn failover(&mut self) {
        let mut ctl = QuorumController::new(self.ctl.config().clone());
        ctl.activate(&self.image, self.now);
        self.ctl = ctl;
        // Every unfenced registration gets a fresh session, whatever its process is doing.
        let now = self.now;
        let unfenced: Vec<i32> = self
            .image
            .brokers()
            .values()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect();
        for b in &mut self.brokers {
            if unfenced.contains(&b.id) {
                b.last_contact = b.last_contact.max(now);
            }
        }
        self.trace(|| "failover".into());
        self.count("failovers");
    }

    fn chaos(&mut self) {
        let i = self.rng.below(self.brokers.len() as u64) as usize;
        match self.rng.below(100) {
            0..=2 if self.brokers[i].run == Run::Up && !self.brokers[i].silent => {
                self.brokers[i].silent = true;
                self.count("brokers silenced");
            }
            3..=9 => self.brokers[i].silent = false,
            10..=11 => {
                let b = &mut self.brokers[i];
                if b.run == Run::Up && b.epoch.is_some() {
                    b.shutting_down = true;
                }
            }
            12 => {
                // kill -9: it stops heartbeating and will come back as a new incarnation.
                let b = &mut self.brokers[i];
                b.run = Run::Down;
                b.shutting_down = false;
                self.count("crashes");
            }
            13..=20 => {
                let b = &mut self.brokers[i];
                if b.run == Run::Down && self.rng.chance(2) {
                    b.run = Run::Up;
                    b.silent = false;
                    b.incarnation += 1;
                    b.epoch = None;
                    b.metadata_offset = 0;
                    self.register(i);
                }
            }
            21..=30 => self.create_topic(),
            31..=34 => self.delete_topic(),
            35..=40 => self.grow_topic(),
            41..=45 => self.alter_configs(),
            46..=48 => self.allocate_producer_ids(),
            49 => self.failover(),
            50..=54 => self.check_snapshot(),
            55..=64 => self.alter_isr(),
            _ => {}
        }
    }

    fn heartbeats_due(&mut self) {
        for i in 0..self.brokers.len() {
            let b = &self.brokers[i];
            if b.run == Run::Up && !b.silent && b.next_heartbeat <= self.now {
                if b.epoch.is_none() {
                    self.register(i);
                } else {
                    self.heartbeat(i);
                }
            }
        }
    }

    fn run(&mut self, steps: usize, chaos: bool) {
        self.chaos = chaos;
        for _ in 0..steps {
            self.step += 1;
            self.now += self.rng.below(1_500);
            if chaos {
                self.chaos();
            }
            self.heartbeats_due();
            self.tick();
        }
    }

    /// Every broker back and heartbeating: the cluster settles with every broker unfenced and
    /// every partition led.
    fn settle(&mut self) {
        for i in 0..self.brokers.len() {
            let b = &mut self.brokers[i];
            b.silent = false;
            // A broker that began a controlled shutdown exits and starts again.
            if b.run == Run::Down || b.shutting_down {
                b.shutting_down = false;
                b.run = Run::Up;
                b.incarnation += 1;
                b.epoch = None;
                b.metadata_offset = 0;
            }
        }
        // Enough for every old session to expire and every broker to catch up.
        self.run(60, false);
        for b in self.image.brokers().values() {
            if b.fenced || b.in_controlled_shutdown {
                self.fail("every returning broker ends unfenced", format!("{b:?}"));
            }
        }
        for t in self.image.topics().values() {
            for (p, s) in t.partitions.iter().enumerate() {
                // With the ELR on, a partition whose eligible replicas all lost their logs
                // waits for an unclean election (they are in its last known ELR).
                let lost = self.elr
                    && s.isr.is_empty()
                    && s.elr.is_empty()
                    && !s.last_known_elr.is_empty();
                if s.leader == NO_LEADER && !lost {
                    self.fail(
                        "a settled cluster leads every partition",
                        format!("{}-{p}", t.name),
                    );
                }
            }
        }
        self.check_snapshot();
    }
}

fn run_seed(seed: u64) {
    let mut sim = Sim::new(seed);
    sim.run(500, true);
    sim.settle();
    if std::env::var("SKEIN_SIM_STATS").is_ok() {
        eprintln!("seed {seed}: {:?}", sim.stats);
    }
}

#[test]
fn controller_simulation() {
    let seeds: Vec<u64> = match std::env::var("SKEIN_SIM_SEED") {
        Ok(s) => vec![s.parse().expect("SKEIN_SIM_SEED must be a number")],
        Err(_) => {
            let count = std::env::var("SKEIN_SIM_SEEDS")
                .ok()
                .and_then(|n| n.parse().ok())
                .unwrap_or(100);
            (1..=count).collect()
        }
    };
    for seed in seeds {
        if let Err(e) = catch_unwind(AssertUnwindSafe(|| run_seed(seed))) {
            eprintln!(
                "controller simulation failed with seed {seed}; replay it with \
                 SKEIN_SIM_SEED={seed} cargo test -p skein-metadata --test sim"
            );
            std::panic::resume_unwind(e);
        }
    }
}
