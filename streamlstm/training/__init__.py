"""Training: fit the forecaster on history, calibrate it, learn online.

Public API (kept stable for ``evaluate`` and the CLI):

- :func:`streamlstm.training.trainer.train_model` ``(keys, times, x, features,
  config) -> (Model, TrainReport)``
- :class:`streamlstm.training.trainer.TrainConfig`
- :class:`streamlstm.training.online.OnlineLearner`
"""

from streamlstm.training.trainer import TrainConfig, TrainReport, train_model

__all__ = ["TrainConfig", "TrainReport", "train_model"]
