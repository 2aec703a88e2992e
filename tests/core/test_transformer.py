"""The configurable Transformer: masks (causal, prefix-LM, bidirectional), every position scheme, dropout,
the encoder–decoder, and its error messages. (Real-weight checks are in test_loaders.py.)"""

from __future__ import annotations

import dataclasses

import pytest
import torch

from lmkit.transformer.kv_cache import KVCache
from lmkit.transformer.model import EncoderDecoder, Transformer, TransformerConfig


def _tiny(**kw) -> Transformer:
    torch.manual_seed(0)
    cfg = dict(vocab_size=50, d_model=32, n_layers=2, n_heads=4, d_ff=64, max_positions=32)
    return Transformer(TransformerConfig(**{**cfg, **kw})).eval()


@pytest.mark.parametrize("positions", ["rope", "learned", "sinusoidal", "alibi", "none"])
def test_causal_decoder_never_looks_ahead_and_cache_matches(positions):
    model = _tiny(positions=positions, n_kv_heads=2)
    ids = torch.randint(0, 50, (2, 9))
    changed = ids.clone()
    changed[:, 6:] = (changed[:, 6:] + 1) % 50
    with torch.no_grad():
        out = model(ids, output_attentions=True)
        torch.testing.assert_close(model(changed).logits[:, :6], out.logits[:, :6])
        assert len(out.attentions) == 2 and out.attentions[0].shape == (2, 4, 9, 9)
        assert (out.attentions[0].triu(1) == 0).all()
        cache = KVCache()
        steps = [model(ids[:, :4], cache=cache).logits] + [model(ids[:, t : t + 1], cache=cache).logits
                                                          for t in range(4, 9)]
    torch.testing.assert_close(torch.cat(steps, 1), out.logits, rtol=1e-5, atol=1e-5)


def test_positions_matter_except_without_them():
    ids = torch.randint(0, 50, (1, 8))
    perm = torch.tensor([3, 1, 2, 0, 4, 5, 6, 7])  # swap two tokens
    for positions, sensitive in [("rope", True), ("learned", True), ("sinusoidal", True), ("alibi", True),
                                 ("none", False)]:
        model = _tiny(positions=positions, mask="bidirectional")
        with torch.no_grad():
            a, b = model(ids).logits[0, perm], model(ids[:, perm]).logits[0]
        assert torch.allclose(a, b, atol=1e-5) != sensitive, positions  # no positions: permutation-equivariant


def test_prefix_lm_mask_sees_the_whole_prefix():
    model = _tiny(mask="prefix_lm")
    ids = torch.randint(0, 50, (1, 8))
    changed = ids.clone()
    changed[0, 3] = (changed[0, 3] + 1) % 50
    with torch.no_grad():
        a, b = model(ids, prefix_len=4).logits, model(changed, prefix_len=4).logits
    assert not torch.allclose(a[0, 0], b[0, 0])  # token 0 sees token 3: both are in the prefix
    changed = ids.clone()
    changed[0, 6] = (changed[0, 6] + 1) % 50
    with torch.no_grad():
        torch.testing.assert_close(model(changed, prefix_len=4).logits[0, :6], a[0, :6])  # targets stay causal


def test_rope_scaling_changes_only_long_range_behaviour():
    base, pi = _tiny(), _tiny(rope_scaling="pi", rope_factor=4.0)
    pi.load_state_dict(base.state_dict())
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        assert not torch.allclose(base(ids).logits, pi(ids).logits)
        # PI: positions p·f with scaling = positions p without it
        pos = torch.arange(6)[None]
        torch.testing.assert_close(pi(ids, position_ids=pos * 4).logits, base(ids, position_ids=pos).logits)


def test_dropout_only_in_training_and_tied_embeddings():
    model = _tiny(dropout=0.5, tie_embeddings=True)
    assert model.lm_head.weight is model.tok_emb.weight
    ids = torch.randint(0, 50, (1, 6))
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, model(ids).logits)
        model.train()
        assert not torch.allclose(model(ids).logits, model(ids).logits)


def test_pre_and_post_norm_differ_and_post_norm_outputs_are_normalised():
    post = _tiny(norm="layernorm", norm_placement="post", final_norm=False, lm_head=False)
    h = post(torch.randint(0, 50, (1, 5))).hidden_states
    torch.testing.assert_close(h.mean(-1), torch.zeros(1, 5), atol=1e-5, rtol=0)  # ends in a LayerNorm (gain 1)
    pre = _tiny(norm="layernorm", norm_placement="pre", final_norm=False, lm_head=False)
    pre.load_state_dict(post.state_dict())
    assert not torch.allclose(pre(torch.zeros(1, 5, dtype=torch.long)).hidden_states,
                              post(torch.zeros(1, 5, dtype=torch.long)).hidden_states)


def test_encoder_decoder_cross_attention():
    torch.manual_seed(0)
    model = EncoderDecoder(TransformerConfig(vocab_size=40, d_model=32, n_layers=2, n_heads=4, d_ff=64,
                                             norm="rmsnorm", activation="relu")).eval()
    src, tgt = torch.randint(0, 40, (2, 7)), torch.randint(0, 40, (2, 5))
    src_mask = torch.ones(2, 7, dtype=torch.bool)
    src_mask[1, 5:] = False
    with torch.no_grad():
        out = model(src, tgt, attention_mask=src_mask)
        assert out.logits.shape == (2, 5, 40)
        other = src.clone()
        other[:, 0] = (other[:, 0] + 1) % 40
        assert not torch.allclose(model(other, tgt, attention_mask=src_mask).logits, out.logits)  # reads the source
        padded = src.clone()
        padded[1, 5:] = 0
        torch.testing.assert_close(model(padded, tgt, attention_mask=src_mask).logits[1], out.logits[1])  # not pads
        memory, cache = model.encode(src, src_mask), KVCache()
        steps = [model(src, tgt[:, t : t + 1], attention_mask=src_mask, memory=memory, cache=cache).logits
                 for t in range(5)]
    torch.testing.assert_close(torch.cat(steps, 1), out.logits, rtol=1e-5, atol=1e-5)
    assert model.encoder.tok_emb is model.decoder.tok_emb


def test_clear_errors():
    with pytest.raises(ValueError):
        TransformerConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=2, d_ff=8, positions="bogus")
    model = _tiny()
    with pytest.raises(ValueError, match=r"^input_ids must be a \(batch, length\) tensor of token ids, got shape"):
        model(torch.zeros(4, dtype=torch.long))
    with pytest.raises(ValueError):
        model(torch.zeros(1, 4, dtype=torch.long), attention_mask=torch.ones(1, 3, dtype=torch.bool))
    with pytest.raises(TypeError, match="^input_ids must be an integer torch.Tensor of token ids, got torch.float32$"):
        model(torch.zeros(1, 4))
    for bad in (50, -1):  # the vocabulary is [0, 50): no IndexError deep inside the embedding, no row from the end
        with pytest.raises(ValueError, match=r"^input_ids must hold ids in \[0, 50\) \(the vocabulary\)"):
            model(torch.tensor([[1, bad, 2]]))


def test_config_is_frozen_and_variants_are_derived():
    cfg = TransformerConfig(vocab_size=5, d_model=8, n_layers=1, n_heads=2, d_ff=8)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.rope_pairing = "interleaved"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.attention_impl = "sdpa"
    variant = dataclasses.replace(cfg, rope_pairing="interleaved")
    assert variant.rope_pairing == "interleaved" and cfg.rope_pairing == "half"
    with pytest.raises(ValueError, match="attention_impl"):  # a derived config is checked as a new one
        dataclasses.replace(cfg, attention_impl="fast")
    pair = EncoderDecoder(cfg)
    assert pair.encoder.config.mask == "bidirectional" and not pair.encoder.config.cross_attention
    assert pair.decoder.config.mask == "causal" and pair.decoder.config.cross_attention and cfg.mask == "causal"


def test_set_rope_rebuilds_the_frequencies_and_only_changes_rope():
    base, pi = _tiny(), _tiny(rope_scaling="pi", rope_factor=4.0)
    pi.load_state_dict(base.state_dict())
    ids = torch.randint(0, 50, (1, 6))
    before = base.config
    base.set_rope(rope_scaling="pi", rope_factor=4.0)
    assert before.rope_scaling is None and base.config == pi.config  # a new config, the old one untouched
    with torch.no_grad():
        torch.testing.assert_close(base(ids).logits, pi(ids).logits)
        base.set_rope(rope_pairing="interleaved")  # read at every call
        assert not torch.allclose(base(ids).logits, pi(ids).logits)
    with pytest.raises(ValueError, match="set_rope changes only .* got \\['d_model'\\]"):
        base.set_rope(d_model=16)
    with pytest.raises(ValueError, match="rope_pairing"):
        base.set_rope(rope_pairing="zigzag")


@pytest.mark.parametrize("mask,positions", [("causal", "rope"), ("bidirectional", "learned"), ("prefix_lm", "alibi")])
def test_flash_attention_impl_equals_eager(mask, positions, monkeypatch):
    """attention_impl="flash" routes attention through lmkit.efficient.flash: same logits and gradients as the
    explicit softmax, with GQA, left padding, a KV cache and an ALiBi bias."""
    import lmkit.efficient.flash  # the attention module imports it on first use, so the patch is what it gets

    calls = []
    real = lmkit.efficient.flash.flash_attention
    monkeypatch.setattr(lmkit.efficient.flash, "flash_attention", lambda *a, **k: calls.append(1) or real(*a, **k))
    eager = _tiny(mask=mask, positions=positions, n_kv_heads=2)
    flash = _tiny(mask=mask, positions=positions, n_kv_heads=2, attention_impl="flash")
    flash.load_state_dict(eager.state_dict())
    ids = torch.randint(0, 50, (2, 11))
    pad = torch.ones(2, 11, dtype=torch.bool)
    pad[1, :3] = False  # left padding
    kw = dict(attention_mask=pad, prefix_len=4)
    ref, out = eager(ids, **kw).logits, flash(ids, **kw).logits
    assert len(calls) == 2  # one call per layer, and only from the flash model
    torch.testing.assert_close(out[pad], ref[pad], rtol=1e-5, atol=1e-5)
    ref[pad].sum().backward()
    out[pad].sum().backward()
    for (name, a), b in zip(eager.named_parameters(), flash.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-5, msg=name)
    if mask == "causal":
        with torch.no_grad():
            cache = KVCache()
            steps = [flash(ids[:, :5], attention_mask=pad[:, :5], cache=cache).logits]
            for t in range(5, 11):
                steps.append(flash(ids[:, t : t + 1], attention_mask=pad[:, : t + 1], cache=cache).logits)
        torch.testing.assert_close(torch.cat(steps, 1)[pad], ref[pad].detach(), rtol=1e-5, atol=1e-5)
