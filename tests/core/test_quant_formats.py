"""FP32 / BF16 / FP16 facts, computed from the bit layout, against torch.finfo (IEEE-754 as implemented by PyTorch)."""

import pytest
import torch

from lmkit.quant.formats import BF16, FORMATS, FP16, FP32, float_bits


@pytest.mark.parametrize("fmt", FORMATS, ids=lambda f: f.name)
def test_layout_matches_finfo(fmt):
    info = torch.finfo(fmt.dtype)
    assert fmt.bits == info.bits
    assert fmt.max == info.max
    assert fmt.eps == info.eps
    assert fmt.smallest_normal == info.tiny
    assert fmt.smallest_subnormal == info.smallest_normal * info.eps


def test_bf16_has_fp32_range_but_fp16_does_not():
    # The notes' slip: BF16 keeps FP32's 8 exponent bits, so its range is FP32's, not FP16's.
    assert BF16.exponent_bits == FP32.exponent_bits == 8
    assert BF16.max == pytest.approx(3.3895e38, rel=1e-4) and FP16.max == 65504.0
    big = torch.tensor([1e5, 3e38])
    assert torch.isfinite(BF16.round(big)).all()
    assert torch.isinf(FP16.round(big)).all()
    # ... while BF16 is far less precise: 1 + 2^-8 rounds back to 1 in BF16 but not in FP16
    x = torch.tensor([1 + 2**-8])
    assert BF16.round(x).item() == 1.0 and FP16.round(x).item() == 1 + 2**-8


def test_bit_patterns():
    assert float_bits(1.0, FP32) == "0 01111111 " + "0" * 23
    assert float_bits(-2.0, BF16) == "1 10000000 0000000"
    assert float_bits(65504.0, FP16) == "0 11110 1111111111"
