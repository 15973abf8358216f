"""The YAML configuration: parsed once, validated once, frozen.

A file holds shared ``kafka``, ``metrics`` and ``service`` sections and a list
of ``pipelines``; each pipeline reads some topics, decodes records into one
model's features and runs one detector (see ``config/pipeline.yaml``, which
documents every option with its default)::

    kafka:      {bootstrap_servers: [localhost:9092]}   # shared; a pipeline may override keys
    metrics:    {port: 9108}
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

import difflib
import functools
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from pathlib import Path
from types import MappingProxyType
from typing import Any

import yaml  # type: ignore[import-untyped]

from streamlstm.detector import DetectorConfig
from streamlstm.errors import ConfigError
from streamlstm.io.decode import TIME_UNITS, DecodeConfig
from streamlstm.io.features import TRANSFORMS, FeatureSet, FeatureSpec, FeatureSpecError
from streamlstm.service.yamlread import Invalid, Loader, Section, found

__all__ = [
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

SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
ASSIGNMENTS = ("group", "static")
STARTS = ("earliest", "latest")
MASK = "***"
# Kafka's legal topic names (kafka.common.internals.Topic).
_TOPIC_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
_SERVER_RE = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[^\s:\[\]]+):[0-9]{1,5}$")
# Pipeline names become metric label values, file names and consumer group suffixes.
_PIPELINE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")

# DetectorConfig fields by YAML section. tests/unit/service/test_config.py checks that this
# covers every field, so a new detector setting cannot silently become unreachable.
_SECTION_OF_FIELD: dict[str, tuple[str, ...]] = {
    "scoring": (
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
_DETECTOR_DEFAULTS = DetectorConfig()


@functools.cache
def _kafka_client_keys() -> tuple[frozenset[str], frozenset[str]]:
    """kafka-python's consumer and producer settings, for validating ``kafka.extra``."""
    from kafka import KafkaConsumer, KafkaProducer  # type: ignore[import-untyped]

    return frozenset(KafkaConsumer.DEFAULT_CONFIG), frozenset(KafkaProducer.DEFAULT_CONFIG)


# ---------------------------------------------------------------------------------------
# The typed configuration
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KafkaConfig:
    """Connection to the Kafka cluster (the ``kafka`` section).

    assignment: "group" joins the consumer group ``group_id`` (scale-out by
    replicas); "static" assigns ``partitions`` (None = all) and still commits
    offsets to ``group_id``. ``extra`` is passed to kafka-python as is (consumer
    keys to the consumer, producer keys to the producer).
    """

    bootstrap_servers: tuple[str, ...]
    client_id: str = "streamlstm"
    group_id: str = "streamlstm"
    assignment: str = "group"
    partitions: tuple[int, ...] | None = None
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

    def consumer_kwargs(self) -> dict[str, Any]:
        """kafka-python ``KafkaConsumer`` arguments (holds the secrets: never log it).

        Auto-commit is off: offsets are committed only after the checkpoint that
        holds the matching state is durable.
        """
        consumer_keys, _ = _kafka_client_keys()
        kw = self._common()
        kw.update(
            group_id=self.group_id,
            enable_auto_commit=False,
            session_timeout_ms=self.session_timeout_ms,
            heartbeat_interval_ms=self.heartbeat_interval_ms,
            max_poll_interval_ms=self.max_poll_interval_ms,
        )
        kw.update({k: v for k, v in self.extra.items() if k in consumer_keys})
        return kw

    def producer_kwargs(self) -> dict[str, Any]:
        """kafka-python ``KafkaProducer`` arguments (holds the secrets: never log it)."""
        _, producer_keys = _kafka_client_keys()
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
    """Where outputs go (the ``sinks`` section); None disables a topic."""

    alerts_topic: str | None = "streamlstm-alerts"
    dead_letter_topic: str | None = "streamlstm-dead-letter"
    log_alerts: bool = True


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often state + offsets are saved (the ``checkpoint`` section)."""

    dir: Path
    interval_s: float = 10.0
    keep: int = 2


@dataclass(frozen=True)
class PipelineConfig:
    """One topic set -> decoder -> model -> detector -> sinks chain."""

    name: str
    kafka: KafkaConfig
    source: SourceConfig
    decode: DecodeConfig
    model_path: Path
    detector: DetectorConfig
    sinks: SinksConfig
    checkpoint: CheckpointConfig
    index: int = 0  # position in the file's ``pipelines`` list, for error paths

    @property
    def path(self) -> str:
        """YAML path of this pipeline, e.g. ``pipelines[0]``."""
        return f"pipelines[{self.index}]"

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Model feature names the decode section produces."""
        return FeatureSet(self.decode.features, self.decode.max_value).names


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint (the ``metrics`` section); also serves /healthz and /readyz."""

    host: str = "0.0.0.0"
    port: int = 9108
    max_alert_series: int = 100


@dataclass(frozen=True)
class ServiceConfig:
    """The whole file."""

    pipelines: tuple[PipelineConfig, ...]
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    shutdown_grace_s: float = 20.0
    heartbeat_stale_s: float = 30.0
    source: str = "<string>"

    def pipeline(self, name: str) -> PipelineConfig:
        for p in self.pipelines:
            if p.name == name:
                return p
        raise KeyError(name)


class ConfigErrors(ConfigError):
    """Several configuration errors; ``messages`` lists them, ``str()`` joins them by line."""

    def __init__(self, messages: list[str]) -> None:
        super().__init__("\n".join(messages))
        self.messages = list(messages)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------
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
    p = _Parser(source, base_dir or Path.cwd(), os.environ if env is None else env)
    cfg = p.service(data)
    if p.errors:
        raise ConfigErrors(p.errors)
    assert cfg is not None
    return cfg


# ---------------------------------------------------------------------------------------
# Parsing
# ---------------------------------------------------------------------------------------
class _Parser:
    """Builds the config, collecting one error per independent section."""

    def __init__(self, source: str, base_dir: Path, env: Mapping[str, str]) -> None:
        self.source = source
        self.base = base_dir
        self.env = env
        self.errors: list[str] = []

    @contextmanager
    def section(self) -> Iterator[None]:
        try:
            yield
        except Invalid as exc:
            self.errors.append(f"{self.source}: {exc}")

    def attempt(self, fn: Callable[[], Any]) -> Any:
        with self.section():
            return fn()
        return None

    def path(self, v: str) -> Path:
        p = Path(os.path.expanduser(v))
        return p if p.is_absolute() else self.base / p

    # -- top level -----------------------------------------------------------------
    def service(self, data: Any) -> ServiceConfig | None:
        try:
            top = Section(data, "", ("version", "kafka", "metrics", "service", "pipelines"))
            version = top.raw("version", 1)
            if version != 1:
                raise top.bad("version", version, "1 (the only format so far)")
        except Invalid as exc:
            self.errors.append(f"{self.source}: {exc}")
            return None
        shared_kafka = self.attempt(lambda: Section(top.raw("kafka"), "kafka", _KAFKA_KEYS))
        metrics = self.attempt(lambda: self.metrics(top.raw("metrics")))
        svc = self.attempt(lambda: self.service_section(top.raw("service")))
        pipes_raw = self.attempt(lambda: top.seq("pipelines", required=True))
        pipelines: list[PipelineConfig] = []
        for i, raw in enumerate(pipes_raw or []):
            p = self.pipeline(i, raw, shared_kafka)
            if p is not None:
                pipelines.append(p)
        self.attempt(lambda: self.cross_checks(pipelines))
        if self.errors:
            return None
        return ServiceConfig(
            pipelines=tuple(pipelines),
            metrics=metrics,
            shutdown_grace_s=svc[0],
            heartbeat_stale_s=svc[1],
            source=self.source,
        )

    def metrics(self, raw: Any) -> MetricsConfig:
        m = Section(raw, "metrics", ("host", "port", "max_alert_series"))
        d = MetricsConfig()
        return MetricsConfig(
            host=m.text("host", d.host, what="a host name or address"),
            port=m.integer("port", d.port, 0, 65535),
            max_alert_series=m.integer("max_alert_series", d.max_alert_series, 0),
        )

    def service_section(self, raw: Any) -> tuple[float, float]:
        m = Section(raw, "service", ("shutdown_grace_s", "heartbeat_stale_s"))
        return (
            m.number("shutdown_grace_s", 20.0, gt=0),
            m.number("heartbeat_stale_s", 30.0, gt=0),
        )

    def cross_checks(self, pipes: list[PipelineConfig]) -> None:
        seen: dict[Any, str] = {}
        for p in pipes:
            for what, v in (("name", p.name), ("checkpoint.dir", p.checkpoint.dir.resolve())):
                if (what, v) in seen:
                    raise Invalid(
                        f"{p.path}.{what}",
                        f"{str(v)!r} is already used by {seen[(what, v)]}; each pipeline "
                        f"needs its own {what}",
                    )
                seen[(what, v)] = p.path

    # -- one pipeline ----------------------------------------------------------------
    def pipeline(self, i: int, raw: Any, shared_kafka: Section | None) -> PipelineConfig | None:
        base = f"pipelines[{i}]"
        try:
            if isinstance(raw, str):
                raise Invalid(base, f"found {raw!r}, expected a mapping with name, source, ...")
            top = Section(raw, base, _PIPELINE_KEYS)
            name = top.text(
                "name",
                None,
                pattern=_PIPELINE_RE,
                what="a name of letters, digits, _ . - (up to 63)",
                required=True,
            )
        except Invalid as exc:
            self.errors.append(f"{self.source}: {exc}")
            return None
        n_err = len(self.errors)
        kafka = self.attempt(lambda: self.kafka(top, shared_kafka, name))
        source = self.attempt(
            lambda: self.source_section(Section(top.raw("source"), top.at("source"), _SOURCE_KEYS))
        )
        decode = self.attempt(
            lambda: self.decode(Section(top.raw("decode"), top.at("decode"), _DECODE_KEYS))
        )
        model = self.attempt(lambda: self.model(top))
        detector = self.detector(top)
        sinks = self.attempt(
            lambda: self.sinks(Section(top.raw("sinks"), top.at("sinks"), _SINKS_KEYS), source)
        )
        ckpt = self.attempt(
            lambda: self.checkpoint(
                Section(top.raw("checkpoint"), top.at("checkpoint"), _CHECKPOINT_KEYS), name
            )
        )
        if len(self.errors) > n_err:
            return None
        return PipelineConfig(
            name=name,
            kafka=kafka,
            source=source,
            decode=decode,
            model_path=model,
            detector=detector,
            sinks=sinks,
            checkpoint=ckpt,
            index=i,
        )  # fmt: skip

    def kafka(self, top: Section, shared: Section | None, name: str) -> KafkaConfig:
        own = Section(top.raw("kafka"), top.at("kafka"), _KAFKA_KEYS)
        # Per key, the pipeline's own value wins; errors name the section the value came from.
        merged: dict[str, tuple[Any, Section]] = {}
        if shared is not None:
            merged.update({k: (v, shared) for k, v in shared.data.items()})
        merged.update({k: (v, own) for k, v in own.data.items()})

        def get(key: str) -> Section:
            """A one-key view that reports errors at the key's own YAML path."""
            if key in merged:
                v, src = merged[key]
                return Section({key: v}, src.path, (key,))
            # A missing key is reported in the pipeline's own section if it has one, else in
            # the shared one, where the operator most likely configures this cluster.
            home = own if own.data or shared is None else shared
            return Section({}, home.path, (key,))

        d = KafkaConfig(bootstrap_servers=("",))
        servers = get("bootstrap_servers").seq("bootstrap_servers", required=True)
        if len(servers) == 1 and isinstance(servers[0], str):
            servers = [x.strip() for x in servers[0].split(",")]  # "a:9092,b:9092"
        for j, s in enumerate(servers):
            if not isinstance(s, str) or not _SERVER_RE.match(s):
                raise Invalid(
                    f"{get('bootstrap_servers').at('bootstrap_servers')}[{j}]",
                    f"found {found(s)}, expected host:port",
                )
        client_id = get("client_id").text("client_id", d.client_id)
        group_id = get("group_id").text("group_id", f"streamlstm-{name}")
        assignment = get("assignment").text("assignment", d.assignment, choices=ASSIGNMENTS)
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
        protocol = get("security_protocol").text(
            "security_protocol", d.security_protocol, choices=SECURITY_PROTOCOLS
        )
        sasl = protocol.startswith("SASL_")
        mech_map = get("sasl_mechanism")
        mechanism = mech_map.text("sasl_mechanism", None, choices=SASL_MECHANISMS, nullable=True)
        username = get("sasl_username").text("sasl_username", None, nullable=True)
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
            v = m.text(key, None, nullable=True, what="a file path")
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
        session = get("session_timeout_ms").integer(
            "session_timeout_ms", d.session_timeout_ms, 1000
        )
        hb_map = get("heartbeat_interval_ms")
        heartbeat = hb_map.integer("heartbeat_interval_ms", d.heartbeat_interval_ms, 100)
        if heartbeat >= session:
            raise Invalid(
                hb_map.at("heartbeat_interval_ms"),
                f"{heartbeat} is not below session_timeout_ms {session} (Kafka advises a third)",
            )
        max_poll = get("max_poll_interval_ms").integer(
            "max_poll_interval_ms", d.max_poll_interval_ms, 1000
        )
        request = get("request_timeout_ms").integer(
            "request_timeout_ms", d.request_timeout_ms, 1000
        )
        extra = self.extra(get("extra"))
        # kafka-python refuses to build a consumer otherwise; say so here, with the path.
        lo = extra.get("fetch_max_wait_ms", 500)
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
            partitions=partitions,
            security_protocol=protocol,
            sasl_mechanism=mechanism if sasl else None,
            sasl_username=username if sasl else None,
            sasl_password=password if sasl else None,
            ssl_cafile=tls.get("ssl_cafile"),
            ssl_certfile=tls.get("ssl_certfile"),
            ssl_keyfile=tls.get("ssl_keyfile"),
            ssl_password=ssl_password,
            ssl_check_hostname=get("ssl_check_hostname").flag("ssl_check_hostname", True),
            session_timeout_ms=session,
            heartbeat_interval_ms=heartbeat,
            max_poll_interval_ms=max_poll,
            request_timeout_ms=request,
            extra=extra,
        )  # fmt: skip

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
        var = env_m.text(f"{name}_env", None, nullable=True, what="an environment variable name")
        path = file_m.text(f"{name}_file", None, nullable=True, what="a file path")
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
        consumer_keys, producer_keys = _kafka_client_keys()
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
        return MappingProxyType(dict(raw))  # read-only, like the rest of the config

    def source_section(self, m: Section) -> SourceConfig:
        topics = m.seq("topics", required=True)
        for j, t in enumerate(topics):
            if not isinstance(t, str) or not _TOPIC_RE.match(t):
                raise Invalid(
                    f"{m.at('topics')}[{j}]", f"found {found(t)}, expected a Kafka topic name"
                )
        if len(set(topics)) != len(topics):
            raise m.bad("topics", topics, "distinct topics")
        d = SourceConfig(topics=())
        return SourceConfig(
            topics=tuple(topics),
            max_poll_records=m.integer("max_poll_records", d.max_poll_records, 1, 1_000_000),
            poll_timeout_ms=m.integer("poll_timeout_ms", d.poll_timeout_ms, 0, 60_000),
            start=m.text("start", d.start, choices=STARTS),
        )

    def decode(self, m: Section) -> DecodeConfig:
        d = DecodeConfig()
        field_re = re.compile(r"^[^.\s]+(\.[^.\s]+)*$")
        what = "a dotted field path like 'payload.id', or null"
        key_field = m.text("key_field", None, nullable=True, pattern=field_re, what=what)
        time_field = m.text("time_field", None, nullable=True, pattern=field_re, what=what)
        time_unit = m.text("time_unit", d.time_unit, choices=TIME_UNITS)
        if time_field is None and m.has("time_unit"):
            raise Invalid(
                m.at("time_unit"), "set, but time_field is null (Kafka timestamps are ms)"
            )
        max_value = m.number("max_value", d.max_value, gt=0)
        max_key = m.integer("max_key_length", d.max_key_length, 1)
        raw = m.seq("features", required=True)
        specs: list[FeatureSpec] = []
        first: dict[str, str] = {}
        for j, f in enumerate(raw):
            where = f"{m.at('features')}[{j}]"
            spec = self.feature(f, where)
            if spec.name in first:
                raise Invalid(
                    f"{where}.name", f"{spec.name!r} is already used by {first[spec.name]}"
                )
            first[spec.name] = where
            specs.append(spec)
        try:
            FeatureSet(specs, max_value)
        except FeatureSpecError as exc:
            raise Invalid(m.at("features"), exc.problem) from None
        return DecodeConfig(
            key_field=key_field,
            time_field=time_field,
            time_unit=time_unit,
            features=tuple(specs),
            max_value=max_value,
            max_key_length=max_key,
        )

    def feature(self, raw: Any, path: str) -> FeatureSpec:
        if isinstance(raw, str):
            raw = {"name": raw}  # `features: [temp, pressure]` shorthand
        m = Section(raw, path, _FEATURE_KEYS)
        name = m.text("name", None, required=True, what="a feature name")
        transform = m.raw("transform", "none")
        if transform not in TRANSFORMS:
            near = difflib.get_close_matches(str(transform), TRANSFORMS, n=1, cutoff=0.6)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise Invalid(
                m.at("transform"), f"{transform!r} is not one of {', '.join(TRANSFORMS)}{hint}"
            )
        vocab = m.seq("vocabulary", [])
        for j, v in enumerate(vocab):
            if isinstance(v, bool) or not isinstance(v, (str, int)):
                raise Invalid(
                    f"{m.at('vocabulary')}[{j}]",
                    f"found {found(v)}, expected a string (quote it: YAML reads yes/no/on/off "
                    "as booleans)",
                )
        kw: dict[str, Any] = dict(
            name=name,
            field=m.text("field", None, nullable=True, what="a dotted field path"),
            transform=transform,
            vocabulary=tuple(str(v) for v in vocab),
            buckets=m.integer("buckets", 0, 0),
            min=m.number("min", None, nullable=True),
            max=m.number("max", None, nullable=True),
            default=m.number("default", None, nullable=True),
            utc_offset_h=m.number("utc_offset_h", 0.0),
        )
        try:
            return FeatureSpec(**kw)
        except FeatureSpecError as exc:
            raise Invalid(m.at(exc.key), exc.problem) from None

    def model(self, top: Section) -> Path:
        m = Section(top.raw("model"), top.at("model"), ("path",))
        v = m.text("path", None, required=True, what="a model file path (.npz)")
        return self.path(v)

    def detector(self, top: Section) -> DetectorConfig:
        kw: dict[str, Any] = {}
        where: dict[str, str] = {}
        for section, names in DETECTOR_SECTIONS.items():
            with self.section():
                m = Section(top.raw(section), top.at(section), names)
                for name in names:
                    default = getattr(_DETECTOR_DEFAULTS, name)
                    where[name] = m.at(name)
                    if isinstance(default, bool):
                        kw[name] = m.flag(name, default)
                    elif isinstance(default, int):
                        kw[name] = m.integer(name, default, -(2**62))
                    elif isinstance(default, str):
                        kw[name] = m.text(name, default)
                    else:
                        kw[name] = m.number(name, default, nullable=default is None)
        try:
            return DetectorConfig(**kw)
        except ValueError as exc:
            msg = str(exc)
            # DetectorConfig names the field first ("min_run is 0, expected >= 1").
            culprit = next(
                (n for n in sorted(where, key=len, reverse=True) if msg.startswith(n)), None
            )
            if culprit is not None:
                self.errors.append(f"{self.source}: {where[culprit]}: {msg}")
            else:
                self.errors.append(f"{self.source}: {top.path}: {msg}")
        except TypeError:  # a section failed above and left a field out; already reported
            pass
        return _DETECTOR_DEFAULTS

    def sinks(self, m: Section, source: SourceConfig | None) -> SinksConfig:
        d = SinksConfig()
        what = "a Kafka topic name, or null to disable"
        alerts = m.text("alerts_topic", d.alerts_topic, pattern=_TOPIC_RE, what=what, nullable=True)
        dead = m.text(
            "dead_letter_topic", d.dead_letter_topic, pattern=_TOPIC_RE, what=what, nullable=True
        )
        for key, topic in (("alerts_topic", alerts), ("dead_letter_topic", dead)):
            if source is not None and topic is not None and topic in source.topics:
                raise Invalid(
                    m.at(key), f"{topic!r} is also a source topic; that would feed outputs back in"
                )
        log_alerts = m.flag("log_alerts", d.log_alerts)
        return SinksConfig(alerts_topic=alerts, dead_letter_topic=dead, log_alerts=log_alerts)

    def checkpoint(self, m: Section, name: str) -> CheckpointConfig:
        d = CheckpointConfig(dir=Path())
        v = m.text("dir", f"checkpoints/{name}", what="a directory path")
        return CheckpointConfig(
            dir=self.path(v),
            interval_s=m.number("interval_s", d.interval_s, gt=0),
            keep=m.integer("keep", d.keep, 1, 100),
        )


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
    "utc_offset_h",
)  # fmt: skip
_SINKS_KEYS = ("alerts_topic", "dead_letter_topic", "log_alerts")
_CHECKPOINT_KEYS = ("dir", "interval_s", "keep")
