"""Shared fixtures. Real-model fixtures are session-scoped: each test worker loads a model once."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

# Triton reads TRITON_INTERPRET when it is first imported, and many torch modules import it: set it before any
# test module loads, so the Triton kernels run in the interpreter on machines without a GPU.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

from lmkit import assets  # noqa: E402


@pytest.fixture(scope="session")
def smollm2_path() -> Path:
    return assets.smollm2_gguf()


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    return assets.minilm_dir()


@pytest.fixture(scope="session")
def smollm2_model(smollm2_path):
    """lmkit's SmolLM2-135M-Instruct (float32, eval mode), loaded once per session. Do not modify it in place:
    tests that change weights should work on a ``copy.deepcopy``."""
    from lmkit.loaders.smollm2 import load_smollm2

    return load_smollm2(smollm2_path)


@pytest.fixture(scope="session")
def smollm2_tokenizer(smollm2_path):
    """SmolLM2's byte-level BPE from the GGUF (lmkit.tokenizers)."""
    from lmkit.tokenizers import load_smollm2_tokenizer

    return load_smollm2_tokenizer(smollm2_path)


@pytest.fixture(scope="session")
def minilm_model(minilm_path):
    """lmkit's all-MiniLM-L6-v2 BERT encoder (eval mode), loaded once per session."""
    from lmkit.loaders.minilm import load_minilm

    return load_minilm(minilm_path)


@pytest.fixture(scope="session")
def minilm_tokenizer(minilm_path):
    """all-MiniLM-L6-v2's WordPiece (lmkit.tokenizers)."""
    from lmkit.tokenizers import load_minilm_tokenizer

    return load_minilm_tokenizer(minilm_path)
