"""Small helpers shared by the notebooks: device choice, seeding, showing real source, widgets.

The notebooks never paste copies of library code: they call :func:`show_source` on the real
function, so what the reader sees is exactly what runs.
"""

from __future__ import annotations

import inspect
import os
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

STATIC_ENV = "LMKIT_STATIC"
"""When this environment variable is ``1`` (the book build sets it), :func:`interact` precomputes every
state of its controls (:mod:`lmkit.controls`) instead of showing live widgets, so the static site moves."""


def pick_device(prefer: str | None = None) -> torch.device:
    """Return ``cuda`` when a GPU is present, else ``cpu``. ``prefer`` forces a choice."""
    if prefer is not None:
        return torch.device(prefer)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def seed_everything(seed: int = 0) -> torch.Generator:
    """Seed Python, NumPy and PyTorch (CPU and CUDA); return a CPU generator seeded the same way.

    Notebooks call this once at the top so every run of the book shows the same numbers.
    """
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)
    return torch.Generator().manual_seed(seed)


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


def is_static() -> bool:
    """True when notebooks should render their default view only (the static book build)."""
    return os.environ.get(STATIC_ENV) == "1"


def interact(fn: Callable[..., Any], *, max_states: int | None = None, **controls: Any) -> None:
    """Show ``fn`` under controls, like :func:`ipywidgets.interact`: live in a kernel, precomputed on the site.

    Each keyword is a widget (or an abbreviation ipywidgets understands, e.g. ``(0, 10)`` or a list).
    In a live kernel this displays ipywidgets' ``interactive`` (:func:`lmkit.controls.live_interact`); ``fn``
    runs once with the defaults straight away and again whenever a control moves. In the static book build
    (:data:`STATIC_ENV`), :func:`lmkit.controls.static_interact` runs ``fn`` over a grid of the control values
    (at most ``max_states`` points, :data:`lmkit.controls.DEFAULT_MAX_STATES` unless given) and the page shows
    the state the reader's controls select. Returns nothing, so a cell ending with it shows the controls once.
    """
    from lmkit import controls as shown

    if is_static():
        shown.static_interact(fn, controls, shown.DEFAULT_MAX_STATES if max_states is None else max_states)
    else:
        shown.live_interact(fn, controls)
