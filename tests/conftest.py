"""Fixtures shared by every test tier."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from obliviate.testing import make_tiny_llama

# The checkout's root: tests/ sits directly below it.
REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Llama + ChatML tokenizer folder, built once per test session.

    Treat it as read-only: tests that modify a model should save to their own ``tmp_path``.
    """
    return make_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The shared TOFU/IDK data folder (``$OBLIVIATE_SHARED_DATA``, else ``../shared/data``).

    Tests that need it are skipped where it is absent, e.g. in a fresh clone.
    """
    path = Path(os.environ.get("OBLIVIATE_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data folder not found: {path}")
    return path
