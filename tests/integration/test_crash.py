"""kill -9 in the middle of an idempotent produce stream, restart on the same port and data.

Every acknowledged record must survive, exactly once, in produce order, at the offset its
acknowledgement named; the producer must finish without a fatal error.
"""

import collections
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import assert_contiguous, consume_to_end, create_topic, unique_topic, wait_until

PRODUCER = Path(__file__).with_name("crash_producer.py")


def read_acks(path):
    """Acknowledged (value, partition, offset) triples; a partly written last line is skipped."""
    if not path.exists():
        return []
    text = path.read_text(encoding="ascii")
    lines = text.split("\n")[:-1]  # whatever follows the last newline is incomplete
    return [tuple(int(x) for x in line.split()) for line in lines]


@pytest.mark.parametrize(
    "partitions,total,kill_after",
    [
        (1, 6000, [1500, 3000, 4500]),
        (3, 3000, [1000]),
    ],
    ids=["one-partition", "three-partitions"],
)
def test_acked_records_survive_kill9(broker, tmp_path, partitions, total, kill_after):
    topic = unique_topic("crash")
    create_topic(broker, topic, partitions=partitions)
    ack_file = tmp_path / "acks.txt"
    producer_log = tmp_path / "producer.log"
    rate_per_s = 1000

    with open(producer_log, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, str(PRODUCER), broker.bootstrap, topic, str(partitions),
             str(total), str(ack_file), str(rate_per_s)],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        )

    def producer_output():
        return producer_log.read_text(errors="replace")[-5000:]

    kills = 0
    try:
        for threshold in kill_after:
            wait_until(
                lambda: len(read_acks(ack_file)) >= threshold or proc.poll() is not None,
                120,
                f"{threshold} acknowledgements",
            )
            if proc.poll() is not None:
                break
            acked_before = len(read_acks(ack_file))
            broker.kill9()
            broker.restart()
            kills += 1
            assert acked_before < total, "the producer had finished before the kill"
        try:
            rc = proc.wait(timeout=240)
        except subprocess.TimeoutExpired:
            pytest.fail(f"producer did not finish within 240s\n{producer_output()}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()

    assert kills >= 1, f"the producer finished before any kill\n{producer_output()}"
    assert rc == 0, f"producer exited {rc}\n{producer_output()}"

    acks = read_acks(ack_file)
    acked_values = [v for v, _, _ in acks]
    duplicates = [v for v, c in collections.Counter(acked_values).items() if c > 1]
    assert not duplicates, f"values acknowledged twice: {duplicates[:10]}"
    assert sorted(acked_values) == list(range(total)), "not every value was acknowledged"

    records = consume_to_end(broker, topic, list(range(partitions)), timeout=90)
    for p in range(partitions):
        log_values = [int(r.value) for r in records[p]]
        assert_contiguous(records[p])
        repeated = [v for v, c in collections.Counter(log_values).items() if c > 1]
        assert not repeated, f"partition {p}: values stored twice: {repeated[:10]}"
        assert all(v % partitions == p for v in log_values), f"partition {p}: foreign values"
        assert log_values == sorted(log_values), (
            f"partition {p}: values out of order, first inversion at index "
            f"{next(i for i in range(1, len(log_values)) if log_values[i] < log_values[i - 1])}"
        )
        offset_of = {int(r.value): r.offset for r in records[p]}
        for value, partition, offset in acks:
            if partition != p:
                continue
            assert value in offset_of, f"acknowledged value {value} lost from partition {p}"
            assert offset_of[value] == offset, (
                f"value {value} acknowledged at offset {offset} but stored at {offset_of[value]}"
            )
