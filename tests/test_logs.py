"""Structured logs: JSON lines carry the message, level and extra fields."""

from __future__ import annotations

import json
import logging

from urbanhub.logs import JsonFormatter


def test_json_formatter_keeps_extra_fields_and_exceptions() -> None:
    record = logging.LogRecord("urbanhub.ingest", logging.WARNING, __file__, 1,
                               "batch %s rejected", ("b1",), None)
    record.readings = 42
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "batch b1 rejected"
    assert line["level"] == "warning"
    assert line["logger"] == "urbanhub.ingest"
    assert line["readings"] == 42
    assert line["time"].endswith("+00:00")
    try:
        raise ValueError("boom")
    except ValueError:
        import sys

        failed = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    assert "ValueError: boom" in json.loads(JsonFormatter().format(failed))["exception"]
