"""The keys each YAML section accepts: type, default, range and meaning of each.

The one declaration of the file format. The parser reads scalar settings through
these specs (:meth:`~streamlstm.service.config.yamlread.Section.read`), refuses
keys not declared here, and ``check-config --schema`` renders the same tables as
a JSON Schema (:mod:`streamlstm.service.config.schema`). Settings whose checks are
more than a type and a range (server lists, features, ``extra``) are declared here
for the schema and the key list, and checked in the parser.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from streamlstm.detector import SCORERS, STREAM_NORM_CHOICES, DetectorConfig
from streamlstm.io.decode import TIME_UNITS, DecodeConfig
from streamlstm.io.features import ROLES, TRANSFORMS
from streamlstm.kafka.config import (
    ASSIGNMENTS,
    CLIENTS,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    STARTS,
    KafkaConfig,
    SinksConfig,
    SourceConfig,
)
from streamlstm.service.config.types import (
    ON_UNREADABLE,
    STORES,
    CheckpointConfig,
    MetricsConfig,
    ServiceConfig,
)

# Kafka's legal topic names (kafka.common.internals.Topic).
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# kafka-python's (and Kafka's) rule for group.instance.id.
_INSTANCE_RE = re.compile(r"^(?!\.{1,2}$)[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$")
# Pipeline names become metric label values, file names and consumer group suffixes.
_PIPELINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
_FIELD_PATH_RE = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")


class _Computed:
    """A default the parser computes (e.g. from the pipeline name); ``text`` says how."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return f"<{self.text}>"


NO_DEFAULT: Any = _Computed("none")


@dataclass(frozen=True)
class Key:
    """One setting. ``type`` is a JSON Schema type name; ``lo``/``hi`` bound integers
    (inclusive), ``gt``/``ge`` numbers; ``items`` is the spec of a list's elements
    (a Key, or a section table for a list of mappings); ``refused`` keys are known
    only to be turned away with advice (literal secrets)."""

    type: str
    default: Any = NO_DEFAULT
    what: str = "a non-empty string"
    lo: int | None = None
    hi: int | None = None
    gt: float | None = None
    ge: float | None = None
    choices: tuple[str, ...] | None = None
    pattern: re.Pattern[str] | None = None
    nullable: bool = False
    required: bool = False
    items: Key | Mapping[str, Key] | None = None
    refused: bool = False
    # A scalar that may also be given as a one-element list (``topics: readings``);
    # a string list may also be one comma-separated string.
    one_as_list: bool = False
    # A list of mappings whose elements may be just their ``name`` (``features: [temp]``).
    shorthand: bool = False
    # That one string may hold several comma-separated values ("a:9092,b:9092").
    comma_separated: bool = False


def _text(default: Any = NO_DEFAULT, what: str = "a non-empty string", **kw: Any) -> Key:
    return Key("string", default, what, **kw)


def _path(what: str, **kw: Any) -> Key:
    return Key("string", kw.pop("default", None), what, nullable=True, **kw)


_K = KafkaConfig(bootstrap_servers=("",))
_SECRET_ADVICE = "refused: secrets are not read from the YAML text; use {0}_env or {0}_file"


def _secret(name: str) -> dict[str, Key]:
    return {
        name: Key("string", what=_SECRET_ADVICE.format(name), refused=True),
        f"{name}_env": _path("an environment variable name"),
        f"{name}_file": _path("a file path"),
    }


KAFKA: dict[str, Key] = {
    "bootstrap_servers": Key(
        "array", what="host:port list (or one comma-separated string)", required=True,
        items=Key("string", what="host:port", pattern=_SERVER_RE), one_as_list=True,
        comma_separated=True,
    ),
    "client_id": _text(_K.client_id),
    "group_id": _text(_Computed("streamlstm-<pipeline name>")),
    "assignment": _text(_K.assignment, choices=ASSIGNMENTS),
    "client": _text(
        _K.client, "the consumer's library: kafka-python, or confluent (confluent-kafka, "
        "pip install 'streamlstm[confluent]')", choices=CLIENTS,
    ),
    "partitions": Key(
        "array", None, "partition numbers (assignment: static only; null = all)",
        nullable=True, items=Key("integer", what="a partition number", lo=0), one_as_list=True,
    ),
    "group_instance_id": _text(
        None, "a static member id per replica (assignment: group): letters, digits, . _ - "
        "(up to 249), e.g. ${POD_NAME}", pattern=_INSTANCE_RE, nullable=True,
    ),
    "security_protocol": _text(_K.security_protocol, choices=SECURITY_PROTOCOLS),
    "sasl_mechanism": _text(None, choices=SASL_MECHANISMS, nullable=True),
    "sasl_username": _text(None, nullable=True),
    **_secret("sasl_password"),
    "ssl_cafile": _path("a file path"),
    "ssl_certfile": _path("a file path"),
    "ssl_keyfile": _path("a file path"),
    **_secret("ssl_password"),
    "ssl_check_hostname": Key("boolean", _K.ssl_check_hostname, "true or false"),
    "session_timeout_ms": Key("integer", _K.session_timeout_ms, lo=1000),
    "heartbeat_interval_ms": Key("integer", _K.heartbeat_interval_ms, lo=100),
    "max_poll_interval_ms": Key("integer", _K.max_poll_interval_ms, lo=1000),
    "request_timeout_ms": Key("integer", _K.request_timeout_ms, lo=1000),
    "extra": Key("object", None, "a mapping of kafka-python settings", nullable=True),
}  # fmt: skip

_SRC = SourceConfig(topics=())
SOURCE: dict[str, Key] = {
    "topics": Key(
        "array", what="Kafka topic names", required=True,
        items=Key("string", what="a Kafka topic name", pattern=_TOPIC_RE), one_as_list=True,
    ),
    "max_poll_records": Key("integer", _SRC.max_poll_records, lo=1, hi=1_000_000),
    "poll_timeout_ms": Key("integer", _SRC.poll_timeout_ms, lo=0, hi=60_000),
    "start": _text(_SRC.start, choices=STARTS),
}  # fmt: skip

FEATURE: dict[str, Key] = {
    "name": _text(what="a feature name", required=True),
    "field": _text(None, "a dotted field path", nullable=True),
    "transform": _text("none", choices=TRANSFORMS),
    "vocabulary": Key(
        "array", [], "category values", items=Key("string", what="a category value")
    ),
    "buckets": Key("integer", 0, lo=0),
    "min": Key("number", None, nullable=True),
    "max": Key("number", None, nullable=True),
    "default": Key("number", None, nullable=True),
    "utc_offset_h": Key("number", 0.0),
    "role": _text("auto", choices=ROLES),
}  # fmt: skip

_DEC = DecodeConfig()
_FIELD_WHAT = "a dotted field path like 'payload.id', or null"
DECODE: dict[str, Key] = {
    "key_field": _text(None, _FIELD_WHAT, nullable=True, pattern=_FIELD_PATH_RE),
    "time_field": _text(None, _FIELD_WHAT, nullable=True, pattern=_FIELD_PATH_RE),
    "time_unit": _text(_DEC.time_unit, choices=TIME_UNITS),
    # A feature is a mapping, or just its name (`features: [temp, pressure]`).
    "features": Key(
        "array", what="the model's features", required=True, items=FEATURE, shorthand=True
    ),
    "max_value": Key("number", _DEC.max_value, gt=0),
    "max_key_length": Key("integer", _DEC.max_key_length, lo=1),
}

MODEL: dict[str, Key] = {"path": _text(what="a model file path (.npz)", required=True)}

_SINKS = SinksConfig()
_TOPIC_OR_NULL = "a Kafka topic name, or null to disable"
SINKS: dict[str, Key] = {
    "alerts_topic": _text(_SINKS.alerts_topic, _TOPIC_OR_NULL, pattern=_TOPIC_RE, nullable=True),
    "dead_letter_topic": _text(
        _SINKS.dead_letter_topic, _TOPIC_OR_NULL, pattern=_TOPIC_RE, nullable=True
    ),
    "log_alerts": Key("boolean", _SINKS.log_alerts, "true or false"),
    "lookback_records": Key("integer", _SINKS.lookback_records, lo=0),
    "lookback_timeout_s": Key("number", _SINKS.lookback_timeout_s, gt=0),
}

_CKPT = CheckpointConfig(dir=Path())
CHECKPOINT: dict[str, Key] = {
    "dir": _text(_Computed("checkpoints/<pipeline name>"), "a directory path"),
    "interval_s": Key("number", _CKPT.interval_s, gt=0),
    "keep": Key("integer", _CKPT.keep, lo=1, hi=100),
    "on_unreadable": _text(_CKPT.on_unreadable, choices=ON_UNREADABLE),
    "store": _text(_CKPT.store, choices=STORES),
    "topic": _text(
        _Computed("<pipeline name>-state"),
        "a Kafka topic name (store: kafka)",
        pattern=_TOPIC_RE,
    ),
    # Kafka refuses records over message.max.bytes (1,048,588 by default).
    "chunk_bytes": Key("integer", _CKPT.chunk_bytes, lo=1024, hi=1_000_000),
    # A restore reads up to full_every generations: bounded.
    "full_every": Key("integer", _CKPT.full_every, lo=1, hi=1000),
}

# DetectorConfig fields by YAML section. tests/unit/service/test_config.py checks that this
# covers every field, so a new detector setting cannot silently become unreachable.
_SECTION_OF_FIELD: dict[str, tuple[str, ...]] = {
    "scoring": (
        "scorer",
        "stream_scale",
        "scale_window",
        "learn_ratio",
        "smooth",
        "max_abs",
        "min_scale",
        "stream_norm",
        "norm_window",
    ),
    "alerts": ("open_threshold", "close_threshold", "min_run", "close_run", "cooldown_s", "warmup"),
    "state": ("max_streams", "idle_ttl_s", "decay_tau_s", "reset_gap_s"),
}
# Only the fields this DetectorConfig has (the detector may gain or lose a setting first).
DETECTOR_SECTIONS: dict[str, tuple[str, ...]] = {
    sec: tuple(n for n in names if n in DetectorConfig.field_names())
    for sec, names in _SECTION_OF_FIELD.items()
}
_DETECTOR_CHOICES = {"scorer": tuple(SCORERS), "stream_norm": tuple(STREAM_NORM_CHOICES)}


def _detector_key(name: str) -> Key:
    """The type comes from DetectorConfig's default; its ranges are checked by
    DetectorConfig itself, so the schema gives types and defaults only."""
    d = getattr(DetectorConfig(), name)
    if isinstance(d, bool):
        return Key("boolean", d, "true or false")
    if isinstance(d, int):
        return Key("integer", d, lo=-(2**62))
    if isinstance(d, str):
        return _text(d, choices=_DETECTOR_CHOICES.get(name))
    return Key("number", d, nullable=d is None)


DETECTOR: dict[str, dict[str, Key]] = {
    sec: {n: _detector_key(n) for n in names} for sec, names in DETECTOR_SECTIONS.items()
}

PIPELINE: dict[str, Key] = {
    "name": _text(
        what="a name of letters, digits, _ . - (up to 63)", pattern=_PIPELINE_RE, required=True
    ),
    "kafka": Key("object", items=KAFKA, what="overrides of the shared kafka section, per key"),
    "source": Key("object", items=SOURCE, required=True),
    "decode": Key("object", items=DECODE, required=True),
    "model": Key("object", items=MODEL, required=True),
    **{sec: Key("object", items=table) for sec, table in DETECTOR.items()},
    "sinks": Key("object", items=SINKS),
    "checkpoint": Key("object", items=CHECKPOINT),
}

_M = MetricsConfig()
METRICS: dict[str, Key] = {
    "host": _text(_M.host, "a host name or address"),
    "port": Key("integer", _M.port, lo=0, hi=65535),
    "max_alert_series": Key("integer", _M.max_alert_series, lo=0),
}

_SVC = {f.name: f.default for f in fields(ServiceConfig)}
SERVICE: dict[str, Key] = {
    "shutdown_grace_s": Key("number", _SVC["shutdown_grace_s"], gt=0),
    "heartbeat_stale_s": Key("number", _SVC["heartbeat_stale_s"], gt=0),
}

TOP: dict[str, Key] = {
    "version": Key("integer", 1, "1 (the only format so far)", lo=1, hi=1),
    "kafka": Key("object", items=KAFKA, what="settings shared by every pipeline"),
    "metrics": Key("object", items=METRICS),
    "service": Key("object", items=SERVICE),
    "pipelines": Key("array", what="one or more pipelines", required=True, items=PIPELINE),
}

_KAFKA_KEYS = tuple(KAFKA)
_PIPELINE_KEYS = tuple(PIPELINE)
_SOURCE_KEYS = tuple(SOURCE)
_DECODE_KEYS = tuple(DECODE)
_FEATURE_KEYS = tuple(FEATURE)
_SINKS_KEYS = tuple(SINKS)
_CHECKPOINT_KEYS = tuple(CHECKPOINT)
