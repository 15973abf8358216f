"""Offline scoring of event files: the engine behind ``streamlstm score`` and its plots."""
