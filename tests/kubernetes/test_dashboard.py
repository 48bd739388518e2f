"""k9s, the seed notes' terminal dashboard, against the running app (OBS-03).

k9s is a full-screen terminal program, so the test runs it the way a person would: in a
terminal, here tmux's, sized like a laptop's. It reads the screen back with
`tmux capture-pane` and checks that cloudvote's pods are listed, Running. k9s runs with
--readonly, so the test cannot delete or edit anything by a stray key.
scripts/k8s-tools builds k9s from its Go module (`scripts/k8s-tools path k9s`);
docs/kubernetes.md shows a capture.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.kubernetes.app import REPO, Cloudvote
from tests.support.waiting import wait_until

pytestmark = pytest.mark.slow
COLUMNS, ROWS = 160, 45
# The app's long-running pods, by the pattern of their names (a Deployment's pod, or a
# StatefulSet's ordinal: redis-0, not redis-exporter-...); each must show, Running.
EXPECTED = {
    "gateway": r"gateway-[a-z0-9]+-[a-z0-9]+",
    "vote": r"vote-[a-z0-9]+-[a-z0-9]+",
    "result": r"result-[a-z0-9]+-[a-z0-9]+",
    "worker": r"worker-[a-z0-9]+-[a-z0-9]+",
    "redis": r"redis-\d+",
    "postgres": r"postgres-\d+",
}


def k9s_binary() -> str:
    built = subprocess.run(
        [str(REPO / "scripts/k8s-tools"), "path", "k9s"],
        capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert built.returncode == 0, f"scripts/k8s-tools could not build k9s:\n{built.stderr}"
    return built.stdout.strip()


def tmux(*args: str) -> str:
    result = subprocess.run(
        ["tmux", *args], capture_output=True, text=True, timeout=30, check=False
    )
    assert result.returncode == 0, f"tmux {' '.join(args)} failed: {result.stderr}"
    return result.stdout


@pytest.fixture
def k9s_screen(app: Cloudvote) -> Iterator[str]:
    """k9s in a detached tmux session on the app's namespace; yields the session name."""
    assert shutil.which("tmux"), "tmux is missing: scripts/install-test-deps installs it"
    binary = k9s_binary()
    session = f"k9s-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="k9s-") as home:
        # k9s writes its config, logs and screen state under the XDG directories; a fresh
        # one per run, so a user's own k9s settings never change what the test sees.
        env = {
            **os.environ,
            "XDG_CONFIG_HOME": f"{home}/config",
            "XDG_STATE_HOME": f"{home}/state",
            "XDG_DATA_HOME": f"{home}/data",
            "XDG_CACHE_HOME": f"{home}/cache",
            "TERM": "xterm-256color",
        }
        command = f"{binary} --readonly --headless --logoless -n {app.namespace} -c pods"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", session, "-x", str(COLUMNS), "-y", str(ROWS),
             command],
            env=env, check=True, timeout=30,
        )  # fmt: skip
        try:
            yield session
        finally:
            subprocess.run(["tmux", "kill-session", "-t", session], check=False, timeout=30)


def running_pods_on_screen(screen: str) -> set[str]:
    """The app components whose pods the pod view lists as Running."""
    shown = set()
    for line in screen.splitlines():
        if "Running" not in line:
            continue
        for component, name in EXPECTED.items():
            if re.search(rf"\b{name}\s", line):
                shown.add(component)
    return shown


def test_k9s_lists_the_apps_pods_running(app: Cloudvote, k9s_screen: str) -> None:
    screen = wait_until(
        lambda: tmux("capture-pane", "-p", "-t", k9s_screen),
        lambda text: running_pods_on_screen(text) >= set(EXPECTED),
        timeout=60,
        interval=1,
        what="k9s's pod view listing every cloudvote pod as Running",
    )
    # The view is the namespace's pod list, not an error screen or another resource.
    assert re.search(rf"pods\({app.namespace}\)", screen, re.IGNORECASE), screen
    # For docs/kubernetes.md's capture: CLOUDVOTE_K9S_CAPTURE=FILE keeps the screen.
    if capture := os.environ.get("CLOUDVOTE_K9S_CAPTURE"):
        Path(capture).write_text(screen)
