"""The optional services behind profiles (COMP-10): seed and loadgen."""

from __future__ import annotations

import json

from tests.compose.project import Project


def _report(output: str) -> dict[str, object]:
    """The JSON line the script prints last (compose may print progress lines before it)."""
    lines = [line for line in output.splitlines() if line.startswith("{")]
    assert lines, f"no report in output:\n{output}"
    report: dict[str, object] = json.loads(lines[-1])
    return report


def test_seed_profile_fills_a_poll(stack: Project) -> None:
    before = stack.total("editor")
    seeded = Project(stack.name, stack.port, {"SEED_POLL": "editor", "SEED_VOTES": "60"})
    report = _report(seeded.compose("--profile", "seed", "run", "--rm", "-T", "seed").stdout)
    assert report == {"mode": "seed", "poll": "editor", "requested": 60, "accepted": 60}
    stack.wait_total(before + 60, poll="editor", timeout=30)
    counts = stack.results("editor")["counts"]
    # Weighted 1:2:3 over vim, emacs, vscode, so the chart has a shape.
    assert counts["vim"] < counts["emacs"] < counts["vscode"]


def test_loadgen_profile_loads_the_gateway_and_every_accepted_vote_counts(
    stack: Project,
) -> None:
    before = stack.total()
    loaded = Project(stack.name, stack.port, {"LOADGEN_SECONDS": "3", "LOADGEN_CONNECTIONS": "4"})
    report = _report(loaded.compose("--profile", "loadgen", "run", "--rm", "-T", "loadgen").stdout)
    assert report["target"] == "http://gateway:8080"
    accepted = report["accepted"]
    assert isinstance(accepted, int) and accepted > 0, report
    assert report["statuses"] == {"202": accepted}, report
    stack.wait_total(before + accepted, timeout=60)
