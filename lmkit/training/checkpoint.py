"""Checkpoints of a :class:`~lmkit.training.recipe.Trainer`: one safetensors file, written atomically, checked whole
before anything is restored.

A checkpoint holds everything a resumed run needs to continue the very same loss curve:

* the model's weights (tied weights — an LM head sharing the embedding's tensor — stored once, with an alias);
* AdamW's moments (``optim.<parameter index>.exp_avg`` …) and its parameter groups;
* the scheduler's position, the step, and the history of per-step records;
* both random-number generators: PyTorch's global one (dropout) and the trainer's batch generator;
* the :class:`~lmkit.training.recipe.TrainConfig` it was written with.

Tensors are stored as tensors, everything else as JSON strings in the file's metadata, with a CRC-32 of each
tensor's bytes (:func:`checksum`).

**Atomic writes.** :func:`save_checkpoint` writes ``path + '.tmp'``, flushes it to the disk (``fsync``), renames it
onto ``path`` with ``os.replace`` (atomic) and syncs the directory. A process killed at any moment leaves either the
old checkpoint or the new one, never a torn file; the killed save's ``.tmp`` is removed by the next save or load.

**Checked before restored.** :func:`load_checkpoint` reads the whole file and checks it against the trainer —
every tensor's checksum (a bit flipped on disk is named with its tensor), the metadata and format, the model's
parameter names, shapes and dtypes, finite values, the optimizer's groups and moments, the generator states, the
agreement of scheduler, step and history, and the training settings (:data:`TRAINING_SETTINGS`: resuming with another
learning rate would not be the same run) — and only then changes anything, so a bad file or a model of another
configuration leaves the trainer as it was.

Left out: sharded files, asynchronous saving, keeping the last *n* checkpoints — what large runs need.
"""

from __future__ import annotations

import json
import os
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from safetensors import safe_open
from safetensors.torch import save as save_bytes
from torch import nn

if TYPE_CHECKING:
    from lmkit.training.recipe import Trainer

CHECKPOINT_FORMAT = "lmkit.trainer/2"  # 2: a checksum per tensor
META_KEYS = ("format", "step", "aliases", "param_groups", "scheduler", "history", "config", "checksums")
"""The metadata entries of a checkpoint; all but ``format`` and ``step`` are JSON."""
TRAINING_SETTINGS = ("max_steps", "lr", "warmup_steps", "min_lr_ratio", "weight_decay", "betas", "eps", "grad_clip",
                     "decay_embeddings", "seed")
"""The :class:`~lmkit.training.recipe.TrainConfig` fields that shape the run; the others (paths, logging) may change
on resume."""


@dataclass(frozen=True)
class TrainerState:
    """What :func:`load_checkpoint` restores, read from a file and checked against a trainer."""

    model: dict[str, torch.Tensor]  # the state dict without tied aliases, which follow their owner
    optimizer: dict[str, Any]  # for ``optimizer.load_state_dict``: ``{"state": …, "param_groups": …}``
    scheduler: dict[str, Any]
    torch_rng: torch.Tensor
    data_rng: torch.Tensor
    step: int
    history: list[dict[str, float]]


# ------------------------------------------------------------------------------------------------------- save


def save_checkpoint(trainer: Trainer, path: str | os.PathLike) -> Path:
    """Write ``trainer``'s whole state to ``path`` atomically: to ``path + '.tmp'``, flushed, then ``os.replace``.

    A save killed at any moment leaves the previous checkpoint intact; its half-written ``.tmp`` file is removed by
    the next save or load (and by this one if it fails with an exception).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _tmp_path(path)  # a killed earlier save's leftover is overwritten, then renamed away
    tensors, meta = _to_tensors(trainer)
    try:
        _write_durably(tmp, save_bytes(tensors, metadata=meta))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_dir(path.parent)  # the rename itself reaches the disk
    return path


def _to_tensors(trainer: Trainer) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """Everything needed to resume, as flat tensors + string metadata (the safetensors format)."""
    tensors: dict[str, torch.Tensor] = {}
    aliases: dict[str, str] = {}
    owner: dict[tuple, str] = {}
    for name, t in trainer.model.state_dict().items():
        key = (t.data_ptr(), tuple(t.shape), t.stride())
        if t.numel() and key in owner:  # tied weights (an LM head sharing the embedding) are stored once
            aliases[name] = owner[key]
            continue
        owner[key] = name
        tensors[f"model.{name}"] = t.detach().contiguous()
    opt = trainer.optimizer.state_dict()
    for idx, state in opt["state"].items():
        for k, v in state.items():
            tensors[f"optim.{idx}.{k}"] = torch.as_tensor(v).contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    tensors["rng.data"] = trainer.generator.get_state()
    meta = {
        "format": CHECKPOINT_FORMAT,
        "step": str(trainer.step),
        "aliases": json.dumps(aliases),
        "param_groups": json.dumps(opt["param_groups"]),
        "scheduler": json.dumps(trainer.scheduler.state_dict()),
        "history": json.dumps(trainer.history),
        "config": json.dumps(asdict(trainer.config)),
        "checksums": json.dumps({name: checksum(t) for name, t in tensors.items()}),
    }
    return tensors, meta


def checksum(t: torch.Tensor) -> int:
    """CRC-32 of a tensor's bytes (its dtype's own layout, C order): one flipped bit anywhere changes it.

    >>> checksum(torch.tensor([1.0, 2.0])) == checksum(torch.tensor([1.0, 2.0]))
    True
    """
    return zlib.crc32(t.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())


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


# ------------------------------------------------------------------------------------------------------- load


def load_checkpoint(trainer: Trainer, path: str | os.PathLike) -> None:
    """Restore model, optimizer, scheduler, generator states, step and history of ``trainer`` from
    :func:`save_checkpoint`'s file, after :func:`read_checkpoint` has checked all of it."""
    path = Path(path)
    _tmp_path(path).unlink(missing_ok=True)  # a killed save's leftover: the checkpoint itself is intact
    state = read_checkpoint(trainer, path)
    trainer.model.load_state_dict(state.model, strict=False)  # aliases (tied weights) follow their owner
    trainer.optimizer.load_state_dict(state.optimizer)
    trainer.scheduler.load_state_dict(state.scheduler)
    torch.set_rng_state(state.torch_rng)
    trainer.generator.set_state(state.data_rng)
    trainer.step, trainer.history = state.step, state.history


def read_checkpoint(trainer: Trainer, path: str | os.PathLike) -> TrainerState:
    """Read the checkpoint at ``path`` and check it against ``trainer`` (changing nothing); a ``ValueError`` that
    names the file and the problem otherwise."""
    path = Path(path)
    tensors, meta = _read_file(path)
    parsed = _parse_metadata(path, meta)
    step = parsed["step"]
    _check_checksums(path, tensors, parsed["checksums"])
    _check_settings(path, parsed["config"], trainer)
    model_state = _check_model(path, tensors, parsed["aliases"], trainer.model)
    for name, t in tensors.items():
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise _error(path, f"{name} holds non-finite values (NaN or inf)")
    optim_state = _check_optimizer(path, tensors, parsed["param_groups"], trainer.optimizer)
    for name in ("rng.torch", "rng.data"):
        if name not in tensors or tensors[name].dtype != torch.uint8:
            raise _error(path, f"lacks the random-generator state {name!r}")
    scheduler, history = parsed["scheduler"], parsed["history"]
    position = scheduler.get("last_epoch") if isinstance(scheduler, dict) else None
    if position != step:
        raise _error(path, f"scheduler position {position} disagrees with step {step}")
    if not isinstance(history, list) or len(history) != step:
        raise _error(path, f"history has {len(history) if isinstance(history, list) else 'no'} records for step {step}")
    return TrainerState(model_state, {"state": optim_state, "param_groups": parsed["param_groups"]}, scheduler,
                        tensors["rng.torch"], tensors["rng.data"], step, history)


def _error(path: Path, problem: str) -> ValueError:
    return ValueError(f"checkpoint {path}: {problem}")


def _read_file(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """All tensors and the metadata of a safetensors file; a missing, truncated or corrupt file is named."""
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


def _parse_metadata(path: Path, meta: dict[str, str]) -> dict[str, Any]:
    """The metadata with its JSON entries decoded and ``step`` as an int; the format checked."""
    missing = [k for k in META_KEYS if k not in meta]
    if missing:
        raise _error(path, f"metadata lacks {missing} (not a checkpoint written by Trainer.save)")
    parsed: dict[str, Any] = {}
    for key in META_KEYS[2:]:
        try:
            parsed[key] = json.loads(meta[key])
        except json.JSONDecodeError as err:
            raise _error(path, f"metadata {key!r} is not valid JSON ({err})") from None
    if meta["format"] != CHECKPOINT_FORMAT:
        raise _error(path, f"format {meta['format']!r}, expected {CHECKPOINT_FORMAT!r}")
    if not meta["step"].isdigit():
        raise _error(path, f"step must be a non-negative integer, got {meta['step']!r}")
    parsed["step"] = int(meta["step"])
    return parsed


def _check_checksums(path: Path, tensors: dict[str, torch.Tensor], saved: Any) -> None:
    """Every tensor as it was written: safetensors checks the layout of a file, not its bytes, so a bit flipped on
    disk (in a weight's exponent, say) would load and resume silently."""
    if not isinstance(saved, dict) or set(saved) != set(tensors):
        raise _error(path, "metadata 'checksums' does not list exactly the file's tensors")
    for name, t in tensors.items():
        if checksum(t) != saved[name]:
            raise _error(path, f"tensor {name!r} does not match its checksum: its bytes changed after it was written "
                               "(a corrupted disk or copy); the file cannot be trusted")


def _check_settings(path: Path, saved: Any, trainer: Trainer) -> None:
    """A resumed run must train with the settings it was saved with, or it is not the same run."""
    now = json.loads(json.dumps(asdict(trainer.config)))  # tuples as lists, like the saved JSON
    if not isinstance(saved, dict):
        raise _error(path, "metadata 'config' is not a TrainConfig")
    changed = [f"{k}: {saved.get(k)!r} in the checkpoint, {now[k]!r} now" for k in TRAINING_SETTINGS
               if saved.get(k) != now[k]]
    if changed:
        raise ValueError(f"checkpoint {path} was written with other training settings ({'; '.join(changed)}): "
                         "resuming would silently keep the checkpoint's optimizer settings; use the same "
                         "TrainConfig values to continue the run")


def _check_model(path: Path, tensors: dict[str, torch.Tensor], aliases: Any, model: nn.Module
                 ) -> dict[str, torch.Tensor]:
    """The ``model.*`` tensors as a state dict, after checking names, shapes and dtypes against ``model``."""
    if not isinstance(aliases, dict):
        raise _error(path, "metadata 'aliases' is not a mapping of tied weights")
    expected = model.state_dict()
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    missing = sorted(set(expected) - set(model_state) - set(aliases))
    unexpected = sorted((set(model_state) | set(aliases)) - set(expected))
    if missing or unexpected:
        raise _error(path, f"does not fit the model (written for another model or config): missing {missing}, "
                           f"unexpected {unexpected}")
    for name, t in model_state.items():
        want = expected[name]
        if t.shape != want.shape or t.dtype != want.dtype:
            raise _error(path, f"model.{name} is {t.dtype} {tuple(t.shape)}, the model has {want.dtype} "
                               f"{tuple(want.shape)} (written for another model config)")
    return model_state


def _check_optimizer(path: Path, tensors: dict[str, torch.Tensor], groups: Any, optimizer: torch.optim.Optimizer
                     ) -> dict[int, dict[str, torch.Tensor]]:
    """The ``optim.<index>.<name>`` tensors as an optimizer ``state``, after checking them and ``groups``."""
    params = [p for g in optimizer.param_groups for p in g["params"]]
    if not isinstance(groups, list) or [len(g.get("params", ())) for g in groups] != [
            len(g["params"]) for g in optimizer.param_groups]:
        raise _error(path, "its optimizer parameter groups do not match this model's")
    state: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            parts = k.split(".", 2)
            if len(parts) != 3 or not parts[1].isdigit() or int(parts[1]) >= len(params):
                raise _error(path, f"optimizer entry {k!r} names no parameter of this model")
            idx, name = int(parts[1]), parts[2]
            if name in ("exp_avg", "exp_avg_sq") and v.shape != params[idx].shape:
                raise _error(path, f"{k} has shape {tuple(v.shape)}, its parameter {tuple(params[idx].shape)}")
            state.setdefault(idx, {})[name] = v
    return state
