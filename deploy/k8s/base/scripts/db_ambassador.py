"""The worker pod's ambassador container (POD-07): a local endpoint for the database.

    python db_ambassador.py --listen=127.0.0.1:5432 --upstream=postgres:5432

The worker's DATABASE_URL says 127.0.0.1:5432, and this proxy, in the same pod, forwards
each connection to the real database. Only the ambassador knows where the database is:
moving it (another Service, a managed instance, a failover address) changes this
container's arguments and nothing in the app. On every new connection it resolves the
upstream name again, so a changed DNS answer is picked up without a restart, and it logs
one JSON line per connection (how long, how many bytes each way), which the app does not.

Production drop-ins for the same slot: pgbouncer (pooling) or the Cloud SQL Auth Proxy
(IAM login and TLS to Cloud SQL); the worker would not notice the swap.

It binds to loopback only, so nothing outside the pod can use it. Standard library only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
import time

CHUNK = 64 * 1024


def log(event: str, **fields: object) -> None:
    print(json.dumps({"event": event, **fields}, default=str), flush=True)


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> int:
    """Copy until EOF; returns the bytes copied. Half-closes the far side at EOF."""
    copied = 0
    try:
        while data := await reader.read(CHUNK):
            writer.write(data)
            await writer.drain()
            copied += len(data)
        if writer.can_write_eof():
            writer.write_eof()
    except (ConnectionError, OSError):
        pass
    return copied


class Ambassador:
    def __init__(self, upstream_host: str, upstream_port: int, connect_timeout: float) -> None:
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.connect_timeout = connect_timeout
        self.open_connections = 0

    async def handle(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        started = time.monotonic()
        try:
            # A fresh lookup per connection: no stale address after the database moves.
            upstream_r, upstream_w = await asyncio.wait_for(
                asyncio.open_connection(self.upstream_host, self.upstream_port),
                self.connect_timeout,
            )
        except (OSError, TimeoutError) as error:
            # Closing the client's socket makes the app's driver see a failed connect,
            # which it already handles (backoff and retry).
            log("ambassador.upstream_unreachable", upstream=self.target, error=str(error))
            client_w.close()
            return
        self.open_connections += 1
        peer = upstream_w.get_extra_info("peername")
        try:
            sent, received = await asyncio.gather(
                pipe(client_r, upstream_w), pipe(upstream_r, client_w)
            )
        finally:
            self.open_connections -= 1
            for writer in (upstream_w, client_w):
                writer.close()
                with contextlib.suppress(ConnectionError, OSError):
                    await writer.wait_closed()
        log(
            "ambassador.connection_closed",
            upstream=self.target,
            address=peer[0] if peer else None,
            seconds=round(time.monotonic() - started, 3),
            bytes_to_upstream=sent,
            bytes_from_upstream=received,
            open_connections=self.open_connections,
        )

    @property
    def target(self) -> str:
        return f"{self.upstream_host}:{self.upstream_port}"


def split_address(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected host:port, got {value!r}")
    return host, int(port)


async def serve(listen: tuple[str, int], ambassador: Ambassador) -> None:
    server = await asyncio.start_server(ambassador.handle, listen[0], listen[1])
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    log("ambassador.listening", listen=f"{listen[0]}:{listen[1]}", upstream=ambassador.target)
    async with server:
        await stop.wait()
    # As a native sidecar this runs after the worker has exited: nothing is left to drain.
    log("ambassador.stopping", open_connections=ambassador.open_connections)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", type=split_address, default=("127.0.0.1", 5432))
    parser.add_argument("--upstream", type=split_address, required=True)
    parser.add_argument("--connect-timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    ambassador = Ambassador(args.upstream[0], args.upstream[1], args.connect_timeout)
    try:
        asyncio.run(serve(args.listen, ambassador))
    except OSError as error:
        print(f"db_ambassador: cannot listen on {args.listen}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
