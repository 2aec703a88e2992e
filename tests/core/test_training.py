"""The LLaMA recipe against PyTorch / HF references, and checkpoint resume reproducing the same loss curve."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest
import torch
from torch import nn

from lmkit.training import objectives
from lmkit.training import recipe as training

VOCAB, CTX = 40, 16


class TinyLM(nn.Module):
    """Embedding → LayerNorm → Linear (+ dropout) → tied head: every kind of parameter the recipe groups."""

    def __init__(self) -> None:
        super().__init__()
        self.tok_emb = nn.Embedding(VOCAB, 24)
        self.norm = nn.LayerNorm(24)
        self.mix = nn.Linear(24, 24)
        self.drop = nn.Dropout(0.1)
        self.lm_head = nn.Linear(24, VOCAB, bias=False)
        self.lm_head.weight = self.tok_emb.weight

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        h = self.tok_emb(ids)
        h = h + self.drop(torch.tanh(self.mix(self.norm(h))))
        return self.lm_head(h)


def _batch(step: int, g: torch.Generator) -> torch.Tensor:
    start = torch.randint(0, 4, (8, 1), generator=g)
    return (start + torch.arange(CTX)) % VOCAB  # learnable: counting sequences


def _loss(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
    return objectives.causal_lm_loss(model(ids), ids)


def test_lr_schedule_matches_hf_cosine_with_min_lr() -> None:
    transformers = pytest.importorskip("transformers")
    warmup, total, peak = 20, 200, 3e-4
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=peak)
    hf = transformers.get_cosine_with_min_lr_schedule_with_warmup(opt, warmup, total, min_lr_rate=0.1)
    for step in range(total):
        want = training.lr_at(step, peak, warmup, total)
        assert opt.param_groups[0]["lr"] == pytest.approx(want, rel=1e-9, abs=1e-15)
        opt.step()
        hf.step()
    assert training.lr_at(total, peak, warmup, total) == pytest.approx(0.1 * peak)  # LLaMA: ends at 10% of peak
    assert training.lr_at(warmup, peak, warmup, total) == pytest.approx(peak)
    with pytest.raises(ValueError):
        training.lr_at(0, peak, 300, 200)


def test_clip_grad_norm_matches_torch() -> None:
    torch.manual_seed(0)
    a = [nn.Parameter(torch.randn(5, 7)), nn.Parameter(torch.randn(3))]
    b = [nn.Parameter(p.detach().clone()) for p in a]
    for pa, pb in zip(a, b, strict=True):
        g = torch.randn_like(pa) * 10
        pa.grad, pb.grad = g.clone(), g.clone()
    ours = training.clip_grad_norm(a, 1.0)
    ref = torch.nn.utils.clip_grad_norm_(b, 1.0)
    torch.testing.assert_close(ours, ref)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)
    total = torch.linalg.vector_norm(torch.cat([p.grad.flatten() for p in a]))
    assert total == pytest.approx(1.0, rel=1e-5)
    small = [nn.Parameter(torch.ones(2))]
    small[0].grad = torch.full((2,), 0.1)
    training.clip_grad_norm(small, 1.0)
    torch.testing.assert_close(small[0].grad, torch.full((2,), 0.1))  # below the threshold: untouched


def test_param_groups_skip_norms_biases_embeddings() -> None:
    model = TinyLM()
    decay, no_decay = training.param_groups(model, 0.1)
    assert decay["names"] == ["mix.weight"]
    assert set(no_decay["names"]) == {"tok_emb.weight", "norm.weight", "norm.bias", "mix.bias"}  # tied head once
    decay, _ = training.param_groups(model, 0.1, decay_embeddings=True)
    assert set(decay["names"]) == {"tok_emb.weight", "mix.weight"}


def test_adamw_decay_is_decoupled() -> None:
    """With zero gradient, Adam's update is 0 and AdamW only shrinks the weight: θ ← θ(1 − lr·λ)."""
    model = nn.Linear(4, 4, bias=False)
    w0 = model.weight.detach().clone()
    opt = training.make_optimizer(model, lr=0.1, weight_decay=0.5)
    model.weight.grad = torch.zeros_like(model.weight)
    opt.step()
    torch.testing.assert_close(model.weight.detach(), w0 * (1 - 0.1 * 0.5))


def test_trainer_learns_and_resume_continues_the_same_curve(tmp_path: Path) -> None:
    cfg = training.TrainConfig(max_steps=40, lr=3e-2, warmup_steps=5, progress=False)
    torch.manual_seed(0)
    held_out = [_batch(0, torch.Generator().manual_seed(99))]
    straight = training.Trainer(TinyLM(), _loss, _batch, cfg)
    full = [r["loss"] for r in straight.train()]
    assert full[-1] < 0.5 * full[0]
    assert "eval_loss" not in straight.history[-1]
    torch.manual_seed(0)
    evaluated = training.Trainer(TinyLM(), _loss, _batch, dataclasses.replace(cfg, eval_every=10),
                                 eval_fn=lambda m: training.mean_loss(m, _loss, held_out))
    assert [r["loss"] for r in evaluated.train()] == full  # evaluating does not disturb training
    evals = [r["eval_loss"] for r in evaluated.history if "eval_loss" in r]
    assert len(evals) == 4 and evals[-1] < evals[0]

    torch.manual_seed(0)
    first = training.Trainer(TinyLM(), _loss, _batch, cfg)
    first.train(steps=20)
    ckpt = first.save(tmp_path / "ckpt.safetensors")
    assert not (tmp_path / "ckpt.safetensors.tmp").exists()
    del first

    torch.manual_seed(1234)  # a "fresh process": other RNG state, other initial weights
    resumed = training.Trainer(TinyLM(), _loss, _batch, cfg)
    resumed.load(ckpt)
    assert resumed.step == 20
    second = [r["loss"] for r in resumed.train()]
    assert second == full[20:]  # bit-for-bit on CPU
    assert [r["loss"] for r in resumed.history] == full
    assert resumed.model.lm_head.weight is resumed.model.tok_emb.weight  # tying survives the load
    assert resumed.optimizer.param_groups[0]["lr"] == pytest.approx(training.lr_at(40, 3e-2, 5, 40))


def test_trainer_checkpoints_periodically_and_atomically(tmp_path: Path) -> None:
    path = tmp_path / "run" / "ckpt.safetensors"
    cfg = training.TrainConfig(max_steps=6, lr=1e-2, warmup_steps=1, checkpoint_path=str(path), checkpoint_every=2,
                               progress=False)
    trainer = training.Trainer(TinyLM(), _loss, _batch, cfg)
    trainer.train(steps=3)
    loaded = training.Trainer(TinyLM(), _loss, _batch, cfg)
    loaded.load(path)
    assert loaded.step == 3  # the final save at the end of train() is the newest
    assert sorted(p.name for p in path.parent.iterdir()) == ["ckpt.safetensors"]
    with pytest.raises(ValueError, match="does not fit"):
        training.Trainer(nn.Linear(3, 3), _loss, _batch, cfg).load(path)


def test_trainer_stops_at_a_wall_clock_budget(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [0.0]
    monkeypatch.setattr(training.time, "perf_counter", lambda: clock[0])

    def one_second_per_step(model: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        clock[0] += 1.0
        return _loss(model, ids)

    cfg = training.TrainConfig(max_steps=100, lr=1e-2, warmup_steps=1, progress=False)
    trainer = training.Trainer(TinyLM(), one_second_per_step, _batch, cfg)
    assert [r["step"] for r in trainer.train(seconds=3.5)] == [0, 1, 2, 3]  # steps start at 0, 1, 2, 3 s; not at 4 s
    assert len(trainer.train(steps=2, seconds=100.0)) == 2  # the step count still binds
    assert trainer.train(seconds=0) == [] and trainer.step == 6
    with pytest.raises(ValueError, match="seconds must be a finite number >= 0, got -1.0"):
        trainer.train(seconds=-1.0)
    with pytest.raises(ValueError, match="steps must be a non-negative int, got -1"):
        trainer.train(steps=-1)


def test_mean_loss_gives_the_model_its_mode_back_even_when_evaluation_raises() -> None:
    model = TinyLM()  # a new module is in training mode
    batches = [_batch(0, torch.Generator().manual_seed(0))]

    def broken(m: nn.Module, ids: torch.Tensor) -> torch.Tensor:
        assert not m.training and not m.drop.training  # evaluated in eval mode
        raise RuntimeError("evaluation failed")

    with pytest.raises(RuntimeError, match="evaluation failed"):
        training.mean_loss(model, broken, batches)
    assert model.training and model.drop.training
    model.eval()
    training.mean_loss(model, _loss, batches)
    assert not model.training  # and an evaluated model stays in eval mode


def test_mean_loss_gives_perplexity_of_uniform_model() -> None:
    class Uniform(nn.Module):
        def forward(self, ids: torch.Tensor) -> torch.Tensor:
            return torch.zeros(*ids.shape, VOCAB)

    g = torch.Generator().manual_seed(0)
    loss = training.mean_loss(Uniform(), _loss, [_batch(i, g) for i in range(3)])
    assert math.exp(loss) == pytest.approx(VOCAB, rel=1e-5)
