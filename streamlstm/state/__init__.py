"""The state layer: the per-stream state table (key -> slot, rows, eviction, snapshots)."""

from streamlstm.state.table import (
    SNAPSHOT_FORMAT,
    Column,
    StreamTable,
    snapshot_from_bytes,
    snapshot_keys,
    snapshot_to_bytes,
)

__all__ = [
    "SNAPSHOT_FORMAT",
    "Column",
    "StreamTable",
    "snapshot_from_bytes",
    "snapshot_keys",
    "snapshot_to_bytes",
]
