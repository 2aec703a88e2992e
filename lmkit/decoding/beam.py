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

from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.processors import Processor
from lmkit.decoding.step import DecodingSetup, check_scores, next_token_logits, prepare_decoding
from lmkit.utils import pad_batch


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


def length_normalised(sum_logprobs: torch.Tensor, length: int, length_penalty: float) -> torch.Tensor:
    r"""$\text{sum\_logprobs} / L^{\alpha}$ with $L$ = ``length`` generated tokens and $\alpha$ = ``length_penalty``,
    elementwise, in the dtype of ``sum_logprobs`` (float32 in the search, like HF's, so ties break the same way)."""
    return sum_logprobs / length**length_penalty


class BeamHypotheses:
    """The finished hypotheses of one prompt: the ``num_beams`` best by length-normalised score, best first.

    >>> hyps = BeamHypotheses(num_beams=2, length_penalty=1.0, early_stopping=False, max_new_tokens=10)
    >>> hyps.add([5, 2], -2.0); hyps.add([5, 3, 2], -1.5); hyps.add([4, 2], -3.0)  # the last one is dropped
    >>> [score for score, _ in hyps.best], hyps.worst_score
    ([-1.5, -2.0], -2.0)
    >>> hyps.is_done(torch.tensor(-7.0), 3)  # best running sum -7 over 3 tokens: -2.33 cannot beat -2.0
    True

    :meth:`is_done` says whether the search for this prompt is over (``early_stopping`` as HF defines it, see the
    module docstring); the loop offers no more candidates to a prompt whose search is over.
    """

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool | str, max_new_tokens: int):
        self.num_beams, self.length_penalty = num_beams, length_penalty
        self.early_stopping, self.max_new_tokens = early_stopping, max_new_tokens
        self.best: list[tuple[float, list[int]]] = []  # (normalised score, token ids), best first
        self.done = False

    def __len__(self) -> int:
        return len(self.best)

    @property
    def worst_score(self) -> float:
        """The score a new hypothesis must beat once ``num_beams`` are kept (-inf before)."""
        return self.best[-1][0] if len(self.best) == self.num_beams else -math.inf

    def add(self, tokens: list[int], score: float) -> None:
        """Offer a finished hypothesis with its length-normalised ``score``; keep it if it is among the best."""
        if len(self.best) < self.num_beams or score > self.worst_score:
            self.best.append((score, tokens))
            self.best.sort(key=lambda hyp: -hyp[0])  # stable: an earlier hypothesis wins a tie
            del self.best[self.num_beams :]

    def is_done(self, best_running: torch.Tensor, length: int) -> bool:
        """Is the search for this prompt over? ``best_running`` is the best running beam's sum of log-probabilities
        (a float32 scalar tensor), ``length`` its number of generated tokens. Over when ``early_stopping=True`` and
        ``num_beams`` hypotheses are kept, or when the best running beam cannot beat the worst kept one (always the
        case once no beam is running: a score of -inf). Once over, it stays over."""
        if self.early_stopping == "never" and self.length_penalty > 0:
            length = self.max_new_tokens  # the exact bound: the longest a beam can become
        best_possible = float(length_normalised(best_running, length, self.length_penalty))
        full = len(self.best) == self.num_beams
        self.done = self.done or (full and self.early_stopping is True) or not best_possible > self.worst_score
        return self.done


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
    ``#EOS + 1`` tokens (2 without an EOS), so a beam can always continue. Shorter hypotheses are right-padded with
    the pad id (``pad_token_id``, else the first EOS id: :func:`~lmkit.decoding.step.prepare_decoding`).
    """
    if config is None:
        settings.setdefault("num_beams", 4)
    setup = prepare_decoding(
        model, input_ids, config, {"max_new_tokens": max_new_tokens, **settings}, attention_mask=attention_mask,
        decode=decode, logits_processors=logits_processors, cache=cache, beam=True,
    )  # fmt: skip
    return beam_loop(model, setup, generator, record_history)


def beam_loop(
    model: Any, setup: DecodingSetup, generator: torch.Generator | None = None, record_history: bool = False
) -> BeamSearchOutput:
    """The beam search loop on a prepared call (:func:`~lmkit.decoding.step.prepare_decoding` with ``beam``)."""
    c, (B, T), K = setup.config, setup.input_ids.shape, setup.config.num_beams
    device = setup.input_ids.device
    # Running beams: (B, K, L) tokens, (B, K) summed log-probs. Only beam 0 is live at first (the K copies of the
    # prompt are identical, and we do not want K copies of the same continuation).
    running = setup.input_ids[:, None, :].expand(B, K, T)
    running_scores = torch.zeros(B, K, device=device)
    running_scores[:, 1:] = -1e9
    flat_mask = setup.mask.repeat_interleave(K, dim=0)  # (B*K, S)
    prompt_pad = ~flat_mask  # (B*K, T) shown to processors as -1
    hyps = [BeamHypotheses(K, c.length_penalty, c.early_stopping, c.max_new_tokens) for _ in range(B)]
    history: list[list[BeamStep]] = []
    new_tokens = running.reshape(B * K, T)
    for step in range(c.max_new_tokens):
        logits = next_token_logits(model, new_tokens, flat_mask, setup.cache)  # (B*K, V)
        seen = running.reshape(B * K, -1).clone()
        seen[:, :T][prompt_pad] = -1
        log_probs = setup.processors(seen, logits.log_softmax(dim=-1))  # (B*K, V)
        check_scores(log_probs, step)
        cand_scores, parents, tokens = _candidates(log_probs.view(B, K, -1), running_scores, setup, generator)
        cand_seqs = torch.cat([_gather(running, parents), tokens[..., None]], dim=-1)  # (B, C, L+1)
        hits = setup.stop(cand_seqs.flatten(0, 1)).view(B, -1)  # (B, C)

        # next running beams: the best K candidates that did not stop
        alive = torch.where(hits, -math.inf, cand_scores)
        keep = torch.topk(alive, K, dim=-1).indices  # (B, K)
        running, running_scores = _gather(cand_seqs, keep), _gather(alive, keep)
        setup.cache.reorder((_gather(parents, keep) + torch.arange(B, device=device)[:, None] * K).flatten())

        # finished hypotheses: stopped candidates among the top K, unless the search for this prompt is over
        normalised = length_normalised(cand_scores, step + 1, c.length_penalty)  # (B, C)
        enters = hits.clone()
        enters[:, K:] = False
        enters[torch.tensor([h.done for h in hyps], device=device)] = False
        for b, i in enters.nonzero().tolist():
            hyps[b].add(cand_seqs[b, i].tolist(), float(normalised[b, i]))
        if record_history:
            history.append(_record(parents, tokens, cand_scores, normalised, enters, keep))
        flat_mask = torch.cat([flat_mask, flat_mask.new_ones(B * K, 1)], dim=1)
        new_tokens = running[:, :, -1].reshape(B * K, 1)
        if all([h.is_done(running_scores[b, 0], step + 1) for b, h in enumerate(hyps)]) or bool(hits.all()):
            break
    return _best(hyps, c.num_return_sequences, setup.pad_id, history, device)


def _candidates(
    log_probs: torch.Tensor, running_scores: torch.Tensor, setup: DecodingSetup, generator: torch.Generator | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The ``C = candidates_per_beam × K`` candidates of each prompt from ``log_probs`` ``(B, K, V)``: their summed
    scores, parent beams and tokens, each ``(B, C)`` — the best ones (sorted), or drawn without replacement when
    sampling."""
    B, K, V = log_probs.shape
    total = (log_probs + running_scores[..., None]).view(B, K * V)
    n_candidates = setup.candidates_per_beam * K
    if setup.config.do_sample:
        picked = torch.multinomial(total.softmax(dim=-1), n_candidates, generator=generator)  # (B, C)
        cand_scores = total.gather(1, picked)
    else:
        cand_scores, picked = torch.topk(total, n_candidates, dim=-1)  # (B, C) best first
    return cand_scores, picked // V, picked % V


def _best(
    hyps: list[BeamHypotheses], R: int, pad_id: int | None, history: list[list[BeamStep]], device: torch.device
) -> BeamSearchOutput:
    """The ``R`` best hypotheses of each prompt, right-padded with ``pad_id`` to the longest. Without a pad id every
    hypothesis has the same length (no EOS, no stop string: they all end at the length limit)."""
    rows = [tokens for h in hyps for _, tokens in h.best[:R]]
    sequences, _ = pad_batch(rows, pad_id=0 if pad_id is None else pad_id)
    scores = torch.tensor([score for h in hyps for score, _ in h.best[:R]], device=device)
    return BeamSearchOutput(sequences=sequences.to(device), sequences_scores=scores, history=history)


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
