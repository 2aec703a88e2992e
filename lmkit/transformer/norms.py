"""Normalisation layers: LayerNorm, RMSNorm, and BatchNorm for comparison.

A transformer normalises each token's vector **on its own** (over the channels ``C``):

* :class:`LayerNorm` (BERT, GPT-2, T5 without the mean): ``(x - mean) / sqrt(var + eps) · g + b``;
* :class:`RMSNorm` (LLaMA, SmolLM2, T5): ``x / sqrt(mean(x²) + eps) · g`` — no centring, no bias, cheaper.

:class:`BatchNorm` normalises each channel over **the batch and the time steps**: a token's output then depends on
which other sequences — and how much padding — share its batch, and the running statistics used at inference differ
from the batch statistics of training. That is why sequence models use LayerNorm; the class is here so the book can
show the difference on variable-length batches.
"""

from __future__ import annotations

import torch
from torch import nn


class LayerNorm(nn.Module):
    """Per-token normalisation over the last dimension with a learned gain and bias (same maths as ``nn.LayerNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-5, bias: bool = True) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)  # biased variance, as in the paper and PyTorch
        y = (x - mean) * torch.rsqrt(var + self.eps) * self.weight
        return y + self.bias if self.bias is not None else y


class RMSNorm(nn.Module):
    """Root-mean-square normalisation (Zhang & Sennrich, 2019): rescale, do not centre. Computed in float32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., C) -> (..., C)
        x32 = x.float()
        y = x32 * torch.rsqrt(x32.pow(2).mean(-1, keepdim=True) + self.eps)
        return self.weight * y.to(x.dtype)


class BatchNorm(nn.Module):
    """Batch normalisation of ``(B, T, C)`` token sequences, for comparison with :class:`LayerNorm`.

    In training mode each channel is normalised with the mean and variance over all ``B·T`` positions (or only the
    real tokens when a ``(B, T)`` boolean ``mask`` is given) and running averages are updated with ``momentum``; in
    eval mode the running averages are used, exactly as ``nn.BatchNorm1d`` does.
    """

    def __init__(self, dim: int, eps: float = 1e-5, momentum: float = 0.1) -> None:
        super().__init__()
        self.eps, self.momentum = eps, momentum
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:  # (B, T, C)
        if x.ndim != 3:
            raise ValueError(f"expected (batch, time, channels), got shape {tuple(x.shape)}")
        if self.training:
            flat = x.reshape(-1, x.shape[-1]) if mask is None else x[mask]  # (N, C): positions that count
            if flat.shape[0] < 2:
                raise ValueError("batch statistics need at least two positions")
            mean, var = flat.mean(0), flat.var(0, unbiased=False)
            with torch.no_grad():
                n = flat.shape[0]
                self.running_mean.lerp_(mean, self.momentum)
                self.running_var.lerp_(var * n / (n - 1), self.momentum)  # running variance is unbiased, as torch's
        else:
            mean, var = self.running_mean, self.running_var
        return (x - mean) * torch.rsqrt(var + self.eps) * self.weight + self.bias
