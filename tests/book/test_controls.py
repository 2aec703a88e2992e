"""lmkit.book.controls: the grid each control gets on the static site, the recorded states, the page block."""

import json
import math
from html.parser import HTMLParser

import ipywidgets as widgets
import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from lmkit.book import controls  # noqa: E402


class Block(HTMLParser):
    """The Alpine state, the inputs and the state divs of one rendered control block."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.data, self.inputs, self.states = None, [], []
        self._state = None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "x-data" in attrs:
            self.data = json.loads(attrs["x-data"])
        if "data-axis" in attrs:
            self.inputs.append((tag, attrs))
        if attrs.get("class") == "lmkit-state":
            self._state = {"keys": attrs["data-keys"].split(), "hidden": "display:none" in attrs.get("style", ""),
                           "text": "", "images": 0}
            self.states.append(self._state)
        if attrs.get("class") == "lmkit-note":
            self._state = None
        if tag == "img" and self._state is not None:
            self._state["images"] += 1

    def handle_data(self, data):
        if self._state is not None:
            self._state["text"] += data


def test_slider_positions_cover_both_ends_and_the_default():
    assert controls.slider_positions(65, 3, 5) == [0, 5, 32, 64]
    assert controls.slider_positions(101, 5, 50) == [0, 25, 50, 75, 100]
    assert controls.slider_positions(3, 10, 1) == [0, 1, 2]  # fewer positions than asked: all of them


def test_sliders_share_the_budget_and_discrete_controls_keep_every_value():
    sliders = {n: widgets.IntSlider(value=0, min=0, max=99) for n in "abc"}
    axes, _ = controls.plan_axes(sliders, max_states=27)
    assert [len(a.values) for a in axes] == [3, 3, 3]
    assert all(a.values[0] == 0 and a.values[-1] == 99 for a in axes)
    mixed = {"kind": widgets.Dropdown(options=["x", "y", "z"]), "on": widgets.Checkbox(value=True),
             "n": widgets.IntSlider(value=4, min=0, max=40, step=4)}
    axes, _ = controls.plan_axes(mixed, max_states=36)
    kind, on, n = axes
    assert kind.values == ("x", "y", "z") and on.values == (False, True) and on.default == 1
    assert len(controls.grid(axes)) <= 36 and len(n.values) == 6 and n.values[n.default] == 4
    assert set(n.values) <= set(range(0, 41, 4))  # only positions the slider itself can take


def test_float_and_log_sliders_take_their_own_values_and_readout():
    log = widgets.FloatLogSlider(value=1.0, base=10, min=-1, max=1, step=0.5)
    (axis,), _ = controls.plan_axes({"T": log}, 10)
    assert axis.values == (0.1, pytest.approx(10**-0.5), 1.0, pytest.approx(10**0.5), 10.0)
    assert axis.labels[axis.default] == "1"
    (axis,), _ = controls.plan_axes({"p": widgets.FloatSlider(value=0.9, min=0.05, max=1.0, step=0.05)}, 4)
    assert axis.values[0] == 0.05 and axis.values[-1] == 1.0 and 0.9 in axis.values
    assert axis.labels[axis.values.index(0.9)] == "0.90"
    (axis,), _ = controls.plan_axes({"lr": widgets.FloatSlider(value=3e-4, min=1e-4, max=1.5e-3, step=1e-4)}, 3)
    assert axis.labels == ("0.0001", "0.0003", "0.0015")  # ".2f" would print 0.00 three times


def test_selection_sliders_keep_their_labels_and_values():
    topk = widgets.SelectionSlider(options=[("off", 0), ("1", 1), ("5", 5), ("20", 20), ("50", 50)], value=0)
    (axis,), _ = controls.plan_axes({"k": topk}, 3)
    assert axis.kind == "range" and axis.values == (0, 5, 50) and axis.labels == ("off", "5", "50")
    assert axis.default == 0


def test_free_text_controls_show_their_suggestions_or_their_value():
    combo = widgets.Combobox(value="my own sentence", options=["one", "two"])
    text = widgets.Text(value="a prompt")
    (c, t), _ = controls.plan_axes({"s": combo, "p": text})
    assert c.kind == "select" and c.values == ("my own sentence", "one", "two") and c.default == 0
    assert t.kind == "text" and t.values == ("a prompt",)


def test_abbreviations_read_like_ipywidgets_and_unknown_widgets_fail_by_name():
    def fn(n=3, kind="b"):
        return n, kind

    assert isinstance(controls.to_widget(fn, "n", (1, 10)), widgets.IntSlider)
    assert controls.to_widget(fn, "n", (1, 10)).value == 3
    assert controls.to_widget(fn, "kind", ["a", "b"]).value == "b"
    with pytest.raises(TypeError, match="'when'"):
        controls.plan_axes({"when": widgets.DatePicker()})
    with pytest.raises(ValueError, match="max_states"):
        controls.plan_axes({"n": widgets.IntSlider()}, max_states=0)
    many = {k: widgets.Dropdown(options=list(range(7))) for k in "abc"}
    assert len(controls.grid(controls.plan_axes(many, max_states=100)[0])) == 343  # dropdowns keep every option
    with pytest.raises(ValueError, match="2401 states"):
        controls.plan_axes({**many, "d": widgets.Dropdown(options=list(range(7)))}, max_states=100)


def test_record_keeps_text_and_figures_in_order_and_closes_them():
    before = plt.figure()

    def fn(n):
        print("first", n)
        plt.figure()
        plt.plot(range(n))
        plt.show()
        print("then")
        plt.figure()
        plt.plot([1, 2])  # left open: kept, as the inline backend shows it at the end of the cell

    parts = controls.record(fn, {"n": 3})
    assert [k for k, _ in parts] == ["text", "png", "text", "png"]
    assert parts[0][1] == "first 3" and parts[2][1] == "then"
    assert plt.get_fignums() == [before.number]  # fn's figures closed, the caller's untouched
    plt.close(before)


def test_every_state_on_the_page_is_the_function_run_at_that_state():
    calls = []

    def fn(kind="b", n=10, flag=False):
        calls.append((kind, n, flag))
        print(f"kind={kind} n={n} flag={flag}")

    ctl = {"kind": widgets.Dropdown(options=["a", "b"], value="b"), "n": widgets.IntSlider(value=10, min=0, max=40),
           "flag": widgets.Checkbox(value=False)}
    axes, outputs = controls.precompute(fn, ctl, max_states=16)
    assert len(calls) == len(outputs) == math.prod(len(a.values) for a in axes)
    block = Block(controls.render_html("fn", axes, outputs))
    assert set(block.data["of"]) == {controls.state_key(i) for i in controls.grid(axes)}
    for state in block.states:
        for key in state["keys"]:
            kind, n, flag = (a.values[int(j)] for a, j in zip(axes, key.split("-"), strict=True))
            assert state["text"] == f"kind={kind} n={n} flag={flag}"
    visible = [s for s in block.states if not s["hidden"]]
    assert len(visible) == 1 and visible[0]["text"] == "kind=b n=10 flag=False"  # the default, without JS
    assert block.data["i"] == [1, axes[1].default, False]
    assert [tag for tag, _ in block.inputs] == ["select", "input", "input"]
    assert block.inputs[1][1]["max"] == str(len(axes[1].values) - 1)


def test_an_error_away_from_the_defaults_is_shown_as_in_a_kernel():
    def strict(stride=4, c=1):
        if c > stride:
            raise ValueError(f"c={c} exceeds stride={stride}")
        print("ok", stride, c)

    axes, outputs = controls.precompute(strict, {"stride": (1, 4), "c": (1, 4)}, 16)
    assert "ValueError: c=4 exceeds stride=1" in outputs["0-3"] and "ok 4 1" in outputs["3-0"]
    with pytest.raises(ValueError, match="exceeds"):  # at the defaults it is the chapter's bug: the build fails
        controls.precompute(lambda stride=1, c=4: strict(stride, c), {"stride": (1, 4), "c": (1, 4)}, 4)


def test_identical_outputs_are_stored_once():
    def clamped(head=0):
        print("head", min(head, 2))

    axes, outputs = controls.precompute(clamped, {"head": widgets.IntSlider(value=0, min=0, max=5)}, 6)
    block = Block(controls.render_html("clamped", axes, outputs))
    assert len(outputs) == 6 and len(block.states) == 3
    assert sorted(k for s in block.states for k in s["keys"]) == sorted(outputs)


def test_figures_become_small_png_images():
    def fig(n=2):
        plt.plot(range(n))
        plt.show()

    axes, outputs = controls.precompute(fig, {"n": (2, 5)}, 2)
    block = Block(controls.render_html("fig", axes, outputs))
    assert [s["images"] for s in block.states] == [1, 1]
    assert all(len(html) < 40_000 for html in outputs.values())


def test_interact_static_mode_precomputes_and_returns_nothing(monkeypatch, capsys):
    monkeypatch.setenv(controls.STATIC_ENV, "1")
    calls = []

    def fn(kind="causal", n=3):
        calls.append((kind, n))

    assert controls.interact(fn, kind=widgets.Dropdown(options=["a", "causal"], value="causal"), n=(1, 10)) is None
    assert ("causal", 3) in calls and ("a", 1) in calls and ("a", 10) in calls
    assert "[fn: " in capsys.readouterr().out  # outside IPython it says what it computed
    calls.clear()
    controls.interact(fn, max_states=2, n=(1, 10))
    assert calls == [(("causal"), 1), ("causal", 3), ("causal", 10)]  # both ends and the default


def test_interact_live_mode_shows_the_widget_and_returns_nothing(monkeypatch):
    monkeypatch.delenv(controls.STATIC_ENV, raising=False)
    assert controls.interact(lambda n=2: n * 2, n=(1, 5)) is None
    box = controls.live_interact(lambda n=2: n * 2, {"n": (1, 5)})
    assert isinstance(box, widgets.interactive) and box.result == 4
