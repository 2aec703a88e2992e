"""T5's objective comparison at toy scale: the (input, target) pairs of each objective against exact identities and
the T5 paper's definitions, the batching against HF's T5 shift, the downstream tasks against the text they come
from, and the whole comparison's determinism."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmkit.book.experiments import objective_comparison as oc
from lmkit.training import objectives as obj

TOKENS = torch.arange(10, 50)  # 40 distinct ids


def test_bert_style_target_is_the_uncorrupted_text_with_t5s_90_10_split() -> None:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(5, 1000, (4000,), generator=g)
    ex = obj.bert_style_pair(ids, mask_id=1, vocab_size=1000, generator=g)
    assert torch.equal(ex.targets, ids)  # the whole original sequence, not only the corrupted tokens
    noise = ex.noise_mask
    assert int(noise.sum()) == round(0.15 * len(ids))  # i.i.d. positions, T5's exact count
    assert torch.equal(ex.inputs[~noise], ids[~noise])  # clean positions untouched
    masked = (ex.inputs[noise] == 1).double().mean().item()
    assert abs(masked - 0.9) < 0.03  # 90% mask, 10% random (random draws equal to the original: 1/1000)
    assert ((ex.inputs[noise] != 1) & (ex.inputs[noise] == ids[noise])).sum() <= 3
    # random_token_rate=0 is MASS-style: exactly t5_denoise's "mass" on the same mask
    mass = obj.t5_denoise(ids, "mass", mask_id=1, noise_mask=noise)
    plain = obj.bert_style_pair(ids, 1, 1000, random_token_rate=0.0, noise_mask=noise)
    assert torch.equal(plain.inputs, mass.inputs) and torch.equal(plain.targets, mass.targets)
    with pytest.raises(ValueError, match="random_token_rate"):
        obj.bert_style_pair(ids, 1, 1000, random_token_rate=1.5)
    with pytest.raises(ValueError, match="mask_id"):
        obj.bert_style_pair(ids, -1, 1000)


def test_prefix_lm_pairs_concatenate_back_and_split_uniformly() -> None:
    g = torch.Generator().manual_seed(0)
    splits = []
    for _ in range(3000):
        prefix, rest = obj.prefix_lm_pair(TOKENS, g)
        assert torch.equal(torch.cat([prefix, rest]), TOKENS) and len(prefix) >= 1 and len(rest) >= 1
        splits.append(len(prefix))
    counts = torch.bincount(torch.tensor(splits), minlength=len(TOKENS))[1:]
    assert len(counts) == len(TOKENS) - 1 and counts.min() > 40  # every split point 1..39 occurs (~77 each)
    assert [t.tolist() for t in obj.prefix_lm_pair(TOKENS[:5], split=2)] == [[10, 11], [12, 13, 14]]
    for bad in (0, 5):
        with pytest.raises(ValueError, match="split"):
            obj.prefix_lm_pair(TOKENS[:5], split=bad)
    with pytest.raises(ValueError, match="at least 2"):
        obj.prefix_lm_pair(TOKENS[:1])


@pytest.mark.parametrize("objective", obj.T5_OBJECTIVES)
def test_objective_pair_identities(objective: str) -> None:
    g = torch.Generator().manual_seed(1)
    sentinels = obj.t5_sentinel_ids(100, 8)
    source, target = obj.objective_pair(TOKENS, objective, mask_id=5, vocab_size=60, sentinel_ids=sentinels,
                                        generator=g)
    if objective == "bert_style":
        assert torch.equal(target, TOKENS) and len(source) == len(TOKENS)
    elif objective == "deshuffling":
        assert torch.equal(target, TOKENS) and torch.equal(source.sort().values, TOKENS)  # a permutation
        assert not torch.equal(source, TOKENS)
    elif objective == "prefix_lm":
        assert torch.equal(torch.cat([source, target]), TOKENS)
    else:  # i.i.d. replace spans: putting the spans back into the sentinels' places gives the text
        spans: dict[int, list[int]] = {}
        for t in target.tolist():
            if t in sentinels:
                current = spans.setdefault(t, [])
            else:
                current.append(t)
        rebuilt = [x for t in source.tolist() for x in (spans[t] if t in sentinels else [t])]
        assert rebuilt == TOKENS.tolist()
        assert sum(map(len, spans.values())) == round(0.15 * len(TOKENS))
    with pytest.raises(ValueError, match="objective"):
        obj.objective_pair(TOKENS, "span_corruption", 5, 60)


def test_seq2seq_batch_matches_hf_t5_shift_right() -> None:
    transformers = pytest.importorskip("transformers")
    vocab = oc.toy_vocabulary("abc def True False")
    pairs = [([3, 4, 5], [6, 7]), ([3], [8, 9, 10, 11])]
    src, src_mask, dec, labels = oc.seq2seq_batch(pairs, vocab)
    assert src.tolist() == [[3, 4, 5], [3, vocab.pad_id, vocab.pad_id]]
    assert src_mask.tolist() == [[True] * 3, [True, False, False]]
    assert labels.tolist() == [[6, 7, vocab.eos_id, -100, -100], [8, 9, 10, 11, vocab.eos_id]]
    cfg = transformers.T5Config(vocab_size=vocab.size, d_model=8, d_ff=8, num_layers=1, num_heads=1, d_kv=8,
                                decoder_start_token_id=vocab.bos_id, pad_token_id=vocab.pad_id)
    hf = transformers.T5ForConditionalGeneration(cfg)
    assert torch.equal(dec, hf._shift_right(labels))  # HF's decoder inputs for these labels (-100 -> pad id)


def test_seq2seq_loss_is_the_mean_over_real_target_tokens() -> None:
    vocab = oc.toy_vocabulary("hello world")
    torch.manual_seed(0)
    cfg = oc.TransformerConfig(vocab_size=vocab.size, d_model=16, n_layers=1, n_heads=2, d_ff=32)
    model = oc.EncoderDecoder(cfg).eval()
    pairs = [([1, 2, 3], [4, 5]), ([2, 3], [6, 7, 8, 1])]
    batch = oc.seq2seq_batch(pairs, vocab)
    per_token = []
    for x, y in pairs:  # one example at a time, no padding anywhere
        src, _, dec, labels = oc.seq2seq_batch([(x, y)], vocab)
        logp = model(src, dec).logits.log_softmax(-1)[0]
        per_token += [-logp[t, label] for t, label in enumerate(labels[0].tolist())]
    with torch.no_grad():
        torch.testing.assert_close(oc.seq2seq_loss(model, batch), torch.stack(per_token).mean(), rtol=1e-5, atol=1e-6)


def test_word_tasks_come_from_the_text() -> None:
    text = " ".join(f"word{i % 7} alpha beta snake_case gamma delta epsilon zeta eta theta" for i in range(200))
    examples = oc.word_task_examples(text, 300, context=12, generator=torch.Generator().manual_seed(0))
    kinds = {task for task, _, _ in examples}
    assert kinds == set(oc.TASKS)
    assert not {w for _, _, w in examples} & {"word", "snake", "case"}  # only whole words, not parts of identifiers
    for task, source, word in examples:
        assert oc.WORD.fullmatch(word)
        prefix, body = source.split(": ", 1)
        assert prefix == task
        if task == "next":
            assert len(body) == 12 and f"{body}{word}" in text and body.endswith(" ")
        else:
            assert body.count(oc.BLANK) == 1 and body.replace(oc.BLANK, word) in text
    with pytest.raises(ValueError, match="no word"):
        oc.word_task_examples("ab cd", 3, context=4)


def test_comparison_is_deterministic_and_pretraining_helps() -> None:
    text = ("The quick brown fox jumps over the lazy dog while the cat sleeps near the warm fire. " * 60)
    config = oc.ComparisonConfig(objectives=("bert_style", "deshuffling"), seeds=(0,), window=16, context=12,
                                 d_model=16, d_ff=32, n_heads=2, pretrain_steps=30, finetune_steps=30,
                                 n_finetune=64, n_test=64)
    runs = oc.compare_objectives(text, text, config)
    again = oc.compare_objectives(text, text, config)
    assert [dataclasses.asdict(r) for r in runs] == [dataclasses.asdict(r) for r in again]
    assert [r.objective for r in runs] == [oc.NO_PRETRAINING, "bert_style", "deshuffling"]
    baseline, *pretrained = runs
    assert baseline.target_tokens == 0 and all(r.target_tokens == 30 * 16 * 17 for r in pretrained)  # + EOS
    # On a text this repetitive every objective teaches the spelling the downstream tasks ask for.
    assert all(r.downstream_loss["mean"] < baseline.downstream_loss["mean"] for r in pretrained)
    summary = oc.summarize(runs)
    assert summary["bert_style"]["loss_mean"] == pytest.approx(runs[1].downstream_loss["mean"])
    assert summary["bert_style"]["loss_mean_std"] == 0.0 and summary["none"]["seeds"] == 1


def test_config_rejects_bad_settings() -> None:
    with pytest.raises(ValueError, match="objectives"):
        oc.ComparisonConfig(objectives=("gpt",))
    with pytest.raises(ValueError, match="seed"):
        oc.ComparisonConfig(seeds=())
    with pytest.raises(ValueError, match="pretrain_steps"):
        oc.ComparisonConfig(pretrain_steps=0)
