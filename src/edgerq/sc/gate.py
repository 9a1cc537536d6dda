"""Limits against abuse at the SC: who may start a pipe handshake at all.

``AuthFailureLimiter`` is the policy, with no I/O and the clock passed in:
after ``auth_failures`` failed authentications from one source address within
``auth_window`` seconds, that source is blocked for ``auth_block`` seconds.
It remembers at most ``tracked_sources`` addresses (least recently failed
forgotten first), so a flood from many addresses costs bounded memory.

``PipeGate`` applies it, and a cap on pipes that have not authenticated yet,
to every new pipe before its handshake starts; a refused pipe costs one small
GOAWAY and a close. It logs once per block and once per episode of the cap
being reached (never once per refused pipe), and counts everything in metrics.
"""

from __future__ import annotations

import collections
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from edgerq.config.model import PipeLimits
from edgerq.errors import AuthError
from edgerq.labels import Limit
from edgerq.pipe.interface import MuxPipe, Refusal
from edgerq.protocol.messages import GoawayCode
from edgerq.runtime.metrics import Metrics
from edgerq.sc.fairness import source_of

log = logging.getLogger("edgerq.limits")


@dataclass(slots=True)
class _Source:
    failures: collections.deque[float] = field(default_factory=collections.deque)
    blocked_until: float = 0.0


class AuthFailureLimiter:
    """Failed authentications per source address, and the blocks they earn."""

    def __init__(
        self, max_failures: int, window: float, block: float, max_sources: int = 10000
    ) -> None:
        if max_failures < 1 or max_sources < 1:
            raise ValueError("max_failures and max_sources must be at least 1")
        self.max_failures = max_failures
        self.window = window
        self.block = block
        self.max_sources = max_sources
        self._sources: collections.OrderedDict[str, _Source] = collections.OrderedDict()

    def __len__(self) -> int:
        return len(self._sources)

    def blocked_until(self, source: str, now: float) -> float | None:
        """When ``source``'s block ends, or None when it may try now."""
        entry = self._sources.get(source)
        if entry is None or entry.blocked_until == 0.0:
            return None
        if now < entry.blocked_until:
            return entry.blocked_until
        del self._sources[source]  # the block is over: a clean slate
        return None

    def failure(self, source: str, now: float) -> bool:
        """Record a failed authentication; True when it starts a block of ``source``."""
        entry = self._sources.get(source)
        if entry is None:
            while len(self._sources) >= self.max_sources:
                self._sources.popitem(last=False)
            entry = self._sources[source] = _Source()
        else:
            self._sources.move_to_end(source)
        if entry.blocked_until > now:
            return False  # already blocked (a handshake that started before the block)
        failures = entry.failures
        failures.append(now)
        while failures and failures[0] <= now - self.window:
            failures.popleft()
        if len(failures) < self.max_failures:
            return False
        failures.clear()
        entry.blocked_until = now + self.block
        return True

    def blocked_count(self, now: float) -> int:
        """Sources blocked at ``now`` (walks every entry: for metrics scrapes, not the hot path)."""
        return sum(1 for entry in self._sources.values() if entry.blocked_until > now)


class PipeGate:
    """The SC's admission of new pipes: blocked sources and the unauthenticated cap."""

    def __init__(
        self,
        limits: PipeLimits,
        metrics: Metrics,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.limits = limits
        self.metrics = metrics
        self.clock = clock
        self.failures = AuthFailureLimiter(
            limits.auth_failures, limits.auth_window, limits.auth_block, limits.tracked_sources
        )
        self.unauthenticated: set[MuxPipe] = set()
        self._refused: set[MuxPipe] = set()
        self._full_since_refusals: int | None = None
        """Pipes refused since the cap was reached (None: not at the cap)."""
        metrics.auth_blocked_sources.set_function(lambda: self.failures.blocked_count(clock()))

    def reconfigure(self, limits: PipeLimits) -> None:
        """New limits from a reload; sources already tracked (and blocked) stay so."""
        self.limits = limits
        failures = self.failures
        failures.max_failures = limits.auth_failures
        failures.window = limits.auth_window
        failures.block = limits.auth_block
        failures.max_sources = limits.tracked_sources

    def admit(self, pipe: MuxPipe) -> Refusal | None:
        """Called as a pipe's handshake would start: None to go on, else why it is refused."""
        source = source_of(pipe.peer)
        now = self.clock()
        until = self.failures.blocked_until(source, now)
        if until is not None:
            self._refused.add(pipe)
            self.limit_hit(Limit.AUTH_BLOCKED)
            log.debug("%s: refused, source %s is blocked", pipe, source)
            return Refusal(
                GoawayCode.AUTH_FAILED,
                f"too many failed authentications from {source}: "
                f"refused for {until - now:.0f} s more",
            )
        if len(self.unauthenticated) >= self.limits.unauthenticated_pipes:
            self._refused.add(pipe)
            self.limit_hit(Limit.UNAUTHENTICATED_PIPES)
            if self._full_since_refusals is None:
                self._full_since_refusals = 0
                log.warning(
                    "%d pipes are authenticating (unauthenticated_pipes): new pipes are "
                    "refused until one finishes (first refused: %s)",
                    len(self.unauthenticated),
                    pipe.peer,
                )
            self._full_since_refusals += 1
            return Refusal(
                GoawayCode.LIMIT_EXCEEDED, "too many pipes are authenticating; try again later"
            )
        if self._full_since_refusals is not None:
            log.warning(
                "accepting new pipes again; %d refused while %d were authenticating",
                self._full_since_refusals,
                self.limits.unauthenticated_pipes,
            )
            self._full_since_refusals = None
        self.unauthenticated.add(pipe)
        return None

    def authenticated(self, pipe: MuxPipe) -> None:
        self.unauthenticated.discard(pipe)

    def closed(self, pipe: MuxPipe) -> bool:
        """A pipe is gone; True when it was refused here (nothing more to say about it)."""
        self.unauthenticated.discard(pipe)
        if pipe in self._refused:
            self._refused.discard(pipe)
            return True
        if isinstance(pipe.error, AuthError) and not pipe.authenticated:
            source = source_of(pipe.peer)
            if self.failures.failure(source, self.clock()):
                self.metrics.auth_blocks.inc()
                log.warning(
                    "source %s blocked for %g s after %d failed authentications within %g s "
                    "(its pipes are refused before the handshake until then)",
                    source,
                    self.limits.auth_block,
                    self.limits.auth_failures,
                    self.limits.auth_window,
                )
        return False

    def limit_hit(self, limit: Limit) -> None:
        self.metrics.limit_hit(limit)
