"""Every setting that differs between deployments, read from the environment in one place.

12-factor: the same image runs in dev, test and prod, and only the environment changes.
Secrets come from files (`*_PASSWORD_FILE`) where Docker or Kubernetes mounts them, so
they never appear in `docker inspect`, `kubectl describe` or the process environment.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path


class MissingSetting(RuntimeError):
    """A required setting is absent; the message names the variable to set."""

    def __init__(self, variable: str, purpose: str) -> None:
        super().__init__(f"{variable} must be set: {purpose}")
        self.variable = variable


class InvalidSetting(RuntimeError):
    pass


# The share of new traces recorded when OTEL_TRACES_SAMPLER_ARG is not set. The measured
# cost per vote at 0.1 and 1.0 is in docs/performance.md#tracing.
DEFAULT_TRACE_RATIO = 0.1


@dataclass(frozen=True)
class Settings:
    port: int = 5000
    redis_url: str = ""
    redis_password: str = ""
    database_url: str = ""
    database_password: str = ""
    polls_file: str = ""
    option_a: str = "Cats"
    option_b: str = "Dogs"
    data_dir: str = ""
    web_concurrency: int = 2
    log_level: str = "INFO"
    stream: str = "votes"
    consumer_group: str = "workers"
    dead_letter_stream: str = "votes:dead"
    batch_size: int = 2000
    claim_idle_ms: int = 15_000
    database_pool_size: int = 4
    # Open live-result streams one result process serves; past it, a viewer gets 503 and
    # retries. Sized in docs/performance.md (memory per stream) and the result manifests.
    max_streams: int = 4000
    # Where this process runs, shown on every page and answer ("who served you"). In
    # Kubernetes the downward API passes the pod's and node's names; elsewhere the host
    # name stands for the instance (a container id under Docker).
    pod_name: str = ""
    node_name: str = ""
    # A release marker (a new one rolls the Deployments), shown beside the version.
    release: str = ""
    # Where /about links the concept map (docs/concepts.md), e.g. your fork's web page.
    docs_url: str = ""
    # Where the server processes of one vote or result instance write their metrics, for
    # /metrics to add up; prometheus-client reads the same variable. Empty: one process.
    metrics_dir: str = ""
    # The base of the monolith's default data directory (the XDG base directory spec).
    xdg_data_home: str = ""
    # Tracing, with OpenTelemetry's own variable names (docs/configuration.md#tracing).
    # Where spans go: an OTLP/HTTP receiver such as a collector, e.g. http://otel:4318.
    # Empty: no exporter, but every request still gets a trace id (votes.trace_id and the
    # traceparent response header) and sampled parents are still continued.
    otel_exporter_otlp_endpoint: str = ""
    # The traces URL itself, when it is not <endpoint>/v1/traces.
    otel_exporter_otlp_traces_endpoint: str = ""
    # service.name on every span; empty: the service's own name (vote, result, worker,
    # or cloudvote for the monolith).
    otel_service_name: str = ""
    # The share of new traces recorded. A caller's sampling decision always wins (a
    # traceparent with flags 01 is recorded): sampling is parent-based.
    otel_traces_sampler_arg: float = DEFAULT_TRACE_RATIO
    # True: no spans and no trace ids at all (OpenTelemetry's switch for the SDK).
    otel_sdk_disabled: bool = False

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] | None = None, *, service: str = "", **overrides: object
    ) -> Settings:
        """Read the environment (or `env`); keyword overrides win over both.

        `service` picks that service's defaults where they differ (the worker's port).
        """
        env = os.environ if env is None else env
        _check_only_values(env)
        values: dict[str, object] = dict(_SERVICE_DEFAULTS.get(service, {}))
        for name, variable in _VARIABLES.items():
            if variable in env and env[variable] != "":
                values[name] = env[variable]
        values["redis_password"] = _read_secret(env, "REDIS_PASSWORD") or values.get(
            "redis_password", ""
        )
        values["database_password"] = _read_secret(env, "DATABASE_PASSWORD") or values.get(
            "database_password", ""
        )
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**_coerce(values))  # type: ignore[arg-type]

    def with_overrides(self, **overrides: object) -> Settings:
        coerced = _coerce({k: v for k, v in overrides.items() if v is not None})
        return replace(self, **coerced)  # type: ignore[arg-type]

    def require_redis_url(self) -> str:
        if not self.redis_url:
            raise MissingSetting(
                "REDIS_URL", "where the vote queue lives, e.g. redis://redis:6379/0"
            )
        return self.redis_url

    def require_database_url(self) -> str:
        if not self.database_url:
            raise MissingSetting(
                "DATABASE_URL",
                "where votes are stored, e.g. postgresql://cloudvote@postgres/cloudvote",
            )
        return self.database_url

    def instance_name(self) -> str:
        return self.pod_name or socket.gethostname()

    def resolved_data_dir(self) -> Path:
        if self.data_dir:
            return Path(self.data_dir)
        base = self.xdg_data_home or str(Path.home() / ".local" / "share")
        return Path(base) / "cloudvote"


# Field name -> environment variable. Passwords have no plain variable on purpose.
_VARIABLES = {
    "port": "PORT",
    "redis_url": "REDIS_URL",
    "database_url": "DATABASE_URL",
    "polls_file": "CLOUDVOTE_POLLS_FILE",
    "option_a": "OPTION_A",
    "option_b": "OPTION_B",
    "data_dir": "CLOUDVOTE_DATA_DIR",
    "web_concurrency": "WEB_CONCURRENCY",
    "log_level": "LOG_LEVEL",
    "stream": "CLOUDVOTE_STREAM",
    "consumer_group": "CLOUDVOTE_CONSUMER_GROUP",
    "dead_letter_stream": "CLOUDVOTE_DEAD_LETTER_STREAM",
    "batch_size": "WORKER_BATCH_SIZE",
    "claim_idle_ms": "WORKER_CLAIM_IDLE_MS",
    "database_pool_size": "DATABASE_POOL_SIZE",
    "max_streams": "RESULT_MAX_STREAMS",
    "pod_name": "POD_NAME",
    "node_name": "NODE_NAME",
    "release": "CLOUDVOTE_RELEASE",
    "docs_url": "CLOUDVOTE_DOCS_URL",
    "metrics_dir": "PROMETHEUS_MULTIPROC_DIR",
    "xdg_data_home": "XDG_DATA_HOME",
    "otel_exporter_otlp_endpoint": "OTEL_EXPORTER_OTLP_ENDPOINT",
    "otel_exporter_otlp_traces_endpoint": "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "otel_service_name": "OTEL_SERVICE_NAME",
    "otel_traces_sampler_arg": "OTEL_TRACES_SAMPLER_ARG",
    "otel_sdk_disabled": "OTEL_SDK_DISABLED",
}

# OpenTelemetry variables whose other values cloudvote cannot honour: it samples parent-based
# by ratio, and exports OTLP over HTTP with protobuf (no gRPC client is installed). Left
# unchecked, a value such as OTEL_EXPORTER_OTLP_PROTOCOL=grpc would be ignored in silence.
_ONLY_VALUES = {
    "OTEL_TRACES_SAMPLER": ("parentbased_traceidratio", "set OTEL_TRACES_SAMPLER_ARG instead"),
    "OTEL_EXPORTER_OTLP_PROTOCOL": ("http/protobuf", "the OTLP receiver's port is 4318"),
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": ("http/protobuf", "the OTLP receiver's port is 4318"),
}

# Where a service's default differs from the field's: the worker serves only health and
# metrics, on a port that stays clear of the web services' 5000.
_SERVICE_DEFAULTS: dict[str, dict[str, object]] = {"worker": {"port": 8080}}


# Counts where 0 or less would make a service that cannot serve anything.
_POSITIVE = frozenset({"web_concurrency", "batch_size", "database_pool_size", "max_streams"})


def _read_secret(env: Mapping[str, str], name: str) -> str:
    """Read `<name>_FILE` if set; a file named but unreadable is a startup error."""
    path = env.get(f"{name}_FILE", "")
    if not path:
        return ""
    try:
        return Path(path).read_text(encoding="utf-8").strip()
    except OSError as error:
        raise InvalidSetting(f"{name}_FILE={path} cannot be read: {error.strerror}") from None


def _check_only_values(env: Mapping[str, str]) -> None:
    for variable, (supported, hint) in _ONLY_VALUES.items():
        value = env.get(variable, "")
        if value and value.strip().lower() != supported:
            raise InvalidSetting(
                f"{variable}={value!r} is not supported: cloudvote uses {supported} ({hint})"
            )


def _coerce(values: dict[str, object]) -> dict[str, object]:
    types = {field.name: field.type for field in fields(Settings)}
    coerced: dict[str, object] = {}
    for name, value in values.items():
        if name not in types:
            raise InvalidSetting(f"unknown setting {name!r}")
        variable = _VARIABLES.get(name, name)
        if types[name] in ("float", float):
            coerced[name] = _ratio(variable, value)
            continue
        if types[name] in ("bool", bool):
            coerced[name] = _flag(variable, value)
            continue
        if types[name] not in ("int", int):
            coerced[name] = value
            continue
        try:
            number = value if isinstance(value, int) else int(str(value))
        except ValueError:
            raise InvalidSetting(f"{variable} must be an integer, got {value!r}") from None
        if name in _POSITIVE and number < 1:
            raise InvalidSetting(f"{variable} must be at least 1, got {value!r}")
        coerced[name] = number
    return coerced


def _ratio(variable: str, value: object) -> float:
    """A share between 0 and 1; NaN and infinities are not shares."""
    try:
        number = float(value) if isinstance(value, int | float) else float(str(value).strip())
    except ValueError:
        number = float("nan")
    if not 0.0 <= number <= 1.0:
        raise InvalidSetting(
            f"{variable} must be a ratio from 0 to 1 (0.1 records one new trace in ten),"
            f" got {value!r}"
        )
    return number


def _flag(variable: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text not in ("true", "false"):
        raise InvalidSetting(f"{variable} must be true or false, got {value!r}")
    return text == "true"
