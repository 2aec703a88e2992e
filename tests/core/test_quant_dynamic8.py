"""Block-wise dynamic 8-bit quantization and AdamW8bit, against torch.optim.AdamW and the paper's numbers."""

import math

import pytest
import torch
from torch import nn

from lmkit.quant.absmax import quantize_absmax
from lmkit.quant.dynamic8 import (
    AdamW8bit,
    StableEmbedding,
    create_dynamic_map,
    dequantize_blockwise,
    quantize_blockwise,
)


def test_dynamic_map_shape():
    signed, unsigned = create_dynamic_map(True), create_dynamic_map(False)
    for m in (signed, unsigned):
        assert m.numel() == 256 and torch.equal(m, m.sort().values) and m.unique().numel() == 256
        assert m.max() == 1.0 and (m == 0).sum() == 1
    assert (signed < 0).sum() == 127 and unsigned.min() == 0
    # 7 decades of dynamic range: the smallest positive value is ~1e-7 * 0.55 (signed) / 0.325 (unsigned)
    assert signed[signed > 0].min().item() == pytest.approx(0.55e-6, rel=1e-6)
    assert unsigned[unsigned > 0].min().item() == pytest.approx(0.325e-6, rel=1e-6)


def test_round_trip_relative_error_and_small_values():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5000, generator=g) * torch.logspace(-4, 0, 5000)  # values over 4 decades
    q = quantize_blockwise(x)
    assert q.tensors["codes"].dtype == torch.uint8 and q.tensors["absmax"].numel() == 8  # 15000 -> 8 blocks of 2048
    y = dequantize_blockwise(q)
    assert y.shape == x.shape
    blocks_max = torch.nn.functional.pad(x.reshape(-1), (0, 8 * 2048 - 15000)).view(8, 2048).abs().amax(1)
    tol = blocks_max.repeat_interleave(2048)[:15000].view(3, 5000)
    rel = ((y - x).abs() / tol)
    assert rel.max() <= (create_dynamic_map()[1:] - create_dynamic_map()[:-1]).max() / 2 + 1e-6  # half the widest gap
    # small values keep ~2 significant digits; linear (absmax) int8 with the same blocks flushes them to zero
    small = x.abs() < tol * 1e-2
    assert ((y - x).abs()[small] / x.abs()[small]).median() < 0.1
    flat = x.reshape(-1)[: 7 * 2048].view(7, 2048)
    lin = quantize_absmax(flat, 8, "row").dequantize()
    small_flat = flat.abs() < flat.abs().amax(1, keepdim=True) * 1e-2
    assert ((lin - flat).abs()[small_flat] / flat.abs()[small_flat]).median() > 0.3


def test_padding_and_errors():
    x = torch.randn(1000)
    q = quantize_blockwise(x, block_size=256)
    assert q.tensors["codes"].numel() == 1024 and dequantize_blockwise(q).shape == (1000,)
    with pytest.raises(ValueError, match="NaN or inf"):
        quantize_blockwise(torch.tensor([0.0, float("inf")]))
    with pytest.raises(ValueError, match="negative"):
        quantize_blockwise(torch.tensor([-1.0]), signed=False)


def _toy_lm(seed):
    torch.manual_seed(seed)
    return nn.Sequential(StableEmbedding(64, 64), nn.Flatten(), nn.Linear(4 * 64, 256), nn.GELU(), nn.Linear(256, 64))


def _train(model, opt, steps=150):
    g = torch.Generator().manual_seed(1)
    x = torch.randint(0, 64, (512, 4), generator=g)
    y = (x[:, 0] * 7 + x[:, 1] * 3 + x[:, 2]) % 64  # a learnable next-token rule
    losses = []
    for i in range(steps):
        idx = torch.arange(i * 64, (i + 1) * 64) % 512
        loss = nn.functional.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return sum(losses[-20:]) / 20


def test_fp32_path_is_exactly_torch_adamw():
    a, b = _toy_lm(0), _toy_lm(0)
    ref = torch.optim.AdamW(a.parameters(), lr=3e-3, weight_decay=0.01)
    ours = AdamW8bit(b.parameters(), lr=3e-3, weight_decay=0.01, min_8bit_size=10**9)  # nothing in 8 bits
    assert _train(a, ref, 20) == _train(b, ours, 20)
    for p, q in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(p, q)


def test_8bit_adamw_trains_like_fp32_adamw():
    ref_model, model = _toy_lm(0), _toy_lm(0)
    loss_ref = _train(ref_model, torch.optim.AdamW(ref_model.parameters(), lr=3e-3))
    opt = AdamW8bit(model.parameters(), lr=3e-3)
    loss_8bit = _train(model, opt)
    assert loss_ref < 0.5 * math.log(64)  # it really learned (chance level is ln 64)
    assert abs(loss_8bit - loss_ref) < 0.05 * loss_ref + 0.02
    # memory: the two big Linear layers have 8-bit states (~2 bytes/param); embedding + small tensors float32
    n8 = sum(p.numel() for p in model.parameters() if p.numel() >= 4096 and getattr(p, "optim_bits", 8) != 32)
    n32 = sum(p.numel() for p in model.parameters()) - n8
    expected = 2 * n8 + 2 * 4 * sum(-(-p.numel() // 2048) for p in model.parameters() if p.numel() >= 4096
                                     and getattr(p, "optim_bits", 8) != 32) + 8 * n32
    assert opt.state_nbytes() == expected
    assert isinstance(opt.state[model[0].weight]["exp_avg"], torch.Tensor)  # stable embedding stays 32-bit
