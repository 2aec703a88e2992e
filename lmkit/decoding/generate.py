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

from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch

from lmkit.decoding.beam import beam_search
from lmkit.decoding.processors import Processor, build_processors
from lmkit.decoding.step import check_prompt, check_scores, default_cache, next_token_logits
from lmkit.decoding.stopping import eos_tensor, stopping_criteria


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int = 20,
    *,
    attention_mask: torch.Tensor | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float = 1.0,
    repetition_penalty: float = 1.0,
    presence_penalty: float = 0.0,
    frequency_penalty: float = 0.0,
    no_repeat_ngram_size: int = 0,
    min_length: int = 0,
    min_new_tokens: int = 0,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    stop_strings: str | Sequence[str] | None = None,
    decode: Callable[[list[int]], str] | None = None,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool | str = False,
    num_return_sequences: int = 1,
    generator: torch.Generator | None = None,
    logits_processors: Iterable[Processor] = (),
    cache: Any | None = None,
) -> torch.Tensor:
    """Continue each prompt of ``input_ids`` ``(B, T)``; return ``(B * num_return_sequences, T + new)`` token ids.

    * ``do_sample=False, num_beams=1``: greedy; ``do_sample=True``: sampling from the processed distribution
      (``temperature``, ``top_k``, ``top_p``) with ``generator``; ``num_beams > 1``: beam search (see
      :func:`~lmkit.decoding.beam.beam_search` for ``length_penalty``, ``early_stopping``, ``num_return_sequences``).
    * penalties: ``repetition_penalty`` (CTRL, prompt included), ``presence_penalty`` / ``frequency_penalty``
      (OpenAI, generated tokens only), ``no_repeat_ngram_size``; extra processors run after them, before the warpers.
    * length: ``max_new_tokens``; ``min_length`` (prompt included) or ``min_new_tokens`` forbid EOS until reached.
    * stopping: ``eos_token_id`` (one id or several), ``stop_strings`` (needs ``decode``); finished rows are filled
      with ``pad_token_id`` (default: the first EOS id), and the loop ends when every row has finished.
    * batching: left-pad the prompts and pass ``attention_mask`` ``(B, T)`` (True on real tokens).
    """
    _check_int("max_new_tokens", max_new_tokens, 1)
    _check_int("num_beams", num_beams, 1)
    _check_int("num_return_sequences", num_return_sequences, 1)
    input_ids, mask = check_prompt(input_ids, attention_mask)
    if num_beams > 1:
        return beam_search(
            model, input_ids, max_new_tokens, attention_mask=mask, num_beams=num_beams,
            length_penalty=length_penalty, early_stopping=early_stopping, num_return_sequences=num_return_sequences,
            do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
            frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
            min_new_tokens=min_new_tokens, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
            stop_strings=stop_strings, decode=decode, generator=generator, logits_processors=logits_processors,
            cache=cache,
        ).sequences  # fmt: skip
    if num_return_sequences > 1:
        if not do_sample:
            raise ValueError("num_return_sequences > 1 needs do_sample=True or num_beams >= num_return_sequences")
        input_ids = input_ids.repeat_interleave(num_return_sequences, dim=0)
        mask = mask.repeat_interleave(num_return_sequences, dim=0)

    prompt_length = input_ids.shape[1]
    processors = build_processors(
        prompt_length=prompt_length, do_sample=do_sample, eos_token_id=eos_token_id, temperature=temperature,
        top_k=top_k, top_p=top_p, repetition_penalty=repetition_penalty, presence_penalty=presence_penalty,
        frequency_penalty=frequency_penalty, no_repeat_ngram_size=no_repeat_ngram_size, min_length=min_length,
        min_new_tokens=min_new_tokens, extra=logits_processors,
    )  # fmt: skip
    stop = stopping_criteria(eos_token_id, stop_strings, decode, prompt_length)
    eos = eos_tensor(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos is not None else None)
    if stop and pad is None:
        raise ValueError("stop_strings without eos_token_id need a pad_token_id to fill finished rows")
    cache = default_cache() if cache is None else cache

    sequences = input_ids  # (B, L) what we return
    seen = input_ids.masked_fill(~mask, -1)  # (B, L) what processors see: padding is -1
    unfinished = torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
    new_tokens = input_ids  # the tokens the model has not seen yet
    for step in range(max_new_tokens):
        logits = next_token_logits(model, new_tokens, mask, cache)  # (B, V)
        scores = processors(seen, logits)
        check_scores(scores[unfinished], step)
        if do_sample:
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
