"""Pipes to every address a hostname resolves to (``<all_addresses>yes</all_addresses>``).

Behind a Swarm ``tasks.<service>`` name, a Kubernetes headless Service or
round-robin DNS stand several SC replicas. An SC serves only the SPs that
dialled it, so an SP keeps one pipe to each address: the configured pipe
``web`` to ``tasks.sc`` becomes ``web@10.0.1.5``, ``web@10.0.1.6`` and so on,
looked up again every ``resolve_interval`` seconds. An address that appears
gets a pipe at the next lookup; one that vanishes has its pipe drained. A
failed lookup keeps the addresses already known, so a DNS hiccup drops no
pipe and causes no redial storm.

The lookup is injected (``Resolver``), so this module is tested without DNS.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, replace

from edgerq.config.model import PipeConfig

log = logging.getLogger("edgerq.sp")

Resolver = Callable[[str, int], Awaitable[list[str]]]
"""Returns the addresses ``(host, port)`` resolves to; raises ``OSError`` when it cannot."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Every distinct address the system resolver gives for ``host``, in a stable order."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return sorted_addresses(str(info[4][0]) for info in infos)


def sorted_addresses(addresses: Iterable[str]) -> list[str]:
    """Distinct addresses, IPv4 before IPv6, each family in numeric order."""
    unique = {ipaddress.ip_address(a) for a in addresses}
    return [str(a) for a in sorted(unique, key=lambda a: (a.version, int(a)))]


def address_pipe(pipe: PipeConfig, address: str) -> PipeConfig:
    """The pipe to one of ``pipe.hostname``'s addresses. Its name says which; a udp
    pipe still verifies the SC certificate against the configured name."""
    shown = f"[{address}]" if ":" in address else address
    return replace(
        pipe,
        name=f"{pipe.name}@{shown}",
        hostname=address,
        all_addresses=False,
        server_name=pipe.server_name or pipe.hostname,
    )


@dataclass
class _Known:
    addresses: list[str]
    failing: bool = False


class AddressBook:
    """The addresses each ``all_addresses`` pipe resolved to last time."""

    def __init__(self, resolver: Resolver = system_resolver) -> None:
        self._resolve = resolver
        self._known: dict[str, _Known] = {}

    @staticmethod
    def wanted(pipes: Sequence[PipeConfig]) -> bool:
        return any(p.all_addresses for p in pipes)

    @staticmethod
    def interval(pipes: Sequence[PipeConfig]) -> float:
        """How often to look up again: the shortest interval any pipe asks for."""
        return min(p.resolve_interval for p in pipes if p.all_addresses)

    async def refresh(self, pipes: Sequence[PipeConfig]) -> bool:
        """Look every ``all_addresses`` pipe up again; True when an address set changed."""
        changed = False
        names = {p.name for p in pipes if p.all_addresses}
        for gone in set(self._known) - names:
            del self._known[gone]
        for pipe in pipes:
            if pipe.all_addresses:
                changed |= await self._refresh_one(pipe)
        return changed

    async def _refresh_one(self, pipe: PipeConfig) -> bool:
        known = self._known.get(pipe.name)
        try:
            addresses = await self._resolve(pipe.hostname, pipe.port)
        except (OSError, ValueError) as exc:
            if known is None:
                self._known[pipe.name] = known = _Known([])
            if not known.failing:
                log.warning(
                    "pipe '%s': cannot resolve %s (%s); keeping %d known address(es), "
                    "trying again every %g s",
                    pipe.name,
                    pipe.hostname,
                    exc,
                    len(known.addresses),
                    pipe.resolve_interval,
                )
                known.failing = True
            return False
        if known is not None and known.failing:
            log.info("pipe '%s': %s resolves again", pipe.name, pipe.hostname)
            known.failing = False
        before = known.addresses if known is not None else []
        if addresses == before:
            return False
        added = [a for a in addresses if a not in before]
        removed = [a for a in before if a not in addresses]
        log.info(
            "pipe '%s': %s resolves to %d address(es)%s%s",
            pipe.name,
            pipe.hostname,
            len(addresses),
            f"; new: {', '.join(added)}" if added else "",
            f"; gone: {', '.join(removed)}" if removed else "",
        )
        self._known[pipe.name] = _Known(addresses)
        return True

    def expand(self, pipes: Sequence[PipeConfig]) -> tuple[PipeConfig, ...]:
        """The pipes to dial: each ``all_addresses`` pipe replaced by one pipe per known
        address (none while its name has never resolved); the others as they are."""
        out: list[PipeConfig] = []
        for pipe in pipes:
            if not pipe.all_addresses:
                out.append(pipe)
                continue
            known = self._known.get(pipe.name)
            out.extend(address_pipe(pipe, a) for a in (known.addresses if known else []))
        return tuple(out)
