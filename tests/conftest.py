"""Shared test helpers.

In CI (``CI`` set) nothing may skip for want of a part: a missing oracle or
server fails the test instead, because `.ci/run` installs all of them.
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType

import pytest
from hypothesis import settings

SEED = int(os.environ.get("STREAMLSTM_TEST_SEED", "20261121"))

# Property tests draw the same examples on every run (tests are deterministic);
# STREAMLSTM_HYPOTHESIS=explore draws new ones, to hunt for cases by hand.
settings.register_profile("seeded", derandomize=True, database=None)
settings.register_profile("explore")
settings.load_profile(
    "explore" if os.environ.get("STREAMLSTM_HYPOTHESIS") == "explore" else "seeded"
)


def require(module: str) -> ModuleType:
    """Import a test-only dependency; skip locally, fail in CI when it is missing."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"{module} is required in CI (.ci/run installs it): {exc}")
        pytest.skip(f"{module} not installed")
        raise  # unreachable


@pytest.fixture
def seed() -> int:
    return SEED


def require_binary(name: str) -> str:
    """Path of a program a test needs; skip locally, fail in CI when it is missing."""
    import shutil

    path = shutil.which(name)
    if path is None:
        if os.environ.get("CI"):
            pytest.fail(f"{name} is required in CI (.ci/run installs it)")
        pytest.skip(f"{name} not installed")
    return path  # type: ignore[return-value]
