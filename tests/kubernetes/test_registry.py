"""The private registry in the loop (DOCK-03, DOCK-07, DEL-01): cloudvote runs from signed
digests its nodes pulled, tags cannot be moved, and the deploy gate refuses what is not
signed by the release's key.

scripts/cluster-e2e starts the registry (deploy/registry/up), releases the local-cluster
overlay and the scenarios (deploy/registry/release) and sets CLOUDVOTE_RELEASE_DIR.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
import subprocess
from pathlib import Path

import yaml

from tests.kubernetes.app import RELEASE_DIR, REPO, Cloudvote, require_release, verify_signatures
from tests.support.kube import get_json, image_repository
from tests.support.waiting import wait_until

REGISTRY = "registry.cloudvote.test:5443"
REGISTRY_HOME = Path(RELEASE_DIR).parent if RELEASE_DIR else Path()

pytestmark = require_release()


def run(*command: str, timeout: float = 300, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        list(command),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        # Pushes log in as deploy/registry/up did, never with root's ~/.docker.
        env={**os.environ, "DOCKER_CONFIG": str(REGISTRY_HOME / "docker"), **env},
    )


def cosign(*args: str) -> subprocess.CompletedProcess[str]:
    binary = run(str(REPO / "scripts/k8s-tools"), "path", "cosign").stdout.strip()
    return run(binary, *args, SSL_CERT_FILE=str(REGISTRY_HOME / "trust.pem"))


def digest_of(reference: str) -> str:
    inspected = run(
        "skopeo",
        "inspect",
        "--authfile",
        str(REGISTRY_HOME / "registry.json"),
        "--format",
        "{{.Digest}}",
        f"docker://{reference}",
    )
    assert inspected.returncode == 0, inspected.stderr
    return inspected.stdout.strip()


def released_images() -> dict[str, str]:
    """The local-cluster release: each image's name in the overlay -> its digest reference."""
    path = Path(RELEASE_DIR) / "overlays-local-cluster" / "kustomization.yaml"
    images = yaml.safe_load(path.read_text(encoding="utf-8"))["images"]
    return {i["name"]: f"{i['newName']}@{i['digest']}" for i in images if "digest" in i}


def one_image_overlay(directory: Path, image: str) -> Path:
    """A kustomization with one Namespace and one Deployment running `image`."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources: [app.yaml]\n",
        encoding="utf-8",
    )
    (directory / "app.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: cv-release-probe}\n---\n"
        "apiVersion: apps/v1\nkind: Deployment\n"
        "metadata: {name: probe, namespace: cv-release-probe}\n"
        "spec:\n  selector: {matchLabels: {app: probe}}\n"
        "  template:\n    metadata: {labels: {app: probe}}\n"
        f"    spec: {{containers: [{{name: probe, image: '{image}'}}]}}\n",
        encoding="utf-8",
    )
    return directory


def test_every_app_container_runs_a_signed_digest_that_its_node_pulled(app: Cloudvote) -> None:
    pods = get_json("pods", "-n", app.namespace)["items"]
    assert pods
    digests = set()
    for pod in pods:
        containers = pod["spec"]["containers"] + pod["spec"].get("initContainers", [])
        images = {c["name"]: c["image"] for c in containers}
        for name, image in images.items():
            assert image.startswith(f"{REGISTRY}/") and "@sha256:" in image, (name, image)
            digests.add(image)
        # What runs is the digest the manifest names, not whatever a tag meant later.
        for status in pod["status"].get("containerStatuses", []):
            assert status["imageID"].endswith(images[status["name"]].split("@", 1)[1]), status
    # The nodes know them by these names, which only a pull from the registry gives
    # (an image copied in with `ctr import` is known by its docker.io/... name).
    node_images = {
        name
        for node in get_json("nodes")["items"]
        for image in node["status"].get("images", [])
        for name in image["names"]
    }
    assert digests <= node_images, digests - node_images
    assert verify_signatures(Path(RELEASE_DIR) / "overlays-local-cluster").returncode == 0
    # The pull secret comes from the release, in the app's namespace, never from git.
    secret = get_json("secret", "-n", app.namespace, "registry-credentials")
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    assert list(config["auths"]) == [REGISTRY]


def test_the_registry_refuses_anonymous_clients() -> None:
    anonymous = run(
        "curl",
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        "--cacert",
        str(REGISTRY_HOME / "ca.crt"),
        f"https://{REGISTRY}/v2/cloudvote/cloudvote-vote/tags/list",
    )
    assert anonymous.stdout == "401"
    # And it speaks only TLS: plain HTTP on its port is refused (Go's "HTTP request to an
    # HTTPS server", a 400), never served.
    plain = run("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://{REGISTRY}/v2/")
    assert plain.stdout == "400"


def test_a_release_tag_cannot_be_moved_to_other_bits(tmp_path: Path) -> None:
    local = f"cloudvote-release-probe:{secrets.token_hex(4)}"
    overlay = one_image_overlay(tmp_path / "probe", local)
    release = str(REPO / "deploy/registry/release")
    assert run("docker", "tag", "cloudvote-worker:0.1.0", local).returncode == 0
    try:
        first = run(release, "--overlay", str(overlay))
        assert first.returncode == 0, first.stderr
        tag = f"{REGISTRY}/cloudvote/{local.split(':', maxsplit=1)[0]}"
        released = json.loads((REGISTRY_HOME / "release" / f"{overlay.name}.json").read_text())
        digest = released[local]["digest"]
        # The same bits again: nothing to do, and not an error.
        again = run(release, "--overlay", str(overlay))
        assert again.returncode == 0, again.stderr
        # Other bits under the same name and tag: refused, and the registry keeps the first.
        assert run("docker", "tag", "cloudvote-result:0.1.0", local).returncode == 0
        moved = run(release, "--overlay", str(overlay))
        assert moved.returncode != 0
        assert "refused" in moved.stderr and "immutable" in moved.stderr, moved.stderr
        version_tag = next(
            line.split(" -> ")[1].split(" ")[0]
            for line in first.stderr.splitlines()
            if f"{local} -> " in line
        )
        assert image_repository(version_tag) == tag
        assert digest_of(version_tag) == digest
    finally:
        run("docker", "rmi", local)


def test_the_deploy_gate_refuses_unsigned_copied_and_tag_only_images(tmp_path: Path) -> None:
    signed = released_images()["cloudvote-vote"]
    vote = signed.split("@", 1)[1]
    # Positive control: the released digest passes.
    assert verify_signatures(one_image_overlay(tmp_path / "signed", signed)).returncode == 0

    # Unsigned: pushed straight to the registry, never through the release step.
    unsigned_tag = f"{REGISTRY}/cloudvote/unsigned:{secrets.token_hex(4)}"
    assert run("docker", "tag", "cloudvote-worker:0.1.0", unsigned_tag).returncode == 0
    assert run("docker", "push", "--quiet", unsigned_tag).returncode == 0
    run("docker", "rmi", unsigned_tag)
    unsigned = f"{image_repository(unsigned_tag)}@{digest_of(unsigned_tag)}"
    # Copied: the signed bits under another name. The signature belongs to the name it was
    # made for, so the copy has none.
    copied_tag = f"{REGISTRY}/cloudvote/copied:{secrets.token_hex(4)}"
    copy = run(
        "skopeo",
        "copy",
        "--all",
        "--preserve-digests",
        "--authfile",
        str(REGISTRY_HOME / "registry.json"),
        f"docker://{signed}",
        f"docker://{copied_tag}",
    )
    assert copy.returncode == 0, copy.stderr
    # The very same bits (the same digest) under the other name.
    assert digest_of(copied_tag) == vote
    copied = f"{image_repository(copied_tag)}@{vote}"
    # A tag, even of signed bits: the gate wants the digest that was signed.
    tag_only = f"{REGISTRY}/cloudvote/cloudvote-vote:whatever"
    for image, reason in (
        (unsigned, "has no signature"),
        (copied, "has no signature"),
        (tag_only, "not pinned by digest"),
    ):
        gate = verify_signatures(one_image_overlay(tmp_path / secrets.token_hex(4), image))
        assert gate.returncode != 0, image
        assert reason in gate.stderr and "nothing may be deployed" in gate.stderr, gate.stderr
    # It fails closed: what does not render, or names no image, is refused too.
    empty = tmp_path / "no-images"
    empty.mkdir()
    (empty / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        "resources: [namespace.yaml]\n",
        encoding="utf-8",
    )
    (empty / "namespace.yaml").write_text(
        "apiVersion: v1\nkind: Namespace\nmetadata: {name: cv-empty}\n", encoding="utf-8"
    )
    for directory, reason in ((tmp_path / "missing", "could not render"), (empty, "no image")):
        gate = verify_signatures(directory)
        assert gate.returncode != 0 and reason in gate.stderr, gate.stderr


def test_each_app_image_carries_a_signed_sbom_in_the_registry() -> None:
    app_images = [ref for name, ref in released_images().items() if "/" not in name]
    assert len(app_images) == 3, app_images
    for image in app_images:
        attested = cosign(
            "verify-attestation",
            "--key",
            str(REGISTRY_HOME / "cosign.pub"),
            "--insecure-ignore-tlog=true",
            "--type",
            "spdxjson",
            image,
        )
        assert attested.returncode == 0, attested.stderr
        envelope = json.loads(attested.stdout.splitlines()[0])
        statement = json.loads(base64.b64decode(envelope["payload"]))
        packages = {p["name"] for p in statement["predicate"]["packages"]}
        # The SBOM lists what the image really holds: the app's own dependencies.
        assert {"flask", "gunicorn", "redis"} <= {p.lower() for p in packages}, image


def test_each_app_image_is_one_manifest_list_for_amd64_and_arm64() -> None:
    for name in ("cloudvote-vote", "cloudvote-worker", "cloudvote-result"):
        inspected = run(
            "skopeo",
            "inspect",
            "--raw",
            "--authfile",
            str(REGISTRY_HOME / "registry.json"),
            f"docker://{released_images()[name]}",
        )
        assert inspected.returncode == 0, inspected.stderr
        index = json.loads(inspected.stdout)
        assert "manifest.list" in index["mediaType"] or "image.index" in index["mediaType"]
        platforms = {
            (m["platform"]["os"], m["platform"]["architecture"]) for m in index["manifests"]
        }
        assert platforms == {("linux", "amd64"), ("linux", "arm64")}, (name, platforms)


def test_the_arm64_image_from_the_registry_answers_healthz_under_emulation() -> None:
    vote = released_images()["cloudvote-vote"]
    # As compose runs it, hardened; REDIS_URL is required at start, /healthz never uses it.
    started = run(
        "docker",
        "run",
        "--detach",
        "--platform",
        "linux/arm64",
        "--pull",
        "always",
        "--read-only",
        "--tmpfs",
        "/tmp:size=64m",
        "--cap-drop",
        "ALL",
        "--env",
        "REDIS_URL=redis://redis.invalid:6379/0",
        "--env",
        "WEB_CONCURRENCY=1",
        "--publish",
        "127.0.0.1::5000",
        vote,
    )
    assert started.returncode == 0, started.stderr
    container = started.stdout.strip()
    try:
        architecture = run("docker", "inspect", "--format", "{{.Image}}", container).stdout.strip()
        assert (
            run(
                "docker", "image", "inspect", "--format", "{{.Architecture}}", architecture
            ).stdout.strip()
            == "arm64"
        )
        address = run("docker", "port", container, "5000/tcp").stdout.split()[0]
        # Emulated, the interpreter starts slowly: bounded polling, not a sleep.
        answer = wait_until(
            lambda: run("curl", "-s", "--max-time", "5", f"http://{address}/healthz").stdout,
            lambda body: '"status":"ok"' in body.replace(" ", ""),
            timeout=180,
            interval=2,
            what="the arm64 vote's /healthz",
        )
        assert '"service":"vote"' in answer.replace(" ", "")
    finally:
        run("docker", "rm", "--force", container)
