"""The SP daemon: ``/status`` and its pipe counts, readiness and the ports it bound,
before and after its pipe is up. The real SC and SP run in one event loop, their
pipe joined by the memory carrier."""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

from edgerq import __version__
from edgerq.config.model import (
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
from edgerq.sc.daemon import ServiceConsumer
from edgerq.sp.daemon import ServiceProvider, pipe_counts, same_but_targets
from tests.unit.fakes import in_loop

ECHO = uuid.UUID(int=0xEC40)
OTHER = uuid.UUID(int=0x0E)
BACKEND = 9  # never connected to here: no stream is opened


def test_pipe_counts_of_a_pipe_not_connected() -> None:
    assert pipe_counts(None, 123.0) == {"up_s": None, "streams_open": 0, "streams_total": 0}


def test_pipe_counts_of_a_pipe_up() -> None:
    status = PipeStatus(
        id=3,
        name="p1",
        peer="127.0.0.1:40000",
        state=State.OPEN,
        opened_at=100.0,
        last_heard=110.0,
        streams_open=2,
        streams_total=9,
        unknown_stream_frames=0,
        max_streams=1000,
        control_backlog=1,
        pipe_buffer=1,
        held=0,
        limit_violations=0,
    )
    assert pipe_counts(status, 112.34) == {"up_s": 12.3, "streams_open": 2, "streams_total": 9}


def pipe_config(port: int = 12345, *services: ProviderService) -> PipeConfig:
    return PipeConfig(
        name="p1",
        hostname="127.0.0.1",
        port=port,
        services=services or (ProviderService(ECHO, "echo", "127.0.0.1", BACKEND),),
        protocol="memory",  # type: ignore[arg-type]
        auth_token=Secret("t"),
    )


def test_only_where_services_point_changed_keeps_the_pipe() -> None:
    old = pipe_config()
    moved = replace(old, services=(ProviderService(ECHO, "renamed", "10.0.0.5", 8080),))
    assert same_but_targets(old, moved)
    assert not same_but_targets(old, replace(old, port=12346))
    assert not same_but_targets(old, replace(old, auth_token=Secret("other")))
    other_service = replace(old, services=(ProviderService(OTHER, "echo", "127.0.0.1", 9),))
    assert not same_but_targets(old, other_service)


def consumer() -> ServiceConsumer:
    return ServiceConsumer(
        ConsumerConfig(
            path=Path("memory-sc.xml"),
            listeners=(ListenerConfig(port=0, protocol="memory"),),  # type: ignore[arg-type]
            services=(ConsumerService(uuid=ECHO, name="echo", port=0),),
            auth_token=Secret("t"),
        )
    )


def provider(sc: ServiceConsumer) -> ServiceProvider:
    services = (
        ProviderService(ECHO, "echo", "127.0.0.1", BACKEND, proxy_protocol=2),
        ProviderService(OTHER, "other", "127.0.0.1", BACKEND),
    )
    pipe = pipe_config(sc.listener_addresses["memory"][1], *services)
    return ServiceProvider(ProviderConfig(path=Path("memory-sp.xml"), pipes=(pipe,)))


def services(accepted: set[uuid.UUID]) -> list[dict[str, Any]]:
    return [
        {
            "name": "echo",
            "uuid": str(ECHO),
            "target": f"127.0.0.1:{BACKEND}",
            "accepted": ECHO in accepted,
            "proxy_protocol": "v2",
        },
        {
            "name": "other",
            "uuid": str(OTHER),
            "target": f"127.0.0.1:{BACKEND}",
            "accepted": OTHER in accepted,
            "proxy_protocol": None,
        },
    ]


@in_loop
async def test_status_before_and_after_the_pipe_is_up() -> None:
    sc = consumer()
    await sc.start()
    sp = provider(sc)
    port = sc.listener_addresses["memory"][1]
    try:
        await sp.start()
        report = sp.status()  # the pipe's task has not run yet
        assert list(report) == ["role", "version", "uptime_s", "bound", "pipes"]
        assert (report["role"], report["version"]) == ("sp", __version__)
        assert 0.0 <= report["uptime_s"] < 10.0
        assert report["bound"] == {"role": "sp", "admin": None}
        assert report["pipes"] == [
            {
                "name": "p1",
                "sc": f"127.0.0.1:{port}",
                "carrier": "memory",
                "registered": False,
                "up_s": None,
                "streams_open": 0,
                "streams_total": 0,
                "services": services(set()),
            }
        ]
        assert sp.ready() == (False, "no pipe registered yet")

        await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        (entry,) = sp.status()["pipes"]
        assert isinstance(entry["up_s"], float) and 0.0 <= entry.pop("up_s") < 10.0
        assert entry == {
            "name": "p1",
            "sc": f"127.0.0.1:{port}",
            "carrier": "memory",
            "registered": True,
            "streams_open": 0,
            "streams_total": 0,
            "services": services({ECHO}),  # the SC does not configure "other"
        }
        assert sp.ready() == (True, "registered on: p1")
    finally:
        await sp.stop()
        await sc.stop()


@in_loop
async def test_a_draining_sp_is_not_ready() -> None:
    sc = consumer()
    await sc.start()
    sp = provider(sc)
    try:
        await sp.start()
        await asyncio.wait_for(sp.pipes[0].ready.wait(), 10)
        await sp.drain(0)
        assert sp.ready() == (False, "draining: shutting down")
        assert sp.pipes[0].draining
    finally:
        await sp.stop()
        await sc.stop()


@in_loop
async def test_a_provider_not_started_has_no_pipes() -> None:
    sp = ServiceProvider(ProviderConfig(path=Path("memory-sp.xml"), pipes=(pipe_config(),)))
    assert sp.status()["pipes"] == [] and sp.bound() == {"role": "sp", "admin": None}
    assert sp.ready() == (False, "no pipe registered yet")
