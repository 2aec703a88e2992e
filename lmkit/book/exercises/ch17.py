"""Exercises of chapter 17 (long context). Expected answers come from :mod:`lmkit.efficient.cost`,
:mod:`lmkit.transformer.positions` and SmolLM2's GGUF configuration (read on the meta device, nothing loaded) at
call time."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch

from lmkit.book.exercises.framework import Verdict, check_number, not_answered
from lmkit.efficient.cost import kv_cache_bytes
from lmkit.transformer.positions import rope_attention_factor, rope_inv_freq, yarn_inv_freq


@lru_cache(maxsize=1)
def smollm2_shape() -> dict[str, int]:
    """SmolLM2-135M's layers, KV heads, head dimension and parameter count, from its GGUF file."""
    from lmkit.book.exercises.framework import smollm2_reader
    from lmkit.loaders.smollm2 import config_from_gguf
    from lmkit.transformer.model import Transformer

    cfg = config_from_gguf(smollm2_reader())
    with torch.device("meta"):
        params = sum(p.numel() for p in Transformer(cfg).parameters())
    return dict(n_layers=cfg.n_layers, kv_heads=cfg.kv_heads, head_dim=cfg.dim_per_head, params=params)


# 17.1 -----------------------------------------------------------------------------------------------
def check_cache_equals_weights(answer: float | None) -> Verdict:
    """The context (tokens) at which SmolLM2's KV cache for one sequence, in 16 bits, weighs as much as its weights
    in 16 bits."""
    s = smollm2_shape()
    per_token = kv_cache_bytes(s["n_layers"], s["kv_heads"], s["head_dim"])
    return check_number(answer, s["params"] * 2 / per_token, "tokens at which cache = weights", rel_tol=1e-4)


def solution_cache_equals_weights() -> float:
    s = smollm2_shape()  # 30 layers, 3 KV heads of 64
    per_token = 2 * s["n_layers"] * s["kv_heads"] * s["head_dim"] * 2  # K and V, fp16
    return s["params"] * 2 / per_token


# 17.2 -----------------------------------------------------------------------------------------------
def check_mqa_tokens(answer: int | None) -> Verdict:
    """How many tokens fit, with one KV head (MQA), in the cache memory SmolLM2's GQA needs for 8,192 tokens."""
    s = smollm2_shape()
    budget = kv_cache_bytes(s["n_layers"], s["kv_heads"], s["head_dim"], seq_len=8192)
    return check_number(answer, budget / kv_cache_bytes(s["n_layers"], 1, s["head_dim"]), "tokens with MQA")


def solution_mqa_tokens() -> int:
    return 8192 * smollm2_shape()["kv_heads"]  # the cache is linear in the number of KV heads


# 17.3 -----------------------------------------------------------------------------------------------
def check_yarn_score_factor(answer: float | None) -> Verdict:
    """The factor by which YaRN multiplies the attention scores q·k for a scale factor s = 16."""
    f = rope_attention_factor("yarn", 16.0)
    if isinstance(answer, int | float) and abs(answer - f) < 1e-6:
        return Verdict(False, f"{answer:g} is the factor on cos and sin, applied to both q and k: the scores get more")
    return check_number(answer, f * f, "YaRN's factor on the scores", rel_tol=1e-6)


def solution_yarn_score_factor() -> float:
    import math

    f = 0.1 * math.log(16) + 1  # multiplies cos and sin, hence both rotated q and rotated k
    return f * f


# 17.4 -----------------------------------------------------------------------------------------------
def check_yarn_kept_channels(answer: Any) -> Verdict:
    """The frequency indices that YaRN leaves unchanged for the chapter's tiny model: head dimension 16, base
    10,000, trained at L = 64, scale factor 4 (a list of ints)."""
    if answer is None:
        return not_answered("a list of frequency indices")
    try:
        got = sorted(int(i) for i in answer)
    except (TypeError, ValueError):
        return Verdict(False, f"expected a list of frequency indices, got {type(answer).__name__}")
    kept = (yarn_inv_freq(16, 10000.0, 4.0, 64) == rope_inv_freq(16, 10000.0)).nonzero().flatten().tolist()
    if got == kept:
        return Verdict(True, f"YaRN keeps frequencies {kept}: its ramp starts at the channel that turns "
                             "beta_fast = 32 times over L, rounded down and never below 0")
    if any(not 0 <= i < 8 for i in got):
        return Verdict(False, "head dimension 16 has 8 frequencies, indices 0-7")
    return Verdict(False, f"{len(got)} indices given, {len(kept)} expected; a channel is kept when it turns more "
                          "than beta_fast = 32 times over L")


def solution_yarn_kept_channels() -> list[int]:
    import math

    head_dim, base, L, beta_fast = 16, 10000.0, 64, 32
    # the (fractional) channel that turns beta_fast times over L; YaRN's ramp starts there, rounded down, never < 0
    start = head_dim * math.log(L / (beta_fast * 2 * math.pi)) / (2 * math.log(base))
    return list(range(max(math.floor(start), 0) + 1))  # ramp 0 up to and including the start channel
