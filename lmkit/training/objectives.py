"""Pre-training objectives: what the model is asked to predict, and from which corrupted input.

Every objective turns a clean token sequence into an ``(input, target)`` pair:

* **Next-token prediction** (GPT): input ``x[:-1]``, target ``x[1:]`` — every position is a training signal.
* **Masked LM** (BERT): choose 15% of the positions; of those, 80% become ``[MASK]``, 10% a random token,
  10% stay unchanged; the loss is computed on the chosen positions only (label ``-100`` elsewhere, the
  PyTorch/HF ignore index).
* **T5 denoising** (Raffel et al., 2020, Table 4), with a noise mask covering ``corruption_rate`` of the
  tokens in spans of mean length ``mean_span_length``:

  - *MASS-style*: every corrupted token becomes ``[MASK]``; the target is the whole original sequence.
  - *replace spans*: each corrupted span becomes one sentinel ``<extra_id_k>``; the target lists only the
    spans, each after its sentinel (T5's default: 15%, mean span 3).
  - *drop*: corrupted tokens are deleted from the input; the target is the dropped tokens.

* **Deshuffling**: the input is a random permutation of the tokens; the target is the original order.
* **Prefix LM** (for an encoder–decoder): the input is a prefix, the target the rest of the text.

:func:`objective_pair` builds the pair of each objective of T5's comparison (its Table 4: "BERT-style", prefix
LM, deshuffling, and the i.i.d. replace-spans variant).

The noise mask follows T5's reference ``random_spans_noise_mask`` exactly: the number of corrupted
tokens is ``round(length · rate)``, the number of spans ``round(n_noise / mean_span_length)``, and both
the corrupted and the clean tokens are cut into that many non-empty segments uniformly at random, then
interleaved (clean first). So the span count and the corrupted-token count are deterministic; only the
span boundaries are random.

Finally, :func:`scheduled_sampling_inputs` implements curriculum learning for a decoder (Bengio et al.,
2015): instead of always feeding the gold previous token (teacher forcing), feed the model's own
prediction with a probability that grows during training.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch
from torch.nn import functional as F

from lmkit.checks import check_choice, check_int, check_number, check_token_ids, choices

IGNORE_INDEX = -100
"""Label value that :func:`torch.nn.functional.cross_entropy` skips (its default ``ignore_index``)."""


def _check_rate(rate: float, name: str = "corruption_rate") -> None:
    """A rate strictly between 0 and 1."""
    check_number(name, rate, above=0.0, below=1.0)


def _check_sequences(name: str, ids: torch.Tensor) -> None:
    """``ids`` is an integer tensor of one sequence ``(T,)`` or a batch ``(B, T)``."""
    check_token_ids(name, ids, ndim=None)
    if ids.dim() not in (1, 2):
        raise ValueError(f"{name} must be a (T,) or (B, T) tensor of token ids, got shape {tuple(ids.shape)}")


# ----------------------------------------------------------------------------------------------- next token


def next_token_pairs(ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and targets for next-token prediction: ``(ids[..., :-1], ids[..., 1:])``. (B, T) -> 2 × (B, T-1)."""
    _check_sequences("ids", ids)
    if ids.shape[-1] < 2:
        raise ValueError("next-token prediction needs sequences of at least 2 tokens")
    return ids[..., :-1], ids[..., 1:]


def causal_lm_loss(logits: torch.Tensor, ids: torch.Tensor, ignore_index: int = IGNORE_INDEX) -> torch.Tensor:
    """Mean cross-entropy of predicting ``ids[:, t+1]`` from ``logits[:, t]``.

    ``logits`` (B, T, V) come from running the model on the *whole* ``ids`` (B, T); the last position
    has no target and the first token is never predicted. This is the same shift HF models apply
    when given ``labels=input_ids``.
    """
    if logits.dim() != 3 or logits.shape[:2] != ids.shape:
        raise ValueError(f"logits (B, T, V) must match ids (B, T); got {tuple(logits.shape)} and {tuple(ids.shape)}")
    _, targets = next_token_pairs(ids)
    return F.cross_entropy(logits[:, :-1].flatten(0, 1), targets.flatten(), ignore_index=ignore_index)


# ------------------------------------------------------------------------------------------------------ BERT


def bert_mlm_mask(
    ids: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    mlm_probability: float = 0.15,
    special_ids: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT's masked-LM corruption. Returns ``(inputs, labels)``, both shaped like ``ids``.

    Each non-special position is selected independently with probability ``mlm_probability``.
    A selected position keeps its original token as label and, in the input, becomes ``mask_id``
    with probability 0.8, a uniformly random token with probability 0.1, or stays unchanged
    (0.1). Unselected positions get label :data:`IGNORE_INDEX`. The random and unchanged cases
    exist because ``[MASK]`` never appears at fine-tuning time: the model must build a good
    representation of *every* token, not only of masks.
    """
    _check_sequences("ids", ids)
    _check_rate(mlm_probability, "mlm_probability")
    check_int("vocab_size", vocab_size, minimum=1)
    check_int("mask_id", mask_id, 0, vocab_size - 1)  # an id of the vocabulary
    # Random numbers are drawn on the CPU (where a data pipeline's generator lives), then moved.
    special = torch.isin(ids, torch.tensor(list(special_ids), dtype=ids.dtype, device=ids.device))
    chosen = (torch.rand(ids.shape, generator=generator).to(ids.device) < mlm_probability) & ~special
    labels = torch.where(chosen, ids, torch.full_like(ids, IGNORE_INDEX))
    u = torch.rand(ids.shape, generator=generator).to(ids.device)  # one draw decides mask / random / keep
    random_tokens = torch.randint(vocab_size, ids.shape, generator=generator, dtype=ids.dtype).to(ids.device)
    inputs = torch.where(chosen & (u < 0.8), torch.full_like(ids, mask_id), ids)
    inputs = torch.where(chosen & (u >= 0.8) & (u < 0.9), random_tokens, inputs)
    return inputs, labels


def next_sentence_pairs(
    documents: Sequence[Sequence[str]], generator: torch.Generator | None = None
) -> list[tuple[str, str, bool]]:
    """BERT's next-sentence-prediction examples ``(A, B, is_next)`` (Devlin et al., 2019, Section 3.1).

    For every pair of consecutive sentences ``A, B`` of a document, with probability 0.5 ``B`` is kept (IsNext);
    otherwise it is replaced by a random sentence of *another* document (NotNext). The model reads
    ``[CLS] A [SEP] B [SEP]`` and a 2-way classifier on the final ``[CLS]`` state predicts ``is_next``.
    RoBERTa (Liu et al., 2019, Section 4.2) found that dropping this task matches or improves downstream results.
    """
    if len(documents) < 2 or any(len(d) == 0 for d in documents):
        raise ValueError("need at least two non-empty documents (NotNext sentences come from another document)")
    pairs = []
    for i, doc in enumerate(documents):
        for a, b in zip(doc[:-1], doc[1:], strict=True):
            if torch.rand((), generator=generator).item() < 0.5:
                pairs.append((a, b, True))
                continue
            j = int(torch.randint(len(documents) - 1, (), generator=generator))
            other = documents[j + (j >= i)]  # any document but this one
            pairs.append((a, other[int(torch.randint(len(other), (), generator=generator))], False))
    return pairs


# ---------------------------------------------------------------------------------------------- T5 noise mask


def _random_segmentation(num_items: int, num_segments: int, generator: torch.Generator | None) -> torch.Tensor:
    """Cut ``num_items`` items into ``num_segments`` non-empty segments uniformly at random; their lengths."""
    # Choose num_segments - 1 of the num_items - 1 gaps between items as segment boundaries.
    boundaries = torch.zeros(num_items - 1, dtype=torch.bool)
    boundaries[torch.randperm(num_items - 1, generator=generator)[: num_segments - 1]] = True
    first_in_segment = torch.cat([torch.zeros(1, dtype=torch.bool), boundaries])
    segment_id = torch.cumsum(first_in_segment.long(), 0)
    return torch.bincount(segment_id, minlength=num_segments)


def span_counts(length: int, corruption_rate: float = 0.15, mean_span_length: float = 3.0) -> tuple[int, int]:
    """``(n_noise_tokens, n_spans)`` that T5's ``random_spans_noise_mask`` uses for a sequence of ``length``."""
    check_int("length", length, minimum=2)  # a noise mask needs a clean and a corrupted token
    _check_rate(corruption_rate)
    check_number("mean_span_length", mean_span_length, minimum=1)
    num_noise = min(max(round(length * corruption_rate), 1), length - 1)
    num_spans = max(round(num_noise / mean_span_length), 1)
    return num_noise, num_spans


def random_spans_noise_mask(
    length: int,
    corruption_rate: float = 0.15,
    mean_span_length: float = 3.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """T5's span-corruption mask: a (length,) bool tensor, True on corrupted tokens.

    ``round(length · corruption_rate)`` tokens are corrupted, in ``round(n_noise / mean_span_length)``
    spans; clean and corrupted segments alternate, starting with a clean one, so the sequence never
    starts with noise and ends with a noise span.
    """
    num_noise, num_spans = span_counts(length, corruption_rate, mean_span_length)
    num_clean = length - num_noise
    num_spans = min(num_spans, num_clean)  # each noise span needs a clean segment before it
    noise_lengths = _random_segmentation(num_noise, num_spans, generator)
    clean_lengths = _random_segmentation(num_clean, num_spans, generator)
    interleaved = torch.stack([clean_lengths, noise_lengths], dim=1).reshape(-1)  # clean, noise, clean, ...
    segment_index = torch.repeat_interleave(torch.arange(2 * num_spans), interleaved)
    return segment_index % 2 == 1


def iid_noise_mask(
    length: int, corruption_rate: float = 0.15, generator: torch.Generator | None = None
) -> torch.Tensor:
    """Exactly ``round(length · rate)`` corrupted positions chosen uniformly at random (T5's i.i.d. baseline)."""
    num_noise, _ = span_counts(length, corruption_rate, 1.0)
    mask = torch.zeros(length, dtype=torch.bool)
    mask[torch.randperm(length, generator=generator)[:num_noise]] = True
    return mask


def noise_span_to_unique_sentinel(
    tokens: torch.Tensor, noise_mask: torch.Tensor, sentinel_ids: Sequence[int]
) -> torch.Tensor:
    """Replace each run of noise tokens by one sentinel, numbered by run (T5's function of the same name).

    Applied to the input with the noise mask, it gives ``Thank you <X> me to your party <Y> week .``;
    applied to the same tokens with the *inverted* mask, it gives the target ``<X> for inviting <Y> last <Z>``.
    """
    if tokens.shape != noise_mask.shape or tokens.dim() != 1:
        raise ValueError("tokens and noise_mask must be 1-D and of the same length")
    previous = torch.cat([torch.zeros(1, dtype=torch.bool, device=noise_mask.device), noise_mask[:-1]])
    first_noise = noise_mask & ~previous
    span_number = torch.cumsum(first_noise.long(), 0) - 1
    n_spans = int(first_noise.sum())
    if n_spans > len(sentinel_ids):
        raise ValueError(f"{n_spans} spans need {n_spans} sentinels, only {len(sentinel_ids)} given")
    if n_spans == 0:
        return tokens.clone()
    sentinels = torch.tensor(list(sentinel_ids), dtype=tokens.dtype, device=tokens.device)
    out = torch.where(first_noise, sentinels[span_number.clamp(0, n_spans - 1)], tokens)
    return out[~(noise_mask & ~first_noise)]


DenoisingStyle = Literal["mass", "replace_spans", "drop"]
STYLES = choices(DenoisingStyle)


@dataclass
class DenoisingExample:
    """One corrupted example: the encoder input, the decoder target and the noise mask that made them."""

    inputs: torch.Tensor  # (T_in,)
    targets: torch.Tensor  # (T_out,)
    noise_mask: torch.Tensor  # (T,) bool, True on corrupted tokens of the original


def t5_denoise(
    tokens: torch.Tensor,
    style: DenoisingStyle = "replace_spans",
    corruption_rate: float = 0.15,
    mean_span_length: float | None = 3.0,
    mask_id: int | None = None,
    sentinel_ids: Sequence[int] | None = None,
    generator: torch.Generator | None = None,
    noise_mask: torch.Tensor | None = None,
) -> DenoisingExample:
    """Corrupt one 1-D token sequence in one of the T5 paper's three styles.

    ``mean_span_length=None`` corrupts i.i.d. positions (T5's Table 4 setting); a number uses
    :func:`random_spans_noise_mask`. A given ``noise_mask`` overrides both.

    * ``"mass"``: corrupted tokens → ``mask_id``; target = the original sequence (same length as the input).
    * ``"replace_spans"``: each span → its sentinel; target = sentinel + span, for every span.
    * ``"drop"``: corrupted tokens deleted; target = the deleted tokens in order.

    The last two shorten the target to about ``corruption_rate`` of the length (+ one sentinel per span),
    which is why T5 chose them: the decoder, whose cost grows with target length, does much less work.
    """
    check_token_ids("tokens", tokens, ndim=1)
    check_choice("style", style, STYLES)
    if noise_mask is None:
        if mean_span_length is None:
            noise_mask = iid_noise_mask(len(tokens), corruption_rate, generator)
        else:
            noise_mask = random_spans_noise_mask(len(tokens), corruption_rate, mean_span_length, generator)
    noise_mask = noise_mask.to(tokens.device)
    if style == "mass":
        if mask_id is None:
            raise ValueError("the MASS style needs mask_id")
        inputs = torch.where(noise_mask, torch.full_like(tokens, mask_id), tokens)
        return DenoisingExample(inputs, tokens.clone(), noise_mask)
    if style == "drop":
        return DenoisingExample(tokens[~noise_mask], tokens[noise_mask], noise_mask)
    if sentinel_ids is None:
        raise ValueError("the replace_spans style needs sentinel_ids (e.g. t5_sentinel_ids(vocab_size))")
    inputs = noise_span_to_unique_sentinel(tokens, noise_mask, sentinel_ids)
    targets = noise_span_to_unique_sentinel(tokens, ~noise_mask, sentinel_ids)
    return DenoisingExample(inputs, targets, noise_mask)


def t5_sentinel_ids(vocab_size: int, n: int = 100) -> list[int]:
    """T5's sentinel ids: ``<extra_id_0>`` is the last id of the vocabulary, ``<extra_id_k>`` = ``vocab_size-1-k``."""
    check_int("n", n, 1, vocab_size)
    return [vocab_size - 1 - k for k in range(n)]


# ----------------------------------------------------------------------------------------------- deshuffling


def deshuffle_pair(tokens: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Deshuffling objective: input = the tokens in a random order, target = the original sequence."""
    check_token_ids("tokens", tokens, ndim=1)
    return tokens[torch.randperm(len(tokens), generator=generator).to(tokens.device)], tokens.clone()


# --------------------------------------------------------------------------- T5's objective comparison


def bert_style_pair(
    tokens: torch.Tensor,
    mask_id: int,
    vocab_size: int,
    corruption_rate: float = 0.15,
    random_token_rate: float = 0.1,
    generator: torch.Generator | None = None,
    noise_mask: torch.Tensor | None = None,
) -> DenoisingExample:
    """T5's "BERT-style" objective for an encoder–decoder (Raffel et al., 2020, Section 3.3.1, Tables 3 and 4).

    ``round(T · corruption_rate)`` positions are corrupted i.i.d. (:func:`iid_noise_mask`); each corrupted token
    becomes ``mask_id``, or with probability ``random_token_rate`` a random token drawn uniformly from
    ``0 … vocab_size-1`` (the ordinary tokens: ``mask_id`` and other special ids may lie above); the target is the
    *whole uncorrupted* sequence (BERT's encoder predicts only the masked tokens; an encoder–decoder, T5 explains,
    simply gets the entire original sequence as its target). Unlike :func:`bert_mlm_mask` (80/10/10) no corrupted token
    is left unchanged: T5's 90/10 split. ``random_token_rate=0`` is the MASS-style objective of Table 5::

        >>> ex = bert_style_pair(torch.arange(10, 20), mask_id=0, vocab_size=100, random_token_rate=0.0,
        ...                      noise_mask=torch.tensor([False, False, True, True] + [False] * 6))
        >>> ex.inputs.tolist(), ex.targets.tolist()
        ([10, 11, 0, 0, 14, 15, 16, 17, 18, 19], [10, 11, 12, 13, 14, 15, 16, 17, 18, 19])
    """
    check_token_ids("tokens", tokens, ndim=1)
    check_number("random_token_rate", random_token_rate, minimum=0, maximum=1)
    check_int("vocab_size", vocab_size, minimum=1)
    check_int("mask_id", mask_id, minimum=0)  # may lie above the ordinary tokens
    if noise_mask is None:
        noise_mask = iid_noise_mask(len(tokens), corruption_rate, generator)
    example = t5_denoise(tokens, "mass", mask_id=mask_id, noise_mask=noise_mask)
    if random_token_rate > 0:
        noise = example.noise_mask
        use_random = noise & (torch.rand(len(tokens), generator=generator).to(tokens.device) < random_token_rate)
        random_tokens = torch.randint(vocab_size, tokens.shape, generator=generator, dtype=tokens.dtype)
        example.inputs = torch.where(use_random, random_tokens.to(tokens.device), example.inputs)
    return example


def prefix_lm_pair(
    tokens: torch.Tensor, generator: torch.Generator | None = None, split: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prefix language modelling for an encoder–decoder: input ``tokens[:split]``, target ``tokens[split:]``.

    T5 (Sections 3.2.3 and 3.3.1) takes a span of text and splits it at a random point into a prefix and a target:
    ``split`` is drawn uniformly from ``1 … T-1`` unless given, so both parts are non-empty and ``torch.cat(pair)``
    is the original sequence.
    """
    check_token_ids("tokens", tokens, ndim=1)
    if len(tokens) < 2:
        raise ValueError(f"a prefix LM pair needs at least 2 tokens, got {len(tokens)}")
    if split is None:
        split = 1 + int(torch.randint(len(tokens) - 1, (), generator=generator))
    check_int("split", split, 1, len(tokens) - 1)  # both parts non-empty
    return tokens[:split], tokens[split:]


T5Objective = Literal["bert_style", "iid_replace_spans", "prefix_lm", "deshuffling"]
T5_OBJECTIVES = choices(T5Objective)
"""The objectives of T5's Table 4 that :func:`objective_pair` builds (plus the i.i.d. replace-spans variant)."""


def objective_pair(
    tokens: torch.Tensor,
    objective: T5Objective,
    mask_id: int,
    vocab_size: int,
    sentinel_ids: Sequence[int] = (),
    corruption_rate: float = 0.15,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``(encoder input, decoder target)`` pair of one of :data:`T5_OBJECTIVES` for a 1-D token sequence.

    For example (the sentence of Raffel et al., 2020, Table 3; which tokens are corrupted is random):

    * ``"bert_style"`` (:func:`bert_style_pair`): ``Thank you <M> <M> me to your party apple week .`` → the
      original text;
    * ``"iid_replace_spans"`` (:func:`t5_denoise` with i.i.d. noise): ``Thank you <X> me to your party <Y> week .``
      → ``<X> for inviting <Y> last``;
    * ``"prefix_lm"`` (:func:`prefix_lm_pair`): ``Thank you for inviting`` → ``me to your party last week .``;
    * ``"deshuffling"`` (:func:`deshuffle_pair`): ``party me for your to . last you inviting week Thank`` → the
      original text.

    The targets differ in what they ask for (the whole text, the missing tokens, the rest of the text), so the
    objectives' pre-training losses measure different things and cannot be compared with each other: T5 compared
    them by fine-tuning each pre-trained model on the same downstream tasks
    (:func:`lmkit.book.experiments.objective_comparison.compare_objectives` does that at toy scale).
    """
    check_choice("objective", objective, T5_OBJECTIVES)
    if objective == "bert_style":
        ex = bert_style_pair(tokens, mask_id, vocab_size, corruption_rate, generator=generator)
        return ex.inputs, ex.targets
    if objective == "iid_replace_spans":
        ex = t5_denoise(tokens, "replace_spans", corruption_rate, None, sentinel_ids=sentinel_ids or None,
                        generator=generator)
        return ex.inputs, ex.targets
    if objective == "prefix_lm":
        return prefix_lm_pair(tokens, generator)
    return deshuffle_pair(tokens, generator)  # "deshuffling"


# -------------------------------------------------------------------------------------- scheduled sampling


Schedule = Literal["linear", "exponential", "inverse_sigmoid"]


def teacher_forcing_probability(
    step: int, schedule: Schedule = "inverse_sigmoid", k: float = 100.0, c: float = 1e-3, minimum: float = 0.0
) -> float:
    """Probability ε_i of feeding the *gold* token at training step ``i`` (Bengio et al., 2015, Sec. 2.4).

    * ``"linear"``: ε_i = max(minimum, k − c·i) (with ``k <= 1``);
    * ``"exponential"``: ε_i = k^i (with ``k < 1``);
    * ``"inverse_sigmoid"``: ε_i = k / (k + exp(i / k)) (with ``k >= 1``).

    Early in training ε ≈ 1 (teacher forcing); it decays so the model learns to continue from its own
    (imperfect) predictions, as it must at inference time.
    """
    check_int("step", step, minimum=0)
    check_choice("schedule", schedule, choices(Schedule))
    if schedule == "linear":
        return max(minimum, k - c * step)
    if schedule == "exponential":
        if not 0 < k < 1:
            raise ValueError(f"the exponential schedule needs 0 < k < 1, got {k}")
        return max(minimum, k**step)
    if k < 1:
        raise ValueError(f"the inverse sigmoid schedule needs k >= 1, got {k}")
    return max(minimum, k / (k + math.exp(min(step / k, 700.0))))


def scheduled_sampling_inputs(
    logits_fn: Callable[[torch.Tensor], torch.Tensor],
    ids: torch.Tensor,
    teacher_probability: float,
    generator: torch.Generator | None = None,
    sample: bool = True,
) -> torch.Tensor:
    """Decoder inputs mixing gold tokens and the model's own predictions (scheduled sampling).

    ``logits_fn(ids) -> (B, T, V)`` is the model. A first, gradient-free teacher-forced pass predicts
    every next token; then each input position ``t >= 1`` keeps the gold ``ids[:, t]`` with probability
    ``teacher_probability`` and otherwise takes the prediction made at ``t-1`` (sampled from the softmax
    when ``sample``, else the argmax). The first token is always gold. Train on the result with the
    ordinary :func:`causal_lm_loss` against the *gold* ``ids``. (For a Transformer the predictions of
    one parallel pass stand in for the RNN's step-by-step ones: the two-pass approximation of
    Mihaylova & Martins, 2019.) ``teacher_probability=1`` is exactly teacher forcing.
    """
    check_token_ids("ids", ids)
    check_number("teacher_probability", teacher_probability, minimum=0, maximum=1)
    if teacher_probability == 1.0:
        return ids
    with torch.no_grad():
        logits = logits_fn(ids)[:, :-1].float()  # (B, T-1, V): prediction for positions 1..T-1
        if sample:
            probs = logits.softmax(-1).flatten(0, 1)
            predicted = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:2])
        else:
            predicted = logits.argmax(-1)
    use_gold = torch.rand(predicted.shape, generator=generator).to(ids.device) < teacher_probability
    mixed = torch.where(use_gold, ids[:, 1:], predicted.to(ids.dtype))
    return torch.cat([ids[:, :1], mixed], dim=1)
