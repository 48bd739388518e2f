"""Strict JSON schemas for the custom resources deploy/k8s uses: KEDA's two kinds.

The Kubernetes 1.34 OpenAPI schemas cover only built-in kinds. KEDA's CRDs are not
vendored here (their source stays in KEDA's repository), so these schemas are written
from KEDA's documentation (https://keda.sh/docs/latest/reference/scaledobject-spec/ and
.../concepts/authentication/) for the fields this project may use, and they reject any
other field, as the API server's strict field validation would. The HPA `behavior` that
a ScaledObject passes through is validated separately against the real autoscaling/v2
schema (see test_render_and_validate.py).
"""

from __future__ import annotations

from typing import Any

_STRING: dict[str, Any] = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}


def _int(minimum: int | None = None) -> dict[str, Any]:
    return {"type": "integer"} if minimum is None else {"type": "integer", "minimum": minimum}


def _strict(properties: dict[str, Any], *required: str) -> dict[str, Any]:
    """An object that allows exactly `properties`, as strict field validation would."""
    schema: dict[str, Any] = {"type": "object", "additionalProperties": False}
    if required:
        schema["required"] = list(required)
    return schema | {"properties": properties}


def _resource(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    metadata = _strict(
        {"name": _STRING, "namespace": _STRING, "labels": _STRING_MAP, "annotations": _STRING_MAP},
        "name",
    )
    return _strict(
        {
            "apiVersion": {"const": "keda.sh/v1alpha1"},
            "kind": {"const": kind},
            "metadata": metadata,
            "spec": spec,
        },
        *("apiVersion", "kind", "metadata", "spec"),
    )


_SCALE_TARGET = {"apiVersion": _STRING, "kind": _STRING, "name": _STRING}
_AUTHENTICATION_KINDS = ["TriggerAuthentication", "ClusterTriggerAuthentication"]
_TRIGGER = {
    "type": _STRING,
    "name": _STRING,
    "useCachedMetrics": {"type": "boolean"},
    "metricType": {"enum": ["AverageValue", "Value", "Utilization"]},
    # KEDA's trigger metadata is a map of strings: numbers must be quoted ("2000"), a
    # common mistake this catches.
    "metadata": _STRING_MAP,
    "authenticationRef": _strict(
        {"name": _STRING, "kind": {"enum": _AUTHENTICATION_KINDS}}, "name"
    ),
}
_HPA_CONFIG = {
    "name": _STRING,
    # Checked against the autoscaling/v2 schema by the test.
    "behavior": {"type": "object"},
}

SCALED_OBJECT = _resource(
    "ScaledObject",
    _strict(
        {
            "scaleTargetRef": _strict(_SCALE_TARGET | {"envSourceContainerName": _STRING}, "name"),
            "pollingInterval": _int(1),
            "cooldownPeriod": _int(0),
            "initialCooldownPeriod": _int(0),
            "idleReplicaCount": _int(0),
            "minReplicaCount": _int(0),
            "maxReplicaCount": _int(1),
            "fallback": _strict(
                {"failureThreshold": _int(), "replicas": _int()}, "failureThreshold", "replicas"
            ),
            "advanced": _strict(
                {
                    "restoreToOriginalReplicaCount": {"type": "boolean"},
                    "horizontalPodAutoscalerConfig": _strict(_HPA_CONFIG),
                }
            ),
            "triggers": {
                "type": "array",
                "minItems": 1,
                "items": _strict(_TRIGGER, "type", "metadata"),
            },
        },
        "scaleTargetRef",
        "triggers",
    ),
)

TRIGGER_AUTHENTICATION = _resource(
    "TriggerAuthentication",
    _strict(
        {
            "secretTargetRef": {
                "type": "array",
                "items": _strict(
                    {"parameter": _STRING, "name": _STRING, "key": _STRING},
                    *("parameter", "name", "key"),
                ),
            },
            "env": {
                "type": "array",
                "items": _strict(
                    {"parameter": _STRING, "name": _STRING, "containerName": _STRING},
                    *("parameter", "name"),
                ),
            },
        }
    ),
)

SCHEMAS = {
    ("keda.sh/v1alpha1", "ScaledObject"): SCALED_OBJECT,
    ("keda.sh/v1alpha1", "TriggerAuthentication"): TRIGGER_AUTHENTICATION,
}
