"""The pieces every decoding loop shares: one preparation step, one forward step with the KV cache, checking scores.

The model only has to obey lmkit's forward contract::

    model(input_ids (B, T), attention_mask=(B, S) bool, position_ids=(B, T), cache=cache).logits  # (B, T, V)

where ``attention_mask`` covers the cached tokens *and* the new ones (``S = cache length + T``) and is ``False`` on
left padding. Positions count real tokens only (``cumsum(mask) - 1``), so a left-padded prompt gets the same
positions as the unpadded one — the reason batched generation with padding equals one-by-one generation.

:func:`prepare_decoding` is the one place where a call's settings and inputs are resolved and checked, for
:func:`~lmkit.decoding.generate.generate` and :func:`~lmkit.decoding.beam.beam_search` alike; the two loops then
only read the :class:`DecodingSetup` it returns. Every check runs before the model does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch

from lmkit.checks import check_int, check_token_ids
from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.processors import Processor, ProcessorList, build_processors
from lmkit.decoding.stopping import StoppingCriteria, eos_tensor, stopping_criteria
from lmkit.transformer.positions import positions_from_mask


@dataclass(frozen=True)
class DecodingSetup:
    """Everything a decoding loop needs, resolved and checked once by :func:`prepare_decoding`.

    * ``config`` — the resolved :class:`~lmkit.decoding.config.GenerationConfig`;
    * ``input_ids`` ``(B, T)`` long and ``mask`` ``(B, T)`` bool — the checked prompt (False on left padding);
    * ``processors`` and ``stop`` — the logits processors and the stopping criteria of the call;
    * ``eos`` — the EOS id(s) as a 1-D tensor, or None; ``pad_id`` — what finished rows receive (see
      :func:`prepare_decoding` for the rule), or None when no row can finish early;
    * ``beam`` — whether this is a beam search; ``candidates_per_beam`` — tokens each row (beam) draws per step:
      1 for greedy decoding and sampling, ``max(2, 1 + #EOS)`` in beam search, so that one candidate per beam
      continues even when every EOS id is among its best; the warpers keep at least that many tokens (HF's
      ``min_tokens_to_keep``);
    * ``cache`` — the KV cache the model appends to.
    """

    config: GenerationConfig
    input_ids: torch.Tensor
    mask: torch.Tensor
    processors: ProcessorList
    stop: StoppingCriteria
    eos: torch.Tensor | None
    pad_id: int | None
    beam: bool
    candidates_per_beam: int
    cache: Any


def prepare_decoding(
    model: Any,
    input_ids: torch.Tensor,
    config: GenerationConfig | None,
    settings: dict[str, Any],
    *,
    attention_mask: torch.Tensor | None = None,
    decode: Callable[[list[int]], str] | None = None,
    logits_processors: Iterable[Processor] = (),
    cache: Any | None = None,
    beam: bool = False,
) -> DecodingSetup:
    """Resolve ``config`` with ``settings`` (:meth:`GenerationConfig.resolve`), check the prompt against the model,
    build the processors and stopping criteria: the setup shared by ``generate`` and ``beam_search``. ``beam=True``
    (what ``beam_search`` passes) makes it a beam search even with ``num_beams=1``.

    **The pad id** (what a finished row receives while others go on) is ``pad_token_id``, else the first EOS id,
    else None — Hugging Face's rule (``_prepare_special_tokens``), the same for greedy decoding, sampling and beam
    search, so lmkit and HF agree token for token. Without an EOS id only a stop string can finish a row early, and
    then a pad id is required (an error otherwise: HF would let the finished row run on in greedy decoding). With no
    pad id, no row or hypothesis ever ends before the last step, so nothing needs filling. Not copied: two quirks of
    HF's beam search filler ``pad or eos[0] if eos is not None else -1``, which writes -1 whenever there is no EOS id
    and turns a pad id of 0 into the first EOS id (the old ``-1`` fallback of lmkit's beam search came from it).

    Example: ``eos_token_id=[7, 9]`` and no ``pad_token_id`` give ``pad_id == 7`` and, in beam search,
    ``candidates_per_beam == 3`` (even if both EOS ids are among a beam's best, one candidate continues).
    """
    c = GenerationConfig.resolve(config, **settings)
    beam = beam or c.num_beams > 1
    if beam:
        check_int("num_return_sequences", c.num_return_sequences, minimum=1, maximum=c.num_beams)
    vocab, positions = model_limits(model)
    input_ids, mask = check_prompt(input_ids, attention_mask, vocab)
    eos = eos_tensor(c.eos_token_id, vocab)
    pad = c.pad_token_id if c.pad_token_id is not None else (None if eos is None else int(eos[0]))
    if pad is not None:
        check_token_ids("pad_token_id", torch.tensor([pad]), vocab, ndim=1)
    prompt_length = input_ids.shape[1]
    if positions is not None and prompt_length + c.max_new_tokens > positions:
        raise ValueError(f"a prompt of {prompt_length} tokens plus max_new_tokens={c.max_new_tokens} is "
                         f"{prompt_length + c.max_new_tokens} positions, more than the model's {positions}: shorten "
                         "the prompt or generate fewer tokens")
    per_beam = 1 + max(1, 0 if eos is None else eos.numel()) if beam else 1
    processors = build_processors(c, prompt_length, min_tokens_to_keep=per_beam, extra=logits_processors)
    max_length = prompt_length + c.max_new_tokens if beam else None  # the greedy / sampling loop counts steps
    stop = stopping_criteria(c.eos_token_id, c.stop_strings, decode, prompt_length, max_length)
    if c.stop_strings is not None and pad is None:
        raise ValueError("stop_strings without eos_token_id need a pad_token_id to fill the rows that finish first")
    cache = default_cache() if cache is None else cache
    return DecodingSetup(c, input_ids, mask, processors, stop, eos, pad, beam, per_beam, cache)


def check_prompt(
    input_ids: torch.Tensor, attention_mask: torch.Tensor | None, vocab_size: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate a ``(B, T)`` prompt (ids in ``[0, vocab_size)`` when given) and its mask; return ``(input_ids as
    long, bool mask)``. Padding must be on the left, and padded positions still need a real id (mask them out)."""
    check_token_ids("input_ids", input_ids, vocab_size)
    if 0 in input_ids.shape:
        raise ValueError(f"input_ids must hold at least one prompt of at least one token, got shape "
                         f"{tuple(input_ids.shape)}")
    input_ids = input_ids.long()
    if attention_mask is None:
        return input_ids, torch.ones_like(input_ids, dtype=torch.bool)
    if not isinstance(attention_mask, torch.Tensor):
        raise TypeError(f"attention_mask must be a (batch, length) tensor (True or 1 on real tokens), got "
                        f"{type(attention_mask).__name__}")
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
