"""The shipped example: a small model and events file for ``streamlstm score --example``."""
