//! In-process clusters of `RaftNode`s over real loopback TCP and temp directories: formation,
//! NotLeader, failover, catch-up from a snapshot, wiped voters, observers, a quorum of one, bad
//! handshakes and oversized frames, the application channel.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use skein_raft::{Applier, LogError, MetadataLog, NodeState, RaftConfig, RaftNode, Role};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use uuid::Uuid;

/// Records every applied entry; a snapshot is all of them, so a restored node still holds the
/// whole history and histories can be compared across nodes.
#[derive(Default)]
struct State {
    entries: Vec<(u64, Vec<u8>)>,
    restores: usize,
}

struct TestApplier(Arc<Mutex<State>>);

impl Applier for TestApplier {
    fn apply(&mut self, offset: u64, entry: &[u8]) {
        let mut s = self.0.lock().unwrap();
        if let Some((last, _)) = s.entries.last() {
            assert!(
                offset > *last,
                "applied out of order: {offset} after {last}"
            );
        }
        s.entries.push((offset, entry.to_vec()));
    }
    fn snapshot(&self) -> Bytes {
        let s = self.0.lock().unwrap();
        let mut out = Vec::new();
        for (o, e) in &s.entries {
            out.extend_from_slice(&o.to_be_bytes());
            out.extend_from_slice(&(e.len() as u32).to_be_bytes());
            out.extend_from_slice(e);
        }
        Bytes::from(out)
    }
    fn restore(&mut self, _offset: u64, mut snap: &[u8]) -> Result<(), String> {
        let mut entries = Vec::new();
        while !snap.is_empty() {
            if snap.len() < 12 {
                return Err("truncated".into());
            }
            let o = u64::from_be_bytes(snap[..8].try_into().unwrap());
            let l = u32::from_be_bytes(snap[8..12].try_into().unwrap()) as usize;
            let e = snap.get(12..12 + l).ok_or("truncated")?.to_vec();
            entries.push((o, e));
            snap = &snap[12 + l..];
        }
        let mut s = self.0.lock().unwrap();
        s.entries = entries;
        s.restores += 1;
        Ok(())
    }
}

struct Running {
    node: RaftNode,
    state: Arc<Mutex<State>>,
}

struct Cluster {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    voters: BTreeMap<u64, String>,
    dir_ids: BTreeMap<u64, Uuid>,
    nodes: BTreeMap<u64, Running>,
    snapshot_every: u64,
    /// What wraps the controller listener's connections (`None`: plain TCP).
    transport: Option<Arc<dyn skein_raft::Transport>>,
}

const DEADLINE: Duration = Duration::from_secs(20);

async fn wait_for<F, Fut>(what: &str, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "skein_raft=info,openraft=error".into()),
        )
        .with_test_writer()
        .try_init();
}

impl Cluster {
    /// Bind `n` voter listeners (ids 1..=n) and start them all.
    async fn start(n: u64, snapshot_every: u64) -> Cluster {
        Cluster::start_with(n, snapshot_every, None).await
    }

    async fn start_with(
        n: u64,
        snapshot_every: u64,
        transport: Option<Arc<dyn skein_raft::Transport>>,
    ) -> Cluster {
        init_tracing();
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path().to_path_buf();
        let mut listeners = BTreeMap::new();
        let mut voters = BTreeMap::new();
        for id in 1..=n {
            let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
            voters.insert(id, l.local_addr().unwrap().to_string());
            listeners.insert(id, l);
        }
        let mut c = Cluster {
            _tmp: tmp,
            root,
            voters,
            dir_ids: BTreeMap::new(),
            nodes: BTreeMap::new(),
            snapshot_every,
            transport,
        };
        for (id, l) in listeners {
            c.dir_ids.insert(id, Uuid::new_v4());
            c.boot(id, l, Role::Voter).await;
        }
        c
    }

    fn config(&self, id: u64, role: Role) -> RaftConfig {
        let mut cfg = RaftConfig::new(
            id,
            "test-cluster",
            self.dir_ids[&id],
            self.root.join(format!("node-{id}")),
            self.voters.clone(),
        );
        cfg.role = role;
        cfg.snapshot_every = self.snapshot_every;
        cfg.election_timeout = (Duration::from_millis(300), Duration::from_millis(600));
        cfg.heartbeat_interval = Duration::from_millis(100);
        cfg.limits.io_timeout = Duration::from_secs(2);
        cfg.limits.request_timeout = Duration::from_secs(5);
        cfg.transport = self.transport.clone();
        cfg
    }

    async fn boot(&mut self, id: u64, listener: TcpListener, role: Role) {
        let state = Arc::new(Mutex::new(State::default()));
        let node = RaftNode::start(
            self.config(id, role),
            listener,
            Box::new(TestApplier(state.clone())),
        )
        .await
        .unwrap_or_else(|e| panic!("node {id} failed to start: {e}"));
        self.nodes.insert(id, Running { node, state });
    }

    /// Restart (or start) node `id` on its voter address.
    async fn restart(&mut self, id: u64) {
        let addr = self.voters[&id].clone();
        let listener = TcpListener::bind(&addr).await.unwrap();
        self.boot(id, listener, Role::Voter).await;
    }

    async fn stop(&mut self, id: u64) {
        let r = self.nodes.remove(&id).expect("running");
        r.node.shutdown().await;
    }

    fn node(&self, id: u64) -> &RaftNode {
        &self.nodes[&id].node
    }

    /// The leader all running voters agree on.
    async fn leader(&self) -> u64 {
        let mut found = 0;
        wait_for("an agreed leader", || {
            let leaders: Vec<Option<u64>> = self
                .nodes
                .values()
                .filter(|r| r.node.role() == Role::Voter)
                .map(|r| r.node.status().leader)
                .collect();
            let ok = leaders[0].is_some()
                && leaders.iter().all(|l| *l == leaders[0])
                && self.nodes.contains_key(&leaders[0].unwrap())
                && self.node(leaders[0].unwrap()).is_leader();
            if ok {
                found = leaders[0].unwrap();
            }
            async move { ok }
        })
        .await;
        found
    }

    fn entries(&self, id: u64) -> Vec<(u64, Vec<u8>)> {
        self.nodes[&id].state.lock().unwrap().entries.clone()
    }

    async fn propose_n(&self, leader: u64, from: usize, n: usize) -> u64 {
        let mut last = 0;
        for i in from..from + n {
            last = self
                .node(leader)
                .propose(Bytes::from(format!("entry-{i}")))
                .await
                .unwrap_or_else(|e| panic!("propose {i}: {e}"));
        }
        last
    }

    async fn wait_applied(&self, id: u64, offset: u64) {
        let mut rx = self.node(id).applied();
        tokio::time::timeout(DEADLINE, rx.wait_for(|a| a.is_some_and(|a| a >= offset)))
            .await
            .unwrap_or_else(|_| panic!("node {id} did not apply offset {offset}"))
            .unwrap();
    }

    /// Every running node applied the same entries in the same order, `count` of them.
    async fn assert_same_history(&self, count: usize, last: u64) {
        for id in self.nodes.keys() {
            self.wait_applied(*id, last).await;
        }
        let first = *self.nodes.keys().next().unwrap();
        let reference = self.entries(first);
        assert_eq!(
            reference.len(),
            count,
            "node {first} history: {reference:?}"
        );
        let payloads: Vec<String> = reference
            .iter()
            .map(|(_, e)| String::from_utf8(e.clone()).unwrap())
            .collect();
        for (i, p) in payloads.iter().enumerate() {
            assert_eq!(p, &format!("entry-{i}"));
        }
        for id in self.nodes.keys() {
            assert_eq!(
                self.entries(*id),
                reference,
                "node {id} differs from node {first}"
            );
        }
    }

    async fn shutdown(mut self) {
        let ids: Vec<u64> = self.nodes.keys().copied().collect();
        for id in ids {
            self.stop(id).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_voters_agree_and_followers_say_not_leader() {
    let c = Cluster::start(3, 1000).await;
    let leader = c.leader().await;
    let last = c.propose_n(leader, 0, 30).await;
    c.assert_same_history(30, last).await;

    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    match c.node(follower).propose(Bytes::from_static(b"x")).await {
        Err(LogError::NotLeader {
            leader: Some((id, addr)),
        }) => {
            assert_eq!(id, leader);
            assert_eq!(addr, c.voters[&leader]);
        }
        other => panic!("expected NotLeader with the leader, got {other:?}"),
    }

    // The first leader records every voter's directory id (KIP-853).
    wait_for("directory ids recorded", || {
        let st = c.node(leader).status();
        let ok = st.voters.len() == 3
            && st
                .voters
                .iter()
                .all(|v| v.directory_id == Some(c.dir_ids[&v.node_id]));
        async move { ok }
    })
    .await;
    let st = c.node(leader).status();
    assert_eq!(st.state, NodeState::Leader);
    assert!(st.term >= 1);
    assert!(
        st.high_watermark > last,
        "hw {} last {last}",
        st.high_watermark
    );
    for v in &st.voters {
        assert!(v.log_end_offset.is_some(), "{v:?}");
        assert!(v.last_ack.is_some(), "{v:?}");
    }
    let fst = c.node(follower).status();
    assert_eq!(fst.state, NodeState::Follower);
    assert_eq!(fst.leader, Some(leader));
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn failover_then_restarted_node_catches_up_from_a_snapshot() {
    let mut c = Cluster::start(3, 10).await;
    let leader = c.leader().await;
    let last = c.propose_n(leader, 0, 5).await;
    c.assert_same_history(5, last).await;

    let t = Instant::now();
    c.stop(leader).await;
    let new_leader = c.leader().await;
    let failover = t.elapsed();
    eprintln!("failover: new leader {new_leader} after {failover:?}");
    assert_ne!(new_leader, leader);
    assert!(
        failover < Duration::from_secs(10),
        "failover took {failover:?}"
    );

    // Enough entries for several snapshots; the log below them is purged.
    let last = c.propose_n(new_leader, 5, 45).await;
    wait_for("a purged log on the leader", || {
        let st = c.node(new_leader).status();
        let ok = st.snapshot.is_some_and(|s| s >= 40);
        async move { ok }
    })
    .await;

    c.restart(leader).await;
    c.assert_same_history(50, last).await;
    let restores = c.nodes[&leader].state.lock().unwrap().restores;
    assert!(
        restores >= 1,
        "the restarted node should have installed a snapshot"
    );

    // Proposals still work, and reach the restarted node too.
    let now_leader = c.leader().await;
    let last = c.propose_n(now_leader, 50, 3).await;
    c.assert_same_history(53, last).await;

    // A full restart of a node replays its own snapshot plus log.
    let f = *c.nodes.keys().find(|id| **id != now_leader).unwrap();
    c.stop(f).await;
    c.restart(f).await;
    c.assert_same_history(53, last).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn wiped_voter_is_refused_until_replaced() {
    let mut c = Cluster::start(3, 1000).await;
    let leader = c.leader().await;
    let last = c.propose_n(leader, 0, 3).await;
    c.assert_same_history(3, last).await;
    wait_for("directory ids recorded", || {
        let ok = c
            .node(leader)
            .status()
            .voters
            .iter()
            .all(|v| v.directory_id.is_some());
        async move { ok }
    })
    .await;

    let victim = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let old_dir = c.dir_ids[&victim];
    c.stop(victim).await;
    std::fs::remove_dir_all(c.root.join(format!("node-{victim}"))).unwrap();
    let new_dir = Uuid::new_v4();
    c.dir_ids.insert(victim, new_dir);
    c.restart(victim).await;

    // Refused with a one-line reason, on both sides.
    wait_for("the wiped node to be refused", || {
        let mine = c.node(victim).status().refusals;
        let theirs = c.node(leader).status().refusals;
        let ok = mine.iter().any(|r| r.contains("quorum records"))
            && theirs
                .iter()
                .any(|r| r.contains(&skein_raft::net::kafka_uuid(&new_dir)));
        async move { ok }
    })
    .await;
    for r in c.node(victim).status().refusals {
        assert!(!r.contains('\n'), "one line: {r}");
    }
    // The quorum carries on without it, and it gets nothing.
    let last = c.propose_n(leader, 3, 5).await;
    c.wait_applied(leader, last).await;
    let st = c.node(victim).status();
    assert_ne!(st.state, NodeState::Leader);
    assert!(
        c.entries(victim).is_empty(),
        "a refused node must not get entries"
    );
    let lst = c.node(leader).status();
    let v = lst.voters.iter().find(|v| v.node_id == victim).unwrap();
    assert_eq!(v.directory_id, Some(old_dir));

    // The operator replaces the voter.
    let addr = c.voters[&victim].clone();
    match c
        .node(victim)
        .add_voter(victim, new_dir, addr.clone())
        .await
    {
        Err(LogError::NotLeader { .. }) => {}
        other => panic!("a non-leader must refuse add_voter: {other:?}"),
    }
    assert!(matches!(
        c.node(leader).remove_voter(victim, Some(new_dir)).await,
        Err(LogError::Invalid(_))
    ));
    c.node(leader)
        .remove_voter(victim, Some(old_dir))
        .await
        .unwrap();
    c.node(leader)
        .add_voter(victim, new_dir, addr)
        .await
        .unwrap();
    let lst = c.node(leader).status();
    let v = lst.voters.iter().find(|v| v.node_id == victim).unwrap();
    assert_eq!(v.directory_id, Some(new_dir));
    let last = c.propose_n(leader, 8, 2).await;
    c.assert_same_history(10, last).await;
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn observer_follows_without_voting() {
    let mut c = Cluster::start(3, 1000).await;
    let leader = c.leader().await;
    let last = c.propose_n(leader, 0, 4).await;
    c.assert_same_history(4, last).await;

    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    c.dir_ids.insert(10, Uuid::new_v4());
    c.boot(10, l, Role::Observer).await;
    wait_for("the observer to join", || {
        let ok = c
            .node(leader)
            .status()
            .observers
            .iter()
            .any(|o| o.node_id == 10 && o.directory_id == Some(c.dir_ids[&10]));
        async move { ok }
    })
    .await;
    let last = c.propose_n(leader, 4, 4).await;
    c.assert_same_history(8, last).await;

    let st = c.node(10).status();
    assert_eq!(st.state, NodeState::Observer);
    assert!(!st.voters.iter().any(|v| v.node_id == 10));
    assert_eq!(st.voters.len(), 3);
    match c.node(10).propose(Bytes::from_static(b"x")).await {
        Err(LogError::NotLeader {
            leader: Some((id, _)),
        }) => assert_eq!(id, leader),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    // It does not count toward the quorum: with two voters down nothing commits.
    let others: Vec<u64> = c
        .nodes
        .keys()
        .copied()
        .filter(|id| *id != leader && *id != 10)
        .collect();
    for id in others {
        c.stop(id).await;
    }
    // The bounded wait (request_timeout, 5 s here) answers with an error, never a hang.
    let r = tokio::time::timeout(
        Duration::from_secs(10),
        c.node(leader).propose(Bytes::from_static(b"lonely")),
    )
    .await;
    assert!(
        matches!(
            r,
            Ok(Err(LogError::Timeout(_)
                | LogError::NotLeader { .. }
                | LogError::Uncertain(_)))
        ),
        "expected a bounded error with one voter of three plus an observer: {r:?}"
    );
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn quorum_of_one_is_fast_and_replays_after_restart() {
    init_tracing();
    let tmp = tempfile::tempdir().unwrap();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let dir_id = Uuid::new_v4();
    let cfg = || {
        let mut cfg = RaftConfig::new(
            1,
            "solo",
            dir_id,
            tmp.path().join("__cluster_metadata-0"),
            BTreeMap::from([(1, addr.clone())]),
        );
        cfg.snapshot_every = 7;
        cfg
    };
    let state = Arc::new(Mutex::new(State::default()));
    let t = Instant::now();
    let node = RaftNode::start(cfg(), l, Box::new(TestApplier(state.clone())))
        .await
        .unwrap();
    let started = t.elapsed();
    while !node.is_leader() {
        assert!(t.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let leader_at = t.elapsed();
    let first = loop {
        match node.propose(Bytes::from_static(b"entry-0")).await {
            Ok(o) => break o,
            Err(LogError::NotLeader { .. }) => tokio::time::sleep(Duration::from_millis(1)).await,
            Err(e) => panic!("{e}"),
        }
        assert!(t.elapsed() < DEADLINE);
    };
    let cold = t.elapsed();
    eprintln!(
        "quorum of one, empty dir: started after {started:?}, leader after {leader_at:?}, first entry committed after {cold:?}"
    );
    assert!(cold < Duration::from_secs(1), "took {cold:?}");
    let mut last = first;
    for i in 1..20 {
        last = node
            .propose(Bytes::from(format!("entry-{i}")))
            .await
            .unwrap();
    }
    let before = state.lock().unwrap().entries.clone();
    assert_eq!(before.len(), 20);
    node.shutdown().await;
    drop(node);

    let state2 = Arc::new(Mutex::new(State::default()));
    let l = TcpListener::bind(&addr).await.unwrap();
    let t = Instant::now();
    let node = RaftNode::start(cfg(), l, Box::new(TestApplier(state2.clone())))
        .await
        .unwrap();
    let mut rx = node.applied();
    tokio::time::timeout(DEADLINE, rx.wait_for(|a| a.is_some_and(|a| a >= last)))
        .await
        .unwrap()
        .unwrap();
    loop {
        if node.is_leader() {
            break;
        }
        assert!(t.elapsed() < DEADLINE);
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    eprintln!(
        "quorum of one, restart: leader and replayed after {:?}",
        t.elapsed()
    );
    assert_eq!(state2.lock().unwrap().entries, before);
    assert!(
        state2.lock().unwrap().restores >= 1,
        "replay should start from the snapshot"
    );
    let o = node.propose(Bytes::from_static(b"entry-20")).await.unwrap();
    assert!(o > last);

    // The directory id comes back from quorum.meta; a directory without one gets a new id.
    assert_eq!(
        RaftNode::directory_id(&tmp.path().join("__cluster_metadata-0")).unwrap(),
        dir_id
    );
    assert_ne!(
        RaftNode::directory_id(&tmp.path().join("elsewhere")).unwrap(),
        dir_id
    );

    // Another cluster's directory is refused.
    let mut other = cfg();
    other.cluster_id = "another".into();
    let l2 = TcpListener::bind("127.0.0.1:0").await.unwrap();
    match RaftNode::start(other, l2, Box::new(TestApplier(Default::default()))).await {
        Err(e) => assert!(e.to_string().contains("belongs to cluster"), "{e}"),
        Ok(_) => panic!("a directory of another cluster must be refused"),
    }
    node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_handshake_and_oversized_frame_close_only_that_connection() {
    let c = Cluster::start(1, 1000).await;
    let leader = c.leader().await;
    let addr = c.voters[&leader].clone();

    // Wrong cluster id: a Refused reply with the reason, then the connection closes.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let hello = skein_raft::net::Hello {
        magic: 0x534b_5246,
        version: 1,
        cluster_id: "someone-else".into(),
        node_id: 99,
        directory_id: Uuid::new_v4(),
        channel: skein_raft::net::Channel::Raft,
    };
    let payload = postcard_encode(&hello);
    skein_raft::net::write_frame(&mut s, &payload, 1 << 20)
        .await
        .unwrap();
    let reply = skein_raft::net::read_frame(&mut s, 1 << 20).await.unwrap();
    let reply: skein_raft::net::HelloReply = postcard_decode(&reply);
    match reply {
        skein_raft::net::HelloReply::Refused { reason } => {
            assert!(reason.contains("someone-else"), "{reason}");
            assert!(!reason.contains('\n'));
        }
        other => panic!("expected Refused, got {other:?}"),
    }
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection should be closed: {n:?}"
    );
    assert!(c
        .node(leader)
        .status()
        .refusals
        .iter()
        .any(|r| r.contains("someone-else")));

    // An oversized frame (1 GiB announced): closed without reading it.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection should be closed: {n:?}"
    );

    // After a good handshake, a frame above max_frame_bytes: closed too.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let hello = skein_raft::net::Hello {
        cluster_id: "test-cluster".into(),
        ..hello
    };
    skein_raft::net::write_frame(&mut s, &postcard_encode(&hello), 1 << 20)
        .await
        .unwrap();
    let reply = skein_raft::net::read_frame(&mut s, 1 << 20).await.unwrap();
    assert!(matches!(
        postcard_decode::<skein_raft::net::HelloReply>(&reply),
        skein_raft::net::HelloReply::Accepted { node_id, .. } if node_id == leader
    ));
    s.write_all(&(1u32 << 30).to_be_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection should be closed: {n:?}"
    );

    // Garbage instead of a hello.
    let mut s = tokio::net::TcpStream::connect(&addr).await.unwrap();
    s.write_all(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "connection should be closed: {n:?}"
    );

    // The node keeps running.
    let o = c
        .node(leader)
        .propose(Bytes::from_static(b"still here"))
        .await
        .unwrap();
    assert!(o >= 1);
    c.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn application_channel_reaches_a_node_and_the_leader() {
    let c = Cluster::start(3, 1000).await;
    let leader = c.leader().await;
    for (id, r) in &c.nodes {
        let id = *id;
        r.node.set_app_handler(Arc::new(move |req: Bytes| {
            Box::pin(async move {
                let mut v = format!("node {id}: ").into_bytes();
                v.extend_from_slice(&req);
                Bytes::from(v)
            })
        }));
    }
    let follower = *c.nodes.keys().find(|id| **id != leader).unwrap();
    let other = *c
        .nodes
        .keys()
        .find(|id| **id != leader && **id != follower)
        .unwrap();
    let client = c.node(follower).app_client();
    let r = client
        .send_to_leader(Bytes::from_static(b"hello"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, Bytes::from(format!("node {leader}: hello")));
    let r = client
        .send(other, Bytes::from_static(b"direct"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(r, Bytes::from(format!("node {other}: direct")));
    assert!(matches!(
        client.send(77, Bytes::new(), Duration::from_secs(1)).await,
        Err(skein_raft::net::AppError::UnknownNode(77))
    ));
    c.shutdown().await;
}

fn postcard_encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_allocvec(v).unwrap()
}

fn postcard_decode<T: serde::de::DeserializeOwned>(b: &[u8]) -> T {
    postcard::from_bytes(b).unwrap()
}

/// A transport that proves both ends go through it: the client sends a preamble after
/// connecting, the server requires it before anything else; both count their connections.
#[derive(Debug, Default)]
struct Preamble {
    connects: std::sync::atomic::AtomicUsize,
    accepts: std::sync::atomic::AtomicUsize,
}

const PREAMBLE: &[u8; 8] = b"WRAPPED!";

impl skein_raft::Transport for Preamble {
    fn connect(
        &self,
        mut tcp: tokio::net::TcpStream,
        _addr: String,
    ) -> skein_raft::BoxFuture<'static, std::io::Result<skein_raft::BoxStream>> {
        self.connects
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            tcp.write_all(PREAMBLE).await?;
            Ok(Box::new(tcp) as skein_raft::BoxStream)
        })
    }

    fn accept(
        &self,
        mut tcp: tokio::net::TcpStream,
    ) -> skein_raft::BoxFuture<'static, std::io::Result<skein_raft::BoxStream>> {
        self.accepts
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Box::pin(async move {
            let mut got = [0u8; 8];
            tcp.read_exact(&mut got).await?;
            if &got != PREAMBLE {
                return Err(std::io::Error::other("no preamble"));
            }
            Ok(Box::new(tcp) as skein_raft::BoxStream)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_transport_wraps_every_connection_both_ways() {
    let t = Arc::new(Preamble::default());
    let c = Cluster::start_with(3, 1000, Some(t.clone())).await;
    let leader = c.leader().await;
    let last = c.propose_n(leader, 0, 10).await;
    c.assert_same_history(10, last).await;
    assert!(t.connects.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    assert!(t.accepts.load(std::sync::atomic::Ordering::Relaxed) >= 2);

    // A client that skips the transport (no preamble: a plain Hello) is closed unanswered.
    let mut s = tokio::net::TcpStream::connect(&c.voters[&leader])
        .await
        .unwrap();
    let hello = skein_raft::net::Hello {
        magic: 0x534b_5246,
        version: 1,
        cluster_id: "test-cluster".into(),
        node_id: 99,
        directory_id: Uuid::new_v4(),
        channel: skein_raft::net::Channel::Raft,
    };
    skein_raft::net::write_frame(&mut s, &postcard_encode(&hello), 1 << 20)
        .await
        .unwrap();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .unwrap();
    assert!(
        matches!(n, Ok(0) | Err(_)),
        "a connection without the transport should be closed: {n:?}"
    );
    c.shutdown().await;
}
