"""lmkit's ``generate`` / ``beam_search`` against Hugging Face ``generate`` on a tiny randomly initialised GPT-2.

How the comparison is made fair:

* same weights — lmkit's GPT-2 is built from the HF model's weights with ``lmkit.loaders.hf.from_hf_gpt2``, and
  ``generate`` uses lmkit's own ``KVCache``;
* same processors, in HF's order (penalties, then temperature, top-k, top-p), on float32 logits;
* sampling: HF draws ``torch.multinomial(softmax(scores), 1)`` from the *global* RNG; lmkit draws the same call from
  a ``torch.Generator``. Seeding the global RNG with ``torch.manual_seed(s)`` just before HF ``generate`` and passing
  ``torch.Generator().manual_seed(s)`` to lmkit gives both the same random stream, so equal probabilities give
  equal tokens (the tiny model's logits agree to ~1e-6, far from a sampling boundary in practice);
* beam search: HF's ``sequences_scores`` are the length-normalised sums of log-probabilities of the returned beams;
  ours are compared to them, and the token sequences must be identical;
* finished rows are filled with ``pad_token_id`` in both (chosen non-zero: HF fills finished *beams* with
  ``pad_token_id or eos_token_id[0]``, so a pad id of 0 would silently become the EOS id there).
"""

from __future__ import annotations

import dataclasses
import importlib

import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from lmkit.decoding import beam_search, beam_tree, generate
from lmkit.decoding.beam import BeamHypotheses, length_normalised
from lmkit.decoding.step import prepare_decoding
from lmkit.loaders.hf import from_hf_gpt2

VOCAB = 300
PAD = 299


@pytest.fixture(scope="module")
def hf_model() -> GPT2LMHeadModel:
    torch.manual_seed(0)
    config = GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=VOCAB, n_positions=128, bos_token_id=0)
    return GPT2LMHeadModel(config).eval()


@pytest.fixture(scope="module")
def model(hf_model):
    return from_hf_gpt2(hf_model)


@pytest.fixture(scope="module")
def prompts() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return [torch.randint(1, VOCAB - 1, (1, n), generator=g) for n in (7, 3, 5)]


def hf_generate(hf_model, ids, seed=None, **kwargs):
    kwargs.setdefault("attention_mask", torch.ones_like(ids))
    kwargs.setdefault("pad_token_id", PAD)
    kwargs.setdefault("eos_token_id", None)
    kwargs.setdefault("do_sample", False)
    kwargs.setdefault("top_k", None)
    if seed is not None:
        torch.manual_seed(seed)
    return hf_model.generate(ids, **kwargs)


def greedy_first_token(model, ids) -> int:
    return int(generate(model, ids, 1)[0, -1])


@pytest.mark.parametrize(
    "settings",
    [
        {},
        {"repetition_penalty": 1.5},
        {"no_repeat_ngram_size": 2},
        {"repetition_penalty": 0.7, "no_repeat_ngram_size": 3},
    ],
)
def test_greedy_matches_hf(hf_model, model, prompts, settings):
    for ids in prompts:
        ours = generate(model, ids, 16, **settings)
        torch.testing.assert_close(ours, hf_generate(hf_model, ids, max_new_tokens=16, **settings), rtol=0, atol=0)


def test_greedy_min_new_tokens_and_eos_match_hf(hf_model, model, prompts):
    ids = prompts[0]
    eos = greedy_first_token(model, ids)
    for settings in ({"min_new_tokens": 3}, {"min_length": ids.shape[1] + 2}, {}):
        ours = generate(model, ids, 10, eos_token_id=eos, pad_token_id=PAD, **settings)
        theirs = hf_generate(hf_model, ids, max_new_tokens=10, eos_token_id=eos, **settings)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_eos_at_step_one_stops_at_once(hf_model, model, prompts):
    ids = prompts[1]
    eos = greedy_first_token(model, ids)
    ours = generate(model, ids, 10, eos_token_id=eos)
    assert ours.tolist() == torch.cat([ids, torch.tensor([[eos]])], dim=1).tolist()
    torch.testing.assert_close(ours, hf_generate(hf_model, ids, max_new_tokens=10, eos_token_id=eos))
    beams = beam_search(model, ids, 10, num_beams=3, eos_token_id=eos, early_stopping=True)
    theirs = hf_generate(
        hf_model, ids, max_new_tokens=10, num_beams=3, eos_token_id=eos, early_stopping=True,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    torch.testing.assert_close(beams.sequences, theirs.sequences, rtol=0, atol=0)
    torch.testing.assert_close(beams.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "settings",
    [
        {"temperature": 1.0},
        {"temperature": 0.7, "top_k": 20},
        {"temperature": 1.3, "top_p": 0.8},
        {"top_k": 50, "top_p": 0.9, "repetition_penalty": 1.3},
        {"top_k": 10 * VOCAB},  # top_k larger than the vocabulary: keeps everything
        {"top_p": 1.0},
    ],
)
def test_sampling_with_fixed_seed_matches_hf(hf_model, model, prompts, settings):
    for seed, ids in enumerate(prompts):
        ours = generate(model, ids, 16, do_sample=True, generator=torch.Generator().manual_seed(seed), **settings)
        theirs = hf_generate(hf_model, ids, seed=seed, max_new_tokens=16, do_sample=True, **settings)
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_sampling_several_sequences_matches_hf(hf_model, model, prompts):
    ids = prompts[0]
    ours = generate(
        model, ids, 12, do_sample=True, top_k=30, num_return_sequences=3,
        generator=torch.Generator().manual_seed(7),
    )  # fmt: skip
    theirs = hf_generate(hf_model, ids, seed=7, max_new_tokens=12, do_sample=True, top_k=30, num_return_sequences=3)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    assert len({tuple(row) for row in ours.tolist()}) == 3


def test_top_k_beyond_vocab_and_top_p_one_are_plain_sampling(model, prompts):
    ids = prompts[2]
    plain = generate(model, ids, 12, do_sample=True, generator=torch.Generator().manual_seed(3))
    for settings in ({"top_k": VOCAB + 1}, {"top_p": 1.0}):
        gen = torch.Generator().manual_seed(3)
        torch.testing.assert_close(generate(model, ids, 12, do_sample=True, generator=gen, **settings), plain)


@pytest.mark.parametrize(
    "num_beams,length_penalty,early_stopping,num_return",
    [
        (2, 1.0, False, 1),
        (4, 1.0, False, 4),
        (4, 2.0, True, 2),
        (4, 0.5, "never", 3),
        (3, 0.0, "never", 3),
        (3, -1.0, False, 2),
        (5, 1.0, True, 5),
    ],
)
def test_beam_search_matches_hf(hf_model, model, prompts, num_beams, length_penalty, early_stopping, num_return):
    for ids in prompts:
        eos = [greedy_first_token(model, ids[:, :-1]), 5]  # a likely token as EOS, so beams do finish early
        settings = dict(
            num_beams=num_beams, length_penalty=length_penalty, early_stopping=early_stopping, eos_token_id=eos
        )
        ours = beam_search(model, ids, 12, num_return_sequences=num_return, pad_token_id=PAD, **settings)
        theirs = hf_generate(
            hf_model, ids, max_new_tokens=12, num_return_sequences=num_return, return_dict_in_generate=True,
            output_scores=True, **settings,
        )  # fmt: skip
        torch.testing.assert_close(ours.sequences, theirs.sequences, rtol=0, atol=0)
        # a score is a float32 sum of log-probabilities times length**-alpha: with alpha = -1 it reaches ~700, where one
        # float32 step is 6e-5, so the two libraries' orders of operations may differ by a few steps (relative 1e-6)
        torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=1e-6, atol=1e-5)
        via_generate = generate(model, ids, 12, num_return_sequences=num_return, pad_token_id=PAD, **settings)
        torch.testing.assert_close(via_generate, ours.sequences)


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [2.0, 0.0])
def test_early_stopping_never_differs_from_false_as_in_hf(hf_model, model, prompts, early_stopping, length_penalty):
    """Two beams, and the two most likely first tokens made EOS: both beams finish at step 1, and the best running
    candidate scores below them. ``False`` estimates the best reachable score at the *current* length and stops there;
    ``"never"`` with ``length_penalty > 0`` divides by ``max_new_tokens ** length_penalty`` instead, keeps searching
    and finds a long hypothesis that scores better. With ``length_penalty <= 0`` the two are the same test (HF)."""
    ids = prompts[0]
    with torch.no_grad():
        eos = hf_model(ids).logits[0, -1].topk(2).indices.tolist()
    settings = dict(num_beams=2, length_penalty=length_penalty, eos_token_id=eos)

    def hf(stopping):
        return hf_generate(hf_model, ids, max_new_tokens=10, early_stopping=stopping, return_dict_in_generate=True,
                           output_scores=True, **settings)

    theirs, hf_false, hf_never = hf(early_stopping), hf(False), hf("never")
    if length_penalty > 0:  # the case must tell the settings apart in the reference itself
        assert hf_false.sequences.shape[1] == ids.shape[1] + 1 < hf_never.sequences.shape[1]
        assert hf_never.sequences_scores[0] > hf_false.sequences_scores[0]
    else:
        assert torch.equal(hf_false.sequences, hf_never.sequences)
    ours = beam_search(model, ids, 10, early_stopping=early_stopping, pad_token_id=PAD, **settings)
    torch.testing.assert_close(ours.sequences, theirs.sequences, rtol=0, atol=0)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-5)


def test_beam_search_with_penalties_matches_hf(hf_model, model, prompts):
    ids = prompts[0]
    settings = dict(num_beams=3, repetition_penalty=1.4, no_repeat_ngram_size=2, eos_token_id=5)
    ours = beam_search(model, ids, 12, num_return_sequences=2, pad_token_id=PAD, **settings)
    theirs = hf_generate(
        hf_model, ids, max_new_tokens=12, num_return_sequences=2, return_dict_in_generate=True, output_scores=True,
        **settings,
    )  # fmt: skip
    torch.testing.assert_close(ours.sequences, theirs.sequences, rtol=0, atol=0)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-5)


def test_beam_sampling_matches_hf(hf_model, model, prompts):
    ids = prompts[1]
    settings = dict(num_beams=3, do_sample=True, top_k=40, temperature=0.9, eos_token_id=5)
    ours = beam_search(model, ids, 10, generator=torch.Generator().manual_seed(11), pad_token_id=PAD, **settings)
    theirs = hf_generate(
        hf_model, ids, seed=11, max_new_tokens=10, return_dict_in_generate=True, output_scores=True, **settings
    )
    torch.testing.assert_close(ours.sequences, theirs.sequences, rtol=0, atol=0)
    torch.testing.assert_close(ours.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-5)


def test_beam_width_one_is_greedy(model, prompts):
    for ids in prompts:
        greedy = generate(model, ids, 12)
        torch.testing.assert_close(beam_search(model, ids, 12, num_beams=1).sequences, greedy)
        # with an EOS, width 1 equals greedy once it stops at the first finished hypothesis
        eos = int(greedy[0, ids.shape[1] + 4])
        greedy = generate(model, ids, 12, eos_token_id=eos)
        beams = beam_search(model, ids, 12, num_beams=1, eos_token_id=eos, early_stopping=True)
        torch.testing.assert_close(beams.sequences, greedy)


def left_pad(prompts: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(p.shape[1] for p in prompts)
    ids = torch.full((len(prompts), width), PAD)
    mask = torch.zeros(len(prompts), width, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, width - p.shape[1] :] = p[0]
        mask[i, width - p.shape[1] :] = True
    return ids, mask


def test_batched_left_padded_equals_unbatched(hf_model, model, prompts):
    ids, mask = left_pad(prompts)
    width = ids.shape[1]
    settings = dict(repetition_penalty=1.3, no_repeat_ngram_size=3, eos_token_id=5, pad_token_id=PAD)
    batched = generate(model, ids, 12, attention_mask=mask, **settings)
    beams = beam_search(model, ids, 8, num_beams=3, num_return_sequences=2, attention_mask=mask, **settings)
    theirs = hf_generate(hf_model, ids, max_new_tokens=12, attention_mask=mask.long(), **settings)
    torch.testing.assert_close(batched, theirs, rtol=0, atol=0)
    for i, p in enumerate(prompts):
        single = generate(model, p, 12, **settings)[0, p.shape[1] :]
        assert batched[i, width : width + len(single)].tolist() == single.tolist()
        alone = beam_search(model, p, 8, num_beams=3, num_return_sequences=2, **settings)
        got = beams.sequences[2 * i : 2 * i + 2, width:]
        assert got[:, : alone.sequences.shape[1] - p.shape[1]].tolist() == alone.sequences[:, p.shape[1] :].tolist()
        torch.testing.assert_close(beams.sequences_scores[2 * i : 2 * i + 2], alone.sequences_scores, atol=1e-5, rtol=0)


def test_stop_strings_stop_at_first_occurrence(hf_model, model, prompts):
    ids = prompts[0]

    def decode(tokens: list[int]) -> str:  # a toy detokenizer: each id is one letter
        return "".join(chr(97 + t % 26) for t in tokens)

    full = hf_generate(hf_model, ids, max_new_tokens=20)[0, ids.shape[1] :].tolist()
    stop = decode(full[5:7])  # a two-letter string the greedy text contains
    first = decode(full).index(stop) + len(stop)  # where it first ends
    ours = generate(model, ids, 20, stop_strings=stop, decode=decode, pad_token_id=PAD)
    assert ours[0, ids.shape[1] :].tolist() == full[:first]


def test_all_tokens_filtered_is_a_clear_error(model, prompts):
    def forbid_everything(input_ids, scores):
        return torch.full_like(scores, float("-inf"))

    for kwargs in ({}, {"do_sample": True}, {"num_beams": 2}):
        with pytest.raises(ValueError, match="every token was filtered"):
            generate(model, prompts[0], 5, logits_processors=[forbid_everything], **kwargs)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"do_sample": True, "temperature": 0.0}, "greedy"),
        ({"do_sample": True, "temperature": -1.0}, "temperature"),
        ({"top_k": 0}, "top_k"),
        ({"top_p": 1.5}, "top_p"),
        ({"repetition_penalty": 0.0}, "repetition penalty"),
        ({"num_beams": 0}, "num_beams"),
        ({"num_beams": 2, "num_return_sequences": 3}, "num_return_sequences"),
        ({"num_return_sequences": 2}, "do_sample"),
        ({"num_beams": 2, "early_stopping": "sometimes"}, "early_stopping"),
        ({"num_beams": 2, "length_penalty": float("nan")}, "length_penalty"),
        ({"min_new_tokens": 3}, "eos_token_id"),
        ({"stop_strings": "x"}, "decode"),
        ({"stop_strings": "x", "decode": str}, "pad_token_id"),
        ({"num_beams": 2, "stop_strings": "x", "decode": str}, "pad_token_id"),
        ({"eos_token_id": -1}, "eos_token_id"),
        ({"attention_mask": torch.ones(1, 3, dtype=torch.bool)}, "does not match"),
        ({"attention_mask": torch.tensor([[True] * 6 + [False]])}, "LEFT"),
        ({"attention_mask": torch.tensor([[True, False] + [True] * 5])}, "left padding"),
    ],
)
def test_bad_arguments_are_clear_errors(model, prompts, kwargs, match):
    kwargs = {"max_new_tokens": 4, **kwargs}
    with pytest.raises(ValueError, match=match):
        generate(model, prompts[0], **kwargs)


def test_bad_prompt_shapes_are_clear_errors(model):
    with pytest.raises(ValueError, match="batch, length"):
        generate(model, torch.tensor([1, 2, 3]), 3)
    with pytest.raises(TypeError, match="integer"):
        generate(model, torch.rand(1, 3), 3)


def test_recorded_tree_contains_the_returned_beams(model, prompts):
    ids = prompts[0]
    out = beam_search(model, ids, 10, num_beams=3, num_return_sequences=3, eos_token_id=5, record_history=True)
    nodes = beam_tree(out.history)
    assert len(out.history) == len(set(n.step for n in nodes))
    for node in nodes:  # every parent is a running node of the previous step
        parent = nodes[node.parent] if node.parent >= 0 else None
        assert parent is None or (parent.status == "running" and parent.step == node.step - 1)
    finished = {}
    for i, node in enumerate(nodes):
        if node.status == "finished":
            path, j = [], i
            while j != -1:
                path.append(nodes[j].token)
                j = nodes[j].parent
            finished[tuple(reversed(path))] = node.final_score
    for seq, score in zip(out.sequences, out.sequences_scores, strict=True):
        generated = seq[ids.shape[1] :].tolist()
        match = [s for path, s in finished.items() if list(path) == generated[: len(path)]]
        assert match and any(abs(s - float(score)) < 1e-6 for s in match)


def test_length_normalised_score_by_hand():
    # -6 over 3 tokens: alpha = 1 gives -2, alpha = 2 gives -6/9, alpha = 0 the raw sum, alpha = -1 gives -18
    for alpha, expected in ((1.0, -2.0), (2.0, -6.0 / 9.0), (0.0, -6.0), (-1.0, -18.0)):
        assert float(length_normalised(torch.tensor(-6.0), 3, alpha)) == pytest.approx(expected)


def test_beam_hypotheses_keep_the_n_best():
    hyps = BeamHypotheses(num_beams=2, length_penalty=1.0, early_stopping=False, max_new_tokens=10)
    assert len(hyps) == 0 and hyps.worst_score == float("-inf")
    hyps.add([1, 2], -3.0)
    assert hyps.worst_score == float("-inf")  # not full yet: anything enters
    hyps.add([1, 3], -1.0)
    hyps.add([1, 4], -2.0)  # beats -3.0, which drops out
    hyps.add([1, 5], -5.0)  # worse than the worst kept: not kept
    hyps.add([1, 6], -2.0)  # a tie with the worst does not enter (it must do better)
    assert hyps.best == [(-1.0, [1, 3]), (-2.0, [1, 4])]
    assert hyps.worst_score == -2.0


def full_hypotheses(early_stopping, length_penalty=1.0) -> BeamHypotheses:
    """Two kept hypotheses, worst score -2, at most 10 new tokens."""
    hyps = BeamHypotheses(num_beams=2, length_penalty=length_penalty, early_stopping=early_stopping, max_new_tokens=10)
    hyps.add([1, 3], -1.0)
    hyps.add([1, 4], -2.0)
    return hyps


def test_beam_hypotheses_done_under_each_early_stopping_mode():
    running = torch.tensor
    # not full: never done while a beam runs, whatever the mode
    for mode in (True, False, "never"):
        hyps = BeamHypotheses(num_beams=2, length_penalty=1.0, early_stopping=mode, max_new_tokens=10)
        hyps.add([1, 3], -1.0)
        assert not hyps.is_done(running(-100.0), 3)
    # True: done as soon as num_beams are kept, even if a running beam scores better (-0.3 / 3 = -0.1 > -2)
    assert full_hypotheses(True).is_done(running(-0.3), 3)
    # False: best running -7 over the current 3 tokens is -2.33 <= -2: done; -5 / 3 = -1.67 > -2: not done
    assert full_hypotheses(False).is_done(running(-7.0), 3)
    assert not full_hypotheses(False).is_done(running(-5.0), 3)
    # "never" with alpha > 0 divides by the longest possible length: -7 / 10 = -0.7 > -2, not done
    assert not full_hypotheses("never").is_done(running(-7.0), 3)
    assert full_hypotheses("never").is_done(running(-25.0), 3)  # -25 / 10 = -2.5 <= -2
    # "never" with alpha <= 0 is False's test: alpha = 0 compares raw sums, -1.5 > -2 but -2.5 is not
    assert full_hypotheses("never", 0.0).is_done(running(-2.5), 3)
    assert not full_hypotheses("never", 0.0).is_done(running(-1.5), 3)
    # no running beam left (score -inf): done even when not full; and done stays done
    hyps = BeamHypotheses(num_beams=2, length_penalty=1.0, early_stopping=False, max_new_tokens=10)
    assert hyps.is_done(running(float("-inf")), 3)
    assert hyps.is_done(running(0.0), 4)


def test_generate_and_beam_search_share_one_preparation(model, prompts, monkeypatch):
    """``generate(num_beams=3)`` and ``beam_search`` resolve the same settings through ``prepare_decoding``; greedy
    decoding follows the same pad rule (pad_token_id, else the first EOS id) and differs only where it must."""
    setups = []

    def spy(*args, **kwargs):
        setups.append(prepare_decoding(*args, **kwargs))
        return setups[-1]

    # the modules by name: as an attribute of lmkit.decoding, ``generate`` is the function, not the module
    for module in ("lmkit.decoding.generate", "lmkit.decoding.beam"):
        monkeypatch.setattr(importlib.import_module(module), "prepare_decoding", spy)
    ids = prompts[0]
    settings = dict(num_beams=3, eos_token_id=[7, 9], length_penalty=0.5, repetition_penalty=1.2, do_sample=True)
    generate(model, ids, 4, generator=torch.Generator().manual_seed(0), **settings)
    beam_search(model, ids, 4, generator=torch.Generator().manual_seed(0), **settings)
    generate(model, ids, 4, **{**settings, "num_beams": 1})
    via_generate, direct, greedy = setups
    for setup in (via_generate, direct):
        assert setup.config == via_generate.config and setup.config.num_beams == 3
        assert setup.beam and setup.candidates_per_beam == 3  # 1 + two EOS ids
        assert setup.pad_id == 7 and setup.eos.tolist() == [7, 9]
        assert torch.equal(setup.input_ids, ids) and setup.mask.all()
    assert [type(p) for p in via_generate.processors] == [type(p) for p in direct.processors]
    assert [type(s) for s in via_generate.stop] == [type(s) for s in direct.stop]
    assert not greedy.beam and greedy.candidates_per_beam == 1 and greedy.pad_id == 7
    assert greedy.config == dataclasses.replace(direct.config, num_beams=1)
    for kwargs, pad in (({"pad_token_id": PAD, "eos_token_id": 5}, PAD), ({}, None)):
        for beam in (False, True):
            assert prepare_decoding(model, ids, None, {"max_new_tokens": 2, **kwargs}, beam=beam).pad_id == pad


@pytest.mark.slow
def test_real_smollm2_greedy_and_beams_match_hf(smollm2_model, smollm2_tokenizer):
    """The same loop on the real LLaMA-architecture model (GQA, RoPE, lmkit's KV cache) against HF's
    ``LlamaForCausalLM`` holding the same weights (``to_hf_llama``)."""
    from lmkit.loaders.hf import to_hf_llama
    from lmkit.loaders.smollm2 import chat_prompt

    hf_llama = to_hf_llama(smollm2_model)
    eos = smollm2_tokenizer.eos_id
    ids = torch.tensor([smollm2_tokenizer.encode(chat_prompt("What is 2+2?"))])
    ours = generate(smollm2_model, ids, 10, eos_token_id=eos, repetition_penalty=1.2)
    theirs = hf_generate(hf_llama, ids, max_new_tokens=10, eos_token_id=eos, pad_token_id=eos, repetition_penalty=1.2)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
    beams = beam_search(smollm2_model, ids, 6, num_beams=2, num_return_sequences=2, eos_token_id=eos)
    theirs = hf_generate(
        hf_llama, ids, max_new_tokens=6, num_beams=2, num_return_sequences=2, eos_token_id=eos, pad_token_id=eos,
        return_dict_in_generate=True, output_scores=True,
    )  # fmt: skip
    torch.testing.assert_close(beams.sequences, theirs.sequences, rtol=0, atol=0)
    torch.testing.assert_close(beams.sequences_scores, theirs.sequences_scores, rtol=0, atol=1e-4)
