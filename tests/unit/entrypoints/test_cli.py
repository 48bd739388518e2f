"""`cloudvote`'s argument handling and its failures, run in-process through main()."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from cloudvote import __version__
from cloudvote.entrypoints import cli


@pytest.fixture(autouse=True)
def root_logging() -> Iterator[None]:
    """main() points the root logger at this test's captured stdout; undo that after."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


@pytest.mark.parametrize(
    ("argv", "code", "out", "err"),
    [
        (["--version"], 0, f"cloudvote {__version__}\n", ""),
        ([], 2, "", "required"),
        (["worker", "--port", "eighty"], 2, "", "invalid int value"),
    ],
    ids=["version", "a-subcommand-is-required", "port-not-a-number"],
)
def test_the_parser_exits_at_once_with_its_code_and_its_words(
    capsys: pytest.CaptureFixture[str], argv: list[str], code: int, out: str, err: str
) -> None:
    with pytest.raises(SystemExit) as stopped:
        cli.main(argv)

    captured = capsys.readouterr()
    assert (stopped.value.code, captured.out) == (code, out)
    assert err in captured.err


@pytest.mark.parametrize(
    ("command", "variable"),
    [("worker", "REDIS_URL"), ("migrate", "DATABASE_URL")],
)
def test_a_missing_required_setting_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], command: str, variable: str
) -> None:
    for name in ("REDIS_URL", "DATABASE_URL", "CLOUDVOTE_POLLS_FILE", "PROMETHEUS_MULTIPROC_DIR"):
        monkeypatch.delenv(name, raising=False)

    assert cli.main([command]) == 2
    assert f"cloudvote {command}: configuration error: {variable} must be set" in (
        capsys.readouterr().err
    )


def test_a_setting_that_is_not_a_number_exits_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WORKER_BATCH_SIZE", "many")

    assert cli.main(["worker"]) == 2
    assert "WORKER_BATCH_SIZE must be an integer" in capsys.readouterr().err


def test_a_broken_polls_file_stops_the_service_at_start(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    polls = tmp_path / "polls.yaml"
    polls.write_text("polls: [{id: Not An Id}]\n")
    monkeypatch.setenv("CLOUDVOTE_POLLS_FILE", str(polls))
    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)

    assert cli.main(["worker"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("cloudvote worker: configuration error:")
    assert str(polls) in error


def test_a_bad_sampling_ratio_exits_2_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "1.5")

    assert cli.main(["vote"]) == 2
    assert "cloudvote vote: configuration error: OTEL_TRACES_SAMPLER_ARG must be a ratio" in (
        capsys.readouterr().err
    )


def test_the_monolith_announces_the_url_to_open_once_it_listens(
    capsys: pytest.CaptureFixture[str],
) -> None:
    cli._announce_address("0.0.0.0", 8080)
    logger = logging.getLogger("cloudvote.monolith")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    try:
        logger.info("monolith.starting")  # not yet listening: nothing said
        logger.info("monolith.listening")
    finally:
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True

    assert capsys.readouterr().err == (
        "cloudvote dev: serving on http://localhost:8080, and on every interface at port 8080"
        " (live results: http://localhost:8080/results; Ctrl-C stops)\n"
    )
