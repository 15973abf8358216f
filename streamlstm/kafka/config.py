"""The Kafka wing's settings: the ``kafka``, ``source`` and ``sinks`` sections, typed.

Parsed and validated by :mod:`streamlstm.service.config`; the consumer's and
the producer's keyword arguments are built here only
(:meth:`KafkaConfig.consumer_kwargs`, :meth:`KafkaConfig.producer_kwargs`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ASSIGNMENTS = ("group", "static")
# The consumer's client library (``kafka.client``): kafka-python, the default and a
# dependency; or confluent-kafka (librdkafka), an optional extra
# (``pip install 'streamlstm[confluent]'``). The producer is kafka-python's either way.
CLIENTS = ("kafka-python", "confluent")
STARTS = ("earliest", "latest")
MASK = "***"
# How long a fetch may wait on the broker for data (kafka-python's default: 500 ms). The
# daemon polls in a loop; at the default, an event that arrives while a fetch is parked
# waits up to half a second before it is scored (produce -> alert p99 463 ms at 10k
# events/s, benchmarks/RESULTS-e2e.md). An idle daemon sends ~100 fetches a second per
# broker instead of 2. ``kafka.extra.fetch_max_wait_ms`` overrides it. Apache Kafka answers
# a parked fetch as soon as a record arrives; the local tansu broker re-reads the log at
# W/2, 3W/4, ... of the wait, so there a record waits up to 5 ms more (5 and 2 gained
# nothing clear at 10k events/s: benchmarks/latency_stages.py --probe-broker, RESULTS-e2e).
FETCH_MAX_WAIT_MS = 10


@functools.cache
def kafka_client_keys() -> tuple[frozenset[str], frozenset[str]]:
    """kafka-python's consumer and producer settings, for validating ``kafka.extra``."""
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]

    return frozenset(KafkaConsumer.DEFAULT_CONFIG), frozenset(KafkaProducer.DEFAULT_CONFIG)


@dataclass(frozen=True)
class KafkaConfig:
    """Connection to the Kafka cluster (the ``kafka`` section).

    assignment: "group" joins the consumer group ``group_id`` (scale-out by
    replicas); "static" assigns ``partitions`` (None = all) and still commits
    offsets to ``group_id``. ``group_instance_id`` (group only) makes the consumer
    a static member (KIP-345): a replica that restarts within ``session_timeout_ms``
    gets its partitions back without a rebalance of the group; one id per replica,
    e.g. ``${POD_NAME}``. ``extra`` is passed to kafka-python as is (consumer keys
    to the consumer, producer keys to the producer). ``client`` picks the consumer's
    library (:data:`CLIENTS`); with "confluent" the consumer's settings are mapped to
    librdkafka's names (:mod:`streamlstm.kafka.confluent_config`).
    """

    bootstrap_servers: tuple[str, ...]
    client_id: str = "streamlstm"
    group_id: str = "streamlstm"
    assignment: str = "group"
    client: str = "kafka-python"
    partitions: tuple[int, ...] | None = None
    group_instance_id: str | None = None
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    ssl_password: str | None = None
    ssl_check_hostname: bool = True
    session_timeout_ms: int = 10000
    heartbeat_interval_ms: int = 3000
    max_poll_interval_ms: int = 300000
    request_timeout_ms: int = 30000
    extra: Mapping[str, Any] = field(default_factory=dict)

    SECRETS = ("sasl_password", "ssl_password")

    def __repr__(self) -> str:
        parts = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.name in self.SECRETS and v is not None:
                v = MASK
            elif f.name == "extra":
                v = {k: (MASK if "password" in k else x) for k, x in v.items()}
            parts.append(f"{f.name}={v!r}")
        return f"KafkaConfig({', '.join(parts)})"

    def _common(self) -> dict[str, Any]:
        kw: dict[str, Any] = {
            "bootstrap_servers": list(self.bootstrap_servers),
            "client_id": self.client_id,
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
        }
        if self.sasl_mechanism is not None:
            kw["sasl_mechanism"] = self.sasl_mechanism
            kw["sasl_plain_username"] = self.sasl_username
            kw["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            kw["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
                if getattr(self, name) is not None:
                    kw[name] = getattr(self, name)
        return kw

    def consumer_kwargs(self, source: SourceConfig | None = None) -> dict[str, Any]:
        """kafka-python ``KafkaConsumer`` arguments (holds the secrets: never log it),
        with ``source``'s start and poll size when given. The one builder.

        Auto-commit is off: offsets are committed only after the checkpoint that
        holds the matching state is durable.
        """
        consumer_keys, _ = kafka_client_keys()
        kw = self._common()
        kw.update(
            group_id=self.group_id,
            enable_auto_commit=False,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
        )
        if self.group_instance_id is not None and self.assignment == "group":
            kw["group_instance_id"] = self.group_instance_id
        kw["fetch_max_wait_ms"] = FETCH_MAX_WAIT_MS
        kw.update({k: v for k, v in self.extra.items() if k in consumer_keys})
        kw["enable_auto_commit"] = False
        if source is not None:
            kw["auto_offset_reset"] = source.start
            kw["max_poll_records"] = source.max_poll_records
        return kw

    def producer_kwargs(self) -> dict[str, Any]:
        """kafka-python ``KafkaProducer`` arguments (holds the secrets: never log it)."""
        _, producer_keys = kafka_client_keys()
        kw = self._common()
        kw.update({k: v for k, v in self.extra.items() if k in producer_keys})
        return kw


@dataclass(frozen=True)
class SourceConfig:
    """What to read (the ``source`` section). ``start``: where to begin with no
    checkpoint and no committed offset."""

    topics: tuple[str, ...]
    max_poll_records: int = 2000
    poll_timeout_ms: int = 100
    start: str = "earliest"


@dataclass(frozen=True)
class SinksConfig:
    """Where outputs go (the ``sinks`` section); None disables a topic.

    lookback_records / lookback_timeout_s bound the read-back of the output topics
    that keeps a replay from sending a record twice (per partition of an output
    topic, and in wall time; see :mod:`streamlstm.kafka.ledger`)."""

    alerts_topic: str | None = "streamlstm-alerts"
    dead_letter_topic: str | None = "streamlstm-dead-letter"
    log_alerts: bool = True
    lookback_records: int = 100_000
    lookback_timeout_s: float = 30.0
