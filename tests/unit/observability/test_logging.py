"""One JSON object per log line, with the `extra=` fields as data."""

from __future__ import annotations

import json
import logging
import sys

from cloudvote.observability.logging import JsonFormatter


def _record(**extra: object) -> logging.LogRecord:
    record = logging.makeLogRecord({"name": "cloudvote.vote", "levelno": 20, "levelname": "INFO"})
    record.msg = "vote.accepted"
    record.created = 1_700_000_000.25
    record.msecs = 250.0
    record.__dict__.update(extra)
    return record


def test_a_line_is_json_with_time_level_service_event_logger_and_the_extra_fields() -> None:
    line = JsonFormatter("vote").format(_record(poll="default", votes=3))

    assert json.loads(line) == {
        "ts": "2023-11-14T22:13:20.250Z",
        "level": "info",
        "service": "vote",
        "event": "vote.accepted",
        "logger": "cloudvote.vote",
        "poll": "default",
        "votes": 3,
    }
    assert "\n" not in line


def test_an_exception_is_one_field_and_values_json_cannot_hold_become_text() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        record = _record(path=object.__new__(object))
        record.exc_info = sys.exc_info()

    entry = json.loads(JsonFormatter("worker").format(record))
    assert entry["exception"].endswith("ValueError: boom")
    assert entry["path"].startswith("<object object")
