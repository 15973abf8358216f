"""Parsing of the ``kafka`` section: servers, security, secrets, ``extra``.

A mixin of :class:`streamlstm.service.config.parse._Parser`; it uses the
parser's ``env`` and ``path()`` and nothing else.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streamlstm.kafka.config import (
    FETCH_MAX_WAIT_MS,
    SASL_MECHANISMS,
    KafkaConfig,
    kafka_client_keys,
)
from streamlstm.kafka.confluent_config import (
    CONSUMER_EXTRA,
    confluent_missing,
    unmapped_consumer_keys,
)
from streamlstm.service.config.keys import _KAFKA_KEYS, _SERVER_RE, KAFKA
from streamlstm.service.config.yamlread import Invalid, Section, found


class KafkaSectionParser:
    """``kafka()``, ``secret()`` and ``extra()`` of the parser."""

    env: Mapping[str, str]

    def path(self, v: str) -> Path:  # provided by _Parser
        raise NotImplementedError

    def kafka(self, top: Section, shared: Section | None, name: str) -> KafkaConfig:
        own = Section(top.raw("kafka"), top.at("kafka"), KAFKA)
        # Per key, the pipeline's own value wins; errors name the section the value came from.
        merged: dict[str, tuple[Any, Section]] = {}
        if shared is not None:
            merged.update({k: (v, shared) for k, v in shared.data.items()})
        merged.update({k: (v, own) for k, v in own.data.items()})

        def get(key: str) -> Section:
            """A one-key view that reports errors at the key's own YAML path."""
            if key in merged:
                v, src = merged[key]
                return Section({key: v}, src.path, {key: KAFKA[key]})
            # A missing key is reported in the pipeline's own section if it has one, else in
            # the shared one, where the operator most likely configures this cluster.
            home = own if own.data or shared is None else shared
            return Section({}, home.path, {key: KAFKA[key]})

        servers = get("bootstrap_servers").seq("bootstrap_servers", required=True)
        if len(servers) == 1 and isinstance(servers[0], str):
            servers = [x.strip() for x in servers[0].split(",")]  # "a:9092,b:9092"
        for j, s in enumerate(servers):
            if not isinstance(s, str) or not _SERVER_RE.match(s):
                raise Invalid(
                    f"{get('bootstrap_servers').at('bootstrap_servers')}[{j}]",
                    f"found {found(s)}, expected host:port",
                )
        client_id = get("client_id").read("client_id")
        group_id = get("group_id").read("group_id", f"streamlstm-{name}")
        assignment = get("assignment").read("assignment")
        client = self.client(get("client"))
        parts_map = get("partitions")
        partitions = parts_map.seq("partitions", None)
        if partitions is not None:
            if assignment != "static":
                raise Invalid(
                    parts_map.at("partitions"),
                    "only used with assignment: static (a consumer group assigns partitions)",
                )
            for j, q in enumerate(partitions):
                if isinstance(q, bool) or not isinstance(q, int) or q < 0:
                    raise Invalid(
                        f"{parts_map.at('partitions')}[{j}]",
                        f"found {found(q)}, expected an integer >= 0",
                    )
            if len(set(partitions)) != len(partitions):
                raise parts_map.bad("partitions", partitions, "distinct partition numbers")
            partitions = tuple(partitions)
        inst_map = get("group_instance_id")
        instance = inst_map.read("group_instance_id")
        if instance is not None:
            if assignment != "group":
                raise Invalid(
                    inst_map.at("group_instance_id"),
                    "only used with assignment: group (static membership of a consumer group)",
                )
            if "group_instance_id" not in kafka_client_keys()[0]:
                raise Invalid(
                    inst_map.at("group_instance_id"),
                    "the installed kafka-python has no static membership (group_instance_id); "
                    "upgrade it (pip install -U kafka-python) or remove the key",
                )
        protocol = get("security_protocol").read("security_protocol")
        sasl = protocol.startswith("SASL_")
        mech_map = get("sasl_mechanism")
        mechanism = mech_map.read("sasl_mechanism")
        username = get("sasl_username").read("sasl_username")
        password = self.secret(get, "sasl_password")
        if sasl:
            if mechanism is None:
                raise Invalid(
                    mech_map.at("sasl_mechanism"),
                    f"missing; security_protocol {protocol} needs one of "
                    + ", ".join(SASL_MECHANISMS),
                )
            if username is None:
                raise Invalid(
                    get("sasl_username").at("sasl_username"),
                    f"missing; {mechanism} needs a user name",
                )
            if password is None:
                raise Invalid(
                    get("sasl_password_env").at("sasl_password_env"),
                    f"missing; {mechanism} needs a password from sasl_password_env (an "
                    "environment variable) or sasl_password_file",
                )
        else:
            for key in (
                "sasl_mechanism",
                "sasl_username",
                "sasl_password_env",
                "sasl_password_file",
            ):
                if key in merged:
                    raise Invalid(
                        get(key).at(key),
                        f"set, but security_protocol is {protocol}; use SASL_SSL or SASL_PLAINTEXT",
                    )
        tls = {}
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            m = get(key)
            v = m.read(key)
            if v is not None:
                fp = self.path(v)
                if not fp.is_file():
                    raise Invalid(m.at(key), f"file not found: {fp}")
                tls[key] = str(fp)
        ssl_password = self.secret(get, "ssl_password")
        if protocol not in ("SSL", "SASL_SSL"):
            for key in (
                "ssl_cafile",
                "ssl_certfile",
                "ssl_keyfile",
                "ssl_password_env",
                "ssl_password_file",
            ):
                if key in merged:
                    raise Invalid(
                        get(key).at(key), f"set, but security_protocol {protocol} does not use TLS"
                    )
        if ("ssl_certfile" in tls) != ("ssl_keyfile" in tls):
            raise Invalid(
                get("ssl_keyfile").at("ssl_keyfile"), "ssl_certfile and ssl_keyfile go together"
            )
        session = get("session_timeout_ms").read("session_timeout_ms")
        hb_map = get("heartbeat_interval_ms")
        heartbeat = hb_map.read("heartbeat_interval_ms")
        if heartbeat >= session:
            raise Invalid(
                hb_map.at("heartbeat_interval_ms"),
                f"{heartbeat} is not below session_timeout_ms {session} (Kafka advises a third)",
            )
        max_poll = get("max_poll_interval_ms").read("max_poll_interval_ms")
        request = get("request_timeout_ms").read("request_timeout_ms")
        extra = self.extra(get("extra"))
        if client == "confluent" and (unmapped := unmapped_consumer_keys(extra)):
            raise Invalid(
                f"{get('extra').at('extra')}.{unmapped[0]}",
                f"a kafka-python consumer setting that kafka.client: confluent does not map "
                f"to librdkafka (mapped: {', '.join(sorted(CONSUMER_EXTRA))}); remove it or "
                "use client: kafka-python",
            )
        # kafka-python refuses to build a consumer otherwise; say so here, with the path.
        lo = extra.get("fetch_max_wait_ms", FETCH_MAX_WAIT_MS)
        hi = extra.get("connections_max_idle_ms", 540000)
        if not lo < request < hi:
            raise Invalid(
                get("request_timeout_ms").at("request_timeout_ms"),
                f"{request} is not between fetch_max_wait_ms {lo} and connections_max_idle_ms "
                f"{hi} (kafka-python requires it)",
            )
        return KafkaConfig(
            bootstrap_servers=tuple(servers),
            client_id=client_id,
            group_id=group_id,
            assignment=assignment,
            client=client,
            partitions=partitions,
            group_instance_id=instance,
            security_protocol=protocol,
            sasl_mechanism=mechanism if sasl else None,
            sasl_username=username if sasl else None,
            sasl_password=password if sasl else None,
            ssl_cafile=tls.get("ssl_cafile"),
            ssl_certfile=tls.get("ssl_certfile"),
            ssl_keyfile=tls.get("ssl_keyfile"),
            ssl_password=ssl_password,
            ssl_check_hostname=get("ssl_check_hostname").read("ssl_check_hostname"),
            session_timeout_ms=session,
            heartbeat_interval_ms=heartbeat,
            max_poll_interval_ms=max_poll,
            request_timeout_ms=request,
            extra=extra,
        )  # fmt: skip

    def client(self, m: Section) -> str:
        """``kafka.client``; "confluent" only where confluent-kafka can be imported."""
        client: str = m.read("client")
        if client == "confluent":
            missing = confluent_missing()
            if missing:
                raise Invalid(
                    m.at("client"),
                    f"confluent needs the confluent-kafka package, which is not installed "
                    f"({missing}); pip install 'streamlstm[confluent]', or remove the key to "
                    "use kafka-python",
                )
        return client

    def secret(self, get: Callable[[str], Section], name: str) -> str | None:
        """``<name>_env`` or ``<name>_file``; the literal ``<name>`` key is refused."""
        lit = get(name)
        if lit.has(name):
            raise Invalid(
                lit.at(name),
                f"secrets are not read from the YAML text; set {name}_env: VARIABLE "
                f"or {name}_file: /path/to/file instead",
            )
        env_m, file_m = get(f"{name}_env"), get(f"{name}_file")
        var = env_m.read(f"{name}_env")
        path = file_m.read(f"{name}_file")
        if var is not None and path is not None:
            raise Invalid(file_m.at(f"{name}_file"), f"give {name}_env or {name}_file, not both")
        if var is not None:
            value = self.env.get(var)
            if not value:
                raise Invalid(
                    env_m.at(f"{name}_env"), f"environment variable {var} is not set or empty"
                )
            return value
        if path is not None:
            fp = self.path(path)
            try:
                value = fp.read_text(encoding="utf-8").rstrip("\r\n")
            except OSError as exc:
                raise Invalid(
                    file_m.at(f"{name}_file"), f"cannot read {fp}: {exc.strerror}"
                ) from None
            if not value:
                raise Invalid(file_m.at(f"{name}_file"), f"{fp} is empty")
            return value
        return None

    def extra(self, m: Section) -> Mapping[str, Any]:
        raw = m.raw("extra")
        if raw is None:
            return MappingProxyType({})
        if not isinstance(raw, dict):
            raise m.bad("extra", raw, "a mapping of kafka-python settings")
        consumer_keys, producer_keys = kafka_client_keys()
        known = consumer_keys | producer_keys
        reserved = set(_KAFKA_KEYS) | {
            "sasl_plain_username", "sasl_plain_password", "enable_auto_commit",
            "key_deserializer", "value_deserializer", "key_serializer", "value_serializer",
        }  # fmt: skip
        for k in raw:
            where = f"{m.at('extra')}.{k}"
            if not isinstance(k, str) or k not in known:
                near = difflib.get_close_matches(str(k), sorted(known), n=1, cutoff=0.6)
                hint = f"; did you mean {near[0]!r}?" if near else ""
                raise Invalid(where, f"unknown kafka-python setting {k!r}{hint}")
            if k in reserved or "password" in k:
                raise Invalid(
                    where, f"{k!r} is set by streamlstm itself or is a secret; not allowed in extra"
                )
            problem = _extra_type_problem(k, raw[k])
            if problem:
                raise Invalid(where, problem)
        return MappingProxyType(dict(raw))  # read-only, like the rest of the config


def _extra_type_problem(key: str, value: Any) -> str:
    """Why ``value`` cannot be kafka-python's ``key`` (judged by its default), or ""."""
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]

    defaults = {**KafkaProducer.DEFAULT_CONFIG, **KafkaConsumer.DEFAULT_CONFIG}
    d = defaults.get(key)

    def objects(v: Any) -> bool:
        return callable(v) or isinstance(v, type)

    if objects(d) or (isinstance(d, (tuple, list)) and any(objects(e) for e in d)):
        return (
            f"{key!r} takes Python objects (classes or functions), which YAML cannot give; "
            "leave it to kafka-python's default"
        )
    if d is None:
        return ""
    if isinstance(d, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif isinstance(d, int):
        ok, want = isinstance(value, int) and not isinstance(value, bool), "an integer"
    elif isinstance(d, float):
        ok, want = isinstance(value, (int, float)) and not isinstance(value, bool), "a number"
    elif isinstance(d, str):
        ok, want = isinstance(value, str), "a string"
    elif isinstance(d, (tuple, list)):
        ok, want = isinstance(value, list), "a list"
    else:
        return ""
    return "" if ok else f"found {value!r}, expected {want} (kafka-python's {key})"
