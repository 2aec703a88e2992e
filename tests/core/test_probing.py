"""lmkit.probing.scoring against per-row log-softmax and Hugging Face greedy generation on a tiny random GPT-2;
lmkit.tokenizers.fertility and lmkit.training.evaluation's bits per byte by exact identities."""

from __future__ import annotations

import math

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmkit.probing.scoring import candidate_logprobs, greedy_match_length, wilson_interval
from lmkit.tokenizers.fertility import fertility
from lmkit.training.evaluation import bits_per_byte, perplexity, token_nll


@pytest.fixture(scope="module")
def gpt():
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=50, n_positions=64, n_embd=32, n_layer=2, n_head=2)).eval()


def reference_logprob(model, prompt, cand):
    ids = torch.tensor([prompt + cand])
    logp = model(ids).logits[0].log_softmax(-1)
    return sum(logp[len(prompt) - 1 + j, t].item() for j, t in enumerate(cand))


@pytest.mark.parametrize("candidates", [[[3], [7], [11]], [[3, 4], [7], [11, 12, 13]]])
def test_candidate_logprobs_match_unpadded_rows(gpt, candidates):
    prompts = [[1, 2, 5, 9], [4, 4], [8, 1, 2, 3, 6, 7, 2]]
    got = candidate_logprobs(gpt, prompts, candidates, batch_size=4)
    want = torch.tensor([[reference_logprob(gpt, p, c) for c in candidates] for p in prompts])
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="candidates"):
        candidate_logprobs(gpt, prompts, [[]])


def test_greedy_match_length_agrees_with_hf_generate(gpt):
    prompt = [5, 1, 9, 2]
    out = gpt.generate(torch.tensor([prompt]), max_new_tokens=12, do_sample=False, pad_token_id=0)[0, 4:].tolist()
    assert greedy_match_length(gpt, prompt, out) == 12  # its own greedy output is matched entirely
    for k in (0, 3, 7):
        wrong = out[:k] + [(out[k] + 1) % 50] + out[k + 1 :]
        assert greedy_match_length(gpt, prompt, wrong) == k


def test_scoring_runs_without_dropout_and_restores_training_mode(gpt):
    prompts, candidates = [[1, 2, 5, 9], [4, 4]], [[3, 4], [7]]
    want = candidate_logprobs(gpt, prompts, candidates)
    greedy = greedy_match_length(gpt, [5, 1, 9, 2], [3, 4, 5])
    gpt.train()  # GPT-2's dropout (0.1) would change every score
    try:
        torch.testing.assert_close(candidate_logprobs(gpt, prompts, candidates), want)
        assert gpt.training
        assert greedy_match_length(gpt, [5, 1, 9, 2], [3, 4, 5]) == greedy and gpt.training
    finally:
        gpt.eval()


def test_wilson_interval():
    lo, hi = wilson_interval(8, 10)
    assert (round(lo, 3), round(hi, 3)) == (0.49, 0.943)
    assert wilson_interval(0, 20)[0] == 0.0 and wilson_interval(0, 20)[1] > 0.1
    lo, hi = wilson_interval(500, 1000)
    assert hi - lo == pytest.approx(2 * 1.96 * math.sqrt(0.25 / 1000), rel=1e-2)  # large n: the normal interval
    with pytest.raises(ValueError, match=r"^successes must be an int in \[0, 2\], got 3$"):
        wilson_interval(3, 2)
    with pytest.raises(ValueError, match="^n must be a positive int, got 0$"):
        wilson_interval(0, 0)


def test_fertility_identities():
    text = "the cat sat on the mat"
    chars = fertility(list, text)
    assert chars == {"tokens": 22.0, "tokens_per_word": 22 / 6, "bytes_per_token": 1.0, "chars_per_token": 1.0}
    words = fertility(lambda s: s.split(), text)
    assert words["tokens_per_word"] == 1.0
    assert fertility(lambda s: list(s.encode()), "日本語")["chars_per_token"] == 1 / 3
    with pytest.raises(ValueError, match="whitespace"):
        fertility(list, "  ")


def test_bits_per_byte_identity(gpt):
    ids = torch.randint(0, 50, (150,), generator=torch.Generator().manual_seed(1))
    nll = token_nll(gpt, ids, window=64)
    assert nll.isnan().sum() == 3  # the first token of each of the 3 windows is not predicted
    ppl = perplexity(gpt, ids, window=64)
    assert math.exp(nll.nanmean().item()) == pytest.approx(ppl, rel=1e-6)
    with torch.no_grad():  # HF's own shifted loss over one window
        hf_loss = gpt(ids[None, :64], labels=ids[None, :64]).loss.item()
    assert perplexity(gpt, ids[:64], window=64) == pytest.approx(math.exp(hf_loss), rel=1e-5)
    n_bytes = 321
    count = int((~nll.isnan()).sum())
    assert bits_per_byte(nll.nansum().item(), n_bytes) == pytest.approx(count * math.log2(ppl) / n_bytes, rel=1e-6)
    assert bits_per_byte(8 * math.log(2) * n_bytes, n_bytes) == pytest.approx(8.0)


def test_next_sentence_pairs_half_is_next_and_negatives_come_from_other_documents():
    from lmkit.training.objectives import next_sentence_pairs

    docs = [[f"d{d}s{s}" for s in range(21)] for d in range(10)]
    pairs = next_sentence_pairs(docs, torch.Generator().manual_seed(0))
    assert len(pairs) == 200
    n_next = sum(p[2] for p in pairs)
    assert 70 <= n_next <= 130  # Binomial(200, 0.5): 99.99% inside
    for a, b, is_next in pairs:
        da, sa = a[1:].split("s")
        db, sb = b[1:].split("s")
        assert (db == da and int(sb) == int(sa) + 1) if is_next else db != da
    with pytest.raises(ValueError, match="two non-empty documents"):
        next_sentence_pairs([["only one"]])
