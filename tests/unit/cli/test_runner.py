"""Running a daemon (``cli.runner``): the ready line on stdout, and SIGHUP's reloads, one
at a time, an invalid file refused with the running configuration kept."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest

from edgerq.cli.runner import READY_PREFIX, Reloader, announce_ready, install_uvloop, make_daemon
from edgerq.config.model import ConsumerConfig, ListenerConfig, ProviderConfig
from edgerq.errors import ConfigError
from edgerq.runtime.daemon import Daemon
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider


@dataclass(frozen=True)
class Config:
    path: Path
    shutdown_grace: float = 1.0


class FakeDaemon:
    """A ``Daemon`` whose reload reads its file and applies what it says: ``invalid``
    is refused (``ConfigError``), ``oserror`` cannot bind, ``crash`` is a bug;
    anything else is applied. Each reload waits for ``proceed`` once it has read."""

    def __init__(self, path: Path) -> None:
        self.config = Config(path)
        self.applied: list[str] = []
        self.read: list[str] = []
        self.running = 0
        self.most_at_once = 0
        self.proceed = asyncio.Event()
        self.proceed.set()

    async def start(self) -> None:
        pass

    async def reload_file(self) -> None:
        self.running += 1
        self.most_at_once = max(self.most_at_once, self.running)
        try:
            text = self.config.path.read_text()
            self.read.append(text)
            await self.proceed.wait()
            if text == "invalid":
                raise ConfigError(f"{self.config.path}:1: not well-formed XML")
            if text == "oserror":
                raise OSError(98, "cannot listen: address already in use")
            if text == "crash":
                raise RuntimeError("a bug")
            self.applied.append(text)
        finally:
            self.running -= 1

    async def drain(self, grace: float) -> None:
        pass

    async def stop(self) -> None:
        pass

    def bound(self) -> dict[str, Any]:
        return {"role": "sc", "config": self.applied[-1] if self.applied else None}


def daemon(tmp_path: Path, text: str = "v1") -> FakeDaemon:
    path = tmp_path / "consumer.xml"
    path.write_text(text)
    fake = FakeDaemon(path)
    typed: Daemon = fake  # mypy: the fake is a Daemon as the runner sees one
    assert typed.config.path == path
    return fake


def ready_lines(out: str) -> list[dict[str, Any]]:
    assert all(line.startswith(READY_PREFIX) for line in out.splitlines())
    return [json.loads(line.removeprefix(READY_PREFIX)) for line in out.splitlines()]


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]


async def until(condition: Any, turns: int = 1000) -> None:
    for _ in range(turns):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition not reached")


# --- the ready line --------------------------------------------------------------------


def test_the_ready_line_is_one_json_object_after_its_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    class Bound:
        def bound(self) -> dict[str, Any]:
            return {"role": "sc", "listeners": {"tcp": 40001}, "services": {}, "admin": None}

    announce_ready(cast(Any, Bound()))
    out = capsys.readouterr().out
    assert out.startswith(READY_PREFIX) and out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out.removeprefix(READY_PREFIX))["listeners"] == {"tcp": 40001}


def test_the_ready_line_sorts_its_keys(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = daemon(tmp_path)
    fake.applied.append("v1")
    announce_ready(fake)
    assert capsys.readouterr().out == 'EDGERQ_READY {"config": "v1", "role": "sc"}\n'


def test_a_closed_stdout_costs_the_ready_line_not_the_daemon(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="edgerq")
    closed = io.StringIO()
    closed.close()
    monkeypatch.setattr(sys, "stdout", closed)
    announce_ready(daemon(tmp_path))  # no exception
    [line] = [r.getMessage() for r in caplog.records if "ready line" in r.getMessage()]
    assert line == (
        "ready line not written (I/O operation on closed file): "
        'EDGERQ_READY {"config": null, "role": "sc"}'
    )


# --- the Reloader --------------------------------------------------------------------------


def test_a_reload_applies_the_file_and_announces_the_ports_again(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq")

    async def scenario() -> None:
        fake = daemon(tmp_path, "v2")
        reloads = Reloader(fake)
        reloads.request()
        await reloads.finish()
        assert fake.applied == ["v2"]

    asyncio.run(scenario())
    assert ready_lines(capsys.readouterr().out) == [{"role": "sc", "config": "v2"}]
    assert [r.getMessage() for r in caplog.records] == [
        f"SIGHUP: reloading {tmp_path / 'consumer.xml'}"
    ]


def test_one_reload_at_a_time_and_the_newest_file_once_after_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async def scenario() -> None:
        fake = daemon(tmp_path, "v1")
        fake.proceed.clear()
        reloads = Reloader(fake)
        reloads.request()
        await until(lambda: fake.read == ["v1"])  # the first reload is under way
        for text in ("v2", "v3", "v4"):  # three more SIGHUPs, the file edited each time
            fake.config.path.write_text(text)
            reloads.request()
        assert fake.running == 1
        fake.proceed.set()
        await reloads.finish()
        assert fake.read == ["v1", "v4"]  # v2 and v3 were never applied: v4 is the newest
        assert fake.applied == ["v1", "v4"]
        assert fake.most_at_once == 1

    asyncio.run(scenario())
    assert ready_lines(capsys.readouterr().out) == [
        {"role": "sc", "config": "v1"},
        {"role": "sc", "config": "v4"},
    ]


def test_a_request_after_a_reload_finished_starts_another(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = daemon(tmp_path, "v1")
        reloads = Reloader(fake)
        reloads.request()
        await reloads.finish()
        fake.config.path.write_text("v2")
        reloads.request()
        await reloads.finish()
        assert fake.applied == ["v1", "v2"]

    asyncio.run(scenario())


def test_an_invalid_file_is_refused_and_the_running_configuration_stays(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq")
    path = tmp_path / "consumer.xml"

    async def scenario() -> None:
        fake = daemon(tmp_path, "v1")
        reloads = Reloader(fake)
        reloads.request()
        await reloads.finish()
        path.write_text("invalid")
        reloads.request()
        await reloads.finish()
        assert fake.applied == ["v1"]
        path.write_text("v2")  # fixed: the next SIGHUP applies it
        reloads.request()
        await reloads.finish()
        assert fake.applied == ["v1", "v2"]

    asyncio.run(scenario())
    assert ready_lines(capsys.readouterr().out) == [
        {"role": "sc", "config": "v1"},
        {"role": "sc", "config": "v2"},
    ]  # none for the refused file
    assert errors(caplog) == [
        f"reload refused, the running configuration stays: {path}:1: not well-formed XML"
    ]


def test_an_invalid_file_during_a_reload_still_lets_the_newest_apply(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = daemon(tmp_path, "invalid")
        fake.proceed.clear()
        reloads = Reloader(fake)
        reloads.request()
        await until(lambda: fake.read == ["invalid"])
        fake.config.path.write_text("v2")
        reloads.request()
        fake.proceed.set()
        await reloads.finish()
        assert fake.applied == ["v2"]

    asyncio.run(scenario())


@pytest.mark.parametrize(
    ("text", "logged"),
    [
        (
            "oserror",
            "reload refused, the running configuration stays: cannot listen: "
            "address already in use",
        ),
        ("crash", "reload failed; the running configuration stays"),
    ],
)
def test_a_reload_that_cannot_be_applied_is_logged_and_the_daemon_goes_on(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    text: str,
    logged: str,
) -> None:
    async def scenario() -> None:
        fake = daemon(tmp_path, text)
        reloads = Reloader(fake)
        reloads.request()
        await reloads.finish()
        assert fake.applied == []

    asyncio.run(scenario())
    assert capsys.readouterr().out == ""
    assert errors(caplog) == [logged]
    if text == "crash":
        (record,) = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert record.exc_info is not None and str(record.exc_info[1]) == "a bug"


def test_finish_waits_for_the_reload_under_way(tmp_path: Path) -> None:
    async def scenario() -> None:
        fake = daemon(tmp_path, "v1")
        fake.proceed.clear()
        reloads = Reloader(fake)
        await reloads.finish()  # none yet: returns at once
        reloads.request()
        await until(lambda: fake.running == 1)
        finishing = asyncio.ensure_future(reloads.finish())
        await asyncio.sleep(0)
        assert not finishing.done()
        fake.proceed.set()
        await finishing
        assert fake.applied == ["v1"] and fake.running == 0

    asyncio.run(scenario())


# --- which daemon, on which loop ---------------------------------------------------------------


def test_make_daemon_runs_the_sc_or_the_sp_of_the_config() -> None:
    consumer = ConsumerConfig(path=Path("c.xml"), listeners=(ListenerConfig(port=0),))
    provider = ProviderConfig(path=Path("p.xml"))
    sc, sp = make_daemon(consumer), make_daemon(provider)
    assert isinstance(sc, ServiceConsumer) and sc.config is consumer
    assert isinstance(sp, ServiceProvider) and sp.config is provider


def test_install_uvloop_names_the_loop_it_installed() -> None:
    policy = asyncio.get_event_loop_policy()
    try:
        name = install_uvloop()
        try:
            import uvloop
        except ImportError:
            assert name == "asyncio" and asyncio.get_event_loop_policy() is policy
        else:
            assert name == "uvloop"
            assert isinstance(asyncio.get_event_loop_policy(), uvloop.EventLoopPolicy)
    finally:
        asyncio.set_event_loop_policy(policy)
