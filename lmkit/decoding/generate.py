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

from lmkit.decoding.beam import beam_loop
from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.processors import Processor
from lmkit.decoding.step import DecodingSetup, check_scores, next_token_logits, prepare_decoding


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
    beam search (:func:`~lmkit.decoding.beam.beam_search`). The other arguments are not settings but the call's inputs:

    * ``attention_mask`` ``(B, T)`` (True on real tokens) for a batch of left-padded prompts;
    * ``decode`` (ids -> text) for ``stop_strings``; ``generator`` for sampling; ``cache`` to reuse a KV cache;
    * ``logits_processors``: extra processors, run after the penalties and before the warpers.

    Finished rows receive the pad id: ``pad_token_id``, else the first EOS id, as in HF (see
    :func:`~lmkit.decoding.step.prepare_decoding`).
    """
    setup = prepare_decoding(
        model, input_ids, config, {"max_new_tokens": max_new_tokens, **settings}, attention_mask=attention_mask,
        decode=decode, logits_processors=logits_processors, cache=cache,
    )  # fmt: skip
    if setup.beam:
        return beam_loop(model, setup, generator).sequences
    return generate_loop(model, setup, generator)


def generate_loop(model: Any, setup: DecodingSetup, generator: torch.Generator | None = None) -> torch.Tensor:
    """The greedy / sampling loop on a prepared call: one token per row and step, until every row is finished or
    ``max_new_tokens`` is reached. With ``num_return_sequences = R`` each prompt is repeated R times (sampling)."""
    c, cache = setup.config, setup.cache
    sequences = setup.input_ids.repeat_interleave(c.num_return_sequences, dim=0)  # (B, L) what we return
    mask = setup.mask.repeat_interleave(c.num_return_sequences, dim=0)
    seen = sequences.masked_fill(~mask, -1)  # (B, L) what processors see: padding is -1
    unfinished = torch.ones(sequences.shape[0], dtype=torch.bool, device=sequences.device)
    new_tokens = sequences  # the tokens the model has not seen yet
    for step in range(c.max_new_tokens):
        logits = next_token_logits(model, new_tokens, mask, cache)  # (B, V)
        scores = setup.processors(seen, logits)
        check_scores(scores[unfinished], step)
        if c.do_sample:
            probs = scores.softmax(dim=-1)
            next_ids = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            next_ids = scores.argmax(dim=-1)
        if setup.stop:  # a row can finish early (EOS, stop string): from then on it receives the pad id
            next_ids = torch.where(unfinished, next_ids, setup.pad_id)
        sequences = torch.cat([sequences, next_ids[:, None]], dim=1)
        seen = torch.cat([seen, next_ids[:, None]], dim=1)
        mask = torch.cat([mask, mask.new_ones(mask.shape[0], 1)], dim=1)
        if setup.stop:
            unfinished &= ~setup.stop(sequences)
            if not unfinished.any():
                break
        new_tokens = next_ids[:, None]
    return sequences
