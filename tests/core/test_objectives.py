"""Pre-training objectives: corruption statistics on large samples, against their published definitions
(BERT paper, T5 paper and reference code, Bengio et al. 2015) and against HF transformers."""

from __future__ import annotations

import math

import pytest
import torch
from scipy import stats

from lmkit.training import objectives as obj

VOCAB = 1000
MASK_ID = 3
SPECIAL = (0, 1, 2)  # e.g. [PAD], [CLS], [SEP]


def _sample_ids(n_rows: int = 400, length: int = 512, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(10, VOCAB, (n_rows, length), generator=g)
    ids[:, 0], ids[:, -1] = 1, 2
    return ids


def test_causal_lm_loss_matches_hf_gpt2() -> None:
    transformers = pytest.importorskip("transformers")
    cfg = transformers.GPT2Config(vocab_size=97, n_positions=32, n_embd=32, n_layer=1, n_head=2)
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(cfg).eval()
    ids = torch.randint(97, (3, 20))
    out = model(ids, labels=ids)
    torch.testing.assert_close(obj.causal_lm_loss(out.logits, ids), out.loss, rtol=1e-6, atol=1e-6)
    inputs, targets = obj.next_token_pairs(ids)
    assert torch.equal(inputs, ids[:, :-1]) and torch.equal(targets, ids[:, 1:])


def test_bert_mlm_statistics_match_definition_and_hf_collator() -> None:
    ids = _sample_ids()
    g = torch.Generator().manual_seed(1)
    inputs, labels = obj.bert_mlm_mask(ids, MASK_ID, VOCAB, special_ids=SPECIAL, generator=g)
    eligible = ~torch.isin(ids, torch.tensor(SPECIAL))
    chosen = labels != obj.IGNORE_INDEX
    n = int(eligible.sum())
    rate = chosen.sum().item() / n
    assert abs(rate - 0.15) < 4 * math.sqrt(0.15 * 0.85 / n)
    assert not (chosen & ~eligible).any()  # special tokens are never selected
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    m = int(chosen.sum())
    masked = (inputs[chosen] == MASK_ID).sum().item() / m
    unchanged = (inputs[chosen] == ids[chosen]).sum().item() / m
    randomised = 1 - masked - unchanged
    tol = 4 * math.sqrt(0.1 * 0.9 / m)
    assert abs(masked - 0.8) < 4 * math.sqrt(0.8 * 0.2 / m)
    # "unchanged" also catches random draws equal to the original (probability 0.1 / VOCAB): negligible here.
    assert abs(unchanged - 0.1) < tol and abs(randomised - 0.1) < tol
    # The random replacements are uniform over the vocabulary.
    rand_tokens = inputs[chosen & (inputs != MASK_ID) & (inputs != ids)]
    assert rand_tokens.min() >= 0 and rand_tokens.max() < VOCAB
    assert stats.kstest(rand_tokens.numpy() / VOCAB, "uniform").pvalue > 1e-3

    # HF's DataCollatorForLanguageModeling implements the same recipe: its rates agree with ours.
    transformers = pytest.importorskip("transformers")

    class _Tok:  # the minimal tokenizer interface the collator uses
        mask_token, mask_token_id, pad_token_id, pad_token = "[MASK]", MASK_ID, 0, "[PAD]"

        def __len__(self) -> int:
            return VOCAB

        def get_special_tokens_mask(self, seq, already_has_special_tokens=True):  # noqa: ANN001
            return [int(t in SPECIAL) for t in seq]

        def convert_tokens_to_ids(self, token):  # noqa: ANN001
            return MASK_ID

    torch.manual_seed(2)
    collator = transformers.DataCollatorForLanguageModeling(_Tok(), mlm_probability=0.15, return_tensors="pt")
    hf_inputs, hf_labels = collator.torch_mask_tokens(ids.clone())
    hf_chosen = hf_labels != -100
    assert abs(hf_chosen.sum().item() / n - rate) < 8 * math.sqrt(0.15 * 0.85 / n)
    hf_masked = (hf_inputs[hf_chosen] == MASK_ID).float().mean().item()
    assert abs(hf_masked - masked) < 8 * math.sqrt(0.8 * 0.2 / m)


@pytest.mark.parametrize(("length", "rate", "mean_span"), [(512, 0.15, 3.0), (100, 0.3, 5.0), (57, 0.15, 1.0)])
def test_span_mask_counts_follow_t5_reference(length: int, rate: float, mean_span: float) -> None:
    # T5 preprocessors.random_spans_noise_mask: num_noise = round(length * density) (clamped to [1, length-1]),
    # num_spans = round(num_noise / mean_noise_span_length) (at least 1); spans alternate, clean first.
    want_noise = min(max(round(length * rate), 1), length - 1)
    want_spans = max(round(want_noise / mean_span), 1)
    g = torch.Generator().manual_seed(0)
    for _ in range(200):
        mask = obj.random_spans_noise_mask(length, rate, mean_span, g)
        assert mask.shape == (length,) and mask.dtype == torch.bool
        assert int(mask.sum()) == want_noise
        starts = mask & ~torch.cat([torch.tensor([False]), mask[:-1]])
        assert int(starts.sum()) == want_spans
        assert not mask[0] and mask[-1]  # begins with a clean segment, ends with a noise span


def test_span_lengths_are_a_uniform_random_segmentation() -> None:
    """All masks with the given counts are equally likely, so a noise span's length k has the law
    P(k) = C(N-k-1, S-2) / C(N-1, S-1) for N noise tokens in S spans (stars and bars); mean N/S."""
    length, rate, mean_span = 400, 0.15, 3.0
    n_noise, n_spans = obj.span_counts(length, rate, mean_span)  # 60 tokens in 20 spans
    g = torch.Generator().manual_seed(0)
    first_lengths, all_lengths = [], []
    for _ in range(3000):
        mask = obj.random_spans_noise_mask(length, rate, mean_span, g)
        runs = torch.unique_consecutive(mask, return_counts=True)
        noise_runs = runs[1][runs[0]]
        first_lengths.append(int(noise_runs[0]))
        all_lengths.extend(noise_runs.tolist())
    assert abs(sum(all_lengths) / len(all_lengths) - n_noise / n_spans) < 1e-9
    ks = range(1, n_noise - n_spans + 2)
    law = [math.comb(n_noise - k - 1, n_spans - 2) / math.comb(n_noise - 1, n_spans - 1) for k in ks]
    assert abs(sum(law) - 1) < 1e-12
    observed = torch.bincount(torch.tensor(first_lengths), minlength=len(law) + 1)[1:].float()
    expected = torch.tensor(law) * len(first_lengths)
    keep = expected >= 5  # chi-square needs enough expected counts per bin; pool the tail
    obs = torch.cat([observed[keep], observed[~keep].sum()[None]])
    exp = torch.cat([expected[keep], expected[~keep].sum()[None]])
    assert stats.chisquare(obs.numpy(), exp.numpy()).pvalue > 1e-3


def test_t5_paper_example_all_three_styles() -> None:
    """T5 paper, Figure 2 and Table 4: 'Thank you for inviting me to your party last week .'"""
    words = "Thank you for inviting me to your party last week .".split()
    vocab = {w: i for i, w in enumerate(words)} | {"<M>": 20, "<X>": 99, "<Y>": 98, "<Z>": 97}
    inv = {i: w for w, i in vocab.items()}
    tokens = torch.tensor([vocab[w] for w in words])
    noise = torch.tensor([w in ("for", "inviting", "last") for w in words])
    sentinels = obj.t5_sentinel_ids(100, 3)  # 99, 98, 97 = <extra_id_0>, <extra_id_1>, <extra_id_2>

    def text(t: torch.Tensor) -> str:
        return " ".join(inv[int(i)] for i in t)

    ex = obj.t5_denoise(tokens, "replace_spans", sentinel_ids=sentinels, noise_mask=noise)
    assert text(ex.inputs) == "Thank you <X> me to your party <Y> week ."
    assert text(ex.targets) == "<X> for inviting <Y> last <Z>"
    ex = obj.t5_denoise(tokens, "drop", noise_mask=noise)
    assert text(ex.inputs) == "Thank you me to your party week ."
    assert text(ex.targets) == "for inviting last"
    ex = obj.t5_denoise(tokens, "mass", mask_id=20, noise_mask=noise)
    assert text(ex.inputs) == "Thank you <M> <M> me to your party <M> week ."
    assert text(ex.targets) == " ".join(words)


def test_denoising_lengths_per_style() -> None:
    length = 512
    tokens = torch.arange(10, 10 + length)
    n_noise, n_spans = obj.span_counts(length, 0.15, 3.0)
    g = torch.Generator().manual_seed(0)
    sentinels = obj.t5_sentinel_ids(32100)
    ex = obj.t5_denoise(tokens, "replace_spans", sentinel_ids=sentinels, generator=g)
    # The reference code's mask ends with noise, so the target has one sentinel per span and no trailing one.
    assert len(ex.inputs) == length - n_noise + n_spans and len(ex.targets) == n_noise + n_spans
    assert ex.targets[0] == sentinels[0] and set(ex.targets.tolist()) >= set(sentinels[:n_spans])
    assert torch.equal(ex.targets[~torch.isin(ex.targets, torch.tensor(sentinels))], tokens[ex.noise_mask])
    ex = obj.t5_denoise(tokens, "drop", generator=g)
    assert len(ex.inputs) == length - n_noise and len(ex.targets) == n_noise
    ex = obj.t5_denoise(tokens, "mass", mask_id=0, generator=g)
    assert len(ex.inputs) == len(ex.targets) == length and int((ex.inputs == 0).sum()) == n_noise
    iid = obj.t5_denoise(tokens, "drop", mean_span_length=None, generator=g)
    assert int(iid.noise_mask.sum()) == n_noise
    with pytest.raises(ValueError, match="style"):
        obj.t5_denoise(tokens, "shuffle")
    with pytest.raises(ValueError, match="sentinel"):
        obj.t5_denoise(tokens, "replace_spans")
    with pytest.raises(ValueError, match="corruption_rate"):
        obj.random_spans_noise_mask(100, 1.5)


def test_deshuffle_is_a_permutation() -> None:
    tokens = torch.arange(200)
    shuffled, target = obj.deshuffle_pair(tokens, torch.Generator().manual_seed(0))
    assert torch.equal(target, tokens) and torch.equal(shuffled.sort().values, tokens)
    assert not torch.equal(shuffled, tokens)


def test_teacher_forcing_schedules_follow_bengio_2015() -> None:
    assert obj.teacher_forcing_probability(0, "inverse_sigmoid", k=10) == pytest.approx(10 / 11)
    assert obj.teacher_forcing_probability(50, "inverse_sigmoid", k=10) == pytest.approx(10 / (10 + math.exp(5)))
    assert obj.teacher_forcing_probability(10, "exponential", k=0.9) == pytest.approx(0.9**10)
    assert obj.teacher_forcing_probability(300, "linear", k=1.0, c=1e-3, minimum=0.2) == pytest.approx(0.7)
    assert obj.teacher_forcing_probability(10_000, "linear", k=1.0, c=1e-3, minimum=0.2) == 0.2
    values = [obj.teacher_forcing_probability(i, "inverse_sigmoid", k=50) for i in range(0, 2000, 100)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_scheduled_sampling_mixes_at_the_requested_rate() -> None:
    ids = torch.randint(5, 50, (64, 128), generator=torch.Generator().manual_seed(0))

    def always_token_1(x: torch.Tensor) -> torch.Tensor:  # a "model" whose prediction is always token 1
        logits = torch.full((*x.shape, 50), -1e4)
        logits[..., 1] = 0.0
        return logits

    assert torch.equal(obj.scheduled_sampling_inputs(always_token_1, ids, 1.0), ids)
    g = torch.Generator().manual_seed(1)
    mixed = obj.scheduled_sampling_inputs(always_token_1, ids, 0.75, g)
    assert torch.equal(mixed[:, 0], ids[:, 0])
    replaced = (mixed[:, 1:] == 1).float().mean().item()
    n = ids[:, 1:].numel()
    assert abs(replaced - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)
    assert torch.equal(mixed[mixed != 1], ids[mixed != 1])
