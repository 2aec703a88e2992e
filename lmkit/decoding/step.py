"""The pieces every decoding loop shares: checking the prompt, one forward step with the KV cache, checking scores.

The model only has to obey lmkit's forward contract::

    model(input_ids (B, T), attention_mask=(B, S) bool, position_ids=(B, T), cache=cache).logits  # (B, T, V)

where ``attention_mask`` covers the cached tokens *and* the new ones (``S = cache length + T``) and is ``False`` on
left padding. Positions count real tokens only (``cumsum(mask) - 1``), so a left-padded prompt gets the same
positions as the unpadded one — the reason batched generation with padding equals one-by-one generation.
"""

from __future__ import annotations

from typing import Any

import torch

from lmkit.transformer.positions import positions_from_mask


def check_prompt(input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a ``(B, T)`` prompt and its mask; return ``(input_ids, bool mask)``. Padding must be on the left."""
    if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in (torch.int32, torch.int64):
        raise TypeError(f"input_ids must be an integer tensor, got {type(input_ids).__name__}")
    if input_ids.ndim != 2 or input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
        raise ValueError(f"input_ids must be (batch, length) with length >= 1, got shape {tuple(input_ids.shape)}")
    input_ids = input_ids.long()
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids, dtype=torch.bool)
    if attention_mask.shape != input_ids.shape:
        raise ValueError(
            f"attention_mask shape {tuple(attention_mask.shape)} does not match input_ids {tuple(input_ids.shape)}"
        )
    mask = attention_mask.to(input_ids.device).bool()
    if not mask[:, -1].all():
        raise ValueError("every prompt must end with a real token: pad on the LEFT for batched generation")
    if (mask[:, 1:].long() < mask[:, :-1].long()).any():
        raise ValueError("attention_mask has padding after a real token: only left padding is supported")
    return input_ids, mask


def model_limits(model: Any) -> tuple[int | None, int | None]:
    """``(vocab size, max positions)`` from the model's config (lmkit's or Hugging Face's names); ``None`` when the
    model does not say."""
    cfg = getattr(model, "config", None)
    vocab = getattr(cfg, "vocab_size", None)
    positions = getattr(cfg, "max_positions", None) or getattr(cfg, "max_position_embeddings", None)
    return (vocab if isinstance(vocab, int) else None), (positions if isinstance(positions, int) else None)


def check_fits_model(model: Any, input_ids: torch.Tensor, config: Any) -> None:
    """Before the model runs: every prompt id, ``pad_token_id`` and ``eos_token_id`` must be in the vocabulary, and
    the prompt plus ``max_new_tokens`` must fit the model's positions (past them RoPE or learned positions have no
    entry, and the model would fail deep inside, or silently wrap around)."""
    vocab, positions = model_limits(model)
    if vocab is not None:
        low, high = int(input_ids.min()), int(input_ids.max())
        if low < 0 or high >= vocab:
            bad = low if low < 0 else high
            raise ValueError(f"input_ids holds token id {bad}, outside the model's vocabulary [0, {vocab}) "
                             "(pad the prompt with a real id and mask it out)")
        eos = config.eos_token_id
        for name, ids in (("eos_token_id", [] if eos is None else [eos] if isinstance(eos, int) else list(eos)),
                          ("pad_token_id", [] if config.pad_token_id is None else [config.pad_token_id])):
            for i in ids:
                if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < vocab:
                    raise ValueError(f"{name} {i!r} is outside the model's vocabulary [0, {vocab})")
    if positions is not None and input_ids.shape[1] + config.max_new_tokens > positions:
        raise ValueError(f"a prompt of {input_ids.shape[1]} tokens plus max_new_tokens={config.max_new_tokens} is "
                         f"{input_ids.shape[1] + config.max_new_tokens} positions, more than the model's "
                         f"{positions}: shorten the prompt or generate fewer tokens")


def next_token_logits(model: Any, input_ids: torch.Tensor, mask: torch.Tensor, cache: Any) -> torch.Tensor:
    """Run the new tokens ``(B, T)`` through ``model`` (appending to ``cache``) and return the ``(B, V)`` float32
    logits of the last position. ``mask`` ``(B, S)`` covers the cached and the new tokens."""
    out = model(input_ids, attention_mask=mask, position_ids=positions_from_mask(mask, input_ids.shape[1]), cache=cache)
    logits = out.logits
    if logits is None or logits.ndim != 3 or logits.shape[:2] != input_ids.shape:
        got = None if logits is None else tuple(logits.shape)
        raise ValueError(f"model returned logits of shape {got}; expected (batch, new tokens, vocab)")
    return logits[:, -1, :].float()


def check_scores(scores: torch.Tensor, step: int) -> None:
    """Raise a clear error when the processors left a row with no possible token (all ``-inf``) or produced NaN or
    ``+inf``."""
    if torch.isnan(scores).any():
        raise ValueError(f"NaN in the next-token scores at step {step}: check the model and processor parameters")
    if torch.isposinf(scores).any():
        raise ValueError(f"+inf in the next-token scores at step {step}: softmax of +inf is NaN and argmax ties; "
                         "check the model and processor parameters")
    dead = torch.isneginf(scores).all(dim=-1)
    if dead.any():
        rows = dead.nonzero().flatten().tolist()
        raise ValueError(
            f"every token was filtered out (all scores -inf) at step {step} for batch rows {rows}: the constraints "
            "(no-repeat n-gram, min length, custom processors) leave nothing to generate"
        )


def default_cache() -> Any:
    """An empty lmkit :class:`~lmkit.transformer.kv_cache.KVCache` (imported here, so models with their own cache
    type can pass one in without lmkit's)."""
    from lmkit.transformer.kv_cache import KVCache

    return KVCache()
