"""Which pipe a new connection goes to: least busy, heard from, and reaching the service."""

from __future__ import annotations

import time
import uuid
from typing import cast

from edgerq.pipe.interface import MuxPipe
from edgerq.sc.registry import REFUSED_FOR, SUSPECT_AFTER, ServiceRegistry
from tests.unit.fakes import FakePipe

SERVICE = uuid.UUID(int=1)
OTHER = uuid.UUID(int=2)


def pipes(*names: str) -> list[MuxPipe]:
    return [cast(MuxPipe, FakePipe(name=name)) for name in names]


def registered(*names: str) -> tuple[ServiceRegistry, list[MuxPipe]]:
    """A registry where pipes of these names registered SERVICE, in this order."""
    reg = ServiceRegistry()
    made = pipes(*names)
    for pipe in made:
        reg.add(SERVICE, pipe)
    return reg, made


def test_least_busy_pipe_first() -> None:
    reg, (a, b) = registered("a", "b")
    cast(FakePipe, a).streams = {1: None, 5: None}
    assert reg.choose(SERVICE) is b
    assert reg.choose(SERVICE, exclude={b}) is a
    assert reg.choose(OTHER) is None


def test_a_silent_pipe_goes_last_but_still_serves_alone() -> None:
    reg, (a, b) = registered("a", "b")
    cast(FakePipe, a).last_heard = time.monotonic() - SUSPECT_AFTER - 1
    assert reg.choose(SERVICE) is b
    assert reg.choose(SERVICE, exclude={b}) is a


def test_a_pipe_that_refused_goes_last_for_that_service_for_a_while() -> None:
    now = [1000.0]
    reg = ServiceRegistry(clock=lambda: now[0])
    broken, good = pipes("broken", "good")
    for p in (broken, good):
        cast(FakePipe, p).last_heard = now[0]
        reg.add(SERVICE, p)
        reg.add(OTHER, p)
    assert reg.choose(SERVICE) is broken  # a tie: the first registered
    reg.note_refused(SERVICE, broken)
    cast(FakePipe, good).streams = {1: None, 5: None, 9: None}  # busier, still preferred
    assert reg.choose(SERVICE) is good
    assert reg.choose(OTHER) is broken  # a refusal is per service
    assert reg.choose(SERVICE, exclude={good}) is broken  # and never a refusal to serve
    now[0] += REFUSED_FOR
    for p in (broken, good):
        cast(FakePipe, p).last_heard = now[0]
    assert reg.choose(SERVICE) is broken  # tried again after REFUSED_FOR


def test_a_pipe_that_reaches_the_service_again_is_forgiven() -> None:
    reg, (broken, good) = registered("broken", "good")
    reg.note_refused(SERVICE, broken)
    assert reg.choose(SERVICE) is good
    reg.note_opened(SERVICE, broken)
    assert reg.choose(SERVICE) is broken


def test_forgetting_a_pipe_or_a_service_forgets_its_refusals() -> None:
    reg, (broken, good) = registered("broken", "good")
    reg.note_refused(SERVICE, broken)
    reg.remove_pipe(broken)
    assert reg._refused == {}
    reg.note_refused(SERVICE, good)
    reg.remove_service(SERVICE)
    assert reg._refused == {}
