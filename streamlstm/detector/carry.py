"""Streams that continue where training left them.

``streamlstm train`` replays each training stream's history through the detector
once the model is final, and the model file keeps the state every stream ended in
(``Model.carried``: the state table's snapshot arrays; streams that ended in an open
alert or episode are left out). When a detector later sees one of those keys for
the first time, and that first event is later than the stream's last one in
training, the stream starts from its carried state instead of cold: its LSTM state,
its last value and every statistic the regime scorer learnt (scales, spike tail,
modes, bands, memories), exactly as if the detector had read the training history
itself. A stream that training never saw, or whose events begin at or before the
end of its history (a replay of it, another recording), starts cold as before.

Why: a new stream's scorer learns its normal from its own first few hundred events,
and pages on what is new to it meanwhile; a channel commanded between eight levels
opened 16 of its 18 false alerts in its first 1,000 events (``benchmarks/quality.md``,
"Streams that continue their training history").

The state is only valid for the detector settings it was made with: the ones that
shape it (``STATE_SETTINGS``, the scorer's and the normalisation's) are recorded
with it, and a detector run with other values starts every stream cold, with one
warning.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from streamlstm.model import Model
from streamlstm.state import Column, StreamTable
from streamlstm.state.table import SNAPSHOT_FORMAT, grown, snapshot_keys

log = logging.getLogger(__name__)

# DetectorConfig fields that change what a stream's state holds (not the alert
# thresholds: a carried stream is never in an alert).
STATE_SETTINGS = (
    "scorer", "stream_scale", "scale_window", "learn_ratio", "smooth", "max_abs",
    "decay_tau_s", "reset_gap_s", "min_scale", "warmup",
)  # fmt: skip


# Events of each stream's history the carried state is replayed from: the regime scorer's
# slowest statistics learn at 1/256-1/1024 an event, so what came earlier is forgotten.
CARRY_TAIL = 20_000


def state_settings(config: Any, stream_norm: str, norm_window: int) -> dict[str, Any]:
    """The settings a carried state is valid for (JSON-able)."""
    out: dict[str, Any] = {name: getattr(config, name) for name in STATE_SETTINGS}
    out["stream_norm"] = stream_norm
    out["norm_window"] = int(norm_window)
    return out


class Carried:
    """A model's carried states, laid out for one detector's state columns."""

    def __init__(self, rows: dict[str, int], last_time: np.ndarray, cols: dict[str, np.ndarray]):
        self.rows = rows
        self.last_time = last_time
        self.cols = cols
        self.seeded = 0  # streams started from their carried state so far

    @classmethod
    def for_detector(
        cls, model: Model, columns: Mapping[str, Column], settings: Mapping[str, Any]
    ) -> Carried | None:
        """The index of ``model.carried`` for these columns and settings; None (with a
        warning) when there is nothing to carry or it does not fit."""
        snap = model.carried
        if snap is None:
            return None
        made = dict(model.carried_meta.get("settings") or {})
        differ = sorted(k for k in set(made) | set(settings) if made.get(k) != settings.get(k))
        if differ:
            log.warning(
                "model %s carries the state of %d training streams, made with other detector "
                "settings (%s): every stream starts cold",
                model.describe(), model.n_carried,
                ", ".join(f"{k} {made.get(k)!r} there, {settings.get(k)!r} here" for k in differ),
            )  # fmt: skip
            return None
        try:
            if int(snap["format"][0]) != SNAPSHOT_FORMAT:
                raise ValueError(f"snapshot format {int(snap['format'][0])}")
            keys = snapshot_keys(snap)
            cols = {}
            for name, col in columns.items():
                arr = grown(np.asarray(snap[f"col.{name}"]), col)
                if arr.shape != (len(keys), *col.shape) or arr.dtype != np.dtype(col.dtype):
                    raise ValueError(f"column {name!r} has shape {arr.shape} {arr.dtype}")
                cols[name] = arr
            last_time = np.asarray(snap["last_time"], np.float64)
            if last_time.shape != (len(keys),):
                raise ValueError(f"last_time has shape {last_time.shape}")
        except (KeyError, ValueError, UnicodeDecodeError) as exc:
            log.warning(
                "model %s carries training streams' state that does not fit this detector "
                "(%s): every stream starts cold", model.describe(), exc,
            )  # fmt: skip
            return None
        log.info(
            "the model carries the end state of %d training stream(s): each continues from "
            "it at its first event after its history", len(keys),
        )  # fmt: skip
        return cls({k: i for i, k in enumerate(keys)}, last_time, cols)

    def seed(
        self, table: StreamTable, keys: Sequence[str], times: np.ndarray, slots: np.ndarray
    ) -> int:
        """Start the streams the last ``slots_for`` created from their carried state, where
        their first event of the batch comes after their history; returns how many."""
        new = table.last_new
        if not new.size:
            return 0
        done: set[int] = set()
        n = 0
        for i in np.flatnonzero(np.isin(slots, new)).tolist():
            s = int(slots[i])
            if s in done:
                continue
            done.add(s)
            # A key's first appearance decides: carried or cold, once (a stream evicted
            # later and back again starts cold, as it would without a carried state).
            j = self.rows.pop(keys[i], None)
            if j is None or not times[i] > self.last_time[j]:
                continue
            for name, arr in table.arrays.items():
                arr[s] = self.cols[name][j]
            table.last_time[s] = self.last_time[j]
            n += 1
        self.seeded += n
        return n

    def forget(self, keys: Sequence[str]) -> None:
        """These keys' state came from elsewhere (a checkpoint): never seed them."""
        for k in keys:
            self.rows.pop(k, None)


def carry_states(
    model: Model,
    keys: Sequence[str] | np.ndarray,
    times: np.ndarray,
    x: np.ndarray,
    config: Any = None,
    tail: int = CARRY_TAIL,
) -> tuple[Model, int, int]:
    """``model`` carrying the end state of every stream of this history (its events in any
    order; each stream's in time order after a stable sort by time), replayed through a
    detector with ``config`` (default settings) from each stream's last ``tail`` events;
    streams that end in an open alert or episode are left out. Returns (model, streams
    carried, streams left out)."""
    from streamlstm.detector.engine import Detector, DetectorConfig
    from streamlstm.kernels import layout as L

    cfg = config or DetectorConfig()
    t = np.asarray(times, np.float64)
    karr = np.asarray(keys, dtype=object)
    _, code = np.unique(karr.astype(str), return_inverse=True)
    uniq = int(code.max()) + 1 if code.size else 0
    det = Detector(model.with_carried(None), dataclasses.replace(cfg, max_streams=max(uniq, 1)))
    # each stream's events in time order; its last `tail` only (the replay of a long
    # history costs ~3 us an event, and the state has forgotten what came before)
    order = np.lexsort((np.arange(t.shape[0]), t, code))
    rank = np.arange(order.shape[0]) - np.searchsorted(code[order], code[order], side="left")
    count = np.bincount(code, minlength=uniq)[code[order]]
    order = order[rank >= count - tail]
    order = order[np.argsort(t[order], kind="stable")]
    det.process_many(karr[order].tolist(), t[order], np.asarray(x)[order])
    snap = det.table.snapshot()
    ist = snap["col.istat"]
    keep = (ist[:, L.I_IN_ALERT] == 0) & (ist[:, L.I_EPISODE] == 0) & (ist[:, L.I_EVENTS] > 0)
    skipped = int((~keep).sum())
    if skipped:
        names = snapshot_keys(snap)
        kept = [k for k, ok in zip(names, keep.tolist(), strict=True) if ok]
        snap = det.table.snapshot(keys=kept)
    settings = state_settings(cfg, det.stream_norm, det.norm_window)
    meta = {"settings": settings, "streams": int(keep.sum())}
    return model.with_carried(snap, meta), int(keep.sum()), skipped
