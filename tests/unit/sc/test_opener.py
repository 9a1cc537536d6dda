"""The SC's line per client connection: an access log users turn on, not a cost
they pay by default. Failures and refusals are logged either way."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest

from edgerq.config import load_consumer
from edgerq.labels import Outcome
from edgerq.runtime.metrics import Metrics
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sc.opener import ClientOpener
from edgerq.sc.registry import ServiceRegistry

UUID = "11111111-2222-3333-4444-555555555555"


def config(tmp_path: Path, root: str = "") -> Path:
    path = tmp_path / "consumer.xml"
    path.write_text(
        f"<service_consumer>{root}<listener><port>9000</port></listener><services>"
        f"<service><uuid>{UUID}</uuid><name>web</name><port>9001</port></service>"
        "</services></service_consumer>"
    )
    return path


def test_off_by_default_and_turned_on_in_the_file(tmp_path: Path) -> None:
    assert load_consumer(config(tmp_path), env={}).access_log is False
    on = load_consumer(config(tmp_path, "<access_log>yes</access_log>"), env={})
    assert on.access_log is True


def end_one(tmp_path: Path, caplog: pytest.LogCaptureFixture, root: str, outcome: str) -> Metrics:
    """One client connection that ended with ``outcome``, through a real opener."""
    cfg = load_consumer(config(tmp_path, root), env={})
    metrics = Metrics()
    opener = ClientOpener(cfg.services, ServiceRegistry(), metrics, access_log=cfg.access_log)
    conn = opener.new_client(cfg.services[0])
    conn.peer = "192.0.2.7:40000"
    conn.outcome = outcome
    conn.outcome_kind = Outcome.OK if outcome == "ok" else Outcome.BAD_GATEWAY
    caplog.set_level(logging.DEBUG, logger="edgerq.sc")
    opener.connection_done(conn)
    return metrics


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if "client 192.0.2.7" in r.message]


def test_a_connection_that_ended_well_is_a_debug_line_by_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = end_one(tmp_path, caplog, "", "ok")
    [(level, text)] = lines(caplog)
    assert level == logging.DEBUG
    assert "service 'web'" in text and text.endswith(": ok")
    # the metric counts it all the same (as a scrape sees it: after a refresh)
    metrics.refresh()
    assert (
        metrics.registry.get_sample_value(
            "edgerq_streams_total", {"service": "web", "outcome": "ok"}
        )
        == 1.0
    )


def test_the_access_log_makes_it_an_info_line(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    end_one(tmp_path, caplog, "<access_log>yes</access_log>", "ok")
    [(level, _)] = lines(caplog)
    assert level == logging.INFO


@pytest.mark.parametrize("root", ["", "<access_log>yes</access_log>"])
def test_a_failed_connection_is_a_warning_either_way(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, root: str
) -> None:
    end_one(tmp_path, caplog, root, "502 service 'web' unreachable: connection refused")
    [(level, text)] = lines(caplog)
    assert level == logging.WARNING
    assert "unreachable" in text


def test_nothing_is_formatted_when_the_line_would_not_be_emitted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    cfg = load_consumer(config(tmp_path), env={})
    opener = ClientOpener(cfg.services, ServiceRegistry(), Metrics())
    conn = opener.new_client(cfg.services[0])
    conn.outcome = "ok"
    opener.connection_done(conn)
    assert lines(caplog) == []


def test_a_reload_turns_the_access_log_on_and_off(tmp_path: Path) -> None:
    async def body() -> None:
        sc = ServiceConsumer(load_consumer(config(tmp_path), env={}))
        assert sc.opener.access_log is False
        await sc.reload(load_consumer(config(tmp_path, "<access_log>yes</access_log>"), env={}))
        assert sc.opener.access_log is True
        await sc.reload(load_consumer(config(tmp_path), env={}))
        assert sc.opener.access_log is False

    asyncio.run(body())
