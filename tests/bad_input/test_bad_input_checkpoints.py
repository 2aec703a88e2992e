"""Checkpoints under faults: a save killed (SIGKILL) at several points, and bad checkpoint files.

A child process trains a small model, saving every two steps, and is killed during its third save — before the
write, halfway through writing the temporary file, after the write but before the rename, after the rename, and at
a few random moments. Every time the last good checkpoint must load, the leftover temporary file must be cleaned
up, and resuming must continue the uninterrupted run bit for bit. Then corrupted or mismatched checkpoints must be
rejected with a message naming the problem *before* the trainer's state changes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from lmkit.training import checkpoint, objectives, recipe

VOCAB, CTX, STEPS = 40, 16, 10
CFG = recipe.TrainConfig(max_steps=STEPS, lr=3e-2, warmup_steps=2, progress=False)
KILL_POINTS = ("before_write", "mid_write", "before_replace", "after_replace")


class TinyLM(nn.Module):
    def __init__(self, width: int = 24) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, width)
        self.norm = nn.LayerNorm(width)
        self.mix = nn.Linear(width, width)
        self.lm_head = nn.Linear(width, VOCAB, bias=False)
        self.lm_head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok_emb(ids)
        return self.lm_head(h + torch.tanh(self.mix(self.norm(h))))


def batch(step: int, g: torch.Generator) -> torch.Tensor:
    return (torch.randint(0, 4, (8, 1), generator=g) + torch.arange(CTX)) % VOCAB


def loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return objectives.causal_lm_loss(model(ids), ids)


def trainer(cfg: recipe.TrainConfig = CFG, width: int = 24) -> recipe.Trainer:
    torch.manual_seed(0)
    return recipe.Trainer(TinyLM(width), loss, batch, cfg)


def _kill() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def child(point: str, path: str) -> None:
    """Train, saving every 2 steps; die by SIGKILL at ``point`` of the third save (or at a random moment)."""
    torch.set_num_threads(1)
    saves = {"n": 0}
    write, replace, sync_dir = checkpoint._write_durably, os.replace, checkpoint._sync_dir

    def third() -> bool:
        return saves["n"] == 3

    def patched_write(p: Path, data: bytes) -> None:
        saves["n"] += 1
        if third() and point == "before_write":
            _kill()
        if third() and point == "mid_write":
            with open(p, "wb") as f:
                f.write(data[: len(data) // 2])
                f.flush()
                os.fsync(f.fileno())
            _kill()
        write(p, data)

    def patched_replace(a, b) -> None:
        if third() and point == "before_replace":
            _kill()
        replace(a, b)

    def patched_sync(d: Path) -> None:
        if third() and point == "after_replace":
            _kill()
        sync_dir(d)

    checkpoint._write_durably, checkpoint._sync_dir = patched_write, patched_sync
    checkpoint.os.replace = patched_replace  # the module's os is the global one: fine in a child that dies anyway
    t = trainer()
    for _ in range(STEPS):
        t.train_step()
        if t.step % 2 == 0:
            t.save(path)
            print(f"saved {t.step}", flush=True)


def straight_losses() -> list[float]:
    t = trainer()
    return [t.train_step()["loss"] for _ in range(STEPS)]


@pytest.fixture(scope="module")
def reference() -> list[float]:
    return straight_losses()


def run_child(point: str, path: Path, kill_after: float | None = None) -> subprocess.CompletedProcess | int:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, __file__, point, str(path)]
    if kill_after is None:
        return subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    while proc.stdout.readline().strip() != "saved 2":  # the first checkpoint exists; now kill at a random time
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read())
    time.sleep(kill_after)
    proc.kill()
    proc.wait(timeout=60)
    return proc.returncode


def assert_resumes_bit_identically(path: Path, reference: list[float], min_step: int) -> None:
    resumed = trainer()
    resumed.load(path)  # the last good checkpoint
    assert not Path(str(path) + ".tmp").exists(), "load leaves the killed save's temporary file behind"
    assert resumed.step >= min_step and resumed.step % 2 == 0
    assert [r["loss"] for r in resumed.history] == reference[: resumed.step]
    start = resumed.step
    rest = [resumed.train_step()["loss"] for _ in range(STEPS - start)]
    assert rest == reference[start:]  # bit for bit


@pytest.mark.parametrize("point", KILL_POINTS)
def test_save_killed_at_a_point_loses_nothing(point: str, tmp_path: Path, reference: list[float]) -> None:
    path = tmp_path / "ckpt.safetensors"
    result = run_child(point, path)
    assert result.returncode == -signal.SIGKILL, result.stderr[-3000:]
    assert result.stdout.split() == ["saved", "2", "saved", "4"], result.stdout
    leftover = Path(str(path) + ".tmp")
    assert leftover.exists() == (point in ("mid_write", "before_replace")), sorted(os.listdir(tmp_path))
    # the rename is atomic: after it, the new checkpoint (step 6) is in place even though the process died
    assert_resumes_bit_identically(path, reference, 6 if point == "after_replace" else 4)
    again = trainer()
    again.load(path)
    assert again.save(path) == path and sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.3])
def test_save_killed_at_a_random_moment_loses_nothing(delay: float, tmp_path: Path, reference: list[float]) -> None:
    path = tmp_path / "ckpt.safetensors"
    run_child("random", path, kill_after=delay)
    assert_resumes_bit_identically(path, reference, 2)


def test_next_save_removes_a_stale_temporary_file(tmp_path: Path) -> None:
    path = tmp_path / "ckpt.safetensors"
    Path(str(path) + ".tmp").write_bytes(b"half a checkpoint")
    trainer().save(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]


def test_failed_save_leaves_no_temporary_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "ckpt.safetensors"
    trainer().save(path)

    def disk_full(p: Path, data: bytes) -> None:
        Path(p).write_bytes(data[:10])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(checkpoint, "_write_durably", disk_full)
    with pytest.raises(OSError, match="No space"):
        trainer().save(path)
    assert sorted(os.listdir(tmp_path)) == ["ckpt.safetensors"]
    monkeypatch.undo()
    trainer().load(path)


# --------------------------------------------------------------------------------- bad checkpoints, state intact


def _saved(tmp_path: Path) -> tuple[Path, dict[str, torch.Tensor], dict[str, str]]:
    t = trainer()
    for _ in range(2):
        t.train_step()
    path = t.save(tmp_path / "good.safetensors")
    with safe_open(str(path), framework="pt") as f:
        return path, {k: f.get_tensor(k) for k in f.keys()}, f.metadata()


def _edit_meta(key: str, value: str):
    def edit(tensors, meta):
        meta[key] = value
    return edit


def _edit_tensor(name: str, fn):
    def edit(tensors, meta):
        tensors[name] = fn(tensors[name])
    return edit


def _drop(prefix: str):
    def edit(tensors, meta):
        for k in [k for k in tensors if k.startswith(prefix)][:1]:
            del tensors[k]
    return edit


def _add(name: str):
    def edit(tensors, meta):
        tensors[name] = torch.zeros(3)
    return edit


def _nan(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[0] = float("nan")
    return t


def _inf(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    t.view(-1)[-1] = float("inf")
    return t


def _config_edit(**changes):
    def edit(tensors, meta):
        cfg = json.loads(meta["config"])
        cfg.update(changes)
        meta["config"] = json.dumps(cfg)
    return edit


BAD_CHECKPOINTS = {
    "format": (_edit_meta("format", "other/2"), "format"),
    "step not a number": (_edit_meta("step", "two"), "step"),
    "negative step": (_edit_meta("step", "-1"), "step"),
    "step past history": (_edit_meta("step", "5"), "disagrees with step|records for step"),
    "aliases not JSON": (_edit_meta("aliases", "{"), "aliases.*JSON"),
    "aliases a list": (_edit_meta("aliases", "[1]"), "aliases"),
    "param_groups not JSON": (_edit_meta("param_groups", "[["), "param_groups.*JSON"),
    "param_groups wrong count": (_edit_meta("param_groups", "[]"), "parameter groups"),
    "scheduler not JSON": (_edit_meta("scheduler", "nope"), "scheduler.*JSON"),
    "scheduler position": (_edit_meta("scheduler", '{"last_epoch": 7}'), "scheduler position"),
    "history not JSON": (_edit_meta("history", "]"), "history.*JSON"),
    "history short": (_edit_meta("history", "[]"), "history"),
    "config not JSON": (_edit_meta("config", "{"), "config.*JSON"),
    "config not a mapping": (_edit_meta("config", "3"), "config"),
    "NaN weight": (_edit_tensor("model.mix.weight", _nan), "model.mix.weight.*non-finite"),
    "inf weight": (_edit_tensor("model.norm.bias", _inf), "model.norm.bias.*non-finite"),
    "NaN moment": (_edit_tensor("optim.0.exp_avg_sq", _nan), "optim.0.exp_avg_sq.*non-finite"),
    "wrong shape": (_edit_tensor("model.mix.weight", lambda t: t[:5]), "model.mix.weight.*another model"),
    "wrong dtype": (_edit_tensor("model.mix.weight", lambda t: t.double()), "model.mix.weight.*float64"),
    "moment shape": (_edit_tensor("optim.0.exp_avg", lambda t: t.flatten()), "optim.0.exp_avg.*shape"),
    "missing weight": (_drop("model.mix"), "missing.*mix"),
    "extra weight": (_add("model.extra.weight"), "unexpected.*extra"),
    "optimizer entry for no parameter": (_add("optim.99.exp_avg"), "optim.99"),
    "rng missing": (_drop("rng.data"), "rng.data"),
    "lr changed": (_config_edit(lr=1e-3), "lr: 0.001 in the checkpoint, 0.03 now"),
    "betas changed": (_config_edit(betas=[0.9, 0.999]), "betas"),
    "weight decay changed": (_config_edit(weight_decay=0.0), "weight_decay"),
    "max_steps changed": (_config_edit(max_steps=99), "max_steps"),
    "seed changed": (_config_edit(seed=5), "seed"),
    "eps changed": (_config_edit(eps=1e-6), "eps"),
    "checksums not JSON": (_edit_meta("checksums", "{"), "checksums.*JSON"),
    "checksums of other tensors": (_edit_meta("checksums", '{"model.x": 1}'), "checksums.*exactly the file's tensors"),
}
STALE_CHECKSUMS = {"checksums not JSON", "checksums of other tensors", "no checksums"}
"""The cases that are about the checksums; every other edit is written with fresh checksums, as a writer that wrote
consistent but wrong content would, so each case reaches the check it is about."""
for _key in ("format", "step", "aliases", "param_groups", "scheduler", "history", "config", "checksums"):
    BAD_CHECKPOINTS[f"no {_key}"] = (lambda t, m, k=_key: m.pop(k), f"lacks.*{_key}")


def _snapshot(t: recipe.Trainer):
    return ({k: v.clone() for k, v in t.model.state_dict().items()}, t.step, list(t.history),
            json.dumps(t.optimizer.state_dict()["param_groups"]), t.generator.get_state().clone())


def _assert_untouched(t: recipe.Trainer, before) -> None:
    after = _snapshot(t)
    assert all(torch.equal(a, b) for a, b in zip(before[0].values(), after[0].values(), strict=True))
    assert after[1:4] == before[1:4] and torch.equal(after[4], before[4])
    assert not t.optimizer.state  # no moments were loaded


@pytest.mark.parametrize("case", sorted(BAD_CHECKPOINTS))
def test_bad_checkpoint_is_rejected_before_any_state_changes(case: str, tmp_path: Path) -> None:
    path, tensors, meta = _saved(tmp_path)
    edit, message = BAD_CHECKPOINTS[case]
    edit(tensors, meta)
    if case not in STALE_CHECKSUMS:
        meta["checksums"] = json.dumps({name: checkpoint.checksum(t) for name, t in tensors.items()})
    bad = tmp_path / "bad.safetensors"
    save_file(tensors, str(bad), metadata=meta)
    fresh = trainer()
    before = _snapshot(fresh)
    with pytest.raises(ValueError, match=message) as info:
        fresh.load(bad)
    assert str(bad) in str(info.value)
    _assert_untouched(fresh, before)


@pytest.mark.parametrize("tensor", ["model.mix.weight", "optim.0.exp_avg_sq", "rng.data"])
def test_a_bit_flipped_on_disk_is_named_with_its_tensor(tensor: str, tmp_path: Path) -> None:
    """One bit of one stored number flipped in the file itself (the top exponent bit of a float32 weight: 0.01
    becomes about 3e36), which safetensors reads without complaint: the checksum names the tensor."""
    path, tensors, _ = _saved(tmp_path)
    data = bytearray(path.read_bytes())
    header = 8 + int.from_bytes(data[:8], "little")
    start = header + json.loads(data[8:header])[tensor]["data_offsets"][0]
    data[start + 3] ^= 0x40  # the second-highest bit of a little-endian float32: its exponent's top bit
    path.write_bytes(bytes(data))
    fresh = trainer()
    before = _snapshot(fresh)
    with pytest.raises(ValueError, match=rf"tensor '{tensor}' does not match its checksum"):
        fresh.load(path)
    _assert_untouched(fresh, before)


@pytest.mark.parametrize("cut", [0, 7, 100, 0.5, -1])
def test_truncated_checkpoint_is_named(cut: float, tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    data = path.read_bytes()
    bad = tmp_path / "cut.safetensors"
    bad.write_bytes(data[: int(len(data) * cut) if isinstance(cut, float) else cut])
    fresh = trainer()
    before = _snapshot(fresh)
    with pytest.raises(ValueError, match="not a readable safetensors file") as info:
        fresh.load(bad)
    assert str(bad) in str(info.value)
    _assert_untouched(fresh, before)


def test_missing_checkpoint_and_directory_are_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no checkpoint at .*nothing"):
        trainer().load(tmp_path / "nothing.safetensors")
    with pytest.raises(FileNotFoundError, match="directory"):
        trainer().load(tmp_path)


def test_resume_with_another_model_config_fails_before_touching_the_model(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    wider = trainer(width=32)
    before = _snapshot(wider)
    with pytest.raises(ValueError, match="another model"):
        wider.load(path)
    _assert_untouched(wider, before)


def test_logging_settings_may_change_on_resume(tmp_path: Path) -> None:
    path, _, _ = _saved(tmp_path)
    t = trainer(dataclasses.replace(CFG, eval_every=3, checkpoint_every=5, progress=True))
    t.load(path)
    assert t.step == 2


if __name__ == "__main__":
    child(sys.argv[1], sys.argv[2])
