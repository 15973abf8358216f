"""The daemon's wiring and lifecycle: one loop thread per pipeline, one HTTP port.

Resources open in dependency order and close in reverse (an ExitStack):
registry and metrics, the HTTP server, then each pipeline's loop (which owns
its detector, consumer and producer). Signals only set events:

- SIGTERM / SIGINT: the first one sets ``stop``; every loop finishes its
  batch, flushes, writes its final checkpoint, commits and closes;
  :meth:`Service.run` returns 0 if that took less than ``shutdown_grace_s``,
  1 otherwise (the process then exits with the loops still mid-shutdown,
  which the checkpoint makes safe). A second signal is ignored: the grace
  period bounds the wait.
- SIGHUP: every loop reloads its model file before its next poll.

A loop that dies with an exception stops the others and :meth:`Service.run`
re-raises it, so the process exits non-zero with the original error.

Under systemd (``Type=notify``) the main thread sends READY=1 once every
pipeline has compiled its kernels (the service is up; readiness for traffic
is /readyz, shown in STATUS=), WATCHDOG=1 only while every loop's heartbeat
is fresh (a wedged loop gets the process restarted), and STOPPING=1 on stop.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from collections.abc import Callable, Sequence
from types import FrameType
from typing import Any

from prometheus_client import CollectorRegistry

from streamlstm.errors import ConfigError, ModelError
from streamlstm.service.health import HealthServer, liveness, readiness
from streamlstm.service.loop import PipelineLoop
from streamlstm.service.metrics import Metrics
from streamlstm.service.sdnotify import SystemdNotifier
from streamlstm.service.status import Health

log = logging.getLogger(__name__)


class Service:
    """Runs every pipeline of ``config`` (a ``ServiceConfig``) until stopped."""

    def __init__(
        self,
        config: Any,
        registry: CollectorRegistry | None = None,
        stop: threading.Event | None = None,
        alert_listeners: Sequence[Callable[[dict[str, Any]], None]] = (),
        models: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.registry = registry or CollectorRegistry()
        self.stop = stop or threading.Event()
        self.metrics = Metrics(self.registry, config.metrics.max_alert_series)
        self.loops: list[PipelineLoop] = []
        self._alert_listeners = alert_listeners
        self._models = models or {}
        self._reloads: list[threading.Event] = []
        self.http: HealthServer | None = None
        self._errors: list[BaseException] = []
        self._started = threading.Event()
        self.notifier = SystemdNotifier()
        self._sd_ready = False
        self._sd_status_at = 0.0
        self._sd_dog_at = 0.0

    # -- control (safe from signal handlers and other threads) --------------------
    def request_stop(self, *_: Any) -> None:
        if not self.stop.is_set():
            log.info("stop requested; finishing the current batch")
        self.stop.set()

    def request_reload(self, *_: Any) -> None:
        log.info("model reload requested")
        for ev in self._reloads:
            ev.set()

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT stop, SIGHUP reloads. Main thread only."""

        def on_stop(signum: int, frame: FrameType | None) -> None:
            self.request_stop()

        def on_hup(signum: int, frame: FrameType | None) -> None:
            self.request_reload()

        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        if hasattr(signal, "SIGHUP"):
            signal.signal(signal.SIGHUP, on_hup)

    def healths(self) -> list[Health]:
        return [lp.health for lp in self.loops]

    def open_alerts(self) -> list[dict[str, Any]]:
        """Every stream in alert now (all of them, not the capped per-stream series),
        highest peak first; as fresh as the pipelines' last status (a few seconds)."""
        rows = [
            {"pipeline": st.pipeline, "stream": a.key, "partition": a.partition,
             "peak": round(float(a.peak), 6), "top_features": a.features,
             "alert_id": a.alert_id, "opened_offset": a.opened_offset,
             "opened_event_time": a.opened_time, "opened_iso": _iso(a.opened_time),
             "last_event_time": a.last_time}
            for st in self.metrics.statuses()
            for a in st.in_alert
        ]  # fmt: skip
        return sorted(rows, key=lambda r: (-r["peak"], r["pipeline"], r["stream"]))

    def wait_started(self, timeout: float | None = None) -> bool:
        return self._started.wait(timeout)

    # -- run -----------------------------------------------------------------------
    def run(self) -> int:
        cfg = self.config
        with contextlib.ExitStack() as stack:
            for p in cfg.pipelines:
                reload = threading.Event()
                self._reloads.append(reload)
                try:
                    lp = PipelineLoop(
                        p, self.metrics, self.stop, model=self._models.get(p.name),
                        reload=reload, alert_listeners=self._alert_listeners,
                    )  # fmt: skip
                except ModelError as exc:
                    # say which YAML key points at the bad model, as check-config does
                    raise ModelError(f"{cfg.source}: {p.path}.model.path: {exc}") from exc
                except ConfigError as exc:
                    # a pipeline's own config errors start with their key in the pipeline
                    # ("decode.features: ..."): prefix the file and the pipeline
                    raise ConfigError(f"{cfg.source}: {p.path}.{exc}") from exc
                self.loops.append(lp)
            self.http = HealthServer(
                cfg.metrics.host, cfg.metrics.port, self.registry, self.healths,
                cfg.heartbeat_stale_s, alerts=self.open_alerts,
            ).start()  # fmt: skip
            stack.callback(self.http.close)
            log.info("metrics, /healthz and /readyz on %s", self.http.url)
            threads = [
                threading.Thread(
                    target=self._run_loop, args=(lp,), name=f"pipeline-{lp.name}", daemon=True
                )
                for lp in self.loops
            ]
            for t in threads:
                t.start()
            self._started.set()
            while not self.stop.is_set():
                if not any(t.is_alive() for t in threads):
                    break
                self._tell_systemd()
                self.stop.wait(0.2)
            self.stop.set()
            self.notifier.stopping()
            deadline = time.monotonic() + cfg.shutdown_grace_s
            for t, lp in zip(threads, self.loops, strict=True):
                while t.is_alive() and time.monotonic() < deadline:
                    if lp.health.connecting and not lp.assigned:
                        break
                    t.join(0.1)
            # A loop still blocked in its first connect holds no state: nothing to lose.
            late = [
                t.name
                for t, lp in zip(threads, self.loops, strict=True)
                if t.is_alive() and not (lp.health.connecting and not lp.assigned)
            ]
            if self._errors:
                raise self._errors[0]
            if late:
                log.error(
                    "%s did not stop within shutdown_grace_s=%.1f; exiting anyway "
                    "(the last checkpoint stands, the rest is replayed on restart)",
                    ", ".join(late), cfg.shutdown_grace_s,
                )  # fmt: skip
                return 1
        log.info("stopped cleanly")
        return 0

    def _tell_systemd(self) -> None:
        n = self.notifier
        if not n.enabled:
            return
        now = time.monotonic()
        healths = self.healths()
        if not self._sd_ready and all(h.compiled for h in healths):
            self._sd_ready = n.ready(readiness(healths)[1].strip().replace("\n", "; "))
        if now - self._sd_status_at >= 5.0:
            self._sd_status_at = now
            n.status(readiness(healths)[1].strip().replace("\n", "; "))
        if n.watchdog_s and now - self._sd_dog_at >= n.watchdog_s / 3:
            if liveness(healths, self.config.heartbeat_stale_s)[0]:
                self._sd_dog_at = now
                n.watchdog()

    def _run_loop(self, lp: PipelineLoop) -> None:
        try:
            lp.run()
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            log.error("pipeline=%s crashed: %s", lp.name, exc, exc_info=True)
            self._errors.append(exc)
            self.stop.set()


def _iso(t: float | None) -> str | None:
    """An event time as the alert records write it (UTC, seconds)."""
    return None if t is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))
