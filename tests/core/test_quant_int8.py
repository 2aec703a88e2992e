"""LLM.int8(): equals the fp32 matmul within its documented bound; beats plain int8 on planted outlier columns."""

import torch

from lmkit.quant.base import QuantLinear
from lmkit.quant.int8_matmul import (
    error_bound,
    int8_mm,
    int8_vectorwise_matmul,
    llm_int8_matmul,
    outlier_columns,
    quantize_int8,
    quantize_rowwise,
)


def _planted(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 384, generator=g)
    # a weight whose rows are exactly int8-representable, so the error left is the activations' (the paper's topic)
    w = torch.randint(-127, 128, (192, 384), generator=g).float()
    w[:, 0] = 127
    w = w * (0.05 / 127)
    cols = [5, 77, 200, 301]
    x[:, cols] *= 30.0  # outlier feature dimensions, as in the paper (magnitudes up to ~60+)
    return x, w, cols


def test_int8_product_is_exact_integer_arithmetic():
    g = torch.Generator().manual_seed(0)
    a = torch.randint(-127, 128, (8, 4096), generator=g, dtype=torch.int8)
    b = torch.randint(-127, 128, (5, 4096), generator=g, dtype=torch.int8)
    assert torch.equal(int8_mm(a, b).long(), a.long() @ b.long().t())


def test_outlier_detection():
    x, _, cols = _planted()
    assert torch.equal(outlier_columns(x).nonzero().reshape(-1), torch.tensor(cols))


def test_llm_int8_within_bound_and_far_better_than_plain_int8():
    x, w, _ = _planted()
    exact = x.double() @ w.double().t()
    qw, cw = quantize_rowwise(w)
    y = llm_int8_matmul(x, qw, cw)
    plain = int8_vectorwise_matmul(x, qw, cw)
    assert ((y.double() - exact).abs() <= error_bound(x, w)).all()
    assert ((plain.double() - exact).abs() <= error_bound(x, w, threshold=0)).all()
    err_llm = (y.double() - exact).pow(2).mean().sqrt()
    err_plain = (plain.double() - exact).pow(2).mean().sqrt()
    assert err_llm < 0.1 * err_plain


def test_without_outliers_both_agree():
    g = torch.Generator().manual_seed(1)
    x, w = torch.randn(16, 256, generator=g), torch.randn(64, 256, generator=g)
    x = x.clamp(-5, 5)
    qw, cw = quantize_rowwise(w)
    assert torch.equal(llm_int8_matmul(x, qw, cw), int8_vectorwise_matmul(x, qw, cw))


def test_quant_linear_int8():
    x, w, _ = _planted()
    lin = QuantLinear(quantize_int8(w), bias=torch.ones(192))
    y = lin(x.reshape(4, 8, 384))
    assert y.shape == (4, 8, 192)
    torch.testing.assert_close(y.reshape(32, 192), x @ w.t() + 1, atol=0.15, rtol=0.02)
    assert lin.weight_nbytes() == 192 * 384 + 192 * 4
