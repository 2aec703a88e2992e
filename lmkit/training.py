"""The LLaMA training recipe and a small trainer that can be interrupted without losing anything.

LLaMA (Touvron et al., 2023, Sec. 2.2) trains with

* **AdamW** (β1 = 0.9, β2 = 0.95) with *decoupled* weight decay 0.1: the decay ``θ ← θ − lr·λ·θ`` is applied
  to the weights directly instead of being added to the gradient, so Adam's per-parameter scaling does not
  weaken it (Loshchilov & Hutter, 2019). Norm gains and biases are not decayed (pulling a norm's gain
  towards zero only hurts); embeddings are a choice (:func:`param_groups`).
* a **cosine learning-rate schedule** after a linear warmup, ending at 10% of the peak (:func:`lr_at`);
* **gradient clipping** by the global norm at 1.0 (:func:`clip_grad_norm`).

:class:`Trainer` runs that recipe with a tqdm progress bar and writes checkpoints with ``safetensors``:
model weights, optimizer moments, scheduler position, random-number-generator states and the step, in
one file written atomically (a temporary file, then ``os.replace``), so killing the process at any
moment leaves either the old or the new checkpoint, never a torn one. Resuming continues the very
same loss curve: the batches come from a generator whose state is saved too.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

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
    if lr <= 0:
        raise ValueError(f"lr must be positive, got {lr}")
    return torch.optim.AdamW(param_groups(model, weight_decay, decay_embeddings), lr=lr, betas=betas, eps=eps)


# ----------------------------------------------------------------------------------------------- schedule


def lr_at(step: int, peak_lr: float, warmup_steps: int, total_steps: int, min_lr_ratio: float = 0.1) -> float:
    """Learning rate at ``step``: linear warmup from 0, then cosine decay from ``peak_lr`` to ``min_lr_ratio·peak``.

    warmup (t < W): lr = peak · t / W;
    after: lr = floor + (peak − floor) · ½ (1 + cos(π (t − W) / (T − W))), with floor = min_lr_ratio · peak.

    Steps past ``total_steps`` stay at the floor. Same convention as HF's
    ``get_cosine_with_min_lr_schedule_with_warmup(min_lr_rate=0.1)``.
    """
    if not 0 <= warmup_steps <= total_steps or total_steps <= 0:
        raise ValueError(f"need 0 <= warmup_steps <= total_steps, total_steps > 0; got {warmup_steps}, {total_steps}")
    if not 0.0 <= min_lr_ratio <= 1.0:
        raise ValueError(f"min_lr_ratio must be in [0, 1], got {min_lr_ratio}")
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
    if max_norm <= 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    grads = [p.grad for p in parameters if p.grad is not None]
    if not grads:
        return torch.tensor(0.0)
    total = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads]))
    scale = torch.clamp(max_norm / (total + 1e-6), max=1.0)
    for g in grads:
        g.mul_(scale.to(g.dtype))
    return total


# -------------------------------------------------------------------------------------------------- trainer


@dataclass
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
    ``eval_loss`` = ``eval_fn(model)`` every ``config.eval_every`` steps, e.g. a held-out loss).
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

    def train(self, steps: int | None = None) -> list[dict[str, float]]:
        """Run ``steps`` more steps (default: up to ``max_steps``), checkpointing as configured."""
        c = self.config
        end = c.max_steps if steps is None else min(c.max_steps, self.step + steps)
        from tqdm.auto import tqdm

        bar = tqdm(range(self.step, end), initial=self.step, total=c.max_steps, disable=not c.progress)
        start = len(self.history)
        for _ in bar:
            record = self.train_step()
            bar.set_postfix(loss=f"{record['loss']:.3f}", lr=f"{record['lr']:.2e}")
            if c.checkpoint_path and c.checkpoint_every and self.step % c.checkpoint_every == 0:
                self.save(c.checkpoint_path)
        bar.close()
        if c.checkpoint_path:
            self.save(c.checkpoint_path)
        return self.history[start:]

    # ------------------------------------------------------------------------------------------- checkpoints

    def state_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """Everything needed to resume, as flat tensors + string metadata (the safetensors format)."""
        tensors: dict[str, torch.Tensor] = {}
        aliases: dict[str, str] = {}
        owner: dict[tuple, str] = {}
        for name, t in self.model.state_dict().items():
            key = (t.data_ptr(), tuple(t.shape), t.stride())
            if t.numel() and key in owner:  # tied weights (an LM head sharing the embedding) are stored once
                aliases[name] = owner[key]
                continue
            owner[key] = name
            tensors[f"model.{name}"] = t.detach().contiguous()
        opt = self.optimizer.state_dict()
        for idx, state in opt["state"].items():
            for k, v in state.items():
                tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).contiguous()
        tensors["rng.torch"] = torch.get_rng_state()
        tensors["rng.data"] = self.generator.get_state()
        meta = {
            "step": str(self.step),
            "aliases": json.dumps(aliases),
            "param_groups": json.dumps(opt["param_groups"]),
            "scheduler": json.dumps(self.scheduler.state_dict()),
            "history": json.dumps(self.history),
            "config": json.dumps(asdict(self.config)),
        }
        return tensors, meta

    def save(self, path: str | os.PathLike) -> Path:
        """Write the checkpoint atomically: to ``path + '.tmp'``, then ``os.replace`` onto ``path``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tensors, meta = self.state_tensors()
        tmp = path.with_name(path.name + ".tmp")
        save_file(tensors, str(tmp), metadata=meta)
        os.replace(tmp, path)
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, scheduler, RNG states, step and history from :meth:`save`'s file."""
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata()
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        aliases = json.loads(meta["aliases"])
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing, unexpected = self.model.load_state_dict(model_state, strict=False)
        if set(missing) - set(aliases) or unexpected:
            raise ValueError(f"checkpoint does not fit the model: missing {missing}, unexpected {unexpected}")
        state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, idx, name = k.split(".", 2)
                state.setdefault(int(idx), {})[name] = v
        self.optimizer.load_state_dict({"state": state, "param_groups": json.loads(meta["param_groups"])})
        self.scheduler.load_state_dict(json.loads(meta["scheduler"]))
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.data"])
        self.step = int(meta["step"])
        self.history = json.loads(meta["history"])


# ------------------------------------------------------------------------------------------------ evaluation


@torch.no_grad()
def mean_loss(model: nn.Module, loss_fn: LossFn, batches: Iterable[Batch]) -> float:
    """Average of ``loss_fn`` over ``batches`` in eval mode (``exp`` of it is the perplexity for an LM loss)."""
    was_training = model.training
    model.eval()
    losses = [float(loss_fn(model, b)) for b in batches]
    model.train(was_training)
    if not losses:
        raise ValueError("no batches to evaluate")
    return sum(losses) / len(losses)
