"""The manifest tier: deploy/k8s rendered with kustomize, deploy/helm/cloudvote with Helm,
both checked without a cluster.

`scripts/k8s-check` runs it (after building kustomize and helm with scripts/k8s-tools).
`make test` does not collect it, because it needs those binaries; name it
(`pytest tests/manifests`) or set CLOUDVOTE_MANIFEST_TESTS=1. It never skips: a missing
binary or schema package is a failure that says what to run.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.manifests.k8s import (
    Doc,
    RenderError,
    built_tool,
    render,
    render_targets,
)
from tests.support.opt_in import collected_when_requested

pytest_ignore_collect = collected_when_requested(__file__, "CLOUDVOTE_MANIFEST_TESTS")


_RENDERED: dict[str, list[Doc]] = {}


@pytest.fixture(scope="session")
def kustomize() -> Path:
    return built_tool("kustomize")


@pytest.fixture(scope="session")
def helm() -> Path:
    return built_tool("helm")


@pytest.fixture(scope="session")
def rendered(kustomize: Path, helm: Path) -> dict[str, list[Doc]]:
    """Every render target, rendered once per session: name -> objects."""
    if not _RENDERED:
        targets = render_targets()
        # kustomize and helm runs are independent processes: render them side by side.
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
            futures = {name: pool.submit(render, path) for name, path in targets.items()}
        for name, future in futures.items():
            try:
                _RENDERED[name] = future.result()
            except RenderError as error:
                pytest.fail(str(error), pytrace=False)
    return _RENDERED
