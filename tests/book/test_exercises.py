"""Every chapter exercise: its reference solution passes its check, and the check can fail.

Exercises live in ``lmkit/book/exercises/chNN.py`` as ``check_<name>`` / ``solution_<name>`` pairs (see
``lmkit.book.exercises``). A solution that takes arguments is a function the reader writes, so it is passed to its
check as is; otherwise its return value is the answer.
"""

import importlib
import inspect
import pkgutil

import numpy as np
import pytest
import torch

import lmkit.book.exercises as exercises_pkg
from lmkit.book.exercises.framework import Verdict

MODULES = sorted(m.name for m in pkgutil.iter_modules(exercises_pkg.__path__) if m.name.startswith("ch"))


def own_checks(module) -> list[str]:
    """Names of the exercises a chapter module defines (not the helpers it imports from ``lmkit.book.exercises``)."""
    return [attr[len("check_"):] for attr, obj in sorted(vars(module).items())
            if attr.startswith("check_") and getattr(obj, "__module__", None) == module.__name__]


def exercises():
    for name in MODULES:
        module = importlib.import_module(f"lmkit.book.exercises.{name}")
        for exercise in own_checks(module):
            yield pytest.param(module, exercise, id=f"{name}.{exercise}")


def answer_of(module, name):
    solution = getattr(module, f"solution_{name}")
    return solution if inspect.signature(solution).parameters else solution()


def wrong(answer):
    """A plausible wrong answer of the same kind."""
    if callable(answer):
        def broken(*args):
            out = answer(*args)
            return out + 1 if not isinstance(out, str) else out + "x"
        return broken
    if isinstance(answer, str):
        return answer + "?"
    if isinstance(answer, torch.Tensor):
        return answer + 1
    if isinstance(answer, np.ndarray):
        return answer + 1
    if isinstance(answer, list):
        return answer + answer[:1]
    if isinstance(answer, dict):
        return {k: v * 2 + 1 for k, v in answer.items()}
    return answer * 3 + 1


def test_every_chapter_module_has_exercises():
    assert MODULES, "no exercise modules found"
    for name in MODULES:
        module = importlib.import_module(f"lmkit.book.exercises.{name}")
        checks = own_checks(module)
        assert 3 <= len(checks) <= 6, f"{name}: {len(checks)} checked exercises (a chapter has 3-6)"
        for c in checks:
            assert hasattr(module, f"solution_{c}"), f"{name}.check_{c} has no reference solution"


@pytest.mark.parametrize("module, name", list(exercises()))
def test_reference_solution_passes(module, name):
    verdict = getattr(module, f"check_{name}")(answer_of(module, name))
    assert isinstance(verdict, Verdict)
    assert verdict, verdict.message


@pytest.mark.parametrize("module, name", list(exercises()))
def test_check_rejects_wrong_and_missing_answers(module, name):
    check = getattr(module, f"check_{name}")
    missing = check(None)
    assert not missing and "no answer yet" in missing.message
    bad = check(wrong(answer_of(module, name)))
    assert not bad, f"check_{name} accepted a wrong answer"
    assert bad.message
