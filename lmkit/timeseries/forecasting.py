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

from lmkit.checks import check_int


def synthetic_series(n: int = 4000, seed: int = 0) -> torch.Tensor:
    """An "hourly load" series ``(n,)``: a daily cycle whose amplitude drifts with a weekly cycle, a weekday/weekend
    level, a slow random-walk trend, a nonlinear evening peak, and noise. Deterministic for a ``seed``."""
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
    """All (input, target) pairs ``(N, seq_len)``, ``(N, pred_len)`` of a 1-D ``series``, every ``step`` steps."""
    if series.ndim != 1 or series.numel() < seq_len + pred_len:
        raise ValueError(f"series must be 1-D with at least seq_len + pred_len = {seq_len + pred_len} values")
    w = series.unfold(0, seq_len + pred_len, step)  # (N, seq_len + pred_len)
    return w[:, :seq_len].contiguous(), w[:, seq_len:].contiguous()


def last_value(x: torch.Tensor, pred_len: int) -> torch.Tensor:
    """Repeat each window's last value ``pred_len`` times."""
    return x[:, -1:].expand(-1, pred_len).clone()


def seasonal_naive(x: torch.Tensor, pred_len: int, period: int) -> torch.Tensor:
    """Repeat each window's last full ``period`` (e.g. 24 for a daily cycle in hourly data) over the horizon."""
    check_int("period (at most the window length)", period, minimum=1, maximum=x.shape[-1])
    last = x[:, -period:]
    return last.repeat(1, -(-pred_len // period))[:, :pred_len]


class LinearForecaster:
    """``y = [x, 1] @ W``: least squares from the ``seq_len`` inputs (and a bias) to the ``pred_len`` outputs, with
    an optional ridge penalty. Fitted in float64 by solving the normal equations."""

    def __init__(self, ridge: float = 1e-3) -> None:
        self.ridge, self.weight = ridge, None

    def fit(self, x: torch.Tensor, y: torch.Tensor) -> LinearForecaster:
        a = torch.cat([x, torch.ones(x.shape[0], 1)], dim=1).double()  # (N, seq_len + 1)
        gram = a.T @ a + self.ridge * torch.eye(a.shape[1], dtype=torch.float64)
        self.weight = torch.linalg.solve(gram, a.T @ y.double()).float()  # (seq_len + 1, pred_len)
        return self

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None:
            raise RuntimeError("call fit() first")
        return torch.cat([x, torch.ones(x.shape[0], 1)], dim=1) @ self.weight


def mse(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float(((pred - target) ** 2).mean())


def mae(pred: torch.Tensor, target: torch.Tensor) -> float:
    return float((pred - target).abs().mean())
