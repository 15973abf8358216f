"""The detector layer: a batch of (keys, times, features) in, scores and alert transitions out.

The engine is :mod:`streamlstm.detector.engine`; the daemon, offline
``score``, ``evaluate``, calibration and the tests all use it.
"""

from streamlstm.detector.engine import (
    DEFAULT_CLOSE_REGIME,
    DEFAULT_NORM_WINDOW,
    DEFAULT_OPEN,
    DEFAULT_OPEN_ABSOLUTE,
    DEFAULT_OPEN_REGIME,
    OUTCOME_NAMES,
    REJECTED,
    SCORERS,
    STREAM_NORM_CHOICES,
    TOP_FEATURES,
    TOP_SHARE,
    BatchResult,
    Detector,
    DetectorConfig,
    Transition,
    alert_id,
)

__all__ = [
    "DEFAULT_NORM_WINDOW",
    "DEFAULT_OPEN",
    "DEFAULT_OPEN_ABSOLUTE",
    "DEFAULT_OPEN_REGIME",
    "DEFAULT_CLOSE_REGIME",
    "SCORERS",
    "OUTCOME_NAMES",
    "REJECTED",
    "STREAM_NORM_CHOICES",
    "TOP_FEATURES",
    "TOP_SHARE",
    "BatchResult",
    "Detector",
    "DetectorConfig",
    "Transition",
    "alert_id",
]
