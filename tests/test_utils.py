import torch

from lmkit import utils
from lmkit.transformer import masks


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


def test_show_source_folds_to_a_section(capsys):
    text = utils.source_of(masks.prefix_lm_mask)
    section = utils.source_section(text, "mask = causal_mask", "return mask")
    assert section.splitlines()[0].strip().startswith("mask = causal_mask")
    assert section.splitlines()[-1].strip().startswith("return mask")
    assert len(section.splitlines()) < len(text.splitlines())
    utils.show_source(masks.prefix_lm_mask, "mask = causal_mask", "return mask")  # plain Python: printed
    out = capsys.readouterr().out
    assert out.startswith(section) and "lines in all" in out


def test_show_source_names_a_missing_marker():
    import pytest

    with pytest.raises(ValueError, match="does not occur"):
        utils.source_section("a\nb\n", "zzz")
    with pytest.raises(ValueError, match="does not occur after"):
        utils.source_section("a\nb\n", "a", "zzz")
