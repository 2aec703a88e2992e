"""GPTQ (lmkit.quant.gptq) and the OBQ reference (lmkit.quant.obq).

References nobody here wrote: round-to-nearest from lmkit.quant.absmax (QUANT-I), the unblocked algorithm written
out below straight from the paper (explicit Gaussian elimination of the inverse Hessian, no Cholesky, no lazy
batches), real SmolLM2 weights dequantized by gguf-py, and the paper's claims (GPTQ < RTN; OBQ ~ GPTQ).
"""

from __future__ import annotations

import time

import gguf
import numpy as np
import pytest
import torch

from lmkit.quant.absmax import dequantize_grid, minmax_params, quantize_to_grid
from lmkit.quant.base import QuantLinear
from lmkit.quant.gptq import gptq_quantize, layer_error, prepare_hessian
from lmkit.quant.obq import obq_quantize
from lmkit.quant.rtn import InputStats, rtn_fake_quantize, rtn_groupwise


def unblocked_gptq(weight, hessian, bits, group, symmetric, damp=0.01):
    """The paper's algorithm without lazy batches or Cholesky: one column at a time, inverse updated by elimination."""
    W, H = prepare_hessian(weight, hessian, damp)
    H_inv = torch.linalg.inv(H)
    Q = torch.zeros_like(W)
    codes = torch.zeros_like(W)
    for j in range(W.shape[1]):
        if j % group == 0:
            s, z = minmax_params(W[:, j : j + group], bits, symmetric)
        c = quantize_to_grid(W[:, j : j + 1], s, z, bits, symmetric)
        q = dequantize_grid(c, s, z)[:, 0]
        err = (W[:, j] - q) / H_inv[j, j]
        W[:, j:] -= err[:, None] * H_inv[j, j:][None, :]
        Q[:, j], codes[:, j] = q, c[:, 0]
        H_inv = H_inv - H_inv[:, j : j + 1] @ H_inv[j : j + 1, :] / H_inv[j, j]
    return Q, codes


def correlated_inputs(n, d, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(n, d, generator=g, dtype=dtype) @ torch.randn(d, d, generator=g, dtype=dtype) * 0.1  # (n, d)
    X[:, 3] = 0.0  # a dead input
    return X


@pytest.mark.parametrize(
    "group,block,symmetric",
    [(64, 128, False), (128, 128, True), (96, 80, False), (None, 32, False), (40, 1, True)],
)
def test_lazy_batches_and_cholesky_equal_the_unblocked_algorithm(group, block, symmetric):
    X = correlated_inputs(1500, 256)
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(48, 256, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    res = gptq_quantize(W, H, bits=3, group_size=group, symmetric=symmetric, block_size=block)
    ref, ref_codes = unblocked_gptq(W, H, 3, group or 256, symmetric)
    assert torch.equal(res.codes.double(), ref_codes)
    torch.testing.assert_close(res.weight, ref, rtol=0, atol=1e-12)


def test_diagonal_hessian_reduces_to_round_to_nearest():
    # Uncorrelated inputs: no weight can compensate for another, so GPTQ must be RTN exactly.
    W = torch.randn(32, 256, generator=torch.Generator().manual_seed(2))
    H = torch.diag(torch.rand(256, generator=torch.Generator().manual_seed(3)) + 0.5)
    res = gptq_quantize(W, H, bits=4, group_size=64, damp=0.0)
    torch.testing.assert_close(res.weight, rtn_fake_quantize(W, bits=4, group_size=64), rtol=0, atol=0)


def test_singular_hessian_dead_inputs_and_determinism():
    X = correlated_inputs(100, 256, dtype=torch.float32)  # fewer samples than inputs: H has rank <= 100
    X[:, 10] = X[:, 11]  # duplicated input: exactly singular even with more data
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(64, 256, generator=torch.Generator().manual_seed(4))
    a = gptq_quantize(W, H, bits=3, group_size=64, act_order=True)
    b = gptq_quantize(W, H, bits=3, group_size=64, act_order=True)
    assert torch.isfinite(a.weight).all()
    assert torch.equal(a.weight, b.weight) and torch.equal(a.codes, b.codes)  # deterministic
    assert torch.all(a.weight[:, 3] == 0)  # the dead input's column is dropped to 0, like the reference code
    assert layer_error(W, a.weight, H) < layer_error(W, rtn_groupwise(W, 3, 64).weight, H)
    with pytest.raises(ValueError, match="raise the dampening"):  # without dampening the factorisation fails
        gptq_quantize(W, H, bits=3, damp=0.0)


def test_packed_form_and_bad_inputs():
    X = correlated_inputs(500, 192, dtype=torch.float32)
    H = 2 * X.T @ X / X.shape[0]
    W = torch.randn(32, 192, generator=torch.Generator().manual_seed(5))
    for bits, sym in [(4, False), (3, True), (8, False)]:
        res = gptq_quantize(W, H, bits=bits, group_size=128, symmetric=sym, act_order=True)  # ragged last group
        layer = QuantLinear(res.to_quantized_tensor())
        torch.testing.assert_close(layer.qweight.dequantize(), res.weight)
        x = torch.randn(5, 192)
        torch.testing.assert_close(layer(x), x @ res.weight.T)
        assert len(torch.unique(res.codes)) <= 2**bits
    with pytest.raises(ValueError, match="bits"):
        gptq_quantize(W, H, bits=9)
    with pytest.raises(ValueError, match="hessian"):
        gptq_quantize(W, H[:10, :10])
    with pytest.raises(ValueError, match="last dimension"):
        InputStats(192).add(torch.zeros(3, 7))


def test_every_quantizer_states_the_same_rules_in_the_same_words():
    from lmkit.quant.absmax import quantize_int
    from lmkit.quant.awq import awq_quantize, search_clip
    from lmkit.quant.driver import QuantConfig
    from lmkit.quant.int8_matmul import quantize_int8
    from lmkit.quant.nf4 import nf_code_values

    W, H = torch.randn(4, 32), torch.eye(32)
    for run in (lambda b: gptq_quantize(W, H, bits=b), lambda b: obq_quantize(W, H, bits=b),
                lambda b: rtn_groupwise(W, bits=b), lambda b: quantize_int(W, b), nf_code_values,
                lambda b: QuantConfig(bits=b)):
        for bits in (1, 9, 4.0, True):
            with pytest.raises(ValueError, match=rf"^bits must be an integer in 2..8, got {bits!r}$"):
                run(bits)
    for run in (lambda g: gptq_quantize(W, H, group_size=g), lambda g: rtn_groupwise(W, group_size=g),
                lambda g: search_clip(W, H, group_size=g)):
        for group in (0, -8, 16.0):
            with pytest.raises(ValueError, match=rf"^group_size must be a positive int, got {group!r}$"):
                run(group)
    with pytest.raises(ValueError, match="^block_size must be a positive int, got 0$"):
        gptq_quantize(W, H, block_size=0)
    for run in (lambda w: gptq_quantize(w, H), lambda w: obq_quantize(w, H), rtn_groupwise, quantize_int8,
                lambda w: awq_quantize(w, H, torch.ones(32))):
        with pytest.raises(ValueError, match=r"^weight must be a 2-D \(out, in\) matrix, got shape \(32,\)$"):
            run(W[0])
    with pytest.raises(ValueError, match=r"^method must be one of \('rtn', 'gptq', 'awq'\), got 'hqq'$"):
        QuantConfig(method="hqq")


def test_input_stats_is_the_mean_hessian():
    X = correlated_inputs(300, 64, dtype=torch.float32)
    st = InputStats(64)
    for chunk in X.split(70):
        st.add(chunk[None])  # (1, n, d): any leading shape
    torch.testing.assert_close(st.hessian, 2 * X.T @ X / 300, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(st.mean_abs, X.abs().mean(0))


@pytest.fixture(scope="module")
def smollm2_layer0(smollm2_path):
    """Real layer-0 weights and real-ish inputs: RMS-normed token embeddings, and the SwiGLU output for down_proj."""
    reader = gguf.GGUFReader(smollm2_path)
    tensors = {t.name: t for t in reader.tensors}

    def get(name):
        t = tensors[name]
        return torch.from_numpy(np.array(gguf.quants.dequantize(t.data, t.tensor_type))).float()

    ids = torch.randint(17, 49152, (2048,), generator=torch.Generator().manual_seed(0))
    x = get("token_embd.weight")[ids]  # (2048, 576)
    x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * get("blk.0.attn_norm.weight")
    gate, up, down = get("blk.0.ffn_gate.weight"), get("blk.0.ffn_up.weight"), get("blk.0.ffn_down.weight")
    h = torch.nn.functional.silu(x @ gate.T) * (x @ up.T)  # (2048, 1536)
    q, v = get("blk.0.attn_q.weight"), get("blk.0.attn_v.weight")
    return {"q_proj": (q, x), "v_proj": (v, x), "down_proj": (down, h)}


@pytest.mark.slow
@pytest.mark.parametrize("bits", [4, 3])
def test_gptq_beats_rtn_on_real_smollm2_layers(smollm2_layer0, bits):
    for name, (W, X) in smollm2_layer0.items():
        st = InputStats(X.shape[1])
        st.add(X)
        rtn = layer_error(W, rtn_groupwise(W, bits, 128).weight, st.hessian)
        gptq = layer_error(W, gptq_quantize(W, st.hessian, bits, 128).weight, st.hessian)
        direct = ((X @ (W - gptq_quantize(W, st.hessian, bits, 128).weight).T) ** 2).sum() / X.shape[0]
        torch.testing.assert_close(torch.tensor(gptq), direct, rtol=1e-3, atol=0)  # ||WX - QX||^2 / N
        print(f"{name} {bits}-bit g128: ||WX-QX||^2/N RTN {rtn:.4f} GPTQ {gptq:.4f}")
        assert gptq < 0.7 * rtn


@pytest.mark.slow
def test_obq_and_gptq_reach_similar_errors(smollm2_layer0):
    W, X = smollm2_layer0["down_proj"]
    W, X = W[:48, :128], X[:, :128]  # a small layer: OBQ keeps one inverse Hessian per row
    st = InputStats(128)
    st.add(X)
    t0 = time.perf_counter()
    obq = layer_error(W, obq_quantize(W, st.hessian, bits=3), st.hessian)
    t1 = time.perf_counter()
    gptq = layer_error(W, gptq_quantize(W, st.hessian, bits=3, group_size=None).weight, st.hessian)
    t2 = time.perf_counter()
    rtn = layer_error(W, rtn_groupwise(W, 3, None).weight, st.hessian)
    print(f"3-bit 48x128: RTN {rtn:.4g}, OBQ {obq:.4g} in {t1 - t0:.2f} s, GPTQ {gptq:.4g} in {t2 - t1:.3f} s")
    assert obq < 0.7 * rtn and gptq < 0.7 * rtn
    assert 0.75 < gptq / obq < 1.33


def tiny_model(seed=0, n_kv_heads=2):
    """A small random LLaMA-style lmkit Transformer with a few loud embedding channels (like real activations)."""
    from lmkit.transformer.model import Transformer, TransformerConfig

    torch.manual_seed(seed)
    cfg = TransformerConfig.preset("llama", vocab_size=96, d_model=64, n_layers=2, n_heads=4, n_kv_heads=n_kv_heads,
                                   d_ff=128)
    model = Transformer(cfg).eval()
    with torch.no_grad():
        model.tok_emb.weight[:, :4] *= 8.0
    return model


@torch.no_grad()
def test_driver_gptq_beats_rtn_and_saves_and_loads(tmp_path):
    from lmkit.quant.driver import QuantConfig, calibration_batch, load_quantized, quantize_model, save_quantized

    ids = calibration_batch(torch.randint(0, 96, (2000,), generator=torch.Generator().manual_seed(0)), 8, 32)
    reference = tiny_model()(ids).logits
    errors = {}
    for method in ("rtn", "gptq"):
        model = tiny_model()
        results = quantize_model(model, ids, QuantConfig(method=method, bits=3, group_size=32), progress=False)
        assert len(results) == 2 * 7  # every projection of both blocks
        errors[method] = float(((model(ids).logits - reference) ** 2).mean())
    assert errors["gptq"] < errors["rtn"]

    save_quantized(tmp_path / "q.safetensors", model, results, QuantConfig(method="gptq", bits=3, group_size=32))
    for packed in (False, True):
        fresh = tiny_model(seed=1)  # other random weights: everything must come from the file (and the base embedding)
        fresh.tok_emb.load_state_dict(model.tok_emb.state_dict())
        fresh.lm_head.load_state_dict(model.lm_head.state_dict())
        config = load_quantized(tmp_path / "q.safetensors", fresh, packed=packed)
        assert config.method == "gptq" and config.bits == 3
        torch.testing.assert_close(fresh(ids).logits, model(ids).logits, rtol=1e-5, atol=1e-5)
    assert isinstance(fresh.blocks[0].attn.q_proj, QuantLinear)
