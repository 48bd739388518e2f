"""Bounded polling for conditions that become true eventually (a drain, a restart)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class ConditionTimeout(AssertionError):
    """The condition did not hold in time; the message says what was last observed."""


def wait_until(
    probe: Callable[[], T],
    accept: Callable[[T], bool] = bool,
    *,
    timeout: float,
    interval: float = 0.1,
    what: str = "condition",
) -> T:
    """Call ``probe`` until ``accept`` likes its result; return that result.

    Bounded in time, so a bug shows up as a failure naming the last value seen instead
    of a hung test run. Exceptions from ``probe`` count as "not yet" and are reported.
    """
    deadline = time.monotonic() + timeout
    last: object = "<never probed>"
    while True:
        try:
            value = probe()
        except Exception as error:  # noqa: BLE001 - a dependency still coming back
            last = f"{type(error).__name__}: {error}"
        else:
            if accept(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            raise ConditionTimeout(f"{what} not reached within {timeout}s; last seen: {last!r}")
        time.sleep(interval)
