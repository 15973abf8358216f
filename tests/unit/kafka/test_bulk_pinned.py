"""The bulk reader hooks into kafka-python internals: this fails loudly when they move.

streamlstm.kafka.bulk mirrors kafka-python's Fetcher._append and its
PartitionRecords contract and reads MemoryRecords' buffer. A kafka-python
release that changes any of the code it relies on must fail here, not run
subtly wrong: read the changed code, adapt bulk.py, run tests/unit/kafka/test_bulk.py
and tests/integration/test_bulk_records.py, then record the new digest in SUPPORTED.
"""

from __future__ import annotations

from kafka.version import __version__  # type: ignore[import-untyped]

from streamlstm.kafka import bulk


def test_installed_kafka_python_is_a_checked_version() -> None:
    assert __version__ in bulk.SUPPORTED, (
        f"kafka-python {__version__} is installed but streamlstm.kafka.bulk was checked "
        f"against {sorted(bulk.SUPPORTED)} only: the daemon falls back to kafka-python's "
        "slow reader. Check the internals it relies on (bulk._pinned) and add the version."
    )


def test_the_internals_it_relies_on_are_the_checked_ones() -> None:
    got = bulk.internals_digest()
    assert got == bulk.SUPPORTED.get(__version__), (
        f"kafka-python {__version__}: the code streamlstm.kafka.bulk mirrors or relies on "
        f"changed (digest {got}); see this module's docstring"
    )


def test_the_consumer_uses_the_bulk_fetcher_when_supported() -> None:
    ok, why = bulk.bulk_supported()
    assert ok, why
    assert bulk.BulkFetcher.PartitionRecords is bulk.BulkPartitionRecords
