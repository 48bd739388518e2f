"""Start calls at the same moment in threads, so a race happens rather than maybe happens."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def run_at_once(*calls: Callable[[], T], timeout: float = 60.0) -> list[T]:
    """Run each call in its own thread, all released by one barrier; their results in order.

    The first error a call raised is raised here, and a call still running after `timeout`
    seconds fails the test: a race that hangs or breaks is never passed over.
    """
    start = threading.Barrier(len(calls))
    results: dict[int, T] = {}
    errors: list[BaseException] = []

    def run(index: int, call: Callable[[], T]) -> None:
        try:
            start.wait(timeout=10)
            results[index] = call()
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=pair, daemon=True) for pair in enumerate(calls)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    stuck = sum(thread.is_alive() for thread in threads)
    assert not stuck, f"{stuck} of {len(calls)} calls still running after {timeout} s"
    if errors:
        raise errors[0]
    return [results[index] for index in range(len(calls))]
