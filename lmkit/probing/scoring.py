"""Scoring a causal LM's answers by likelihood instead of by generating text.

GPT-2 and GPT-3 evaluate multiple-choice tasks this way (GPT-3 paper, Section 2.4: "we compare the LM likelihood of
each completion"): the model reads the prompt once and the candidate whose tokens it finds most likely is its answer.
No sampling, no parsing of free text, and all prompts of a task run in one padded forward pass.

* :func:`candidate_logprobs` — ``(n_prompts, n_candidates)`` summed log-probabilities of each candidate continuation;
* :func:`greedy_match_length` — how many tokens of a known continuation greedy decoding would reproduce exactly,
  from a single forward over prompt + continuation (greedy decoding follows the text exactly as long as the arg-max
  at every step is the next true token);
* :func:`wilson_interval` — a confidence interval for an accuracy measured on ``n`` items.

Worked example (``tok`` SmolLM2's tokenizer, ``model`` the loaded model)::

    scores = candidate_logprobs(model, [tok.encode("Paris is the capital of")], [tok.encode(" France"),
                                                                                 tok.encode(" Spain")])
    scores.argmax(-1)  # tensor([0])
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from lmkit.checks import check_int
from lmkit.utils import eval_mode, pad_batch


def _check_ids(name: str, seqs: Sequence[Sequence[int]]) -> None:
    if not seqs or any(len(s) == 0 for s in seqs):
        raise ValueError(f"{name} must be a non-empty list of non-empty token-id lists")


@torch.no_grad()
def candidate_logprobs(
    model: nn.Module, prompts: Sequence[Sequence[int]], candidates: Sequence[Sequence[int]], pad_id: int = 0,
    batch_size: int = 64,
) -> torch.Tensor:
    """``(P, C)`` log-probability of each candidate continuation (summed over its tokens) after each prompt.

    Every (prompt, candidate) pair is one right-padded row; padding sits after the text, so a causal model never
    attends to it and positions need no shifting. Candidates of one token cost one row per prompt only: all of them
    are read from the same last-position distribution.
    """
    _check_ids("prompts", prompts)
    _check_ids("candidates", candidates)
    check_int("batch_size", batch_size, minimum=1)
    device = next(model.parameters()).device
    single = all(len(c) == 1 for c in candidates)
    rows = [list(p) for p in prompts] if single else [list(p) + list(c) for p in prompts for c in candidates]
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))  # similar lengths share a batch: little padding
    scores: list[torch.Tensor | None] = [None] * len(rows)
    with eval_mode(model):
        for start in range(0, len(rows), batch_size):
            chunk = order[start : start + batch_size]
            ids, _ = pad_batch([rows[i] for i in chunk], pad_id)  # right padding: the text never sees it
            logp = model(ids.to(device)).logits.float().log_softmax(-1).cpu()  # (b, T, V)
            for b, i in enumerate(chunk):
                end = len(rows[i])
                if single:
                    scores[i] = logp[b, end - 1, [c[0] for c in candidates]]
                else:
                    cand = candidates[i % len(candidates)]
                    positions = torch.arange(end - len(cand) - 1, end - 1)  # the logits that predict the candidate
                    scores[i] = logp[b, positions, torch.tensor(cand)].sum()
    return torch.stack(scores).reshape(len(prompts), len(candidates))


@torch.no_grad()
def greedy_match_length(model: nn.Module, prompt: Sequence[int], continuation: Sequence[int]) -> int:
    """Number of leading tokens of ``continuation`` that greedy decoding after ``prompt`` reproduces exactly.

    One forward over ``prompt + continuation``: the arg-max after position ``t`` is the token greedy decoding would
    pick there, as long as every earlier pick was the true token — so the first mismatch ends the match.
    """
    _check_ids("prompt", [prompt])
    _check_ids("continuation", [continuation])
    device = next(model.parameters()).device
    ids = torch.tensor([list(prompt) + list(continuation)], device=device)
    with eval_mode(model):
        picks = model(ids).logits[0, len(prompt) - 1 : -1].argmax(-1).cpu()  # (len(continuation),)
    wrong = (picks != torch.tensor(list(continuation))).nonzero()
    return int(wrong[0]) if len(wrong) else len(continuation)


def wilson_interval(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval for a proportion (95% for ``z=1.96``): unlike ``p ± z·sqrt(p(1-p)/n)`` it stays inside
    [0, 1] and does not collapse to a point at 0% or 100%.

    >>> tuple(round(x, 3) for x in wilson_interval(8, 10))
    (0.49, 0.943)
    """
    check_int("n", n, minimum=1)
    check_int("successes", successes, minimum=0, maximum=n)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)
