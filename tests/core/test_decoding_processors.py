"""Each lmkit logits processor against the Hugging Face ``transformers`` processor of the same name (random logits)."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import logits_process as hf

from lmkit.decoding import (
    MinLength,
    MinNewTokens,
    NoRepeatNGram,
    PresenceFrequencyPenalty,
    ProcessorList,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
)
from lmkit.decoding.processors import token_counts

B, V, L = 4, 50, 12


@pytest.fixture
def batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 12, (B, L), generator=g)  # few distinct ids: repetitions happen
    scores = torch.randn(B, V, generator=g) * 3
    return ids, scores


def same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("t", [0.3, 1.0, 2.5])
def test_temperature_matches_hf(batch, t):
    ids, scores = batch
    same(Temperature(t)(ids, scores), hf.TemperatureLogitsWarper(t)(ids, scores.clone()))


@pytest.mark.parametrize("t", [0.0, -1.0, float("inf"), float("nan")])
def test_temperature_rejects_non_positive(t):
    with pytest.raises(ValueError, match="temperature"):
        Temperature(t)


def test_small_temperature_tends_to_greedy(batch):
    ids, scores = batch
    probs = Temperature(1e-3)(ids, scores).softmax(-1)
    same(probs.argmax(-1), scores.argmax(-1))
    assert torch.allclose(probs.max(-1).values, torch.ones(B))


@pytest.mark.parametrize("k,keep", [(1, 1), (5, 1), (5, 8), (V, 1), (10 * V, 1)])
def test_top_k_matches_hf(batch, k, keep):
    ids, scores = batch
    ours = TopK(k, min_tokens_to_keep=keep)(ids, scores)
    same(ours, hf.TopKLogitsWarper(k, min_tokens_to_keep=keep)(ids, scores.clone()))
    assert (ours > float("-inf")).sum(-1).eq(min(max(k, keep), V)).all()


def test_top_k_larger_than_vocab_keeps_everything(batch):
    ids, scores = batch
    same(TopK(V + 1000)(ids, scores), scores)


@pytest.mark.parametrize("p,keep", [(0.05, 1), (0.3, 1), (0.9, 1), (0.9, 3), (0.999, 1)])
def test_top_p_matches_hf(batch, p, keep):
    ids, scores = batch
    same(TopP(p, min_tokens_to_keep=keep)(ids, scores), hf.TopPLogitsWarper(p, min_tokens_to_keep=keep)(ids, scores))


def test_top_p_keeps_the_token_that_crosses_p():
    # probabilities 0.5, 0.3, 0.2: top_p=0.6 must keep 0.5 AND 0.3 (0.5 alone does not reach 0.6)
    scores = torch.tensor([[0.5, 0.3, 0.2]]).log()
    kept = TopP(0.6)(torch.zeros(1, 1, dtype=torch.long), scores) > float("-inf")
    assert kept.tolist() == [[True, True, False]]
    kept = TopP(0.5)(torch.zeros(1, 1, dtype=torch.long), scores) > float("-inf")  # 0.5 reaches 0.5 exactly
    assert kept.tolist() == [[True, False, False]]


def test_top_p_one_keeps_everything(batch):
    ids, scores = batch
    scores[0, 0] = -200.0  # probability underflows to 0 in float32: still kept
    same(TopP(1.0)(ids, scores), scores)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.5, float("nan")])
def test_top_p_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="top_p"):
        TopP(bad)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True])
def test_top_k_rejects_bad_values(bad):
    with pytest.raises(ValueError, match="top_k"):
        TopK(bad)


@pytest.mark.parametrize("penalty", [0.5, 1.0, 1.3, 2.0])
def test_repetition_penalty_matches_hf(batch, penalty):
    ids, scores = batch
    same(RepetitionPenalty(penalty)(ids, scores), hf.RepetitionPenaltyLogitsProcessor(penalty)(ids, scores.clone()))


def test_repetition_penalty_divides_positive_and_multiplies_negative():
    scores = torch.tensor([[2.0, -2.0, 1.0]])
    out = RepetitionPenalty(2.0)(torch.tensor([[0, 1]]), scores)
    assert out.tolist() == [[1.0, -4.0, 1.0]]  # both seen tokens become less likely, the unseen one is untouched


def test_repetition_penalty_ignores_padding_like_hf_generate(batch):
    ids, scores = batch
    padded = ids.clone()
    padded[:, :3] = -1  # left padding as the generation loop marks it
    hf_proc = hf.RepetitionPenaltyLogitsProcessor(1.7, prompt_ignore_length=torch.full((B,), 3))
    same(RepetitionPenalty(1.7)(padded, scores), hf_proc(ids, scores.clone()))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
def test_no_repeat_ngram_matches_hf(n):
    g = torch.Generator().manual_seed(n)
    ids = torch.randint(0, 2, (B, 40), generator=g)  # 2 symbols: many repeated n-grams
    scores = torch.randn(B, V, generator=g)
    ours = NoRepeatNGram(n)(ids, scores)
    same(ours, hf.NoRepeatNGramLogitsProcessor(n)(ids, scores.clone()))
    assert torch.isneginf(ours).any()


def test_no_repeat_ngram_short_sequence_bans_nothing(batch):
    _, scores = batch
    same(NoRepeatNGram(4)(torch.tensor([[1, 2, 1]] * B), scores), scores)


@pytest.mark.parametrize("min_length", [0, L, L + 1])
def test_min_length_matches_hf(batch, min_length):
    ids, scores = batch
    same(MinLength(min_length, [3, 7])(ids, scores), hf.MinLengthLogitsProcessor(min_length, [3, 7])(ids, scores))


@pytest.mark.parametrize("prompt,new", [(L, 1), (L - 2, 2), (L - 2, 3)])
def test_min_new_tokens_matches_hf(batch, prompt, new):
    ids, scores = batch
    ours = MinNewTokens(prompt, new, 5)(ids, scores)
    same(ours, hf.MinNewTokensLengthLogitsProcessor(prompt, new, 5)(ids, scores))


def test_presence_frequency_penalty_follows_openai_formula(batch):
    ids, scores = batch
    out = PresenceFrequencyPenalty(presence_penalty=0.7, frequency_penalty=0.4, prompt_length=5)(ids, scores)
    # OpenAI's documented formula, token by token: mu[j] - c[j] * a_freq - float(c[j] > 0) * a_pres
    for b in range(B):
        generated = ids[b, 5:].tolist()
        for j in range(V):
            c = generated.count(j)
            assert out[b, j].item() == pytest.approx(scores[b, j].item() - c * 0.4 - float(c > 0) * 0.7, abs=1e-6)


def test_token_counts_skip_padding_and_out_of_vocab():
    counts = token_counts(torch.tensor([[-1, -1, 2, 2, 9]]), vocab_size=5)
    assert counts.tolist() == [[0, 0, 2, 0, 0]]


def test_processor_list_composes_like_hf(batch):
    ids, scores = batch
    ours = ProcessorList([RepetitionPenalty(1.2), NoRepeatNGram(2), Temperature(0.7), TopK(20), TopP(0.8)])
    theirs = hf.LogitsProcessorList(
        [
            hf.RepetitionPenaltyLogitsProcessor(1.2),
            hf.NoRepeatNGramLogitsProcessor(2),
            hf.TemperatureLogitsWarper(0.7),
            hf.TopKLogitsWarper(20),
            hf.TopPLogitsWarper(0.8),
        ]
    )
    same(ours(ids, scores), theirs(ids, scores.clone()))


def test_mismatched_shapes_are_errors(batch):
    ids, scores = batch
    with pytest.raises(ValueError, match="batch"):
        TopK(3)(ids[:2], scores)
    with pytest.raises(ValueError, match="scores"):
        Temperature(1.0)(ids, scores[0])
