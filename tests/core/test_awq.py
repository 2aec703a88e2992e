"""AWQ (lmkit.quant.awq): scale search, clipping search, and the paper's observations on real SmolLM2 layers.

References nobody here wrote: round-to-nearest from lmkit.quant.absmax (QUANT-I), the output error computed directly
from the activations, real SmolLM2 weights dequantized by gguf-py, and the AWQ paper's claims (protecting 1% salient
channels, chosen by activation magnitude, helps far more than 1% random channels; scaling beats RTN).
"""

from __future__ import annotations

import pytest
import torch
from test_gptq import correlated_inputs, smollm2_layer0  # noqa: F401  (a fixture)

from lmkit.quant.awq import apply_clip, awq_quantize, awq_scales, search_clip, search_scale
from lmkit.quant.gptq import layer_error
from lmkit.quant.rtn import InputStats, rtn_fake_quantize, rtn_groupwise


def test_scales_are_normalised_powers_of_the_activation_magnitude():
    mean_abs = torch.tensor([0.0, 0.1, 1.0, 4.0])
    torch.testing.assert_close(awq_scales(mean_abs, 0.0), torch.ones(4))
    s = awq_scales(mean_abs, 0.5)
    torch.testing.assert_close(s.max() * s.min(), torch.tensor(1.0))
    assert torch.all(s[1:] > s[:-1])  # larger activations, larger scales
    torch.testing.assert_close(s[3] / s[2], torch.tensor(2.0))  # (4 / 1)^0.5


def test_hessian_loss_is_the_output_error_and_alpha_zero_is_rtn():
    X = correlated_inputs(800, 128, dtype=torch.float32) * torch.linspace(0.1, 3, 128)  # uneven channel magnitudes
    st = InputStats(128)
    st.add(X)
    W = torch.randn(64, 128, generator=torch.Generator().manual_seed(0))
    search = search_scale([W], st.hessian, st.mean_abs, bits=3, group_size=64)
    rtn = rtn_fake_quantize(W, bits=3, group_size=64)
    direct = ((X @ (W - rtn).T) ** 2).sum() / X.shape[0]  # ||WX - QX||^2 / N from the activations themselves
    torch.testing.assert_close(torch.tensor(search.losses[0]), direct, rtol=1e-4, atol=0)
    assert search.alpha == search.alphas[min(range(len(search.losses)), key=search.losses.__getitem__)]
    w_hat = awq_quantize(W, st.hessian, search.scales, bits=3, group_size=64, clip=False).weight / search.scales
    torch.testing.assert_close(torch.tensor(layer_error(W, w_hat, st.hessian)), torch.tensor(min(search.losses)))
    assert min(search.losses) < search.losses[0]


def test_clipping_search_never_increases_the_group_error():
    X = correlated_inputs(500, 128, dtype=torch.float32)
    st = InputStats(128)
    st.add(X)
    W = torch.randn(32, 128, generator=torch.Generator().manual_seed(1))
    W[0, 5] = 8.0  # an outlier weight: clipping it should pay off
    t = search_clip(W, st.hessian, bits=3, group_size=64)  # (32, 2)
    top = W.abs().reshape(32, 2, 64).amax(-1)
    assert t.shape == (32, 2) and torch.all(t <= top) and torch.all(t >= 0.5 * top)
    clipped = rtn_groupwise(apply_clip(W, t, 64), 3, 64).weight
    plain = rtn_groupwise(W, 3, 64).weight
    for g in range(2):
        sl = slice(64 * g, 64 * (g + 1))
        h = st.hessian[sl, sl]
        e_clip = (((clipped - W)[:, sl] @ h) * (clipped - W)[:, sl]).sum(1)
        e_plain = (((plain - W)[:, sl] @ h) * (plain - W)[:, sl]).sum(1)
        assert torch.all(e_clip <= e_plain * (1 + 1e-5))
    assert t[0, 0] < top[0, 0]


def test_bad_inputs():
    with pytest.raises(ValueError, match="weights"):
        search_scale([torch.zeros(4, 5)], torch.eye(6), torch.ones(6))
    with pytest.raises(ValueError, match="n_grid"):
        search_scale([torch.zeros(4, 6)], torch.eye(6), torch.ones(6), n_grid=0)


@pytest.mark.slow
def test_salient_channels_and_awq_on_real_smollm2_layers(smollm2_layer0):  # noqa: F811
    for name, (W, X) in smollm2_layer0.items():
        st = InputStats(X.shape[1])
        st.add(X)
        rtn_w = rtn_groupwise(W, 3, 128).weight
        rtn = layer_error(W, rtn_w, st.hessian)
        # The paper's motivating experiment (its Table 1): keep 1% of the input channels in full precision.
        k = max(1, W.shape[1] // 100)
        salient = st.mean_abs.topk(k).indices
        random = torch.randperm(W.shape[1], generator=torch.Generator().manual_seed(0))[:k]
        errors = {}
        for label, keep in (("salient", salient), ("random", random)):
            mixed = rtn_w.clone()
            mixed[:, keep] = W[:, keep]
            errors[label] = layer_error(W, mixed, st.hessian)
        search = search_scale([W], st.hessian, st.mean_abs, bits=3, group_size=128)
        awq = layer_error(W, awq_quantize(W, st.hessian, search.scales, 3, 128).weight / search.scales, st.hessian)
        print(f"{name} 3-bit g128: RTN {rtn:.4f}, 1% salient FP {errors['salient']:.4f}, "
              f"1% random FP {errors['random']:.4f}, AWQ {awq:.4f} (alpha {search.alpha})")
        assert errors["salient"] < errors["random"]
        assert awq < 0.8 * rtn


@torch.no_grad()
@pytest.mark.parametrize("n_kv_heads", [2, None])  # grouped-query attention (no v->o fold) and plain multi-head
def test_driver_folds_scales_without_changing_the_function(n_kv_heads):
    from test_gptq import tiny_model

    from lmkit.quant.driver import QuantConfig, calibration_batch, quantize_model

    ids = calibration_batch(torch.randint(0, 96, (2000,), generator=torch.Generator().manual_seed(0)), 8, 32)
    reference = tiny_model(n_kv_heads=n_kv_heads)(ids).logits
    errors = {}
    for method in ("rtn", "awq"):
        model = tiny_model(n_kv_heads=n_kv_heads)
        quantize_model(model, ids, QuantConfig(method=method, bits=8, group_size=32), progress=False)
        errors[method] = float(((model(ids).logits - reference) ** 2).mean())
    # At 8 bits both are nearly exact: a wrong fold (a norm or a row not divided by s) would be far off.
    assert errors["awq"] < 2 * errors["rtn"] < 1e-3 * float(reference.var())
    assert not torch.allclose(model.blocks[0].attn_norm.weight, torch.ones(64))  # the scales went into the norm
    for method in ("rtn", "awq"):
        model = tiny_model(n_kv_heads=n_kv_heads)
        quantize_model(model, ids, QuantConfig(method=method, bits=3, group_size=32), progress=False)
        errors[method] = float(((model(ids).logits - reference) ** 2).mean())
    assert errors["awq"] < errors["rtn"]
