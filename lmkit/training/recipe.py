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
one file written atomically (a temporary file flushed to disk, then ``os.replace``), so killing the process at
any moment leaves either the old or the new checkpoint, never a torn one; :meth:`Trainer.load` checks the whole file
against the model and the training settings before it changes anything. Resuming continues the very
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
from safetensors.torch import save as save_bytes
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
        """Write the checkpoint atomically: to ``path + '.tmp'``, flushed to disk, then ``os.replace`` onto ``path``.

        A save killed at any moment leaves the previous checkpoint intact; its half-written ``.tmp`` file is
        removed by the next :meth:`save` or :meth:`load` (and by this one if it fails with an exception).
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = _tmp_path(path)  # a killed earlier save's leftover is overwritten, then renamed away
        tensors, meta = self.state_tensors()
        meta["format"] = CHECKPOINT_FORMAT
        try:
            _write_durably(tmp, save_bytes(tensors, metadata=meta))
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        _sync_dir(path.parent)  # the rename itself reaches the disk
        return path

    def load(self, path: str | os.PathLike) -> None:
        """Restore model, optimizer, scheduler, RNG states, step and history from :meth:`save`'s file.

        The whole checkpoint is read and checked first — a safetensors file written by :meth:`save`, the
        model's parameter names, shapes and dtypes, finite values, the optimizer's groups and moments, the
        metadata, and the training settings of :class:`TrainConfig` it was written with — and only then is any
        state changed, so a bad file or a model of another configuration leaves the trainer as it was.
        """
        path = Path(path)
        _tmp_path(path).unlink(missing_ok=True)  # a killed save's leftover: the checkpoint itself is intact
        tensors, meta = _read_checkpoint(path)
        aliases, model_state, optim_state, groups, scheduler_state, history, step = self._check_checkpoint(
            path, tensors, meta)
        self.model.load_state_dict(model_state, strict=False)  # aliases (tied weights) follow their owner
        self.optimizer.load_state_dict({"state": optim_state, "param_groups": groups})
        self.scheduler.load_state_dict(scheduler_state)
        torch.set_rng_state(tensors["rng.torch"])
        self.generator.set_state(tensors["rng.data"])
        self.step = step
        self.history = history

    def _check_checkpoint(self, path: Path, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> tuple:
        """Everything :meth:`load` needs, parsed and validated against this trainer; raises naming the problem."""
        def bad(problem: str) -> ValueError:
            return ValueError(f"checkpoint {path}: {problem}")

        missing_keys = [k for k in _META_KEYS if k not in meta]
        if missing_keys:
            raise bad(f"metadata lacks {missing_keys} (not a checkpoint written by Trainer.save)")
        parsed = {}
        for key in _META_KEYS[1:]:
            try:
                parsed[key] = json.loads(meta[key])
            except json.JSONDecodeError as err:
                raise bad(f"metadata {key!r} is not valid JSON ({err})") from None
        if meta["format"] != CHECKPOINT_FORMAT:
            raise bad(f"format {meta['format']!r}, expected {CHECKPOINT_FORMAT!r}")
        if not meta["step"].isdigit():
            raise bad(f"step must be a non-negative integer, got {meta['step']!r}")
        step = int(meta["step"])
        self._check_settings(path, parsed["config"])

        aliases = parsed["aliases"]
        if not isinstance(aliases, dict):
            raise bad("metadata 'aliases' is not a mapping of tied weights")
        expected = self.model.state_dict()
        model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
        missing = sorted(set(expected) - set(model_state) - set(aliases))
        unexpected = sorted((set(model_state) | set(aliases)) - set(expected))
        if missing or unexpected:
            raise bad(f"does not fit the model (written for another model or config): missing {missing}, "
                      f"unexpected {unexpected}")
        for name, t in model_state.items():
            want = expected[name]
            if t.shape != want.shape or t.dtype != want.dtype:
                raise bad(f"model.{name} is {t.dtype} {tuple(t.shape)}, the model has {want.dtype} "
                          f"{tuple(want.shape)} (written for another model config)")
        for name, t in tensors.items():
            if t.is_floating_point() and not torch.isfinite(t).all():
                raise bad(f"{name} holds non-finite values (NaN or inf)")

        groups = parsed["param_groups"]
        params = [p for g in self.optimizer.param_groups for p in g["params"]]
        if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != [
                len(g["params"]) for g in self.optimizer.param_groups]:
            raise bad("its optimizer parameter groups do not match this model's")
        optim_state: dict[int, dict[str, torch.Tensor]] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                parts = k.split(".", 2)
                if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params):
                    raise bad(f"optimizer entry {k!r} names no parameter of this model")
                idx, name = int(parts[1]), parts[2]
                if name in ("exp_avg", "exp_avg_sq") and v.shape != params[idx].shape:
                    raise bad(f"{k} has shape {tuple(v.shape)}, its parameter {tuple(params[idx].shape)}")
                optim_state.setdefault(idx, {})[name] = v
        for name in ("rng.torch", "rng.data"):
            if name not in tensors or tensors[name].dtype != torch.uint8:
                raise bad(f"lacks the random-generator state {name!r}")
        scheduler_state, history = parsed["scheduler"], parsed["history"]
        position = scheduler_state.get("last_epoch") if isinstance(scheduler_state, dict) else None
        if position != step:
            raise bad(f"scheduler position {position} disagrees with step {step}")
        if not isinstance(history, list) or len(history) != step:
            raise bad(f"history has {len(history) if isinstance(history, list) else 'no'} records for step {step}")
        return aliases, model_state, optim_state, groups, scheduler_state, history, step

    def _check_settings(self, path: Path, saved: Any) -> None:
        """A resumed run must train with the settings it was saved with, or it is not the same run."""
        now = json.loads(json.dumps(asdict(self.config)))  # tuples as lists, like the saved JSON
        if not isinstance(saved, dict):
            raise ValueError(f"checkpoint {path}: metadata 'config' is not a TrainConfig")
        changed = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now" for k in TRAINING_SETTINGS
                   if saved.get(k) != now[k]]
        if changed:
            raise ValueError(f"checkpoint {path} was written with other training settings ({'; '.join(changed)}): "
                             "resuming would silently keep the checkpoint's optimizer settings; use the same "
                             "TrainConfig values to continue the run")


CHECKPOINT_FORMAT = "lmkit.trainer/1"
_META_KEYS = ("format", "step", "aliases", "param_groups", "scheduler", "history", "config")
TRAINING_SETTINGS = ("max_steps", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "eps", "grad_clip",
                     "decay_embeddings", "seed")
"""The :class:`TrainConfig` fields that shape the run; the others (paths, logging) may change on resume."""


def _tmp_path(path: Path) -> Path:
    return path.with_name(path.name + ".tmp")


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` and flush it to the disk (``fsync``) before the caller renames the file into place."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _sync_dir(directory: Path) -> None:
    if hasattr(os, "O_DIRECTORY"):  # POSIX: a rename is durable once its directory is synced
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _read_checkpoint(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors checkpoint; a missing, truncated or corrupt file is named."""
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}" + (" (it is a directory)" if path.is_dir() else ""))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as err:  # safetensors raises its own SafetensorError or OSError/ValueError variants
        raise ValueError(f"checkpoint {path} is not a readable safetensors file (truncated or corrupt?): "
                         f"{err}") from None
    return tensors, meta


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
