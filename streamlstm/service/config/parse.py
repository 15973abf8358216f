"""The parser: YAML data -> :class:`~streamlstm.service.config.types.ServiceConfig`,
collecting one error per independent section."""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamlstm.detector import DetectorConfig
from streamlstm.io.decode import TIME_UNITS, DecodeConfig
from streamlstm.io.features import ROLES, TRANSFORMS, FeatureSet, FeatureSpec, FeatureSpecError
from streamlstm.kafka.config import STARTS, SinksConfig, SourceConfig
from streamlstm.service.config.kafka import KafkaSectionParser
from streamlstm.service.config.keys import (
    _CHECKPOINT_KEYS,
    _DECODE_KEYS,
    _FEATURE_KEYS,
    _KAFKA_KEYS,
    _PIPELINE_KEYS,
    _PIPELINE_RE,
    _SINKS_KEYS,
    _SOURCE_KEYS,
    _TOPIC_RE,
    DETECTOR_SECTIONS,
)
from streamlstm.service.config.types import (
    CheckpointConfig,
    MetricsConfig,
    PipelineConfig,
    ServiceConfig,
)
from streamlstm.service.config.yamlread import Invalid, Section, found

_DETECTOR_DEFAULTS = DetectorConfig()


class _Parser(KafkaSectionParser):
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
            role=m.text("role", "auto", choices=ROLES),
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
