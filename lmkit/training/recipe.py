"""The LLaMA training recipe and a small trainer that can be interrupted without losing anything.

LLaMA (Touvron et al., 2023, Sec. 2.2) trains with

* **AdamW** (β1 = 0.9, β2 = 0.95) with *decoupled* weight decay 0.1: the decay ``θ ← θ − lr·λ·θ`` is applied
  to the weights directly instead of being added to the gradient, so Adam's per-parameter scaling does not
  weaken it (Loshchilov & Hutter, 2019). Norm gains and biases are not decayed (pulling a norm's gain
  towards zero only hurts); embeddings are a choice (:func:`param_groups`).
* a **cosine learning-rate schedule** after a linear warmup, ending at 10% of the peak (:func:`lr_at`);
* **gradient clipping** by the global norm at 1.0 (:func:`clip_grad_norm`).

:class:`Trainer` runs that recipe: ``loss_fn(model, get_batch(step, generator))`` → backward → clip → AdamW →
schedule, with a tqdm progress bar, an optional held-out evaluation every few steps, a step count or a wall-clock
budget, and checkpoints (:mod:`lmkit.training.checkpoint`: one safetensors file written atomically, checked whole
before it is restored). Resuming continues the very same loss curve: the batches come from a generator the trainer
owns and saves.

Left out: mixed precision, gradient accumulation and distributed data parallelism — what a run of billions of tokens
needs, not what the book's toy models do.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmkit.checks import check_int, check_number
from lmkit.training.checkpoint import load_checkpoint, save_checkpoint
from lmkit.utils import eval_mode

# ------------------------------------------------------------------------------------------ optimizer groups


def param_groups(
    model: nn.Module, weight_decay: float, decay_embeddings: bool = False
) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed and a non-decayed AdamW group.

    Decayed: matrices of linear layers (``dim >= 2``). Not decayed: vectors (norm gains, biases) and,
    unless ``decay_embeddings``, the weights of ``nn.Embedding`` modules (a tied LM head shares its
    embedding's tensor, so it follows the embedding). Each group carries a ``names`` list for inspection.
    """
    embedding_params = {id(m.weight) for m in model.modules() if isinstance(m, nn.Embedding)}
    decay, no_decay, decay_names, no_decay_names, seen = [], [], [], [], set()
    for name, p in model.named_parameters():
        if not p.requires_grad or id(p) in seen:
            continue
        seen.add(id(p))
        if p.dim() >= 2 and (decay_embeddings or id(p) not in embedding_params):
            decay.append(p)
            decay_names.append(name)
        else:
            no_decay.append(p)
            no_decay_names.append(name)
    return [
        {"params": decay, "weight_decay": weight_decay, "names": decay_names},
        {"params": no_decay, "weight_decay": 0.0, "names": no_decay_names},
    ]


def make_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.1,
    betas: tuple[float, float] = (0.9, 0.95),
    eps: float = 1e-8,
    decay_embeddings: bool = False,
) -> torch.optim.AdamW:
    """AdamW with LLaMA's hyper-parameters and the two groups of :func:`param_groups`."""
    check_number("lr", lr, above=0)
    return torch.optim.AdamW(param_groups(model, weight_decay, decay_embeddings), lr=lr, betas=betas, eps=eps)


# ----------------------------------------------------------------------------------------------- schedule


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate at ``step``: linear warmup from 0, then cosine decay from ``peak_lr`` to ``min_lr_ratio·peak``.

    warmup (t < W): lr = peak · t / W;
    after: lr = floor + (peak − floor) · ½ (1 + cos(π (t − W) / (T − W))), with floor = min_lr_ratio · peak.

    Steps past ``total_steps`` stay at the floor. Same convention as HF's
    ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)``.
    """
    check_int("total_steps", total_steps, minimum=1)
    check_int("warmup_steps", warmup_steps, minimum=0)
    if warmup_steps > total_steps:
        raise ValueError(f"need warmup_steps <= total_steps, got {warmup_steps} > {total_steps}")
    check_number("min_lr_ratio", min_lr_ratio, minimum=0, maximum=1)
    if step < warmup_steps:
        return peak_lr * step / warmup_steps
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    return peak_lr * (min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def cosine_schedule(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` applying :func:`lr_at` (as a factor of each group's initial lr)."""
    lr_at(0, 1.0, warmup_steps, total_steps, min_lr_ratio)  # validates the arguments

    def factor(step: int) -> float:
        return lr_at(step, 1.0, warmup_steps, total_steps, min_lr_ratio)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


# ------------------------------------------------------------------------------------------------ clipping


def clip_grad_norm(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Scale all gradients by ``min(1, max_norm / ‖g‖)``, ‖g‖ the L2 norm of *all* gradients joined together.

    Clipping the global norm keeps the update's direction and only shortens it, so one bad batch
    cannot throw the weights far away. Returns the norm before clipping (worth logging: spikes
    announce instabilities).
    """
    check_number("max_norm", max_norm, above=0, finite=False)  # inf: measure the norm, clip nothing
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


# -------------------------------------------------------------------------------------------------- trainer


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of :class:`Trainer` (defaults: LLaMA's, except the scale of lr and steps)."""

    max_steps: int = 1000
    lr: float = 3e-4
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float | None = 1.0
    decay_embeddings: bool = False
    seed: int = 0
    checkpoint_path: str | None = None
    checkpoint_every: int = 0  # 0: only when train() returns
    eval_every: int = 0  # call eval_fn every this many steps (0: never); stored as "eval_loss" in history
    progress: bool = True


Batch = Any
LossFn = Callable[[nn.Module, Batch], torch.Tensor]
BatchFn = Callable[[int, torch.Generator], Batch]


class Trainer:
    """A minimal training loop: ``loss_fn(model, get_batch(step, generator))`` → backward → clip → AdamW → schedule.

    ``get_batch`` draws its randomness only from the generator it is given; the trainer owns that
    generator and saves its state, so a resumed run sees exactly the batches the uninterrupted run
    would have seen. ``history`` holds one dict per step (``step``, ``loss``, ``lr``, ``grad_norm``, and
    ``eval_loss`` = ``eval_fn(model)`` every ``config.eval_every`` steps, e.g. a held-out loss; ``eval_fn`` is called
    after the step, when ``self.step`` counts it, and may record more than the number it returns).
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        get_batch: BatchFn,
        config: TrainConfig | None = None,
        eval_fn: Callable[[nn.Module], float] | None = None,
    ):
        self.model, self.loss_fn, self.get_batch, self.eval_fn = model, loss_fn, get_batch, eval_fn
        self.config = config or TrainConfig()
        c = self.config
        self.optimizer = make_optimizer(model, c.lr, c.weight_decay, c.betas, c.eps, c.decay_embeddings)
        self.scheduler = cosine_schedule(self.optimizer, c.warmup_steps, c.max_steps, c.min_lr_ratio)
        self.generator = torch.Generator().manual_seed(c.seed)
        self.step = 0
        self.history: list[dict[str, float]] = []

    def train_step(self) -> dict[str, float]:
        """One optimisation step; returns its record (also appended to ``history``)."""
        self.model.train()
        batch = self.get_batch(self.step, self.generator)
        loss = self.loss_fn(self.model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {self.step}")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if self.config.grad_clip is not None:
            norm = clip_grad_norm(params, self.config.grad_clip)
        else:
            norm = torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in params if p.grad is not None]))
        lr = self.optimizer.param_groups[0]["lr"]
        self.optimizer.step()
        self.scheduler.step()
        record = {"step": self.step, "loss": loss.item(), "lr": lr, "grad_norm": float(norm)}
        self.step += 1
        if self.eval_fn is not None and self.config.eval_every and self.step % self.config.eval_every == 0:
            record["eval_loss"] = float(self.eval_fn(self.model))
        self.history.append(record)
        return record

    def train(self, steps: int | None = None, seconds: float | None = None) -> list[dict[str, float]]:
        """Run ``steps`` more steps (default: up to ``max_steps``), checkpointing as configured; return their records.

        ``seconds`` is a wall-clock budget: no step starts once that much time has passed since the call (the step
        under way finishes). Comparing models at equal training *time* rather than equal steps needs it.
        """
        c = self.config
        if steps is not None:
            check_int("steps", steps, minimum=0)
        deadline = math.inf if seconds is None else time.perf_counter() + check_number("seconds", seconds, minimum=0)
        end = c.max_steps if steps is None else min(c.max_steps, self.step + steps)
        from tqdm.auto import tqdm

        bar = tqdm(range(self.step, end), initial=self.step, total=c.max_steps, disable=not c.progress)
        start = len(self.history)
        for _ in bar:
            if time.perf_counter() >= deadline:
                break
            record = self.train_step()
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
            if c.checkpoint_path and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save(c.checkpoint_path)
        bar.close()
        if c.checkpoint_path:
            self.save(c.checkpoint_path)
        return self.history[start:]

    def save(self, path: str | os.PathLike) -> Path:
        """Write the whole run's state to ``path``, atomically (:func:`~lmkit.training.checkpoint.save_checkpoint`)."""
        return save_checkpoint(self, path)

    def load(self, path: str | os.PathLike) -> None:
        """Resume from :meth:`save`'s file; the whole file is checked against this trainer and its settings before
        any state changes (:func:`~lmkit.training.checkpoint.load_checkpoint`)."""
        load_checkpoint(self, path)


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def mean_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable[Batch]) -> float:
    """Average of ``loss_fn`` over ``batches`` in eval mode (``exp`` of it is the perplexity for an LM loss); the model
    gets its mode back afterwards, even when ``loss_fn`` raises."""
    with eval_mode(model):
        losses = [float(loss_fn(model, b)) for b in batches]
    if not losses:
        raise ValueError("no batches to evaluate")
    return sum(losses) / len(losses)
