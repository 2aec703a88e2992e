"""Quantize a whole lmkit model, block by block, with round-to-nearest, GPTQ or AWQ.

Both GPTQ and AWQ solve a *layer-wise* problem: make ``Q X`` close to ``W X`` on calibration inputs ``X``. The inputs
of block ``l`` are computed by blocks ``0 .. l-1`` *after* they were quantized, so each block learns to compensate the
errors already made upstream (the GPTQ paper's sequential scheme):

1. run the calibration tokens up to the first block and keep its inputs (a forward pre-hook that stops the model);
2. for each block: run it on the kept inputs with hooks that collect each linear layer's input statistics
   (:class:`lmkit.quant.rtn.InputStats`: the Hessian ``2 X X^T / N`` and ``mean |x|``), quantize its linear layers,
   then run it again, now quantized, to produce the next block's inputs.

With ``true_sequential=True`` a block is done in four stages (q/k/v, o, gate/up, down), re-collecting the statistics
after each stage so that o_proj sees the output of the already quantized q/k/v, and so on (more forward passes).

AWQ divides each layer's input by its scales ``s``; the division is folded into the operation that produces the input,
as in the official code: the RMSNorm weight before q/k/v and before gate/up, the rows of ``up_proj`` before
``down_proj``, and the rows of ``v_proj`` before ``o_proj`` only when their shapes match (not with grouped-query
attention, where v_proj has fewer outputs than o_proj has inputs). The producing norm is found by matching the
tensors themselves, so the driver needs no knowledge of the block's attribute names beyond the projections'.

The quantized weights stay in ordinary ``nn.Linear`` layers in dequantized form (fast to evaluate); the compact codes
are returned and :func:`save_quantized` / :func:`load_quantized` write and read them with safetensors.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from tqdm.auto import tqdm

from lmkit.checks import check_bits, check_choice, choices
from lmkit.quant.awq import awq_quantize, search_scale
from lmkit.quant.base import QuantizedTensor, QuantLinear, replace_module
from lmkit.quant.gptq import gptq_quantize
from lmkit.quant.rtn import GroupQuantized, InputStats, rtn_groupwise

Method = Literal["rtn", "gptq", "awq"]
METHODS: tuple[str, ...] = choices(Method)
STAGES = (("q_proj", "k_proj", "v_proj"), ("o_proj",), ("gate_proj", "up_proj"), ("down_proj",))
NO_CLIP = ("q_proj", "k_proj")  # AWQ's official clipping search skips q and k (their product feeds the softmax)


@dataclass(frozen=True)
class QuantConfig:
    """How to quantize every linear layer of the blocks (embedding and LM head stay as they are)."""

    method: Method = "gptq"
    bits: int = 4
    group_size: int | None = 128
    symmetric: bool = False
    act_order: bool = False  # GPTQ: columns by decreasing H_ii
    block_size: int = 128  # GPTQ lazy-batch width
    damp: float = 0.01  # GPTQ: dampening, fraction of mean diag(H)
    true_sequential: bool = False  # re-collect statistics after each stage of a block
    awq_grid: int = 20  # AWQ: number of alphas in [0, 1)
    awq_clip: bool = True  # AWQ: weight clipping search

    def __post_init__(self) -> None:
        check_choice("method", self.method, METHODS)
        check_bits(self.bits)


def calibration_batch(token_ids: torch.Tensor, n_samples: int = 16, seq_len: int = 512, seed: int = 0) -> torch.Tensor:
    """``n_samples`` random windows of ``seq_len`` tokens of ``token_ids`` (N,), as GPTQ's code samples C4. (n, T)"""
    if token_ids.ndim != 1 or token_ids.numel() <= seq_len:
        raise ValueError(f"need a 1-D tensor of more than {seq_len} token ids, got shape {tuple(token_ids.shape)}")
    g = torch.Generator().manual_seed(seed)
    starts = torch.randint(0, token_ids.numel() - seq_len, (n_samples,), generator=g)
    return torch.stack([token_ids[s : s + seq_len] for s in starts.tolist()])


class _Stop(Exception):
    """Raised by the pre-hook on the first block once its inputs are captured."""


def _block_inputs(model: nn.Module, calibration: torch.Tensor, batch_size: int) -> list[tuple[tuple, dict]]:
    """The positional and keyword arguments the first block receives, for each calibration batch."""
    captured = []

    def hook(module, args, kwargs):
        captured.append((args, kwargs))
        raise _Stop

    handle = model.blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        for batch in calibration.split(batch_size):
            try:
                model(batch.to(next(model.parameters()).device))
            except _Stop:
                pass
    finally:
        handle.remove()
    return captured


def _run_block(block: nn.Module, inputs: list[tuple[tuple, dict]]) -> list[tuple[tuple, dict]]:
    """Run ``block`` on every captured batch; return the same argument lists with the hidden states replaced."""
    out = []
    for args, kwargs in inputs:
        y = block(*args, **kwargs)  # (B, T, C)
        out.append(((y, *args[1:]), kwargs))
    return out


def _linears(block: nn.Module) -> dict[str, tuple[str, nn.Linear]]:
    """Short name (``q_proj`` ...) -> (dotted name inside the block, module) for the block's projections."""
    found = {}
    for name, mod in block.named_modules():
        short = name.rpartition(".")[2]
        if isinstance(mod, nn.Linear) and short in {n for stage in STAGES for n in stage}:
            found[short] = (name, mod)
    return found


def _collect(block: nn.Module, inputs, linears: dict[str, nn.Linear], norms: dict[str, nn.Module] | None = None):
    """Run the block once, collecting :class:`InputStats` of each given linear (and the producing norm, if asked)."""
    stats = {short: InputStats(lin.in_features) for short, lin in linears.items()}
    seen_inputs: dict[str, torch.Tensor] = {}
    producers: dict[str, nn.Module] = {}
    norm_outputs: dict[nn.Module, torch.Tensor] = {}
    handles = []
    for short, lin in linears.items():

        def hook(module, args, short=short):
            stats[short].add(args[0])
            seen_inputs[short] = args[0]

        handles.append(lin.register_forward_pre_hook(hook))
    for norm in (norms or {}).values():
        handles.append(norm.register_forward_hook(lambda m, a, y: norm_outputs.__setitem__(m, y)))
    try:
        with torch.no_grad():
            for args, kwargs in inputs:
                block(*args, **kwargs)
                for short, x in seen_inputs.items():  # which norm's output is this layer's input?
                    for norm, y in norm_outputs.items():
                        if y.shape == x.shape and torch.equal(y, x):
                            producers[short] = norm
    finally:
        for h in handles:
            h.remove()
    return stats, producers


@torch.no_grad()
def layer_input_stats(model: nn.Module, token_ids: torch.Tensor, block: int) -> dict[str, tuple[nn.Linear, InputStats]]:
    """Run ``model`` on ``token_ids`` (B, T) up to block ``block`` and return, for each of its projections, the layer
    and the statistics of its inputs (Hessian ``2 X X^T / N``, ``mean |x|``): one layer-wise quantization problem.
    """
    lin = {short: mod for short, (_, mod) in _linears(model.blocks[block]).items()}
    stats = {short: InputStats(mod.in_features) for short, mod in lin.items()}
    handles = [mod.register_forward_pre_hook(lambda m, a, s=stats[short]: s.add(a[0])) for short, mod in lin.items()]

    def stop(module, args, output):
        raise _Stop

    handles.append(model.blocks[block].register_forward_hook(stop))  # the later blocks are not needed
    try:
        model(token_ids)
    except _Stop:
        pass
    finally:
        for h in handles:
            h.remove()
    return {short: (lin[short], stats[short]) for short in lin}


def _norms(block: nn.Module) -> dict[str, nn.Module]:
    """Sub-modules that look like an affine norm: a 1-D ``weight`` and no child modules."""
    return {
        name: mod for name, mod in block.named_modules()
        if not list(mod.children()) and not isinstance(mod, nn.Linear)
        and isinstance(getattr(mod, "weight", None), torch.Tensor) and mod.weight.ndim == 1
    }


def _scale_rows(linear: nn.Linear, result: GroupQuantized | None, s: torch.Tensor) -> None:
    """Divide the output rows of ``linear`` by ``s`` (exact on a quantized grid too: each row's scales shrink)."""
    linear.weight.data /= s[:, None].to(linear.weight)
    if linear.bias is not None:
        linear.bias.data /= s.to(linear.bias)
    if result is not None:
        result.weight = result.weight / s[:, None]
        result.scale = result.scale / s[:, None]


def _quantize_stage(block, names, lin, stats, producers, config: QuantConfig, results: dict) -> None:
    """Quantize the linears ``names`` of one block (that have statistics ``stats``) in place."""
    if config.method == "gptq":
        for short in names:
            res = gptq_quantize(lin[short].weight.data, stats[short].hessian, config.bits, config.group_size,
                                config.symmetric, config.block_size, config.act_order, config.damp)
            lin[short].weight.data.copy_(res.weight)
            results[short] = res
        return
    # AWQ: layers whose input comes from the same norm (q/k/v; gate/up) share one scale search
    groups: dict[object, list[str]] = {}
    for short in names:
        groups.setdefault(producers.get(short, short), []).append(short)
    for members in groups.values():
        first = members[0]
        st = stats[first]
        scales = torch.ones(lin[first].in_features)  # o_proj under grouped-query attention: no scaling possible
        foldable = first in producers or first == "down_proj" or (
            first == "o_proj" and lin["v_proj"].out_features == lin["o_proj"].in_features
        )
        if foldable:
            weights = [lin[m].weight.data for m in members]
            scales = search_scale(weights, st.hessian, st.mean_abs, config.bits, config.group_size,
                                  config.symmetric, config.awq_grid).scales
        if first in producers:  # fold 1/s into the norm in front
            norm = producers[first]
            norm.weight.data /= scales.to(norm.weight)
            if getattr(norm, "bias", None) is not None:
                norm.bias.data /= scales.to(norm.bias)
        elif foldable:  # fold 1/s into the rows of the linear layer in front
            prev = "up_proj" if first == "down_proj" else "v_proj"
            _scale_rows(lin[prev], results.get(prev), scales)
        for m in members:
            res = awq_quantize(lin[m].weight.data, st.hessian, scales, config.bits, config.group_size,
                               config.symmetric, clip=config.awq_clip and m not in NO_CLIP)
            lin[m].weight.data.copy_(res.weight)
            results[m] = res


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    calibration: torch.Tensor | None,
    config: QuantConfig,
    batch_size: int = 4,
    progress: bool = True,
) -> dict[str, GroupQuantized]:
    """Quantize every projection of ``model.blocks`` in place; return ``{full module name: GroupQuantized}``.

    ``calibration``: token ids (n_samples, seq_len), unused (may be None) for ``"rtn"``. The model's linear layers keep
    their dequantized weights; AWQ also changes the norms in front of the layers (their weights absorb ``1/s``).
    """
    blocks = model.blocks
    results: dict[str, GroupQuantized] = {}
    if config.method == "rtn":
        for i, block in enumerate(tqdm(blocks, desc="rtn", disable=not progress)):
            for name, lin in _linears(block).values():
                res = rtn_groupwise(lin.weight.data, config.bits, config.group_size, config.symmetric)
                lin.weight.data.copy_(res.weight)
                results[f"blocks.{i}.{name}"] = res
        return results
    if calibration is None or calibration.ndim != 2:
        raise ValueError(f"{config.method} needs calibration token ids of shape (n_samples, seq_len)")
    inputs = _block_inputs(model, calibration, batch_size)
    stages = STAGES if config.true_sequential else (tuple(n for stage in STAGES for n in stage),)
    for i, block in enumerate(tqdm(blocks, desc=config.method, disable=not progress)):
        found = _linears(block)
        lin = {short: mod for short, (_, mod) in found.items()}
        block_results: dict[str, GroupQuantized] = {}
        for stage in stages:
            names = [n for n in stage if n in lin]
            stats, producers = _collect(block, inputs, {n: lin[n] for n in names},
                                        _norms(block) if config.method == "awq" else None)
            _quantize_stage(block, names, lin, stats, producers, config, block_results)
        for short, res in block_results.items():
            results[f"blocks.{i}.{found[short][0]}"] = res
        inputs = _run_block(block, inputs)  # the quantized block's outputs feed the next block
    return results


def quantize_timed(model: nn.Module, calibration: torch.Tensor | None, config: QuantConfig, **kwargs):
    """:func:`quantize_model` and the wall-clock seconds it took."""
    t0 = time.perf_counter()
    results = quantize_model(model, calibration, config, **kwargs)
    return results, time.perf_counter() - t0


def save_quantized(path: str | Path, model: nn.Module, results: dict[str, GroupQuantized], config: QuantConfig) -> None:
    """Write the packed codes of every quantized layer and the blocks' other tensors (norms) to a safetensors file.

    The embedding and LM head are not written: :func:`load_quantized` applies the file to a freshly loaded base model.
    """
    tensors: dict[str, torch.Tensor] = {}
    layers = {}
    for name, res in results.items():
        q = res.to_quantized_tensor()
        for key, t in q.tensors.items():
            tensors[f"{name}.{key}"] = t.contiguous()
        layers[name] = {"shape": list(q.shape), **q.meta}
    quantized = {f"{name}.weight" for name in results}
    for name, t in model.blocks.state_dict().items():
        if f"blocks.{name}" not in quantized:
            tensors[f"blocks.{name}"] = t.detach().float().contiguous()
    metadata = {"config": json.dumps(asdict(config)), "layers": json.dumps(layers)}
    save_file(tensors, str(path), metadata=metadata)


def load_quantized(path: str | Path, model: nn.Module, packed: bool = False) -> QuantConfig:
    """Apply a file written by :func:`save_quantized` to ``model`` (the same architecture, e.g. the base model).

    ``packed=False`` puts dequantized weights into the ``nn.Linear`` layers; ``packed=True`` swaps them for
    :class:`lmkit.quant.base.QuantLinear` modules that keep only the codes and dequantize on the fly.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    tensors = load_file(str(path))
    layers = json.loads(meta["layers"])
    for name, info in layers.items():
        keys = ("codes", "scale", "zero", "group_index")
        q = QuantizedTensor("group", tuple(info["shape"]), {k: tensors.pop(f"{name}.{k}") for k in keys},
                            {k: info[k] for k in ("bits", "symmetric", "nibbles")})
        linear = model.get_submodule(name)
        if packed:
            replace_module(model, name, QuantLinear(q, linear.bias))
        else:
            linear.weight.data.copy_(q.dequantize())
    state = {k.removeprefix("blocks."): v for k, v in tensors.items()}
    missing, unexpected = model.blocks.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"{path} holds tensors the model does not have: {unexpected[:5]}")
    return QuantConfig(**json.loads(meta["config"]))
