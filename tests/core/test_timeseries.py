"""lmkit.timeseries: Informer's ProbSparse attention and distilling (exact identities), Time-LLM's pieces (against
torch.nn.MultiheadAttention, brute-force autocorrelation, lmkit's own Transformer forward) and the baselines."""

import math

import pytest
import torch
import torch.nn.functional as F

from lmkit.timeseries.forecasting import (
    LinearForecaster,
    last_value,
    mae,
    mse,
    seasonal_naive,
    synthetic_series,
    windows,
)
from lmkit.timeseries.informer import (
    Distilling,
    InformerEncoder,
    default_u,
    prob_sparse_attention,
    sample_keys,
    sparsity_measure,
)
from lmkit.timeseries.timellm import (
    PatchEmbedding,
    Reprogramming,
    TimeLLM,
    revin,
    revin_inverse,
    run_backbone,
    series_prompt,
    top_lags,
)


def qkv(B=2, H=3, L=40, D=16, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(B, H, L, D, generator=g, dtype=dtype) for _ in range(3)]


def test_sparsity_measure_equals_its_definition():
    q, k, _ = qkv(L=12, D=8)
    index = sample_keys(12, 12, 5, torch.Generator().manual_seed(1))
    got = sparsity_measure(q, k, index)
    want = torch.empty(2, 3, 12, dtype=torch.float64)
    for b in range(2):
        for h in range(3):
            for i in range(12):
                s = [float(q[b, h, i] @ k[b, h, j]) / math.sqrt(8) for j in index[i].tolist()]
                want[b, h, i] = max(s) - sum(s) / len(s)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    full = (q @ k.transpose(-2, -1)) / math.sqrt(8)
    torch.testing.assert_close(sparsity_measure(q, k), full.amax(-1) - full.mean(-1), rtol=0, atol=1e-12)


@pytest.mark.parametrize("causal", [False, True])
def test_u_equal_to_n_is_full_attention(causal):
    q, k, v = qkv()
    out = prob_sparse_attention(q, k, v, u=40, causal=causal)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=causal), rtol=0, atol=1e-12)
    scores = (q @ k.transpose(-2, -1)) * 16**-0.5
    if causal:
        scores = scores.masked_fill(torch.ones(40, 40, dtype=torch.bool).triu(1), float("-inf"))
    assert torch.equal(out, scores.softmax(-1) @ v)  # bit for bit: the same computation on the same rows


@pytest.mark.parametrize("causal", [False, True])
def test_active_rows_are_exact_and_lazy_rows_are_mean_or_cumsum(causal):
    q, k, v = qkv()
    out, top = prob_sparse_attention(q, k, v, u=7, causal=causal, generator=torch.Generator().manual_seed(3),
                                     return_index=True)
    full = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    lazy = v.cumsum(-2) if causal else v.mean(-2, keepdim=True).expand_as(v)
    active = torch.zeros(2, 3, 40, dtype=torch.bool).scatter(2, top, True)
    assert int(active.sum()) == 2 * 3 * 7
    torch.testing.assert_close(out[active], full[active], rtol=0, atol=1e-12)
    torch.testing.assert_close(out[~active], lazy[~active], rtol=0, atol=1e-12)


def test_active_queries_are_the_top_u_of_the_sampled_measure():
    q, k, v = qkv(L=30)
    n_sample = default_u(30)
    _, top = prob_sparse_attention(q, k, v, u=6, generator=torch.Generator().manual_seed(5), return_index=True)
    measure = sparsity_measure(q, k, sample_keys(30, 30, n_sample, torch.Generator().manual_seed(5)))
    assert torch.equal(top, measure.topk(6, dim=-1).indices.sort(-1).values)


def test_error_shrinks_to_zero_as_u_grows():
    q, k, v = qkv(L=64)
    q = q * 3  # peaked rows, as in trained models
    full = F.scaled_dot_product_attention(q, k, v)
    errors = [float((prob_sparse_attention(q, k, v, u=u, n_sample=64, generator=torch.Generator().manual_seed(0))
                     - full).norm()) for u in (4, 16, 32, 64)]
    assert errors[0] > errors[1] > errors[2] > errors[3] and errors[3] < 1e-12


def test_default_u_and_bad_input():
    assert default_u(96) == 5 * math.ceil(math.log(96)) == 25 and default_u(10) == 10 and default_u(1) == 1
    q, k, v = qkv(L=8)
    with pytest.raises(ValueError):
        prob_sparse_attention(q, k, v, u=9)
    with pytest.raises(ValueError):
        prob_sparse_attention(q[0], k[0], v[0])
    with pytest.raises(ValueError):
        prob_sparse_attention(q[:, :, :4], k, v, causal=True)


@pytest.mark.parametrize("length", [96, 95, 7])
def test_distilling_halves_the_length_as_conv_elu_maxpool(length):
    torch.manual_seed(0)
    layer = Distilling(8).eval()
    x = torch.randn(2, length, 8)
    y = layer(x)
    assert y.shape == (2, math.ceil(length / 2), 8)
    h = F.conv1d(F.pad(x.transpose(1, 2), (1, 1), mode="circular"), layer.conv.weight, layer.conv.bias)
    h = F.elu(F.batch_norm(h, layer.norm.running_mean, layer.norm.running_var, layer.norm.weight, layer.norm.bias))
    h = F.pad(h, (1, 1), value=float("-inf"))
    want = torch.stack([h[..., 2 * i : 2 * i + 3].amax(-1) for i in range(y.shape[1])], dim=-1)
    torch.testing.assert_close(y, want.transpose(1, 2))


def test_informer_encoder_distils_between_layers():
    enc = InformerEncoder(d_model=16, n_heads=2, d_ff=32, n_layers=3)
    assert enc(torch.randn(2, 96, 16)).shape == (2, 24, 16)


def test_revin_round_trip_and_statistics():
    x = torch.randn(4, 50) * 3 + 7
    z, stats = revin(x)
    torch.testing.assert_close(z.mean(-1), torch.zeros(4), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(-1, unbiased=False), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(revin_inverse(z, stats), x)


def test_patch_embedding_patches_with_replicated_end():
    pe = PatchEmbedding(patch_len=16, stride=8, d_model=4)
    assert pe.n_patches(96) == 12 and pe(torch.randn(3, 96)).shape == (3, 12, 4)
    x = torch.arange(96.0)[None]
    padded = torch.cat([x, x[:, -1:].expand(1, 8)], 1)
    patches = padded.unfold(-1, 16, 8)
    assert patches.shape[1] == 12 and patches[0, -1].tolist() == [88.0 + i for i in range(8)] + [95.0] * 8
    with torch.no_grad():  # the module embeds exactly these patches
        torch.testing.assert_close(pe(x), pe.conv(patches.transpose(1, 2)).transpose(1, 2))
    with pytest.raises(ValueError):
        pe(torch.randn(1, 10))


def test_top_lags_match_brute_force_circular_autocorrelation():
    x = torch.randn(3, 48, dtype=torch.float64)
    corr = torch.stack([(x * torch.roll(x, lag, -1)).sum(-1) for lag in range(48)], -1)
    lags = top_lags(x, 4)  # lag l and T - l tie (the autocorrelation is circular): compare the values
    torch.testing.assert_close(corr.gather(-1, lags), corr.topk(4, dim=-1).values, rtol=0, atol=1e-9)


def test_reprogramming_is_multi_head_cross_attention():
    torch.manual_seed(0)
    d_model, H, E, d_llm, S = 12, 4, 6, 20, 30
    layer = Reprogramming(d_model, H, E, d_llm)
    ref = torch.nn.MultiheadAttention(H * E, H, kdim=d_llm, vdim=d_llm, batch_first=True)
    with torch.no_grad():
        ref.q_proj_weight.copy_(torch.eye(H * E))
        ref.k_proj_weight.copy_(layer.key.weight)
        ref.v_proj_weight.copy_(layer.value.weight)
        ref.in_proj_bias.copy_(torch.cat([torch.zeros(H * E), layer.key.bias, layer.value.bias]))
        ref.out_proj.weight.copy_(torch.eye(H * E))  # compare before our own output projection
        ref.out_proj.bias.zero_()
    patches, prototypes = torch.randn(2, 7, d_model), torch.randn(S, d_llm)
    mixed, _ = ref(layer.query(patches), prototypes[None].expand(2, S, d_llm), prototypes[None].expand(2, S, d_llm))
    torch.testing.assert_close(layer(patches, prototypes), layer.out(mixed), rtol=1e-5, atol=1e-6)


def tiny_llama():
    from lmkit.transformer.model import Transformer, TransformerConfig

    torch.manual_seed(0)
    cfg = TransformerConfig(vocab_size=300, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, d_ff=64,
                            positions="rope", norm="rmsnorm", activation="swiglu", mask="causal")
    return Transformer(cfg).eval()


def test_run_backbone_on_embeddings_equals_the_model_forward():
    model = tiny_llama()
    ids = torch.randint(300, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False  # left padding
    with torch.no_grad():
        want = model(ids, attention_mask=mask).hidden_states
        got = run_backbone(model, model.tok_emb(ids), mask)
    torch.testing.assert_close(got[mask], want[mask], rtol=1e-5, atol=1e-6)


class CharTokenizer:
    def encode(self, text):
        return [min(ord(c), 299) for c in text]


def test_timellm_trains_only_its_adapters_and_learns():
    model = tiny_llama()
    tl = TimeLLM(model, CharTokenizer(), seq_len=48, pred_len=12, patch_len=8, stride=4, d_model=16, n_heads=4,
                 d_ff=16, n_prototypes=20, n_layers=2, description="toy")
    assert all(not p.requires_grad for p in model.parameters())
    series = synthetic_series(600)
    x, y = windows(series, 48, 12, step=4)
    trainable = [p for p in tl.parameters() if p.requires_grad]
    opt = torch.optim.Adam(trainable, lr=1e-2)

    def held_out_loss():
        with torch.no_grad():
            return F.mse_loss(tl(x[-32:]), y[-32:]).item()

    before = held_out_loss()
    for step in range(20):
        idx = torch.arange(step * 8, step * 8 + 8) % (len(x) - 32)
        loss = F.mse_loss(tl(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert all(p.grad is None for p in model.parameters())
    after = held_out_loss()
    assert after < 0.7 * before, (before, after)
    with pytest.raises(ValueError):
        tl(torch.randn(2, 40))


def test_timellm_prompts_are_left_padded_so_the_patches_follow_every_prompt():
    model = tiny_llama()
    tl = TimeLLM(model, CharTokenizer(), seq_len=48, pred_len=12, patch_len=8, stride=4, d_model=16, n_heads=4,
                 d_ff=16, n_prototypes=20, n_layers=2, description="toy")
    x = torch.randn(4, 48, generator=torch.Generator().manual_seed(0)) * torch.tensor([[1.0], [10.0], [0.1], [100.0]])
    ids = [CharTokenizer().encode(p) for p in series_prompt(x, 12, "toy")]
    assert len({len(i) for i in ids}) > 1  # prompts of different lengths: padding is needed
    with torch.no_grad():
        emb, mask = tl.prompt_embeddings(x)
        for row, prompt in enumerate(ids):
            assert mask[row].tolist() == [False] * (mask.shape[1] - len(prompt)) + [True] * len(prompt)
            torch.testing.assert_close(emb[row, mask.shape[1] - len(prompt):], model.tok_emb(torch.tensor(prompt)))


def test_sizes_out_of_range_name_the_argument_and_the_range():
    q, k, v = qkv(L=10)
    with pytest.raises(ValueError, match=r"^u \(active queries, at most L_Q\) must be an int in \[1, 10\], got 11$"):
        prob_sparse_attention(q, k, v, u=11)
    with pytest.raises(ValueError, match="^n_sample must be a positive int, got 0$"):
        sample_keys(4, 4, 0)
    with pytest.raises(ValueError, match="^length must be a positive int, got 0$"):
        default_u(0)
    with pytest.raises(ValueError, match="^stride must be a positive int, got 0$"):
        PatchEmbedding(8, 0, 4)
    with pytest.raises(ValueError, match=r"^period \(at most the window length\) must be an int in \[1, 5\], got 6$"):
        seasonal_naive(torch.zeros(2, 5), 3, 6)


def test_baselines_and_windows():
    series = torch.arange(20.0)
    x, y = windows(series, 5, 2, step=3)
    assert x.shape == (5, 5) and y.shape == (5, 2) and y[1].tolist() == [8.0, 9.0]
    assert torch.equal(last_value(x, 2), x[:, -1:].repeat(1, 2))
    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(200, 5, generator=g), torch.randn(5, 2, generator=g)
    lin = LinearForecaster(ridge=0.0).fit(x, x @ w + 0.5)  # an exact linear relation is recovered
    torch.testing.assert_close(lin.weight, torch.cat([w, torch.full((1, 2), 0.5)]), rtol=0, atol=1e-5)
    assert mae(lin(x), x @ w + 0.5) < 1e-5 and mse(last_value(x, 2), x[:, -1:].repeat(1, 2)) == 0.0
    assert torch.equal(synthetic_series(100, seed=1), synthetic_series(100, seed=1))


@pytest.mark.slow
def test_timellm_on_smollm2_forward(smollm2_model, smollm2_tokenizer):
    flags = [p.requires_grad for p in smollm2_model.parameters()]
    try:
        tl = TimeLLM(smollm2_model, smollm2_tokenizer, seq_len=96, pred_len=24, n_layers=2, n_words=4096)
        x = synthetic_series(200)[None, :96].repeat(2, 1)
        y = tl(x)
        assert y.shape == (2, 24) and torch.isfinite(y).all()
        y.sum().backward()
        assert tl.mapping.weight.grad is not None and smollm2_model.tok_emb.weight.grad is None
    finally:
        for p, f in zip(smollm2_model.parameters(), flags, strict=True):
            p.requires_grad_(f)
