"""Logging set-up (``runtime.logs``): text lines for people, JSON objects for collectors,
on stderr, at the level asked for."""

from __future__ import annotations

import json
import logging
import re
import sys
from collections.abc import Iterator

import pytest

from edgerq.runtime.logs import JsonFormatter, setup_logging

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} (?P<rest>.*)")
TS = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``setup_logging`` replaces the root's handlers and level and turns off what
    records gather; put it all back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    gathered = (
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
        logging._srcfile,
    )
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    (
        logging.logThreads,
        logging.logProcesses,
        logging.logMultiprocessing,
        logging._srcfile,
    ) = gathered


def emit_all(name: str = "edgerq.sc") -> None:
    log = logging.getLogger(name)
    log.debug("debug %d", 1)
    log.info("info %d", 2)
    log.warning("warning %d", 3)
    log.error("error %d", 4)


def text_lines(err: str) -> list[str]:
    """The lines of ``err`` without their timestamps (checked on the way)."""
    rests = []
    for line in err.splitlines():
        match = TEXT_LINE.fullmatch(line)
        assert match is not None, line
        rests.append(match["rest"])
    return rests


def test_text_lines_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    emit_all()
    out, err = capsys.readouterr()
    assert out == ""
    assert text_lines(err) == [
        "INFO    edgerq.sc: info 2",
        "WARNING edgerq.sc: warning 3",
        "ERROR   edgerq.sc: error 4",
    ]


def test_defaults_are_text_at_info(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging()
    emit_all("edgerq.sp")
    assert text_lines(capsys.readouterr().err)[0] == "INFO    edgerq.sp: info 2"


@pytest.mark.parametrize(
    ("level", "shown"),
    [
        ("debug", ["debug 1", "info 2", "warning 3", "error 4"]),
        ("info", ["info 2", "warning 3", "error 4"]),
        ("warning", ["warning 3", "error 4"]),
        ("error", ["error 4"]),
    ],
)
def test_only_messages_at_the_level_or_above(
    level: str, shown: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    setup_logging(level, "text")
    emit_all()
    assert [line.split(": ", 1)[1] for line in text_lines(capsys.readouterr().err)] == shown
    assert logging.getLogger().level == getattr(logging, level.upper())


def test_json_lines_one_object_each(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("warning", "json")
    emit_all("edgerq.relay")
    entries = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    assert [list(e) for e in entries] == [["ts", "level", "logger", "msg"]] * 2
    assert [(e["level"], e["logger"], e["msg"]) for e in entries] == [
        ("warning", "edgerq.relay", "warning 3"),
        ("error", "edgerq.relay", "error 4"),
    ]
    assert all(TS.fullmatch(e["ts"]) for e in entries)


def test_json_carries_the_traceback_and_any_text_as_it_is(
    capsys: pytest.CaptureFixture[str],
) -> None:
    setup_logging("info", "json")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("edgerq").exception("reload failed for café")
    (line,) = capsys.readouterr().err.splitlines()
    assert "café" in line  # not \u00e9
    entry = json.loads(line)
    assert entry["msg"] == "reload failed for café" and entry["level"] == "error"
    assert entry["exc"].startswith("Traceback (most recent call last):")
    assert entry["exc"].endswith("ValueError: boom")


def test_json_time_is_utc_with_milliseconds() -> None:
    record = logging.LogRecord("edgerq.sc", logging.INFO, "", 0, "m %s", ("x",), None)
    record.created, record.msecs = 1700000000.123, 123.0
    assert json.loads(JsonFormatter().format(record)) == {
        "ts": "2023-11-14T22:13:20.123Z",
        "level": "info",
        "logger": "edgerq.sc",
        "msg": "m x",
    }


def test_one_handler_however_often_it_is_set_up(capsys: pytest.CaptureFixture[str]) -> None:
    setup_logging("info", "text")
    setup_logging("info", "json")
    root = logging.getLogger()
    assert len(root.handlers) == 1
    (handler,) = root.handlers
    assert isinstance(handler, logging.StreamHandler) and handler.stream is sys.stderr
    assert isinstance(handler.formatter, JsonFormatter)
    logging.getLogger("edgerq").info("once")
    assert len(capsys.readouterr().err.splitlines()) == 1


def test_records_gather_no_thread_process_or_source_line() -> None:
    setup_logging("info", "text")
    record = logging.getLogger("edgerq").makeRecord(
        "edgerq", logging.INFO, "(unknown file)", 0, "m", (), None
    )
    assert (record.thread, record.threadName, record.process) == (None, None, None)
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    keep = Keep()
    logging.getLogger().addHandler(keep)
    logging.getLogger("edgerq").info("where")
    (kept,) = records
    assert (kept.pathname, kept.lineno, kept.funcName) == (
        "(unknown file)",
        0,
        "(unknown function)",
    )
