"""End-to-end daemon benchmark on the local tansu broker.

Measures, in one run on the same broker:

1. raw consume rate: a bare kafka-python consumer (assign + poll, C crc32c)
   reading the whole events topic, records/s; and the same with the daemon's
   BulkKafkaConsumer (records as columns, streamlstm.kafka.bulk); and a bare
   confluent-kafka (librdkafka) consumer (assign + consume(num_messages=...)),
   installed for the benchmark only (``pip install confluent-kafka``; without it
   that column is skipped with a message);
2. end-to-end rate: the daemon's pipeline loop (poll -> decode -> detector ->
   alerts/dead letters -> metrics -> checkpoints) over the same topic, with an
   LSTM of hidden 64, events/s, its ratio to the bare kafka-python consumer of
   (1) (the issue's target: >= 1.5x) and to the bare confluent-kafka one; the same
   with ``kafka.client: confluent`` when confluent-kafka is installed; and
   where an event's time goes (µs: poll, decode, detector, the rest;
   "own" = the daemon's CPU time outside the Kafka client's poll);
3. latency from produce to alert (p50/p99) and from produce to scored, at a
   steady load (default 10k events/s) with the daemon running alongside;
4. resident memory with 1M live streams (hidden 64), and the time to write
   their checkpoint.

With ``--rounds K`` the bare kafka-python consumer and the daemon then read the same
topic K - 1 more times, one after the other, and the ratio is given per pair and as
their median: on this shared machine either side moves by up to 1.6x between minutes.

The benchmark process is pinned to one core (the broker runs on the other),
so "events/s" is per core. ``--events`` defaults to 1M; use e.g.
``--events 200000 --latency-s 10 --streams-rss 200000`` for a quick run.

    python benchmarks/bench_e2e.py [--events N] [--json out.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from streamlstm.detector import Detector, DetectorConfig
from streamlstm.examples.synth import FleetSpec, generate_fleet
from streamlstm.kafka.broker import LocalBroker
from streamlstm.model import Model
from streamlstm.service.checkpoint_store import CheckpointStore
from streamlstm.service.config import parse_config
from streamlstm.service.loop import PipelineLoop
from streamlstm.service.metrics import Metrics

FEATURES = ("temp", "pressure", "flow", "vibration")
PARTITIONS = 4


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def make_model(hidden: int, fleet: Any) -> Model:
    flat = fleet.values.reshape(-1, len(FEATURES)).astype(np.float64)
    m = Model.random(FEATURES, hidden=hidden, seed=0)
    return m.with_normalisation(flat.mean(0), flat.std(0) + 1e-9)


def encode(fleet: Any) -> list[tuple[bytes, bytes]]:
    keys, times, x, _ = fleet.events()
    rows = x.astype(np.float64).round(4).tolist()
    out = []
    for k, t, row in zip(keys.tolist(), times.tolist(), rows, strict=True):
        doc = {"sensor": k, "ts": t, "temp": row[0], "pressure": row[1], "flow": row[2],
               "vibration": row[3]}  # fmt: skip
        out.append((k.encode(), orjson.dumps(doc)))
    return out


def produce(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> float:
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    t0 = time.perf_counter()
    for k, v in records:
        prod.send(topic, key=k, value=v)
    prod.flush()
    prod.close()
    return len(records) / (time.perf_counter() - t0)


def paced_send(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float,
    on_ack: Any,
) -> None:  # fmt: skip
    """Send ``records`` at a steady ``rate`` a second, in bursts of 5 ms of events (the
    latency runs' load); ``on_ack(send_time, metadata)`` for each acknowledged record."""
    from kafka import KafkaProducer

    prod = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=1, acks=1)
    t_next = time.monotonic()
    chunk = max(1, int(rate / 200))
    for i in range(0, len(records), chunk):
        for k, v in records[i : i + chunk]:
            t = time.time()
            fut = prod.send(topic, key=k, value=v)
            fut.add_callback(on_ack, t)
        t_next += chunk / rate
        d = t_next - time.monotonic()
        if d > 0:
            time.sleep(d)
    prod.flush()
    prod.close()


def raw_consume(bootstrap: str, topic: str, n: int, bulk: bool = False) -> float:
    """A bare consumer reading the topic (assign + poll, nothing done with the records):
    kafka-python's own, or with ``bulk`` the daemon's BulkKafkaConsumer (columns)."""
    from kafka import KafkaConsumer, TopicPartition

    from streamlstm.kafka.bulk import BulkKafkaConsumer

    cls = BulkKafkaConsumer if bulk else KafkaConsumer
    c = cls(bootstrap_servers=bootstrap, enable_auto_commit=False, max_poll_records=2000)
    tps = [TopicPartition(topic, p) for p in range(PARTITIONS)]
    c.assign(tps)
    c.seek_to_beginning(*tps)
    got, t0 = 0, 0.0
    while got < n:
        for recs in c.poll(100, max_records=2000).values():
            if not got:  # the clock starts at the first records (see FIRST_RECORDS)
                t0, first = time.perf_counter(), sum(map(len, recs)) if bulk else len(recs)
            got += sum(map(len, recs)) if bulk else len(recs)
    rate = (got - first) / (time.perf_counter() - t0)
    c.close()
    return rate


# FIRST_RECORDS: a bare consumer's clock starts when its first records arrive, as the
# daemon's starts after it connected: librdkafka connects and looks offsets up lazily, and
# that start-up (~0.5 s here) was over half of a one-second read of 1M records.
CONFLUENT_MISSING = (
    "confluent-kafka is not installed: the bare confluent-kafka column is skipped "
    "(install it for the benchmark with `pip install confluent-kafka`)"
)


def have_confluent() -> bool:
    try:
        import confluent_kafka  # noqa: F401
    except ImportError:
        return False
    return True


def raw_consume_confluent(bootstrap: str, topic: str, n: int) -> float:
    """A bare confluent-kafka (librdkafka) consumer reading the topic: assign +
    ``consume(num_messages=2000)``, each message's error checked, nothing else done."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    c = Consumer({
        "bootstrap.servers": bootstrap, "group.id": "bench-bare-confluent",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
    })  # fmt: skip
    c.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in range(PARTITIONS)])
    got, t0, first = 0, 0.0, 0
    while got < n:
        msgs = c.consume(num_messages=2000, timeout=0.1)
        ok = sum(1 for m in msgs if m.error() is None)
        if ok and not got:  # the clock starts at the first records (see FIRST_RECORDS)
            t0, first = time.perf_counter(), ok
        got += ok
    rate = (got - first) / (time.perf_counter() - t0)
    c.close()
    return rate


def pipeline_config(
    bootstrap: str, topic: str, model_path: Path, ckpt: Path, name: str,
    fetch_max_wait_ms: int | None = None, client: str = "kafka-python",
    extra: dict[str, Any] | None = None,
) -> Any:  # fmt: skip
    kafka: dict[str, Any] = {
        "bootstrap_servers": [bootstrap], "assignment": "static", "group_id": name,
        "client": client,
    }  # fmt: skip
    kafka["extra"] = dict(extra or {})
    if fetch_max_wait_ms is not None:
        kafka["extra"]["fetch_max_wait_ms"] = fetch_max_wait_ms
    doc = {
        "kafka": kafka,
        "metrics": {"port": 0},
        "pipelines": [{
            "name": "bench",
            "source": {"topics": [topic], "max_poll_records": 2000, "poll_timeout_ms": 50},
            "decode": {"key_field": "sensor", "time_field": "ts",
                       "features": [{"name": f} for f in FEATURES]},
            "model": {"path": str(model_path)},
            "sinks": {"alerts_topic": f"{name}-alerts", "dead_letter_topic": f"{name}-dlq",
                      "log_alerts": False},
            "checkpoint": {"dir": str(ckpt), "interval_s": 10},
        }],
    }  # fmt: skip
    return parse_config(doc, source="<bench>")


def processed(loop: PipelineLoop) -> int:
    return int(loop.detector.outcome_totals.sum())


class _Timed:
    """Wall and CPU time spent in one callable (the benchmark's own instrumentation)."""

    def __init__(self, fn: Any) -> None:
        self.fn, self.wall, self.cpu = fn, 0.0, 0.0

    def __call__(self, *a: Any, **kw: Any) -> Any:
        w, c = time.perf_counter(), time.thread_time()
        try:
            return self.fn(*a, **kw)
        finally:
            self.wall += time.perf_counter() - w
            self.cpu += time.thread_time() - c


def thread_cpu() -> dict[str, float]:
    """CPU seconds of each live thread of this process, by thread name (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            with open(f"/proc/self/task/{t.native_id}/stat") as fh:
                f = fh.read().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        name = "main" if t is threading.main_thread() else t.name.split("-")[0].split(" ")[0]
        out[name] = out.get(name, 0.0) + (int(f[11]) + int(f[12])) / tick
    return out


def run_e2e(cfg: Any, model: Model, n: int, objects: bool = False) -> tuple[float, dict[str, Any]]:
    """The daemon's loop over ``n`` events; its rate and where each event's time went
    (µs per event): the source's poll (kafka-python + the bulk reader), decode, the
    detector call, the rest of the loop (metrics, alerts, dead letters, checkpoint)."""
    from kafka import KafkaConsumer
    from prometheus_client import CollectorRegistry

    from streamlstm.kafka.source import KafkaSource

    def source(*a: Any, **kw: Any) -> KafkaSource:
        # objects: kafka-python's own reader (its records turned into columns by the source)
        return (
            KafkaSource(*a, **kw, consumer_factory=KafkaConsumer)
            if objects
            else KafkaSource(*a, **kw)
        )

    stop = threading.Event()
    loop = PipelineLoop(
        cfg.pipelines[0], Metrics(CollectorRegistry()), stop, model=model, source_factory=source
    )
    loop.warm_up()
    assert loop._connect()
    poll = loop.source.poll = _Timed(loop.source.poll)  # type: ignore[method-assign]
    dec = loop.decoder.decode = _Timed(loop.decoder.decode)  # type: ignore[method-assign]
    det = loop.detector.process_many = _Timed(loop.detector.process_many)  # type: ignore[method-assign]
    # Start-up before the clock: the read-back of the output topics after the partitions'
    # assignment (AlertSink.recall, ~0.6 s here) that the first step would do.
    r0 = time.perf_counter()
    loop._recall_outputs()
    recall_s = time.perf_counter() - r0
    t0, c0, p0, th0 = time.perf_counter(), time.thread_time(), time.process_time(), thread_cpu()
    while processed(loop) < n:
        loop.step()
    # Up to the last event scored (checkpoints every interval_s included); the final
    # checkpoint of a stopping daemon (fsync of every stream's state) is timed apart.
    elapsed, cpu = time.perf_counter() - t0, time.thread_time() - c0
    threads = {k: v - th0.get(k, 0.0) for k, v in thread_cpu().items()}
    process_cpu = time.process_time() - p0
    t1 = time.perf_counter()
    loop._checkpoint(final=True)
    final_ckpt = time.perf_counter() - t1
    loop.close()
    us = 1e6 / n
    own = (cpu - poll.cpu) * us
    return n / elapsed, {
        "alerts": loop.detector.transition_totals["opened"],
        "final_checkpoint_s": final_ckpt,
        "startup_recall_s": recall_s,
        "us_per_event": {
            "wall": elapsed * us,
            "cpu": cpu * us,
            "poll_wall": poll.wall * us,
            "poll_cpu": poll.cpu * us,
            "decode": dec.cpu * us,
            "detector": det.cpu * us,
            "rest": own - (dec.cpu + det.cpu) * us,
            "own": own,
            "own_without_detector": own - det.cpu * us,
            "process_cpu": process_cpu * us,
        },
        "thread_cpu_us_per_event": {k: v * us for k, v in threads.items() if v > 0},
    }


def rounds(
    broker: LocalBroker, model_path: Path, model: Model, n: int, tmp: Path, k: int,
    raw: float, rate: float,
) -> dict[str, Any]:  # fmt: skip
    """``k`` pairs of (bare kafka-python consumer, daemon) over the same topic, the first
    the one just measured; each pair's ratio and their median."""
    bs = broker.bootstrap
    pairs = [(raw, rate)]
    for r in range(1, k):
        b = raw_consume(bs, "events", n)
        name = f"e2e-r{r}"
        broker.create_topics({f"{name}-alerts": 1, f"{name}-dlq": 1})
        cfg = pipeline_config(bs, "events", model_path, tmp / f"ckpt-{name}", name)
        d, _ = run_e2e(cfg, model, n)
        pairs.append((b, d))
        print(f"  round {r + 1}: bare {b:,.0f} records/s, daemon {d:,.0f} events/s = "
              f"{d / b:.2f}x", flush=True)  # fmt: skip
    ratios = [d / b for b, d in pairs]
    med = float(np.median(ratios))
    print(f"  daemon / bare kafka-python over {k} rounds: median {med:.2f}x "
          f"({', '.join(f'{x:.2f}' for x in ratios)})", flush=True)  # fmt: skip
    return {"bare_per_s": [b for b, _ in pairs], "e2e_per_s": [d for _, d in pairs],
            "e2e_over_raw": ratios, "e2e_over_raw_median": med}  # fmt: skip


def run_latency(
    bootstrap: str, cfg: Any, model: Model, fleet_records: list[tuple[bytes, bytes]],
    rate: float, seconds: float, alerts_topic: str,
) -> dict[str, float]:  # fmt: skip
    """Steady ``rate`` events/s into the topic while the loop runs; latencies in ms."""
    from kafka import KafkaConsumer, TopicPartition
    from prometheus_client import CollectorRegistry

    stop = threading.Event()
    metrics = Metrics(CollectorRegistry())
    scored: list[np.ndarray] = []
    observe = metrics.latency.observe_many

    def keep(labels: Any, values: np.ndarray) -> None:  # exact values next to the histogram
        scored.append(np.asarray(values, np.float64).copy())
        observe(labels, values)

    metrics.latency.observe_many = keep  # type: ignore[method-assign]
    loop = PipelineLoop(cfg.pipelines[0], metrics, stop, model=model)
    loop.warm_up()
    assert loop._connect()
    n_total = int(rate * seconds)
    topic = cfg.pipelines[0].source.topics[0]
    # Send times by (partition, offset) in an array, not a dict: a dict of 200k tuples in
    # the daemon's process is work for its cyclic collector (full collections walk it
    # with the loop stopped) that a daemon does not have: the benchmark's own cost.
    sent_at = np.full((PARTITIONS, n_total + 1), np.nan)

    def sent(t: float, md: Any) -> None:  # kafka-python: callback(*args, metadata)
        sent_at[md.partition, md.offset] = t

    def producer() -> None:
        paced_send(bootstrap, topic, fleet_records[:n_total], rate, sent)

    alert_lat: list[float] = []

    def alert_reader() -> None:
        c = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=5
        )
        tp = TopicPartition(alerts_topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        while not stop.is_set():
            for recs in c.poll(50).values():
                now = time.time()
                for r in recs:
                    a = orjson.loads(r.value)
                    if a["kind"] != "opened":
                        continue
                    t = sent_at[a["partition"], a["offset"]]
                    if not np.isnan(t):
                        alert_lat.append(now - t)
        c.close()

    gc_pauses: list[tuple[int, float]] = []  # (generation, ms) of each collection
    gc_t0 = [0.0]

    def gc_cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_pauses.append((info["generation"], (time.perf_counter() - gc_t0[0]) * 1000))

    # Start-up (assignment, the read-back of the output topics) before the first event is
    # sent, as in the throughput run: else the first second of events waits for it and
    # sets the scored p99 (476 ms with it, 2026-12-06).
    t_ready = time.monotonic() + 2.0
    while time.monotonic() < t_ready:
        loop.step()
    threads = [threading.Thread(target=producer), threading.Thread(target=alert_reader)]
    for t in threads:
        t.start()
    gc.callbacks.append(gc_cb)
    while processed(loop) < n_total:
        loop.step()
    gc.callbacks.remove(gc_cb)
    loop._checkpoint(final=True)
    threads[0].join()
    time.sleep(1.0)
    stop.set()
    threads[1].join()
    loop.close()
    a = np.array(alert_lat) * 1000
    # Record timestamps are in whole ms: scored latencies are good to about 1 ms.
    sc = np.concatenate(scored) * 1000 if scored else np.array([np.nan])
    return {
        "events": n_total,
        "alerts": len(a),
        "alert_p50_ms": float(np.percentile(a, 50)) if len(a) else float("nan"),
        "alert_p99_ms": float(np.percentile(a, 99)) if len(a) else float("nan"),
        "scored_p50_ms": float(np.percentile(sc, 50)),
        "scored_p99_ms": float(np.percentile(sc, 99)),
        # Full collections (generation 2) while events flowed: count and longest pause.
        "gc_full": sum(1 for g, _ in gc_pauses if g == 2),
        "gc_full_max_ms": max((ms for g, ms in gc_pauses if g == 2), default=0.0),
    }


def run_rss(n_streams: int, hidden: int, tmp: Path) -> dict[str, float]:
    model = Model.random(FEATURES, hidden=hidden, seed=0)
    gc.collect()
    before = rss_mb()  # interpreter + numpy + numba + compiled kernels
    det = Detector(model, DetectorConfig(max_streams=max(n_streams, 1)))
    rng = np.random.default_rng(0)
    step = 100_000
    t0 = time.perf_counter()
    for s in range(0, n_streams, step):
        m = min(step, n_streams - s)
        keys = [f"card-{i:08d}" for i in range(s, s + m)]
        det.process_many(
            keys, np.zeros(m), rng.normal(size=(m, len(FEATURES))), group=s // step % 4
        )
    fill = time.perf_counter() - t0
    after = rss_mb()
    store = CheckpointStore(tmp / "rss-ckpt", "bench")
    t0 = time.perf_counter()
    size = 0
    for g in range(4):
        size += store.write("t", g, 0, det.table.snapshot(group=g)).size
    ckpt_s = time.perf_counter() - t0
    return {
        "streams": n_streams,
        "rss_mb": after,
        "rss_before_mb": before,
        "rss_delta_mb": after - before,
        "state_mb": det.table.state_bytes() / 2**20,
        "bytes_per_stream_rss": (after - before) * 2**20 / max(n_streams, 1),
        "fill_s": fill,
        "checkpoint_s": ckpt_s,
        "checkpoint_mb": size / 2**20,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--streams", type=int, default=10_000, help="streams in the topic")
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--latency-rate", type=float, default=10_000.0)
    ap.add_argument("--latency-s", type=float, default=20.0)
    ap.add_argument("--streams-rss", type=int, default=1_000_000)
    ap.add_argument(
        "--fetch-max-wait-ms", type=int, default=None,
        help="kafka.extra fetch_max_wait_ms for the latency run (default: the daemon's, 10 ms; "
        "kafka-python's own is 500)",
    )  # fmt: skip
    ap.add_argument(
        "--latency-baseline", type=json.loads, default=None, metavar="JSON",
        help="also run the latency phase first under this kafka.extra (e.g. the settings "
        'before a change: \'{"linger_ms": 5}\'), then under the defaults',
    )  # fmt: skip
    ap.add_argument(
        "--rounds", type=int, default=1,
        help="pairs of (bare kafka-python consumer, daemon) over the same topic, one after "
        "the other; the ratio is reported per pair and as their median (the machine's noise "
        "moves either side by up to 1.6x between minutes)",
    )  # fmt: skip
    ap.add_argument("--json", type=Path, default=None)
    ap.add_argument("--only-rss", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.only_rss:
        print(json.dumps(run_rss(args.streams_rss, args.hidden, Path(tempfile.mkdtemp()))))
        return 0
    tmp = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    res: dict[str, Any] = {"events": args.events, "hidden": args.hidden}
    with LocalBroker() as broker:
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, {0})  # after the broker started: it keeps the other core
        bs = broker.bootstrap
        steps = max(1, args.events // args.streams)
        spec = FleetSpec(
            n_streams=args.streams, n_steps=steps, seed=3, anomaly_rate=1.0,
            kinds=("spike", "level_shift"),
        )  # fmt: skip
        fleet = generate_fleet(spec)
        records = encode(fleet)[: args.events]
        model = make_model(args.hidden, fleet)
        model_path = model.save(tmp / "model.npz")
        broker.create_topics({"events": PARTITIONS, "e2e-alerts": 1, "e2e-dlq": 1})
        print(f"producing {len(records)} events ({args.streams} streams) ...", flush=True)
        res["produce_per_s"] = produce(bs, "events", records)
        print(f"  produce {res['produce_per_s']:,.0f}/s", flush=True)
        # The benchmark's own millions of objects (the events, the fleet) out of the
        # collector's sight: a client that makes an object per record (confluent-kafka's
        # Message, kafka-python's records) otherwise pays full collections of this heap,
        # which a daemon does not hold (bare confluent-kafka: 144k records/s with it, the
        # same client ~0.9M/s in a small process).
        gc.collect()
        gc.freeze()
        res["raw_consume_per_s"] = raw_consume(bs, "events", len(records))
        raw = res["raw_consume_per_s"]
        print(f"  bare kafka-python consumer {raw:,.0f} records/s", flush=True)
        bulk = res["bulk_consume_per_s"] = raw_consume(bs, "events", len(records), bulk=True)
        print(f"  bare bulk consumer (BulkKafkaConsumer) {bulk:,.0f} records/s", flush=True)
        if have_confluent():
            ck = res["confluent_consume_per_s"] = raw_consume_confluent(bs, "events", len(records))
            print(f"  bare confluent-kafka consumer {ck:,.0f} records/s", flush=True)
        else:
            res["confluent_consume_per_s"] = None
            print(f"  {CONFLUENT_MISSING}", flush=True)
        cfg = pipeline_config(bs, "events", model_path, tmp / "ckpt", "e2e")
        rate, extra = run_e2e(cfg, model, len(records))
        res["e2e_per_s"] = rate
        res["e2e_over_raw"] = rate / res["raw_consume_per_s"]
        res.update(extra)
        print(f"  end to end {rate:,.0f} events/s = {res['e2e_over_raw']:.2f}x the bare "
              f"kafka-python consumer, {extra['alerts']} alerts opened", flush=True)  # fmt: skip
        if res["confluent_consume_per_s"]:
            res["e2e_over_confluent"] = rate / res["confluent_consume_per_s"]
            print(f"  end to end / bare confluent-kafka consumer {res['e2e_over_confluent']:.2f}x",
                  flush=True)  # fmt: skip
        print("  µs per event: " + ", ".join(
            f"{k} {v:.2f}" for k, v in extra["us_per_event"].items()), flush=True)  # fmt: skip
        by_thread = extra["thread_cpu_us_per_event"].items()
        print("  CPU µs per event by thread: " + ", ".join(
            f"{k} {v:.2f}" for k, v in by_thread), flush=True)  # fmt: skip
        if args.rounds > 1:
            res["rounds"] = rounds(
                broker, model_path, model, len(records), tmp, args.rounds, raw, rate
            )
        ocfg = pipeline_config(bs, "events", model_path, tmp / "ckpt-objects", "e2e-objects")
        broker.create_topics({"e2e-objects-alerts": 1, "e2e-objects-dlq": 1})
        res["e2e_objects_per_s"], res["objects"] = run_e2e(ocfg, model, len(records), True)
        print(
            f"  end to end with kafka-python's record objects {res['e2e_objects_per_s']:,.0f} "
            f"events/s; bulk / objects {rate / res['e2e_objects_per_s']:.2f}x",
            flush=True,
        )
        if res["confluent_consume_per_s"]:
            # The daemon on kafka.client: confluent (librdkafka's threads are not Python
            # threads: their CPU is in process_cpu, not in the by-thread line).
            ccfg = pipeline_config(bs, "events", model_path, tmp / "ckpt-confluent",
                                   "e2e-confluent", client="confluent")  # fmt: skip
            broker.create_topics({"e2e-confluent-alerts": 1, "e2e-confluent-dlq": 1})
            crate, res["confluent"] = run_e2e(ccfg, model, len(records))
            res["e2e_confluent_per_s"] = crate
            res["e2e_confluent_over_confluent"] = crate / res["confluent_consume_per_s"]
            res["e2e_confluent_over_raw"] = crate / raw
            print(
                f"  end to end with kafka.client: confluent {crate:,.0f} events/s = "
                f"{res['e2e_confluent_over_confluent']:.2f}x the bare confluent-kafka consumer, "
                f"{res['e2e_confluent_over_raw']:.2f}x the bare kafka-python one, "
                f"{res['confluent']['alerts']} alerts opened",
                flush=True,
            )
            per = res["confluent"]["us_per_event"].items()
            print("  µs per event (confluent): " + ", ".join(
                f"{k} {v:.2f}" for k, v in per), flush=True)  # fmt: skip
        del records
        if args.latency_s > 0:
            n_lat = int(args.latency_rate * args.latency_s)
            lfleet = generate_fleet(FleetSpec(
                n_streams=1000, n_steps=max(1, n_lat // 1000) + 1, seed=4, anomaly_rate=3.0,
                kinds=("spike", "level_shift"), start_time=1_800_000_000.0,
            ))  # fmt: skip
            lrec = encode(lfleet)
            # The events to send (200k tuples) out of the collector's sight, like the
            # throughput stage's: the daemon's process would not hold them.
            del lfleet
            gc.collect()
            gc.freeze()
            # With --latency-baseline: the same run under the given kafka.extra first (the
            # settings before a change), then under the defaults, on fresh topics.
            runs = [("latency_baseline", args.latency_baseline)] if args.latency_baseline else []
            for key, extra in [*runs, ("latency", None)]:
                name = "lat-base" if extra is not None else "lat"
                broker.create_topics({name: PARTITIONS, f"{name}-alerts": 1, f"{name}-dlq": 1})
                lcfg = pipeline_config(bs, name, model_path, tmp / f"{name}-ckpt", name,
                                       args.fetch_max_wait_ms, extra=extra)  # fmt: skip
                load = os.getloadavg()[0]
                res[key] = run_latency(
                    bs, lcfg, model, lrec, args.latency_rate, args.latency_s, f"{name}-alerts"
                )
                res[key]["load_average"] = load
                res[key]["kafka_extra"] = extra or {}
                print(f"  {key} at {args.latency_rate:,.0f}/s: {res[key]}", flush=True)
    if args.streams_rss > 0:
        # A fresh process, so the RSS is that of the state and not of the stages above.
        import subprocess

        out = subprocess.run(
            [sys.executable, __file__, "--only-rss", "--streams-rss", str(args.streams_rss),
             "--hidden", str(args.hidden)],
            capture_output=True, text=True, check=True,
        ).stdout  # fmt: skip
        res["rss"] = json.loads(out.strip().splitlines()[-1])
        print(f"  memory: {res['rss']}", flush=True)
    print(json.dumps(res, indent=2))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
