"""lmkit.utils: seeding, device choice, padding and evaluation mode."""

import torch

from lmkit import utils
from lmkit.training import finetune


def test_seed_everything_is_deterministic():
    utils.seed_everything(3)
    a = torch.randn(4)
    g = utils.seed_everything(3)
    assert torch.equal(a, torch.randn(4))
    assert torch.equal(torch.randn(2, generator=g), torch.randn(2, generator=torch.Generator().manual_seed(3)))


def test_pick_device():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert utils.pick_device().type == expected
    assert utils.pick_device("cpu").type == "cpu"


def test_pad_batch_left_and_right() -> None:
    ids, mask = utils.pad_batch([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    ids, mask = utils.pad_batch([[5, 6, 7], [8]], pad_id=9, left=True)
    assert ids.tolist() == [[5, 6, 7], [9, 9, 8]] and finetune.last_token_index(mask).tolist() == [2, 2]


def test_eval_mode_restores_the_mode_even_on_an_exception():
    model = torch.nn.Sequential(torch.nn.Dropout(0.5))
    with utils.eval_mode(model):
        assert not model.training and not model[0].training
    assert model.training and model[0].training
    model.eval()
    with utils.eval_mode(model):
        pass
    assert not model.training  # the mode it had, not train()
    model.train()
    try:
        with utils.eval_mode(model):
            raise RuntimeError("boom")
    except RuntimeError:
        pass
    assert model.training and model[0].training
