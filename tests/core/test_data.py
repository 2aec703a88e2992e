import pytest

from lmkit.data import pydoc_text, split_text


def test_pydoc_text_is_stable_and_large():
    text = pydoc_text()
    assert len(text) > 300_000
    assert text == pydoc_text()


def test_split_is_disjoint_and_complete():
    text = pydoc_text()
    train, held_out = split_text(text)
    assert train + "\n\n" + held_out == text
    assert 0.05 < len(held_out) / len(text) < 0.15
    with pytest.raises(ValueError):
        split_text(text, 1.5)
