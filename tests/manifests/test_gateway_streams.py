"""Live-results streams through the gateway: both nginx configs hold the same number of
open streams with the same settings, and the containers around them can open the files
and hold the memory those streams need.

The two configs are compose's deploy/gateway/nginx.conf and Kubernetes'
deploy/k8s/base/config/nginx.conf. They differ on purpose elsewhere (logs to minute files,
worker_shutdown_timeout), so this compares only what sizes and shapes a stream: workers,
connections, open files, the listen backlog, the result upstream and every directive of the
stream location. The configs are parsed, not run: no nginx is needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

import pytest
import yaml

from cloudvote.entrypoints.web.observed import BODY_TOO_LARGE, HEADERS_TOO_LARGE
from tests.manifests.k8s import APP_TARGETS, REPO, Doc, by_kind, find, quantity

CONFIGS = {
    "compose": "deploy/gateway/nginx.conf",
    "kubernetes": "deploy/k8s/base/config/nginx.conf",
}
STREAM_PATH = "/api/polls/default/results/stream"
# The target: one gateway holds the live results of at least this many viewers.
VIEWERS_PER_GATEWAY = 5_000
# Each proxied stream is two connections in nginx: the browser's and the one to result.
CONNECTIONS_PER_STREAM = 2


# -- a small nginx.conf parser -----------------------------------------------------------


@dataclass(frozen=True)
class Directive:
    name: str
    args: tuple[str, ...]
    block: tuple[Directive, ...] | None = None


_TOKEN = re.compile(
    r"""\#[^\n]*              # a comment, to the end of the line
      | "((?:[^"\\]|\\.)*)"   # a double-quoted string
      | '((?:[^'\\]|\\.)*)'   # a single-quoted string
      | ([{};])               # block and statement ends
      | ([^\s{};"'\#]+)       # a bare word
    """,
    re.X,
)


def parse_nginx(text: str) -> tuple[Directive, ...]:
    """nginx's syntax, enough for our configs: directives, arguments, quoted strings,
    blocks and comments. Quotes are removed, so `""` is an empty argument."""
    stack: list[list[Directive]] = [[]]
    words: list[str] = []
    for match in _TOKEN.finditer(text):
        double, single, punctuation, bare = match.groups()
        if match.group(0).startswith("#"):
            continue
        if punctuation == ";":
            stack[-1].append(Directive(words[0], tuple(words[1:])))
            words = []
        elif punctuation == "{":
            stack.append([])
            stack[-1].append(Directive("__open__", tuple(words)))
            words = []
        elif punctuation == "}":
            opened, *children = stack.pop()
            stack[-1].append(Directive(opened.args[0], opened.args[1:], tuple(children)))
        else:
            words.append(next(g for g in (double, single, bare) if g is not None))
    assert len(stack) == 1 and not words, "unbalanced braces or a missing semicolon"
    return tuple(stack[0])


def values(block: tuple[Directive, ...], name: str) -> list[tuple[str, ...]]:
    return [d.args for d in block if d.name == name]


def value(block: tuple[Directive, ...], name: str) -> str:
    found = values(block, name)
    assert len(found) == 1, f"expected one {name}, found {found}"
    return " ".join(found[0])


def child(block: tuple[Directive, ...], name: str, *args: str) -> tuple[Directive, ...]:
    found = [d for d in block if d.name == name and d.args[: len(args)] == args]
    assert len(found) == 1, f"expected one {name} {' '.join(args)} block, found {len(found)}"
    assert found[0].block is not None
    return found[0].block


@dataclass(frozen=True)
class Gateway:
    main: tuple[Directive, ...]
    events: tuple[Directive, ...]
    http: tuple[Directive, ...]
    server: tuple[Directive, ...]
    stream: tuple[Directive, ...]
    stream_upstream: tuple[Directive, ...]


def gateway(name: str) -> Gateway:
    main = parse_nginx((REPO / CONFIGS[name]).read_text())
    http = child(main, "http")
    server = child(http, "server")
    streams = [
        d
        for d in server
        if d.name == "location" and d.args[0] == "~" and re.search(d.args[1], STREAM_PATH)
    ]
    assert len(streams) == 1, f"{name}: one regex location must match {STREAM_PATH}"
    stream = streams[0].block
    assert stream is not None
    # The regex must not swallow the plain results API, which is a short response.
    assert not re.search(streams[0].args[1], STREAM_PATH.removesuffix("/stream"))
    upstream = value(stream, "proxy_pass").removeprefix("http://")
    return Gateway(
        main=main,
        events=child(main, "events"),
        http=http,
        server=server,
        stream=stream,
        stream_upstream=child(http, "upstream", upstream),
    )


def stream_settings(g: Gateway) -> dict[str, Any]:
    """Everything that decides how many streams one gateway holds and how each behaves."""
    return {
        "worker_processes": values(g.main, "worker_processes"),
        "worker_rlimit_nofile": values(g.main, "worker_rlimit_nofile"),
        "worker_connections": values(g.events, "worker_connections"),
        "use, multi_accept, accept_mutex": [
            values(g.events, n) for n in ("use", "multi_accept", "accept_mutex")
        ],
        "http gzip": values(g.http, "gzip"),
        "listen": values(g.server, "listen"),
        "upstream": [(d.name, d.args) for d in g.stream_upstream],
        "stream location": [(d.name, d.args) for d in g.stream],
    }


def seconds(text: str) -> float:
    """An nginx time ("330s", "5m", "1h", "90") in seconds."""
    match = re.fullmatch(r"(\d+)(ms|s|m|h|d)?", text)
    assert match, f"not an nginx time: {text!r}"
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2) or "s"]
    return int(match.group(1)) * scale


def app_constant(name: str) -> float:
    """A constant of the result app's stream (src/cloudvote/entrypoints/web/result.py)."""
    source = (REPO / "src/cloudvote/entrypoints/web/result.py").read_text()
    match = re.search(rf"^{name} = ([\d.]+)", source, re.M)
    assert match, f"{name} is not in src/cloudvote/entrypoints/web/result.py"
    return float(match.group(1))


# -- the two gateways --------------------------------------------------------------------


def test_both_gateways_hold_the_same_streams_with_the_same_settings() -> None:
    compose = stream_settings(gateway("compose"))
    kubernetes = stream_settings(gateway("kubernetes"))
    different = {}
    for key in compose:
        if compose[key] != kubernetes[key]:
            only_compose = [v for v in compose[key] if v not in kubernetes[key]]
            only_kubernetes = [v for v in kubernetes[key] if v not in compose[key]]
            different[key] = {"compose": only_compose, "kubernetes": only_kubernetes}
    assert not different, f"the gateways drifted apart: {different}"


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_one_gateway_worker_holds_5000_streams_within_its_open_file_limit(name: str) -> None:
    """nginx does not spread connections evenly over its workers, so one worker alone must
    hold the whole room, with connections to spare for pages and votes."""
    g = gateway(name)
    workers = value(g.main, "worker_processes")
    assert workers.isdigit(), f"{name}: worker_processes {workers}: auto counts the host's CPUs"
    connections = int(value(g.events, "worker_connections"))
    streams_alone = VIEWERS_PER_GATEWAY * CONNECTIONS_PER_STREAM
    assert connections >= streams_alone * 1.1, f"{name}: {connections} worker_connections"
    # One descriptor per connection, and a few for logs and listening sockets.
    assert int(value(g.main, "worker_rlimit_nofile")) >= connections + 64, name


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stream_location_passes_each_event_at_once_and_outlives_the_stream(name: str) -> None:
    g = gateway(name)
    stream = g.stream
    assert value(stream, "proxy_buffering") == "off"
    assert value(stream, "proxy_cache") == "off"
    assert value(stream, "gzip") == "off"
    assert value(stream, "proxy_http_version") == "1.1"
    headers = dict((args[0], args[1]) for args in values(stream, "proxy_set_header"))
    assert headers.get("Connection") == "", f"{name}: Connection must be empty for keepalive"
    # A proxy_set_header in a location drops every inherited one: all of the server's
    # headers must be repeated (the Host with its port is what the CSRF check compares).
    inherited = dict((args[0], args[1]) for args in values(g.server, "proxy_set_header"))
    missing = {k: v for k, v in inherited.items() if headers.get(k) != v}
    assert not missing, f"{name}: the stream location lost the server's headers {missing}"
    read_timeout = seconds(value(stream, "proxy_read_timeout"))
    assert read_timeout > app_constant("STREAM_HEARTBEAT_SECONDS"), name
    assert read_timeout > app_constant("STREAM_MAX_SECONDS"), name
    # The idle pool must let go before gunicorn closes an idle connection (keepalive 5 s).
    assert int(value(g.stream_upstream, "keepalive")) > 0
    server_source = (REPO / "src/cloudvote/entrypoints/server.py").read_text()
    gunicorn_keepalive = re.search(r'"keepalive": (\d+)', server_source)
    assert gunicorn_keepalive, "gunicorn's keepalive is not in server.py"
    idle = seconds(value(g.stream_upstream, "keepalive_timeout"))
    assert idle < int(gunicorn_keepalive.group(1)), name


# -- the containers around them ----------------------------------------------------------


def compose_service(name: str) -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((REPO / "compose.yaml").read_text())["services"]
    return dict(services[name])


def compose_default(text: object) -> str:
    """The value of "${VARIABLE:-default}" when VARIABLE is unset (or a plain value)."""
    match = re.fullmatch(r"\$\{\w+:-([^}]*)\}", str(text))
    return match.group(1) if match else str(text)


def compose_bytes(text: str) -> float:
    """A compose memory size: Docker's units are binary ("512M" is 512 MiB)."""
    match = re.fullmatch(r"(\d+)([bkmg]?)", text.lower())
    assert match, f"not a compose memory size: {text!r}"
    return int(match.group(1)) * 1024 ** " kmg".index(match.group(2) or " ")


def test_compose_lets_the_gateway_and_result_open_enough_files() -> None:
    """Without root, a process raises its soft open-file limit only up to the hard one."""
    nofile = int(value(gateway("compose").main, "worker_rlimit_nofile"))
    gateway_limit = compose_service("gateway")["ulimits"]["nofile"]
    assert gateway_limit["hard"] >= nofile
    result = compose_service("result")
    cap = int(compose_default(result["environment"]["RESULT_MAX_STREAMS"]))
    # One descriptor per stream, plus database connections, the listener and spare.
    assert result["ulimits"]["nofile"]["hard"] >= cap + 256


def memory_rule() -> tuple[float, float]:
    """(bytes per stream, bytes of the idle pod) as base/result.yaml states them: one
    place to update once bench has measured the real figures."""
    text = (REPO / "deploy/k8s/base/result.yaml").read_text()
    per_stream = re.search(r"(\d+) KB per stream", text)
    idle = re.search(r"(\d+) MB for the gunicorn master", text)
    assert per_stream and idle, (
        "base/result.yaml must state the memory rule as '<n> KB per stream' and "
        "'<n> MB for the gunicorn master and two idle workers'"
    )
    return int(per_stream.group(1)) * 1e3, int(idle.group(1)) * 1e6


def memory_at_cap(processes: int, cap: int, idle_processes: int = 2) -> float:
    per_stream, idle = memory_rule()
    # The idle figure is for a master and two workers; scale it with the worker count.
    return idle * (1 + processes) / (1 + idle_processes) + processes * cap * per_stream


def result_container(docs: list[Doc]) -> Doc:
    pod = find(docs, "Deployment", "result")["spec"]["template"]["spec"]
    return next(c for c in pod["containers"] if c["name"] == "result")


@pytest.mark.parametrize("target", APP_TARGETS)
def test_result_pods_cap_streams_within_their_memory_limit(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """At RESULT_MAX_STREAMS in every process the pod still fits its limit, so a crowd gets
    503 and retries rather than an OOM kill that drops every stream of the pod."""
    container = result_container(rendered[target])
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env.get("RESULT_MAX_STREAMS"), f"{target}: result has no RESULT_MAX_STREAMS"
    processes, cap = int(env.get("WEB_CONCURRENCY") or 2), int(env["RESULT_MAX_STREAMS"])
    needed = memory_at_cap(processes, cap)
    limit = quantity(container["resources"]["limits"]["memory"])
    assert needed * 1.2 <= limit, f"{target}: {needed / 2**20:.0f} MiB at the cap, limit {limit}"


def test_compose_result_caps_streams_within_its_memory_limit() -> None:
    result = compose_service("result")
    environment = result["environment"]
    processes = int(compose_default(environment["WEB_CONCURRENCY"]))
    cap = int(compose_default(environment["RESULT_MAX_STREAMS"]))
    limit = compose_bytes(result["deploy"]["resources"]["limits"]["memory"])
    assert memory_at_cap(processes, cap) * 1.2 <= limit


def test_compose_and_kubernetes_cap_result_streams_alike(
    rendered: dict[str, list[Doc]],
) -> None:
    environment = compose_service("result")["environment"]
    env = {e["name"]: e.get("value") for e in result_container(rendered["overlays/prod"])["env"]}
    assert env["RESULT_MAX_STREAMS"] == compose_default(environment["RESULT_MAX_STREAMS"])


@pytest.mark.parametrize("target", APP_TARGETS)
def test_result_hpa_scales_on_memory_before_pods_reach_the_cap(
    target: str, rendered: dict[str, list[Doc]]
) -> None:
    """Idle streams cost memory, not CPU: the HPA adds pods well before the cap."""
    docs = rendered[target]
    (hpa,) = [
        h for h in by_kind(docs, "HorizontalPodAutoscaler") if h["metadata"]["name"] == "result"
    ]
    metrics = {m["resource"]["name"]: m["resource"]["target"] for m in hpa["spec"]["metrics"]}
    assert metrics["memory"]["type"] == "AverageValue"
    container = result_container(docs)
    env = {e["name"]: e.get("value") for e in container["env"]}
    at_cap = memory_at_cap(int(env.get("WEB_CONCURRENCY") or 2), int(env["RESULT_MAX_STREAMS"]))
    assert quantity(metrics["memory"]["averageValue"]) <= 0.75 * at_cap, target


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_the_gateways_refusals_use_the_apps_own_words(name: str) -> None:
    """nginx cannot import the apps' messages, so its copies are checked against them:
    a client refused by the gateway reads what the app would have said."""
    server = gateway(name).server
    answers = {}
    for path in ("/_errors/headers-too-large", "/_errors/body-too-large"):
        ((status, body),) = values(child(server, "location", "=", path), "return")
        # The body ends in nginx's escaped newline, not part of the JSON.
        answers[path] = (int(status), json.loads(body.removesuffix("\\n")))

    assert answers["/_errors/headers-too-large"] == (
        431,
        {"error": HEADERS_TOO_LARGE, "status": 431},
    )
    assert answers["/_errors/body-too-large"] == (413, {"error": BODY_TOO_LARGE, "status": 413})
