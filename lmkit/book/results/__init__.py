"""The measured results the chapters plot, shipped with the package: one JSON file per benchmark of ``bench/``.

A benchmark runs once, on a machine named inside its file (minutes to hours: more than a chapter may take), and
writes its numbers here; a chapter reads them with :func:`load`. They travel with lmkit, so a chapter installed on
Colab (``pip install "lmkit[book] @ git+…"``) plots the same figures as one run in a clone of the repository.

    >>> from lmkit.book import results
    >>> sorted(results.load("gptq_awq"))[:2]
    ['baseline_ppl', 'calibration']
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).parent


def path(name: str) -> Path:
    """The file of benchmark ``name`` (``"gptq_awq"`` -> ``lmkit/book/results/gptq_awq.json``); ``bench/`` writes it."""
    if not isinstance(name, str) or not name or "/" in name or name.startswith("."):
        raise ValueError(f"a result is named by its benchmark, e.g. 'gptq_awq', got {name!r}")
    return FOLDER / f"{name}.json"


def names() -> list[str]:
    """The benchmarks whose results ship with this lmkit."""
    return sorted(p.stem for p in FOLDER.glob("*.json"))


def load(name: str) -> dict[str, Any]:
    """The results of benchmark ``name`` as written by ``bench/bench_<name>.py``; a clear error when absent."""
    file = path(name)
    if not file.is_file():
        raise FileNotFoundError(f"no results named {name!r} in {FOLDER} (there are {names()}): run "
                                f"`python bench/bench_{name}.py` in a clone of the repository to measure them")
    return json.loads(file.read_text())
