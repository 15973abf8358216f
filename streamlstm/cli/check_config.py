"""``streamlstm check-config``: validate a YAML file without connecting to anything.

Parses the file (collecting every error it can), then, per pipeline, loads the
model file and checks that the decode section produces the model's features in
the model's order. Prints a short summary per pipeline and exits 0, or prints
the errors (one per line, each starting with the file and the YAML path) and
exits 2. Meant for CI and for a pre-start check in the systemd unit or an
init container: it needs no broker.

``check-config --schema`` prints the file format as a JSON Schema (draft 2020-12)
for editors and CI linters, rendered from the tables the parser validates with
(:mod:`streamlstm.service.config.schema`); it needs no config file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from streamlstm.errors import ConfigError, ModelError
from streamlstm.service.config import ConfigErrors, PipelineConfig, ServiceConfig, load_config

NAME = "check-config"
HELP = "validate a YAML config (and its models) without connecting; exit 0 if fine, 2 if not"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "config", nargs="?", help="YAML file, e.g. config/pipeline.yaml (not with --schema)"
    )
    parser.add_argument(
        "--schema",
        action="store_true",
        help="print the config file's JSON Schema (draft 2020-12) and exit",
    )
    parser.add_argument(
        "--no-model",
        action="store_true",
        help="skip loading the model files (a missing model is then not an error)",
    )
    parser.add_argument(
        "--quiet", "-q", action="store_true", help="print nothing when the config is valid"
    )


def check(
    path: str, no_model: bool = False, env: Mapping[str, str] | None = None
) -> tuple[ServiceConfig | None, list[str], list[str]]:
    """(config or None, error lines, summary lines) for the file at ``path``."""
    try:
        cfg = load_config(path, env=env)
    except ConfigErrors as exc:
        return None, exc.messages, []
    except ConfigError as exc:
        return None, [str(exc)], []
    errors: list[str] = []
    summary = [f"{path}: {len(cfg.pipelines)} pipeline(s)"]
    for p in cfg.pipelines:
        model_line = _check_model(path, p, no_model, errors)
        summary.extend(_describe(p, model_line))
        # store: kafka writes no file: its directory is not used
        problem = _unwritable(p.checkpoint.dir) if p.checkpoint.store == "local" else None
        if problem:
            # A warning, not an error: configs are often checked on another machine (CI).
            summary.append(f"    warning: {p.path}.checkpoint.dir: {problem}")
    m = cfg.metrics
    summary.append(
        f"metrics on {m.host}:{m.port}; shutdown grace {cfg.shutdown_grace_s:g}s, "
        f"heartbeat stale after {cfg.heartbeat_stale_s:g}s"
    )
    return (cfg if not errors else None), errors, summary


def _check_model(path: str, p: PipelineConfig, no_model: bool, errors: list[str]) -> str:
    where = f"{path}: {p.path}.model.path"
    if no_model:
        return f"{p.model_path} (not checked: --no-model)"
    if not p.model_path.is_file():
        errors.append(
            f"{where}: file not found: {p.model_path} (relative paths are resolved against "
            "the YAML file's directory; train one or pass --no-model)"
        )
        return ""
    from streamlstm import model as model_mod
    from streamlstm.io.decode import Decoder

    try:
        model = model_mod.load(p.model_path)
    except ModelError as exc:
        errors.append(f"{where}: {exc}")
        return ""
    try:
        Decoder(p.decode, model.features)
    except ConfigError as exc:
        errors.append(f"{path}: {p.path}.{exc}")
        return ""
    return f"{p.model_path}: {model.describe()}{_carried_line(model, p.detector)}"


def _carried_line(model: Any, det: Any) -> str:
    """What becomes of the model's carried stream states under this pipeline's detector."""
    if not model.n_carried:
        return ""
    from streamlstm.detector.carry import state_settings

    mode, window = det.stream_norm_for(model)
    here = state_settings(det, mode, window)
    made = dict(model.carried_meta.get("settings") or {})
    differ = sorted(k for k in set(made) | set(here) if made.get(k) != here.get(k))
    if differ:
        return (
            f"; carries {model.n_carried} training stream(s)' end state, made with other "
            "detector settings ("
            + ", ".join(f"{k} {made.get(k)!r} there, {here.get(k)!r} here" for k in differ)
            + "): they will start cold"
        )
    return (
        f"; carries {model.n_carried} training stream(s)' end state: each continues from it "
        "at its first event after its history"
    )


def _unwritable(d: Path) -> str:
    """Why the daemon could not create or write ``d`` here, or ""."""
    probe = d
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        return f"{d} cannot be created: {probe} is not a directory"
    if not os.access(probe, os.W_OK | os.X_OK):
        return f"{d}: {probe} is not writable by this user"
    return ""


def _describe(p: PipelineConfig, model_line: str) -> list[str]:
    k, s, d, det = p.kafka, p.source, p.decode, p.detector
    where = (
        f"static partitions {list(k.partitions) if k.partitions else 'all'}"
        if k.assignment == "static"
        else "group"
    )
    feats = p.feature_names
    key = d.key_field or "<record key>"
    time = f"{d.time_field} ({d.time_unit})" if d.time_field else "<record timestamp>"
    thr = "model's" if det.open_threshold is None else f"{det.open_threshold:g}"
    lines = [
        f"  {p.name}: {', '.join(s.topics)} from {','.join(k.bootstrap_servers)} "
        f"({k.security_protocol}, group {k.group_id}, {where}, start {s.start})",
        f"    decode: key={key} time={time} -> {len(feats)} features: {', '.join(feats)}",
    ]
    if model_line:
        lines.append(f"    model: {model_line}")
    c = p.checkpoint
    where = f"{c.dir}" if c.store == "local" else f"Kafka topic {c.topic or p.name + '-state'}"
    lines += [
        f"    alerts: open threshold {thr}, min_run {det.min_run}, cooldown {det.cooldown_s:g}s, "
        f"warmup {det.warmup}; max streams {det.max_streams}",
        f"    sinks: alerts -> {p.sinks.alerts_topic or '-'}, dead letters -> "
        f"{p.sinks.dead_letter_topic or '-'}; checkpoints in {where} every "
        f"{c.interval_s:g}s",
    ]
    return lines


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    if args.schema:
        from streamlstm.service.config.schema import config_schema

        print(json.dumps(config_schema(), indent=2), file=out)
        return 0
    if args.config is None:
        print("check-config: give a YAML file to check, or --schema", file=err)
        return 2
    cfg, errors, summary = check(args.config, no_model=args.no_model)
    if errors:
        for line in errors:
            print(line, file=err)
        print(f"{args.config}: {len(errors)} error(s)", file=err)
        return 2
    if not args.quiet:
        print("\n".join(summary), file=out)
        print("OK", file=out)
    return 0
