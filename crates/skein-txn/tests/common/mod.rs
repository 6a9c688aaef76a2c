//! A driver for the coordinator in tests: it carries out the effects the way the broker
//! would (appending records to an in-memory `__transaction_state`, collecting marker
//! requests) so that tests read as request/answer sequences.

#![allow(dead_code)]

use std::collections::BTreeMap;

use skein_txn::{
    Effect, ErrorCode, InitProducerId, Markers, Persist, Response, Token, TxnConfig,
    TxnCoordinator, TxnRecord, TxnState,
};

pub const PARTITIONS: i32 = 3;
pub const EPOCH: i32 = 7;

pub fn config() -> TxnConfig {
    TxnConfig {
        state_partitions: PARTITIONS,
        ..TxnConfig::default()
    }
}

pub fn tp(t: &str, p: i32) -> (String, i32) {
    (t.to_owned(), p)
}

pub struct H {
    pub c: TxnCoordinator,
    pub now: i64,
    pub next_pid: i64,
    pub next_token: Token,
    /// `__transaction_state` per partition, as appended.
    pub log: BTreeMap<i32, Vec<TxnRecord>>,
    /// Marker requests not yet reported written.
    pub markers: Vec<Markers>,
    /// Persists not yet carried out (when `auto_persist` is off).
    pub held: Vec<Persist>,
    pub auto_persist: bool,
    /// Answers of delayed requests, in arrival order.
    pub answers: Vec<(Token, Response)>,
}

impl H {
    pub fn new() -> H {
        H::with(config())
    }

    pub fn with(config: TxnConfig) -> H {
        let mut c = TxnCoordinator::new(config);
        for p in 0..PARTITIONS {
            assert!(c.load_partition(p, EPOCH, Vec::new()).is_empty());
        }
        H {
            c,
            now: 1_000,
            next_pid: 1_000,
            next_token: 1,
            log: BTreeMap::new(),
            markers: Vec::new(),
            held: Vec::new(),
            auto_persist: true,
            answers: Vec::new(),
        }
    }

    pub fn token(&mut self) -> Token {
        self.next_token += 1;
        self.next_token
    }

    /// Carries out effects: persists (when automatic) succeed, markers are collected.
    pub fn run(&mut self, fx: Vec<Effect>) {
        let mut queue: std::collections::VecDeque<Effect> = fx.into();
        while let Some(e) = queue.pop_front() {
            match e {
                Effect::Persist(p) => {
                    if self.auto_persist {
                        let more = self.apply_persist(p, Ok(()));
                        queue.extend(more);
                    } else {
                        self.held.push(p);
                    }
                }
                Effect::WriteMarkers(m) => self.markers.push(m),
                Effect::Respond(t, r) => self.answers.push((t, r)),
            }
        }
    }

    fn apply_persist(&mut self, p: Persist, result: Result<(), ErrorCode>) -> Vec<Effect> {
        if result.is_ok() {
            // Round-trip through the byte encoding, as the log would.
            let key = p.record.key();
            let value = p.record.value();
            let back = TxnRecord::decode(&key, value.as_deref()).expect("decodes");
            assert_eq!(back, p.record);
            assert_eq!(
                p.partition,
                self.c.partition_for(&p.record.transactional_id),
                "record goes to its id's partition"
            );
            self.log.entry(p.partition).or_default().push(back);
        }
        self.c
            .persisted(self.now, &p.record.transactional_id, p.write_id, result)
    }

    /// Completes the oldest held persist with `result`.
    pub fn complete_held(&mut self, result: Result<(), ErrorCode>) {
        let p = self.held.remove(0);
        let fx = self.apply_persist(p, result);
        self.run(fx);
    }

    /// The answer for `token`, if it arrived.
    pub fn answer(&self, token: Token) -> Option<Response> {
        self.answers
            .iter()
            .find(|(t, _)| *t == token)
            .map(|(_, r)| r.clone())
    }

    pub fn init_v(&mut self, version: i16, id: &str, timeout: i32, pid: i64, epoch: i16) -> Token {
        let t = self.token();
        let mut next = self.next_pid;
        let fx = self.c.init_producer_id(
            self.now,
            t,
            version,
            InitProducerId {
                transactional_id: Some(id.to_owned()),
                transaction_timeout_ms: timeout,
                producer_id: pid,
                producer_epoch: epoch,
            },
            &mut || {
                let p = next;
                next += 1;
                Ok(p)
            },
        );
        self.next_pid = next;
        self.run(fx);
        t
    }

    /// InitProducerId v4 with a 60 s timeout; returns (error, producer id, epoch).
    pub fn init(&mut self, id: &str) -> (ErrorCode, i64, i16) {
        let t = self.init_v(4, id, 60_000, -1, -1);
        match self.answer(t) {
            Some(Response::InitProducerId {
                error,
                producer_id,
                producer_epoch,
            }) => (error, producer_id, producer_epoch),
            other => panic!("no InitProducerId answer: {other:?}"),
        }
    }

    pub fn add_v(
        &mut self,
        version: i16,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
    ) -> Token {
        let t = self.token();
        let fx = self
            .c
            .add_partitions(self.now, t, version, id, pid, epoch, parts);
        self.run(fx);
        t
    }

    pub fn add(&mut self, id: &str, pid: i64, epoch: i16, parts: &[(String, i32)]) -> ErrorCode {
        let t = self.add_v(3, id, pid, epoch, parts);
        self.answer(t).expect("answered").error()
    }

    pub fn end_v(&mut self, version: i16, id: &str, pid: i64, epoch: i16, commit: bool) -> Token {
        let t = self.token();
        let fx = self.c.end_txn(self.now, t, version, id, pid, epoch, commit);
        self.run(fx);
        t
    }

    /// Reports every collected marker request written.
    pub fn write_markers(&mut self) -> Vec<Markers> {
        let ms = std::mem::take(&mut self.markers);
        for m in &ms {
            let fx = self.c.markers_written(
                self.now,
                &m.transactional_id,
                m.producer_id,
                m.producer_epoch,
            );
            self.run(fx);
        }
        ms
    }

    pub fn tick(&mut self) {
        let fx = self.c.tick(self.now);
        self.run(fx);
    }

    pub fn state(&self, id: &str) -> TxnState {
        self.c.transaction(id).expect("known id").state
    }

    /// The states persisted for `id`, in log order (None = tombstone).
    pub fn logged_states(&self, id: &str) -> Vec<Option<TxnState>> {
        let p = self.c.partition_for(id);
        self.log
            .get(&p)
            .into_iter()
            .flatten()
            .filter(|r| r.transactional_id == id)
            .map(|r| r.value.as_ref().map(|v| v.state))
            .collect()
    }

    /// A full transaction: add `parts`, commit or abort, markers written; returns the
    /// EndTxn answer.
    pub fn run_txn(
        &mut self,
        id: &str,
        pid: i64,
        epoch: i16,
        parts: &[(String, i32)],
        commit: bool,
    ) -> ErrorCode {
        assert_eq!(self.add(id, pid, epoch, parts), ErrorCode::NONE);
        let t = self.end_v(4, id, pid, epoch, commit);
        assert!(self.answer(t).is_none(), "EndTxn waits for the markers");
        self.write_markers();
        self.answer(t).expect("answered after markers").error()
    }
}
