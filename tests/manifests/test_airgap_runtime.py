"""deploy/airgap/runc-bounded: the runtime that lets privileged containers (kind's nodes)
start where root lacks a capability. Run against a stand-in for runc that records what it
was given, so the edit is checked without a container engine.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.manifests.k8s import REPO

WRAPPER = REPO / "deploy/airgap/runc-bounded/runc-bounded"
ALL_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")
PRIVILEGED = ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN", "CAP_SYS_RESOURCE", "CAP_SYS_TIME"]


def fake_runc(tmp_path: Path) -> Path:
    """A 'runc' that writes its arguments to a file, one per line."""
    script = tmp_path / "runc"
    script.write_text(f'#!/bin/sh\nprintf "%s\\n" "$@" > {tmp_path / "args"}\n')
    script.chmod(0o755)
    return script


def run(tmp_path: Path, *args: str, missing: str) -> list[str]:
    env = {
        **os.environ,
        "RUNC_BOUNDED_MISSING": missing,
        "RUNC_BOUNDED_RUNC": str(fake_runc(tmp_path)),
    }
    subprocess.run([str(WRAPPER), *args], env=env, check=True, timeout=30)
    return (tmp_path / "args").read_text().splitlines()


def capabilities(sets: dict[str, list[str]]) -> dict[str, list[str]]:
    return {name: list(sets.get(name, [])) for name in ALL_SETS if name in sets}


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    directory = tmp_path / "bundle"
    directory.mkdir()
    config = {
        "ociVersion": "1.0.2",
        "process": {"args": ["sh"], "capabilities": {s: PRIVILEGED for s in ALL_SETS[:4]}},
    }
    (directory / "config.json").write_text(json.dumps(config))
    return directory


def test_create_drops_the_missing_capability_from_every_set(tmp_path: Path, bundle: Path) -> None:
    args = ("--root", "/run/x", "create", "--bundle", str(bundle), "--pid-file", "p", "id1")
    passed = run(tmp_path, *args, missing="CAP_SYS_RESOURCE")
    assert passed == list(args), "the real runc gets the same arguments"
    config = json.loads((bundle / "config.json").read_text())
    expected = [cap for cap in PRIVILEGED if cap != "CAP_SYS_RESOURCE"]
    assert capabilities(config["process"]["capabilities"]) == {s: expected for s in ALL_SETS[:4]}
    assert config["process"]["args"] == ["sh"], "nothing else in the config changes"


def test_exec_edits_the_process_file_too(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["ls"], "capabilities": {"bounding": PRIVILEGED}}))
    run(tmp_path, "exec", f"--process={process}", "id1", missing="CAP_SYS_RESOURCE CAP_SYS_TIME")
    edited = json.loads(process.read_text())
    assert edited["capabilities"]["bounding"] == ["CAP_CHOWN", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"]


def test_a_config_without_the_missing_capability_is_left_as_it_was(
    tmp_path: Path, bundle: Path
) -> None:
    before = (bundle / "config.json").read_text()
    run(tmp_path, "create", "--bundle", str(bundle), "id2", missing="CAP_BPF")
    assert json.loads((bundle / "config.json").read_text()) == json.loads(before)


def test_a_process_without_capabilities_passes_untouched(tmp_path: Path) -> None:
    process = tmp_path / "process.json"
    process.write_text(json.dumps({"args": ["true"]}))
    run(tmp_path, "exec", "--process", str(process), "id3", missing="CAP_SYS_RESOURCE")
    assert json.loads(process.read_text()) == {"args": ["true"]}
