"""Absmax / zero-point / group-wise RTN: round-trip error bounds and the packed storage."""

import pytest
import torch

from lmkit.quant.absmax import (
    GRANULARITIES,
    quantize_absmax,
    quantize_int,
    quantize_zeropoint,
)
from lmkit.quant.base import QuantLinear, quantize_linears
from lmkit.quant.rtn import rtn_fake_quantize, rtn_quantize


@pytest.fixture
def w():
    return torch.randn(48, 128, generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("granularity", GRANULARITIES)
@pytest.mark.parametrize("bits", [8, 4, 3])
@pytest.mark.parametrize("symmetric", [True, False])
def test_round_trip_within_half_a_step(w, granularity, bits, symmetric):
    q = quantize_int(w, bits, symmetric, granularity, block_size=32)
    err = (q.dequantize() - w).abs()
    scale = q.tensors["scale"]
    assert err.max() <= scale.max() / 2 + 1e-6
    if granularity == "row":  # each row's error is bounded by that row's own step
        assert (err.amax(dim=1) <= scale / 2 + 1e-6).all()


def test_finer_granularity_is_more_accurate(w):
    w = w * torch.logspace(-2, 0, 48)[:, None]  # rows of very different magnitude
    errs = [(quantize_absmax(w, 4, g, 32).dequantize() - w).pow(2).mean() for g in ("tensor", "row", "block")]
    assert errs[0] > errs[1] > errs[2]


def test_known_values():
    x = torch.tensor([[-1.0, 0.0, 0.5, 2.0]])
    q = quantize_absmax(x, 8)
    assert torch.equal(q.tensors["codes"], torch.tensor([-64, 0, 32, 127], dtype=torch.int8))  # round(127 x / 2)
    z = quantize_zeropoint(x, 8)
    assert z.tensors["zero"].item() == 85  # round(1 / (3 / 255))
    assert (z.dequantize() - x).abs().max() <= 3 / 255 / 2 + 1e-7


def test_int4_is_packed_two_per_byte(w):
    q = quantize_absmax(w, 4, "block", 64)
    assert q.tensors["codes"].dtype == torch.uint8 and q.tensors["codes"].numel() == w.numel() // 2
    assert q.bits_per_weight() == pytest.approx(4 + 32 / 64)


def test_rtn_fake_quant_equals_dequantized_rtn(w):
    for sym in (True, False):
        assert torch.equal(rtn_fake_quantize(w, 4, 32, sym), rtn_quantize(w, 4, 32, sym).dequantize())


def test_zero_point_represents_zero_exactly(w):
    w = w.clone()
    w[:, ::7] = 0
    assert (rtn_fake_quantize(w, 3, 64)[:, ::7] == 0).all()


def test_errors(w):
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_absmax(torch.tensor([1.0, float("nan")]))
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_absmax(torch.tensor([1.0, float("inf")]))
    with pytest.raises(ValueError, match="not divisible"):
        quantize_absmax(w, 8, "block", 100)
    with pytest.raises(ValueError, match="bits"):
        quantize_absmax(w, 9)
    with pytest.raises(TypeError):
        quantize_absmax(torch.ones(4, dtype=torch.int32))


def test_quant_linear_runs_from_packed_form(w):
    lin = torch.nn.Linear(128, 48)
    model = torch.nn.Sequential(lin)
    x = torch.randn(5, 128)
    ref = lin(x)
    quantize_linears(model, lambda t: quantize_absmax(t, 8, "row"), skip=())
    assert isinstance(model[0], QuantLinear)
    assert model[0].weight_nbytes() == 48 * 128 + 48 * 4  # int8 codes + float32 row scales
    torch.testing.assert_close(model(x), ref, atol=0.02, rtol=0.02)
