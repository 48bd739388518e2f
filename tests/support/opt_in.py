"""Test tiers that `make test` leaves out because they need heavy tools (an engine, kustomize).

A tier's conftest sets its `pytest_ignore_collect` hook from `collected_when_requested`:
the tier is collected only when it is named on the command line or its variable is set to
1. `timings_summary` makes the hook that prints the measurements a tier's tests report.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


def tier_requested(config: pytest.Config, tier_dir: Path, variable: str) -> bool:
    if os.environ.get(variable) == "1":
        return True
    for arg in config.invocation_params.args:
        path = Path(str(arg).split("::")[0])
        path = path if path.is_absolute() else config.invocation_params.dir / path
        if path.resolve() == tier_dir or tier_dir in path.resolve().parents:
            return True
    return False


def collected_when_requested(
    conftest: str, variable: str
) -> Callable[[Path, pytest.Config], bool | None]:
    """The `pytest_ignore_collect` hook of the tier whose conftest.py is `conftest`."""
    tier_dir = Path(conftest).resolve().parent

    def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
        if collection_path.suffix == ".py" and not tier_requested(config, tier_dir, variable):
            return True
        return None

    return pytest_ignore_collect


def timings_summary(
    title: str, timings: dict[str, float], digits: int = 1
) -> Callable[[pytest.TerminalReporter], None]:
    """The `pytest_terminal_summary` hook that prints `timings`, if any, at the end of a run."""

    def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
        if timings:
            terminalreporter.section(title)
            for name, seconds in timings.items():
                terminalreporter.write_line(f"{name}: {seconds:.{digits}f} s")

    return pytest_terminal_summary
