"""What a reload changes in the SC's services, before anything is bound or closed."""

from __future__ import annotations

import uuid

from edgerq.config.model import ConsumerService
from edgerq.sc.service_changes import ServiceChanges

A, B, C, D = (uuid.UUID(int=n) for n in range(1, 5))


def services(*items: ConsumerService) -> dict[uuid.UUID, ConsumerService]:
    return {s.uuid: s for s in items}


def test_an_unchanged_config_changes_nothing() -> None:
    old = services(ConsumerService(A, "a", 8001), ConsumerService(B, "b", 8002))
    changes = ServiceChanges.between(old, dict(old))
    assert changes == ServiceChanges((), (), (), (), (), ())


def test_added_removed_changed_and_moved_services_are_told_apart() -> None:
    old = services(
        ConsumerService(A, "a", 8001),
        ConsumerService(B, "b", 8002),
        ConsumerService(C, "c", 8003),
    )
    new = services(
        ConsumerService(A, "a", 8001, max_connections=5),  # changed, same port
        ConsumerService(C, "c", 8009),  # moved to a free port
        ConsumerService(D, "d", 8002),  # new, on the port b gives up
    )
    changes = ServiceChanges.between(old, new)
    assert [s.name for s in changes.added] == ["d"]
    assert [s.name for s in changes.removed] == ["b"]
    assert [s.name for s in changes.moved] == ["c", "d"]
    assert changes.changed == ("a", "c"), "kept services whose settings differ, moved ones too"
    # c's new port is free: bound first, so a failure changes nothing; d's port is
    # b's, which the SC holds until b is retired.
    assert [s.name for s in changes.bind_first] == ["c"]
    assert [s.name for s in changes.bind_after] == ["d"]


def test_two_services_swapping_ports_both_wait_for_the_release() -> None:
    old = services(ConsumerService(A, "a", 8001), ConsumerService(B, "b", 8002))
    new = services(ConsumerService(A, "a", 8002), ConsumerService(B, "b", 8001))
    changes = ServiceChanges.between(old, new)
    assert changes.bind_first == () and [s.name for s in changes.bind_after] == ["a", "b"]
