"""Time-LLM (Jin et al., ICLR 2024): forecasting by *reprogramming* a frozen language model.

The language model never sees numbers as text. A window of a series is turned into a few "words" it can read:

1. **RevIN-style normalisation** (Kim et al., 2022): each window is standardised by its own mean and standard
   deviation, and the forecast is de-normalised with the same two numbers, so the model only predicts *shape*.
2. **Patching**: the window ``(T,)`` is padded at the end by repeating its last value ``stride`` times and cut into
   ``P = (T - patch_len) / stride + 2`` overlapping patches, each embedded to ``d_model`` by a width-3 convolution
   over the patch sequence (:class:`PatchEmbedding`).
3. **Reprogramming**: the patches cross-attend to ``S`` **text prototypes** — a *learned linear map* of the LM's own
   word-embedding matrix, ``prototypes = W @ E`` (``E``: ``(V, d_llm)``, ``W``: ``(S, V)``) — so every patch becomes a
   mixture of word-like vectors in the LM's input space (:class:`Reprogramming`).
4. **Prompt-as-prefix**: a text prompt with the dataset's description, the task and the window's statistics (min,
   max, median, trend, top autocorrelation lags) is embedded with the LM's token embedding and put in front of the
   reprogrammed patches.
5. The frozen LM runs over ``[prompt; patches]``; the first ``d_ff`` channels of its last hidden states at the patch
   positions are flattened and a linear **output projection** maps them to the ``pred_len`` future values.

Only the patch embedding, the prototype map, the reprogramming attention and the output projection are trained. Two
details follow the reference implementation (KimMeen/Time-LLM, ``models/TimeLLM.py``): the hidden states are cut to
their first ``d_ff`` channels before the head, and ``n_layers`` keeps only the first LM layers (its ``llm_layers``).
One addition: ``n_words`` keeps only the first ``n_words`` rows of the embedding matrix for the prototype map (in a
byte-level BPE the low ids are the bytes and the earliest, most frequent merges); the reference maps all of them,
which for SmolLM2's 49,152 x 576 matrix costs 2.8 GFLOP per forward pass for 100 prototypes.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from lmkit.checks import check_int, check_number, check_tensor
from lmkit.transformer.model import AttentionInputs, Transformer
from lmkit.transformer.positions import positions_from_mask, rope_angles
from lmkit.utils import pad_batch

DESCRIPTION = "A synthetic hourly load series with daily and weekly seasonality."


def revin(x: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
    """Standardise each window ``x`` ``(B, T)`` over time: ``((x - mean) / std, (mean, std))``, std with ``eps``.
    Checked: ``x`` a floating-point tensor of windows of ``T >= 1`` values, ``eps > 0`` (at 0 a constant window
    divides 0 by 0)."""
    check_tensor("x", x, floating=True)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must hold windows of at least one value (B, T >= 1), got shape {tuple(x.shape)}")
    check_number("eps", eps, above=0.0)
    mean = x.mean(-1, keepdim=True)
    std = (x.var(-1, keepdim=True, unbiased=False) + eps).sqrt()
    return (x - mean) / std, (mean, std)


def revin_inverse(y: torch.Tensor, stats: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """Undo :func:`revin` on a forecast ``y`` ``(B, H)`` with the window's own ``(mean, std)``: a pair of tensors
    ``(B, 1)`` for the same windows (another batch would broadcast one window's statistics over all)."""
    check_tensor("y", y)
    want = (*y.shape[:-1], 1)
    if not isinstance(stats, (tuple, list)) or len(stats) != 2 or not all(isinstance(t, torch.Tensor) for t in stats):
        raise TypeError(f"stats must be the (mean, std) pair of tensors revin returned, got {type(stats).__name__}")
    if any(tuple(t.shape) != want for t in stats):
        raise ValueError(f"stats must be (mean, std) of shape {want} for y {tuple(y.shape)}, got "
                         f"{[tuple(t.shape) for t in stats]}")
    mean, std = stats
    return y * std + mean


def top_lags(x: torch.Tensor, k: int = 5) -> torch.Tensor:
    """The ``k`` lags ``(B, k)`` with the largest circular autocorrelation of each window ``x`` ``(B, T)`` (by FFT:
    ``irfft(|rfft(x)|^2)``, as the reference computes it; lag 0 is included when it wins). ``x`` floating-point with
    ``T >= 1``, ``k`` in ``1..T``."""
    check_tensor("x", x, floating=True)
    if x.ndim == 0 or x.shape[-1] == 0:
        raise ValueError(f"x must hold windows of at least one value (B, T >= 1), got shape {tuple(x.shape)}")
    check_int("k (lags, at most the window length)", k, minimum=1, maximum=x.shape[-1])
    f = torch.fft.rfft(x, dim=-1)
    corr = torch.fft.irfft(f * f.conj(), n=x.shape[-1], dim=-1)  # (B, T)
    return corr.topk(k, dim=-1).indices


def series_prompt(x: torch.Tensor, pred_len: int, description: str = DESCRIPTION, n_lags: int = 5) -> list[str]:
    """Time-LLM's prompt for each (normalised) window of ``x`` ``(B, T)``: dataset, task, input statistics.
    Checked: ``x`` floating-point ``(B, T >= 1)``, ``pred_len`` a positive int, ``description`` a ``str``, ``n_lags``
    in ``1..T``."""
    check_tensor("x", x, 2, "(batch, seq_len)", floating=True)
    check_int("pred_len", pred_len, minimum=1)
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")
    check_int("n_lags (at most the window length)", n_lags, minimum=1, maximum=x.shape[-1])
    lags = top_lags(x, n_lags).tolist()
    trend = x.diff(dim=-1).sum(-1)
    prompts = []
    for i in range(x.shape[0]):
        row = x[i]
        prompts.append(
            f"Dataset description: {description} "
            f"Task description: forecast the next {pred_len} steps given the previous {x.shape[-1]} steps; "
            f"Input statistics: min value {row.min():.3f}, max value {row.max():.3f}, "
            f"median value {row.median():.3f}, the trend of input is {'upward' if trend[i] > 0 else 'downward'}, "
            f"top {n_lags} lags are: {lags[i]}"
        )
    return prompts


class PatchEmbedding(nn.Module):
    """``(B, T) -> (B, P, d_model)``: replicate-pad ``stride`` values at the end, cut patches of ``patch_len`` every
    ``stride`` steps, embed each with a circular width-3 convolution over the patch sequence (no bias)."""

    def __init__(self, patch_len: int, stride: int, d_model: int, dropout: float = 0.0) -> None:
        super().__init__()
        check_int("patch_len", patch_len, minimum=1)
        check_int("stride", stride, minimum=1)
        check_int("d_model", d_model, minimum=1)
        self.patch_len, self.stride = patch_len, stride
        self.conv = nn.Conv1d(patch_len, d_model, kernel_size=3, padding=1, padding_mode="circular", bias=False)
        self.dropout = nn.Dropout(dropout)

    def n_patches(self, seq_len: int) -> int:
        return (seq_len - self.patch_len) // self.stride + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, T >= patch_len)`` in the weights' dtype -> ``(B, P, d_model)``."""
        check_tensor("x", x, 2, "(batch, seq_len)")
        if x.dtype != self.conv.weight.dtype:
            raise TypeError(f"x must have the weights' dtype {self.conv.weight.dtype}, got {x.dtype}")
        if x.shape[-1] < self.patch_len:
            raise ValueError(f"series of length {x.shape[-1]} is shorter than patch_len={self.patch_len}")
        x = torch.cat([x, x[:, -1:].expand(-1, self.stride)], dim=-1)  # (B, T + stride): repeat the last value
        patches = x.unfold(-1, self.patch_len, self.stride)  # (B, P, patch_len)
        return self.dropout(self.conv(patches.transpose(1, 2)).transpose(1, 2))  # (B, P, d_model)


class Reprogramming(nn.Module):
    """Multi-head cross-attention from patch embeddings ``(B, P, d_model)`` (queries) to text prototypes
    ``(S, d_llm)`` (keys and values), ``d_keys`` per head, projected out to ``d_llm``: ``(B, P, d_llm)``."""

    def __init__(self, d_model: int, n_heads: int, d_keys: int, d_llm: int, dropout: float = 0.0) -> None:
        super().__init__()
        for name, value in (("d_model", d_model), ("n_heads", n_heads), ("d_keys", d_keys), ("d_llm", d_llm)):
            check_int(name, value, minimum=1)
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_keys * n_heads)
        self.key = nn.Linear(d_llm, d_keys * n_heads)
        self.value = nn.Linear(d_llm, d_keys * n_heads)
        self.out = nn.Linear(d_keys * n_heads, d_llm)
        self.dropout = nn.Dropout(dropout)

    def forward(self, patches: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
        """Checked (shapes only): ``patches`` ``(B, P, d_model)``, ``prototypes`` ``(S >= 1, d_llm)``."""
        check_tensor("patches", patches, 3, "(batch, patches, d_model)")
        check_tensor("prototypes", prototypes, 2, "(prototypes, d_llm)")
        if patches.shape[-1] != self.query.in_features:
            raise ValueError(f"patches must be (batch, patches, d_model={self.query.in_features}), got "
                             f"{tuple(patches.shape)}")
        if prototypes.shape[0] == 0 or prototypes.shape[1] != self.key.in_features:
            raise ValueError(f"prototypes must be (S >= 1, d_llm={self.key.in_features}), got "
                             f"{tuple(prototypes.shape)}")
        B, P, _ = patches.shape
        S, H = prototypes.shape[0], self.n_heads
        q = self.query(patches).view(B, P, H, -1).transpose(1, 2)  # (B, H, P, E)
        k = self.key(prototypes).view(S, H, -1).transpose(0, 1)  # (H, S, E)
        v = self.value(prototypes).view(S, H, -1).transpose(0, 1)  # (H, S, E)
        weights = self.dropout(((q @ k.transpose(-2, -1)) * q.shape[-1] ** -0.5).softmax(-1))  # (B, H, P, S)
        return self.out((weights @ v).transpose(1, 2).reshape(B, P, -1))  # (B, P, d_llm)


def run_backbone(model: Transformer, x: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 n_layers: int | None = None) -> torch.Tensor:
    """The hidden states ``(B, T, C)`` of lmkit ``model``'s first ``n_layers`` blocks (all: ``None``) and its final
    norm, for input *embeddings* ``x`` ``(B, T, C)`` instead of token ids; ``attention_mask`` ``(B, T)`` marks real
    positions (left padding)."""
    cfg = model.config
    if cfg.positions not in ("rope", "none"):
        raise ValueError(f"run_backbone handles rope or no positions, not {cfg.positions!r}")
    B, T, _ = x.shape
    mask = torch.ones(B, T, dtype=torch.bool, device=x.device) if attention_mask is None else attention_mask.bool()
    rope = None
    if cfg.positions == "rope":
        cos, sin = rope_angles(positions_from_mask(mask, T), model.inv_freq)
        rope = (cos, sin, cfg.rope_pairing)
    a = AttentionInputs(bias=model.attention_bias(mask, T, 0, 0, x.dtype), rope=rope)
    for block in model.blocks[:n_layers]:
        x = block(x, a)
    return model.norm_f(x) if model.norm_f is not None else x


def _check_timellm(backbone: Any, tokenizer: Any, seq_len: int, pred_len: int, patch_len: int, n_heads: int,
                   d_ff: int, n_prototypes: int, n_words: int | None, n_layers: int | None, description: str) -> None:
    """:class:`TimeLLM`'s arguments: an lmkit ``Transformer`` and a tokenizer with ``encode``; sizes that leave at
    least one patch (``seq_len >= patch_len``), at least one key channel per head (``n_heads <= d_ff``), at least one
    prototype, and ``n_words`` / ``n_layers`` within the backbone's vocabulary / depth (a slice past either silently
    keeps everything, a negative one drops from the end)."""
    if not isinstance(backbone, Transformer):
        raise TypeError(f"backbone must be an lmkit Transformer, got {type(backbone).__name__}")
    if not callable(getattr(tokenizer, "encode", None)):
        raise TypeError(f"tokenizer must have an encode(text) method, got {type(tokenizer).__name__}")
    cfg = backbone.config
    check_int("patch_len", patch_len, minimum=1)
    check_int("seq_len (at least patch_len)", seq_len, minimum=patch_len)
    check_int("pred_len", pred_len, minimum=1)
    check_int("d_ff (channels kept of the backbone's width)", d_ff, minimum=1, maximum=cfg.d_model)
    check_int("n_heads (at most d_ff)", n_heads, minimum=1, maximum=d_ff)
    check_int("n_prototypes", n_prototypes, minimum=1)
    if n_words is not None:
        check_int("n_words (at most the vocabulary)", n_words, minimum=1, maximum=cfg.vocab_size)
    if n_layers is not None:
        check_int("n_layers (at most the backbone's)", n_layers, minimum=1, maximum=cfg.n_layers)
    if not isinstance(description, str):
        raise TypeError(f"description must be a str, got {type(description).__name__}")


class TimeLLM(nn.Module):
    """Time-LLM around a frozen lmkit decoder ``backbone`` (e.g. SmolLM2) and its ``tokenizer``.

    ``forward(x)``: windows ``(B, seq_len)`` -> forecasts ``(B, pred_len)``. Channels of a multivariate series are
    forecast independently: fold them into the batch.
    """

    def __init__(
        self,
        backbone: Transformer,
        tokenizer: Any,
        seq_len: int,
        pred_len: int,
        patch_len: int = 16,
        stride: int = 8,
        d_model: int = 32,
        n_heads: int = 8,
        d_ff: int = 128,
        n_prototypes: int = 100,
        n_words: int | None = None,
        n_layers: int | None = None,
        description: str = DESCRIPTION,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        _check_timellm(backbone, tokenizer, seq_len, pred_len, patch_len, n_heads, d_ff, n_prototypes, n_words,
                       n_layers, description)
        d_llm = backbone.config.d_model
        for p in backbone.parameters():
            p.requires_grad_(False)
        self.backbone, self.tokenizer = backbone.eval(), tokenizer
        self.seq_len, self.pred_len, self.d_ff, self.n_layers, self.description = (
            seq_len, pred_len, d_ff, n_layers, description)
        self.n_words = n_words or backbone.config.vocab_size
        self.patch_embedding = PatchEmbedding(patch_len, stride, d_model, dropout)
        self.n_patches = self.patch_embedding.n_patches(seq_len)
        self.mapping = nn.Linear(self.n_words, n_prototypes)  # prototypes = W @ E (+ bias), E = word embeddings
        self.reprogramming = Reprogramming(d_model, n_heads, d_ff // n_heads, d_llm, dropout)
        self.head = nn.Linear(d_ff * self.n_patches, pred_len)
        self.dropout = nn.Dropout(dropout)

    def train(self, mode: bool = True) -> TimeLLM:
        super().train(mode)
        self.backbone.eval()  # frozen: no dropout inside the language model
        return self

    def prototypes(self) -> torch.Tensor:
        """The ``(S, d_llm)`` text prototypes: a learned linear combination of the first ``n_words`` word embeddings."""
        words = self.backbone.tok_emb.weight[: self.n_words]  # (V', d_llm), frozen
        return self.mapping(words.T).T  # (S, d_llm)

    def prompt_embeddings(self, x_norm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Left-padded prompt embeddings ``(B, L, d_llm)`` and their mask ``(B, L)``."""
        ids = [self.tokenizer.encode(p) for p in series_prompt(x_norm, self.pred_len, self.description)]
        tokens, mask = pad_batch(ids, pad_id=0, left=True)  # every prompt ends where the patches begin
        return self.backbone.tok_emb(tokens.to(x_norm.device)), mask.to(x_norm.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Forecasts ``(B, pred_len)`` of windows ``x`` ``(B, seq_len)``, a floating-point tensor."""
        check_tensor("x", x, floating=True)
        if x.ndim != 2 or x.shape[1] != self.seq_len:
            raise ValueError(f"x must be (batch, seq_len={self.seq_len}), got {tuple(x.shape)}")
        x_norm, stats = revin(x)
        prompt, prompt_mask = self.prompt_embeddings(x_norm)  # (B, L, d_llm)
        patches = self.reprogramming(self.patch_embedding(x_norm), self.prototypes())  # (B, P, d_llm)
        mask = torch.cat([prompt_mask, prompt_mask.new_ones(x.shape[0], self.n_patches)], dim=1)
        h = run_backbone(self.backbone, torch.cat([prompt, patches], dim=1), mask, self.n_layers)
        h = h[:, -self.n_patches :, : self.d_ff]  # (B, P, d_ff): patch positions, first d_ff channels
        y = self.head(self.dropout(h.transpose(1, 2).flatten(1)))  # (B, pred_len), flattened (d_ff, P) as the ref.
        return revin_inverse(y, stats)
