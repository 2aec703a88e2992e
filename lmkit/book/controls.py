"""Controls that move everywhere: live ipywidgets in a kernel, precomputed states on the static site.

A chapter writes one figure function and its controls, exactly as for :func:`ipywidgets.interact`::

    interact(draw_mask, kind=widgets.Dropdown(options=["causal", "prefix_lm"]), prefix_len=(0, 10))

* **In JupyterLab or Colab** this is ipywidgets' ``interactive``: ``fn`` reruns whenever a control moves, and
  free-text controls (a prompt, a sentence) take anything the reader types.
* **In the book build** (``LMKIT_STATIC=1``, :data:`STATIC_ENV`) there is no kernel behind the page.
  :func:`plan_axes` turns each control into a grid of values covering its whole range (every option of a dropdown,
  both states of a checkbox, evenly spaced values of a slider including both ends and the default, the suggestions of a
  ``Combobox``); ``fn`` runs once per grid point and :func:`record` keeps what it showed (printed text,
  matplotlib figures, ``display`` outputs). :func:`render_html` writes the controls as plain HTML inputs plus
  every recorded state; `Alpine.js <https://alpinejs.dev>`_, served by the site itself, shows the state the
  inputs point at. JavaScript only *chooses* among outputs that lmkit computed at build time: no number of
  the model is computed in the browser.

The grid is a product over the controls, aimed at ``max_states`` points: discrete controls keep every value,
sliders share the budget left, one value at a time (three sliders under a budget of 27 get three values each),
but never fewer than both ends and the default. States whose outputs are identical (a clamped argument, say)
are stored once. Each state costs one run of ``fn`` plus one figure render (~0.1-0.5 s) at build time: keep
``fn`` cheap (run the model once, outside it, and derive the states from what it returned).

Left out: ``interact_manual``-style buttons, and controls linked to each other (a slider whose range follows
another control) - on the site each control keeps the range it was built with.
"""

from __future__ import annotations

import base64
import contextlib
import html
import inspect
import io
import itertools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

STATIC_ENV = "LMKIT_STATIC"
"""When this environment variable is ``1`` (the book build sets it), :func:`interact` precomputes every state of its
controls instead of showing live widgets, so the static site moves."""
DEFAULT_MAX_STATES = 16
"""Grid points per ``interact`` when the call does not say: under 1 MB of figures, a few seconds to build."""
FIGURE_DPI = 80
"""Resolution of the recorded figures (the site shows them at their natural size)."""


@dataclass(frozen=True)
class Axis:
    """One control as the static site sees it: the grid of values it can take.

    >>> a = Axis("n", "layers", "range", (2, 4, 8), ("2", "4", "8"), default=1)
    >>> a.values[a.default]
    4
    """

    name: str  # the keyword of fn
    label: str  # what the page writes next to the input
    kind: Literal["range", "select", "checkbox", "text"]
    values: tuple[Any, ...]
    labels: tuple[str, ...]
    default: int  # index of the default value in ``values``


def _snap(value: float, lo: float, step: float, n: int) -> int:
    """Index of the slider position nearest ``value`` (positions ``lo + i * step``, ``0 <= i < n``)."""
    return min(max(round((value - lo) / step), 0), n - 1)


def slider_positions(n: int, count: int, default: int) -> list[int]:
    """``count`` evenly spaced positions out of ``0..n-1``, both ends included, plus ``default``.

    >>> slider_positions(65, 3, 5)
    [0, 5, 32, 64]
    >>> slider_positions(4, 10, 1)
    [0, 1, 2, 3]
    """
    if n <= count:
        return list(range(n))
    count = max(count, 2)
    return sorted({round(j * (n - 1) / (count - 1)) for j in range(count)} | {default})


def _slider_axis(name: str, widget: Any, count: int) -> Axis:
    import ipywidgets as widgets

    if isinstance(widget, widgets.FloatLogSlider):  # positions are exponents; the value is base ** exponent
        n = int(round((widget.max - widget.min) / widget.step)) + 1
        default = _snap(math.log(widget.value, widget.base), widget.min, widget.step, n)
        positions = slider_positions(n, count, default)
        values = tuple(float(f"{widget.base ** (widget.min + i * widget.step):.12g}") for i in positions)
    elif isinstance(widget, widgets.SelectionSlider):
        n = len(widget.options)
        default = widget.index
        positions = slider_positions(n, count, default)
        values = tuple(widget._options_values[i] for i in positions)
        labels = tuple(widget._options_labels[i] for i in positions)
        return Axis(name, widget.description or name, "range", values, labels, positions.index(default))
    else:
        n = int(round((widget.max - widget.min) / widget.step)) + 1
        default = _snap(widget.value, widget.min, widget.step, n)
        positions = slider_positions(n, count, default)
        if isinstance(widget, widgets.IntSlider):
            values = tuple(int(widget.min + i * widget.step) for i in positions)
        else:
            values = tuple(float(f"{widget.min + i * widget.step:.12g}") for i in positions)
    labels = tuple(format(v, widget.readout_format) for v in values)
    if len(set(labels)) < len(labels):  # e.g. learning rates under ipywidgets' default ".2f": all "0.00"
        labels = tuple(f"{v:.3g}" for v in values)
    return Axis(name, widget.description or name, "range", values, labels, positions.index(default))


def _native_count(widget: Any) -> int:
    import ipywidgets as widgets

    if isinstance(widget, widgets.SelectionSlider):
        return len(widget.options)
    if isinstance(widget, widgets.FloatLogSlider | widgets.IntSlider | widgets.FloatSlider):
        return int(round((widget.max - widget.min) / widget.step)) + 1
    return 0


def _discrete_axis(name: str, widget: Any) -> Axis:
    import ipywidgets as widgets

    label = widget.description or name
    if isinstance(widget, widgets.Checkbox | widgets.ToggleButton):
        return Axis(name, label, "checkbox", (False, True), ("off", "on"), int(bool(widget.value)))
    if isinstance(widget, widgets.Combobox):  # free text in a kernel; its suggestions on the site
        options = list(widget.options)
        if widget.value not in options:
            options.insert(0, widget.value)
        return Axis(name, label, "select", tuple(options), tuple(options), options.index(widget.value))
    if isinstance(widget, widgets.Text | widgets.Textarea):
        return Axis(name, label, "text", (widget.value,), (widget.value,), 0)
    if hasattr(widget, "_options_values"):  # Dropdown, RadioButtons, ToggleButtons, Select
        values, labels = tuple(widget._options_values), tuple(widget._options_labels)
        return Axis(name, label, "select", values, labels, widget.index or 0)
    raise TypeError(
        f"control {name!r}: {type(widget).__name__} has no static form; use a slider, a dropdown, a checkbox, "
        "a Text or a Combobox (free text in a kernel, its options on the site)"
    )


def to_widget(fn: Callable[..., Any], name: str, control: Any) -> Any:
    """The ipywidget for one control: a widget as given, or ipywidgets' own reading of an abbreviation."""
    import ipywidgets as widgets

    if isinstance(control, widgets.Widget | widgets.fixed):
        return control
    params = inspect.signature(fn).parameters
    default = params[name].default if name in params else inspect.Parameter.empty
    widget = widgets.interactive.widget_from_abbrev(control, default)
    if widget is None:
        raise ValueError(f"control {name!r}: ipywidgets cannot make a control from {control!r}")
    return widget


def plan_axes(controls: dict[str, Any], max_states: int = DEFAULT_MAX_STATES) -> tuple[list[Axis], dict[str, Any]]:
    """The grid axes of ``controls`` (name -> widget) under a budget of ``max_states`` points, and fixed values.

    Discrete controls keep all their values. The sliders share what is left: each starts with its two ends
    (plus its default), then they grow by one value in turn while the product stays within the budget. These
    minimums may exceed ``max_states``; a grid over ``max(4 * max_states, 256)`` states is an error.
    """
    import ipywidgets as widgets

    if max_states < 1:
        raise ValueError(f"max_states must be at least 1, got {max_states}")
    fixed = {n: w.value for n, w in controls.items() if isinstance(w, widgets.fixed)}
    live = {n: w for n, w in controls.items() if n not in fixed}
    discrete = {n: _discrete_axis(n, w) for n, w in live.items() if not _native_count(w)}
    sliders = [n for n in live if n not in discrete]
    counts = dict.fromkeys(sliders, 2)
    base = math.prod(len(a.values) for a in discrete.values())

    def size(c: dict[str, int]) -> int:
        return base * math.prod(len(_slider_axis(n, live[n], c[n]).values) for n in sliders)

    grown = True
    while grown:
        grown = False
        for n in sliders:
            if counts[n] < _native_count(live[n]):
                trial = {**counts, n: counts[n] + 1}
                if size(trial) <= max_states:
                    counts, grown = trial, True
    axes = [discrete[n] if n in discrete else _slider_axis(n, live[n], counts[n]) for n in live]
    states = math.prod(len(a.values) for a in axes)
    if states > max(4 * max_states, 256):
        sizes = ", ".join(f"{a.name}: {len(a.values)}" for a in axes)
        raise ValueError(
            f"the controls make {states} states even at their minimum ({sizes}), far over max_states={max_states}: "
            "offer fewer options, or pass a larger max_states to interact if every state is cheap and small"
        )
    return axes, fixed


def grid(axes: Sequence[Axis]) -> list[tuple[int, ...]]:
    """Every state of the controls, as a tuple of value indices (the last control varies fastest)."""
    return list(itertools.product(*(range(len(a.values)) for a in axes)))


def state_key(index: Sequence[int]) -> str:
    """The name of a state on the page: its value indices joined by ``-`` (what the page's inputs compute)."""
    return "-".join(str(int(i)) for i in index)


def png_of(fig: Any, dpi: int = FIGURE_DPI) -> bytes:
    """A matplotlib figure as a small PNG: rendered at ``dpi``, then reduced to a 256-colour palette."""
    from PIL import Image

    raw = io.BytesIO()
    with warnings.catch_warnings():  # matplotlib's advice on slow legend placement is for interactive redraws
        warnings.filterwarnings("ignore", message="Creating legend with loc")
        fig.savefig(raw, format="png", dpi=dpi, bbox_inches="tight", facecolor="white")
    raw.seek(0)
    small = io.BytesIO()
    Image.open(raw).convert("RGB").quantize(256, method=Image.Quantize.FASTOCTREE).save(small, "png", optimize=True)
    return small.getvalue()


class _Recorder(io.TextIOBase):
    """Collects, in order, what a function prints, the figures it shows and what it passes to ``display``."""

    def __init__(self) -> None:
        self.parts: list[tuple[str, str]] = []
        self._text: list[str] = []

    def write(self, s: str) -> int:
        self._text.append(s)
        return len(s)

    def flush_text(self) -> None:
        text = "".join(self._text)
        self._text.clear()
        if text.strip():
            self.parts.append(("text", text.rstrip("\n")))

    def figures(self, keep: set[int]) -> None:
        import matplotlib.pyplot as plt

        self.flush_text()
        for num in plt.get_fignums():
            if num not in keep:
                fig = plt.figure(num)
                self.parts.append(("png", base64.b64encode(png_of(fig)).decode()))
                plt.close(fig)

    def publish(self, data: dict[str, Any], metadata: Any = None, **kwargs: Any) -> None:
        self.flush_text()
        for mime, kind in (("text/html", "html"), ("image/png", "png"), ("text/plain", "text")):
            if mime in data:
                value = data[mime]
                self.parts.append((kind, value if isinstance(value, str) else base64.b64encode(value).decode()))
                return

    def clear_output(self, wait: bool = False) -> None:
        self._text.clear()
        self.parts.clear()


@contextlib.contextmanager
def _display_to(recorder: _Recorder):
    """Route IPython's ``display`` (when a shell is running) to ``recorder`` for the duration."""
    try:
        from IPython import get_ipython
        from IPython.core.displaypub import DisplayPublisher
    except ImportError:
        yield
        return
    shell = get_ipython()
    if shell is None:
        yield
        return

    class ToRecorder(DisplayPublisher):
        def publish(self, data, metadata=None, *args, **kwargs) -> None:
            recorder.publish(data, metadata)

        def clear_output(self, wait: bool = False) -> None:
            recorder.clear_output(wait)

    original = shell.display_pub
    shell.display_pub = ToRecorder(shell=shell)
    try:
        yield
    finally:
        shell.display_pub = original


def record(fn: Callable[..., Any], kwargs: dict[str, Any], keep_errors: bool = False) -> list[tuple[str, str]]:
    """Run ``fn(**kwargs)`` and return what it showed: ``("text" | "png" | "html", payload)`` parts in order.

    ``plt.show()`` inside ``fn`` turns every figure it opened into a PNG part (and closes it); figures still open
    when ``fn`` returns are kept too, as the inline backend would show them at the end of a cell. With
    ``keep_errors``, an exception becomes the last part (its type and message), as a kernel's widget shows it;
    otherwise it propagates.
    """
    import matplotlib.pyplot as plt

    rec = _Recorder()
    keep = set(plt.get_fignums())
    original_show = plt.show
    plt.show = lambda *a, **k: rec.figures(keep)
    try:
        with contextlib.redirect_stdout(rec), _display_to(rec):
            fn(**kwargs)
    except Exception as error:  # what a kernel's widget would show for these values
        if not keep_errors:
            raise
        rec.figures(keep)
        rec.parts.append(("text", f"{type(error).__name__}: {error}"))
    finally:
        plt.show = original_show
    rec.figures(keep)
    return rec.parts


def parts_html(parts: list[tuple[str, str]], alt: str) -> str:
    """The HTML of one recorded state."""
    out = []
    for kind, payload in parts:
        if kind == "png":
            out.append(f'<img src="data:image/png;base64,{payload}" alt="{html.escape(alt)}">')
        elif kind == "html":
            out.append(payload)
        else:
            out.append(f'<pre class="lmkit-text">{html.escape(payload)}</pre>')
    return "".join(out)


def _input_html(k: int, axis: Axis) -> str:
    label = html.escape(axis.label)
    attrs = f'data-axis="{k}" aria-label="{label}"'
    if axis.kind == "range":
        return (
            f'<label class="lmkit-range">{label} <input type="range" min="0" max="{len(axis.values) - 1}" step="1" '
            f'value="{axis.default}" x-model.number="i[{k}]" {attrs}> '
            f'<output x-text="L[{k}][i[{k}]]">{html.escape(axis.labels[axis.default])}</output></label>'
        )
    if axis.kind == "select":
        options = "".join(
            f'<option value="{j}"{" selected" if j == axis.default else ""}>{html.escape(text)}</option>'
            for j, text in enumerate(axis.labels)
        )
        return f'<label class="lmkit-select">{label} <select x-model.number="i[{k}]" {attrs}>{options}</select></label>'
    if axis.kind == "checkbox":
        checked = " checked" if axis.default else ""
        box = f'<input type="checkbox" x-model="i[{k}]"{checked} {attrs}>'
        return f'<label class="lmkit-checkbox">{box} {label}</label>'
    return (
        f'<label class="lmkit-text-input">{label} <input type="text" readonly value="{html.escape(axis.values[0])}" '
        f'title="type your own text in Jupyter or Colab" {attrs}></label>'
    )


def render_html(name: str, axes: Sequence[Axis], outputs: dict[str, str]) -> str:
    """The page block: the inputs, then one ``div`` per distinct output, shown when the inputs select it.

    ``outputs`` maps each state key (:func:`state_key`) to its HTML. The block's Alpine state is ``i`` (the
    value index of each input) and ``of`` (state key -> output number); nothing else runs in the page.
    """
    distinct: dict[str, int] = {}
    of = {key: distinct.setdefault(body, len(distinct)) for key, body in outputs.items()}
    keys_of: dict[int, list[str]] = {}
    for key, n in of.items():
        keys_of.setdefault(n, []).append(key)
    start = [bool(a.default) if a.kind == "checkbox" else a.default for a in axes]
    default_key = state_key([a.default for a in axes])
    data = json.dumps({"i": start, "L": [list(a.labels) for a in axes], "of": of}, separators=(",", ":"))
    blocks = []
    for body, n in distinct.items():
        hidden = "" if n == of[default_key] else ' style="display:none"'
        blocks.append(
            f'<div class="lmkit-state" data-keys="{" ".join(keys_of[n])}" '
            f"x-show=\"of[i.map(Number).join('-')] === {n}\"{hidden}>{body}</div>"
        )
    inputs = "".join(_input_html(k, a) for k, a in enumerate(axes))
    note = (
        f"{len(outputs)} states computed by lmkit when this page was built; "
        "open the chapter in Jupyter or Colab to choose any value."
    )
    return (
        f'<div class="lmkit-control" data-lmkit-control="{html.escape(name)}" x-data="{html.escape(data)}">'
        f'<div class="lmkit-inputs">{inputs}</div>{"".join(blocks)}'
        f'<p class="lmkit-note">{note}</p></div>'
    )


def precompute(
    fn: Callable[..., Any], controls: dict[str, Any], max_states: int = DEFAULT_MAX_STATES
) -> tuple[list[Axis], dict[str, str]]:
    """Run ``fn`` over the grid of ``controls`` (name -> widget or abbreviation); return the axes and each
    state's HTML. The widgets are closed afterwards: nothing of them goes into the page's widget state."""
    import ipywidgets as widgets

    by_name = {n: to_widget(fn, n, c) for n, c in controls.items()}
    axes, fixed = plan_axes(by_name, max_states)
    for w in by_name.values():
        for model in (w, getattr(w, "layout", None), getattr(w, "style", None)):
            if isinstance(model, widgets.Widget):
                model.close()
    outputs = {}
    default = tuple(a.default for a in axes)
    for index in grid(axes):
        kwargs = {**fixed, **{a.name: a.values[j] for a, j in zip(axes, index, strict=True)}}
        alt = f"{fn.__name__}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"
        # an error at the defaults fails the build; elsewhere it is shown, as in a kernel
        outputs[state_key(index)] = parts_html(record(fn, kwargs, keep_errors=index != default), alt)
    return axes, outputs


def live_interact(fn: Callable[..., Any], controls: dict[str, Any]) -> Any:
    """Display and return ipywidgets' ``interactive`` for ``fn`` (what a kernel shows)."""
    import ipywidgets as widgets
    from IPython.display import display

    box = widgets.interactive(fn, **controls)
    display(box)
    return box


def static_interact(fn: Callable[..., Any], controls: dict[str, Any], max_states: int = DEFAULT_MAX_STATES) -> str:
    """Precompute ``fn`` over its controls and display the page block (the book build's ``interact``)."""
    axes, outputs = precompute(fn, controls, max_states)
    block = render_html(fn.__name__, axes, outputs)
    try:
        from IPython import get_ipython
        from IPython.display import HTML, display
    except ImportError:
        get_ipython = None
    if get_ipython is not None and get_ipython() is not None:
        display(HTML(block))
    else:
        sys.stdout.write(f"[{fn.__name__}: {len(outputs)} precomputed states]\n")
    return block


def is_static() -> bool:
    """True when notebooks should render their default view only (the static book build)."""
    return os.environ.get(STATIC_ENV) == "1"


def interact(fn: Callable[..., Any], *, max_states: int | None = None, **controls: Any) -> None:
    """Show ``fn`` under controls, like :func:`ipywidgets.interact`: live in a kernel, precomputed on the site.

    Each keyword is a widget (or an abbreviation ipywidgets understands, e.g. ``(0, 10)`` or a list).
    In a live kernel this displays ipywidgets' ``interactive`` (:func:`live_interact`); ``fn``
    runs once with the defaults straight away and again whenever a control moves. In the static book build
    (:data:`STATIC_ENV`), :func:`static_interact` runs ``fn`` over a grid of the control values
    (at most ``max_states`` points, :data:`DEFAULT_MAX_STATES` unless given) and the page shows
    the state the reader's controls select. Returns nothing, so a cell ending with it shows the controls once.
    """
    if is_static():
        static_interact(fn, controls, DEFAULT_MAX_STATES if max_states is None else max_states)
    else:
        live_interact(fn, controls)
