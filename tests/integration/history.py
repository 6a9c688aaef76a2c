"""A history of what Kafka clients saw, and a checker of Kafka's guarantees over it.

The replication fault tests (issue 12) run producers and consumers against a cluster while
nodes are killed, frozen or cut off, record every operation the clients performed and what
came of it, then ask `check(history)` whether the outcome is one Kafka allows. This is the
Jepsen way of testing a distributed log: judge only what clients observed, never the
broker's own view of itself.

A history holds, per topic-partition:

- produce attempts (`Send`): client id, a value unique within the topic, the client's send
  order, then one outcome: acknowledged (with its offset), definitely failed (an error that
  Kafka guarantees wrote nothing), or indeterminate (a timeout, a lost connection: it may or
  may not be in the log). A send still pending when the history is checked counts as
  indeterminate;
- reads (`Read`): reader id, offset, value, from full read-backs (`ReadBack`: the topic read
  from its log start up to the high watermark of every partition) and from live consumers;
- group offset commits (`Commit`): acknowledged commits and committed offsets observed with
  OffsetFetch, in the order they completed.

`check` verifies, and reports with concrete counterexamples (partition, offset, values):

- lost: every acknowledged record is in every read-back that began after its
  acknowledgement (for acks=1 or acks=0 sends this is only counted, as `lost_unreplicated`:
  Kafka lets an acks=1 record acknowledged by a leader that then lost its leadership go);
- misplaced: an acknowledged value read, but never at the offset it was acknowledged with;
- duplicated: no value is read at two offsets (whatever its send's outcome, so an
  indeterminate send appears at most once);
- conflicts: no offset holds two values across all readers and acks=all acknowledgements
  (every consumer sees the same record at each offset; two acknowledgements of one offset
  are a split brain);
- failed_read: no value of a definitely failed send is ever read;
- unexpected: no value is read that no client sent;
- reader_order: per partition, the offsets one reader session read strictly increase;
- producer_order: an idempotent producer's acknowledged values have increasing offsets in
  its send order, per partition;
- epoch_order: the leader epochs of records read never decrease along a partition's log;
- commit_regressions: a group's committed offset for a partition never goes backwards;
- no_read_back: a topic with acknowledged records was read back at least once (otherwise
  loss cannot be judged).

The history is thread safe: every call takes one lock and gets the next position in one
total order, which is what "before" means for read-backs and commits.
"""

import json
import threading
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from typing import Optional

# Outcomes of a send, named as Jepsen names them.
PENDING = "pending"
OK = "ok"  # acknowledged, with an offset
FAIL = "fail"  # definitely not written
INFO = "info"  # indeterminate: may or may not have been written

# Counterexamples listed per kind in a report; the counts always cover all of them.
REPORT_EXAMPLES_MAX = 20

VIOLATION_KINDS = (
    "no_read_back",
    "lost",
    "misplaced",
    "duplicated",
    "conflicts",
    "failed_read",
    "unexpected",
    "reader_order",
    "producer_order",
    "epoch_order",
    "commit_regressions",
)


@dataclass
class Send:
    """One produce attempt and its outcome."""

    client: str
    topic: str
    value: str
    partition: Optional[int]  # None until known (the partitioner may pick it)
    seq: int  # the client's send order, from 0
    idempotent: bool
    sent_at: int  # position in the history
    acks: str = "all"  # the producer's acks setting: "all" (or "-1"), "1" or "0"
    outcome: str = PENDING
    offset: Optional[int] = None
    leader_epoch: Optional[int] = None
    error: Optional[str] = None
    done_at: Optional[int] = None
    sent_time: float = 0.0  # time.monotonic(), for humans and latency figures
    done_time: Optional[float] = None


@dataclass
class Read:
    """One record a reader consumed."""

    reader: str
    topic: str
    partition: int
    offset: int
    value: Optional[str]
    at: int
    leader_epoch: Optional[int] = None


@dataclass
class ReadBack:
    """A full read of a topic: every partition from its log start to its high watermark.

    `ends` maps partition -> (low watermark, high watermark) as found when it began; its reads
    are the history's reads whose reader is `reader`.
    """

    reader: str
    topic: str
    started_at: int
    ends: dict = field(default_factory=dict)
    finished_at: Optional[int] = None


@dataclass
class Commit:
    """A group's committed offset for a partition: acknowledged ("commit") or fetched
    ("observed"), at the position in the history where it completed."""

    group: str
    topic: str
    partition: int
    offset: int
    at: int
    member: Optional[str] = None
    kind: str = "commit"


class History:
    """What the clients did and saw. Every method is thread safe."""

    def __init__(self):
        self._lock = threading.Lock()
        self._position = 0
        self.sends = []
        self.reads = []
        self.read_backs = []
        self.commits = []
        self._seq = defaultdict(int)
        self._reader_runs = defaultdict(int)

    def _next(self):
        # Under self._lock.
        self._position += 1
        return self._position

    # -- produce -------------------------------------------------------------------------------

    def send(self, client, topic, value, partition=None, idempotent=True, acks="all"):
        """Records a produce attempt about to be made; returns its `Send` for the outcome.

        `acks` is the producer's setting; only acks=all acknowledgements must survive."""
        with self._lock:
            seq = self._seq[client]
            self._seq[client] += 1
            s = Send(
                client=client,
                topic=topic,
                value=str(value),
                partition=partition,
                seq=seq,
                idempotent=idempotent,
                acks=str(acks),
                sent_at=self._next(),
                sent_time=time.monotonic(),
            )
            self.sends.append(s)
            return s

    def _complete(self, send, outcome, partition, offset=None, leader_epoch=None, error=None):
        with self._lock:
            if send.outcome != PENDING:
                raise ValueError(f"send {send.value!r} completed twice ({send.outcome}, {outcome})")
            send.outcome = outcome
            if partition is not None and partition >= 0:
                send.partition = partition
            send.offset = offset
            send.leader_epoch = leader_epoch
            send.error = None if error is None else str(error)
            send.done_at = self._next()
            send.done_time = time.monotonic()

    def ack(self, send, partition, offset, leader_epoch=None):
        """The send was acknowledged: its record is at `offset` of `partition`."""
        if offset is None or offset < 0:
            raise ValueError(f"acknowledgement of {send.value!r} without an offset ({offset})")
        epoch = leader_epoch if leader_epoch is not None and leader_epoch >= 0 else None
        self._complete(send, OK, partition, offset=offset, leader_epoch=epoch)

    def fail(self, send, error, partition=None):
        """The send definitely failed: Kafka guarantees nothing of it was written."""
        self._complete(send, FAIL, partition, error=error)

    def indeterminate(self, send, error, partition=None):
        """The send's fate is unknown (timeout, lost connection): it may be in the log."""
        self._complete(send, INFO, partition, error=error)

    # -- reads ---------------------------------------------------------------------------------

    def read(self, reader, topic, partition, offset, value, leader_epoch=None):
        """A reader consumed `value` at `offset` of `partition`."""
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        epoch = leader_epoch if leader_epoch is not None and leader_epoch >= 0 else None
        with self._lock:
            self.reads.append(
                Read(reader, topic, partition, offset, value, self._next(), epoch)
            )

    def reader_session(self, name):
        """A fresh reader id for `name` ("name#1", "name#2", ...).

        Offsets must increase within one reader id, so a consumer that legitimately goes back
        (a new assignment restarting from the committed offset) takes a new id each time.
        """
        with self._lock:
            self._reader_runs[name] += 1
            return f"{name}#{self._reader_runs[name]}"

    def mark(self):
        """A position in the history now, for an operation recorded when it ends but judged
        from when it began (`begin_read_back`, `observe_committed`)."""
        with self._lock:
            return self._next()

    def begin_read_back(self, reader, topic, ends, started_at=None):
        """A full read-back of `topic` begins; `ends` is {partition: (low, high)}.

        `started_at` (a `mark()` taken before the watermarks were asked for) is when it
        began: every acknowledgement before it must be found, so it must not come after the
        watermarks were read. Returns the `ReadBack`; record its records with
        `read(rb.reader, ...)`.
        """
        reader_id = self.reader_session(reader)
        with self._lock:
            bounds = {int(p): tuple(e) for p, e in ends.items()}
            started = self._next() if started_at is None else started_at
            rb = ReadBack(reader_id, topic, started, bounds)
            self.read_backs.append(rb)
            return rb

    def end_read_back(self, rb):
        with self._lock:
            rb.finished_at = self._next()

    # -- groups --------------------------------------------------------------------------------

    def commit(self, group, topic, partition, offset, member=None):
        """The broker acknowledged `group`'s commit of `offset` for the partition."""
        with self._lock:
            self.commits.append(Commit(group, topic, partition, offset, self._next(), member))

    def observe_committed(self, group, topic, partition, offset, observer=None, at=None):
        """OffsetFetch answered `offset` as `group`'s committed offset for the partition.

        `at`: a `mark()` taken before the request was sent. Every commit acknowledged before
        then must be reflected in the answer; one acknowledged while it was under way may not
        be, so the observation is placed where it began.
        """
        with self._lock:
            position = self._next() if at is None else at
            self.commits.append(
                Commit(group, topic, partition, offset, position, observer, "observed")
            )

    # -- views ---------------------------------------------------------------------------------

    def acknowledged(self, topic=None):
        with self._lock:
            return [s for s in self.sends if s.outcome == OK and topic in (None, s.topic)]

    def counts(self):
        """Sends by outcome: {"ok": n, "fail": n, "info": n, "pending": n}."""
        with self._lock:
            out = {OK: 0, FAIL: 0, INFO: 0, PENDING: 0}
            for s in self.sends:
                out[s.outcome] += 1
            return out

    def leader_epochs(self, topic, partition):
        """Distinct leader epochs seen for a partition, in acknowledgements and reads."""
        with self._lock:
            epochs = {s.leader_epoch for s in self.sends
                      if (s.topic, s.partition) == (topic, partition)}
            epochs |= {r.leader_epoch for r in self.reads
                       if (r.topic, r.partition) == (topic, partition)}
            return sorted(epochs - {None})

    # -- persistence ---------------------------------------------------------------------------

    def to_json(self):
        with self._lock:
            return {
                "sends": [asdict(s) for s in self.sends],
                "reads": [asdict(r) for r in self.reads],
                "read_backs": [
                    {**asdict(rb), "ends": {str(p): list(e) for p, e in rb.ends.items()}}
                    for rb in self.read_backs
                ],
                "commits": [asdict(c) for c in self.commits],
            }

    def save(self, path):
        """Writes the history as JSON, to keep it next to a failed test's report."""
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_json(), f)

    @classmethod
    def load(cls, path):
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        h = cls()
        h.sends = [Send(**s) for s in data["sends"]]
        h.reads = [Read(**r) for r in data["reads"]]
        h.read_backs = [
            ReadBack(**{**rb, "ends": {int(p): tuple(e) for p, e in rb["ends"].items()}})
            for rb in data["read_backs"]
        ]
        h.commits = [Commit(**c) for c in data["commits"]]
        positions = [0] + [s.done_at or s.sent_at for s in h.sends] + [r.at for r in h.reads]
        positions += [c.at for c in h.commits]
        positions += [rb.finished_at or rb.started_at for rb in h.read_backs]
        h._position = max(positions)
        for s in h.sends:
            h._seq[s.client] = max(h._seq[s.client], s.seq + 1)
        for reader in {r.reader for r in h.reads} | {rb.reader for rb in h.read_backs}:
            name, _, run = reader.rpartition("#")
            if name and run.isdigit():
                h._reader_runs[name] = max(h._reader_runs[name], int(run))
        return h


@dataclass
class Violation:
    """One counterexample: what is wrong, where, and the values involved."""

    kind: str
    topic: str
    partition: Optional[int]
    offset: Optional[int]
    detail: str

    def __str__(self):
        where = self.topic
        if self.partition is not None:
            where += f"[{self.partition}]"
        if self.offset is not None:
            where += f" offset {self.offset}"
        return f"{where}: {self.detail}"


class CheckResult:
    """Counts and counterexamples; `ok` when nothing is violated.

    Counts (also attributes, e.g. `result.lost`): sends, acknowledged, failed, indeterminate
    (pending sends included), indeterminate_seen, indeterminate_unseen, reads, read_backs,
    commits, lost_unreplicated (acks=1/0 records gone: allowed), and one per violation kind:
    the number of distinct records (or offsets, reader steps, commits) that violate it.
    """

    def __init__(self, counts, violations):
        self.counts = counts
        self.violations = violations  # kind -> [Violation]

    def __getattr__(self, name):
        counts = self.__dict__.get("counts", {})
        if name in counts:
            return counts[name]
        raise AttributeError(name)

    @property
    def ok(self):
        return not any(self.violations.values())

    def of(self, kind):
        """The counterexamples of one kind."""
        return self.violations.get(kind, [])

    def summary(self):
        c = self.counts
        return (
            f"sends={c['sends']} acknowledged={c['acknowledged']} failed={c['failed']} "
            f"indeterminate={c['indeterminate']} (seen {c['indeterminate_seen']}, not seen "
            f"{c['indeterminate_unseen']}) reads={c['reads']} read_backs={c['read_backs']} "
            f"commits={c['commits']} lost_unreplicated={c['lost_unreplicated']} | "
            + " ".join(f"{k}={c[k]}" for k in VIOLATION_KINDS)
        )

    def report(self):
        lines = [("history OK: " if self.ok else "history VIOLATED: ") + self.summary()]
        for kind in VIOLATION_KINDS:
            found = self.violations.get(kind, [])
            if not found:
                continue
            lines.append(f"{kind}: {self.counts[kind]}")
            for v in found[:REPORT_EXAMPLES_MAX]:
                lines.append(f"  {v}")
            if len(found) > REPORT_EXAMPLES_MAX:
                lines.append(f"  ... and {len(found) - REPORT_EXAMPLES_MAX} more")
        return "\n".join(lines)

    def __str__(self):
        return self.report()


def _observer(s):
    return f"ack to {s.client} (seq {s.seq})"


def _log_order(item):
    """Sort key for ((topic, value), {(partition, offset)}): where the value first appears."""
    (topic, _), places = item
    return (topic, min(places))


def durable(send):
    """Whether Kafka promises the acknowledged record survives a leader change (acks=all)."""
    return send.acks in ("all", "-1")


def check(history):
    """Checks every guarantee listed in the module doc; returns a `CheckResult`."""
    with history._lock:
        sends = list(history.sends)
        reads = sorted(history.reads, key=lambda r: r.at)
        read_backs = list(history.read_backs)
        commits = sorted(history.commits, key=lambda c: c.at)

    v = {kind: [] for kind in VIOLATION_KINDS}
    count = {kind: 0 for kind in VIOLATION_KINDS}

    send_of = {}
    for s in sends:
        key = (s.topic, s.value)
        if key in send_of:
            raise ValueError(f"value {s.value!r} sent twice to {s.topic}: values must be unique")
        send_of[key] = s
    acked = [s for s in sends if s.outcome == OK]

    # Who saw which value at each offset: acknowledgements and reads alike.
    at_offset = defaultdict(lambda: defaultdict(list))  # (t, p, o) -> value -> [observer]
    for s in acked:
        if durable(s):
            at_offset[(s.topic, s.partition, s.offset)][s.value].append(_observer(s))
    offsets_of = defaultdict(set)  # (t, value) -> {(p, o)} where it was read
    readers_of = defaultdict(set)  # (t, value) -> readers
    for r in reads:
        at_offset[(r.topic, r.partition, r.offset)][r.value].append(r.reader)
        offsets_of[(r.topic, r.value)].add((r.partition, r.offset))
        readers_of[(r.topic, r.value)].add(r.reader)

    # conflicts: two values at one offset.
    for (t, p, o), values in sorted(at_offset.items(), key=lambda kv: kv[0]):
        if len(values) > 1:
            count["conflicts"] += 1
            seen = "; ".join(
                f"{val!r} seen by {', '.join(sorted(set(obs)))}" for val, obs in sorted(
                    values.items(), key=lambda kv: str(kv[0]))
            )
            v["conflicts"].append(Violation("conflicts", t, p, o, f"{len(values)} values: {seen}"))

    # duplicated: a value at two offsets.
    for (t, value), places in sorted(offsets_of.items(), key=_log_order):
        if len(places) > 1:
            count["duplicated"] += 1
            s = send_of.get((t, value))
            outcome = f" ({s.outcome} send by {s.client})" if s else ""
            where = ", ".join(f"[{p}]@{o}" for p, o in sorted(places))
            first = min(places)
            v["duplicated"].append(Violation(
                "duplicated", t, first[0], first[1], f"value {value!r}{outcome} read at {where}"))

    # unexpected and failed_read.
    for (t, value), places in sorted(offsets_of.items(), key=_log_order):
        s = send_of.get((t, value))
        first = min(places)
        where = ", ".join(f"[{p}]@{o}" for p, o in sorted(places))
        who = ", ".join(sorted(readers_of[(t, value)]))
        if s is None:
            count["unexpected"] += 1
            v["unexpected"].append(Violation(
                "unexpected", t, first[0], first[1],
                f"value {value!r}, sent by no client, read at {where} by {who}"))
        elif s.outcome == FAIL:
            count["failed_read"] += 1
            v["failed_read"].append(Violation(
                "failed_read", t, first[0], first[1],
                f"value {value!r} from {s.client} (seq {s.seq}) failed with {s.error} "
                f"but was read at {where} by {who}"))

    # misplaced: acknowledged, read, but never at its acknowledged offset.
    for s in acked:
        places = offsets_of.get((s.topic, s.value))
        if places and (s.partition, s.offset) not in places:
            count["misplaced"] += 1
            where = ", ".join(f"[{p}]@{o}" for p, o in sorted(places))
            v["misplaced"].append(Violation(
                "misplaced", s.topic, s.partition, s.offset,
                f"value {s.value!r} acknowledged to {s.client} at offset {s.offset} "
                f"but read at {where}"))

    # lost: absent from a read-back that must hold it.
    reads_by_reader = defaultdict(list)
    for r in reads:
        reads_by_reader[r.reader].append(r)
    lost_values = set()
    lost_unreplicated = set()
    topics_read_back = {rb.topic for rb in read_backs}
    for rb in read_backs:
        found = defaultdict(set)  # value -> {(p, o)}
        value_at = {}
        for r in reads_by_reader[rb.reader]:
            found[r.value].add((r.partition, r.offset))
            value_at[(r.partition, r.offset)] = r.value
        for s in acked:
            if s.topic != rb.topic:
                continue
            # Acknowledged before the read-back began: it must be there. (Acknowledgements
            # that came later may be missing; an offset they share with what the read-back
            # found is a conflict.)
            if s.done_at > rb.started_at or s.value in found:
                continue
            if not durable(s):
                lost_unreplicated.add((s.topic, s.value))
                continue
            low, high = rb.ends.get(s.partition, (None, None))
            lost_values.add((s.topic, s.value))
            there = value_at.get((s.partition, s.offset))
            if there is not None:
                seen = f"read-back {rb.reader} found {there!r} there"
            elif high is None:
                seen = f"read-back {rb.reader} found no partition {s.partition}"
            else:
                seen = f"read-back {rb.reader} found nothing there (log [{low}, {high}))"
            v["lost"].append(Violation(
                "lost", s.topic, s.partition, s.offset,
                f"value {s.value!r} acknowledged to {s.client} (seq {s.seq}); {seen}"))
    count["lost"] = len(lost_values)
    for t in sorted({s.topic for s in acked} - topics_read_back):
        count["no_read_back"] += 1
        n = sum(1 for s in acked if s.topic == t)
        v["no_read_back"].append(Violation(
            "no_read_back", t, None, None,
            f"{n} acknowledged records but no read-back of the topic: loss cannot be judged"))

    # reader_order: strictly increasing offsets per reader session and partition.
    last = {}
    for r in reads:
        key = (r.reader, r.topic, r.partition)
        prev = last.get(key)
        if prev is not None and r.offset <= prev.offset:
            count["reader_order"] += 1
            v["reader_order"].append(Violation(
                "reader_order", r.topic, r.partition, r.offset,
                f"reader {r.reader} read offset {r.offset} ({r.value!r}) after offset "
                f"{prev.offset} ({prev.value!r})"))
        last[key] = r

    # producer_order: an idempotent producer's acknowledged offsets follow its send order.
    by_producer = defaultdict(list)
    for s in acked:
        if s.idempotent:
            by_producer[(s.client, s.topic, s.partition)].append(s)
    for (client, t, p), ss in sorted(by_producer.items()):
        ss.sort(key=lambda s: s.seq)
        highest = None
        for s in ss:
            if highest is not None and s.offset <= highest.offset:
                count["producer_order"] += 1
                v["producer_order"].append(Violation(
                    "producer_order", t, p, s.offset,
                    f"{client} sent {s.value!r} (seq {s.seq}) after {highest.value!r} "
                    f"(seq {highest.seq}, offset {highest.offset}) but it was acknowledged "
                    f"at offset {s.offset}"))
            else:
                highest = s

    # epoch_order: batch leader epochs never decrease along the log.
    epoch_at = defaultdict(dict)  # (t, p) -> offset -> (epoch, reader)
    for r in reads:
        if r.leader_epoch is not None:
            epoch_at[(r.topic, r.partition)].setdefault(r.offset, (r.leader_epoch, r.reader))
    for (t, p), by_offset in sorted(epoch_at.items()):
        top = None
        for o in sorted(by_offset):
            epoch, reader = by_offset[o]
            if top is not None and epoch < top[1]:
                count["epoch_order"] += 1
                v["epoch_order"].append(Violation(
                    "epoch_order", t, p, o,
                    f"leader epoch {epoch} (read by {reader}) after epoch {top[1]} at offset "
                    f"{top[0]}"))
            elif top is None or epoch > top[1]:
                top = (o, epoch)

    # commit_regressions: a group's committed offset never goes backwards.
    highest = {}
    for c in commits:
        key = (c.group, c.topic, c.partition)
        prev = highest.get(key)
        if prev is not None and c.offset < prev.offset:
            count["commit_regressions"] += 1
            v["commit_regressions"].append(Violation(
                "commit_regressions", c.topic, c.partition, c.offset,
                f"group {c.group}: {c.kind} offset {c.offset} (by {c.member}, #{c.at}) after "
                f"{prev.kind} offset {prev.offset} (by {prev.member}, #{prev.at})"))
        if prev is None or c.offset >= prev.offset:
            highest[key] = c

    indeterminate = [s for s in sends if s.outcome in (INFO, PENDING)]
    seen = sum(1 for s in indeterminate if (s.topic, s.value) in offsets_of)
    counts = {
        "sends": len(sends),
        "acknowledged": len(acked),
        "failed": sum(1 for s in sends if s.outcome == FAIL),
        "indeterminate": len(indeterminate),
        "indeterminate_seen": seen,
        "indeterminate_unseen": len(indeterminate) - seen,
        "reads": len(reads),
        "read_backs": len(read_backs),
        "commits": len(commits),
        "lost_unreplicated": len(lost_unreplicated),
        **count,
    }
    return CheckResult(counts, v)


def assert_history_ok(history, min_acknowledged=1, save_to=None):
    """Checks the history; raises AssertionError with the report if anything is violated or
    fewer than `min_acknowledged` sends were acknowledged (a test that wrote nothing proves
    nothing). With `save_to` (a path), a failing history is saved there as JSON and the
    error names it. Returns the `CheckResult`."""
    result = check(history)
    problem = None
    if not result.ok:
        problem = result.report()
    elif result.acknowledged < min_acknowledged:
        problem = (f"only {result.acknowledged} acknowledged sends (wanted at least "
                   f"{min_acknowledged})\n{result.report()}")
    if problem is None:
        return result
    if save_to is not None:
        history.save(save_to)
        problem += f"\n(history saved to {save_to}; History.load() reads it)"
    raise AssertionError(problem)
