"""Where the produce -> alert latency goes, stage by stage (issue #11).

The same steady load as ``bench_e2e.py``'s latency run (default 10k events/s,
1 000 streams, the daemon's loop in this process, a producer thread and an
alert-reading consumer thread beside it), with time stamps taken at each
stage for every event that opens an alert:

- ``send``: the load producer's ``send`` call (wall clock);
- ``acked``: the load producer's delivery callback (the broker appended it);
- ``fetched``: the daemon's consumer handled the fetch response holding it
  (kafka-python's ``Fetcher._handle_fetch_response``, on its IO thread), and
  ``fetch_sent``: when that fetch request was sent;
- ``polled``: the loop's ``source.poll()`` returned it;
- ``to_sink``: the loop handed its alert to the sink (decode + detector done);
- ``alert_acked``: the alert producer's delivery callback;
- ``read``: the benchmark's alert reader got it.

Also: whether the broker answers a fetch as soon as data is there or holds it
for ``fetch_max_wait_ms`` (``--probe-broker``: single records sent 20-300 ms apart (seeded)
from another process to a consumer parked with a long max wait).

    python benchmarks/latency_stages.py [--rate 10000] [--seconds 10] [--probe-broker]

Instrumentation only: it wraps kafka-python internals of the benchmark's own
clients and the loop's objects; nothing in ``streamlstm`` changes.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson

sys.path.insert(0, str(Path(__file__).parent))
import bench_e2e as B  # noqa: E402

from streamlstm.examples.synth import FleetSpec, generate_fleet  # noqa: E402
from streamlstm.kafka.broker import LocalBroker  # noqa: E402
from streamlstm.service.loop import PipelineLoop  # noqa: E402
from streamlstm.service.metrics import Metrics  # noqa: E402

STAGES = ("send", "acked", "fetch_sent", "fetched", "polled", "to_sink", "alert_acked", "read")


def run(bootstrap: str, cfg: Any, model: Any, records: list[tuple[bytes, bytes]], rate: float,
        seconds: float, alerts_topic: str, reader_wait_ms: int, load_process: bool = False,
        checkpoint_inline: bool = False,
) -> dict[str, Any]:  # fmt: skip
    from kafka import KafkaConsumer, TopicPartition
    from kafka.consumer import fetcher as kf
    from prometheus_client import CollectorRegistry

    stop = threading.Event()
    metrics = Metrics(CollectorRegistry())
    scored: list[np.ndarray] = []
    observe = metrics.latency.observe_many

    def keep(labels: Any, values: np.ndarray) -> None:  # as bench_e2e: exact values
        scored.append(np.asarray(values, np.float64).copy())
        observe(labels, values)

    metrics.latency.observe_many = keep  # type: ignore[method-assign]
    loop = PipelineLoop(cfg.pipelines[0], metrics, stop, model=model)
    loop.warm_up()
    assert loop._connect()
    topic = cfg.pipelines[0].source.topics[0]
    ev: dict[tuple[int, int], dict[str, float]] = {}  # (partition, offset) -> stage -> time

    def at(p: int, o: int) -> dict[str, float]:
        d = ev.get((p, o))
        if d is None:
            d = ev[(p, o)] = {}
        return d

    # The daemon consumer's fetch responses: (time handled, request send time, offsets).
    fetches: list[tuple[float, float, dict[int, int]]] = []
    daemon_fetcher = loop.source.consumer._fetcher
    orig_handle = kf.Fetcher._handle_fetch_response
    mono_to_wall = time.time() - time.monotonic()

    def handle(self: Any, node_id: Any, fetch_offsets: Any, send_time: float, response: Any):
        out = orig_handle(self, node_id, fetch_offsets, send_time, response)
        if self is daemon_fetcher:
            offs = {tp.partition: o for tp, o in fetch_offsets.items() if tp.topic == topic}
            fetches.append((time.time(), send_time + mono_to_wall, offs))
        return out

    kf.Fetcher._handle_fetch_response = handle
    polls: list[tuple[float, float, dict[int, tuple[int, int]]]] = []  # start, end, p -> range
    orig_poll = loop.source.poll

    def poll() -> Any:
        t0 = time.time()
        out = orig_poll()
        t1 = time.time()
        polls.append((t0, t1, {tp.partition: (int(c.offsets[0]), int(c.offsets[-1]))
                               for tp, c in out.items() if len(c)}))  # fmt: skip
        return out

    loop.source.poll = poll  # type: ignore[method-assign]
    # Wall time of the loop's other parts (a long one holds every event behind it).
    # turn: one turn of the loop less the wait in its poll (the loop's own work, which
    # every event fetched meanwhile waits for, whatever part of the turn it is);
    # ckpt_start: the periodic checkpoint's part on the loop's thread where it is written
    # on a writer thread (ckpt_write is then on that thread); ckpt_expire, ckpt_snapshot:
    # the idle-stream expiry and the state copy of a checkpoint.
    names = ("turn process decode detector alert checkpoint ckpt_start publish ckpt_flush "
             "ckpt_expire ckpt_snapshot ckpt_write ckpt_commit ckpt_commit_async")  # fmt: skip
    parts: dict[str, list[float]] = {k: [] for k in names.split()}

    def timed(name: str, fn: Any) -> Any:
        def inner(*a: Any, **kw: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                parts[name].append((time.perf_counter() - t0) * 1000)

        return inner

    loop.process = timed("process", loop.process)  # type: ignore[method-assign]
    loop._checkpoint = timed("checkpoint", loop._checkpoint)  # type: ignore[method-assign]
    if checkpoint_inline:  # the periodic checkpoint written on the loop's thread, as before
        loop._start_checkpoint = lambda: loop._checkpoint(commit=False)  # type: ignore[method-assign]
    elif hasattr(loop, "_start_checkpoint"):  # absent before the writer thread
        loop._start_checkpoint = timed("ckpt_start", loop._start_checkpoint)
    loop._expire = timed("ckpt_expire", loop._expire)  # type: ignore[method-assign]
    loop._delta.snapshot = timed("ckpt_snapshot", loop._delta.snapshot)  # type: ignore[method-assign]
    loop._publish = timed("publish", loop._publish)  # type: ignore[method-assign]
    loop.decoder.decode = timed("decode", loop.decoder.decode)  # type: ignore[method-assign]
    det = loop.detector
    det.process_many = timed("detector", det.process_many)  # type: ignore[method-assign]
    loop.sink.alert = timed("alert", loop.sink.alert)  # type: ignore[method-assign]
    loop.sink.flush = timed("ckpt_flush", loop.sink.flush)  # type: ignore[method-assign]
    loop.store.write = timed("ckpt_write", loop.store.write)  # type: ignore[method-assign]
    loop.source.commit = timed("ckpt_commit", loop.source.commit)  # type: ignore[method-assign]
    loop.source.commit_async = timed("ckpt_commit_async", loop.source.commit_async)  # type: ignore[method-assign]
    sink = loop.sink
    orig_send_raw = sink._send_raw

    def send_raw(args: Any) -> Any:
        fut = orig_send_raw(args)
        doc = orjson.loads(args[2]) if args[0] == alerts_topic else None
        if doc is not None and doc["kind"] == "opened":
            d = at(doc["partition"], doc["offset"])
            d["to_sink"] = time.time()
            if not isinstance(fut, Exception):
                fut.add_callback(lambda _md, d=d: d.__setitem__("alert_acked", time.time()))
        return fut

    sink._send_raw = send_raw  # type: ignore[method-assign]
    n_total = int(rate * seconds)
    # (partition, offset) -> send and ack time, in arrays (as bench_e2e: a dict of 100k+
    # tuples would be the collector's work in the daemon's process).
    sent = np.full((B.PARTITIONS, n_total + 1, 2), np.nan)

    def on_ack(t: float, md: Any) -> None:
        sent[md.partition, md.offset] = (t, time.time())

    def producer() -> None:
        if load_process:
            _producer_process(bootstrap, topic, records[:n_total], rate, sent)
            return
        B.paced_send(bootstrap, topic, records[:n_total], rate, on_ack)

    def reader() -> None:
        c = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=reader_wait_ms
        )
        tp = TopicPartition(alerts_topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        while not stop.is_set():
            for recs in c.poll(50).values():
                now = time.time()
                for r in recs:
                    a = orjson.loads(r.value)
                    if a["kind"] == "opened":
                        at(a["partition"], a["offset"])["read"] = now
        c.close()

    import gc

    gc_ms: dict[int, list[float]] = {0: [], 1: [], 2: []}
    gc_t0 = [0.0]

    def gc_cb(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_ms[info["generation"]].append((time.perf_counter() - gc_t0[0]) * 1000)

    t_ready = time.monotonic() + 2.0
    while time.monotonic() < t_ready:
        loop.step()
    threads = [threading.Thread(target=producer), threading.Thread(target=reader)]
    for t in threads:
        t.start()
    gc.callbacks.append(gc_cb)  # while events flow
    prof = None
    if os.environ.get("LAT_PROFILE"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    while B.processed(loop) < n_total:
        t0 = time.perf_counter()
        n_polls = len(polls)
        loop.step()
        waited = polls[-1][1] - polls[-1][0] if len(polls) > n_polls else 0.0
        parts["turn"].append((time.perf_counter() - t0 - waited) * 1000)
    if prof is not None:
        import pstats

        prof.disable()
        st = pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
        st.print_stats(25)
        st.print_callers("socket.socket|_thread.lock")
    gc.callbacks.remove(gc_cb)
    loop._checkpoint(final=True)
    threads[0].join()
    time.sleep(1.0)
    stop.set()
    threads[1].join()
    loop.close()
    if os.environ.get("LAT_GC_TYPES"):  # what the collector still walks (not frozen)
        import collections

        types = collections.Counter(type(o).__name__ for o in gc.get_objects())
        print("unfrozen objects", sum(types.values()), types.most_common(12), file=sys.stderr)
    kf.Fetcher._handle_fetch_response = orig_handle
    # Fetch and poll stages of each alert's event, from the logs.
    fetch_by_p: dict[int, list[tuple[int, float, float]]] = {}
    for t_done, t_sent, offs in fetches:
        for p, o in offs.items():
            fetch_by_p.setdefault(p, []).append((o, t_sent, t_done))
    for (p, o), d in ev.items():
        if not np.isnan(sent[p, o, 0]):
            d["send"], d["acked"] = sent[p, o].tolist()
        # The fetch that returned offset o: the last one sent from an offset <= o.
        cands = [f for f in fetch_by_p.get(p, []) if f[0] <= o]
        if cands:
            _, d["fetch_sent"], d["fetched"] = max(cands, key=lambda f: (f[0], f[2]))
        for _t0, t1, rng in polls:
            r = rng.get(p)
            if r is not None and r[0] <= o <= r[1]:
                d["polled"] = t1
                break
    full = [d for d in ev.values() if all(s in d for s in STAGES)]
    out: dict[str, Any] = {"events": n_total, "alerts": len(full), "stages_ms": {}}
    out["scored_ms"] = _pct(np.concatenate(scored) * 1000)
    out["gc_pauses_ms"] = {g: {"n": len(v), **_pct(np.array(v))} for g, v in gc_ms.items()}
    prev = "send"
    for s in ("acked", "fetched", "polled", "to_sink", "alert_acked", "read"):
        x = np.array([d[s] - d[prev] for d in full]) * 1000
        out["stages_ms"][f"{prev} -> {s}"] = _pct(x)
        prev = s
    out["stages_ms"]["fetch_sent -> fetched (fetch round trip)"] = _pct(
        np.array([d["fetched"] - d["fetch_sent"] for d in full]) * 1000
    )
    out["stages_ms"]["acked -> fetch_sent (<0: fetch parked before the append)"] = _pct(
        np.array([d["fetch_sent"] - d["acked"] for d in full]) * 1000
    )
    out["stages_ms"]["send -> polled"] = _pct(
        np.array([d["polled"] - d["send"] for d in full]) * 1000
    )
    total = np.array([d["read"] - d["send"] for d in full]) * 1000
    out["stages_ms"]["send -> read (total)"] = _pct(total)
    # The slowest 5 %: the mean of each stage over them (what sets the p99).
    slow = [d for d, t in zip(full, total, strict=True) if t >= np.percentile(total, 95)]
    chain = ("send", "acked", "fetched", "polled", "to_sink", "alert_acked", "read")
    out["slowest_5pct_mean_ms"] = {
        f"{a} -> {b}": round(float(np.mean([d[b] - d[a] for d in slow])) * 1000, 2)
        for a, b in zip(chain, chain[1:], strict=False)
    }
    sizes = np.array([sum(r[1] - r[0] + 1 for r in rng.values()) for _, _, rng in polls if rng])
    rtt = np.array([t_done - t_sent for t_done, t_sent, _ in fetches]) * 1000
    out["poll_records"] = _pct(sizes.astype(float))
    out["daemon_fetch_round_trip_ms"] = _pct(rtt)
    out["loop_parts_ms"] = {k: {"n": len(v), **_pct(np.array(v))} for k, v in parts.items()}
    turns = np.array(parts["turn"])
    out["loop_turns_over_ms"] = {f">={t}": int((turns >= t).sum()) for t in (5, 10, 20)}
    return out


_LOAD = """
import pickle, sys, time
import numpy as np
sys.path.insert(0, sys.argv[6])
from bench_e2e import paced_send
bootstrap, topic, path, out = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5]
rows = []
paced_send(bootstrap, topic, pickle.load(open(path, "rb")), float(sys.argv[4]),
           lambda t, md: rows.append((md.partition, md.offset, t, time.time())))
np.save(out, np.array(rows, dtype=np.float64))
"""


def _producer_process(
    bootstrap: str, topic: str, records: list[tuple[bytes, bytes]], rate: float,
    sent: np.ndarray,
) -> None:  # fmt: skip
    """The load producer in a process of its own (same code, same pacing): it does not
    share the daemon's interpreter lock. Its send and ack times come back in a file."""
    import pickle

    d = Path(tempfile.mkdtemp(prefix="lat-load-"))
    (d / "rec.pkl").write_bytes(pickle.dumps(records))
    subprocess.run(
        [sys.executable, "-c", _LOAD, bootstrap, topic, str(d / "rec.pkl"), str(rate),
         str(d / "sent.npy"), str(Path(__file__).parent)], check=True,
    )  # fmt: skip
    rows = np.load(d / "sent.npy")
    sent[rows[:, 0].astype(int), rows[:, 1].astype(int)] = rows[:, 2:4]


def _pct(x: np.ndarray) -> dict[str, float]:
    if not len(x):
        return {}
    return {
        k: round(float(np.percentile(x, q)), 2)
        for k, q in (("p50", 50), ("p90", 90), ("p99", 99), ("max", 100))
    }


_PROBE_PRODUCER = """
import sys, time
from kafka import KafkaProducer
prod = KafkaProducer(bootstrap_servers=sys.argv[1], linger_ms=0, acks=1)
prod.send(sys.argv[2], value=b"warm").get(10)
time.sleep(1.0)
import random
rng = random.Random(0)
for i in range(int(sys.argv[3])):
    time.sleep(rng.uniform(0.02, 0.3))
    prod.send(sys.argv[2], value=repr(time.time()).encode()).get(10)
prod.close()
"""


def probe_broker(
    bootstrap: str, broker: Any, waits: tuple[int, ...] = (10, 50, 100, 200, 500)
) -> dict[str, Any]:
    """Does the broker answer a parked fetch as soon as a record arrives? One partition;
    records sent 20-300 ms apart (seeded) by another process; produce -> received per max wait."""
    from kafka import KafkaConsumer, TopicPartition

    out = {}
    for w in waits:
        topic = f"probe-{w}"
        broker.create_topics({topic: 1})
        c = KafkaConsumer(
            bootstrap_servers=bootstrap, enable_auto_commit=False, fetch_max_wait_ms=w
        )
        tp = TopicPartition(topic, 0)
        c.assign([tp])
        c.seek_to_beginning(tp)
        n = 30
        p = subprocess.Popen([sys.executable, "-c", _PROBE_PRODUCER, bootstrap, topic, str(n)])
        lat: list[float] = []
        deadline = time.time() + 30
        while len(lat) < n and time.time() < deadline:
            for recs in c.poll(1000).values():
                now = time.time()
                for r in recs:
                    if r.value != b"warm":
                        lat.append(now - float(r.value))
        p.wait()
        c.close()
        out[f"fetch_max_wait_ms={w}"] = _pct(np.array(lat) * 1000)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rate", type=float, default=10_000.0)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reader-fetch-max-wait-ms", type=int, default=5)
    ap.add_argument("--probe-broker", action="store_true")
    ap.add_argument("--no-pin", action="store_true", help="do not pin this process to core 0")
    ap.add_argument(
        "--extra",
        type=json.loads,
        default=None,
        help="kafka.extra for the daemon, JSON, e.g. '{\"linger_ms\": 0}'",
    )
    ap.add_argument("--switch-interval-ms", type=float, default=None)
    ap.add_argument("--checkpoint-interval-s", type=float, default=None)
    ap.add_argument("--checkpoint-inline", action="store_true",
                    help="write the periodic checkpoint on the loop's thread (as before the "
                         "writer thread), the rest of the code the same")  # fmt: skip
    ap.add_argument("--load-process", action="store_true",
                    help="the load producer in a process of its own")  # fmt: skip
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="lat-stages-"))
    import streamlstm

    res: dict[str, Any] = {"load_average": os.getloadavg(), "code": streamlstm.__file__}
    with LocalBroker() as broker:
        if hasattr(os, "sched_setaffinity") and not args.no_pin:
            os.sched_setaffinity(0, {0})  # as bench_e2e: the broker keeps the other core
        bs = broker.bootstrap
        if args.probe_broker:
            res["broker_fetch_probe_ms"] = probe_broker(bs, broker)
            print(json.dumps(res["broker_fetch_probe_ms"]), flush=True)
        n = int(args.rate * args.seconds)
        fleet = generate_fleet(FleetSpec(
            n_streams=1000, n_steps=max(1, n // 1000) + 1, seed=4, anomaly_rate=3.0,
            kinds=("spike", "level_shift"), start_time=1_800_000_000.0,
        ))  # fmt: skip
        records = B.encode(fleet)
        model = B.make_model(64, fleet)
        del fleet
        # The events to send out of the collector's sight, as in bench_e2e (a daemon's
        # process does not hold them).
        import gc

        gc.collect()
        gc.freeze()
        model_path = model.save(tmp / "model.npz")
        broker.create_topics({"lat": B.PARTITIONS, "lat-alerts": 1, "lat-dlq": 1})
        cfg = B.pipeline_config(bs, "lat", model_path, tmp / "ckpt", "lat")
        if args.extra:
            doc = cfg.pipelines[0].kafka

            kafka = dataclasses.replace(doc, extra={**doc.extra, **args.extra})
            cfg = dataclasses.replace(
                cfg, pipelines=[dataclasses.replace(cfg.pipelines[0], kafka=kafka)]
            )
        if args.checkpoint_interval_s is not None:
            ck = dataclasses.replace(
                cfg.pipelines[0].checkpoint, interval_s=args.checkpoint_interval_s
            )
            cfg = dataclasses.replace(
                cfg, pipelines=[dataclasses.replace(cfg.pipelines[0], checkpoint=ck)]
            )
        if args.switch_interval_ms is not None:
            sys.setswitchinterval(args.switch_interval_ms / 1000)
        res["settings"] = {"extra": args.extra, "switch_interval_s": sys.getswitchinterval()}
        res.update(run(bs, cfg, model, records, args.rate, args.seconds, "lat-alerts",
                       args.reader_fetch_max_wait_ms, args.load_process,
                       args.checkpoint_inline))  # fmt: skip
    res["load_average_after"] = os.getloadavg()
    print(json.dumps(res, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
