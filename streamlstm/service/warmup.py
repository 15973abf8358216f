"""Compile (or load from Numba's cache) every inference kernel signature.

``python -m streamlstm.service.warmup`` is run at container build time so pods
start with a warm cache; the daemon calls :func:`warmup` before it reports
ready. One call per cell type covers every model size: the kernels take
arrays, so sizes do not create new signatures.
"""

from __future__ import annotations

import time

import numpy as np


def warmup() -> float:
    """Run a two-event batch through an LSTM and a GRU detector, every path of the
    stream table's key map (growth, eviction, expiry, snapshot, restore), the bulk
    Kafka record reader and the batch JSON decoder; returns seconds taken. Without
    it, the first eviction or the first batch of records would stall the loop while
    Numba compiles."""
    from types import SimpleNamespace

    from kafka import TopicPartition  # type: ignore[import-untyped]
    from kafka.record.memory_records import (  # type: ignore[import-untyped]
        MemoryRecords,
        MemoryRecordsBuilder,
    )

    from streamlstm.detector import Detector, DetectorConfig
    from streamlstm.io.decode import DecodeConfig, Decoder
    from streamlstm.io.features import FeatureSpec
    from streamlstm.kafka.bulk import BulkPartitionRecords
    from streamlstm.model import Model
    from streamlstm.state import Column, StreamTable

    start = time.perf_counter()
    for cell in ("lstm", "gru"):
        det = Detector(Model.random(["x"], hidden=4, cell=cell), DetectorConfig(warmup=0))
        det.process_many(["a", "a"], np.array([0.0, 1.0]), np.zeros((2, 1)))
    # Long keys past the cap: growth (a new hash table), a full key arena (compaction),
    # eviction; then expiry, snapshot, restore, drop.
    table = StreamTable({"h": Column((1,), "float32")}, max_streams=16, initial_capacity=2)
    for i in range(20):
        table.slots_for([f"{i:02d}" * 50])
    table.expire(now=10.0, ttl=1.0)
    table.slots_for(["f", "g"])
    StreamTable(table.columns).restore(table.snapshot())
    table.drop(keys=table.keys())
    dec = Decoder(DecodeConfig(key_field="k", time_field="t", features=(FeatureSpec("x"),)), ("x",))
    value = b'{"k": "a", "t": 1700000000, "x": 0.30000000000000004, "y": true, "z": null}'
    dec.decode(
        [
            SimpleNamespace(key=None, value=value, timestamp=0, partition=0, offset=i, headers=[])
            for i in range(16)
        ]
    )
    # A fetched record batch (with a header) through the bulk reader, then the decoder.
    built = MemoryRecordsBuilder(2, 0, 1 << 16)
    for _ in range(16):
        built.append(0, None, value, [("h", b"v")])
    built.close()
    fetched = MemoryRecords(bytes(built.buffer()))
    dec.decode(BulkPartitionRecords(0, TopicPartition("warmup", 0), fetched).take(None))
    return time.perf_counter() - start


if __name__ == "__main__":  # pragma: no cover
    print(f"streamlstm kernels ready in {warmup():.1f} s")
