"""Exceptions: one root, one small subclass per subsystem.

Messages say what was found, what was expected and what to do, e.g.
``pipelines[0].model.path: file not found: /models/pump.npz``.
"""

from __future__ import annotations

from typing import Any


class StreamlstmError(Exception):
    """Root of every error streamlstm raises on purpose."""


class ModelError(StreamlstmError):
    """A model file is missing, corrupt, of another version or does not fit."""


class InputError(StreamlstmError):
    """Input data (arrays, CSV/JSONL files) has the wrong shape, type or content."""


class ConfigError(StreamlstmError):
    """The YAML configuration is invalid; the message starts with the YAML path."""


class CheckpointError(StreamlstmError):
    """A checkpoint cannot be written or read back."""


class TrainingError(StreamlstmError):
    """Training cannot go on (diverged loss, too little data)."""


class MissingExtraError(StreamlstmError):
    """An optional dependency is not installed; the message names the extra to install."""


def pyplot() -> Any:
    """matplotlib's pyplot on the Agg backend, or :class:`MissingExtraError`.

    matplotlib (~80 MB with Pillow and fontTools) is the ``plot`` extra, not a
    dependency of the daemon; every plotting option imports it through here. It
    lives in this module because every layer that draws may import it.
    """
    try:
        import matplotlib
    except ImportError:
        raise MissingExtraError(
            "plotting needs matplotlib: pip install 'streamlstm[plot]'"
        ) from None
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt
