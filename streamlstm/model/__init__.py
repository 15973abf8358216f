"""The model layer: weights and metadata, load/save, validation, baselines, importers.

:mod:`streamlstm.model.core` holds :class:`Model` and the file format;
:mod:`~streamlstm.model.baselines` the last-value forecaster every LSTM is
compared with; :mod:`~streamlstm.model.importers` PyTorch and Keras weights.
"""

from streamlstm.model.core import (
    CELLS,
    FORMAT,
    FORMAT_VERSION,
    MAX_LAYERS,
    STREAM_NORMS,
    KernelWeights,
    Model,
    from_meta,
    load,
    weights_sha256,
)

__all__ = [
    "CELLS",
    "FORMAT",
    "FORMAT_VERSION",
    "MAX_LAYERS",
    "STREAM_NORMS",
    "KernelWeights",
    "Model",
    "from_meta",
    "load",
    "weights_sha256",
]
