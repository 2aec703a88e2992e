"""Synthetic tasks that need *content-based* memory, and a short, time-boxed training loop to compare models on them.

**Selective copying** (Gu & Dao, 2023, the first of their synthetic tasks, Table 1): ``n_data`` data tokens are
scattered at random positions among ``length`` noise (blank) tokens; then ``n_data`` "go" tokens follow, and at
each go token the model must output the data tokens in their order. Where the data sits changes from example to
example, so a fixed convolution kernel (a time-invariant SSM, S4) cannot solve it: the model has to *decide per
token* whether to keep it (data) or ignore it (blank) — what an input-dependent ``Δ`` does. Attention solves it by
looking back.

>>> batch = selective_copying_batch(2, length=12, n_data=3, n_symbols=4, generator=torch.Generator().manual_seed(0))
>>> batch.inputs.shape, batch.targets.shape  # (B, length + n_data); targets are -100 except at the go tokens
(torch.Size([2, 15]), torch.Size([2, 15]))

:func:`train_briefly` trains any model with lmkit's forward contract (``model(ids).logits``) with AdamW and gradient
clipping (:mod:`lmkit.training.recipe`) for a number of steps or a wall-clock budget.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.training.objectives import IGNORE_INDEX
from lmkit.training.recipe import clip_grad_norm, make_optimizer

BLANK = 0


@dataclass
class TaskBatch:
    """``inputs`` ``(B, T)`` token ids and ``targets`` ``(B, T)`` (``-100`` where nothing is scored)."""

    inputs: torch.Tensor
    targets: torch.Tensor


def selective_copying_vocab(n_symbols: int) -> int:
    """Vocabulary size of the task: blank (0), the symbols ``1 … n_symbols``, and the go token."""
    return n_symbols + 2


def selective_copying_batch(
    batch_size: int, length: int = 64, n_data: int = 4, n_symbols: int = 8, generator: torch.Generator | None = None
) -> TaskBatch:
    """A batch of selective-copying examples (see the module docstring); the go token is ``n_symbols + 1``."""
    if not 0 < n_data <= length:
        raise ValueError(f"need 0 < n_data <= length, got n_data={n_data}, length={length}")
    if n_symbols < 1 or batch_size < 1:
        raise ValueError(f"n_symbols and batch_size must be positive, got {n_symbols}, {batch_size}")
    go = n_symbols + 1
    data = torch.randint(1, n_symbols + 1, (batch_size, n_data), generator=generator)
    # n_data distinct positions per row, kept in increasing order: the order the model must reproduce
    positions = torch.rand(batch_size, length, generator=generator).argsort(dim=1)[:, :n_data].sort(dim=1).values
    context = torch.full((batch_size, length), BLANK, dtype=torch.long).scatter(1, positions, data)
    inputs = torch.cat([context, torch.full((batch_size, n_data), go, dtype=torch.long)], dim=1)
    targets = torch.full_like(inputs, IGNORE_INDEX)
    targets[:, length:] = data
    return TaskBatch(inputs, targets)


@dataclass
class TrainHistory:
    """Per evaluation: ``steps``, ``seconds`` of training so far, held-out ``accuracy`` (token level) and ``loss``."""

    steps: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    loss: list[float] = field(default_factory=list)


@torch.no_grad()
def task_accuracy(model: nn.Module, batch: TaskBatch) -> tuple[float, float]:
    """Token accuracy and mean loss of ``model`` on the scored positions of ``batch``."""
    was_training = model.training
    model.eval()
    logits = model(batch.inputs).logits
    model.train(was_training)
    scored = batch.targets != IGNORE_INDEX
    loss = F.cross_entropy(logits[scored], batch.targets[scored]).item()
    return (logits[scored].argmax(-1) == batch.targets[scored]).float().mean().item(), loss


def train_briefly(
    model: nn.Module,
    make_batch,
    steps: int = 1000,
    seconds: float | None = None,
    lr: float = 3e-3,
    eval_batch: TaskBatch | None = None,
    eval_every: int = 25,
) -> TrainHistory:
    """Train on ``make_batch()`` batches for ``steps`` steps or until ``seconds`` of wall clock have passed.

    AdamW (lmkit's recipe, weight decay 0.1) at a constant ``lr``, global-norm clipping at 1.0, cross-entropy on
    the scored positions only. Evaluates on ``eval_batch`` every ``eval_every`` steps and at the end.
    """
    optimizer = make_optimizer(model, lr)
    history = TrainHistory()
    start, step = time.perf_counter(), 0

    def record() -> None:
        if eval_batch is not None:
            acc, loss = task_accuracy(model, eval_batch)
            history.steps.append(step)
            history.seconds.append(time.perf_counter() - start)
            history.accuracy.append(acc)
            history.loss.append(loss)

    model.train()
    while step < steps and (seconds is None or time.perf_counter() - start < seconds):
        batch = make_batch()
        logits = model(batch.inputs).logits
        loss = F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm(model.parameters(), 1.0)
        optimizer.step()
        step += 1
        if step % eval_every == 0:
            record()
    if not history.steps or history.steps[-1] != step:
        record()
    model.eval()
    return history
