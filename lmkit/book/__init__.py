"""The book's layer: what the chapters need on top of the library, and nothing the library needs.

lmkit's core (``lmkit.transformer``, ``lmkit.tokenizers``, ``lmkit.decoding``, ``lmkit.quant`` …) holds the
algorithms; this layer holds what makes them a book. It may import the core; the core never imports it
(``tests/core/test_layout.py`` checks both), and only this layer needs matplotlib and ipywidgets (the ``book`` extra).

* :mod:`~lmkit.book.controls` — :func:`interact`: live ipywidgets in a kernel, precomputed states on the static site;
* :mod:`~lmkit.book.notebook` — :func:`show_source`: the real source of a function on the page;
* :mod:`~lmkit.book.diagrams` — figures drawn from lmkit's own objects (masks, GGUF blocks, the KV cache);
* :mod:`~lmkit.book.tokens` — token boundaries drawn as boxes;
* :mod:`~lmkit.book.exercises` — the checked exercises, one module per chapter, on
  :mod:`~lmkit.book.exercises.framework`;
* :mod:`~lmkit.book.experiments` — the chapters' own experiments and data (T5's objective comparison at toy scale,
  selective copying, the retrieval question set).

A chapter's setup cell imports the two functions every chapter uses from here::

    from lmkit.book import interact, show_source
"""

from lmkit.book.controls import interact, is_static
from lmkit.book.notebook import show_source

__all__ = ["interact", "is_static", "show_source"]
