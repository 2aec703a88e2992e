"""Every bad-input case runs under a hang alarm: a case that never returns fails instead of freezing the suite."""

from __future__ import annotations

import signal

import pytest

HANG_SECONDS = 120


@pytest.fixture(autouse=True)
def no_hang():
    """Fail (instead of freezing) any case that runs longer than HANG_SECONDS."""
    def hang(signum, frame):
        raise TimeoutError(f"lmkit hung: no result after {HANG_SECONDS} s")

    old = signal.signal(signal.SIGALRM, hang)
    signal.alarm(HANG_SECONDS)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)
