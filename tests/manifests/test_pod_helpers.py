"""The helper programs of the multi-container pods, run here as the pods run them: the
adapter (POD-06), the ambassador's start command and its pgbouncer.ini (POD-07), the
log-shipping sidecar (POD-05) and the snapshot job (WL-06). Each talks to local stand-ins
on loopback; pgbouncer itself is exercised with the real images (docs/containers.md)."""

from __future__ import annotations

import configparser
import dataclasses
import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit
from urllib.request import urlopen

from cloudvote.application.draining import DrainStats
from tests.manifests.k8s import K8S, REPO, Doc, find
from tests.support.servers import free_port

SCRIPTS = K8S / "base" / "scripts"


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise AssertionError(f"nothing listens on {port}")


@contextmanager
def running(*args: str, env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """Start a helper; stop it (SIGTERM, then SIGKILL) and close its pipe at the end."""
    with subprocess.Popen(
        args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
    ) as process:
        try:
            yield process
        finally:
            if process.poll() is None:
                process.terminate()
                try:
                    process.communicate(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.communicate()


@contextmanager
def json_server(routes: dict[str, Any], port: int = 0) -> Iterator[int]:
    """A loopback HTTP server answering GET <path> with the JSON in `routes`."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path not in routes:
                self.send_response(404)
                self.end_headers()
                return
            body = json.dumps(routes[self.path]).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


def get(url: str) -> str:
    with urlopen(url, timeout=5) as response:
        return str(response.read().decode())


def parse_prometheus(text: str) -> dict[str, float]:
    """name{labels} -> value for every sample line; checks the text format on the way."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE ")) or not line, line
            continue
        name, value = line.rsplit(" ", 1)
        samples[name] = float(value)
    return samples


def worker_stats(seconds_since_progress: float, **counters: Any) -> dict[str, Any]:
    """/stats as the worker serves it (entrypoints/worker.py): the fields of its DrainStats,
    with last_progress given as seconds since then."""
    body = dataclasses.asdict(DrainStats(**counters))
    del body["last_progress"]
    return body | {"seconds_since_progress": seconds_since_progress}


def test_adapter_turns_worker_stats_into_prometheus_text() -> None:
    port = free_port()
    # Progress 0.4 s ago; the queue depth unknown, as while Redis is down.
    stats = worker_stats(0.4, batches=12, votes_received=3400, dead_letters=1)
    assert stats["queue_depth"] is None
    with json_server({"/stats": stats}) as stats_port:
        stats_url = f"http://127.0.0.1:{stats_port}/stats"
        script = str(SCRIPTS / "stats_adapter.py")
        with running(
            sys.executable, script, f"--listen=127.0.0.1:{port}", f"--stats-url={stats_url}"
        ):
            wait_for_port(port)
            text = get(f"http://127.0.0.1:{port}/metrics")
    samples = parse_prometheus(text)
    assert samples["cloudvote_worker_stats_up"] == 1
    assert samples["cloudvote_worker_stats_batches_total"] == 12
    assert samples["cloudvote_worker_stats_votes_received_total"] == 3400
    assert samples["cloudvote_worker_stats_seconds_since_progress"] == 0.4
    # null while Redis is down: the series is left out, not invented.
    assert "cloudvote_worker_stats_queue_depth" not in samples
    assert "# TYPE cloudvote_worker_stats_batches_total counter" in text


def test_adapter_reports_down_when_the_worker_does_not_answer() -> None:
    port = free_port()
    script = str(SCRIPTS / "stats_adapter.py")
    dead = f"http://127.0.0.1:{free_port()}/stats"
    with running(sys.executable, script, f"--listen=127.0.0.1:{port}", f"--stats-url={dead}"):
        wait_for_port(port)
        samples = parse_prometheus(get(f"http://127.0.0.1:{port}/metrics"))
        assert get(f"http://127.0.0.1:{port}/healthz") == "ok\n"
    assert samples == {"cloudvote_worker_stats_up": 0}


def _ambassador(docs: list[Doc]) -> tuple[Doc, Doc]:
    """The worker pod's spec and its db-ambassador container."""
    pod = find(docs, "Deployment", "worker")["spec"]["template"]["spec"]
    (container,) = [c for c in pod["initContainers"] if c["name"] == "db-ambassador"]
    return pod, container


def _mount(container: Doc, volume: str) -> str:
    (path,) = [m["mountPath"] for m in container["volumeMounts"] if m["name"] == volume]
    return str(path)


def test_ambassador_writes_the_userlist_from_the_secret_and_execs_pgbouncer(
    tmp_path: Path, rendered: dict[str, list[Doc]]
) -> None:
    """The db-ambassador's start command, run by sh as the pod runs it, with a fake
    `pgbouncer` first on PATH that reports what it was given. The userlist comes from the
    password file (a double quote doubled, as pgbouncer's format wants), only its owner
    may read it, and pgbouncer replaces the shell, so the kubelet's SIGTERM reaches it."""
    _, container = _ambassador(rendered["overlays/local-cluster"])
    shell, flag, script = container["command"]
    assert (shell, flag) == ("sh", "-c")
    run_dir = _mount(container, "pgbouncer-run")
    assert f"{run_dir}/" in script
    run = tmp_path / "run"
    run.mkdir()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["DATABASE_PASSWORD_FILE"].startswith(_mount(container, "database-password") + "/")
    password = tmp_path / "postgres-password"
    password.write_text('pa"ss%s\\word')  # no trailing newline, as a Secret key holds it
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "pgbouncer"
    fake.write_text('#!/bin/sh\necho "pid=$$ args=$*"\n')
    fake.chmod(0o755)
    process = subprocess.Popen(
        ["sh", "-c", script.replace(f"{run_dir}/", f"{run}/")],
        stdout=subprocess.PIPE,
        text=True,
        env={
            "PATH": f"{bin_dir}:{os.environ['PATH']}",
            **env,
            "DATABASE_PASSWORD_FILE": str(password),
        },
    )
    output, _ = process.communicate(timeout=10)
    assert process.returncode == 0
    config = _mount(container, "pgbouncer-config")
    assert output.strip() == f"pid={process.pid} args={config}/pgbouncer.ini"
    userlist = run / "userlist.txt"
    assert userlist.read_text() == '"cloudvote" "pa""ss%s\\word"\n'
    assert userlist.stat().st_mode & 0o777 == 0o600


def test_ambassador_config_matches_the_worker_pod(rendered: dict[str, list[Doc]]) -> None:
    """pgbouncer.ini, as the pod mounts it, agrees with the pod around it: it listens where
    the worker's DATABASE_URL points (loopback only), reads the userlist from the
    memory-backed emptyDir, pools by session, has room for the worker's whole pool, and
    sends the cloudvote database to the postgres Service."""
    docs = rendered["overlays/local-cluster"]
    pod, container = _ambassador(docs)
    volumes = {v["name"]: v for v in pod["volumes"]}
    configmap = find(docs, "ConfigMap", volumes["pgbouncer-config"]["configMap"]["name"])
    ini = configparser.ConfigParser(interpolation=None)
    ini.read_string(configmap["data"]["pgbouncer.ini"])
    settings = ini["pgbouncer"]
    (worker,) = [c for c in pod["containers"] if c["name"] == "worker"]
    url = urlsplit(next(e["value"] for e in worker["env"] if e["name"] == "DATABASE_URL"))
    assert (settings["listen_addr"], settings["listen_port"]) == (url.hostname, str(url.port))
    assert settings["listen_addr"] == "127.0.0.1"
    assert settings["pool_mode"] == "session"  # psycopg 3 prepares statements (see the ini)
    assert settings["auth_type"] == "scram-sha-256"
    auth_file = PurePosixPath(settings["auth_file"])
    assert str(auth_file.parent) == _mount(container, "pgbouncer-run")
    assert volumes["pgbouncer-run"]["emptyDir"]["medium"] == "Memory"
    assert "password" not in ini["databases"]["cloudvote"]  # it lives in the userlist only
    source = (REPO / "src/cloudvote/config.py").read_text()
    pool_size = re.search(r"^\s+database_pool_size: int = (\d+)", source, re.M)
    assert pool_size
    assert int(settings["default_pool_size"]) >= int(pool_size.group(1))
    assert int(settings["max_client_conn"]) >= int(settings["default_pool_size"])
    target = dict(pair.split("=", 1) for pair in ini["databases"]["cloudvote"].split())
    assert target == {"host": "postgres", "port": "5432", "dbname": url.path.lstrip("/")}
    service = find(docs, "Service", target["host"])
    assert int(target["port"]) in [p["port"] for p in service["spec"]["ports"]]


def test_snapshot_saves_every_poll_and_keeps_the_newest(tmp_path: Path) -> None:
    routes = {
        "/api/polls": {"polls": [{"id": "default"}, {"id": "editor"}]},
        "/api/polls/default/results": {"poll": "default", "counts": {"a": 3, "b": 1}, "total": 4},
        "/api/polls/editor/results": {"poll": "editor", "counts": {"vim": 2}, "total": 2},
    }
    for old in ("results-20260101T000000Z.json", "results-20260101T001500Z.json"):
        (tmp_path / old).write_text("{}")
    with json_server(routes) as port:
        result = subprocess.run(
            [
                sys.executable,
                str(SCRIPTS / "snapshot_results.py"),
                f"--api=http://127.0.0.1:{port}",
                f"--out={tmp_path}",
                "--keep=2",
            ],
            capture_output=True,
            text=True,
            check=False,
            timeout=30,
        )
    assert result.returncode == 0, result.stderr
    kept = sorted(p.name for p in tmp_path.glob("results-*.json"))
    assert len(kept) == 2 and kept[0] == "results-20260101T001500Z.json"
    snapshot = json.loads((tmp_path / kept[1]).read_text())
    assert snapshot["results"]["default"]["total"] == 4
    assert snapshot["results"]["editor"]["counts"] == {"vim": 2}
    assert not list(tmp_path.glob(".*.partial"))


def test_snapshot_fails_when_the_api_does_not_answer(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(SCRIPTS / "snapshot_results.py"),
            f"--api=http://127.0.0.1:{free_port()}",
            f"--out={tmp_path}",
            "--connect-wait=1",
        ],
        capture_output=True,
        text=True,
        check=False,
        timeout=30,
    )
    assert result.returncode == 1
    assert not list(tmp_path.iterdir())


def test_snapshot_retries_until_the_api_answers(tmp_path: Path) -> None:
    """A refused first connection (a NetworkPolicy not yet programmed) is retried."""
    port = free_port()
    routes = {
        "/api/polls": {"polls": [{"id": "default"}]},
        "/api/polls/default/results": {"poll": "default", "counts": {"a": 1}, "total": 1},
    }
    snapshot = subprocess.Popen(
        [
            sys.executable,
            str(SCRIPTS / "snapshot_results.py"),
            f"--api=http://127.0.0.1:{port}",
            f"--out={tmp_path}",
            "--connect-wait=20",
        ],
        stderr=subprocess.DEVNULL,
    )
    try:
        time.sleep(2)  # refused meanwhile: nothing listens yet
        assert snapshot.poll() is None, "gave up on the first refused connection"
        with json_server(routes, port=port):
            assert snapshot.wait(timeout=20) == 0
    finally:
        snapshot.kill()
        snapshot.wait()
    assert len(list(tmp_path.glob("results-*.json"))) == 1


def _minute(seconds_ago: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() - seconds_ago))


def test_log_shipper_moves_finished_minutes_and_ships_the_rest_on_sigterm(
    tmp_path: Path,
) -> None:
    """With the system's POSIX sh (dash here, as in the Debian nginx stand-in; the alpine
    image's busybox sh runs the same script)."""
    logs, archive = tmp_path / "logs", tmp_path / "archive"
    logs.mkdir()
    old, previous, current = _minute(600), _minute(60), _minute(0)
    for minute in (old, previous, current):
        (logs / f"access-{minute}.log").write_text(f'{{"minute":"{minute}"}}\n')
    command = ["sh", str(SCRIPTS / "ship-logs.sh")]
    env = {
        **os.environ,
        "LOG_DIR": str(logs),
        "ARCHIVE_DIR": str(archive),
        "SHIP_INTERVAL_SECONDS": "1",
        "ALIVE_FILE": str(tmp_path / "alive"),
    }
    with running(*command, env=env) as process:
        deadline = time.monotonic() + 10
        while (logs / f"access-{old}.log").exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        # The finished minute moved; the current and previous minutes stay until SIGTERM.
        assert not (logs / f"access-{old}.log").exists()
        assert (logs / f"access-{current}.log").exists()
        assert (tmp_path / "alive").exists()
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=10)
    assert process.returncode == 0, output
    assert list(logs.iterdir()) == []
    shipped = "".join(p.read_text() for p in sorted(archive.glob("access-*.log")))
    for minute in (old, previous, current):
        assert f'"minute":"{minute}"' in shipped
