"""lmkit.book.notebook: the real source of a function, and the section of it a chapter shows."""

import pytest

from lmkit.book import notebook
from lmkit.transformer import masks


def test_source_is_the_real_source():
    text = notebook.source_of(masks.causal_mask)
    assert text.startswith("def causal_mask(")
    assert "tril()" in text


def test_show_source_folds_to_a_section(capsys):
    text = notebook.source_of(masks.prefix_lm_mask)
    section = notebook.source_section(text, "mask = causal_mask", "return mask")
    assert section.splitlines()[0].strip().startswith("mask = causal_mask")
    assert section.splitlines()[-1].strip().startswith("return mask")
    assert len(section.splitlines()) < len(text.splitlines())
    notebook.show_source(masks.prefix_lm_mask, "mask = causal_mask", "return mask")  # plain Python: printed
    out = capsys.readouterr().out
    assert out.startswith(section) and "lines in all" in out


def test_show_source_names_a_missing_marker():
    with pytest.raises(ValueError, match="does not occur"):
        notebook.source_section("a\nb\n", "zzz")
    with pytest.raises(ValueError, match="does not occur after"):
        notebook.source_section("a\nb\n", "a", "zzz")
