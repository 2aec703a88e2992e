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

:func:`train_briefly` trains any model with lmkit's forward contract (``model(ids).logits``) with the
:class:`~lmkit.training.recipe.Trainer` (AdamW, gradient clipping) for a number of steps or a wall-clock budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from lmkit.checks import check_int
from lmkit.training.objectives import IGNORE_INDEX
from lmkit.training.recipe import TrainConfig, Trainer
from lmkit.utils import eval_mode

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
    for name, value in (("batch_size", batch_size), ("length", length), ("n_data", n_data), ("n_symbols", n_symbols)):
        check_int(name, value, minimum=1)
    if n_data > length:
        raise ValueError(f"need n_data <= length (the data tokens sit among the length positions), got {n_data} > "
                         f"{length}")
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
    """Token accuracy and mean loss of ``model`` on the scored positions of ``batch`` (in eval mode)."""
    with eval_mode(model):
        logits = model(batch.inputs).logits
    scored = batch.targets != IGNORE_INDEX
    loss = F.cross_entropy(logits[scored], batch.targets[scored]).item()
    return (logits[scored].argmax(-1) == batch.targets[scored]).float().mean().item(), loss


def task_loss(model: nn.Module, batch: TaskBatch) -> torch.Tensor:
    """Cross-entropy on the scored positions of ``batch`` only (the go tokens)."""
    logits = model(batch.inputs).logits
    return F.cross_entropy(logits.flatten(0, 1), batch.targets.flatten(), ignore_index=IGNORE_INDEX)


def train_briefly(
    model: nn.Module,
    make_batch: Callable[[], TaskBatch],
    steps: int = 1000,
    seconds: float | None = None,
    lr: float = 3e-3,
    eval_batch: TaskBatch | None = None,
    eval_every: int = 25,
) -> TrainHistory:
    """Train on ``make_batch()`` batches for ``steps`` steps or until ``seconds`` of wall clock have passed.

    The :class:`~lmkit.training.recipe.Trainer` with a constant ``lr`` (no warm-up, no decay: ``min_lr_ratio=1``),
    AdamW with weight decay 0.1, global-norm clipping at 1.0, :func:`task_loss`. Evaluates on ``eval_batch`` every
    ``eval_every`` steps and at the end; leaves the model in eval mode.
    """
    check_int("steps", steps, minimum=1)
    check_int("eval_every", eval_every, minimum=1)
    history = TrainHistory()
    config = TrainConfig(max_steps=steps, lr=lr, warmup_steps=0, min_lr_ratio=1.0,
                         eval_every=eval_every if eval_batch is not None else 0, progress=False)

    def evaluate(m: nn.Module) -> float:
        accuracy, loss = task_accuracy(m, eval_batch)
        history.steps.append(trainer.step)
        history.seconds.append(time.perf_counter() - start)
        history.accuracy.append(accuracy)
        history.loss.append(loss)
        return loss

    trainer = Trainer(model, task_loss, lambda step, generator: make_batch(), config, eval_fn=evaluate)
    start = time.perf_counter()
    trainer.train(seconds=seconds)
    if eval_batch is not None and (not history.steps or history.steps[-1] != trainer.step):
        evaluate(model)
    model.eval()
    return history
