"""Absmax / zero-point / group-wise RTN: round-trip error bounds and the packed storage."""

import pytest
import torch

from lmkit.quant.absmax import (
    GRANULARITIES,
    minmax_params,
    quantize_absmax,
    quantize_int,
    quantize_to_grid,
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


def test_minmax_params_by_hand():
    """Groups along the last dim of any shape; the zero-point range is widened to contain 0; all zeros -> scale 1."""
    x = torch.tensor([[[-1.0, 0.0, 0.5, 2.0], [0.5, 1.0, 2.0, 3.0]],
                      [[-3.0, -2.0, -1.5, -0.5], [0.0, 0.0, 0.0, 0.0]]])  # (2, 2, 4): four groups of 4
    scale, zero = minmax_params(x, 4, symmetric=False)  # s = (max(x, 0) - min(x, 0)) / 15, z = round(-min(x, 0) / s)
    assert scale.shape == zero.shape == (2, 2, 1)
    torch.testing.assert_close(scale.flatten(), torch.tensor([3 / 15, 3 / 15, 3 / 15, 1.0]))
    assert zero.flatten().tolist() == [5.0, 0.0, 15.0, 0.0]
    scale, zero = minmax_params(x, 4, symmetric=True)  # s = max|x| / 7
    torch.testing.assert_close(scale.flatten(), torch.tensor([2 / 7, 3 / 7, 3 / 7, 1.0]))
    assert zero.eq(0).all()


def test_grid_saturates_at_the_code_range():
    """A scale below max|x| / q_max (as a clip search picks) must clamp the codes, never leave the code range."""
    x = torch.tensor([-100.0, -7.4, 0.4, 7.6, 100.0])
    one = torch.tensor(1.0)
    assert quantize_to_grid(x, one, torch.tensor(0.0), 4, True).tolist() == [-7, -7, 0, 7, 7]
    assert quantize_to_grid(x, one, torch.tensor(8.0), 4, False).tolist() == [0, 1, 8, 15, 15]


def test_defaults_are_int8_absmax_per_tensor(w):
    q = quantize_int(w)
    assert q.meta == {"bits": 8, "symmetric": True, "granularity": "tensor", "block_size": 64}
    scale = w.abs().max() / 127  # one scale for the whole tensor
    torch.testing.assert_close(q.tensors["scale"], scale.reshape(1))
    assert torch.equal(q.tensors["codes"], torch.round(w / scale).to(torch.int8).reshape(-1))
    for fn in (quantize_absmax, quantize_zeropoint):
        assert fn(w).meta["bits"] == 8 and fn(w).meta["granularity"] == "tensor"
        # block_size defaults to 64: a 128-wide row holds two blocks
        assert fn(w, granularity="block").tensors["scale"].numel() == 48 * 2
        assert fn(w, 4, "block", 32).tensors["scale"].numel() == 48 * 4
    assert quantize_absmax(w).meta["symmetric"] is True and quantize_zeropoint(w).meta["symmetric"] is False


def test_storage_is_packed_codes_float32_scales_uint8_zeros(w):
    q = quantize_zeropoint(w, 4, "block", 32)
    assert {k: t.dtype for k, t in q.tensors.items()} == {"codes": torch.uint8, "scale": torch.float32,
                                                          "zero": torch.uint8}
    assert q.bits_per_weight() == 4 + (32 + 8) / 32  # 4-bit codes + a float32 scale and a byte zero per 32


def test_block_size_one_and_two_bits(w):
    q = quantize_absmax(w, 8, "block", 1)  # every weight its own scale: codes +-127, reconstruction exact
    assert q.tensors["codes"].abs().eq(127).all()
    torch.testing.assert_close(q.dequantize(), w, rtol=1e-6, atol=0)
    q2 = quantize_int(w, 2, True, "row")  # 2 bits, q_max = 1: codes in {-1, 0, 1}
    assert set(q2.tensors["codes"].unique().tolist()) == {-1, 0, 1}


def test_dequantize_runs_where_the_codes_live(w):
    # the meta device stands in for a GPU: every tensor dequantization creates must follow the codes
    for sym, bits in ((True, 8), (True, 4), (False, 8), (False, 4)):
        out = quantize_int(w, bits, sym, "row").to("meta").dequantize()
        assert out.device.type == "meta" and out.shape == w.shape


def test_errors_name_the_problem(w):
    with pytest.raises(ValueError, match="^weight contains NaN or inf"):
        quantize_int(torch.tensor([1.0, float("nan")]))
    for bad in (1, 9, 8.0):
        with pytest.raises(ValueError, match=rf"^bits must be an integer in 2..8, got {bad!r}$"):
            quantize_int(w, bad)
    with pytest.raises(ValueError, match=r"^granularity 'row' needs a 2-D \(out, in\) tensor, got shape \(2, 3, 4\)$"):
        quantize_int(torch.ones(2, 3, 4), granularity="row")
    with pytest.raises(ValueError, match=r"^granularity must be one of \('tensor', 'row', 'column', 'block'\), "
                                         r"got 'channel'$"):
        quantize_int(w, granularity="channel")
    for bad in (0, 100):
        with pytest.raises(ValueError, match=rf"^row length 128 is not divisible by block_size {bad}; pick a divisor "
                                             r"\(blocks never straddle rows\)$"):
            quantize_int(w, granularity="block", block_size=bad)
