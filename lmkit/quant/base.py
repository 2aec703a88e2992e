"""The small interface every quantization method in :mod:`lmkit.quant` shares.

A method turns a float tensor into a :class:`QuantizedTensor`: a handful of *packed* tensors
(integer codes, often two 4-bit codes per byte; scales; zero-points; raw GGUF block bytes) plus
plain metadata (shape, bits, block size, ...). ``QuantizedTensor.dequantize()`` turns it back
into a float tensor, and :class:`QuantLinear` runs a linear layer straight from the packed form,
so a model's memory really holds only the compressed bytes.

Each method module registers itself with :func:`register` under a name (``"absmax"``,
``"nf4"``, ``"dynamic8"``, ``"int8"``, ``"ggml"``); the registry maps that name to the module's
dequantize function and, optionally, a specialised matmul (LLM.int8() multiplies in int8
instead of dequantizing first).
"""

from __future__ import annotations

import importlib
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_int, check_tensor


@dataclass
class QuantizedTensor:
    """Packed tensors + metadata: everything needed to rebuild (or multiply by) a weight.

    ``method`` names the registered method, ``shape`` the original float shape, ``tensors`` the
    packed storage (the only thing that costs memory) and ``meta`` small Python values.
    """

    method: str
    shape: tuple[int, ...]
    tensors: dict[str, torch.Tensor]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def numel(self) -> int:
        return math.prod(self.shape)

    def nbytes(self) -> int:
        """Bytes of packed storage (codes + scales + zero-points ...)."""
        return sum(t.numel() * t.element_size() for t in self.tensors.values())

    def bits_per_weight(self) -> float:
        """Storage bits per original element, everything included (e.g. NF4 with double quant: 4.127)."""
        return 8.0 * self.nbytes() / self.numel

    def dequantize(self) -> torch.Tensor:
        """The float32 tensor this packed form stands for, in the original shape."""
        return _lookup(self.method)[0](self)

    def to(self, device: torch.device | str) -> QuantizedTensor:
        return QuantizedTensor(self.method, self.shape, {k: v.to(device) for k, v in self.tensors.items()}, self.meta)


class Quantizer(Protocol):
    """What a method provides: ``quantize(w) -> QuantizedTensor``; ``dequantize(q) -> Tensor``."""

    def __call__(self, w: torch.Tensor) -> QuantizedTensor: ...


Dequantizer = Callable[[QuantizedTensor], torch.Tensor]
Matmul = Callable[[torch.Tensor, QuantizedTensor], torch.Tensor]

_REGISTRY: dict[str, tuple[Dequantizer, Matmul | None]] = {}
# Methods live in their own modules; importing the module registers it (lazily, on first use).
_MODULES = {
    "absmax": "lmkit.quant.absmax",
    "dynamic8": "lmkit.quant.dynamic8",
    "nf4": "lmkit.quant.nf4",
    "int8": "lmkit.quant.int8_matmul",
    "ggml": "lmkit.quant.ggml",
    "group": "lmkit.quant.rtn",
}


def register(method: str, dequantize: Dequantizer, matmul: Matmul | None = None) -> None:
    """Make ``method`` known: how to dequantize it and, optionally, how to multiply ``x @ W.T`` directly."""
    _REGISTRY[method] = (dequantize, matmul)


def _lookup(method: str) -> tuple[Dequantizer, Matmul | None]:
    if method not in _REGISTRY and method in _MODULES:
        importlib.import_module(_MODULES[method])
    if method not in _REGISTRY:
        raise ValueError(f"unknown quantization method {method!r}; known: {sorted(set(_REGISTRY) | set(_MODULES))}")
    return _REGISTRY[method]


def check_finite(w: torch.Tensor, what: str = "tensor") -> None:
    """Raise ``ValueError`` for NaN/inf input: a single inf would make a whole block's scale inf."""
    check_tensor(what, w, floating=True)
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{what} contains NaN or inf; quantization needs finite values")


def check_nonempty(w: torch.Tensor, what: str = "tensor") -> None:
    """Raise ``ValueError`` for a tensor with no elements: a scale is a max (or min) over values, and over nothing
    there is none (``amax`` fails deep inside with a reduction error that names no argument)."""
    if w.numel() == 0:
        raise ValueError(f"{what} is empty (shape {tuple(w.shape)}): there are no values to take a scale from")


def check_matrix(w: torch.Tensor, what: str = "weight") -> None:
    """:func:`check_finite`, and 2-D: a linear layer's ``(out, in)`` weight, the only shape the per-row methods
    (LLM.int8, round-to-nearest by groups, GPTQ, OBQ, AWQ) take."""
    check_finite(w, what)
    if w.ndim != 2:
        raise ValueError(f"{what} must be a 2-D (out, in) matrix, got shape {tuple(w.shape)}")


def pad_to_blocks(w: torch.Tensor, block_size: int) -> tuple[torch.Tensor, int]:
    """Flatten ``w`` into ``(n_blocks, block_size)``, zero-padding the tail; return the blocks and the pad count.

    Used by the methods that quantize a *flattened* tensor (NF4, block-wise dynamic 8-bit): the
    padding is recorded in the metadata (via the original shape) and dropped on dequantization.
    """
    check_int("block_size", block_size, minimum=1)
    flat = w.reshape(-1).float()
    pad = (-flat.numel()) % block_size
    if pad:
        flat = torch.cat([flat, flat.new_zeros(pad)])
    return flat.view(-1, block_size), pad


def nearest_code(x: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
    """Index of the nearest value of the sorted codebook ``code`` for each element of ``x`` (uint8, <= 256 codes)."""
    if code.numel() > 256:
        raise ValueError(f"a codebook of {code.numel()} values does not fit in uint8 indices")
    mids = (code[1:] + code[:-1]) / 2
    return torch.bucketize(x.contiguous(), mids.to(x.device)).to(torch.uint8)


def codebook_fake_quantize(w: torch.Tensor, code: torch.Tensor, block_size: int) -> torch.Tensor:
    """Quantize-dequantize ``w`` with any sorted codebook in [-1, 1] and one absmax per block of ``block_size``.

    This is the common core of uniform absmax, NF4 and dynamic 8-bit quantization: they differ only
    in ``code``. Returns a float32 tensor shaped like ``w`` (the tail block is zero-padded internally).
    """
    check_finite(w, "weight")
    blocks, _ = pad_to_blocks(w.detach(), block_size)
    absmax = blocks.abs().amax(dim=1, keepdim=True)
    absmax = torch.where(absmax > 0, absmax, torch.ones_like(absmax))
    idx = nearest_code(blocks / absmax, code)
    return (code.to(w.device)[idx.long()] * absmax).reshape(-1)[: w.numel()].reshape(w.shape)


def pack_nibbles(codes: torch.Tensor) -> torch.Tensor:
    """Two 4-bit codes per byte: element ``2i`` in the low nibble, ``2i+1`` in the high nibble. (N,) -> (N/2,)."""
    flat = codes.reshape(-1).to(torch.uint8)
    if flat.numel() % 2:
        raise ValueError("pack_nibbles needs an even number of codes")
    return flat[0::2] | (flat[1::2] << 4)


def unpack_nibbles(packed: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_nibbles`: (N/2,) uint8 -> (N,) uint8 codes in 0..15."""
    return torch.stack([packed & 0x0F, packed >> 4], dim=-1).reshape(-1)


class QuantLinear(nn.Module):
    """A linear layer that keeps only the packed weight and computes from it.

    ``forward`` uses the method's own matmul when it has one (LLM.int8()); otherwise it
    dequantizes the weight for this call only and runs ``F.linear``: memory holds the packed bytes,
    compute is float. The packed tensors are registered as buffers, so ``.to(device)`` and
    ``state_dict()`` see them.
    """

    def __init__(self, qweight: QuantizedTensor, bias: torch.Tensor | None = None):
        super().__init__()
        if len(qweight.shape) != 2:
            raise ValueError(f"QuantLinear needs a 2-D (out, in) weight, got shape {qweight.shape}")
        self.out_features, self.in_features = qweight.shape
        self.method, self.meta = qweight.method, qweight.meta
        self._names = list(qweight.tensors)
        for name, t in qweight.tensors.items():
            self.register_buffer(f"q_{name}", t)
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    @property
    def qweight(self) -> QuantizedTensor:
        tensors = {name: getattr(self, f"q_{name}") for name in self._names}
        return QuantizedTensor(self.method, (self.out_features, self.in_features), tensors, self.meta)

    @classmethod
    def from_linear(cls, linear: nn.Linear, quantize: Callable[[torch.Tensor], QuantizedTensor]) -> QuantLinear:
        return cls(quantize(linear.weight.detach().float()), linear.bias)

    def weight_nbytes(self) -> int:
        return self.qweight.nbytes()

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., out)
        qw = self.qweight
        matmul = _lookup(self.method)[1]
        if matmul is not None:
            y = matmul(x, qw)
        else:
            y = F.linear(x, qw.dequantize().to(device=x.device, dtype=x.dtype))
        return y if self.bias is None else y + self.bias.to(y.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, method={self.method}, {self.meta}"


def replace_module(model: nn.Module, name: str, new: nn.Module) -> nn.Module:
    """Put ``new`` where the submodule called ``name`` (dotted, as in ``model.named_modules()``) sits; return the old
    one. The one way lmkit swaps layers: quantizers (:func:`quantize_linears`, the GPTQ/AWQ driver) and LoRA."""
    old = model.get_submodule(name)  # raises AttributeError naming the missing part
    parent_name, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent_name) if parent_name else model, child, new)
    return old


def quantize_linears(
    model: nn.Module,
    quantize: Callable[[torch.Tensor], QuantizedTensor],
    skip: Iterable[str] = ("lm_head",),
) -> nn.Module:
    """Replace every ``nn.Linear`` in ``model`` (in place) by a :class:`QuantLinear`; names in ``skip`` stay float.

    A module is skipped when any part of its dotted name is in ``skip`` (tied heads share the
    embedding, which stays float here).
    """
    skip = set(skip)
    targets = [
        (name, mod) for name, mod in model.named_modules()
        if isinstance(mod, nn.Linear) and not (set(name.split(".")) & skip)
    ]
    for name, mod in targets:
        replace_module(model, name, QuantLinear.from_linear(mod, quantize))
    return model
