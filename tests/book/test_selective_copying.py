"""lmkit.book.experiments.selective_copying: the task asks for the data tokens in order, and a short run learns it."""

from __future__ import annotations

import pytest
import torch

from lmkit.book.experiments.selective_copying import (
    selective_copying_batch,
    selective_copying_vocab,
    task_accuracy,
    train_briefly,
)
from lmkit.ssm.mamba import MambaConfig, MambaLM


def test_selective_copying_batch_asks_for_the_data_in_order():
    g = torch.Generator().manual_seed(0)
    batch = selective_copying_batch(64, length=20, n_data=5, n_symbols=6, generator=g)
    context, go = batch.inputs[:, :20], batch.inputs[:, 20:]
    assert (go == 7).all() and selective_copying_vocab(6) == 8
    assert ((context != 0).sum(1) == 5).all()
    for row in range(64):
        assert torch.equal(context[row][context[row] != 0], batch.targets[row, 20:])
    assert (batch.targets[:, :20] == -100).all()
    with pytest.raises(ValueError, match="n_data"):
        selective_copying_batch(2, length=3, n_data=4)


def test_train_briefly_learns_and_records():
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(vocab_size=selective_copying_vocab(2), d_model=16, n_layers=1, d_state=4))
    g = torch.Generator().manual_seed(1)
    held_out = selective_copying_batch(64, length=6, n_data=1, n_symbols=2, generator=torch.Generator().manual_seed(9))
    before = task_accuracy(model, held_out)[1]
    history = train_briefly(model, lambda: selective_copying_batch(32, length=6, n_data=1, n_symbols=2, generator=g),
                            steps=40, lr=1e-2, eval_batch=held_out, eval_every=20)
    assert history.steps == [20, 40] and len(history.accuracy) == 2 and not model.training
    assert history.loss[-1] < before


def test_train_briefly_stops_at_its_budget_and_evaluates_at_the_end():
    torch.manual_seed(0)
    model = MambaLM(MambaConfig(vocab_size=selective_copying_vocab(2), d_model=8, n_layers=1, d_state=4))
    g = torch.Generator().manual_seed(1)
    held_out = selective_copying_batch(8, length=6, n_data=1, n_symbols=2, generator=torch.Generator().manual_seed(9))

    def batches():
        return selective_copying_batch(4, length=6, n_data=1, n_symbols=2, generator=g)

    history = train_briefly(model, batches, steps=5, eval_batch=held_out, eval_every=2)
    assert history.steps == [2, 4, 5] and history.seconds == sorted(history.seconds) and not model.training
    model.train()
    timed_out = train_briefly(model, batches, steps=1000, seconds=0.0, eval_batch=held_out)
    assert timed_out.steps == [0] and len(timed_out.loss) == 1 and not model.training  # no step: one evaluation
    assert train_briefly(model, batches, steps=3).steps == []  # nothing to evaluate on
    with pytest.raises(ValueError, match="eval_every must be a positive int, got 0"):
        train_briefly(model, batches, eval_every=0)
