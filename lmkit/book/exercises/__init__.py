"""Checked exercises for the book's chapters: one module per chapter (``lmkit.book.exercises.ch09`` …), built on
:mod:`~lmkit.book.exercises.framework`.

Each exercise ``name`` has two functions:

- ``check_<name>(answer)`` compares the reader's answer with one computed *by lmkit* at call time (never a
  number typed in, so it cannot drift from the code the chapter runs) and returns a :class:`Verdict` that says
  "right" or what is off (too large, off by a factor of 8 — bits versus bytes? —, wrong shape, …);
- ``solution_<name>()`` is the reference solution; the chapter shows its source behind a toggle and
  ``tests/book/test_exercises.py`` runs every solution through its check (and a wrong answer too, so each check can
  fail).

Example::

    >>> from lmkit.book.exercises import ch09
    >>> ch09.check_q4_0_bytes(18 * 576 * 1536 // 32)
    right: ...
"""

from lmkit.book.exercises.framework import (
    Verdict,
    check_function,
    check_number,
    check_tensor,
    not_answered,
    smollm2_reader,
)

__all__ = ["Verdict", "check_function", "check_number", "check_tensor", "not_answered", "smollm2_reader"]
