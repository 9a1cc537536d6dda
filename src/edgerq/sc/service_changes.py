"""What a reload changes in the SC's services, worked out before anything is touched."""

from __future__ import annotations

import uuid as uuid_mod
from collections.abc import Mapping
from dataclasses import dataclass

from edgerq.config.model import ConsumerService


@dataclass(frozen=True, slots=True)
class ServiceChanges:
    """Old services against new ones, by UUID."""

    added: tuple[ConsumerService, ...]
    removed: tuple[ConsumerService, ...]
    moved: tuple[ConsumerService, ...]
    """New or with another address: each needs a port bound."""
    bind_first: tuple[ConsumerService, ...]
    """Moved to a port the SC does not hold now: bound before anything closes, so a
    port that cannot be bound leaves everything as it was."""
    bind_after: tuple[ConsumerService, ...]
    """Moved to a port the SC holds now (another service's, or its own old one): it
    can be bound only once that port is released."""
    changed: tuple[str, ...]
    """Names of the services kept whose settings differ (the moved ones among them)."""

    @classmethod
    def between(
        cls,
        old: Mapping[uuid_mod.UUID, ConsumerService],
        new: Mapping[uuid_mod.UUID, ConsumerService],
    ) -> ServiceChanges:
        held = {s.port for s in old.values()}
        moved = tuple(
            s
            for u, s in new.items()
            if u not in old or (s.host, s.port) != (old[u].host, old[u].port)
        )
        return cls(
            added=tuple(s for u, s in new.items() if u not in old),
            removed=tuple(s for u, s in old.items() if u not in new),
            moved=moved,
            bind_first=tuple(s for s in moved if s.port not in held),
            bind_after=tuple(s for s in moved if s.port in held),
            changed=tuple(s.name for u, s in new.items() if u in old and s != old[u]),
        )
