"""The YAML configuration: parsed once, validated once, frozen.

A file holds shared ``kafka``, ``metrics`` and ``service`` sections and a list
of ``pipelines``; each pipeline reads some topics, decodes records into one
model's features and runs one detector (see ``config/pipeline.yaml``, which
documents every option with its default)::

    kafka:      {bootstrap_servers: [localhost:9092]}   # shared; a pipeline may override keys
    metrics:    {port: 10131}
    service:    {shutdown_grace_s: 20}
    pipelines:
      - name: sensors
        source:     {topics: [sensor-readings]}
        decode:     {key_field: sensor, time_field: ts, features: [temp, pressure]}
        model:      {path: models/sensors.npz}
        scoring / alerts / state: detector settings (streamlstm.detector.DetectorConfig)
        sinks:      {alerts_topic: streamlstm-alerts}
        checkpoint: {dir: checkpoints/sensors}

Rules:

- Every error is a :class:`~streamlstm.errors.ConfigError` whose message is
  ``<file>: <yaml path>: <what was found>, <what was expected>``; unknown keys
  are errors with a "did you mean" hint. Errors of independent sections are
  collected, so one run of ``check-config`` lists them all (:class:`ConfigErrors`).
- Relative paths (model, checkpoint dir, secret and TLS files) are resolved
  against the directory of the YAML file, so a config and its models move
  together; use absolute paths for state on a persistent volume.
- Secrets (``sasl_password``, ``ssl_password``) are never read from the YAML
  text: ``<name>_env: VAR`` reads an environment variable, ``<name>_file: path``
  a file (trailing newline stripped). This module is the only one that reads
  the environment, once, at load. Secrets are masked in ``repr``.
- PyYAML reads ``1e12`` as a string (YAML 1.1); this loader reads it as a
  number. Duplicate keys, which PyYAML silently merges, are errors.
- ``group_id`` defaults to ``streamlstm-<pipeline name>``: pipelines of one
  file never share a consumer group, so one's rebalance never stalls another.

:class:`FeatureSpec` (:mod:`streamlstm.io.features`) and :class:`DecodeConfig`
(:mod:`streamlstm.io.decode`) live in lower layers, because training and io use
them without the service; they are re-exported here.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml  # type: ignore[import-untyped]

from streamlstm.errors import ConfigError
from streamlstm.io.decode import DecodeConfig
from streamlstm.io.features import FeatureSpec
from streamlstm.kafka.config import MASK, KafkaConfig, SinksConfig, SourceConfig
from streamlstm.service.config.envsubst import interpolate
from streamlstm.service.config.keys import DETECTOR_SECTIONS
from streamlstm.service.config.parse import _Parser
from streamlstm.service.config.types import (
    CheckpointConfig,
    ConfigErrors,
    MetricsConfig,
    PipelineConfig,
    ServiceConfig,
)
from streamlstm.service.config.yamlread import Loader

__all__ = [
    "DETECTOR_SECTIONS",
    "MASK",
    "CheckpointConfig",
    "ConfigErrors",
    "DecodeConfig",
    "FeatureSpec",
    "KafkaConfig",
    "MetricsConfig",
    "PipelineConfig",
    "ServiceConfig",
    "SinksConfig",
    "SourceConfig",
    "load_config",
    "parse_config",
]


def load_config(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> ServiceConfig:
    """Read and validate the YAML file at ``path``.

    ``env``: where ``*_env`` secrets are looked up (default: ``os.environ``).
    Raises :class:`ConfigError` (:class:`ConfigErrors` when there are several).
    """
    src = os.fspath(path)
    try:
        text = Path(src).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{src}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{src}: cannot read: {exc}") from None
    try:
        data = yaml.load(text, Loader=Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(f"{src}: {where}invalid YAML: {problem}") from None
    if data is None:
        raise ConfigError(f"{src}: the file is empty; expected a mapping with 'pipelines'")
    return parse_config(data, source=src, base_dir=Path(src).resolve().parent, env=env)


def parse_config(
    data: Mapping[str, Any],
    source: str = "<string>",
    base_dir: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> ServiceConfig:
    """Validate an already-loaded YAML document (see :func:`load_config`).

    ``base_dir`` resolves relative paths (default: the current directory).
    """
    env = os.environ if env is None else env
    data, env_errors = interpolate(data, env)
    if env_errors:
        raise ConfigErrors([f"{source}: {e}" for e in env_errors])
    p = _Parser(source, base_dir or Path.cwd(), env)
    cfg = p.service(data)
    if p.errors:
        raise ConfigErrors(p.errors)
    assert cfg is not None
    return cfg
