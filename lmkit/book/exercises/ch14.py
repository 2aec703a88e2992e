"""Exercises of chapter 14 (fine-tuning and LoRA). Expected answers come from :mod:`lmkit.training.lora` at call
time."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from lmkit.book.exercises.framework import Verdict, check_function, check_number, smollm2_reader
from lmkit.training import lora


def _smollm2(targets: list[str] | None = None, r: int = 8) -> nn.Module:
    from lmkit.loaders.smollm2 import config_from_gguf
    from lmkit.transformer.model import Transformer

    with torch.device("meta"):  # the architecture only: nothing is allocated
        model = Transformer(config_from_gguf(smollm2_reader()))
        return lora.apply_lora(model, targets, r=r) if targets else model


# 14.1 -----------------------------------------------------------------------------------------------
def check_layer_params(answer: int | None) -> Verdict:
    """Trainable parameters of LoRA with r = 8 on one 576 × 576 projection."""
    layer = lora.LoRALinear(nn.Linear(576, 576, bias=False), r=8)
    return check_number(answer, sum(p.numel() for p in layer.parameters() if p.requires_grad), "trainable parameters")


def solution_layer_params() -> int:
    r, d_in, d_out = 8, 576, 576
    return r * (d_in + d_out)  # A is r x d_in, B is d_out x r


# 14.2 -----------------------------------------------------------------------------------------------
def check_smollm2_lora_params(answer: int | None) -> Verdict:
    """Trainable parameters of LoRA r = 8 on W_q and W_v of all 30 SmolLM2 layers (W_v is 576 → 192 with GQA)."""
    trainable, _ = lora.count_parameters(_smollm2(["q_proj", "v_proj"]))
    return check_number(answer, trainable, "trainable parameters")


def solution_smollm2_lora_params() -> int:
    r, layers, C, kv = 8, 30, 576, 3 * 64
    return layers * (r * (C + C) + r * (C + kv))  # q_proj: 576 -> 576; v_proj: 576 -> 3 KV heads x 64


# 14.3 -----------------------------------------------------------------------------------------------
def check_full_ft_gib(answer: float | None) -> Verdict:
    """GiB for weights, gradients and two Adam moments (all float32) of full fine-tuning of SmolLM2 (0.5 %)."""
    total = sum(p.numel() for p in _smollm2().parameters())
    return check_number(answer, 16 * total / 2**30, "GiB", rel_tol=0.005)


def solution_full_ft_gib() -> float:
    total = sum(p.numel() for p in _smollm2().parameters())
    return 16 * total / 2**30  # 4 bytes each: weight, gradient, Adam's m and v


# 14.4 -----------------------------------------------------------------------------------------------
def check_merge(answer: Callable[[torch.Tensor, torch.Tensor, torch.Tensor, float], torch.Tensor] | None) -> Verdict:
    """A function ``merge(W0, A, B, alpha)`` returning the merged weight of a LoRA layer (rank = A's rows)."""
    g = torch.Generator().manual_seed(0)
    cases = []
    for d_in, d_out, r, alpha in ((6, 4, 2, 16.0), (8, 8, 1, 4.0)):
        base = nn.Linear(d_in, d_out, bias=False)
        layer = lora.LoRALinear(base, r=r, alpha=alpha)
        with torch.no_grad():
            layer.lora_A.copy_(torch.randn(r, d_in, generator=g))
            layer.lora_B.copy_(torch.randn(d_out, r, generator=g))
            W0 = base.weight.detach().clone()
            args = (W0, layer.lora_A.detach().clone(), layer.lora_B.detach().clone(), alpha)
            layer.merge()
            cases.append((args, layer.base.weight.detach().clone()))
    return check_function(answer, cases, "your merge",
                          lambda got, exp: isinstance(got, torch.Tensor) and got.shape == exp.shape
                          and torch.allclose(got, exp, atol=1e-5))


def solution_merge(W0: torch.Tensor, A: torch.Tensor, B: torch.Tensor, alpha: float) -> torch.Tensor:
    r = A.shape[0]
    return W0 + (alpha / r) * (B @ A)  # (out, r) @ (r, in): the update has rank <= r
