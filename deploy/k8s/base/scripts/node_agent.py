"""The node agent (WL-04): this node's load, memory and CPU time as Prometheus text.

    python node_agent.py --listen=0.0.0.0:9100

One copy runs on every node (a DaemonSet). /proc/loadavg, /proc/meminfo and /proc/stat
are not namespaced, so even an unprivileged container reads the node's values there. Each
series carries the node's name (NODE_NAME, from the downward API). GET /metrics answers
the text exposition format, GET /healthz the agent's own liveness. Standard library only:
it runs on the worker image's Python (deploy/k8s/base/node-agent.yaml).
"""

from __future__ import annotations

import argparse
import json
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# /proc/stat counts CPU time in clock ticks; USER_HZ is 100 on every Linux we run on.
TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
MEMINFO_FIELDS = {
    "MemTotal": "cloudvote_node_memory_total_bytes",
    "MemAvailable": "cloudvote_node_memory_available_bytes",
    "SwapTotal": "cloudvote_node_swap_total_bytes",
    "SwapFree": "cloudvote_node_swap_free_bytes",
}
CPU_MODES = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def collect(proc: Path, node: str) -> str:
    """Read the three /proc files under `proc` and render them; a missing file is skipped."""
    node_label = f'node="{_label(node)}"'
    lines: list[str] = []

    def series(name: str, kind: str, text: str, samples: list[tuple[str, float]]) -> None:
        lines.extend([f"# HELP {name} {text}", f"# TYPE {name} {kind}"])
        for labels, value in samples:
            lines.append(f"{name}{{{labels}}} {value:g}")

    try:
        one, five, fifteen = (float(v) for v in (proc / "loadavg").read_text().split()[:3])
        for window, value in (("1m", one), ("5m", five), ("15m", fifteen)):
            series(
                f"cloudvote_node_load{window[:-1]}",
                "gauge",
                f"Run-queue load average over {window}",
                [(node_label, value)],
            )
    except (OSError, ValueError):
        pass

    try:
        meminfo = {}
        for line in (proc / "meminfo").read_text().splitlines():
            key, _, rest = line.partition(":")
            parts = rest.split()
            if parts:
                meminfo[key] = float(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
        for key, name in MEMINFO_FIELDS.items():
            if key in meminfo:
                series(name, "gauge", f"{key} from /proc/meminfo", [(node_label, meminfo[key])])
    except (OSError, ValueError):
        pass

    try:
        for line in (proc / "stat").read_text().splitlines():
            fields = line.split()
            if fields and fields[0] == "cpu":
                samples = [
                    (f'{node_label},mode="{mode}"', int(ticks) / TICKS_PER_SECOND)
                    for mode, ticks in zip(CPU_MODES, fields[1:], strict=False)
                ]
                series(
                    "cloudvote_node_cpu_seconds_total",
                    "counter",
                    "CPU time spent in each mode, all CPUs together",
                    samples,
                )
                break
    except (OSError, ValueError):
        pass
    return "\n".join(lines) + "\n"


def make_handler(proc: Path, node: str) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._answer(200, collect(proc, node), CONTENT_TYPE)
            elif self.path == "/healthz":
                self._answer(200, "ok\n", "text/plain; charset=utf-8")
            else:
                self._answer(404, "not found: try /metrics\n", "text/plain; charset=utf-8")

        def _answer(self, status: int, body: str, content_type: str) -> None:
            data = body.encode()
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: object) -> None:
            return

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="0.0.0.0:9100", help="host:port to serve on")
    parser.add_argument("--proc", type=Path, default=Path("/proc"), help="where /proc is")
    args = parser.parse_args(argv)
    node = os.environ.get("NODE_NAME", "unknown")
    host, _, port = args.listen.rpartition(":")
    server = ThreadingHTTPServer((host, int(port)), make_handler(args.proc, node))
    print(json.dumps({"event": "node_agent.listening", "listen": args.listen, "node": node}))
    server.serve_forever()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
