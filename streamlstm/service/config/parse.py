"""The parser: YAML data -> :class:`~streamlstm.service.config.types.ServiceConfig`,
collecting one error per independent section."""

from __future__ import annotations

import difflib
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from streamlstm.detector import DetectorConfig
from streamlstm.io.decode import DecodeConfig
from streamlstm.io.features import TRANSFORMS, FeatureSet, FeatureSpec, FeatureSpecError
from streamlstm.kafka.config import SinksConfig, SourceConfig
from streamlstm.service.config.kafka import KafkaSectionParser
from streamlstm.service.config.keys import (
    _TOPIC_RE,
    CHECKPOINT,
    DECODE,
    DETECTOR,
    FEATURE,
    KAFKA,
    METRICS,
    MODEL,
    PIPELINE,
    SERVICE,
    SINKS,
    SOURCE,
    TOP,
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
            top = Section(data, "", TOP)
            version = top.raw("version", 1)
            if version != 1:
                raise top.bad("version", version, TOP["version"].what)
        except Invalid as exc:
            self.errors.append(f"{self.source}: {exc}")
            return None
        shared_kafka = self.attempt(lambda: Section(top.raw("kafka"), "kafka", KAFKA))
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
        m = Section(raw, "metrics", METRICS)
        return MetricsConfig(**{k: m.read(k) for k in METRICS})

    def service_section(self, raw: Any) -> tuple[float, float]:
        m = Section(raw, "service", SERVICE)
        return (m.read("shutdown_grace_s"), m.read("heartbeat_stale_s"))

    def cross_checks(self, pipes: list[PipelineConfig]) -> None:
        seen: dict[Any, str] = {}
        for p in pipes:
            unique: list[tuple[str, Any]] = [
                ("name", p.name), ("checkpoint.dir", p.checkpoint.dir.resolve())
            ]  # fmt: skip
            if p.checkpoint.store == "kafka":  # keys hold topic/partition, not the pipeline
                unique.append(("checkpoint.topic", p.checkpoint.topic))
            for what, v in unique:
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
            top = Section(raw, base, PIPELINE)
            name = top.read("name")
        except Invalid as exc:
            self.errors.append(f"{self.source}: {exc}")
            return None
        n_err = len(self.errors)
        kafka = self.attempt(lambda: self.kafka(top, shared_kafka, name))
        source = self.attempt(
            lambda: self.source_section(Section(top.raw("source"), top.at("source"), SOURCE))
        )
        decode = self.attempt(
            lambda: self.decode(Section(top.raw("decode"), top.at("decode"), DECODE))
        )
        model = self.attempt(lambda: self.model(top))
        detector = self.detector(top)
        sinks = self.attempt(
            lambda: self.sinks(Section(top.raw("sinks"), top.at("sinks"), SINKS), source)
        )
        ckpt = self.attempt(
            lambda: self.checkpoint(
                Section(top.raw("checkpoint"), top.at("checkpoint"), CHECKPOINT), name
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
        return SourceConfig(topics=tuple(topics), **{k: m.read(k) for k in SOURCE if k != "topics"})

    def decode(self, m: Section) -> DecodeConfig:
        key_field = m.read("key_field")
        time_field = m.read("time_field")
        time_unit = m.read("time_unit")
        if time_field is None and m.has("time_unit"):
            raise Invalid(
                m.at("time_unit"), "set, but time_field is null (Kafka timestamps are ms)"
            )
        max_value = m.read("max_value")
        max_key = m.read("max_key_length")
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
        m = Section(raw, path, FEATURE)
        name = m.read("name")
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
            transform=transform,
            vocabulary=tuple(str(v) for v in vocab),
            **{k: m.read(k) for k in ("field", "buckets", "min", "max", "default")},
            utc_offset_h=m.read("utc_offset_h"),
            role=m.read("role"),
        )
        try:
            return FeatureSpec(**kw)
        except FeatureSpecError as exc:
            raise Invalid(m.at(exc.key), exc.problem) from None

    def model(self, top: Section) -> Path:
        m = Section(top.raw("model"), top.at("model"), MODEL)
        v = m.read("path")
        return self.path(v)

    def detector(self, top: Section) -> DetectorConfig:
        kw: dict[str, Any] = {}
        where: dict[str, str] = {}
        for section, table in DETECTOR.items():
            with self.section():
                m = Section(top.raw(section), top.at(section), table)
                for name in table:
                    where[name] = m.at(name)
                    kw[name] = m.read(name)
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
        alerts = m.read("alerts_topic")
        dead = m.read("dead_letter_topic")
        for key, topic in (("alerts_topic", alerts), ("dead_letter_topic", dead)):
            if source is not None and topic is not None and topic in source.topics:
                raise Invalid(
                    m.at(key), f"{topic!r} is also a source topic; that would feed outputs back in"
                )
        return SinksConfig(
            alerts_topic=alerts, dead_letter_topic=dead, log_alerts=m.read("log_alerts"),
            lookback_records=m.read("lookback_records"),
            lookback_timeout_s=m.read("lookback_timeout_s"),
        )  # fmt: skip

    def checkpoint(self, m: Section, name: str) -> CheckpointConfig:
        v = m.read("dir", f"checkpoints/{name}")
        if m.read("full_every") > 1 and m.read("store") != "kafka":
            raise Invalid(
                m.at("full_every"),
                f"{m.read('full_every')} needs store: kafka (incremental checkpoints are "
                "chains of changelog records); set store: kafka or full_every: 1",
            )
        return CheckpointConfig(
            dir=self.path(v), interval_s=m.read("interval_s"), keep=m.read("keep"),
            on_unreadable=m.read("on_unreadable"), store=m.read("store"),
            topic=m.read("topic", f"{name}-state"), chunk_bytes=m.read("chunk_bytes"),
            full_every=m.read("full_every"),
        )  # fmt: skip
