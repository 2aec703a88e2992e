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
"""When this environment variable is ``1`` (the book build sets it), :func:`interact` draws the
default view as a plain output instead of live widgets, so the static site shows real plots."""


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


def show_source(obj: Any) -> None:
    """Display the real source of ``obj`` (highlighted in Jupyter, plain text elsewhere)."""
    text = source_of(obj)
    try:
        from IPython import get_ipython
        from IPython.display import Code, display
    except ImportError:  # plain Python: just print
        print(text)
        return
    if get_ipython() is None:
        print(text)
    else:
        display(Code(text, language="python"))


def is_static() -> bool:
    """True when notebooks should render their default view only (the static book build)."""
    return os.environ.get(STATIC_ENV) == "1"


def interact(fn: Callable[..., Any], **controls: Any) -> Any:
    """Run ``fn`` under ipywidgets controls, like :func:`ipywidgets.interact`.

    Each keyword is a widget (or an abbreviation ipywidgets understands, e.g. ``(0, 10)``).
    In a live kernel this returns the interactive widget; ``fn`` runs once with the defaults
    straight away and again whenever a control moves. In the static book build
    (:data:`STATIC_ENV`), ``fn`` runs once with the default values and its output (a plot)
    becomes a normal cell output, followed by a line naming the controls to try on Colab.
    """
    import ipywidgets as widgets

    if not is_static():
        from IPython.display import display

        box = widgets.interactive(fn, **controls)
        display(box)
        return box
    params = inspect.signature(fn).parameters
    defaults = {}
    for name, abbrev in controls.items():
        default = params[name].default if name in params else inspect.Parameter.empty
        widget = widgets.interactive.widget_from_abbrev(abbrev, default)
        defaults[name] = widget.value
        widget.close()
    result = fn(**defaults)
    names = ", ".join(f"{k}={v!r}" for k, v in defaults.items())
    print(f"[interactive: open this chapter on Colab or Jupyter to move the controls ({names})]")
    return result
