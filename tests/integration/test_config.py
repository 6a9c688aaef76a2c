"""`skein serve` configuration: bad keys and values fail loudly; file < env < --set."""

import subprocess

import pytest

from helpers import (
    SKEIN_BIN,
    admin_client,
    assert_delivered,
    broker_env,
    produce_all,
    producer_client,
    unique_topic,
)


def serve_must_fail(tmp_path, *extra, env=None):
    """Runs `skein serve` expecting it to refuse to start; returns its stderr."""
    args = [
        SKEIN_BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"), *extra,
    ]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=broker_env(env),
    )
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"skein {' '.join(extra)} kept running\n{err.decode(errors='replace')}")
    text = err.decode(errors="replace") + out.decode(errors="replace")
    assert proc.returncode != 0, f"skein {' '.join(extra)} exited 0\n{text}"
    assert "skein started" not in text
    return text


@pytest.mark.parametrize(
    "setting,key",
    [
        ("no.such.key=1", "no.such.key"),
        ("num.partitions=abc", "num.partitions"),
        ("num.partitions=0", "num.partitions"),
        ("auto.create.topics.enable=maybe", "auto.create.topics.enable"),
        ("socket.request.max.bytes=-1", "socket.request.max.bytes"),
    ],
)
def test_bad_setting_is_refused_naming_the_key(tmp_path, setting, key):
    stderr = serve_must_fail(tmp_path, "--set", setting)
    assert key in stderr, f"error output does not name {key}:\n{stderr}"


def test_unknown_key_in_config_file_is_refused(tmp_path):
    config = tmp_path / "skein.toml"
    config.write_text('"no.such.key" = 1\n')
    stderr = serve_must_fail(tmp_path, "--config", str(config))
    assert "no.such.key" in stderr, stderr


def auto_created_partitions(broker):
    topic = unique_topic("cfg")
    assert_delivered(produce_all(producer_client(broker), [(topic, {"value": b"x"})]))
    md = admin_client(broker).list_topics(timeout=10)
    return len(md.topics[topic].partitions)


@pytest.mark.parametrize(
    "use_file,env_value,flag_value,expected",
    [
        (True, None, None, 5),
        (True, None, 2, 2),
        (False, 4, None, 4),
        (True, 4, None, 4),
        (True, 4, 2, 2),
    ],
    ids=["file", "file+flag", "env", "file+env", "file+env+flag"],
)
def test_config_precedence(start_broker, tmp_path, use_file, env_value, flag_value, expected):
    config = None
    if use_file:
        config = tmp_path / "skein.toml"
        config.write_text("num.partitions = 5\n")
    env = {"SKEIN_NUM_PARTITIONS": str(env_value)} if env_value is not None else None
    sets = [f"num.partitions={flag_value}"] if flag_value is not None else []
    broker = start_broker(sets=sets, config=config, env=env)
    assert auto_created_partitions(broker) == expected


def test_broker_outlives_its_closed_stderr(tmp_path):
    # A supervisor that goes away closes the pipe the broker logs to. Logging must then fail
    # quietly: the broker keeps serving and still shuts down cleanly (exit 0, not a panic).
    import re
    import signal

    from helpers import create_topic, wait_until

    args = [
        SKEIN_BIN, "serve", "--listen", "127.0.0.1:0", "--http", "127.0.0.1:0",
        "--data-dir", str(tmp_path / "data"),
    ]
    proc = subprocess.Popen(
        args,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=broker_env(),
    )
    try:
        address = None
        for raw in iter(proc.stderr.readline, b""):
            found = re.search(rb"skein started kafka=(\S+)", raw)
            if found:
                address = found.group(1).decode()
                break
        assert address, "no start line"
        proc.stderr.close()
        proc.stdout.close()

        class Started:
            bootstrap = address

        # Creating a topic and producing log lines, which now go nowhere.
        topic = unique_topic("nolog")
        create_topic(Started, topic, partitions=1)
        reports = produce_all(producer_client(Started), [(topic, {"value": b"v"})])
        assert_delivered(reports)
        assert proc.poll() is None, f"the broker exited with {proc.returncode}"
        proc.send_signal(signal.SIGTERM)
        wait_until(lambda: proc.poll() is not None, 30, "the broker to exit after SIGTERM")
        assert proc.returncode == 0, f"exit {proc.returncode} after SIGTERM"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
