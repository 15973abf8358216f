"""``streamlstm inspect``: what a checkpoint file (or a directory of them) holds.

Reads with the daemon's own reader (:class:`~streamlstm.service.checkpoint_store.
CheckpointStore`), so what it accepts is what a restart would restore: format,
pipeline, topic and partition, the next offset to consume, when it was written,
the number of streams, any extra metadata the writer recorded, the state columns,
and the first ``--streams N`` streams (key, last event time). An unreadable file
or one of another format exits 2 with the reason. It never moves or changes files
(the daemon's restore sets damaged generations aside; this command does not).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, TextIO

from streamlstm.errors import CheckpointError
from streamlstm.service.checkpoint_store import Checkpoint, CheckpointStore

NAME = "inspect"
HELP = "show what a checkpoint file (or a checkpoint directory) holds"
_BASE_META = ("format", "pipeline", "topic", "partition", "next_offset", "written_at")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", help="a .ckpt file, or a checkpoint.dir to search for them")
    parser.add_argument("--streams", type=int, default=10, help="streams to list per file")
    parser.add_argument("--json", action="store_true", help="one JSON document")


def files(path: Path) -> list[Path]:
    if path.is_dir():
        found = sorted(path.rglob("*.ckpt"))
        if not found:
            raise CheckpointError(f"{path}: no checkpoint (*.ckpt) files below it")
        return found
    if not path.exists():
        raise CheckpointError(f"{path}: no such file or directory")
    return [path]


def describe(ck: Checkpoint, n_streams: int) -> dict[str, Any]:
    snap = ck.snapshot
    keys: list[str] = []
    if "key_bytes" in snap and "key_len" in snap:
        raw, pos = snap["key_bytes"].tobytes(), 0
        for n in snap["key_len"][:n_streams]:
            keys.append(raw[pos : pos + int(n)].decode(errors="replace"))
            pos += int(n)
    last = snap.get("last_time")
    return {
        "path": str(ck.path),
        "bytes": ck.size,
        **{k: ck.meta.get(k) for k in _BASE_META},
        "n_streams": ck.n_streams,
        "recorded": {k: v for k, v in ck.meta.items() if k not in _BASE_META},
        "columns": sorted(k.removeprefix("col.") for k in snap if k.startswith("col.")),
        "streams": [
            {"key": k, "last_time": None if last is None else float(last[i])}
            for i, k in enumerate(keys)
        ],
    }


def _text(d: dict[str, Any], out: TextIO) -> None:
    when = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(float(d["written_at"] or 0)))
    print(f"{d['path']} ({d['bytes']} bytes, format {d['format']})", file=out)
    print(f"  pipeline {d['pipeline']}, topic {d['topic']} partition {d['partition']}, "
          f"next offset {d['next_offset']}, written {when}", file=out)  # fmt: skip
    print(f"  {d['n_streams']} stream(s); state columns: {', '.join(d['columns'])}", file=out)
    for k, v in d["recorded"].items():
        print(f"  {k}: {v}", file=out)
    for s in d["streams"]:
        print(f"    {s['key']}  last event {s['last_time']}", file=out)
    if d["n_streams"] > len(d["streams"]):
        print(f"    ... {d['n_streams'] - len(d['streams'])} more (--streams N)", file=out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    if args.streams < 0:
        raise CheckpointError(f"--streams is {args.streams}, expected >= 0")
    docs = []
    for p in files(Path(args.path)):
        try:
            ck = CheckpointStore._read_file(p)
        except CheckpointError as exc:
            if str(p) in str(exc):
                raise
            raise CheckpointError(f"{p}: {exc}") from exc
        except Exception as exc:  # a damaged file must not crash with a traceback
            raise CheckpointError(f"{p}: not a readable streamlstm checkpoint: {exc}") from exc
        docs.append(describe(ck, args.streams))
    if args.json:
        print(json.dumps({"checkpoints": docs}, indent=1, default=str), file=out)
    else:
        for d in docs:
            _text(d, out)
    return 0
