"""The position-wise feed-forward network: expand, apply a non-linearity, contract.

Each token's vector ``(C,)`` goes up to ``d_ff`` channels (usually ``4·C``; ``8/3·C`` for SwiGLU so the parameter
count matches), through an activation, and back down to ``C``. Attention mixes information *between* tokens; the
FFN transforms each token on its own and holds most of the parameters.

Activations:

* ``relu`` (the original transformer), ``gelu`` (BERT: the exact erf form), ``gelu_tanh`` (GPT-2's tanh
  approximation), ``silu``;
* ``swiglu`` (PaLM, LLaMA): a *gated* unit ``down(silu(gate(x)) * up(x))`` with a third projection.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from lmkit.checks import check_choice, choices
from lmkit.transformer.attention import concat_linears

Activation = Literal["relu", "gelu", "gelu_tanh", "silu", "swiglu"]
ACTIVATIONS: tuple[str, ...] = choices(Activation)


def activation_fn(name: str, x: torch.Tensor) -> torch.Tensor:
    """Apply the element-wise activation ``name`` (``relu``, ``gelu``, ``gelu_tanh``, ``silu``, also ``tanh`` and
    ``sigmoid`` for the comparison plots) — written out from their definitions."""
    if name == "relu":
        return x.clamp_min(0)
    if name == "gelu":  # x · Φ(x), Φ the standard normal CDF
        return 0.5 * x * (1.0 + torch.erf(x / math.sqrt(2.0)))
    if name == "gelu_tanh":
        return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * x.pow(3))))
    if name == "silu":  # x · sigmoid(x), a.k.a. swish
        return x * torch.sigmoid(x)
    if name == "tanh":
        return torch.tanh(x)
    if name == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"unknown activation {name!r}; expected one of {ACTIVATIONS[:-1] + ('tanh', 'sigmoid')}")


class FeedForward(nn.Module):
    """``down(act(up(x)))``, or ``down(silu(gate(x)) * up(x))`` for ``activation="swiglu"``; dropout on the output.

    The projections are plain ``nn.Linear`` attributes ``up_proj``, ``down_proj`` (and ``gate_proj``) so quantizers
    and LoRA can swap them; :meth:`fuse_gate_up` merges ``gate_proj`` and ``up_proj`` into ``gate_up_proj``.
    """

    def __init__(
        self, d_model: int, d_ff: int, activation: Activation = "gelu", bias: bool = True, dropout: float = 0.0
    ) -> None:
        super().__init__()
        check_choice("activation", activation, ACTIVATIONS)
        self.activation = activation
        self.up_proj = nn.Linear(d_model, d_ff, bias=bias)
        self.gate_proj = nn.Linear(d_model, d_ff, bias=bias) if activation == "swiglu" else None
        self.down_proj = nn.Linear(d_ff, d_model, bias=bias)
        self.gate_up_proj: nn.Linear | None = None  # set by fuse_gate_up()
        self.dropout = nn.Dropout(dropout)

    def fuse_gate_up(self) -> None:
        """SwiGLU: replace ``gate_proj`` and ``up_proj`` by one ``gate_up_proj`` (their rows stacked,
        :func:`~lmkit.transformer.attention.concat_linears`): one matmul instead of two on the same input, split back
        into the two halves."""
        if self.gate_proj is None:
            state = "already fused" if self.gate_up_proj is not None else f"activation {self.activation!r}"
            raise TypeError(f"fuse_gate_up needs a SwiGLU FFN with separate gate and up projections, got {state}")
        self.gate_up_proj = concat_linears(self.gate_proj, self.up_proj)
        self.gate_proj = self.up_proj = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, T, C) -> (B, T, C)
        if self.gate_up_proj is not None:
            gate, up = self.gate_up_proj(x).chunk(2, dim=-1)  # (B, T, d_ff) each
            h = activation_fn("silu", gate) * up
        elif self.gate_proj is not None:
            h = activation_fn("silu", self.gate_proj(x)) * self.up_proj(x)  # (B, T, d_ff)
        else:
            h = activation_fn(self.activation, self.up_proj(x))  # (B, T, d_ff)
        return self.dropout(self.down_proj(h))
