"""The forge workflow (.github/workflows/ci.yml) runs the tiers that .ci/run runs.

It cannot run here, so nothing else would notice a tier added to .ci/run and forgotten in
the workflow, or the reverse. actionlint (make lint) checks that the workflow is valid;
this checks that it is the same pipeline.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
# A tier is a command .ci/run runs on a line of its own: the README's test command or a
# script under scripts/.
TIER = re.compile(r"^(make test|scripts/[\w-]+)\b")


def ci_run_tiers() -> list[str]:
    lines = (REPO / ".ci" / "run").read_text(encoding="utf-8").splitlines()
    return [match[1] for line in lines if (match := TIER.match(line.strip()))]


def workflow() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(
        (REPO / ".github" / "workflows" / "ci.yml").read_text(encoding="utf-8")
    )
    return loaded


def tiers_by_job() -> dict[str, list[str]]:
    """Each job's tier commands, from its `run:` steps (a `sudo ...` prefix allowed)."""
    found: dict[str, list[str]] = {}
    for name, job in workflow()["jobs"].items():
        for step in job.get("steps", []):
            for line in str(step.get("run", "")).splitlines():
                command = re.sub(r"^sudo( --?[\w=-]+)* ", "", line.strip())
                if match := TIER.match(command):
                    found.setdefault(name, []).append(match[1])
    return found


def test_ci_run_has_the_tiers_this_test_expects() -> None:
    # The parse above finds .ci/run's tiers, not nothing: an empty list would pass below.
    assert ci_run_tiers()[0] == "make test"
    assert len(ci_run_tiers()) >= 4


def test_every_ci_run_tier_is_a_job_of_its_own_in_the_workflow() -> None:
    by_job = tiers_by_job()
    workflow_tiers = [tier for tiers in by_job.values() for tier in tiers]
    assert sorted(workflow_tiers) == sorted(ci_run_tiers()), by_job
    assert all(len(tiers) == 1 for tiers in by_job.values()), by_job


def test_the_workflow_runs_on_push_and_pull_request_with_read_only_defaults() -> None:
    loaded = workflow()
    # PyYAML reads the key `on` as the boolean True (YAML 1.1).
    triggers = loaded.get("on", loaded.get(True))
    assert {"push", "pull_request"} <= set(triggers)
    assert loaded["permissions"] == {"contents": "read"}


def test_images_are_multi_arch_tagged_by_version_and_sha_scanned_and_signed() -> None:
    images = workflow()["jobs"]["images"]
    assert images["strategy"]["matrix"]["service"] == ["vote", "worker", "result"]
    steps = {step.get("name", step.get("uses", "")): step for step in images["steps"]}
    build = steps["build and push linux/amd64 and linux/arm64"]["with"]
    assert set(build["platforms"].split(",")) == {"linux/amd64", "linux/arm64"}
    assert build["tags"].endswith(":${{ steps.tag.outputs.tag }}")
    assert "$version-${GITHUB_SHA::12}" in steps["version and tag"]["run"]
    sign = steps["sign, and attach the SBOM as a signed attestation"]["run"]
    assert "cosign sign --yes" in sign
    # Signed by digest, never by tag: a tag can be moved after the signature.
    assert (
        "@${{ steps.build.outputs.digest }}"
        in steps[sign and "sign, and attach the SBOM as a signed attestation"]["env"]["IMAGE"]
    )
    assert images["permissions"]["id-token"] == "write"
