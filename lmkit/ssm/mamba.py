"""Mamba (Gu & Dao, 2023, "Mamba: Linear-Time Sequence Modeling with Selective State Spaces"), from ``torch.nn``.

One Mamba block replaces both the attention and the MLP of a transformer block::

    x ─ RMSNorm ─ in_proj ─┬─ x ─ causal depthwise conv1d ─ SiLU ─ selective SSM ─ (+ D·x) ─┐
                           │                     └─ x_proj → Δ (low rank → dt_proj, softplus), B, C ┘
                           └─ z ─ SiLU ─────────────────────────────────────────────────────── ⊙ ─ out_proj ─ + x

* ``in_proj`` widens ``d_model`` to ``2·E`` (``E = expand · d_model``): the SSM branch ``x`` and the gate ``z``;
* ``conv1d``: a causal, depthwise convolution of width ``d_conv`` (4) mixes each channel with its last 3 tokens;
* ``x_proj`` reads ``Δ`` (through a rank-``R`` bottleneck and ``dt_proj``), ``B`` and ``C`` **from the token**: the
  selection mechanism. ``A = -exp(A_log)`` and ``D`` are plain parameters (S4D-real init ``A_n = -n``);
* the output ``y ⊙ SiLU(z)`` is projected back by ``out_proj`` and added to the residual stream.

:class:`MambaLM` stacks ``n_layers`` such blocks between an embedding and a tied LM head, with a final RMSNorm.
Generation carries a fixed-size :class:`MambaCache` per layer — the last ``d_conv − 1`` conv inputs and the
``(E, N)`` SSM state — instead of a KV cache that grows with every token. The module names (``embeddings``,
``layers.i.mixer.in_proj`` …) are those of Hugging Face's ``MambaForCausalLM`` without its ``backbone.`` prefix, so
:meth:`MambaLM.from_hf` loads its weights directly; the tests check the logits match.

Left out: the fused CUDA kernels (the point of the paper's "hardware-aware" scan: never writing the
``(B, L, E, N)`` states to HBM), Mamba-2's scalar-``A`` SSD form, and the ``residual_in_fp32`` switch (lmkit runs
the residual stream in the model's dtype).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.checks import check_choice, check_int, check_number, check_tensor, check_token_ids
from lmkit.ssm.scan import SCAN_METHODS, ScanMethod, selective_scan
from lmkit.transformer.norms import RMSNorm


@dataclass(frozen=True)
class MambaConfig:
    """Sizes of a Mamba language model (defaults: the mamba-130m shapes except width and depth). Frozen, as a model's
    config is in lmkit: derive a variant with ``dataclasses.replace(cfg, scan="sequential")`` and build from it."""

    vocab_size: int
    d_model: int
    n_layers: int
    d_state: int = 16  # N: state size per channel
    expand: int = 2  # E = expand · d_model channels inside a block
    d_conv: int = 4  # width of the causal depthwise convolution
    dt_rank: int | None = None  # R: rank of the Δ projection; None = ⌈d_model / 16⌉
    conv_bias: bool = True
    bias: bool = False  # bias of in_proj / out_proj
    norm_eps: float = 1e-5
    tie_embeddings: bool = True
    scan: ScanMethod = "chunked"  # how the forward pass runs the selective scan (all give the same numbers)
    selective: bool = True  # False: the ablation of the paper's Table 1 — Δ, B, C learned but input-independent
    dt_min: float = 1e-3  # initial Δ is log-uniform in [dt_min, dt_max]
    dt_max: float = 1e-1

    def __post_init__(self) -> None:
        """Checked: the sizes (``dt_rank`` too, unless None) are positive ints, the switches bools (``"False"`` would
        be true), ``norm_eps >= 0``, ``0 < dt_min <= dt_max`` (Δ is drawn log-uniformly between them)."""
        for name in ("vocab_size", "d_model", "n_layers", "d_state", "expand", "d_conv"):
            check_int(name, getattr(self, name), minimum=1)
        if self.dt_rank is not None:
            check_int("dt_rank", self.dt_rank, minimum=1)
        for name in ("conv_bias", "bias", "tie_embeddings", "selective"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"{name} must be a bool, got {getattr(self, name)!r}")
        check_number("norm_eps", self.norm_eps, minimum=0.0)
        check_number("dt_min", self.dt_min, above=0.0)
        check_number("dt_max (at least dt_min)", self.dt_max, minimum=self.dt_min)
        check_choice("scan", self.scan, SCAN_METHODS)

    @property
    def d_inner(self) -> int:
        return self.expand * self.d_model

    @property
    def rank(self) -> int:
        return math.ceil(self.d_model / 16) if self.dt_rank is None else self.dt_rank


class MambaCache:
    """Per-layer recurrent state for generation: ``conv`` ``(B, E, d_conv − 1)`` past conv inputs and ``ssm``
    ``(B, E, N)`` states. Its size does not depend on how many tokens have been read (compare
    :func:`lmkit.efficient.cost.kv_cache_bytes`). Same interface as lmkit's KV cache: ``length``, ``reorder``."""

    def __init__(self) -> None:
        self.conv: list[torch.Tensor] = []
        self.ssm: list[torch.Tensor] = []
        self.length = 0  # tokens read so far

    def get(self, layer: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        """Layer ``layer``'s ``(conv, ssm)`` state, or None before it is first set; ``layer`` a non-negative int (a
        negative one would read another layer's state from the end)."""
        check_int("layer", layer, minimum=0)
        return (self.conv[layer], self.ssm[layer]) if layer < len(self.conv) else None

    def set(self, layer: int, conv: torch.Tensor, ssm: torch.Tensor) -> None:
        """Store layer ``layer``'s state (layers are filled in order): ``conv`` ``(B, E, d_conv - 1)`` and ``ssm``
        ``(B, E, N)`` tensors with the same batch and channels (shapes only: this runs at every token)."""
        check_int("layer", layer, minimum=0)
        check_tensor("conv", conv, 3, "(batch, channels, d_conv - 1)")
        check_tensor("ssm", ssm, 3, "(batch, channels, d_state)")
        if conv.shape[:2] != ssm.shape[:2]:
            raise ValueError(f"conv and ssm states must share (batch, channels), got {tuple(conv.shape)} and "
                             f"{tuple(ssm.shape)}")
        if layer == len(self.conv):
            self.conv.append(conv)
            self.ssm.append(ssm)
        elif layer < len(self.conv):
            self.conv[layer], self.ssm[layer] = conv, ssm
        else:
            raise ValueError(f"layers must be filled in order: got layer {layer} with {len(self.conv)} cached")

    def reorder(self, index: torch.Tensor) -> None:
        """Select / reorder batch rows in place (beam search): ``index`` a 1-D integer tensor of rows in ``[0, B)``."""
        check_tensor("index", index, 1, "1-D (rows,)")
        if index.dtype not in (torch.int32, torch.int64):
            raise TypeError(f"index must be an integer tensor of batch rows, got {index.dtype}")
        rows = self.conv[0].shape[0] if self.conv else None
        if rows is not None and index.numel() and (int(index.min()) < 0 or int(index.max()) >= rows):
            raise ValueError(f"index must hold rows in [0, {rows}), got rows from {int(index.min())} to "
                             f"{int(index.max())}")
        self.conv = [c.index_select(0, index.to(c.device)) for c in self.conv]
        self.ssm = [s.index_select(0, index.to(s.device)) for s in self.ssm]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in self.conv + self.ssm)


class MambaMixer(nn.Module):
    """The Mamba block's sequence mixer (HF: ``MambaMixer``): ``(B, T, d_model) -> (B, T, d_model)``."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        E, N, R = cfg.d_inner, cfg.d_state, cfg.rank
        self.cfg = cfg
        self.in_proj = nn.Linear(cfg.d_model, 2 * E, bias=cfg.bias)
        self.conv1d = nn.Conv1d(E, E, cfg.d_conv, groups=E, bias=cfg.conv_bias)  # depthwise; padding done by hand
        if cfg.selective:
            self.x_proj = nn.Linear(E, R + 2 * N, bias=False)  # token → (Δ low-rank, B, C): the selection
        else:  # time-invariant (S4D-like): one Δ per channel (dt_proj's bias), one B and one C for every token
            self.B = nn.Parameter(torch.randn(N) / N**0.5)
            self.C = nn.Parameter(torch.randn(N) / N**0.5)
        self.dt_proj = nn.Linear(R, E, bias=True)
        self.A_log = nn.Parameter(torch.log(torch.arange(1, N + 1, dtype=torch.float32)).repeat(E, 1))  # A_n = -n
        self.D = nn.Parameter(torch.ones(E))
        self.out_proj = nn.Linear(E, cfg.d_model, bias=cfg.bias)
        self._init_dt()

    @torch.no_grad()
    def _init_dt(self) -> None:
        """Mamba's Δ init: ``dt_proj`` weights ``U(±R^-½)``; the bias is softplus⁻¹ of a log-uniform Δ."""
        cfg = self.cfg
        nn.init.uniform_(self.dt_proj.weight, -cfg.rank**-0.5, cfg.rank**-0.5)
        dt = torch.exp(torch.rand(cfg.d_inner) * (math.log(cfg.dt_max) - math.log(cfg.dt_min)) + math.log(cfg.dt_min))
        self.dt_proj.bias.copy_(dt + torch.log(-torch.expm1(-dt)))  # softplus(bias) = dt

    def check_hidden(self, hidden: torch.Tensor, ndim: int) -> torch.Size:
        """``hidden``'s shape if it is ``(batch, length >= 1, d_model)`` (``ndim`` 3) or ``(batch, d_model)`` (2) in
        the weights' dtype; else a ``TypeError`` (not a tensor, another dtype) or a ``ValueError`` naming the shape."""
        layout = "(batch, length, d_model)" if ndim == 3 else "(batch, d_model)"
        check_tensor("hidden", hidden, ndim, layout)
        if hidden.shape[-1] != self.cfg.d_model or (ndim == 3 and hidden.shape[1] == 0):
            raise ValueError(f"hidden must be {layout} with d_model={self.cfg.d_model} (and length >= 1), got "
                             f"{tuple(hidden.shape)}")
        if hidden.dtype != self.in_proj.weight.dtype:
            raise TypeError(f"hidden must have the weights' dtype {self.in_proj.weight.dtype}, got {hidden.dtype}")
        return hidden.shape

    def check_state(self, state: Any, batch: int) -> None:
        """``state`` None or a ``(conv, ssm)`` pair of tensors ``(batch, E, d_conv - 1)``, ``(batch, E, N)``; else a
        ``TypeError`` / ``ValueError`` (a cache of another batch size or another model)."""
        if state is None:
            return
        pair = isinstance(state, (tuple, list)) and len(state) == 2
        if not pair or not all(isinstance(t, torch.Tensor) for t in state):
            raise TypeError(f"state must be a (conv, ssm) pair of tensors, got {type(state).__name__}")
        E = self.cfg.d_inner
        want, got = ((batch, E, self.cfg.d_conv - 1), (batch, E, self.cfg.d_state)), tuple(t.shape for t in state)
        if got != want:
            raise ValueError(f"state must be (conv, ssm) of shapes {want}, got {tuple(map(tuple, got))}: a cache of "
                             "another batch size or model?")

    def ssm_params(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The selection: ``(Δ (B, T, E) > 0, A (E, N) < 0, B (B, T, N), C (B, T, N))`` from the conv output."""
        N, A = self.cfg.d_state, -torch.exp(self.A_log.float())
        if not self.cfg.selective:
            lead = x.shape[:-1]
            return F.softplus(self.dt_proj.bias).expand(x.shape), A, self.B.expand(*lead, N), self.C.expand(*lead, N)
        dt, B, C = self.x_proj(x).split([self.cfg.rank, N, N], dim=-1)
        return F.softplus(self.dt_proj(dt)), A, B, C

    def forward(
        self, hidden: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None,
        mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Mix ``hidden`` ``(B, T, C)`` in parallel (a scan over T); ``state`` continues from earlier tokens.

        ``mask`` ``(B, T)`` is False on (left) padding: those inputs are zeroed before and after the conv, so the
        state stays 0 through them (as HF does). Returns the output and the new ``(conv, ssm)`` state. Checked
        (shapes and dtype only): ``hidden`` ``(B, T >= 1, d_model)`` in the weights' dtype, ``mask`` ``(B, T)``,
        ``state`` a pair of this batch and model (:meth:`check_state`).
        """
        B, T = self.check_hidden(hidden, 3)[:2]
        if mask is not None and (not isinstance(mask, torch.Tensor) or mask.shape != (B, T)):
            raise ValueError(f"mask must be a (batch, length) = {(B, T)} tensor, got "
                             f"{tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__}")
        self.check_state(state, B)
        K = self.cfg.d_conv
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (B, T, E) each
        if mask is not None:
            x = x * mask[..., None]
        xt = x.transpose(1, 2)  # (B, E, T): conv1d wants channels first
        past = xt.new_zeros(B, xt.shape[1], K - 1) if state is None else state[0]
        window = torch.cat([past, xt], dim=-1)  # (B, E, K-1+T): causal = only past inputs on the left
        x = F.silu(F.conv1d(window, self.conv1d.weight, self.conv1d.bias, groups=xt.shape[1])).transpose(1, 2)
        if mask is not None:
            x = x * mask[..., None]
        delta, A, Bm, Cm = self.ssm_params(x)
        y, h = selective_scan(x, delta, A, Bm, Cm, self.D, z, None if state is None else state[1], self.cfg.scan)
        return self.out_proj(y), (window[..., -(K - 1):] if K > 1 else window[..., :0], h)

    def step(
        self, hidden: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """One token ``hidden`` ``(B, C)`` as an RNN cell: ``O(1)`` time and memory per token, whatever came before.
        Checked as :meth:`forward` (shapes only)."""
        K, E, N = self.cfg.d_conv, self.cfg.d_inner, self.cfg.d_state
        self.check_state(state, self.check_hidden(hidden, 2)[0])
        if state is None:
            state = (hidden.new_zeros(hidden.shape[0], E, K - 1), hidden.new_zeros(hidden.shape[0], E, N))
        conv_state, h = state
        x, z = self.in_proj(hidden).chunk(2, dim=-1)  # (B, E)
        window = torch.cat([conv_state, x[..., None]], dim=-1)  # (B, E, K): the last K conv inputs
        x = (window * self.conv1d.weight[:, 0]).sum(-1)
        x = F.silu(x + self.conv1d.bias if self.conv1d.bias is not None else x)
        delta, A, Bm, Cm = self.ssm_params(x)  # (B, E), (E, N), (B, N), (B, N)
        h = torch.exp(delta[..., None] * A) * h + (delta * x)[..., None] * Bm[:, None, :]  # h = Āh + B̄x
        y = (h * Cm[:, None, :]).sum(-1) + self.D * x  # y = C·h + D x
        return self.out_proj(y * F.silu(z)), (window[..., 1:], h)


class MambaBlock(nn.Module):
    """Residual block ``x + Mixer(RMSNorm(x))`` (pre-norm; Mamba has no separate MLP)."""

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.norm = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.mixer = MambaMixer(cfg)

    def forward(self, x: torch.Tensor, state=None, mask=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        y, state = self.mixer(self.norm(x), state, mask)
        return x + y, state

    def step(self, x: torch.Tensor, state=None) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        y, state = self.mixer.step(self.norm(x), state)
        return x + y, state


@dataclass
class MambaOutput:
    """``logits`` ``(B, T, V)`` and ``hidden_states`` ``(B, T, C)`` after the final norm."""

    logits: torch.Tensor
    hidden_states: torch.Tensor


class MambaLM(nn.Module):
    """Embedding → ``n_layers`` :class:`MambaBlock` s → RMSNorm → LM head (tied to the embedding by default).

    Obeys lmkit's decoding contract (:mod:`lmkit.decoding.step`), so ``lmkit.decoding.generate(model, ids,
    cache=MambaCache())`` works: a call with a non-empty cache and one new token runs :meth:`MambaMixer.step` in
    every layer (the recurrent mode); longer calls run the parallel scan from the cached state.
    """

    def __init__(self, cfg: MambaConfig) -> None:
        super().__init__()
        self.config = cfg
        self.embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        nn.init.normal_(self.embeddings.weight, std=0.02)
        self.layers = nn.ModuleList(MambaBlock(cfg) for _ in range(cfg.n_layers))
        self.norm_f = RMSNorm(cfg.d_model, cfg.norm_eps)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.embeddings.weight

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        cache: MambaCache | None = None,
    ) -> MambaOutput:
        """Logits for ``input_ids`` ``(B, T)``. ``attention_mask`` ``(B, S)`` (True on real tokens) covers cached and
        new tokens, as in lmkit's transformer; ``position_ids`` is accepted and ignored — the recurrence itself
        orders the tokens, Mamba has no position embeddings. Checked: the ids (:func:`~lmkit.checks.check_token_ids`),
        ``cache`` a :class:`MambaCache`, the mask's shape; no tokens give empty logits."""
        del position_ids
        check_token_ids("input_ids", input_ids, self.config.vocab_size)
        if cache is not None and not isinstance(cache, MambaCache):
            raise TypeError(f"cache must be a MambaCache, got {type(cache).__name__}")
        (B, T), past = input_ids.shape, 0 if cache is None else cache.length
        if attention_mask is not None:
            check_tensor("attention_mask", attention_mask)
            if attention_mask.shape != (B, past + T):
                raise ValueError(f"attention_mask must be (batch, cached + new) = {(B, past + T)}, got "
                                 f"{tuple(attention_mask.shape)}")
        if T == 0:  # no tokens: empty logits, the cache untouched (as lmkit's Transformer)
            x = self.norm_f(self.embeddings(input_ids))
            return MambaOutput(logits=self.lm_head(x), hidden_states=x)
        mask = None
        if attention_mask is not None:
            mask = attention_mask[:, -T:].to(self.embeddings.weight.dtype)
            if bool(mask.all()):
                mask = None
        x = self.embeddings(input_ids)
        recurrent = cache is not None and cache.length > 0 and T == 1
        for i, layer in enumerate(self.layers):
            state = cache.get(i) if cache is not None else None
            if recurrent:
                y, state = layer.step(x[:, 0], state)
                x = y[:, None]
            else:
                x, state = layer(x, state, mask)
            if cache is not None:
                cache.set(i, *state)
        if cache is not None:
            cache.length += T
        x = self.norm_f(x)
        return MambaOutput(logits=self.lm_head(x), hidden_states=x)

    @classmethod
    def from_hf(cls, hf_model: Any, scan: ScanMethod = "chunked") -> MambaLM:
        """Build from a Hugging Face ``MambaForCausalLM`` (its config and weights): the names are the same without
        the ``backbone.`` prefix; HF's conv weight ``(E, 1, K)`` is lmkit's too."""
        c = hf_model.config
        cfg = MambaConfig(
            vocab_size=c.vocab_size, d_model=c.hidden_size, n_layers=c.num_hidden_layers, d_state=c.state_size,
            expand=c.expand, d_conv=c.conv_kernel, dt_rank=int(c.time_step_rank), conv_bias=c.use_conv_bias,
            bias=c.use_bias, norm_eps=c.layer_norm_epsilon,
            tie_embeddings=bool(getattr(c, "tie_word_embeddings", True)), scan=scan,
        )
        if c.intermediate_size != cfg.d_inner or getattr(c, "hidden_act", "silu") != "silu":
            raise ValueError("only HF Mamba configs with intermediate_size = expand·hidden_size and SiLU are supported")
        model = cls(cfg)
        state = {k.removeprefix("backbone."): v for k, v in hf_model.state_dict().items()}
        model.load_state_dict(state, strict=True)
        return model
