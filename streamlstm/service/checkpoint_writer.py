"""The checkpoint writer: one thread that makes the loop's snapshots durable.

Writing a checkpoint (per partition: serialise, write, fsync, rename, fsync the
directory; or send the changelog chunks and await their acks) stopped the consumer
loop for 10-35 ms every ``checkpoint.interval_s`` under load, and every event behind
it waited as long (benchmarks/RESULTS-e2e.md, latency). The loop now only takes the
snapshot (copies of the partitions' state rows, and the offsets they belong to) and
hands it here as a :class:`Job`; it commits those offsets once it takes the job back
done (:meth:`CheckpointWriter.take`), so an offset is never committed ahead of
durable state.

Decisions:
- One thread, at most one job in flight. A checkpoint that falls due while one is
  being written is skipped (its partitions stay dirty for the next one): a slow disk
  or changelog makes checkpoints rarer, never a queue of snapshots in memory.
- A job writes its partitions in order and stops at the first error. The error and
  what was written go back to the loop, which counts and logs them as it did when it
  wrote on its own thread; the writer logs nothing and drops nothing.
- The store is used by one thread at a time: before the loop reads or writes the
  store itself (assignment, revocation, the final checkpoint) it waits for the job in
  flight (:meth:`CheckpointWriter.wait`) and finishes it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamlstm.service.checkpoint_store import StateStore, WriteInfo


@dataclass
class Part:
    """One partition's share of a checkpoint: its state rows and next offset, taken
    together on the loop's thread."""

    tp: Any  # kafka TopicPartition (the service layer's; the writer only reads it)
    group: int
    next_offset: int
    snapshot: dict[str, np.ndarray]
    meta: dict[str, Any]


@dataclass
class Job:
    """A checkpoint to make durable; filled in by :func:`write_parts`."""

    parts: list[Part]
    written: list[WriteInfo] = field(default_factory=list)
    error: BaseException | None = None
    seconds: float = 0.0  # wall time of the writes
    done: threading.Event = field(default_factory=threading.Event)


def write_parts(store: StateStore, job: Job) -> None:
    """Write ``job``'s partitions in order; stop at the first error and keep it in
    ``job.error`` (any exception: the loop decides what it means)."""
    t0 = time.perf_counter()
    try:
        for p in job.parts:
            job.written.append(
                store.write(p.tp.topic, p.tp.partition, p.next_offset, p.snapshot, p.meta)
            )
    except Exception as exc:  # noqa: BLE001 - handed to the loop, which raises or retries
        job.error = exc
    finally:
        job.seconds = time.perf_counter() - t0
        job.done.set()


class CheckpointWriter:
    """Runs :func:`write_parts` on a thread of its own, one job at a time.

    >>> from streamlstm.service.checkpoint_store import CheckpointStore
    >>> import tempfile, types
    >>> w = CheckpointWriter(CheckpointStore(tempfile.mkdtemp(), "demo"), "demo")
    >>> tp = types.SimpleNamespace(topic="events", partition=0)
    >>> w.submit(Job([Part(tp, 0, 42, {"format": np.array([1])}, {})]))
    >>> job = w.take(timeout=10.0); job.error, job.written[0].size > 0, w.busy
    (None, True, False)
    >>> w.close()
    True
    """

    def __init__(self, store: StateStore, pipeline: str) -> None:
        self.store = store
        self.pipeline = pipeline
        self._job: Job | None = None  # submitted and not yet taken back
        self._todo: Job | None = None  # submitted and not yet started by the thread
        self._cv = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closed = False

    @property
    def busy(self) -> bool:
        """A job was submitted and not taken back (written or not)."""
        return self._job is not None

    def submit(self, job: Job) -> None:
        if self._job is not None:
            raise RuntimeError("a checkpoint is already being written")  # the loop checks busy
        with self._cv:
            if self._closed:
                raise RuntimeError("the checkpoint writer is closed")
            if self._thread is None:  # started on first use: tests and tools never need it
                self._thread = threading.Thread(
                    target=self._run, name=f"streamlstm-checkpoint-{self.pipeline}", daemon=True
                )
                self._thread.start()
            self._job = self._todo = job
            self._cv.notify()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait until the job in flight (if any) is written; True when none is left."""
        job = self._job
        return job is None or job.done.wait(timeout)

    def take(self, timeout: float | None = 0.0) -> Job | None:
        """The submitted job once it is written (waiting up to ``timeout``; None: for as
        long as it takes), else None. A job is taken back once."""
        job = self._job
        if job is None or not job.done.wait(timeout):
            return None
        self._job = None
        return job

    def close(self, timeout: float | None = None) -> bool:
        """Stop the thread after the job in flight; True if it stopped within
        ``timeout`` (a write stuck on a dead broker gives up on its own IO timeout)."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        if self._thread is not None:
            self._thread.join(timeout)
            return not self._thread.is_alive()
        return True

    def _run(self) -> None:
        while True:
            with self._cv:
                while self._todo is None and not self._closed:
                    self._cv.wait()
                job, self._todo = self._todo, None
            if job is None:  # closed, nothing left to write
                return
            write_parts(self.store, job)
