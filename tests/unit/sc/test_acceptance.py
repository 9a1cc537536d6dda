"""``PipeAcceptance``, the SC's ``ConsumerOwner``: the settings new pipes get, admission
through the gate, REGISTER, a reload's new token and limits, and what a pipe's close
withdraws. Real pipes joined by the memory carrier where a pipe must run; a
``FakePipe`` where only its name and address are read."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import cast

import pytest

from edgerq.carriers import memory
from edgerq.carriers.tcp import TcpPipe
from edgerq.config.model import ConsumerConfig, ConsumerService, ListenerConfig, PipeLimits, Secret
from edgerq.labels import Limit
from edgerq.pipe.interface import MuxPipe, Role
from edgerq.pipe.settings import PipeSettings
from edgerq.protocol.messages import GoawayCode, Register, RegisterStatus
from edgerq.runtime.metrics import Metrics
from edgerq.sc.acceptance import PipeAcceptance
from edgerq.sc.registry import ServiceRegistry
from tests.unit.fakes import FakePipe, Owner, until

WEB = ConsumerService(uuid.UUID(int=0xA1), "web", 0)
DB = ConsumerService(uuid.UUID(int=0xB2), "db", 0)
UNKNOWN = uuid.UUID(int=0xC3)


def config(
    token: str | None = "t",
    limits: PipeLimits | None = None,
    services: tuple[ConsumerService, ...] = (WEB,),
) -> ConsumerConfig:
    return ConsumerConfig(
        path=Path("consumer.xml"),
        listeners=(ListenerConfig(port=0),),
        services=services,
        auth_token=Secret(token) if token is not None else None,
        token_source="config" if token is not None else "none",
        limits=limits or PipeLimits(),
    )


def acceptance(
    cfg: ConsumerConfig | None = None, clock: Callable[[], float] = time.monotonic
) -> PipeAcceptance:
    cfg = cfg or config()
    services = {s.uuid: s for s in cfg.services}
    return PipeAcceptance(cfg, services, ServiceRegistry(clock), Metrics(), clock)


def sample(sc: PipeAcceptance, name: str, labels: dict[str, str] | None = None) -> float:
    value = sc.metrics.registry.get_sample_value(name, labels or {})
    return 0.0 if value is None else value


class Provider(Owner):
    """An SP's end of a pipe that offers ``uuids`` once authenticated (as
    ``ProviderPipe`` does), and records what the SC answers."""

    def __init__(self, uuids: Sequence[uuid.UUID], token: bytes | None = b"t") -> None:
        super().__init__(PipeSettings(Role.PROVIDER, token, "sp1"))
        self.uuids = tuple(uuids)

    def pipe_authenticated(self, pipe: MuxPipe) -> None:
        super().pipe_authenticated(pipe)
        pipe.send_raw(Register(self.uuids).encode())


async def registered(
    sc: PipeAcceptance, uuids: Sequence[uuid.UUID], token: bytes | None = b"t"
) -> tuple[TcpPipe, TcpPipe, Provider]:
    """A pipe from an SP offering ``uuids``, up and answered: (SC's end, SP's end, SP)."""
    sp = Provider(uuids, token)
    sc_pipe, sp_pipe = memory.connect_pair(sc, sp)
    await until(lambda: len(sp.registered) == len(uuids))
    return sc_pipe, sp_pipe, sp


# --- what new pipes are built with ---------------------------------------------------


def test_new_pipes_get_the_token_and_the_limits() -> None:
    limits = PipeLimits(handshake_timeout=3.5, control_backlog=4096, pipe_buffer=123456)
    settings = acceptance(config(token="s3cret", limits=limits)).pipe_settings()
    assert settings == PipeSettings(
        Role.CONSUMER,
        b"s3cret",
        handshake_timeout=3.5,
        control_backlog=4096,
        pipe_buffer=123456,
    )
    assert settings.token == b"s3cret"  # compared too, though never printed


def test_without_a_token_new_pipes_authenticate_nothing() -> None:
    settings = acceptance(config(token=None)).pipe_settings()
    assert settings.role is Role.CONSUMER and settings.token is None
    assert str(settings).startswith("consumer pipe: no token")


def test_a_created_pipe_is_one_of_the_pipes() -> None:
    sc = acceptance()
    pipe = cast(MuxPipe, FakePipe())
    sc.pipe_created(pipe)
    assert sc.pipes == {pipe}


def test_pipes_are_admitted_through_the_gate(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    sc = acceptance(config(limits=PipeLimits(unauthenticated_pipes=1)))
    first = cast(MuxPipe, FakePipe(peer="127.0.0.1:1"))
    second = cast(MuxPipe, FakePipe(peer="127.0.0.1:2"))
    assert sc.pipe_admit(first) is None
    refusal = sc.pipe_admit(second)
    assert refusal is not None and refusal.code is GoawayCode.LIMIT_EXCEEDED
    assert refusal.reason == "too many pipes are authenticating; try again later"
    assert sc.gate.unauthenticated == {first}
    assert sample(sc, "edgerq_limit_hits_total", {"limit": "unauthenticated_pipes"}) == 1
    sc.pipe_created(second)
    sc.pipe_closed(second, "refused")
    assert sc.pipes == set()
    # Counted by the gate, which logged the cap once; not logged per refused pipe.
    assert [r.name for r in caplog.records] == ["edgerq.limits"]


def test_a_limit_a_pipe_enforced_is_counted() -> None:
    sc = acceptance()
    sc.pipe_limit_hit(Limit.PINGS)
    sc.pipe_limit_hit(Limit.PINGS)
    assert sample(sc, "edgerq_limit_hits_total", {"limit": "pings"}) == 2


# --- REGISTER --------------------------------------------------------------------------


def test_register_accepts_configured_services_and_names_the_unknown(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    sc = acceptance(config(services=(WEB, DB)))
    pipe = cast(MuxPipe, FakePipe(name="sp1"))
    results = sc.pipe_register(pipe, [WEB.uuid, UNKNOWN, DB.uuid])
    assert results == [
        (WEB.uuid, RegisterStatus.ACCEPTED),
        (UNKNOWN, RegisterStatus.UNKNOWN_SERVICE),
        (DB.uuid, RegisterStatus.ACCEPTED),
    ]
    assert sc.registry.pipes_for(WEB.uuid) == [pipe] == sc.registry.pipes_for(DB.uuid)
    assert sc.registry.pipes_for(UNKNOWN) == []
    assert sample(sc, "edgerq_registrations_total", {"result": "accepted"}) == 2
    assert sample(sc, "edgerq_registrations_total", {"result": "unknown"}) == 1
    messages = [(r.levelno, r.getMessage()) for r in caplog.records]
    assert messages == [
        (
            logging.INFO,
            f"{pipe}: registered service 'web' ({WEB.uuid}), 1 pipe(s) now serve it",
        ),
        (
            logging.WARNING,
            f"{pipe}: SP offers service {UNKNOWN}, which this SC does not configure",
        ),
        (
            logging.INFO,
            f"{pipe}: registered service 'db' ({DB.uuid}), 1 pipe(s) now serve it",
        ),
    ]


def test_a_second_pipe_for_a_service_is_counted_in_the_line(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    sc = acceptance()
    first, second = cast(MuxPipe, FakePipe(name="a")), cast(MuxPipe, FakePipe(name="b"))
    sc.pipe_register(first, [WEB.uuid])
    sc.pipe_register(second, [WEB.uuid])
    assert sc.registry.pipes_for(WEB.uuid) == [first, second]
    assert caplog.records[-1].getMessage().endswith("2 pipe(s) now serve it")


def test_an_sp_registers_over_a_real_pipe_and_hears_the_answers() -> None:
    async def scenario() -> None:
        sc = acceptance()
        sc_pipe, sp_pipe, sp = await registered(sc, [WEB.uuid, UNKNOWN])
        assert sp.registered == [
            (WEB.uuid, RegisterStatus.ACCEPTED),
            (UNKNOWN, RegisterStatus.UNKNOWN_SERVICE),
        ]
        assert sc.registry.pipes_for(WEB.uuid) == [sc_pipe]
        assert sc.pipes == {sc_pipe} and sc_pipe.authenticated and sc_pipe.name == "sp1"
        assert sample(sc, "edgerq_pipes_connected", {"carrier": "tcp", "sp": "sp1"}) == 1
        assert sc.gate.unauthenticated == set()
        sp_pipe.close(reason="done")
        await sc_pipe.closed

    asyncio.run(scenario())


# --- a pipe's close -------------------------------------------------------------------------


def test_a_closed_pipe_withdraws_its_services(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")

    async def scenario() -> None:
        sc = acceptance(config(services=(WEB, DB)))
        sc_pipe, sp_pipe, _ = await registered(sc, [WEB.uuid, DB.uuid])
        other, _, _ = await registered(sc, [DB.uuid])
        sp_pipe.close(reason="done here")
        assert await sc_pipe.closed == "SP closed the pipe: done here"
        assert sc.registry.pipes_for(WEB.uuid) == []
        assert sc.registry.pipes_for(DB.uuid) == [other]  # still served by the other SP
        assert sc.pipes == {other}
        assert sample(sc, "edgerq_pipes_connected", {"carrier": "tcp", "sp": "sp1"}) == 1
        [line] = [r.getMessage() for r in caplog.records if "closed after" in r.getMessage()]
        assert line.startswith(f"{sc_pipe} closed after ")
        assert line.endswith(
            " s, 0 stream(s): SP closed the pipe: done here; services withdrawn: web, db"
        )

    asyncio.run(scenario())


def test_a_pipe_that_never_authenticated_is_a_warning_and_a_counted_failure(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")

    async def scenario() -> None:
        sc = acceptance(config(token="right"))
        sp = Provider([WEB.uuid], token=b"wrong")
        sc_pipe, _ = memory.connect_pair(sc, sp)
        reason = await sc_pipe.closed
        assert sc.pipes == set() and sc.registry.pipes_for(WEB.uuid) == []
        assert sample(sc, "edgerq_auth_failures_total") == 1
        assert sp.registered == [] and sc_pipe.authenticated is False
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == [f"{sc_pipe} closed before authenticating: {reason}"]

    asyncio.run(scenario())


# --- a reload ------------------------------------------------------------------------------


def test_a_new_token_is_for_new_pipes_and_pipes_up_stay_up(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")

    async def scenario() -> None:
        sc = acceptance(config(token="old"))
        old_pipe, _, _ = await registered(sc, [WEB.uuid], token=b"old")
        sc.reconfigure(config(token="new"))
        assert sc.pipe_settings().token == b"new" and sc.token_source == "config"
        assert not old_pipe.closing and sc.registry.pipes_for(WEB.uuid) == [old_pipe]
        new_pipe, _, sp = await registered(sc, [WEB.uuid], token=b"new")
        assert sp.registered == [(WEB.uuid, RegisterStatus.ACCEPTED)]
        assert sc.registry.pipes_for(WEB.uuid) == [old_pipe, new_pipe]
        stale = Provider([WEB.uuid], token=b"old")
        refused, _ = memory.connect_pair(sc, stale)
        await refused.closed
        assert stale.registered == [] and sample(sc, "edgerq_auth_failures_total") == 1
        messages = [r.getMessage() for r in caplog.records]
        assert "reload: new pipes authenticate with the new token; pipes up stay up" in messages
        assert "SP authentication required (token from config)" in messages

    asyncio.run(scenario())


def test_new_limits_apply_to_the_pipes_up_and_to_the_gate(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")

    async def scenario() -> None:
        sc = acceptance()
        pipe, _, _ = await registered(sc, [WEB.uuid])
        before = pipe.status()
        limits = PipeLimits(control_backlog=2048, pipe_buffer=777777, unauthenticated_pipes=3)
        sc.reconfigure(config(limits=limits))
        after = pipe.status()
        assert (after.control_backlog, after.pipe_buffer) == (2048, 777777)
        assert after.max_streams == before.max_streams  # the SC's pipes keep theirs
        assert sc.gate.limits == limits and sc.limits == limits
        settings = sc.pipe_settings()
        assert (settings.control_backlog, settings.pipe_buffer) == (2048, 777777)
        [line] = [r.getMessage() for r in caplog.records if "new limits" in r.getMessage()]
        assert "(the last two to the 1 pipe(s) up too)" in line
        assert not pipe.closing

    asyncio.run(scenario())


def test_a_reload_without_changes_says_nothing(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    sc = acceptance()
    sc.reconfigure(config())
    assert caplog.records == []
    assert sc.pipe_settings() == acceptance().pipe_settings()


def test_a_service_a_reload_adds_is_registered_on_the_pipes_that_offered_it() -> None:
    async def scenario() -> None:
        sc = acceptance()
        pipe, _, sp = await registered(sc, [WEB.uuid, DB.uuid])
        assert sp.registered[-1] == (DB.uuid, RegisterStatus.UNKNOWN_SERVICE)
        sc.services = {WEB.uuid: WEB, DB.uuid: DB}  # what the daemon's reload does
        sc.adopt_offers(DB)
        assert sc.registry.pipes_for(DB.uuid) == [pipe]
        sc.announce_registrations([], [DB])
        await until(lambda: len(sp.registered) == 4)
        assert sp.registered[2:] == [
            (WEB.uuid, RegisterStatus.ACCEPTED),
            (DB.uuid, RegisterStatus.ACCEPTED),
        ]

    asyncio.run(scenario())


def test_the_sps_of_a_service_a_reload_removes_are_told() -> None:
    async def scenario() -> None:
        sc = acceptance(config(services=(WEB, DB)))
        _, _, offers_both = await registered(sc, [WEB.uuid, DB.uuid])
        _, _, offers_web = await registered(sc, [WEB.uuid])
        sc.services = {WEB.uuid: WEB}
        sc.announce_registrations([DB], [])
        await until(lambda: len(offers_both.registered) == 4)
        assert offers_both.registered[2:] == [
            (WEB.uuid, RegisterStatus.ACCEPTED),
            (DB.uuid, RegisterStatus.UNKNOWN_SERVICE),
        ]
        for _ in range(100):  # loop turns, no timer: what was sent with the other has arrived
            await asyncio.sleep(0)
        assert offers_web.registered == [(WEB.uuid, RegisterStatus.ACCEPTED)]  # not told

    asyncio.run(scenario())


# --- draining, and an SP that restarted ------------------------------------------------------


def test_a_draining_sc_closes_pipes_as_they_authenticate() -> None:
    async def scenario() -> None:
        sc = acceptance()
        sc.draining = True
        sp = Provider([WEB.uuid])
        sc_pipe, sp_pipe = memory.connect_pair(sc, sp)
        assert await sp_pipe.closed == "SC closed the pipe: SC is shutting down"
        await sc_pipe.closed
        assert sp.registered == [] and sc.registry.pipes_for(WEB.uuid) == []

    asyncio.run(scenario())


def test_the_silent_pipe_of_an_sp_that_restarted_is_closed(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SC's clock runs 10 s ahead of when the old pipe was last heard from: the
    new pipe of the same name from the same address supersedes it at once."""
    caplog.set_level(logging.WARNING, logger="edgerq.sc")

    async def scenario() -> None:
        sc = acceptance(clock=lambda: time.monotonic() + 10.0)
        old, _, _ = await registered(sc, [WEB.uuid])
        new, _, _ = await registered(sc, [WEB.uuid])
        reason = await asyncio.wait_for(old.closed, 5)
        assert reason.startswith(f"superseded by {new} from the same SP, silent for ")
        assert not new.closing and sc.registry.pipes_for(WEB.uuid) == [new]
        [line] = [r.getMessage() for r in caplog.records if "superseded" in r.getMessage()]
        assert line.startswith(f"{old}: superseded by {new}")
        assert line.endswith(" s; closing (its SP restarted)")

    asyncio.run(scenario())
