"""``generate``: the autoregressive loop — greedy decoding, sampling, and (through :mod:`~lmkit.decoding.beam`)
beam search — with the KV cache and batched left-padded prompts.

One step: run only the new token(s) through the model (earlier keys and values sit in the cache), take the last
position's logits ``(B, V)``, pass them through the logits processors, then either take the argmax (greedy) or
draw from ``softmax(scores)`` with ``torch.multinomial`` (sampling). A finished row (EOS or a stop string) keeps
receiving ``pad_token_id`` until every row is finished or ``max_new_tokens`` is reached — the same conventions as
Hugging Face's ``generate``, so the two give the same tokens (the tests check greedy, sampling and beam search).

Sampling draws ``torch.multinomial(probs, 1, generator=generator)``: with a ``torch.Generator`` seeded like the
global RNG that HF uses, the same probabilities give the same tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch

from lmkit.decoding.beam import beam_search
from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.processors import Processor, build_processors
from lmkit.decoding.step import check_fits_model, check_prompt, check_scores, default_cache, next_token_logits
from lmkit.decoding.stopping import eos_tensor, stopping_criteria


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int | None = None,
    *,
    config: GenerationConfig | None = None,
    attention_mask: torch.Tensor | None = None,
    decode: Callable[[list[int]], str] | None = None,
    generator: torch.Generator | None = None,
    logits_processors: Iterable[Processor] = (),
    cache: Any | None = None,
    **settings: Any,
) -> torch.Tensor:
    """Continue each prompt of ``input_ids`` ``(B, T)``; return ``(B * num_return_sequences, T + new)`` token ids.

    The settings are a :class:`~lmkit.decoding.config.GenerationConfig`: pass one as ``config``, or its fields as
    keywords (``do_sample=True, temperature=0.7, ...``), which override ``config``'s. ``num_beams > 1`` runs
    :func:`~lmkit.decoding.beam.beam_search`. The other arguments are not settings but the call's inputs:

    * ``attention_mask`` ``(B, T)`` (True on real tokens) for a batch of left-padded prompts;
    * ``decode`` (ids -> text) for ``stop_strings``; ``generator`` for sampling; ``cache`` to reuse a KV cache;
    * ``logits_processors``: extra processors, run after the penalties and before the warpers.
    """
    c = GenerationConfig.resolve(config, max_new_tokens=max_new_tokens, **settings)
    input_ids, mask = check_prompt(input_ids, attention_mask)
    if c.num_beams > 1:
        return beam_search(
            model, input_ids, config=c, attention_mask=mask, decode=decode, generator=generator,
            logits_processors=logits_processors, cache=cache,
        ).sequences  # fmt: skip
    check_fits_model(model, input_ids, c)
    if c.num_return_sequences > 1:
        input_ids = input_ids.repeat_interleave(c.num_return_sequences, dim=0)
        mask = mask.repeat_interleave(c.num_return_sequences, dim=0)

    prompt_length = input_ids.shape[1]
    processors = build_processors(c, prompt_length, extra=logits_processors)
    stop = stopping_criteria(c.eos_token_id, c.stop_strings, decode, prompt_length)
    eos = eos_tensor(c.eos_token_id)
    pad = c.pad_token_id if c.pad_token_id is not None else (int(eos[0]) if eos is not None else None)
    if stop and pad is None:
        raise ValueError("stop_strings without eos_token_id need a pad_token_id to fill finished rows")
    cache = default_cache() if cache is None else cache

    sequences = input_ids  # (B, L) what we return
    seen = input_ids.masked_fill(~mask, -1)  # (B, L) what processors see: padding is -1
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new_tokens = input_ids  # the tokens the model has not seen yet
    for step in range(c.max_new_tokens):
        logits = next_token_logits(model, new_tokens, mask, cache)  # (B, V)
        scores = processors(seen, logits)
        check_scores(scores[unfinished], step)
        if c.do_sample:
            probs = scores.softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            next_ids = scores.argmax(dim=-1)
        if pad is not None:
            next_ids = torch.where(unfinished, next_ids, pad)
        sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
        seen = torch.cat([seen, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        if stop:
            unfinished &= ~stop(sequences)
            if not unfinished.any():
                break
        new_tokens = next_ids[:, None]
    return sequences
