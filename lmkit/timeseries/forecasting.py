"""Forecasting data, baselines and metrics: a synthetic series, sliding windows, last-value and linear forecasters.

Every forecaster maps windows ``(B, seq_len)`` to forecasts ``(B, pred_len)``. A learned forecaster is only worth
its cost when it beats these: **last value** (tomorrow looks like today — hard to beat on random walks),
**seasonal naive** (repeat the last period), and a
**linear** map from the window to the horizon fitted by least squares (the "Linear" model that Zeng et al., 2023,
showed beats many transformer forecasters on the standard benchmarks).
"""

from __future__ import annotations

import math

import torch

from lmkit.checks import check_int, check_number, check_tensor


def synthetic_series(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """An "hourly load" series ``(n,)``: a daily cycle whose amplitude drifts with a weekly cycle, a weekday/weekend
    level, a slow random-walk trend, a nonlinear evening peak, and noise. Deterministic for a ``seed`` (an int);
    ``n`` a positive int."""
    check_int("n", n, minimum=1)
    check_int("seed", seed)
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(n, dtype=torch.float64)
    day = 2 * math.pi * t / 24
    week = 2 * math.pi * t / (24 * 7)
    amplitude = 1.0 + 0.4 * torch.sin(week)
    daily = amplitude * torch.sin(day)
    evening_peak = 1.5 * torch.relu(torch.sin(day - 1.0)) ** 4  # sharp, not a sinusoid
    weekend = -0.6 * (((t // 24) % 7) >= 5).double()
    trend = torch.cumsum(0.03 * torch.randn(n, generator=g, dtype=torch.float64), 0)
    noise = 0.15 * torch.randn(n, generator=g, dtype=torch.float64)
    return (daily + evening_peak + weekend + trend + noise).float()


def windows(series: torch.Tensor, seq_len: int, pred_len: int, step: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All (input, target) pairs ``(N, seq_len)``, ``(N, pred_len)`` of a 1-D ``series``, every ``step`` steps
    (``seq_len``, ``pred_len`` and ``step`` positive ints)."""
    check_tensor("series", series)
    for name, value in (("seq_len", seq_len), ("pred_len", pred_len), ("step", step)):
        check_int(name, value, minimum=1)
    if series.ndim != 1 or series.numel() < seq_len + pred_len:
        raise ValueError(f"series must be 1-D with at least seq_len + pred_len = {seq_len + pred_len} values")
    w = series.unfold(0, seq_len + pred_len, step)  # (N, seq_len + pred_len)
    return w[:, :seq_len].contiguous(), w[:, seq_len:].contiguous()


def _check_windows(x: torch.Tensor, name: str = "x", width: str = "seq_len") -> torch.Tensor:
    """``x`` if it is a tensor of windows ``(batch, width >= 1)``, else a ``TypeError`` / ``ValueError``."""
    check_tensor(name, x, 2, f"(batch, {width})")
    if x.shape[1] == 0:
        raise ValueError(f"{name} must hold windows of at least one value, got shape {tuple(x.shape)}")
    return x


def last_value(x: torch.Tensor, pred_len: int) -> torch.Tensor:
    """Repeat each window's last value ``pred_len`` (a positive int) times; ``x`` ``(batch, seq_len >= 1)``."""
    _check_windows(x)
    check_int("pred_len", pred_len, minimum=1)
    return x[:, -1:].expand(-1, pred_len).clone()


def seasonal_naive(x: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
    """Repeat each window's last full ``period`` (e.g. 24 for a daily cycle in hourly data) over the horizon of
    ``pred_len`` steps; ``x`` ``(batch, seq_len >= 1)``, ``pred_len`` a positive int, ``period`` in ``1..seq_len``."""
    _check_windows(x)
    check_int("pred_len", pred_len, minimum=1)
    check_int("period (at most the window length)", period, minimum=1, maximum=x.shape[-1])
    last = x[:, -period:]
    return last.repeat(1, -(-pred_len // period))[:, :pred_len]


class LinearForecaster:
    """``y = [x, 1] @ W``: least squares from the ``seq_len`` inputs (and a bias) to the ``pred_len`` outputs, with
    an optional ridge penalty (a finite number ``>= 0``). Fitted in float64 by solving the normal equations."""

    def __init__(self, ridge: float = 1e-3) -> None:
        self.ridge, self.weight = check_number("ridge", ridge, minimum=0.0), None

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> LinearForecaster:
        """Least squares from windows ``x`` ``(N, seq_len)`` to targets ``y`` ``(N, pred_len)``: both finite, the same
        ``N >= 1``; without a ridge, at least ``seq_len + 1`` windows (fewer leave the normal equations singular)."""
        _check_windows(x)
        _check_windows(y, "y", "pred_len")
        if y.shape[0] != x.shape[0] or x.shape[0] == 0:
            raise ValueError(f"x and y must hold the same number (>= 1) of windows, got {x.shape[0]} and {y.shape[0]}")
        for name, t in (("x", x), ("y", y)):
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"{name} must be finite, got NaN or inf")
        if self.ridge == 0 and x.shape[0] < x.shape[1] + 1:
            raise ValueError(f"without a ridge, fitting {x.shape[1] + 1} weights needs at least as many windows, got "
                             f"{x.shape[0]}: give more windows or ridge > 0")
        a = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()  # (N, seq_len + 1)
        gram = a.T @ a + self.ridge * torch.eye(a.shape[1], dtype=torch.float64)
        try:
            self.weight = torch.linalg.solve(gram, a.T @ y.double()).float()  # (seq_len + 1, pred_len)
        except torch.linalg.LinAlgError:  # exactly collinear windows (a constant column) and no ridge
            raise ValueError("the windows are collinear and ridge is 0: the normal equations are singular; give "
                             "ridge > 0") from None
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """Forecasts ``(batch, pred_len)`` of windows ``x`` ``(batch, seq_len)`` of the width it was fitted on."""
        if self.weight is None:
            raise RuntimeError("call fit() first")
        _check_windows(x)
        if x.shape[1] != self.weight.shape[0] - 1:
            raise ValueError(f"x must be (batch, seq_len={self.weight.shape[0] - 1}) as fitted, got {tuple(x.shape)}")
        return torch.cat([x, torch.ones(x.shape[0], 1)], dim=1) @ self.weight


def _check_pair(pred: torch.Tensor, target: torch.Tensor) -> None:
    """``pred`` and ``target`` non-empty tensors of one shape (broadcasting would average over pairs never meant)."""
    check_tensor("pred", pred)
    check_tensor("target", target)
    if pred.shape != target.shape or pred.numel() == 0:
        raise ValueError(f"pred and target must have the same non-empty shape, got {tuple(pred.shape)} and "
                         f"{tuple(target.shape)}")


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean squared error of ``pred`` against ``target``: tensors of the same non-empty shape."""
    _check_pair(pred, target)
    return float(((pred - target) ** 2).mean())


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Mean absolute error of ``pred`` against ``target``: tensors of the same non-empty shape."""
    _check_pair(pred, target)
    return float((pred - target).abs().mean())
