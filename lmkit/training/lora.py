"""LoRA (Hu et al., 2021) and QLoRA (Dettmers et al., 2023): fine-tune a few low-rank matrices, freeze the rest.

A frozen linear layer ``W0`` (out × in) gets a trainable update of rank ``r``:

$$ h = W_0 x + \\frac{\\alpha}{r} B A\\, \\mathrm{dropout}(x), \\qquad A \\in \\mathbb{R}^{r \\times d_{in}},\\
   B \\in \\mathbb{R}^{d_{out} \\times r} $$

``A`` starts Kaiming-uniform (as ``nn.Linear`` and ``peft`` initialise it) and ``B`` at zero, so training
starts from exactly the pretrained model. Only ``r·(d_in + d_out)`` numbers per layer train instead of
``d_in·d_out``; their optimizer state is the only optimizer state. After training, ``merge`` folds
``(α/r)·BA`` into ``W0``: the model is again a plain linear stack, with no extra inference latency.

QLoRA keeps ``W0`` in 4-bit NF4 (:mod:`lmkit.quant.nf4`) and dequantizes it on the fly in the forward
pass; gradients flow through the frozen dequantized weight into the float LoRA matrices.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_int, check_number
from lmkit.quant.base import QuantLinear, replace_module


class LoRALinear(nn.Module):
    """``base(x) + (alpha / r) · B(A(dropout(x)))`` with ``base`` frozen (an ``nn.Linear`` or a ``QuantLinear``)."""

    def __init__(self, base: nn.Module, r: int = 8, alpha: float = 16.0, dropout: float = 0.0):
        super().__init__()
        if not isinstance(base, (nn.Linear, QuantLinear)):
            raise TypeError(f"LoRA wraps nn.Linear or QuantLinear, got {type(base).__name__}")
        check_int("r", r, minimum=1)  # the rank
        check_number("dropout", dropout, minimum=0.0, below=1.0)
        self.base, self.r, self.alpha = base, r, alpha
        self.scaling = alpha / r
        self.in_features, self.out_features = base.in_features, base.out_features
        for p in base.parameters():
            p.requires_grad_(False)
        device = next(base.buffers(), next(base.parameters(), torch.empty(0))).device
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=device))  # (r, in)
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=device))  # (out, r)
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    def delta_weight(self) -> torch.Tensor:
        """The update ``(alpha / r) · B A`` as an (out, in) matrix."""
        return self.scaling * (self.lora_B @ self.lora_A)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        y = self.base(x)
        if self.merged:
            return y
        update = F.linear(F.linear(self.dropout(x), self.lora_A.to(x.dtype)), self.lora_B.to(x.dtype))
        return y + self.scaling * update

    def merge(self) -> None:
        """Fold the update into the base weight: ``W0 ← W0 + (α/r)·BA`` (a float base only)."""
        if isinstance(self.base, QuantLinear):
            raise TypeError("cannot merge into a quantized base in place; use merge_and_unload() for a float layer")
        if not self.merged:
            with torch.no_grad():
                self.base.weight += self.delta_weight().to(self.base.weight.dtype)
            self.merged = True

    def unmerge(self) -> None:
        """Undo :meth:`merge` (exact up to float rounding), so training can continue."""
        if self.merged:
            with torch.no_grad():
                self.base.weight -= self.delta_weight().to(self.base.weight.dtype)
            self.merged = False

    def to_linear(self) -> nn.Linear:
        """A plain ``nn.Linear`` holding ``W0 + (α/r)·BA`` (dequantized for a QLoRA base)."""
        if isinstance(self.base, QuantLinear):
            w0 = self.base.qweight.dequantize()
            bias = self.base.bias
        else:
            w0 = self.base.weight.detach() - (self.delta_weight() if self.merged else 0)
            bias = self.base.bias
        out = nn.Linear(self.in_features, self.out_features, bias=bias is not None, device=w0.device)
        with torch.no_grad():
            out.weight.copy_(w0 + self.delta_weight().detach())
            if bias is not None:
                out.bias.copy_(bias)
        return out

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha}, merged={self.merged}"


def _targets(model: nn.Module, target_modules: Sequence[str]) -> list[str]:
    """Names of linear layers whose name equals a target or ends with ``'.' + target`` (peft's rule)."""
    names = [
        name for name, m in model.named_modules()
        if isinstance(m, (nn.Linear, QuantLinear))
        and any(name == t or name.endswith("." + t) for t in target_modules)
    ]
    if not names:
        raise ValueError(f"no nn.Linear in the model matches target_modules={list(target_modules)}")
    return names


def apply_lora(
    model: nn.Module,
    target_modules: Sequence[str],
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    trainable: Sequence[str] = (),
) -> nn.Module:
    """Freeze ``model`` and wrap each targeted linear layer in a :class:`LoRALinear` (in place; returns it).

    ``target_modules`` are layer names or name suffixes, e.g. ``["q_proj", "v_proj"]`` (the LoRA paper
    adapts W_q and W_v). Parameters whose name contains a string of ``trainable`` stay trainable
    (e.g. a new classification head, like peft's ``modules_to_save``).
    """
    for name, p in model.named_parameters():
        p.requires_grad_(any(s in name for s in trainable))
    for name in _targets(model, target_modules):
        replace_module(model, name, LoRALinear(model.get_submodule(name), r, alpha, dropout))
    return model


def apply_qlora(
    model: nn.Module,
    target_modules: Sequence[str],
    r: int = 8,
    alpha: float = 16.0,
    dropout: float = 0.0,
    trainable: Sequence[str] = (),
    skip: Sequence[str] = ("lm_head",),
) -> nn.Module:
    """QLoRA: every linear layer (except names in ``skip``) becomes a frozen NF4 ``QuantLinear``
    (double-quantized, 4.127 bits per weight), then LoRA adapters go on ``target_modules``."""
    from lmkit.quant.base import quantize_linears
    from lmkit.quant.nf4 import quantize_nf4

    quantize_linears(model, quantize_nf4, skip=skip)
    return apply_lora(model, target_modules, r, alpha, dropout, trainable)


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA update into its base weight (no inference overhead left)."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    for layer in lora_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module) -> nn.Module:
    """Replace every :class:`LoRALinear` by a plain ``nn.Linear`` with the merged weight (in place)."""
    for name, m in list(model.named_modules()):
        if isinstance(m, LoRALinear):
            replace_module(model, name, m.to_linear())
    return model


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """``(trainable, total)`` parameter counts, each shared tensor counted once.

    Quantized buffers of a QLoRA base are not parameters; see :func:`weight_bytes` for memory.
    """
    seen: dict[int, nn.Parameter] = {id(p): p for p in model.parameters()}
    total = sum(p.numel() for p in seen.values())
    trainable = sum(p.numel() for p in seen.values() if p.requires_grad)
    return trainable, total


def weight_bytes(model: nn.Module) -> int:
    """Bytes held by parameters and buffers (packed NF4 codes count at their real size)."""
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()]}
    return sum(t.numel() * t.element_size() for t in tensors.values())
