"""The preallocated (static) KV cache gives exactly what the growing one gives: in attention, greedy, beam search."""

from __future__ import annotations

import pytest
import torch

from lmkit.decoding import beam_search, generate
from lmkit.transformer.kv_cache import KVCache, StaticKVCache
from lmkit.transformer.model import Transformer, TransformerConfig


@pytest.fixture(scope="module")
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=97, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, d_ff=128)
    model = Transformer(cfg).eval()
    with torch.no_grad():  # larger weights: a context-sensitive model, so a beam with the wrong cache row diverges
        for p in model.parameters():
            p.mul_(3.0 if p.dim() == 2 else 1.0)
    return model


def test_update_writes_in_place_and_returns_the_filled_part():
    cache, grown = StaticKVCache(8), KVCache()
    g = torch.Generator().manual_seed(0)
    for T in (3, 1, 2):
        k, v = torch.randn(2, 2, T, 4, generator=g), torch.randn(2, 2, T, 4, generator=g)
        for c in (cache, grown):
            got = c.update(0, k, v)
        assert all(torch.equal(a, b) for a, b in zip(got, (grown.keys[0], grown.values[0]), strict=True))
    buffer = cache.keys[0]
    assert cache.length == 6 and buffer.shape == (2, 2, 8, 4)
    cache.crop(4)
    assert cache.length == 4 and cache.keys[0] is buffer  # cropping frees nothing, it forgets
    cache.update(0, torch.ones(2, 2, 1, 4), torch.ones(2, 2, 1, 4))
    assert torch.equal(cache.keys[0][:, :, 4], torch.ones(2, 2, 4)) and cache.length == 5
    assert cache.memory_bytes() == 2 * 2 * 2 * 8 * 4 * 4


def test_overflow_and_bad_arguments_are_clear_errors():
    cache = StaticKVCache(4)
    with pytest.raises(ValueError, match="cannot hold 5 positions"):
        cache.update(0, torch.zeros(1, 1, 5, 2), torch.zeros(1, 1, 5, 2))
    with pytest.raises(ValueError, match="in order"):
        cache.update(2, torch.zeros(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    with pytest.raises(ValueError, match="max_length"):
        StaticKVCache(0)
    with pytest.raises(ValueError, match="crop"):
        cache.crop(1)


def test_forward_with_static_cache_equals_dynamic_cache(model):
    ids = torch.randint(0, 97, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        full = model(ids).logits
        outs = {}
        for name, cache in (("static", StaticKVCache(16)), ("dynamic", KVCache())):
            steps = [model(ids[:, :5], cache=cache).logits]
            steps += [model(ids[:, t : t + 1], cache=cache).logits for t in range(5, 9)]
            outs[name] = torch.cat(steps, 1)
    assert torch.equal(outs["static"], outs["dynamic"])
    torch.testing.assert_close(outs["static"], full, rtol=1e-5, atol=1e-5)


def test_generate_and_beam_search_agree_with_either_cache(model):
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(2))
    mask = torch.ones_like(ids, dtype=torch.bool)
    mask[1, :2] = False  # left padding
    greedy = generate(model, ids, 10, attention_mask=mask, cache=KVCache())
    assert torch.equal(generate(model, ids, 10, attention_mask=mask, cache=StaticKVCache(16)), greedy)
    settings = dict(num_beams=3, num_return_sequences=2, attention_mask=mask)
    beams = beam_search(model, ids, 8, cache=KVCache(), **settings)
    static = beam_search(model, ids, 8, cache=StaticKVCache(14), **settings)  # reorder() keeps the beams' rows
    assert torch.equal(static.sequences, beams.sequences)
    torch.testing.assert_close(static.sequences_scores, beams.sequences_scores, rtol=0, atol=0)
