"""NF4: code values vs the published constants, round trip, double quantization's memory (QLoRA paper)."""

import pytest
import torch

from lmkit.quant.absmax import quantize_absmax
from lmkit.quant.nf4 import PUBLISHED_NF4, dequantize_nf4, nf4_absmax, nf4_code_values, quantize_nf4


def test_code_values_match_published_constants():
    v = nf4_code_values()
    torch.testing.assert_close(v, torch.tensor(PUBLISHED_NF4), atol=1e-6, rtol=0)
    assert (v == 0).sum() == 1 and v.min() == -1 and v.max() == 1


def test_nf4_beats_uniform_int4_on_normal_weights():
    # the point of NF4: for normally distributed weights, quantile levels beat evenly spaced int4 levels
    w = torch.randn(256, 256, generator=torch.Generator().manual_seed(0))
    nf4 = (dequantize_nf4(quantize_nf4(w, double_quant=False)) - w).pow(2).mean()
    int4 = (quantize_absmax(w, 4, "block", 64).dequantize() - w).pow(2).mean()
    assert nf4 < 0.8 * int4


@pytest.mark.parametrize("double_quant", [False, True])
def test_round_trip(double_quant):
    w = torch.randn(96, 200, generator=torch.Generator().manual_seed(0)) * 0.02
    q = quantize_nf4(w, double_quant=double_quant)
    y = dequantize_nf4(q)
    assert y.shape == w.shape
    # error per value <= half the widest NF4 gap (between -1 and -0.696) times its block absmax,
    # plus (with double quantization) the error of that absmax itself
    blocks = torch.nn.functional.pad(w.reshape(-1), (0, (-w.numel()) % 64)).view(-1, 64).abs().amax(1)
    half_gap = (nf4_code_values()[1:] - nf4_code_values()[:-1]).max() / 2
    bound = half_gap * blocks + (nf4_absmax(q) - blocks).abs()
    bound = bound.repeat_interleave(64)[: w.numel()].view_as(w)
    assert ((y - w).abs() <= bound + 1e-6).all()
    if double_quant:
        exact = quantize_nf4(w, double_quant=False).tensors["absmax"]
        assert (nf4_absmax(q) - exact).abs().max() < 0.01 * exact.max()


def test_double_quant_memory_matches_paper():
    w = torch.randn(4096, 1024)
    # QLoRA: scales cost 32/64 = 0.5 bit per weight; double quantization brings them to 8/64 + 32/(64*256) = 0.127
    assert quantize_nf4(w, double_quant=False).bits_per_weight() == pytest.approx(4.5)
    assert quantize_nf4(w).bits_per_weight() == pytest.approx(4 + 8 / 64 + 32 / (64 * 256))


def test_padding_and_errors():
    w = torch.randn(7, 9)  # 63 values: padded to one block of 64
    assert dequantize_nf4(quantize_nf4(w)).shape == (7, 9)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_nf4(torch.tensor([float("nan"), 1.0]))
