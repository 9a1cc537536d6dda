"""The SC daemon: ``/status`` and its parts (``pipe_entry``, ``count_drops``), the ports
it bound, a reload that adds, removes or moves a service port, and draining.

The real SC and SP run in one event loop, their pipe joined by the memory carrier;
clients and the echo service use loopback sockets on ports the kernel picks.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from pathlib import Path
from typing import Any

import pytest

from edgerq import __version__
from edgerq.carriers import PipeListener
from edgerq.config.model import (
    AdminConfig,
    ConsumerConfig,
    ConsumerService,
    ListenerConfig,
    PipeConfig,
    ProviderConfig,
    ProviderService,
    Secret,
)
from edgerq.pipe.events import State
from edgerq.pipe.status import PipeStatus
from edgerq.runtime.metrics import Metrics
from edgerq.sc.daemon import ServiceConsumer, count_drops, pipe_entry
from edgerq.sp.daemon import ServiceProvider
from tests.unit.carriers.test_memory import echo_service
from tests.unit.fakes import in_loop, until

ECHO = uuid.UUID(int=0xEC40)
ADDED = uuid.UUID(int=0xADD)


# --- pipe_entry and count_drops ----------------------------------------------------------


def status(**fields: Any) -> PipeStatus:
    values: dict[str, Any] = {
        "id": 7,
        "name": "sp1",
        "peer": "127.0.0.1:50001",
        "state": State.OPEN,
        "opened_at": 100.0,
        "last_heard": 111.0,
        "streams_open": 2,
        "streams_total": 9,
        "unknown_stream_frames": 0,
        "max_streams": 1000,
        "control_backlog": 1,
        "pipe_buffer": 1,
        "held": 0,
        "limit_violations": 0,
    }
    return PipeStatus(**{**values, **fields})


def test_pipe_entry_is_a_pipe_as_status_shows_it() -> None:
    assert pipe_entry("udp", status(), 112.34) == {
        "id": 7,
        "sp": "sp1",
        "peer": "127.0.0.1:50001",
        "carrier": "udp",
        "up_s": 12.3,
        "streams_open": 2,
        "streams_total": 9,
    }


def test_pipe_entry_rounds_the_age_to_a_tenth() -> None:
    assert pipe_entry("tcp", status(opened_at=10.0), 10.04)["up_s"] == 0.0
    assert pipe_entry("tcp", status(opened_at=10.0), 10.06)["up_s"] == 0.1


class Listener:
    """A pipe listener whose drop counts (totals since it started) the test sets."""

    def __init__(self) -> None:
        self.address = ("127.0.0.1", 0)
        self.totals: dict[str, int] = {}

    def dropped(self) -> Mapping[str, int]:
        return dict(self.totals)

    def close(self) -> None:
        pass


def dropped(metrics: Metrics, reason: str) -> float:
    value = metrics.registry.get_sample_value(
        "edgerq_udp_datagrams_dropped_total", {"reason": reason}
    )
    return 0.0 if value is None else value


def test_count_drops_adds_what_was_dropped_since_the_last_count() -> None:
    metrics, listener = Metrics(), Listener()
    counted: dict[PipeListener, dict[str, int]] = {}
    listener.totals = {"retry": 3, "not_quic": 0}
    count_drops(listener, counted, metrics)
    assert dropped(metrics, "retry") == 3 and dropped(metrics, "not_quic") == 0
    assert counted == {listener: {"retry": 3}}
    listener.totals = {"retry": 5, "not_quic": 2}
    count_drops(listener, counted, metrics)
    count_drops(listener, counted, metrics)  # nothing new: nothing added
    assert dropped(metrics, "retry") == 5 and dropped(metrics, "not_quic") == 2
    assert counted == {listener: {"retry": 5, "not_quic": 2}}


def test_count_drops_keeps_each_listener_apart() -> None:
    metrics, first, second = Metrics(), Listener(), Listener()
    counted: dict[PipeListener, dict[str, int]] = {}
    first.totals = {"retry": 4}
    second.totals = {"retry": 1}
    count_drops(first, counted, metrics)
    count_drops(second, counted, metrics)
    assert dropped(metrics, "retry") == 5
    second.totals = {"retry": 2}
    count_drops(first, counted, metrics)
    count_drops(second, counted, metrics)
    assert dropped(metrics, "retry") == 6
    assert counted == {first: {"retry": 4}, second: {"retry": 2}}


# --- the daemon over the memory carrier -----------------------------------------------------


def sc_config(
    *services: ConsumerService,
    grace: float = 30.0,
    admin: AdminConfig | None = None,
) -> ConsumerConfig:
    return ConsumerConfig(
        path=Path("memory-sc.xml"),
        listeners=(ListenerConfig(port=0, protocol="memory"),),  # type: ignore[arg-type]
        services=services,
        auth_token=Secret("t"),
        shutdown_grace=grace,
        admin=admin,
    )


def echo(port: int = 0) -> ConsumerService:
    return ConsumerService(uuid=ECHO, name="echo", port=port)


def added() -> ConsumerService:
    return ConsumerService(uuid=ADDED, name="added", port=0)


def sp_for(sc: ServiceConsumer, backend: int, *uuids: uuid.UUID) -> ServiceProvider:
    """An SP with one pipe to ``sc`` offering ``uuids``, each served by ``backend``."""
    pipe = PipeConfig(
        name="p1",
        hostname="127.0.0.1",
        port=sc.listener_addresses["memory"][1],
        services=tuple(
            ProviderService(u, f"svc{i}", "127.0.0.1", backend) for i, u in enumerate(uuids)
        ),
        protocol="memory",  # type: ignore[arg-type]
        auth_token=Secret("t"),
    )
    return ServiceProvider(ProviderConfig(path=Path("memory-sp.xml"), pipes=(pipe,)))


@contextlib.asynccontextmanager
async def running(
    config: ConsumerConfig, *offered: uuid.UUID, clock: Callable[[], float] = time.monotonic
) -> AsyncIterator[tuple[ServiceConsumer, ServiceProvider | None]]:
    """The SC of ``config`` started, and an SP offering ``offered`` registered on it
    (none when nothing is offered); an echo service behind the SP."""
    backend = await echo_service()
    sc = ServiceConsumer(config, clock)
    await sc.start()
    sp = None
    try:
        if offered:
            sp = sp_for(sc, backend.sockets[0].getsockname()[1], *offered)
            await sp.start()
            await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        yield sc, sp
    finally:
        if sp is not None:
            await sp.stop()
        await sc.stop()
        backend.close()


async def echoes(address: tuple[str, int], data: bytes = b"ping") -> bool:
    """Whether a client on ``address`` gets ``data`` back through the tunnel."""
    reader, writer = await asyncio.open_connection(*address)
    try:
        writer.write(data)
        return await asyncio.wait_for(reader.readexactly(len(data)), 10) == data
    finally:
        writer.close()


async def refused(port: int) -> bool:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionRefusedError:
        return True
    writer.close()
    return False


class Clock:
    """The daemon's clock, standing still until the test moves it (no pipe here reads
    its own clock against it)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@in_loop
async def test_status_before_any_sp() -> None:
    clock = Clock()
    async with running(sc_config(echo()), clock=clock) as (sc, _):
        clock.now += 42.3
        report = sc.status()
        assert list(report) == ["role", "version", "uptime_s", "bound", "pipes", "services"]
        assert (report["role"], report["version"], report["pipes"]) == ("sc", __version__, [])
        assert report["uptime_s"] == 42.3
        assert report["bound"] == sc.bound()
        assert report["services"] == [
            {
                "name": "echo",
                "uuid": str(ECHO),
                "port": sc.service_addresses[ECHO][1],  # the port bound (0 was configured)
                "pipes": 0,
                "open": 0,
                "waiting_for_slot": 0,
                "waiting_for_pipe": 0,
                "bytes_up": 0,
                "bytes_down": 0,
            }
        ]


@in_loop
async def test_status_shows_the_pipe_up_and_what_a_connection_moved() -> None:
    async with running(sc_config(echo()), ECHO) as (sc, _):
        (pipe,) = sc.pipes
        (entry,) = sc.status()["pipes"]
        assert 0.0 <= entry.pop("up_s") < 10.0
        assert entry == {
            "id": pipe.id,
            "sp": "p1",
            "peer": pipe.peer,
            "carrier": "tcp",  # the memory carrier's pipes are tcp's adapters
            "streams_open": 0,
            "streams_total": 0,
        }
        reader, writer = await asyncio.open_connection(*sc.service_addresses[ECHO])
        writer.write(b"0123456789")
        assert await reader.readexactly(10) == b"0123456789"
        report = sc.status()
        (service,) = report["services"]
        assert (service["pipes"], service["open"], service["bytes_up"], service["bytes_down"]) == (
            1,
            1,
            10,
            10,
        )
        assert (report["pipes"][0]["streams_open"], report["pipes"][0]["streams_total"]) == (1, 1)
        writer.close()
        await until(lambda: not sc.connections)
        assert sc.status()["services"][0]["open"] == 0


@in_loop
async def test_bound_names_the_ports_the_kernel_gave() -> None:
    async with running(sc_config(echo(), admin=AdminConfig(port=0))) as (sc, _):
        bound = sc.bound()
        assert list(bound) == ["role", "listeners", "services", "admin"]
        assert bound["role"] == "sc"
        assert bound["listeners"] == {"memory": sc.listener_addresses["memory"][1]}
        assert bound["services"] == {str(ECHO): sc.service_addresses[ECHO][1]}
        assert sc.admin is not None and sc.admin.address is not None
        assert bound["admin"] == sc.admin.address[1]
        assert 0 not in (bound["services"][str(ECHO)], bound["admin"])
        assert not await refused(bound["services"][str(ECHO)])


@in_loop
async def test_ready_once_every_port_is_bound_and_not_while_draining() -> None:
    sc = ServiceConsumer(sc_config(echo()))
    assert sc.ready() == (False, "listeners not bound")
    await sc.start()
    try:
        assert sc.ready() == (True, "listeners bound")
        await sc.drain(0)
        assert sc.ready() == (False, "draining: shutting down")
    finally:
        await sc.stop()


@in_loop
async def test_a_reload_adds_a_service_that_an_sp_already_offered() -> None:
    async with running(sc_config(echo()), ECHO, ADDED) as (sc, sp):
        assert sp is not None and sp.pipes[0].accepted == {ECHO}
        assert sc.registry.pipes_for(ADDED) == []
        await sc.reload(sc_config(echo(), added()))
        assert set(sc.bound()["services"]) == {str(ECHO), str(ADDED)}
        (pipe,) = sc.pipes
        assert sc.registry.pipes_for(ADDED) == [pipe]
        await until(lambda: sp.pipes[0].accepted == {ECHO, ADDED})  # the SP is told
        assert await echoes(sc.service_addresses[ADDED])
        assert await echoes(sc.service_addresses[ECHO])  # the other one carries on


@in_loop
async def test_a_reload_removes_a_service_its_port_and_after_the_grace_its_clients(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    async with running(sc_config(echo(), added()), ECHO, ADDED) as (sc, sp):
        assert sp is not None
        port = sc.service_addresses[ADDED][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"open")
        assert await reader.readexactly(4) == b"open"
        await sc.reload(sc_config(echo(), grace=0.02))
        assert set(sc.bound()["services"]) == {str(ECHO)}
        assert sc.registry.pipes_for(ADDED) == []
        assert await refused(port)
        await until(lambda: sp.pipes[0].accepted == {ECHO})
        # The open connection had 20 ms to finish; then it is cut.
        with pytest.raises((ConnectionError, asyncio.IncompleteReadError)):
            await asyncio.wait_for(reader.readexactly(1), 10)
        writer.close()
        await until(lambda: not sc.connections)
        messages = [r.getMessage() for r in caplog.records]
        assert (
            "reload: service 'added' removed; 1 open connection(s) may finish within 0.02 s"
            in messages
        )
        assert (
            "service 'added' was removed and its grace period is over: cutting 1 "
            "connection(s) still open" in messages
        )
        assert "reloaded memory-sc.xml: 0 service(s) added, 1 removed, 0 changed" in messages
        assert await echoes(sc.service_addresses[ECHO])


@in_loop
async def test_a_reload_moves_a_service_to_another_port() -> None:
    # A port the kernel picked, held (bound, not listening) so nothing else takes it
    # before the SC listens there with SO_REUSEADDR too.
    holder = socket.socket()
    holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    holder.bind(("127.0.0.1", 0))
    try:
        first = holder.getsockname()[1]
        async with running(sc_config(echo(first)), ECHO) as (sc, _):
            assert sc.bound()["services"] == {str(ECHO): first}
            assert await echoes(("127.0.0.1", first))
            await sc.reload(sc_config(echo(0)))
            moved = sc.bound()["services"][str(ECHO)]
            assert moved not in (0, first)
            assert await refused(first)
            assert await echoes(("127.0.0.1", moved))
            assert sc.registry.pipes_for(ECHO) == list(sc.pipes)  # the pipe stayed
    finally:
        holder.close()


@in_loop
async def test_a_reload_that_cannot_bind_a_new_port_changes_nothing() -> None:
    taken = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    busy = taken.sockets[0].getsockname()[1]
    try:
        async with running(sc_config(echo()), ECHO) as (sc, _):
            before = sc.bound()
            blocked = ConsumerService(uuid=ADDED, name="added", port=busy)
            with pytest.raises(OSError) as error:
                await sc.reload(sc_config(echo(), blocked))
            assert error.value.errno == errno.EADDRINUSE
            assert error.value.strerror == (
                f"cannot listen: error while attempting to bind on address "
                f"('127.0.0.1', {busy}): address already in use"
            )
            assert sc.bound() == before
            assert [s.uuid for s in sc.config.services] == [ECHO]
            assert await echoes(sc.service_addresses[ECHO])
    finally:
        taken.close()


@in_loop
async def test_draining_refuses_new_clients_and_waits_for_the_open_ones(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    async with running(sc_config(echo()), ECHO) as (sc, _):
        port = sc.service_addresses[ECHO][1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"stay")
        assert await reader.readexactly(4) == b"stay"
        drain = asyncio.get_running_loop().create_task(sc.drain(10))
        await until(lambda: sc.draining)
        assert await refused(port)
        assert sc.ready() == (False, "draining: shutting down")
        writer.write(b"more")  # the open connection still works
        assert await reader.readexactly(4) == b"more"
        assert not drain.done()
        writer.close()
        await asyncio.wait_for(drain, 10)
        messages = [r.getMessage() for r in caplog.records]
        assert (
            "draining: service ports closed, 1 open connection(s) may finish within 10 s"
            in messages
        )
        assert "drained: every connection finished" in messages


@in_loop
async def test_a_drain_whose_grace_runs_out_says_how_many_are_cut(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="edgerq.sc")
    async with running(sc_config(echo()), ECHO) as (sc, _):
        reader, writer = await asyncio.open_connection(*sc.service_addresses[ECHO])
        writer.write(b"stay")
        assert await reader.readexactly(4) == b"stay"
        await sc.drain(0.02)
        assert len(sc.connections) == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings == ["grace period of 0.02 s over: cutting 1 connection(s)"]
        writer.close()


@in_loop
async def test_a_draining_sc_takes_no_new_pipe() -> None:
    async with running(sc_config(echo())) as (sc, _):
        await sc.drain(0)
        backend = await echo_service()
        sp = sp_for(sc, backend.sockets[0].getsockname()[1], ECHO)
        await sp.start()
        try:
            await until(lambda: sp.pipes[0].pipe is not None)
            pipe = sp.pipes[0].pipe
            assert pipe is not None
            assert await asyncio.wait_for(pipe.closed, 10) == (
                "SC closed the pipe: SC is shutting down"
            )
            assert sc.registry.pipes_for(ECHO) == []
        finally:
            await sp.stop()
            backend.close()
