"""``streamlstm alerts``: the streams in alert now, from a running daemon's ``/alerts``.

No Prometheus needed: the daemon serves every open alert (not the capped
per-stream series) as JSON on its metrics port. Prints a table, highest peak
first, or the daemon's JSON with ``--json``. An unreachable daemon or an answer
that is not the ``/alerts`` document exits 2 with the URL tried.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from typing import Any, TextIO

from streamlstm.errors import StreamlstmError
from streamlstm.service.config import MetricsConfig

NAME = "alerts"
HELP = "show the streams in alert now, from a running daemon's /alerts endpoint"
COLUMNS = ("pipeline", "stream", "partition", "peak", "since", "top_features")


class AlertsFetchError(StreamlstmError):
    """The daemon's /alerts could not be read."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--url",
        default=f"http://127.0.0.1:{MetricsConfig().port}",
        help="the daemon's metrics address (metrics.host / metrics.port of its config)",
    )
    parser.add_argument("--json", action="store_true", help="print the JSON document as served")
    parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for an answer")


def fetch(url: str, timeout: float = 5.0) -> list[dict[str, Any]]:
    """The open alerts served at ``url`` (with or without the ``/alerts`` path)."""
    target = url.rstrip("/")
    if not target.endswith("/alerts"):
        target += "/alerts"
    try:
        with urllib.request.urlopen(target, timeout=timeout) as resp:  # noqa: S310
            body = resp.read()
    except urllib.error.HTTPError as exc:
        raise AlertsFetchError(
            f"{target}: HTTP {exc.code}; is this a streamlstm daemon's metrics port?"
        ) from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise AlertsFetchError(
            f"{target}: cannot reach the daemon ({reason}); is it running, and is --url its "
            "metrics.host:metrics.port?"
        ) from None
    try:
        doc = json.loads(body)
        rows = doc["alerts"]
        assert isinstance(rows, list)
    except (ValueError, KeyError, TypeError, AssertionError):
        raise AlertsFetchError(f"{target}: the answer is not an /alerts document") from None
    return rows


def _since(row: dict[str, Any]) -> str:
    """The opening event's time, or its offset when the daemon restored the alert open."""
    if row.get("opened_iso"):
        return str(row["opened_iso"])
    off = row.get("opened_offset")
    return f"offset {off}" if isinstance(off, int) and off >= 0 else "?"


def table(rows: list[dict[str, Any]]) -> str:
    """Aligned columns, one line per alert."""
    cells = [[str(_since(r) if c == "since" else r.get(c, "")) for c in COLUMNS] for r in rows]
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(COLUMNS)]
    out = []
    for line in [COLUMNS, *cells]:
        out.append("  ".join(v.ljust(w) for v, w in zip(line, widths, strict=True)).rstrip())
    return "\n".join(out)


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    rows = fetch(args.url, args.timeout)
    if args.json:
        print(json.dumps({"alerts": rows}, indent=1), file=out)
    elif not rows:
        print("no stream in alert", file=out)
    else:
        print(table(rows), file=out)
        print(f"{len(rows)} stream(s) in alert", file=out)
    return 0
