"""Showing lmkit's real source on a chapter's page.

The chapters never paste copies of library code: they call :func:`show_source` on the real function, so what the
reader sees is exactly what runs.

    >>> from lmkit.book.notebook import source_section
    >>> source_section("a\nb\nc\nd", "b", "c")
    'b\nc'
"""

from __future__ import annotations

import inspect
from typing import Any


def source_of(obj: Any) -> str:
    """The source text of a function, class or module, exactly as it is in lmkit."""
    return inspect.getsource(obj)


def source_section(text: str, start: str, stop: str | None = None) -> str:
    """The lines of ``text`` from the first one containing ``start`` through the first later one containing
    ``stop`` (to the end when ``stop`` is ``None``). A clear error when a marker is not in the text."""
    lines = text.splitlines()
    first = next((i for i, line in enumerate(lines) if start in line), None)
    if first is None:
        raise ValueError(f"show_source: {start!r} does not occur in the source")
    last = len(lines) - 1
    if stop is not None:
        last = next((i for i in range(first + 1, len(lines)) if stop in lines[i]), None)
        if last is None:
            raise ValueError(f"show_source: {stop!r} does not occur after {start!r} in the source")
    return "\n".join(lines[first : last + 1])


def show_source(obj: Any, start: str | None = None, stop: str | None = None) -> None:
    """Display the real source of ``obj`` (highlighted in Jupyter, plain text elsewhere).

    With ``start`` (and optionally ``stop``), show only the section the text discusses — from the first line
    containing ``start`` through the first later line containing ``stop`` — followed by the whole source folded
    in a collapsed block, one click away (plain text: the section, then a note on the full length).
    """
    text = source_of(obj)
    section = text if start is None else source_section(text, start, stop)
    folded = section != text
    try:
        from IPython import get_ipython
        from IPython.display import HTML, Code, display
    except ImportError:  # plain Python: just print
        get_ipython = None
    if get_ipython is None or get_ipython() is None:
        print(section)
        if folded:
            print(f"# ... ({len(text.splitlines())} lines in all: show_source(obj) prints the whole source)")
        return
    display(Code(section, language="python"))
    if folded:
        full = Code(text, language="python")._repr_html_()
        display(HTML(f"<details><summary>the whole source ({len(text.splitlines())} lines)</summary>{full}</details>"))
