"""Fine-tuning heads and gradual unfreezing.

* **GPT-1** (Radford et al., 2018): the decoder reads the whole input; a new linear layer on the final
  hidden state of the *last* token predicts the label — in a causal model only that position has seen
  every token. The loss adds the language-modelling loss with weight λ = 0.5 (:func:`gpt1_loss`).
* **BERT** (Devlin et al., 2019): a linear layer on the ``[CLS]`` token's final state after BERT's pooler
  (``tanh(W h_CLS + b)``) and dropout; sentence-embedding models such as MiniLM use the mean over real
  tokens instead (``pooling="mean"``).
* **Gradual unfreezing** (ULMFiT, Howard & Ruder, 2018): train the head first, then unfreeze one more
  layer group from the top at each stage, so the general lower layers are not wrecked by the large early
  gradients of a random head (:class:`GradualUnfreezing`).

The heads work with any backbone whose ``forward(input_ids, attention_mask=...)`` returns an object with
``.hidden_states`` (lmkit's :class:`Transformer`) or ``.last_hidden_state`` (HF models), shaped (B, T, C).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn import functional as F

from lmkit.checks import check_choice, check_int, choices
from lmkit.training.objectives import causal_lm_loss
from lmkit.transformer.pooling import mean_pool


def _final_states(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
    out = backbone(input_ids, attention_mask=attention_mask)
    states = getattr(out, "hidden_states", None)
    if not torch.is_tensor(states):
        states = getattr(out, "last_hidden_state", None)
    if not torch.is_tensor(states) or states.dim() != 3:
        raise TypeError("the backbone must return .hidden_states or .last_hidden_state shaped (B, T, C)")
    return states  # (B, T, C)


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, for left *or* right padding. (B, T) bool -> (B,) long."""
    if attention_mask.dim() != 2:
        raise ValueError(f"attention_mask must be (B, T), got shape {tuple(attention_mask.shape)}")
    mask = attention_mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError("every row needs at least one real token")
    t = mask.shape[1]
    return (t - 1) - mask.flip(1).int().argmax(dim=1)


class LastTokenClassifier(nn.Module):
    """GPT-1 style: ``logits = W h_last + b``, ``h_last`` the final state of each row's last real token."""

    def __init__(self, backbone: nn.Module, hidden_size: int, n_classes: int, bias: bool = True):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Linear(hidden_size, n_classes, bias=bias)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        states = _final_states(self.backbone, input_ids, attention_mask)  # (B, T, C)
        if attention_mask is None:
            last = states[:, -1]
        else:
            last = states[torch.arange(states.shape[0], device=states.device), last_token_index(attention_mask)]
        return self.head(last)  # (B, n_classes)


Pooling = Literal["pooler", "cls", "mean"]


class SequenceClassifier(nn.Module):
    """BERT style: pool the encoder's final states, dropout, linear classifier.

    ``pooling``: ``"pooler"`` (BERT: ``tanh(W h_[CLS] + b)``), ``"cls"`` (the raw ``[CLS]`` state) or
    ``"mean"`` (average over real tokens, as sentence-transformers models such as MiniLM are trained).
    """

    def __init__(
        self, backbone: nn.Module, hidden_size: int, n_classes: int, pooling: Pooling = "pooler", dropout: float = 0.1
    ):
        super().__init__()
        check_choice("pooling", pooling, choices(Pooling))
        self.backbone, self.pooling = backbone, pooling
        self.pooler = nn.Linear(hidden_size, hidden_size) if pooling == "pooler" else None
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(hidden_size, n_classes)

    def pool(self, states: torch.Tensor, attention_mask: torch.Tensor | None) -> torch.Tensor:
        """(B, T, C) -> (B, C)."""
        if self.pooling == "mean":
            return states.mean(dim=1) if attention_mask is None else mean_pool(states, attention_mask)
        cls = states[:, 0]
        return torch.tanh(self.pooler(cls)) if self.pooler is not None else cls

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        states = _final_states(self.backbone, input_ids, attention_mask)
        return self.classifier(self.dropout(self.pool(states, attention_mask)))  # (B, n_classes)


def gpt1_loss(
    class_logits: torch.Tensor,
    labels: torch.Tensor,
    lm_logits: torch.Tensor | None = None,
    input_ids: torch.Tensor | None = None,
    lm_weight: float = 0.5,
) -> torch.Tensor:
    """GPT-1's fine-tuning objective ``L3 = L2(task) + λ·L1(language model)`` (λ = 0.5 in the paper).

    Without ``lm_logits`` it is the plain task cross-entropy.
    """
    loss = F.cross_entropy(class_logits, labels)
    if lm_logits is not None:
        if input_ids is None:
            raise ValueError("the auxiliary LM loss needs input_ids")
        loss = loss + lm_weight * causal_lm_loss(lm_logits, input_ids)
    return loss


def set_trainable(modules: Sequence[nn.Module], trainable: bool) -> None:
    for m in modules:
        for p in m.parameters():
            p.requires_grad_(trainable)


class GradualUnfreezing:
    """ULMFiT's schedule over layer groups ordered bottom → top (e.g. embeddings, block 0, ..., head).

    ``stage(k)`` leaves the top ``k + 1`` groups trainable and freezes the rest: stage 0 trains the top
    group (the new head) only; each later stage (typically each epoch) unfreezes the next group down.
    """

    def __init__(self, groups: Sequence[nn.Module | Sequence[nn.Module]]):
        if not groups:
            raise ValueError("need at least one layer group")
        self.groups = [list(g) if isinstance(g, (list, tuple)) else [g] for g in groups]

    def stage(self, k: int) -> int:
        """Apply stage ``k`` (>= 0); returns the number of trainable groups."""
        check_int("k", k, minimum=0)
        n_open = min(k + 1, len(self.groups))
        for i, group in enumerate(self.groups):
            set_trainable(group, i >= len(self.groups) - n_open)
        return n_open


def transformer_layer_groups(
    model: nn.Module, head: nn.Module | Sequence[nn.Module] | None = None
) -> list[list[nn.Module]]:
    """Layer groups of an lmkit :class:`Transformer`, bottom to top: the embedding stage (token, position and
    segment embeddings, embedding norm), each block, then the final norm with ``head`` (a new task head, or
    several modules) or else the model's ``lm_head``."""
    for name in ("tok_emb", "blocks"):
        if not hasattr(model, name):
            raise TypeError(f"expected an lmkit Transformer with .{name}")
    embedding = [getattr(model, n, None) for n in ("tok_emb", "pos_emb", "type_emb", "emb_norm")]
    heads = [head] if isinstance(head, nn.Module) else list(head or [getattr(model, "lm_head", None)])
    top = [m for m in (getattr(model, "norm_f", None), *heads) if m is not None]
    return [[m for m in embedding if m is not None], *[[b] for b in model.blocks], top]
