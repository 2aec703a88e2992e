"""Block-wise dynamic 8-bit quantization and an 8-bit AdamW (Dettmers et al., 2021, arXiv:2110.02861).

**Dynamic (tree) map.** An 8-bit code whose 256 values are spread over many orders of magnitude:
after the sign bit, a run of zeros sets a decimal exponent ``10^{-i}`` and the remaining bits a
linear fraction in ``[0.1, 1]``. So small values get fine steps and large values coarse ones,
like a float with a *dynamic* split between exponent and mantissa bits. The signed map covers
magnitudes from 5.5e-7 to 1 (for Adam's first moment); the unsigned map spends the sign bit on one
more fraction bit (for the second moment, which is never negative).

**Block-wise.** The tensor is flattened and cut into blocks of 2048 values; each block is divided
by its own absmax (one float32 per block) and every value is stored as the index (uint8) of the
nearest map value. One outlier then only spoils its own block, and blocks are independent (fast,
parallel). The flattened tail is zero-padded to a whole block (and dropped again on dequantization).

**8-bit AdamW.** :class:`AdamW8bit` keeps both Adam moments in this form: each step dequantizes
them, applies the usual AdamW update in float32 and re-quantizes. State memory falls from 8 bytes
per parameter (two float32 moments) to about 2 bytes (+ 8 bytes per 2048 for the block absmaxes).
Small tensors (< ``min_8bit_size`` elements) and parameters marked 32-bit, such as the
:class:`StableEmbedding` weight, keep float32 states, as in the paper.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_number
from lmkit.quant.base import QuantizedTensor, check_finite, nearest_code, pad_to_blocks, register

BLOCK_SIZE = 2048


@lru_cache(maxsize=4)
def create_dynamic_map(signed: bool = True, max_exponent_bits: int = 7, total_bits: int = 8) -> torch.Tensor:
    """The 2^total_bits values of the dynamic tree map, sorted ascending (float32).

    For exponent position ``i = 0 .. max_exponent_bits-1`` the map holds ``10^{i - (E-1)}`` times the
    midpoints of an even split of ``[0.1, 1]`` into ``2^i`` parts (``2^{i+1}`` unsigned) — negated
    copies too when ``signed`` — plus 0 and 1.
    """
    values: list[float] = []
    fraction_bits = total_bits - 1  # bits left after the sign (or, unsigned, the extra fraction bit)
    for i in range(max_exponent_bits):
        n_parts = 2 ** (i + fraction_bits - max_exponent_bits + (0 if signed else 1))
        bounds = torch.linspace(0.1, 1.0, n_parts + 1)
        mids = (bounds[:-1] + bounds[1:]) / 2.0
        magnitude = 10.0 ** (-(max_exponent_bits - 1) + i)
        values += (magnitude * mids).tolist()
        if signed:
            values += (-magnitude * mids).tolist()
    values += [0.0, 1.0]
    if len(values) != 2**total_bits:
        raise ValueError(f"these settings give {len(values)} values, not 2^{total_bits}")
    return torch.tensor(sorted(values), dtype=torch.float32)


def quantize_blockwise(x: torch.Tensor, block_size: int = BLOCK_SIZE, signed: bool = True) -> QuantizedTensor:
    """Block-wise dynamic 8-bit quantization of any tensor: uint8 codes + one float32 absmax per block."""
    check_finite(x, "tensor")
    if not signed and bool((x < 0).any()):
        raise ValueError("the unsigned dynamic map cannot store negative values; use signed=True")
    blocks, _ = pad_to_blocks(x.detach(), block_size)  # (n_blocks, block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    normed = blocks / torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    codes = nearest_code(normed, create_dynamic_map(signed))
    meta = {"block_size": block_size, "signed": signed}
    return QuantizedTensor("dynamic8", tuple(x.shape), {"codes": codes.reshape(-1), "absmax": absmax.reshape(-1)}, meta)


def dequantize_blockwise(q: QuantizedTensor) -> torch.Tensor:
    code = create_dynamic_map(q.meta["signed"]).to(q.tensors["codes"].device)
    n_blocks = q.tensors["absmax"].numel()
    vals = code[q.tensors["codes"].long()].reshape(n_blocks, -1) * q.tensors["absmax"][:, None]
    return vals.reshape(-1)[: q.numel].reshape(q.shape)


register("dynamic8", dequantize_blockwise)


class StableEmbedding(nn.Embedding):
    """The paper's stable embedding layer: Xavier-uniform init, LayerNorm on the output, 32-bit optimizer state.

    The embedding's gradients are sparse and spiky (rare tokens); normalising its output and
    keeping its Adam state in float32 is what made 8-bit optimizers train as stably as 32-bit ones.
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, **kwargs):
        super().__init__(num_embeddings, embedding_dim, **kwargs)
        self.norm = nn.LayerNorm(embedding_dim)
        nn.init.xavier_uniform_(self.weight)
        self.weight.optim_bits = 32  # read by AdamW8bit

    def forward(self, ids: torch.Tensor) -> torch.Tensor:  # (B, T) -> (B, T, C)
        emb = F.embedding(ids, self.weight, self.padding_idx, self.max_norm, self.norm_type,
                          self.scale_grad_by_freq, self.sparse)
        return self.norm(emb.float()).to(self.weight.dtype)


class AdamW8bit(torch.optim.Optimizer):
    """AdamW whose two moment tensors are stored block-wise dynamically quantized to 8 bits.

    The update is exactly ``torch.optim.AdamW``'s (decoupled weight decay, bias correction); only
    the storage of ``exp_avg`` (signed map) and ``exp_avg_sq`` (unsigned map) differs. Tensors
    smaller than ``min_8bit_size`` or with ``param.optim_bits == 32`` keep float32 states.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        block_size: int = BLOCK_SIZE,
        min_8bit_size: int = 4096,
    ):
        check_number("lr", lr, minimum=0.0)
        check_number("eps", eps, minimum=0.0)
        for i, beta in enumerate(betas):
            check_number(f"betas[{i}]", beta, minimum=0.0, below=1.0)
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
        super().__init__(params, defaults)
        self.block_size, self.min_8bit_size = block_size, min_8bit_size

    def _is_8bit(self, p: torch.Tensor) -> bool:
        return p.numel() >= self.min_8bit_size and getattr(p, "optim_bits", 8) != 32

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError("AdamW8bit does not support sparse gradients")
                state = self.state[p]
                eight_bit = self._is_8bit(p)
                if not state:
                    state["step"] = 0
                    m, v = torch.zeros_like(p, dtype=torch.float32), torch.zeros_like(p, dtype=torch.float32)
                else:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    if eight_bit:
                        m, v = dequantize_blockwise(m), dequantize_blockwise(v)
                state["step"] += 1
                t = state["step"]
                g = p.grad.float()
                p.mul_(1 - group["lr"] * group["weight_decay"])
                m.lerp_(g, 1 - beta1)
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
                bias1, bias2 = 1 - beta1**t, 1 - beta2**t
                denom = (v.sqrt() / (bias2**0.5)).add_(group["eps"])
                p.addcdiv_(m.to(p.dtype), denom.to(p.dtype), value=-group["lr"] / bias1)
                if eight_bit:
                    m = quantize_blockwise(m, self.block_size, signed=True)
                    v = quantize_blockwise(v, self.block_size, signed=False)
                state["exp_avg"], state["exp_avg_sq"] = m, v
        return loss

    def state_nbytes(self) -> int:
        """Bytes held by the optimizer's moment tensors (codes + absmaxes, or float32 tensors)."""
        total = 0
        for state in self.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                s = state.get(key)
                if isinstance(s, QuantizedTensor):
                    total += s.nbytes()
                elif s is not None:
                    total += s.numel() * s.element_size()
        return total
