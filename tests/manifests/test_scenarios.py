"""Each scenario breaks exactly what its README says, and nothing else, compared with the
healthy baseline in the same namespace; and each README gives the symptom, the kubectl
diagnosis (describe, logs --previous, events) and the fix (POD-03)."""

from __future__ import annotations

import re

import pytest

from tests.manifests.k8s import K8S, Doc, find, scenario_names

# scenario -> the objects it changes or adds compared with scenarios/baseline.
CHANGES = {
    "crashloop-missing-secret": {("Deployment", "result")},
    "crashloop-wrong-command": {("Deployment", "result")},
    "crashloop-aggressive-liveness": {("Deployment", "vote")},
    "crashloop-db-not-ready": {("Job", "migrate"), ("StatefulSet", "postgres")},
    "oomkilled": {("Deployment", "worker")},
    "imagepullbackoff": {("Deployment", "vote")},
    "imagepull-unauthorized": {("Deployment", "vote")},
    "readiness-never-passes": {("Deployment", "vote")},
    "bad-rollout-undo": {("Deployment", "vote")},
    "unschedulable-node-selector": {("StatefulSet", "postgres")},
    "hpa-flapping": {
        ("HorizontalPodAutoscaler", "vote"),
        ("Job", "burst-load"),
        ("NetworkPolicy", "burst-load"),
        ("ConfigMap", "burst-load"),
    },
}


def _key(doc: Doc) -> tuple[str, str]:
    # Generated names end in a content hash; compare by the generator's name.
    name = re.sub(r"-[a-z0-9]{10}$", "", doc["metadata"]["name"])
    return doc["kind"], name


def test_every_scenario_is_listed() -> None:
    assert set(scenario_names()) == {"baseline", *CHANGES}


@pytest.mark.parametrize("scenario", sorted(CHANGES))
def test_scenario_changes_only_what_it_breaks(
    scenario: str, rendered: dict[str, list[Doc]]
) -> None:
    baseline = {_key(d): d for d in rendered["scenarios/baseline"]}
    broken = {_key(d): d for d in rendered[f"scenarios/{scenario}"]}
    changed = {key for key, doc in broken.items() if baseline.get(key) != doc}
    assert changed == CHANGES[scenario]
    assert set(baseline) <= set(broken), "a scenario only adds or changes objects"


def _container(docs: list[Doc], kind: str, name: str) -> Doc:
    spec = find(docs, kind, name)["spec"]["template"]["spec"]
    return dict(spec["containers"][0])


def test_the_faults_are_the_documented_ones(rendered: dict[str, list[Doc]]) -> None:
    def docs(name: str) -> list[Doc]:
        return rendered[f"scenarios/{name}"]

    volumes = find(docs("crashloop-missing-secret"), "Deployment", "result")["spec"]["template"][
        "spec"
    ]["volumes"]
    secret = next(v["secret"] for v in volumes if "secret" in v)
    assert secret == {**secret, "secretName": "cloudvote-db-credentials", "optional": True}
    assert _container(docs("crashloop-wrong-command"), "Deployment", "result")["command"] == [
        "cloudvote",
        "results",
    ]
    vote = _container(docs("crashloop-aggressive-liveness"), "Deployment", "vote")
    assert "startupProbe" not in vote and vote["livenessProbe"]["failureThreshold"] == 1
    migrate = find(docs("crashloop-db-not-ready"), "Job", "migrate")["spec"]["template"]["spec"]
    assert "initContainers" not in migrate and migrate["restartPolicy"] == "OnFailure"
    assert find(docs("crashloop-db-not-ready"), "StatefulSet", "postgres")["spec"]["replicas"] == 0
    worker = _container(docs("oomkilled"), "Deployment", "worker")
    assert worker["resources"]["limits"]["memory"] == "32Mi"
    vote = _container(docs("imagepullbackoff"), "Deployment", "vote")
    assert vote["image"] == "cloudvote-vote:0.1.1" and vote["imagePullPolicy"] == "IfNotPresent"
    unauthorized = find(docs("imagepull-unauthorized"), "Deployment", "vote")["spec"]["template"]
    assert unauthorized["spec"]["imagePullSecrets"] == [{"name": "regcred"}]
    assert unauthorized["spec"]["containers"][0]["imagePullPolicy"] == "Always"
    vote = _container(docs("readiness-never-passes"), "Deployment", "vote")
    assert {"name": "REDIS_URL", "value": "redis://redis-primary:6379/0"} in vote["env"]
    assert _container(docs("bad-rollout-undo"), "Deployment", "vote")["image"] == (
        "cloudvote-worker:0.1.0"
    )


@pytest.mark.parametrize("scenario", sorted(CHANGES))
def test_readme_gives_symptom_diagnosis_and_fix(scenario: str) -> None:
    text = (K8S / "scenarios" / scenario / "README.md").read_text()
    for heading in ("## Symptom", "## Reproduce", "## Diagnose", "## Fix", "## Clean up"):
        assert heading in text, f"{scenario}: {heading}"
    diagnose = text.split("## Diagnose", 1)[1].split("## Fix", 1)[0]
    for command in ("kubectl -n cloudvote-scenario describe", "--previous", "get events"):
        assert command in diagnose, f"{scenario}: {command}"
    assert f"kubectl apply -k deploy/k8s/scenarios/{scenario}" in text
