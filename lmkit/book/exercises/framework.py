"""The exercises' framework: a :class:`Verdict`, and checks of a number, a tensor or a function against lmkit.

Each chapter's module (:mod:`lmkit.book.exercises.ch09` …) writes its checks with these.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import torch

__all__ = ["Verdict", "check_function", "check_number", "check_tensor", "not_answered", "smollm2_reader"]


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``ok`` and a message for the reader. Truthy when right."""

    ok: bool
    message: str

    def __bool__(self) -> bool:
        return self.ok

    def __repr__(self) -> str:
        return ("right: " if self.ok else "not yet: ") + self.message


def not_answered(what: str) -> Verdict:
    return Verdict(False, f"no answer yet — set `answer` to {what} and run the cell again")


_FACTORS = {2: "a factor of 2", 8: "a factor of 8 (bits versus bytes?)", 4: "a factor of 4 (float32 bytes?)",
            1024: "a factor of 1024 (KiB versus bytes?)", 1024**2: "a factor of 1024² (MiB versus bytes?)",
            1000: "a factor of 1000 (k versus units?)", 1e6: "a factor of a million (M versus units?)"}


def check_number(answer: Any, expected: float, what: str, rel_tol: float = 1e-6, abs_tol: float = 0.0) -> Verdict:
    """Compare a numeric ``answer`` with ``expected``; on a miss, say by how much and guess a common slip."""
    if answer is None:
        return not_answered(what)
    if isinstance(answer, torch.Tensor):
        if answer.numel() != 1:
            return Verdict(False, f"expected one number ({what}), got a tensor of shape {tuple(answer.shape)}")
        answer = answer.item()
    try:
        value = float(answer)
    except (TypeError, ValueError):
        return Verdict(False, f"expected a number ({what}), got {type(answer).__name__}")
    if math.isclose(value, expected, rel_tol=rel_tol, abs_tol=abs_tol):
        return Verdict(True, f"{what} = {value:g}")
    if expected != 0 and value != 0:
        ratio = value / expected
        for factor, name in _FACTORS.items():
            for r, direction in ((factor, "too large"), (1 / factor, "too small")):
                if math.isclose(ratio, r, rel_tol=1e-3):
                    return Verdict(False, f"{what}: {value:g} is {direction} by {name}")
        return Verdict(False, f"{what}: {value:g} is {'too large' if ratio > 1 else 'too small'} "
                              f"({abs(ratio - 1):.1%} off)")
    return Verdict(False, f"{what}: {value:g} is off")


def check_tensor(answer: Any, expected: torch.Tensor, what: str, atol: float = 1e-5, rtol: float = 1e-4) -> Verdict:
    """Compare a tensor (or anything ``torch.as_tensor`` takes) with ``expected``: shape first, then values."""
    if answer is None:
        return not_answered(what)
    try:
        got = torch.as_tensor(answer, dtype=expected.dtype)
    except (TypeError, ValueError, RuntimeError) as e:
        return Verdict(False, f"expected a tensor ({what}): {e}")
    if got.shape != expected.shape:
        return Verdict(False, f"{what}: shape {tuple(got.shape)}, expected {tuple(expected.shape)}")
    if torch.allclose(got, expected, atol=atol, rtol=rtol):
        return Verdict(True, f"{what} matches")
    bad = ~torch.isclose(got, expected, atol=atol, rtol=rtol)
    return Verdict(False, f"{what}: {int(bad.sum())} of {bad.numel()} entries differ "
                          f"(largest difference {(got - expected).abs().max().item():.3g})")


def check_function(answer: Any, cases: Sequence[tuple[tuple, Any]], what: str,
                   compare: Callable[[Any, Any], bool]) -> Verdict:
    """Call the reader's function on each ``(args, expected)`` case; report the first case it gets wrong."""
    if answer is None:
        return not_answered(what)
    if not callable(answer):
        return Verdict(False, f"expected a function ({what}), got {type(answer).__name__}")
    for args, expected in cases:
        try:
            got = answer(*args)
        except Exception as e:  # the reader's code: report any failure as a verdict, not a traceback
            return Verdict(False, f"{what} raised {type(e).__name__}: {e}")
        if not compare(got, expected):
            return Verdict(False, f"{what} gives a wrong result for arguments {_short(args)}")
    return Verdict(True, f"{what} passes {len(cases)} cases")


def _short(args: tuple) -> str:
    parts = []
    for a in args:
        parts.append(f"tensor{tuple(a.shape)}" if isinstance(a, torch.Tensor) else repr(a))
    return "(" + ", ".join(parts) + ")"


@lru_cache(maxsize=1)
def smollm2_reader() -> Any:
    """The book's SmolLM2 GGUF file, opened once through lmkit's checked opener (a ``gguf.GGUFReader``; the
    exercises read shapes and blocks)."""
    from lmkit import assets
    from lmkit.loaders.gguf_file import open_gguf

    return open_gguf(assets.smollm2_gguf())
