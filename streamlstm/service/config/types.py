"""The typed configuration: frozen dataclasses, one per YAML section (Kafka's in
:mod:`streamlstm.kafka.config`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from streamlstm.detector import DetectorConfig
from streamlstm.errors import ConfigError
from streamlstm.io.decode import DecodeConfig
from streamlstm.io.features import FeatureSet, context_names
from streamlstm.kafka.config import KafkaConfig, SinksConfig, SourceConfig
from streamlstm.model import Model


@dataclass(frozen=True)
class CheckpointConfig:
    """Where and how often state + offsets are saved (the ``checkpoint`` section)."""

    dir: Path
    interval_s: float = 10.0
    keep: int = 2
    # When every generation of a partition's checkpoint is unreadable: "fail" (refuse
    # to start, name the files) or "start_cold" (lose that state, with an ERROR and
    # streamlstm_checkpoints_lost_total). See CheckpointStore.read.
    on_unreadable: str = "fail"
    # Where checkpoints live: "local" (files under ``dir``) or "kafka" (the changelog
    # ``topic`` on the cluster, see streamlstm.service.changelog_store).
    store: str = "local"
    topic: str = ""
    chunk_bytes: int = 512 * 1024
    # 1: every checkpoint is full; N > 1 (store: kafka): a full one, then up to N - 1
    # holding only the streams changed since (streamlstm.service.incremental).
    full_every: int = 1


ON_UNREADABLE = ("fail", "start_cold")
STORES = ("local", "kafka")


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

    def roles_for(self, model: Model) -> Model:
        """``model`` with this pipeline's context features (``decode.features[].role``)."""
        return with_roles(model, self.decode)


def with_roles(model: Model, decode: DecodeConfig) -> Model:
    """``model`` with the context features of a decode section (see io.features)."""
    ctx = context_names(decode.features, model.context)
    return model if ctx == model.context else model.with_context(ctx)


# Checked against the Prometheus default port allocations
# (github.com/prometheus/prometheus/wiki/Default-port-allocations), so a host running
# other exporters has no clash: 9108, the first default, is graphite_exporter's; the
# 9100-9999 exporter range is fully allocated and new exporters take 10000 and up.
# 10131 was in no copy of that list we could read, and is none of 10050/10051 (Zabbix)
# or 10248-10260 (kubelet, kube-proxy, controller manager, scheduler). Register it there
# at the first public release.
DEFAULT_METRICS_PORT = 10131


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoint (the ``metrics`` section); also serves /healthz and /readyz."""

    host: str = "0.0.0.0"
    port: int = DEFAULT_METRICS_PORT
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
