"""Per-partition checkpoints: the state of one partition's streams + its next offset.

"State and offsets move together" (ARCHITECTURE.md): one file holds both, so
whatever instant the daemon dies at, a restart finds a state that matches an
offset exactly, replays from there, and ends where an uninterrupted run ends.

Layout: ``<dir>/<pipeline>/<topic>/p<partition>-<generation>.ckpt``. Each file
is an uncompressed ``.npz`` (plain arrays, no pickle; the zip format CRCs each
member, so a torn file is detected on read) holding the stream table snapshot
plus ``ckpt.meta``, a JSON document with the topic, partition, next offset,
pipeline, model digest and write time.

Decisions:
- A new generation is a new file name, written to a temp file, fsynced,
  renamed, and the directory fsynced; the ``keep`` newest generations are
  kept, older ones deleted afterwards. A crash at any point leaves at least
  one complete file.
- Reading takes the newest generation that reads back; an unreadable one is
  renamed to ``*.corrupt`` (kept for inspection, never read again) with a
  warning, and the previous generation is used.
- When *every* generation is unreadable (or of a newer format) the state is
  lost, never silently: :meth:`CheckpointStore.read` raises
  :class:`CheckpointLost` naming each file and why, and renames nothing, so a
  refusal to start stays a refusal on every restart until an operator acts.
  The caller decides (``checkpoint.on_unreadable``); starting cold goes
  through :meth:`CheckpointStore.quarantine`.
- Generations are numbered, not named by offset: a replay after falling back
  to an older file can reach the same offset again.
"""

from __future__ import annotations

import json
import logging
import os
import re
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from streamlstm.errors import CheckpointError
from streamlstm.state import snapshot_from_bytes, snapshot_to_bytes

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = 1
_META = "ckpt.meta"
_NAME = re.compile(r"^p(\d+)-(\d{10})\.ckpt$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class Checkpoint:
    """One partition's checkpoint as read back."""

    topic: str
    partition: int
    next_offset: int
    snapshot: dict[str, np.ndarray]
    meta: dict[str, Any]
    path: Path | str  # a file, or where in a changelog topic (``topic[partition]@offset``)
    size: int

    @property
    def n_streams(self) -> int:
        return int(len(self.snapshot.get("key_len", ())))


class CheckpointLost(CheckpointError):
    """Every generation of a partition's checkpoint is unreadable: its state is lost."""

    def __init__(
        self, topic: str, partition: int, failures: Sequence[tuple[Path | str, str]]
    ) -> None:
        self.topic = topic
        self.partition = partition
        self.failures = list(failures)
        # True when the state read is behind the group's committed offset (a store may
        # read again: the newer generation can be a moment from showing)
        self.behind_committed = False
        files = "; ".join(f"{p}: {why}" for p, why in self.failures)
        super().__init__(
            f"topic={topic} partition={partition}: every checkpoint generation is unreadable "
            f"({len(self.failures)} file(s): {files})"
        )


@dataclass(frozen=True)
class WriteInfo:
    """What writing one checkpoint cost."""

    path: Path | str
    size: int
    seconds: float
    n_streams: int


class StateStore(Protocol):
    """What the loop needs of a checkpoint store (on disk, or in a changelog topic)."""

    def read(self, topic: str, partition: int) -> Checkpoint | None: ...

    def write(
        self,
        topic: str,
        partition: int,
        next_offset: int,
        snapshot: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> WriteInfo: ...

    def quarantine(
        self, topic: str, partition: int, files: Sequence[tuple[Path | str, str]]
    ) -> list[Path | str]: ...

    def close(self) -> None: ...


@dataclass
class CheckpointStore:
    """Reads and writes the checkpoints of one pipeline under ``directory``.

    >>> import tempfile
    >>> store = CheckpointStore(Path(tempfile.mkdtemp()), "demo", keep=2)
    >>> info = store.write("events", 3, 42, {"format": np.array([1])})
    >>> store.read("events", 3).next_offset
    42
    """

    directory: Path
    pipeline: str
    keep: int = 2
    fsync: bool = True
    # The group's committed offset of a source partition (None: unknown). When set, a
    # partition with a committed offset and no checkpoint here is lost state, not a
    # fresh start: its checkpoints are on another replica's disk (or were deleted).
    committed: Callable[[str, int], int | None] | None = field(default=None, repr=False)
    _generation: dict[tuple[str, int], int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.keep < 1:
            raise CheckpointError(f"checkpoint keep is {self.keep}, expected >= 1")
        self.directory = Path(self.directory)

    def close(self) -> None:
        """Every write is already durable; only the committed-offset reader to close."""
        close = getattr(self.committed, "close", None)
        if close is not None:
            close()

    # -- paths -------------------------------------------------------------------
    def _topic_dir(self, topic: str) -> Path:
        return self.directory / _UNSAFE.sub("_", self.pipeline) / _UNSAFE.sub("_", topic)

    def _generations(self, topic: str, partition: int) -> list[tuple[int, Path]]:
        d = self._topic_dir(topic)
        if not d.is_dir():
            return []
        out = []
        for p in d.iterdir():
            m = _NAME.match(p.name)
            if m and int(m.group(1)) == partition:
                out.append((int(m.group(2)), p))
        out.sort()
        return out

    def partitions(self, topic: str) -> list[int]:
        """Partitions of ``topic`` that have at least one checkpoint file."""
        d = self._topic_dir(topic)
        if not d.is_dir():
            return []
        found = {int(m.group(1)) for p in d.iterdir() if (m := _NAME.match(p.name))}
        return sorted(found)

    # -- write -------------------------------------------------------------------
    def write(
        self,
        topic: str,
        partition: int,
        next_offset: int,
        snapshot: Mapping[str, np.ndarray],
        meta: Mapping[str, Any] | None = None,
    ) -> WriteInfo:
        """Durably write a new generation; returns once it survives a power cut."""
        t0 = time.perf_counter()
        key = (topic, partition)
        # The directory may be shared by replicas of a consumer group that hand a
        # partition back and forth: number after the newest file on disk, not a cache.
        existing = self._generations(topic, partition)
        gen = max(self._generation.get(key, 0), existing[-1][0] if existing else 0) + 1
        doc = {
            "format": CHECKPOINT_FORMAT,
            "pipeline": self.pipeline,
            "topic": topic,
            "partition": int(partition),
            "next_offset": int(next_offset),
            "written_at": time.time(),
            **dict(meta or {}),
        }
        arrays = dict(snapshot)
        arrays[_META] = np.frombuffer(json.dumps(doc, sort_keys=True).encode(), np.uint8)
        data = snapshot_to_bytes(arrays)
        d = self._topic_dir(topic)
        path = d / f"p{partition}-{gen:010d}.ckpt"
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".p{partition}-", suffix=".tmp", dir=d)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    if self.fsync:
                        os.fsync(fh.fileno())
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            if self.fsync:
                _fsync_dir(d)
        except OSError as exc:
            raise CheckpointError(
                f"pipeline={self.pipeline} topic={topic} partition={partition}: "
                f"cannot write checkpoint {path}: {exc}; "
                "check the checkpoint dir's free space and permissions"
            ) from exc
        self._generation[key] = gen
        self._prune(topic, partition)
        n = int(len(snapshot["key_len"])) if "key_len" in snapshot else 0
        return WriteInfo(path, len(data), time.perf_counter() - t0, n)

    def _prune(self, topic: str, partition: int) -> None:
        gens = self._generations(topic, partition)
        for _, p in gens[: max(0, len(gens) - self.keep)]:
            try:
                p.unlink()
            except OSError as exc:  # not fatal: the newest generation is durable
                log.warning(
                    "pipeline=%s cannot delete old checkpoint %s: %s", self.pipeline, p, exc
                )

    # -- read --------------------------------------------------------------------
    def read(self, topic: str, partition: int) -> Checkpoint | None:
        """The newest readable checkpoint of a partition, or None if it has none.

        Raises :class:`CheckpointLost` when it has files and none reads back.
        """
        failed: list[tuple[Path | str, str]] = []
        for gen, path in reversed(self._generations(topic, partition)):
            try:
                ckpt = self._read_file(path)
            except CheckpointError as exc:
                failed.append((path, str(exc)))
                continue
            if failed:
                log.warning(
                    "pipeline=%s topic=%s partition=%d newer checkpoint(s) unreadable, "
                    "using %s (offset %d): %s",
                    self.pipeline, topic, partition, path, ckpt.next_offset,
                    "; ".join(why for _, why in failed),
                )  # fmt: skip
                self.quarantine(topic, partition, failed)
            if ckpt.topic != topic or ckpt.partition != partition:
                raise CheckpointError(
                    f"{path}: holds topic={ckpt.topic} partition={ckpt.partition}, "
                    f"expected topic={topic} partition={partition}; files were moved by hand?"
                )
            key = (topic, partition)
            self._generation[key] = max(gen, self._generation.get(key, 0))
            return ckpt
        if failed:
            raise CheckpointLost(topic, partition, failed[::-1])
        c = self.committed(topic, partition) if self.committed is not None else None
        if c is not None and c > 0:
            where = f"{self._topic_dir(topic)}/p{partition}-*.ckpt"
            raise CheckpointLost(topic, partition, [(where, (
                f"no checkpoint of this partition here, but the group has committed offset "
                f"{c}: its state was written elsewhere (another replica's disk, or this "
                "directory was emptied); several replicas need checkpoint.store: kafka"
            ))])  # fmt: skip
        return None

    def quarantine(
        self, topic: str, partition: int, files: Sequence[tuple[Path | str, str]]
    ) -> list[Path | str]:
        """Rename unreadable files to ``*.corrupt`` (kept for inspection, never read
        again; generation numbers go on after them); returns the new paths."""
        moved: list[Path | str] = []
        for where, _ in files:
            path = Path(where)
            if m := _NAME.match(path.name):  # number new files after the moved ones
                key = (topic, partition)
                self._generation[key] = max(int(m.group(2)), self._generation.get(key, 0))
            if not path.is_file():  # a file that was never here: nothing to keep
                continue
            bad = path.with_name(path.name + ".corrupt")
            try:
                os.replace(path, bad)
                moved.append(bad)
            except OSError as exc:
                log.warning("pipeline=%s cannot rename %s: %s", self.pipeline, path, exc)
        return moved

    @staticmethod
    def _read_file(path: Path) -> Checkpoint:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: cannot read: {exc}") from exc
        try:
            arrays = snapshot_from_bytes(data)
        except CheckpointError as exc:
            raise CheckpointError(f"{path}: {exc}") from exc
        raw = arrays.pop(_META, None)
        if raw is None:
            raise CheckpointError(f"{path}: no {_META!r} entry; not a streamlstm checkpoint")
        try:
            meta = json.loads(raw.tobytes().decode())
            if meta.get("format") != CHECKPOINT_FORMAT:
                raise CheckpointError(
                    f"{path}: checkpoint format {meta.get('format')!r}, "
                    f"expected {CHECKPOINT_FORMAT}"
                )
            return Checkpoint(
                topic=str(meta["topic"]),
                partition=int(meta["partition"]),
                next_offset=int(meta["next_offset"]),
                snapshot=arrays,
                meta=meta,
                path=path,
                size=len(data),
            )
        except (UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: damaged checkpoint metadata: {exc}") from exc


def _fsync_dir(d: Path) -> None:
    """Make a rename in ``d`` durable (POSIX: the directory entry needs its own fsync)."""
    try:
        fd = os.open(d, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. platforms without directory fds
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
