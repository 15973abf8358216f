"""Exceptions: one root, one small subclass per subsystem.

Messages say what was found, what was expected and what to do, e.g.
``pipelines[0].model.path: file not found: /models/pump.npz``.
"""


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
