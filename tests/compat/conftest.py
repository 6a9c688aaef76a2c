"""Fixtures for the client compatibility suite: a Skein broker (the release binary, run as in
tests/integration) and the reference Apache Kafka broker (KAFKA_REFERENCE_BOOTSTRAP, or one
started with scripts/kafka-reference for this run)."""

import importlib.util
import os
import subprocess
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
INTEGRATION = REPO / "tests" / "integration"


def _integration_conftest():
    """tests/integration/conftest.py's Broker class, loaded under its own module name."""
    import sys

    sys.path.insert(0, str(INTEGRATION))
    spec = importlib.util.spec_from_file_location(
        "skein_integration_conftest", INTEGRATION / "conftest.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def skein_bootstrap(tmp_path_factory):
    broker = _integration_conftest().Broker(tmp_path_factory.mktemp("skein-compat")).start()
    yield broker.bootstrap
    broker.close()


@pytest.fixture(scope="session")
def kafka_bootstrap():
    bootstrap = os.environ.get("KAFKA_REFERENCE_BOOTSTRAP")
    if bootstrap:
        yield bootstrap
        return
    script = REPO / "scripts" / "kafka-reference"
    required = os.environ.get("SKEIN_REQUIRE_REFERENCE") == "1"
    reason = None
    if not script.exists():
        reason = f"KAFKA_REFERENCE_BOOTSTRAP is unset and {script} does not exist"
    else:
        directory = tempfile.mkdtemp(prefix="skein-compat-clients-kafka")
        run = subprocess.run(
            [str(script), "start", "--dir", directory],
            stdout=subprocess.PIPE,
            text=True,
            timeout=600,
        )
        lines = [l for l in run.stdout.splitlines() if l.startswith("bootstrap=")]
        if run.returncode == 0 and lines:
            yield lines[0].split("=", 1)[1].strip()
            subprocess.run([str(script), "stop", "--dir", directory], stdout=subprocess.DEVNULL)
            return
        reason = f"scripts/kafka-reference start failed ({run.returncode})"
    if required:
        pytest.fail(f"SKEIN_REQUIRE_REFERENCE=1 but there is no reference broker: {reason}")
    print(f"\n*** SKIPPED: the Kafka comparison of client scenarios ({reason}) ***")
    pytest.skip(f"no reference Kafka broker: {reason}")
