"""The keys each YAML section accepts, and the patterns names must match."""

from __future__ import annotations

import re

from streamlstm.detector import DetectorConfig

# Kafka's legal topic names (kafka.common.internals.Topic).
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$")
# Pipeline names become metric label values, file names and consumer group suffixes.
_PIPELINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

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

_KAFKA_KEYS = (
    "bootstrap_servers", "client_id", "group_id", "assignment", "partitions",
    "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password",
    "sasl_password_env", "sasl_password_file", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
    "ssl_password", "ssl_password_env", "ssl_password_file", "ssl_check_hostname",
    "session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms",
    "request_timeout_ms", "extra",
)  # fmt: skip
_PIPELINE_KEYS = (
    "name", "kafka", "source", "decode", "model", "scoring", "alerts", "state", "sinks",
    "checkpoint",
)  # fmt: skip
_SOURCE_KEYS = ("topics", "max_poll_records", "poll_timeout_ms", "start")
_DECODE_KEYS = ("key_field", "time_field", "time_unit", "features", "max_value", "max_key_length")
_FEATURE_KEYS = (
    "name", "field", "transform", "vocabulary", "buckets", "min", "max", "default",
    "utc_offset_h", "role",
)  # fmt: skip
_SINKS_KEYS = ("alerts_topic", "dead_letter_topic", "log_alerts")
_CHECKPOINT_KEYS = ("dir", "interval_s", "keep")
