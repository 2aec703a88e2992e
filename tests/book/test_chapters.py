"""Every chapter teaches: goals at the top, a summary, checked exercises, enough prose, setup cells hidden on the site.

Structure (issue 17): a goals box ("In this chapter you will"), a "## Summary" and a "## Exercises" section whose
every check is called in the notebook, with its reference solution folded on the site (``hide-cell``); at least
1,200 words of teaching prose in markdown cells (code, math blocks and code spans excluded).
"""

import importlib
import json
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tools"))
import nbtools  # noqa: E402

MIN_WORDS = 1200
CHAPTERS = sorted(p.stem for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
NOT_YET: dict[str, str] = {}
"""New chapters that do not have the full structure yet, with the reason; they join TAUGHT when they do."""
TAUGHT = [c for c in CHAPTERS if c not in NOT_YET]
UNCHECKED_EXERCISES: dict[str, str] = {}
"""Chapters with an exercises section whose answers have no checks yet (never one of chapters 01-14)."""
OLD_CHAPTERS = [c for c in CHAPTERS if int(c[:2]) <= 14]


def cells(stem: str) -> list[dict]:
    return json.loads((ROOT / "notebooks" / f"{stem}.ipynb").read_text())["cells"]


def source(cell: dict) -> str:
    return "".join(cell["source"])


def markdown(stem: str) -> list[str]:
    return [source(c) for c in cells(stem) if c["cell_type"] == "markdown"]


def prose_words(text: str) -> int:
    """Words of prose: fenced code, display math, inline code and MyST directive lines removed."""
    text = re.sub(r"```.*?```", " ", text, flags=re.S)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.S)
    text = re.sub(r"`[^`]*`", " ", text)
    text = re.sub(r"^:::.*$|^:class:.*$|^\(.*\)=$", " ", text, flags=re.M)
    return len(re.findall(r"[A-Za-z0-9][\w'’-]*", text))


def test_chapters_01_to_14_are_all_taught():
    assert not set(OLD_CHAPTERS) & set(NOT_YET), "chapters 01-14 must all have the full structure"
    assert not set(OLD_CHAPTERS) & set(UNCHECKED_EXERCISES), "chapters 01-14 must have checked exercises"
    assert set(NOT_YET) | set(UNCHECKED_EXERCISES) <= set(CHAPTERS), "a listed chapter does not exist: remove it"


@pytest.mark.parametrize("stem", TAUGHT)
def test_goals_summary_and_exercises(stem):
    md = markdown(stem)
    assert any("In this chapter you will" in m for m in md[:3]), f"{stem}: no goals box near the top"
    goals = next(m for m in md if "In this chapter you will" in m)
    box = goals.split("In this chapter you will", 1)[1].split("\n:::", 1)[0]
    assert 3 <= box.count("\n- ") <= 5, f"{stem}: the goals box should list 3-5 goals"
    assert any(m.startswith("## Summary") for m in md), f"{stem}: no '## Summary' section"
    assert any(m.startswith("## Exercises") for m in md), f"{stem}: no '## Exercises' section"
    order = [i for i, m in enumerate(md) if m.startswith(("## Summary", "## Exercises"))]
    assert order == sorted(order) and md[order[0]].startswith("## Summary"), f"{stem}: summary before exercises"


@pytest.mark.parametrize("stem", TAUGHT)
def test_enough_teaching_prose(stem):
    words = sum(prose_words(m) for m in markdown(stem))
    assert words >= MIN_WORDS, f"{stem}: {words} words of prose, at least {MIN_WORDS} expected"


@pytest.mark.parametrize("stem", [c for c in TAUGHT if c not in UNCHECKED_EXERCISES])
def test_every_exercise_is_checked_with_a_folded_solution(stem):
    module = importlib.import_module(f"lmkit.book.exercises.ch{stem[:2]}")
    names = [a[len("check_"):] for a, f in vars(module).items()
             if a.startswith("check_") and getattr(f, "__module__", None) == module.__name__]
    code = [c for c in cells(stem) if c["cell_type"] == "code"]
    for name in names:
        calls = [c for c in code if f"check_{name}(" in source(c)]
        assert calls, f"{stem}: exercise {name} has no cell calling its check"
        folded = [c for c in code if f"solution_{name})" in source(c)]
        assert folded, f"{stem}: exercise {name} shows no reference solution"
        assert all("hide-cell" in c["metadata"].get("tags", []) for c in folded), \
            f"{stem}: the solution of {name} must be folded on the site (tag hide-cell)"


@pytest.mark.parametrize("stem", TAUGHT)
def test_a_try_this_line_per_control(stem):
    code = [source(c) for c in cells(stem) if c["cell_type"] == "code"]
    controls = sum(1 for c in code if "interact(" in c and "import interact" not in c.split("\n")[-1])
    tries = sum(m.count("**Try this") for m in markdown(stem))
    assert tries >= controls, f"{stem}: {controls} controls but {tries} 'Try this' lines"


@pytest.mark.parametrize("stem", CHAPTERS)
def test_install_and_import_cells_hidden_on_the_site(stem):
    code = [c for c in cells(stem) if c["cell_type"] == "code"]
    assert "remove-cell" in code[0]["metadata"].get("tags", []), f"run `python tools/nbtools.py tag` on {stem}"
    setup = [c for c in code[1:] if source(c) == nbtools.SETUP_CELL or "seed_everything(" in source(c)]
    assert setup and all("hide-input" in c["metadata"].get("tags", []) for c in setup), stem


def test_new_notebooks_get_the_tags():
    nb = nbtools.new_notebook("A title")
    assert nb.cells[1].metadata["tags"] == nbtools.INSTALL_TAGS
    assert nb.cells[2].metadata["tags"] == nbtools.SETUP_TAGS
