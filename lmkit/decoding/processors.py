"""Logits processors: small functions that reshape the next-token scores before a token is chosen.

Every processor is a callable ``processor(input_ids, scores) -> scores`` with

* ``input_ids`` — ``(B, L)`` the tokens so far (prompt + generated); a **negative id marks padding**
  (the generation loop puts ``-1`` on left-padding positions) and is ignored by every processor;
* ``scores`` — ``(B, V)`` the next-token scores: raw logits when sampling, log-probabilities in beam search.

They compose left to right with :class:`ProcessorList`, exactly like Hugging Face's ``LogitsProcessorList``,
and each one gives the same numbers as the HF processor of the same name (the tests check it). Two families:

* **penalties and constraints** change or forbid individual tokens: repetition penalty (CTRL), presence and
  frequency penalties (OpenAI), no-repeat n-gram, minimum length (forbid EOS until long enough);
* **warpers** reshape the whole distribution: temperature, top-k, top-p (nucleus). A forbidden token's score is
  ``-inf`` so its probability after the softmax is exactly 0.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch

from lmkit.checks import check_int, check_number, check_token_ids
from lmkit.decoding.config import GenerationConfig
from lmkit.decoding.stopping import eos_tensor

Processor = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
"""``(input_ids (B, L), scores (B, V)) -> scores (B, V)``."""

NEG_INF = float("-inf")


def _check_inputs(input_ids: torch.Tensor, scores: torch.Tensor) -> None:
    if scores.ndim != 2:
        raise ValueError(f"scores must be (batch, vocab), got shape {tuple(scores.shape)}")
    check_token_ids("input_ids", input_ids)  # (batch, length); negative ids (padding) are allowed here
    if input_ids.shape[0] != scores.shape[0]:
        raise ValueError(f"input_ids has batch {input_ids.shape[0]} but scores has batch {scores.shape[0]}")


def token_counts(input_ids: torch.Tensor, vocab_size: int) -> torch.Tensor:
    """``(B, V)`` how often each token id occurs in each row of ``input_ids`` (negative ids = padding, not counted).

    Ids ``>= vocab_size`` (an embedding table larger than the LM head) are not counted either.
    """
    ids = input_ids.clone()
    ids[(ids < 0) | (ids >= vocab_size)] = vocab_size  # a spare column that is dropped below
    counts = torch.zeros(ids.shape[0], vocab_size + 1, dtype=torch.long, device=ids.device)
    counts.scatter_add_(1, ids, torch.ones_like(ids))
    return counts[:, :vocab_size]


class ProcessorList(list):
    """Apply processors one after the other: ``scores = p_n(ids, ... p_1(ids, scores))``."""

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        for processor in self:
            scores = processor(input_ids, scores)
        return scores


class Temperature:
    r"""Divide the logits by ``T``: $p_i = \exp(z_i / T) / \sum_j \exp(z_j / T)$.

    ``T < 1`` sharpens the distribution, ``T > 1`` flattens it; ``T = 1`` leaves it unchanged. As $T \to 0^+$ the
    distribution tends to a one-hot on the argmax — greedy decoding — but ``T = 0`` itself would divide by zero, so
    it is rejected: ask for greedy decoding (``do_sample=False``) instead.
    """

    def __init__(self, temperature: float):
        check_number("temperature", temperature)
        if temperature <= 0:
            raise ValueError(
                f"temperature must be > 0, got {temperature}: T -> 0 is greedy decoding, so use do_sample=False "
                "(greedy) rather than T <= 0, which has no meaning (division by zero or a flipped distribution)"
            )
        self.temperature = float(temperature)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        return scores / self.temperature


class TopK:
    """Keep the ``k`` highest scores (ties with the k-th are kept too) and set the rest to ``-inf``.

    ``k`` larger than the vocabulary keeps everything. ``min_tokens_to_keep`` raises ``k`` to at least that many
    (beam sampling keeps one more token than there are EOS ids, so a beam can always continue).
    """

    def __init__(self, top_k: int, min_tokens_to_keep: int = 1):
        check_int("top_k", top_k, minimum=1)
        check_int("min_tokens_to_keep", min_tokens_to_keep, minimum=1)
        self.top_k = max(top_k, min_tokens_to_keep)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        k = min(self.top_k, scores.shape[-1])
        kth_best = torch.topk(scores, k, dim=-1).values[:, -1:]  # (B, 1)
        return scores.masked_fill(scores < kth_best, NEG_INF)


class TopP:
    """Nucleus sampling (Holtzman et al., 2019): keep the smallest set of most likely tokens whose total probability
    reaches ``top_p``, *including* the token that crosses ``top_p``; the rest get ``-inf``.

    Sorted from most to least likely, token ``i`` is kept when the probability mass strictly before it is
    ``< top_p``. So the most likely token is always kept, ``top_p = 1`` keeps every token, and at least
    ``min_tokens_to_keep`` tokens survive. The probabilities are those of ``softmax(scores)``: apply temperature
    first if you want the nucleus of the tempered distribution (that is the order :func:`build_processors` uses).
    """

    def __init__(self, top_p: float, min_tokens_to_keep: int = 1):
        self.top_p = check_number("top_p", top_p, maximum=1.0, above=0.0)
        self.min_tokens_to_keep = check_int("min_tokens_to_keep", min_tokens_to_keep, minimum=1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        if self.top_p == 1.0:
            return scores  # the whole vocabulary is the nucleus
        sorted_scores, order = torch.sort(scores, dim=-1, descending=True)  # (B, V)
        probs = sorted_scores.softmax(dim=-1)
        mass_before = probs.cumsum(dim=-1) - probs  # (B, V) probability of the tokens ranked above this one
        remove_sorted = mass_before >= self.top_p
        remove_sorted[:, : self.min_tokens_to_keep] = False
        remove = remove_sorted.scatter(1, order, remove_sorted)  # back to vocabulary order
        return scores.masked_fill(remove, NEG_INF)


class RepetitionPenalty:
    """CTRL's repetition penalty (Keskar et al., 2019) for every token already in the sequence.

    A positive score is *divided* by ``penalty``, a negative one *multiplied* by it, so with ``penalty > 1`` a
    repeated token always becomes less likely (dividing a negative logit would make it more likely). ``penalty = 1``
    does nothing; ``penalty < 1`` encourages repetition. Each token is penalised once however often it occurred.
    ``prompt_length`` ignores the first tokens of every row (0: the prompt counts too, as in HF ``generate``).
    """

    def __init__(self, penalty: float, prompt_length: int = 0):
        self.penalty = check_number("repetition penalty", penalty, above=0.0)
        self.prompt_length = check_int("prompt_length", prompt_length, minimum=0)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        seen = token_counts(input_ids[:, self.prompt_length :], scores.shape[-1]) > 0  # (B, V)
        penalised = torch.where(scores < 0, scores * self.penalty, scores / self.penalty)
        return torch.where(seen, penalised, scores)


class PresenceFrequencyPenalty:
    r"""OpenAI's presence and frequency penalties, subtracted from the logits:

    $$z_j \leftarrow z_j - c_j \, \alpha_\text{frequency} - [c_j > 0] \, \alpha_\text{presence}$$

    where $c_j$ counts token $j$ in the sequence so far (after the first ``prompt_length`` tokens: the generation
    loop passes the prompt length, so only *generated* tokens count, as in OpenAI's API and vLLM). Unlike the
    repetition penalty this is additive and the frequency part grows with every repetition. Values in [-2, 2] are
    the documented range; negative values encourage repetition.
    """

    def __init__(self, presence_penalty: float = 0.0, frequency_penalty: float = 0.0, prompt_length: int = 0):
        self.presence_penalty = check_number("presence_penalty", presence_penalty)
        self.frequency_penalty = check_number("frequency_penalty", frequency_penalty)
        self.prompt_length = check_int("prompt_length", prompt_length, minimum=0)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        counts = token_counts(input_ids[:, self.prompt_length :], scores.shape[-1]).to(scores.dtype)  # (B, V)
        return scores - counts * self.frequency_penalty - (counts > 0).to(scores.dtype) * self.presence_penalty


class NoRepeatNGram:
    """Forbid any n-gram of size ``ngram_size`` from occurring twice (fairseq's / HF's ``no_repeat_ngram_size``).

    The next token completes the n-gram ``(last n-1 tokens, next)``. For every earlier window whose first ``n-1``
    tokens equal the last ``n-1`` tokens, the token that followed it is banned. The prompt counts as well.
    """

    def __init__(self, ngram_size: int):
        self.ngram_size = check_int("ngram_size", ngram_size, minimum=1)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        n, length, vocab = self.ngram_size, input_ids.shape[1], scores.shape[-1]
        if length < n:
            return scores
        prefix = input_ids[:, length - n + 1 :]  # (B, n-1) what the next token would extend
        windows = input_ids.unfold(1, n, 1)  # (B, L-n+1, n) every n-gram seen so far
        matches = (windows[..., :-1] == prefix[:, None, :]).all(dim=-1)  # (B, L-n+1)
        followers = windows[..., -1]
        # padding windows (negative ids) and non-matching windows go to a spare column that is dropped
        column = torch.where(matches & (followers >= 0) & (followers < vocab), followers, vocab)
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, column, True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


class MinLength:
    """Forbid the EOS token(s) while the sequence (prompt included, padding included) is shorter than ``min_length``.

    This is HF's ``min_length``: it counts the prompt. :class:`MinNewTokens` counts only generated tokens.
    """

    def __init__(self, min_length: int, eos_token_id: int | Sequence[int] | torch.Tensor):
        self.min_length = check_int("min_length", min_length, minimum=0)
        self.eos = _eos_ids(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        if input_ids.shape[1] >= self.min_length:
            return scores
        return _forbid(scores, self.eos)


class MinNewTokens:
    """Forbid the EOS token(s) until ``min_new_tokens`` tokens have been generated after a ``prompt_length`` prompt."""

    def __init__(self, prompt_length: int, min_new_tokens: int, eos_token_id: int | Sequence[int] | torch.Tensor):
        self.prompt_length = check_int("prompt_length", prompt_length, minimum=0)
        self.min_new_tokens = check_int("min_new_tokens", min_new_tokens, minimum=0)
        self.eos = _eos_ids(eos_token_id)

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        _check_inputs(input_ids, scores)
        if input_ids.shape[1] - self.prompt_length >= self.min_new_tokens:
            return scores
        return _forbid(scores, self.eos)


def _eos_ids(eos_token_id: int | Sequence[int] | torch.Tensor) -> torch.Tensor:
    ids = eos_tensor(eos_token_id.tolist() if isinstance(eos_token_id, torch.Tensor) else eos_token_id)
    if ids is None:
        raise ValueError("an eos_token_id is required: it is the token being forbidden")
    return ids


def _forbid(scores: torch.Tensor, token_ids: torch.Tensor) -> torch.Tensor:
    """``scores`` with the given vocabulary columns set to ``-inf`` (ids beyond the vocabulary are ignored)."""
    forbidden = torch.isin(torch.arange(scores.shape[-1], device=scores.device), token_ids.to(scores.device))
    return scores.masked_fill(forbidden, NEG_INF)


def build_processors(
    config: GenerationConfig, prompt_length: int, *, min_tokens_to_keep: int = 1, extra: Iterable[Processor] = ()
) -> ProcessorList:
    """The processors of one decoding call with ``config``, for prompts of ``prompt_length`` tokens, in Hugging
    Face's order.

    Penalties and constraints come first (repetition, presence/frequency, no-repeat n-gram, min length, min new
    tokens), then any ``extra`` processors, then — only when sampling — the warpers temperature, top-k, top-p.
    Greedy decoding and (non-sampling) beam search ignore the warpers, as HF does: greedy takes the argmax, which
    none of them moves, and beam search ranks the model's own log-probabilities. Parameters are validated even when
    unused, so a bad value is an error whatever the decoding mode.
    """
    c = config
    processors = ProcessorList()
    if c.repetition_penalty != 1.0:
        processors.append(RepetitionPenalty(c.repetition_penalty))
    if c.presence_penalty != 0.0 or c.frequency_penalty != 0.0:
        processors.append(PresenceFrequencyPenalty(c.presence_penalty, c.frequency_penalty, prompt_length))
    if c.no_repeat_ngram_size:
        processors.append(NoRepeatNGram(c.no_repeat_ngram_size))
    if (c.min_length or c.min_new_tokens) and c.eos_token_id is None:
        raise ValueError("min_length / min_new_tokens need an eos_token_id (the token they forbid)")
    if c.min_length:
        processors.append(MinLength(c.min_length, c.eos_token_id))
    if c.min_new_tokens:
        processors.append(MinNewTokens(prompt_length, c.min_new_tokens, c.eos_token_id))
    processors.extend(extra)
    warpers: list[Processor] = [Temperature(c.temperature)]  # validates T even for greedy decoding
    if c.top_k is not None:
        warpers.append(TopK(c.top_k, min_tokens_to_keep))
    warpers.append(TopP(c.top_p, min_tokens_to_keep))
    if c.do_sample:
        processors.extend(w for w in warpers if not _is_identity(w))
    return processors


def _is_identity(processor: Processor) -> bool:
    return (isinstance(processor, Temperature) and processor.temperature == 1.0) or (
        isinstance(processor, TopP) and processor.top_p == 1.0
    )
