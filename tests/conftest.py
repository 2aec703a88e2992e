"""Shared fixtures. Real-model fixtures are session-scoped: each test worker loads a model once."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmkit import assets


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return assets.smollm2_gguf()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return assets.minilm_dir()
