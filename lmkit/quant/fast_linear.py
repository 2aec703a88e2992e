"""Fast decoding paths: LLM.int8()'s vector-wise int8 (``torch._int_mm``, one row on FBGEMM), and bfloat16.

Decoding one token at batch 1 multiplies a ``(1, K)`` activation by every weight matrix once: each weight byte is
read from memory for two floating-point operations. The step is bound by *bytes moved* (and by per-op overhead on
a small model), not by arithmetic — so storing the weights in fewer bytes makes it faster, provided the matmul
reads those bytes directly instead of first expanding them back to float32.

:class:`Int8Linear` does exactly that with LLM.int8()'s *vector-wise* scheme (:mod:`lmkit.quant.int8_matmul`):
each output channel of the weight keeps one absmax scale ``c_w`` (rounded to int8 once, at conversion), each
token of the activation gets its own ``c_x`` (rounded at every call), and the int8 × int8 product accumulates
exactly in int32 (inside ``torch._int_mm``, or FBGEMM's kernel for one row)::

    Y = (c_x c_wᵀ / 127²) ⊙ (Q_x Q_wᵀ)        Q_x = round(127 X / c_x),  Q_w = round(127 W / c_w)

With ``threshold > 0`` the outlier feature dimensions of ``X`` (any ``|x| ≥ threshold``) are multiplied in float
instead, as in the paper (:func:`~lmkit.quant.int8_matmul.llm_int8_matmul` is the reference; this layer returns the
same numbers up to float32 rounding). That decomposition costs a detection pass and a data-dependent column gather
at every call — the slowness the notes cite — and ``threshold=0`` turns it off (see :func:`to_int8`).

**The kernel matters as much as the bytes.** ``torch._int_mm`` on a CPU hands the weight to oneDNN in its stored
layout at every call, and for one activation row (a decoding step) it streams int8 weights at about half the rate
of FBGEMM — the int8 library behind PyTorch's quantized CPU ops — whose matrix–vector kernel reads a layout made
once, for its AVX-512 VNNI instructions (chapter 9 times both on one layer). So on a CPU, an :class:`Int8Linear`
also keeps an FBGEMM copy of its codes (:func:`fbgemm_pack`) and multiplies a single row with it
(:func:`fbgemm_row`): the *same* integers — lmkit computes the row's LLM.int8() codes, FBGEMM sums their products
with the weight codes in int32 — checked against ``torch._int_mm`` on extreme codes once per process
(:func:`fbgemm_is_exact`); where FBGEMM is missing or not exact (a CPU without VNNI may saturate 16-bit pair sums),
every call takes ``torch._int_mm``. Several rows (a prefill) always take ``torch._int_mm``: one activation scale
per row is not what FBGEMM's per-tensor input scale can express. The copy costs memory (FBGEMM pads each row to
its blocks), not bytes read per step. :class:`BF16Linear` does the same for bfloat16 with oneDNN's prepacked
weights.

:func:`to_int8` and :func:`to_bf16` convert a loaded lmkit model in place — every linear layer including a tied LM
head (the embedding table keeps its float rows for the lookup). Float32 stays the reference.

What is left out: int8 *activations* of attention (scores and the KV cache stay float), and 4-bit kernels — on a
CPU without a fast int4 GEMM (``torch._weight_int4pack_mm_for_cpu`` is slower than float32 here) unpacking 4-bit
codes costs more time than the bytes it saves; ``bench/bench_generate.py`` measures it.
"""

from __future__ import annotations

import functools
import warnings

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_choice, check_number, check_tensor
from lmkit.quant.base import check_matrix, check_nonempty, replace_module
from lmkit.quant.int8_matmul import THRESHOLD, outlier_columns, quantize_rowwise
from lmkit.transformer.attention import MultiHeadAttention
from lmkit.transformer.model import Block

CUDA_MIN_ROWS = 17
"""``torch._int_mm`` on CUDA needs more than 16 rows in its first operand; decoding has 1 (rows are zero-padded)."""


def int_mm(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Exact int32 ``a @ bᵀ`` of int8 ``a`` (M, K) and ``b`` (N, K) with ``torch._int_mm``.

    On CUDA, ``_int_mm`` needs ``M > 16`` and ``K``, ``N`` multiples of 8: short inputs get zero rows appended
    (their products are dropped). On CPU it takes any shape.
    """
    if a.dtype != torch.int8 or b.dtype != torch.int8:
        raise TypeError(f"int_mm needs int8 operands, got {a.dtype} and {b.dtype}")
    if a.device.type == "cuda":
        M, K = a.shape
        if K % 8 or b.shape[0] % 8:
            raise ValueError(f"torch._int_mm on CUDA needs K and N multiples of 8, got K={K}, N={b.shape[0]}")
        if M < CUDA_MIN_ROWS:
            a = torch.cat([a, a.new_zeros(CUDA_MIN_ROWS - M, K)])
            return torch._int_mm(a, b.t())[:M]
    return torch._int_mm(a, b.t())  # (M, N) int32; b.t() is a view: the (N, K) rows are read as stored


FBGEMM_ZERO_POINT = 128
"""FBGEMM's activations are unsigned: LLM.int8()'s symmetric codes ``-127..127`` are stored as ``code + 128``."""


def fbgemm_pack(codes: torch.Tensor, step: torch.Tensor) -> torch.ScriptObject | None:
    """FBGEMM's prepacked copy of int8 ``codes`` ``(N, K)`` with per-row scales ``step`` (``c_w / 127``), or None
    where this PyTorch has no FBGEMM engine or its kernel is not exact here (:func:`fbgemm_is_exact`).

    The pack is a quantized-tensor object of PyTorch's (their creation functions warn that they are deprecated,
    pytorch#184982; the warning is silenced here, and a PyTorch without them falls back to ``torch._int_mm``).
    """
    if codes.device.type != "cpu" or not fbgemm_is_exact():
        return None
    return _fbgemm_prepack(codes, step)


def _fbgemm_prepack(codes: torch.Tensor, step: torch.Tensor) -> torch.ScriptObject | None:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            qw = torch._make_per_channel_quantized_tensor(
                codes, step.double(), torch.zeros(codes.shape[0], dtype=torch.long), 0)
            engine = torch.backends.quantized.engine
            torch.backends.quantized.engine = "fbgemm"
            try:
                return torch.ops.quantized.linear_prepack(qw, None)
            finally:
                torch.backends.quantized.engine = engine
    except (AttributeError, RuntimeError):  # no FBGEMM in this build, or the API is gone
        return None


def fbgemm_row(x: torch.Tensor, packed: torch.ScriptObject, absmax: torch.Tensor | None = None) -> torch.Tensor:
    """``(c_x c_w / 127²) · Q_x Q_wᵀ`` for one float row ``x`` ``(1, K)``, on FBGEMM's packed weight (``absmax``:
    the row's ``c_x`` if the caller has it).

    The codes ``Q_x = round(127 x / c_x)`` (``c_x`` the row's absmax) are computed here exactly as
    :func:`~lmkit.quant.int8_matmul.quantize_rowwise` computes them, and handed over as integer-valued floats with
    step 1 (FBGEMM's own rounding of ``x / step`` would differ in rare ties). FBGEMM shifts them to unsigned,
    multiplies in int32 and applies the weights' steps ``c_w / 127``; the activation's ``c_x / 127`` is applied here.
    """
    c = x.abs().amax() if absmax is None else absmax  # c_x
    cx = float(c)
    if cx == 0:  # an all-zero row: codes 0 (quantize_rowwise's scale 1)
        c, cx = c.new_ones(()), 1.0
    codes = (x * (127.0 / c)).round_()  # (1, K): Q_x, exact integers in float (the same float32 ops)
    y = torch.ops.quantized.linear_with_input_q_dq_qweight_dq_output_fp32(codes, 1.0, FBGEMM_ZERO_POINT, packed)
    return y.mul_(cx / 127.0)


@functools.cache
def fbgemm_is_exact() -> bool:
    """Whether FBGEMM's one-row int8 product equals ``torch._int_mm``'s integers on this machine, extremes included.

    Every activation code at ±127 (unsigned 1 or 255) against weight codes ±127: a kernel that adds pairs of
    ``u8 × s8`` products in 16 bits (AVX2 without VNNI) saturates there. Checked once per process.
    """
    if "fbgemm" not in torch.backends.quantized.supported_engines:
        return False
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, 2, (64, 256), generator=g, dtype=torch.int8) * 2 - 1  # ±1
    codes = codes * 127
    x = (torch.randint(0, 2, (1, 256), generator=g) * 2 - 1).float()  # ±1: codes ±127, the largest pair sums
    x[0, :8] = torch.arange(8) / 7.0  # and a few rounded ones
    packed = _fbgemm_prepack(codes, torch.ones(64))
    if packed is None:
        return False
    qx, cx = quantize_rowwise(x)
    want = int_mm(qx, codes).double()
    got = fbgemm_row(x, packed).double() * (127.0 / float(cx))
    return bool(torch.equal(got.round(), want) and (got - want).abs().max() < 1e-3 * want.abs().max())


class Int8Linear(nn.Module):
    """A linear layer stored as int8 rows + one float scale per output channel, multiplied in int8 with int32 sums.

    >>> lin = nn.Linear(64, 32, bias=False)
    >>> q = Int8Linear.from_linear(lin)
    >>> x = torch.randn(4, 64)
    >>> bool((q(x) - lin(x)).abs().max() < 0.05)
    True

    ``codes`` ``(N, K)`` int8 and ``scale`` ``(N,)`` (the row absmax ``c_w``) are buffers: the layer holds
    ``N·K + 4N`` bytes instead of ``4·N·K``. ``threshold`` > 0 turns on LLM.int8()'s outlier decomposition.
    On a CPU, ``packed`` holds FBGEMM's layout of the same codes for one-row calls (see the module docstring;
    None where FBGEMM is not used); a one-row call reads that copy instead of ``codes``.
    """

    def __init__(
        self, codes: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None = None, threshold: float = 0.0
    ) -> None:
        """Checked: ``codes`` a 2-D int8 tensor with a row and a column at least, ``scale`` one finite ``c_w >= 0``
        per row (:meth:`derive`), ``bias`` None or ``(out,)``, ``threshold`` a finite number ``>= 0``."""
        super().__init__()
        check_tensor("codes", codes)
        check_tensor("scale", scale)
        if codes.dtype != torch.int8 or codes.dim() != 2 or codes.numel() == 0:
            raise ValueError(f"codes must be a 2-D int8 (out, in) tensor with out, in >= 1, got {codes.dtype} "
                             f"{tuple(codes.shape)}")
        if scale.numel() != codes.shape[0]:
            raise ValueError(f"need one scale per output row: {codes.shape[0]} rows, {scale.numel()} scales")
        if bias is not None and check_tensor("bias", bias, floating=True).shape != codes.shape[:1]:
            raise ValueError(f"bias must be (out,) = ({codes.shape[0]},), got {tuple(bias.shape)}")
        self.out_features, self.in_features = codes.shape
        self.threshold = check_number("threshold", threshold, minimum=0.0)  # 0: no outlier columns
        self.register_buffer("codes", codes.contiguous())
        self.register_buffer("scale", scale.reshape(-1).float())  # c_w
        self.register_buffer("bias", None if bias is None else bias.detach().float().clone())
        self.register_buffer("step", None, persistent=False)  # c_w / 127: the value of one weight code
        self.register_buffer("out_scale", None, persistent=False)  # c_w / 127², used per call
        self.derive()

    def derive(self) -> None:
        """(Re)compute what follows from ``codes`` and ``scale``: the steps and the FBGEMM copy (after a load). The
        scales must be finite and ``>= 0`` (row absmaxes): a NaN one, built or loaded, would make its output NaN."""
        if not bool(torch.isfinite(self.scale).all()) or bool((self.scale < 0).any()):
            raise ValueError("scale must hold one finite row absmax >= 0 per output row, got NaN, inf or a negative "
                             "value")
        self.step = self.scale / 127.0
        self.out_scale = self.step / 127.0
        self.pack()

    def pack(self) -> None:
        """(Re)make FBGEMM's copy of the codes (None off the CPU or where FBGEMM is not used)."""
        self.packed = fbgemm_pack(self.codes, self.step)

    def _apply(self, fn, recurse=True):  # .to(device) / .cuda(): the FBGEMM copy follows the codes (none off the CPU)
        super()._apply(fn, recurse)
        self.pack()
        return self

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # load_state_dict writes new codes and scales in place
        super()._load_from_state_dict(*args, **kwargs)
        self.derive()

    @classmethod
    def from_weight(cls, w: torch.Tensor, bias: torch.Tensor | None = None, threshold: float = 0.0) -> Int8Linear:
        """Quantize a float ``(out, in)`` weight row-wise with LLM.int8()'s quantizer: ``w`` a finite, non-empty,
        floating-point matrix (``quant.base.check_matrix``: a NaN or inf would make its row's scale one)."""
        check_matrix(w, "weight")
        check_nonempty(w, "weight")
        codes, c = quantize_rowwise(w.detach())
        return cls(codes, c, bias, threshold)

    @classmethod
    def from_linear(cls, linear: nn.Linear, threshold: float = 0.0) -> Int8Linear:
        """:meth:`from_weight` of an ``nn.Linear``'s weight and bias."""
        _check_linear(linear)
        return cls.from_weight(linear.weight, linear.bias, threshold)

    def dequantized_weight(self) -> torch.Tensor:
        """The float32 ``(out, in)`` weight this layer computes with: ``Q_w c_w / 127``."""
        return self.codes.float() * self.step[:, None]

    def weight_nbytes(self) -> int:
        """Bytes read per call: the int8 codes and the float32 scales (and bias)."""
        tensors = [self.codes, self.scale] + ([] if self.bias is None else [self.bias])
        return sum(t.numel() * t.element_size() for t in tensors)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) -> (..., out)`` for a floating-point ``x`` (an integer one would come back truncated)."""
        _check_input(x, self.in_features, floating=True)
        x2 = x.reshape(-1, self.in_features).float()  # (M, K)
        one_row = self.packed is not None and x2.shape[0] == 1 and x2.device.type == "cpu"  # a decoding step
        absmax = x2.abs().amax() if one_row else None  # c_x, which the codes need: below the threshold, no outliers
        outliers = None
        if self.threshold > 0 and (absmax is None or float(absmax) >= self.threshold):
            cols = outlier_columns(x2, self.threshold).nonzero().squeeze(1)  # LLM.int8()'s outlier dimensions
            if cols.numel():
                # X_O Q_O^T in float (the weight's scale c_w / 127 is applied below, with the int8 part's)
                # (the codes' columns gathered as rows of the transpose: a contiguous (n_outliers, N) block)
                outliers = x2.index_select(1, cols) @ self.codes.t().index_select(0, cols).float()  # (M, N)
                x2 = x2.index_fill(1, cols, 0.0)
                absmax = None  # the rest's c_x is another
        if one_row:
            y = fbgemm_row(x2, self.packed, absmax)  # (1, N) = (c_x c_w / 127²) ⊙ (Q_x Q_wᵀ)
            if outliers is not None:
                y = y + outliers * self.step
        else:
            qx, cx = quantize_rowwise(x2)  # (M, K) int8, (M, 1) = c_x
            acc = int_mm(qx, self.codes)  # (M, N) int32: the exact int8 x int8 sum
            if outliers is None:
                y = acc * (cx * self.out_scale)  # (c_x c_w / 127²) ⊙ (Q_x Q_wᵀ)
            else:
                y = (acc * (cx / 127.0) + outliers) * self.step
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, threshold={self.threshold}"


def _check_linear(linear: nn.Module) -> None:
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")


def _check_input(x: torch.Tensor, in_features: int, floating: bool = False, dtype: torch.dtype | None = None) -> None:
    """A layer's input: a tensor ``(..., in_features)`` (floating-point, or of ``dtype``, when asked). Shape and
    dtype only: this runs at every decoding step."""
    check_tensor("x", x, floating=floating)
    if x.ndim == 0 or x.shape[-1] != in_features:
        raise ValueError(f"x must be (..., in_features={in_features}), got shape {tuple(x.shape)}")
    if dtype is not None and x.dtype != dtype:
        raise TypeError(f"x must have the weight's dtype {dtype}, got {x.dtype}")


def _check_model(model: nn.Module, converted: type[nn.Module] | None = None) -> None:
    """``model`` an ``nn.Module`` without ``converted`` layers: a model converted to the other format already has no
    ``nn.Linear`` left to convert (``to_int8`` would leave it bfloat16), and ``to_bf16`` would round int8 scales."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if converted is not None and any(isinstance(m, converted) for m in model.modules()):
        raise ValueError(f"model already holds {converted.__name__} layers: convert the float model instead")


def _linears(model: nn.Module) -> list[tuple[str, nn.Linear]]:
    """``(name, layer)`` for every ``nn.Linear`` of ``model`` (a tied LM head too), listed before any is swapped."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, nn.Linear)]


@torch.no_grad()
def to_int8(model: nn.Module, threshold: float = THRESHOLD, head_threshold: float | None = None) -> nn.Module:
    """Replace every ``nn.Linear`` of ``model`` (in place) by an :class:`Int8Linear`; return ``model``.

    ``threshold`` > 0 keeps LLM.int8()'s outlier columns in float; the default is the paper's 6.0, and 0 gives plain
    vector-wise int8. The LM head (the module named ``lm_head``) may get its own ``head_threshold`` (default: the
    same). On SmolLM2 the outliers matter most in the head: the final norm's output has a few feature dimensions far
    above the rest (|x| up to ~50), and with one scale per token they set the int8 step for all 576 inputs.
    A tied LM head gets its own int8 copy of the embedding matrix (the embedding keeps its float rows, read one
    row per token).

    Checked before anything is replaced (a bad layer leaves the model as it was): ``model`` an ``nn.Module`` not
    converted to bfloat16, the thresholds finite numbers ``>= 0``, every weight finite (the error names the layer).
    """
    _check_model(model, BF16Linear)
    check_number("threshold", threshold, minimum=0.0)
    if head_threshold is not None:
        check_number("head_threshold", head_threshold, minimum=0.0)
    head_threshold = threshold if head_threshold is None else head_threshold
    layers = []
    for name, linear in _linears(model):
        is_head = name.rpartition(".")[2] == "lm_head"
        try:
            layers.append((name, Int8Linear.from_linear(linear, head_threshold if is_head else threshold)))
        except ValueError as e:  # name the layer (its weight holds NaN or inf ...)
            raise ValueError(f"{name}: {e}") from None
    for name, layer in layers:
        replace_module(model, name, layer)
    return model


ONEDNN_PACKING = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")
"""Whether this PyTorch can prepack weights for oneDNN (:class:`BF16Linear` uses ``F.linear`` where not)."""


class BF16Linear(nn.Module):
    """A bfloat16 linear layer whose CPU matmul reads a copy of the weight laid out once for oneDNN's kernel.

    ``F.linear`` in bfloat16 on a CPU runs oneDNN's kernel too, but copies the plain ``(out, in)`` weight into the
    layout of its inner loop at every call; prepacking it once (``torch.ops.mkldnn._reorder_linear_weight``, what
    ``torch.compile``'s CPU backend does to frozen weights) gives the same numbers for one row up to the last bit —
    the two kernels round a sum differently about once in 10,000 outputs (20 of 192,000 over 200 random 576 × 960
    layers, each by one bfloat16 step; tests/core/test_fast_linear.py) — and is 1.4–1.6× faster on the book's machine.
    Several rows (a prefill) take ``F.linear``: there the packed kernel is no faster and sums in another order.
    ``weight`` stays the plain parameter (state dict, a tied embedding, other devices, autograd: calls with
    gradients take ``F.linear``); the packed copy is made with the layer (:meth:`pack`), dropped whenever the weight
    moves, is loaded or the layer is copied, and made again on the next CPU call. It costs a second copy of the
    weight in memory, not in the bytes one step reads.

    >>> lin = nn.Linear(64, 32).to(torch.bfloat16)
    >>> x = torch.randn(3, 64, dtype=torch.bfloat16)
    >>> with torch.no_grad():  # three rows: F.linear itself
    ...     bool(torch.equal(BF16Linear.from_linear(lin)(x), lin(x)))
    True
    """

    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None = None) -> None:
        """Checked: ``weight`` a 2-D bfloat16 tensor, ``bias`` None or ``(out,)`` in bfloat16."""
        super().__init__()
        check_tensor("weight", weight)
        if bias is not None and (check_tensor("bias", bias).shape != weight.shape[:1] or bias.dtype != weight.dtype):
            raise ValueError(f"bias must be (out,) = {tuple(weight.shape[:1])} in the weight's dtype {weight.dtype}, "
                             f"got {tuple(bias.shape)} {bias.dtype}")
        if weight.dtype != torch.bfloat16 or weight.dim() != 2:
            raise ValueError(f"weight must be a 2-D bfloat16 (out, in) tensor, got {weight.dtype} "
                             f"{tuple(weight.shape)}")
        self.out_features, self.in_features = weight.shape
        self.weight = weight if isinstance(weight, nn.Parameter) else nn.Parameter(weight, requires_grad=False)
        self.bias = bias
        self.packed: torch.Tensor | None = None
        self.pack()

    def pack(self) -> None:
        """Make oneDNN's copy of the weight (none off the CPU, or where this PyTorch cannot prepack)."""
        usable = ONEDNN_PACKING and self.weight.device.type == "cpu"
        self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight.detach(), 1) if usable else None

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> BF16Linear:
        """Wrap a bfloat16 ``nn.Linear``'s own parameters (shared, not copied: a tie to an embedding stays)."""
        _check_linear(linear)
        return cls(linear.weight, linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(..., in) -> (..., out)`` for ``x`` in the weight's dtype (oneDNN's packed kernel fails deep on others)."""
        _check_input(x, self.in_features, dtype=self.weight.dtype)
        one_row = x.numel() == x.shape[-1] and x.device.type == "cpu"  # a decoding step
        if not one_row or torch.is_grad_enabled() or not ONEDNN_PACKING:
            return F.linear(x, self.weight, self.bias)  # (for several rows the packed kernel sums in another order)
        if self.packed is None:
            self.pack()
        return torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")

    def _apply(self, fn, recurse=True):  # .to() / .cuda(): the packed copy would be stale
        self.packed = None
        return super()._apply(fn, recurse)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        self.packed = None
        super()._load_from_state_dict(*args, **kwargs)

    def __getstate__(self) -> dict:  # copy.deepcopy / pickle: oneDNN's opaque tensor has no storage to copy
        return {**self.__dict__, "packed": None}

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


@torch.no_grad()
def to_bf16(model: nn.Module) -> nn.Module:
    """Cast ``model`` to bfloat16 in place (weights, embeddings, norms) and make every ``nn.Linear`` a
    :class:`BF16Linear` (same parameters); return it.

    lmkit's norms and softmax compute in float32 internally, so only the storage and the matmuls are bfloat16.
    """
    _check_model(model, Int8Linear)
    model.to(torch.bfloat16)
    for name, linear in _linears(model):
        replace_module(model, name, BF16Linear.from_linear(linear))
    return model


FORMATS = ("float32", "bfloat16", "int8")


@torch.no_grad()
def fuse_projections(model: nn.Module) -> nn.Module:
    """Fuse every block's self-attention ``q/k/v`` and SwiGLU ``gate/up`` projections in place; return ``model``.

    The fused layers compute the same numbers (their weights are the old ones stacked) in 4 matmuls per block
    instead of 7. Fuse *before* :func:`to_int8`: int8 scales are per output row, so fusing after would be the same
    but needs float weights to stack. Fusing a fused model changes nothing (``prepare_for_decoding`` twice).
    """
    _check_model(model)
    for block in model.modules():
        if isinstance(block, Block):
            if block.attn.qkv_proj is None:
                block.attn.fuse_qkv()
            if block.ffn.gate_proj is not None:
                block.ffn.fuse_gate_up()
    return model


def prepare_for_decoding(
    model: nn.Module, fmt: str = "int8", threshold: float = THRESHOLD, head_threshold: float | None = None
) -> nn.Module:
    """lmkit's fast decoding path for ``model`` (in place): fused projections, PyTorch's fused attention op
    (``"sdpa"``), then the weights in ``fmt`` (``"float32"``, ``"bfloat16"`` or ``"int8"``; the thresholds as in
    :func:`to_int8`).

    The attention op is switched on each :class:`~lmkit.transformer.attention.MultiHeadAttention` (its own ``impl``,
    read at every call), not in ``model.config``: the config is frozen and records how the model was built, and like
    the fusion and the weight format, this conversion happens to the built model afterwards."""
    check_choice("fmt", fmt, FORMATS)
    fuse_projections(model)
    for mod in model.modules():
        if isinstance(mod, MultiHeadAttention):
            mod.impl = "sdpa"
    if fmt == "int8":
        return to_int8(model, threshold, head_threshold)
    return to_bf16(model) if fmt == "bfloat16" else model


def weight_bytes_per_token(model: nn.Module) -> int:
    """Bytes of weights one decoding step reads: every linear layer's storage plus one embedding row.

    (Norm weights are included; the KV cache, which grows with the context, is not.)
    """
    total = 0
    for mod in model.modules():
        if isinstance(mod, Int8Linear):
            total += mod.weight_nbytes()
        elif isinstance(mod, nn.Linear):
            total += sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
        elif isinstance(mod, nn.Embedding):
            total += mod.weight[0].numel() * mod.weight.element_size()
        elif not list(mod.children()):
            total += sum(p.numel() * p.element_size() for p in mod.parameters(recurse=False))
    return total


__all__ = [
    "BF16Linear", "CUDA_MIN_ROWS", "FBGEMM_ZERO_POINT", "FORMATS", "Int8Linear", "ONEDNN_PACKING", "fbgemm_is_exact",
    "fbgemm_pack", "fbgemm_row", "fuse_projections", "int_mm", "prepare_for_decoding", "to_bf16", "to_int8",
    "weight_bytes_per_token",
]
