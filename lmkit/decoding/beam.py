r"""Beam search: keep the ``num_beams`` best partial sequences instead of only the best one.

At each step every running beam proposes every token; a candidate's score is the running sum of log-probabilities
$\sum_t \log p(y_t \mid y_{<t})$. Of the ``num_beams × V`` candidates we keep the top ``2 × num_beams`` (more when
there are several EOS ids): the best ``num_beams`` that did *not* just stop become the next running beams, and
those among the top ``num_beams`` that stopped (EOS, stop string, or the length limit) join the *finished*
hypotheses with the length-normalised score (Hugging Face's convention)

$$\text{score} = \frac{\sum_t \log p(y_t \mid y_{<t})}{L^{\alpha}},$$

$L$ = number of generated tokens (EOS included), $\alpha$ = ``length_penalty``. Log-probabilities are negative, so
dividing by a larger $L^{\alpha}$ brings the score closer to 0: **$\alpha > 1$ favours longer sequences**, $\alpha < 1$
(or negative) shorter ones, $\alpha = 0$ compares raw sums. Only the best ``num_beams`` finished hypotheses are kept.

When to stop (``early_stopping``, as HF defines it):

* ``True`` — as soon as ``num_beams`` hypotheses have finished;
* ``False`` — also when no running beam can still beat the worst kept hypothesis, *estimated* by dividing the best
  running score by the current length (a heuristic: with $\alpha > 0$ a longer beam could still score better);
* ``"never"`` — the same test with the best *possible* length (the maximum length when $\alpha > 0$): the canonical,
  exact beam search.

The KV cache is reordered with ``cache.reorder(parent_rows)`` after every step, because a new beam may continue
a different old beam than the one that sat in its row. Set ``record_history=True`` to keep, for every step, each
candidate's parent, token, score and fate (kept / finished / pruned) — the notebook draws the search tree from it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch

from lmkit.checks import check_int
from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.processors import Processor, build_processors
from lmkit.decoding.step import check_fits_model, check_prompt, check_scores, default_cache, next_token_logits
from lmkit.decoding.stopping import eos_tensor, stopping_criteria


@dataclass
class BeamStep:
    """The candidates of one step for one prompt (index ``c`` runs over the ``2 × num_beams`` best candidates).

    ``parents[c]`` is the running-beam slot it extends, ``tokens[c]`` the token it appends, ``scores[c]`` its sum of
    log-probabilities, ``status[c]`` one of ``"running"`` (kept as beam ``slots[c]``), ``"finished"`` (entered the
    finished hypotheses with normalised score ``final_scores[c]``), ``"pruned"`` (dropped).
    """

    parents: list[int]
    tokens: list[int]
    scores: list[float]
    status: list[str]
    slots: list[int | None]
    final_scores: list[float | None]


@dataclass
class BeamSearchOutput:
    """``sequences`` ``(B * R, T + new)`` best first for each prompt; ``sequences_scores`` ``(B * R,)`` their
    length-normalised scores (HF's ``sequences_scores``); ``history[step][b]`` a :class:`BeamStep` when recorded."""

    sequences: torch.Tensor
    sequences_scores: torch.Tensor
    history: list[list[BeamStep]] = field(default_factory=list)


def _gather(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x`` ``(B, N, ...)`` indexed along dim 1 by ``index`` ``(B, M)`` → ``(B, M, ...)``."""
    while index.ndim < x.ndim:
        index = index.unsqueeze(-1)
    return torch.take_along_dim(x, index, dim=1)


@torch.no_grad()
def beam_search(
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
    record_history: bool = False,
    **settings: Any,
) -> BeamSearchOutput:
    """Beam search over ``input_ids`` ``(B, T)`` (left-padded with ``attention_mask`` for a batch).

    Settings and inputs as in :func:`~lmkit.decoding.generate.generate` (a
    :class:`~lmkit.decoding.config.GenerationConfig` and/or its fields as keywords); without ``config``,
    ``num_beams`` defaults to 4. The processors act on log-probabilities (as in HF). With ``do_sample=True`` the
    ``2 × num_beams`` candidates are drawn without replacement from ``softmax`` of the accumulated scores instead of
    taken as the top ones (HF's beam sampling), after temperature / top-k / top-p, which then keep at least
    ``#EOS + 1`` tokens (2 without an EOS), so a beam can always continue.
    """
    if config is None:
        settings.setdefault("num_beams", 4)
    c = GenerationConfig.resolve(config, max_new_tokens=max_new_tokens, **settings)
    check_int("num_return_sequences", c.num_return_sequences, minimum=1, maximum=c.num_beams)
    input_ids, mask = check_prompt(input_ids, attention_mask)
    check_fits_model(model, input_ids, c)
    B, T = input_ids.shape
    K = c.num_beams
    eos = eos_tensor(c.eos_token_id)
    n_candidates = max(2, 1 + (0 if eos is None else eos.numel())) * K
    max_length = T + c.max_new_tokens
    min_keep = 2 if eos is None else eos.numel() + 1
    processors = build_processors(c, T, min_tokens_to_keep=min_keep, extra=logits_processors)
    stop = stopping_criteria(c.eos_token_id, c.stop_strings, decode, T, max_length)
    fill = c.pad_token_id if c.pad_token_id is not None else (int(eos[0]) if eos is not None else -1)
    cache = default_cache() if cache is None else cache
    device = input_ids.device

    # Running beams: (B, K, L) tokens, (B, K) summed log-probs. Only beam 0 is live at first (the K copies of the
    # prompt are identical, and we do not want K copies of the same continuation).
    running = input_ids[:, None, :].expand(B, K, T)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -1e9
    flat_mask = mask.repeat_interleave(K, dim=0)  # (B*K, S)
    prompt_pad = ~flat_mask  # (B*K, T) shown to processors as -1
    # Finished hypotheses: (B, K, max_length) tokens, normalised scores, whether the slot is filled, lengths.
    done_seqs = torch.full((B, K, max_length), fill, dtype=torch.long, device=device)
    done_scores = torch.full((B, K), -math.inf, device=device)
    done_filled = torch.zeros(B, K, dtype=torch.bool, device=device)
    done_lengths = torch.zeros(B, K, dtype=torch.long, device=device)
    improvable = torch.ones(B, dtype=torch.bool, device=device)
    is_top = torch.arange(n_candidates, device=device) < K  # only the top K candidates may finish
    history: list[list[BeamStep]] = []

    new_tokens = running.reshape(B * K, T)
    cur_len = T
    for step in range(c.max_new_tokens):
        logits = next_token_logits(model, new_tokens, flat_mask, cache)  # (B*K, V)
        V = logits.shape[-1]
        seen = running.reshape(B * K, cur_len).clone()
        seen[:, :T][prompt_pad] = -1
        log_probs = processors(seen, logits.log_softmax(dim=-1))  # (B*K, V)
        check_scores(log_probs, step)
        total = (log_probs.view(B, K, V) + running_scores[..., None]).view(B, K * V)
        if c.do_sample:
            picked = torch.multinomial(total.softmax(dim=-1), n_candidates, generator=generator)  # (B, C)
            cand_scores = total.gather(1, picked)
        else:
            cand_scores, picked = torch.topk(total, n_candidates, dim=-1)  # (B, C) best first
        parents, tokens = picked // V, picked % V
        cand_seqs = torch.cat([_gather(running, parents), tokens[..., None]], dim=-1)  # (B, C, L+1)
        hits = stop(cand_seqs.reshape(B * n_candidates, -1)).view(B, n_candidates)  # (B, C)

        # next running beams: the best K candidates that did not stop
        keep = torch.topk(torch.where(hits, -math.inf, cand_scores), K, dim=-1).indices  # (B, K)
        running = _gather(cand_seqs, keep)
        running_scores = _gather(torch.where(hits, -math.inf, cand_scores), keep)
        beam_rows = (_gather(parents, keep) + torch.arange(B, device=device)[:, None] * K).flatten()

        # finished hypotheses: stopped candidates among the top K, unless the search for this prompt is closed
        new_length = cur_len + 1 - T
        normalised = cand_scores / (new_length**c.length_penalty)
        closed = (done_filled.all(dim=-1) & (c.early_stopping is True)) | ~improvable  # (B,)
        enters = hits & is_top & ~closed[:, None]
        merged_scores = torch.cat([done_scores, torch.where(enters, normalised, -math.inf)], dim=1)
        best = torch.topk(merged_scores, K, dim=-1).indices  # (B, K)
        padded = torch.nn.functional.pad(cand_seqs, (0, max_length - cand_seqs.shape[-1]), value=fill)
        done_seqs = _gather(torch.cat([done_seqs, padded], dim=1), best)
        done_scores = _gather(merged_scores, best)
        done_filled = _gather(torch.cat([done_filled, enters], dim=1), best)
        lengths = torch.full((B, n_candidates), cur_len + 1, dtype=torch.long, device=device)
        done_lengths = _gather(torch.cat([done_lengths, lengths], dim=1), best)

        if record_history:
            history.append(_record(parents, tokens, cand_scores, normalised, enters, keep))
        cache.reorder(beam_rows)
        cur_len += 1
        flat_mask = torch.cat([flat_mask, flat_mask.new_ones(B * K, 1)], dim=1)
        new_tokens = running[:, :, -1].reshape(B * K, 1)

        # can a running beam still beat the worst finished hypothesis? (HF's heuristic, see the module docstring)
        if c.early_stopping == "never" and c.length_penalty > 0:
            best_length = max_length - T
        else:
            best_length = cur_len - T
        best_possible = running_scores[:, 0] / (best_length**c.length_penalty)
        worst_done = torch.where(done_filled.all(dim=-1), done_scores.min(dim=-1).values, -math.inf)
        improvable &= best_possible > worst_done
        all_done = bool(done_filled.all()) and c.early_stopping is True
        if not improvable.any() or all_done or bool(hits.all()):
            break

    R = c.num_return_sequences
    out_length = int(done_lengths[:, :R].max())
    return BeamSearchOutput(
        sequences=done_seqs[:, :R, :out_length].reshape(B * R, out_length),
        sequences_scores=done_scores[:, :R].reshape(B * R),
        history=history,
    )


@dataclass
class BeamNode:
    """One node of the search tree: the token ``token`` appended at ``step`` to node ``parent`` (-1: the prompt)."""

    step: int
    parent: int
    token: int
    score: float
    status: str
    final_score: float | None


def beam_tree(history: list[list[BeamStep]], batch_index: int = 0) -> list[BeamNode]:
    """Flatten a recorded search (``record_history=True``) into tree nodes for one prompt.

    A node's index in the returned list is its id. Running candidates of step ``s`` become the parents of step
    ``s + 1``'s candidates (through their beam slot); finished and pruned candidates are leaves.
    """
    nodes: list[BeamNode] = []
    slot_nodes = [-1]  # before the first step, every slot is the prompt (only slot 0 is live)
    for step, per_prompt in enumerate(history):
        record = per_prompt[batch_index]
        next_slots: dict[int, int] = {}
        for c, parent_slot in enumerate(record.parents):
            parent = slot_nodes[parent_slot] if parent_slot < len(slot_nodes) else -1
            nodes.append(
                BeamNode(step, parent, record.tokens[c], record.scores[c], record.status[c], record.final_scores[c])
            )
            if record.slots[c] is not None:
                next_slots[record.slots[c]] = len(nodes) - 1
        slot_nodes = [next_slots[j] for j in sorted(next_slots)]
    return nodes


def _record(
    parents: torch.Tensor,
    tokens: torch.Tensor,
    scores: torch.Tensor,
    normalised: torch.Tensor,
    enters: torch.Tensor,
    keep: torch.Tensor,
) -> list[BeamStep]:
    """One :class:`BeamStep` per prompt from the step's ``(B, C)`` candidate tensors."""
    steps = []
    for b in range(parents.shape[0]):
        slot_of = {int(c): slot for slot, c in enumerate(keep[b].tolist())}
        status = [
            "finished" if bool(enters[b, c]) else ("running" if c in slot_of else "pruned")
            for c in range(parents.shape[1])
        ]
        steps.append(
            BeamStep(
                parents=parents[b].tolist(),
                tokens=tokens[b].tolist(),
                scores=scores[b].tolist(),
                status=status,
                slots=[slot_of.get(c) for c in range(parents.shape[1])],
                final_scores=[float(normalised[b, c]) if enters[b, c] else None for c in range(parents.shape[1])],
            )
        )
    return steps
