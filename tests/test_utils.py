import ipywidgets as widgets
import torch

from lmkit import masks, utils


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


def test_source_is_the_real_source():
    text = utils.source_of(masks.causal_mask)
    assert text.startswith("def causal_mask(")
    assert "tril()" in text


def test_interact_static_mode_runs_defaults_once(monkeypatch, capsys):
    monkeypatch.setenv(utils.STATIC_ENV, "1")
    calls = []

    def fn(kind="causal", n=3):
        calls.append((kind, n))
        return kind, n

    result = utils.interact(fn, kind=widgets.Dropdown(options=["a", "causal"], value="causal"), n=(1, 10))
    assert calls == [("causal", 3)]  # slider abbreviation (1, 10) takes the function's default 3
    assert result == ("causal", 3)
    assert "interactive" in capsys.readouterr().out


def test_interact_live_mode_returns_widget(monkeypatch):
    monkeypatch.delenv(utils.STATIC_ENV, raising=False)
    box = utils.interact(lambda n=2: n * 2, n=(1, 5))
    assert isinstance(box, widgets.interactive)
    assert box.result == 4
