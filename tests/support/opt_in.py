"""Test tiers that `make test` leaves out because they need heavy tools (an engine, kustomize).

A tier's conftest calls `tier_requested` from its `pytest_ignore_collect` hook: the tier is
collected only when it is named on the command line or its variable is set to 1.
"""

from __future__ import annotations

import os
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
