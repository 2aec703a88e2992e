"""Argument checks shared by lmkit's public functions: one home for "must be an int >= 1" and its relatives.

Each check returns the value (converted where that is the point, e.g. ``check_number`` gives a ``float``) or raises
a ``ValueError`` whose message names the argument, the rule and the value received::

    >>> check_int("max_new_tokens", 0, minimum=1)
    Traceback (most recent call last):
        ...
    ValueError: max_new_tokens must be a positive int, got 0
    >>> check_choice("norm", "batchnorm", choices(Literal["layernorm", "rmsnorm"]))
    Traceback (most recent call last):
        ...
    ValueError: norm must be one of ('layernorm', 'rmsnorm'), got 'batchnorm'

Python's ``bool`` is a subclass of ``int``, so ``isinstance(True, int)`` holds; every check here rejects ``True`` and
``False`` where a number is meant (``top_k=True`` is a mistake, not ``top_k=1``).

A ``Literal`` type alias is the single source of a set of allowed strings: :func:`choices` reads the runtime tuple
off it, so the type hint and the check cannot drift apart.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any, get_args


def choices(literal: Any) -> tuple[Any, ...]:
    """The allowed values of a ``Literal[...]`` alias, as a tuple (``choices(Literal["a", "b"]) == ("a", "b")``)."""
    values = get_args(literal)
    if not values:
        raise TypeError(f"{literal!r} is not a Literal[...] type")
    return values


def check_choice(name: str, value: Any, allowed: Iterable[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    allowed = tuple(allowed)
    if isinstance(value, bool) or value not in allowed:
        raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
    return value


def _interval(minimum: float | None, maximum: float | None, above: float | None, below: float | None) -> str:
    """The rule's bounds in words: `` in [0, 1)`` with a bound on each side, else `` > 0``, `` <= 8`` ..."""
    low = f"[{minimum}" if minimum is not None else None if above is None else f"({above}"
    high = f"{maximum}]" if maximum is not None else None if below is None else f"{below})"
    if low and high:
        return f" in {low}, {high}"
    if low:
        return f" >= {minimum}" if minimum is not None else f" > {above}"
    if high:
        return f" <= {maximum}" if maximum is not None else f" < {below}"
    return ""


def check_int(name: str, value: Any, minimum: int | None = None, maximum: int | None = None) -> int:
    """``value`` if it is an ``int`` (not a ``bool``) within ``[minimum, maximum]``, else a ``ValueError``."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int)
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
    ):
        if maximum is None and minimum in (0, 1):
            rule = "a positive int" if minimum == 1 else "a non-negative int"
        else:
            rule = "an int" + _interval(minimum, maximum, None, None)
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return value


def check_number(
    name: str,
    value: Any,
    *,
    minimum: float | None = None,
    maximum: float | None = None,
    above: float | None = None,
    below: float | None = None,
    finite: bool = True,
) -> float:
    """``float(value)`` if it is a real number (``int`` or ``float``, not a ``bool``) that is finite (unless
    ``finite=False``), ``>= minimum`` or ``> above``, and ``<= maximum`` or ``< below``; else a ``ValueError``
    (``dropout must be a finite number in [0.0, 1.0), got 1.0``). Give at most one bound on each side."""
    if (minimum is not None and above is not None) or (maximum is not None and below is not None):
        raise TypeError("check_number takes one lower bound (minimum or above) and one upper (maximum or below)")
    rule = ("a finite number" if finite else "a number") + _interval(minimum, maximum, above, below)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    if (
        (finite and not math.isfinite(value))
        or (minimum is not None and value < minimum)
        or (maximum is not None and value > maximum)
        or (above is not None and value <= above)
        or (below is not None and value >= below)
    ):
        raise ValueError(f"{name} must be {rule}, got {value!r}")
    return float(value)


def check_bits(value: Any, minimum: int = 2, maximum: int = 8, name: str = "bits") -> int:
    """``value`` if it is a bit width the integer quantizers can take (an ``int`` in ``minimum..maximum``, 2..8 unless
    said), else a ``ValueError``: ``bits must be an integer in 2..8, got 9``."""
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= maximum:
        raise ValueError(f"{name} must be an integer in {minimum}..{maximum}, got {value!r}")
    return value


def check_tensor(name: str, value: Any, ndim: int | None = None, layout: str | None = None, floating: bool = False
                 ) -> Any:
    """``value`` if it is a ``torch.Tensor`` (else a ``TypeError``), floating-point when ``floating`` (else a
    ``TypeError`` naming the dtype), of ``ndim`` dimensions when given (else a ``ValueError`` naming ``layout``, e.g.
    ``"(batch, length, channels)"``, and the shape received). Shape and dtype only: cheap enough for a per-token path.

    A list where a tensor is meant fails deep inside (``'list' object has no attribute 'shape'``), and an integer
    tensor in float arithmetic either fails there or, through a final ``.to(x.dtype)``, truncates the result.
    """
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    if floating and not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got {value.dtype}")
    if ndim is not None and value.ndim != ndim:
        raise ValueError(f"{name} must be a {layout or f'{ndim}-D'} tensor, got shape {tuple(value.shape)}")
    return value


def check_token_ids(name: str, ids: Any, vocab_size: int | None = None, ndim: int | None = 2) -> Any:
    """``ids`` if it is an int32 or int64 ``torch.Tensor`` (what ``F.embedding`` takes) of ``ndim`` dimensions
    (``(batch, length)`` unless said; any when ``None``) whose values lie in ``[0, vocab_size)`` when ``vocab_size`` is
    given; else a ``TypeError`` (not such a tensor) or a ``ValueError`` naming the shape, or the smallest and largest
    id against the vocabulary.

    A negative id would silently index an embedding table from its end, and an id past it fails deep inside
    ``F.embedding`` with an index error that names neither the argument nor the vocabulary: hence the range check.
    """
    import torch

    if not isinstance(ids, torch.Tensor) or ids.dtype not in (torch.int32, torch.int64):
        kind = ids.dtype if isinstance(ids, torch.Tensor) else type(ids).__name__
        raise TypeError(f"{name} must be an integer torch.Tensor of token ids, got {kind}")
    if ndim is not None and ids.ndim != ndim:
        want = "(batch, length)" if ndim == 2 else f"{ndim}-D"
        raise ValueError(f"{name} must be a {want} tensor of token ids, got shape {tuple(ids.shape)}")
    if vocab_size is not None and ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab_size):
        raise ValueError(f"{name} must hold ids in [0, {vocab_size}) (the vocabulary), got ids from {int(ids.min())} "
                         f"to {int(ids.max())}")
    return ids
