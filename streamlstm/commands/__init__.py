"""Subcommands of the ``streamlstm`` CLI (see :mod:`streamlstm.cli`)."""
