"""`cloudvote`: one command, one subcommand per shape and service.

cloudvote dev       the monolith: vote + result + worker in one process, SQLite
cloudvote vote      the vote service under gunicorn      (REDIS_URL)
cloudvote result    the result service under gunicorn    (DATABASE_URL)
cloudvote worker    the queue-to-store worker            (REDIS_URL, DATABASE_URL)
cloudvote migrate   create or upgrade the PostgreSQL schema (DATABASE_URL)
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
import tempfile
from collections.abc import Sequence

from cloudvote import __version__
from cloudvote.config import InvalidSetting, MissingSetting, Settings
from cloudvote.domain.polls import InvalidPollDefinition, PollCatalog
from cloudvote.observability.logging import configure_logging

# Nothing above imports prometheus-client. It picks its storage from the environment
# when first imported, so the modules that import it are imported only after
# _use_metrics_dir has run: the imports inside the functions below are deliberate.


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cloudvote", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--version", action="version", version=f"cloudvote {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    dev = commands.add_parser("dev", help="run the monolith (no Docker, Redis or PostgreSQL)")
    dev.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    dev.add_argument("--port", type=int, help="port (default $PORT or 5000)")
    dev.add_argument(
        "--data-dir", help="where the SQLite file lives (default ~/.local/share/cloudvote)"
    )

    for name, text in (
        ("vote", "run the vote service"),
        ("result", "run the result service"),
        ("worker", "run the worker"),
    ):
        service = commands.add_parser(name, help=text)
        service.add_argument(
            "--port", type=int, help="port (default $PORT, else 5000; worker 8080)"
        )

    migrate = commands.add_parser("migrate", help="create or upgrade the database schema")
    migrate.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for PostgreSQL to accept connections (default 60)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = Settings.from_env(service=args.command, port=getattr(args, "port", None))
        configure_logging(args.command, settings.log_level)
        return _run(args, settings)
    except (MissingSetting, InvalidSetting, InvalidPollDefinition) as error:
        print(f"cloudvote {args.command}: configuration error: {error}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    owns_metrics_dir = False
    if args.command in ("vote", "result") and not settings.metrics_dir:
        # Every server process then writes metrics where /metrics can add them up. The
        # server removes the directory when it exits (see ServiceServer).
        settings = settings.with_overrides(
            metrics_dir=tempfile.mkdtemp(prefix="cloudvote-metrics-")
        )
        owns_metrics_dir = True
    _use_metrics_dir(settings.metrics_dir)
    from cloudvote.bootstrap import load_catalog

    # Loaded once, here, so a broken polls file stops every service at start, not later.
    catalog = load_catalog(settings)
    if args.command == "dev":
        from cloudvote.entrypoints.monolith import run_monolith

        _announce_address(args.host, settings.port)
        return run_monolith(
            settings.with_overrides(data_dir=args.data_dir), host=args.host, catalog=catalog
        )
    if args.command in ("vote", "result"):
        return _serve(args.command, settings, catalog, owns_metrics_dir)
    if args.command == "worker":
        settings.require_redis_url()
        settings.require_database_url()
        from cloudvote.entrypoints.worker import run_worker

        return run_worker(settings, catalog=catalog)
    if args.command == "migrate":
        from cloudvote.adapters.postgres import conninfo_with_password, migrate

        url = conninfo_with_password(settings.require_database_url(), settings.database_password)
        applied = migrate(url, wait_seconds=args.wait)
        logging.getLogger("cloudvote.migrate").info(
            "migrate.done", extra={"applied": applied, "already_current": not applied}
        )
        return 0
    raise AssertionError(args.command)


def _use_metrics_dir(directory: str) -> None:
    """Hand the metrics directory to prometheus-client, which reads it from the
    environment when first imported (and so before any module that defines a metric)."""
    if directory:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory


def _announce_address(host: str, port: int) -> None:
    """Tell the person at the terminal which URL to open, once the monolith has bound its
    socket (its `monolith.listening` log line). On stderr: stdout stays JSON lines."""
    # A comparison, not a bind: was the server asked to listen on every interface?
    everywhere = host in ("0.0.0.0", "::", "")  # noqa: S104
    shown = "localhost" if everywhere or host == "127.0.0.1" else host
    url = f"http://{shown}:{port}"
    note = f", and on every interface at port {port}" if everywhere else ""

    class Announcer(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage() == "monolith.listening":
                print(
                    f"cloudvote dev: serving on {url}{note} (live results: {url}/results;"
                    " Ctrl-C stops)",
                    file=sys.stderr,
                    flush=True,
                )

    logging.getLogger("cloudvote.monolith").addHandler(Announcer(logging.INFO))


def _serve(service: str, settings: Settings, catalog: PollCatalog, owns_metrics_dir: bool) -> int:
    if service == "vote":
        settings.require_redis_url()
    else:
        settings.require_database_url()
    from cloudvote.entrypoints.server import ServiceServer
    from cloudvote.entrypoints.web.apps import create_result_app, create_vote_app

    factory = create_vote_app if service == "vote" else create_result_app
    app_factory = functools.partial(factory, catalog=catalog)
    ServiceServer(app_factory, settings, service, owns_metrics_dir=owns_metrics_dir).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
