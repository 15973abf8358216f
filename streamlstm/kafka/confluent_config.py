"""The consumer's settings in librdkafka's names, for ``kafka.client: confluent``.

One builder (:func:`consumer_conf`) from the same :class:`KafkaConfig` and
:class:`SourceConfig` as kafka-python's (:meth:`KafkaConfig.consumer_kwargs`), so
an operator switches the client with one key and nothing else changes: the
security settings, timeouts, group id and static membership mean the same.

``kafka.extra`` holds kafka-python settings. The consumer ones that have a
librdkafka twin are mapped (:data:`CONSUMER_EXTRA`); a consumer-only setting
without one is a config error with ``kafka.client: confluent`` (it would be
silently ignored otherwise). Settings shared with the producer go to the producer,
which is kafka-python's with either client.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

from streamlstm.kafka.config import FETCH_MAX_WAIT_MS, KafkaConfig, SourceConfig

# kafka-python consumer setting -> librdkafka property (same unit and meaning).
CONSUMER_EXTRA = {
    "fetch_max_wait_ms": "fetch.wait.max.ms",
    "fetch_min_bytes": "fetch.min.bytes",
    "fetch_max_bytes": "fetch.max.bytes",
    "max_partition_fetch_bytes": "max.partition.fetch.bytes",
    "connections_max_idle_ms": "connections.max.idle.ms",
    "reconnect_backoff_ms": "reconnect.backoff.ms",
    "reconnect_backoff_max_ms": "reconnect.backoff.max.ms",
    "retry_backoff_ms": "retry.backoff.ms",
    "metadata_max_age_ms": "metadata.max.age.ms",
    "isolation_level": "isolation.level",
    "check_crcs": "check.crcs",
    "client_rack": "client.rack",
    "receive_buffer_bytes": "socket.receive.buffer.bytes",
    "send_buffer_bytes": "socket.send.buffer.bytes",
    "api_version_auto_timeout_ms": "api.version.request.timeout.ms",
}


@functools.cache
def confluent_missing() -> str:
    """Why confluent-kafka cannot be used here ("" when it can)."""
    try:
        import confluent_kafka  # type: ignore[import-untyped]  # noqa: F401
    except ImportError as exc:
        return str(exc)
    return ""


def consumer_conf(
    kafka: KafkaConfig, source: SourceConfig | None = None, logger: logging.Logger | None = None
) -> dict[str, Any]:
    """``confluent_kafka.Consumer`` settings (holds the secrets: never log it).

    Auto-commit and the automatic offset store are off: offsets are committed by
    the loop, explicitly, after the checkpoint that holds the matching state.
    """
    conf: dict[str, Any] = {
        "bootstrap.servers": ",".join(kafka.bootstrap_servers),
        "client.id": kafka.client_id,
        "group.id": kafka.group_id,
        "security.protocol": kafka.security_protocol.lower(),
        # kafka-python's request_timeout_ms bounds one request; librdkafka's twin:
        "socket.timeout.ms": kafka.request_timeout_ms,
        "session.timeout.ms": kafka.session_timeout_ms,
        "heartbeat.interval.ms": kafka.heartbeat_interval_ms,
        "max.poll.interval.ms": kafka.max_poll_interval_ms,
        "fetch.wait.max.ms": FETCH_MAX_WAIT_MS,
    }
    if kafka.group_instance_id is not None and kafka.assignment == "group":
        conf["group.instance.id"] = kafka.group_instance_id
    if kafka.sasl_mechanism is not None:
        conf["sasl.mechanism"] = kafka.sasl_mechanism
        conf["sasl.username"] = kafka.sasl_username
        conf["sasl.password"] = kafka.sasl_password
    if kafka.security_protocol in ("SSL", "SASL_SSL"):
        conf["ssl.endpoint.identification.algorithm"] = (
            "https" if kafka.ssl_check_hostname else "none"
        )
        for ours, theirs in (
            ("ssl_cafile", "ssl.ca.location"),
            ("ssl_certfile", "ssl.certificate.location"),
            ("ssl_keyfile", "ssl.key.location"),
            ("ssl_password", "ssl.key.password"),
        ):
            if getattr(kafka, ours) is not None:
                conf[theirs] = getattr(kafka, ours)
    for k, v in kafka.extra.items():
        if k in CONSUMER_EXTRA:
            conf[CONSUMER_EXTRA[k]] = v
    conf["enable.auto.commit"] = False
    conf["enable.auto.offset.store"] = False
    # A partition-EOF event per partition per catch-up is noise to the loop.
    conf["enable.partition.eof"] = False
    if source is not None:
        conf["auto.offset.reset"] = source.start
    if logger is not None:
        conf["logger"] = logger
    return conf


def unmapped_consumer_keys(extra: dict[str, Any] | Any) -> list[str]:
    """The consumer-only kafka-python settings in ``extra`` that librdkafka has no twin
    for (config errors with ``kafka.client: confluent``)."""
    from streamlstm.kafka.config import kafka_client_keys

    consumer_keys, producer_keys = kafka_client_keys()
    only_consumer = consumer_keys - producer_keys
    return sorted(k for k in extra if k in only_consumer and k not in CONSUMER_EXTRA)
