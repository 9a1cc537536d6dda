"""Exponential backoff with jitter, capped, for redialing pipes forever."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, each
    drawn uniformly from the upper half of that value so that many SPs
    restarted together do not redial in lockstep. The first ``steady`` delays
    after a reset stay at ``initial``: a peer that restarts is back within a
    second or two, and should not find its SPs waiting out a grown delay."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
        steady: int = 0,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1 or steady < 0:
            raise ValueError("backoff needs 0 < initial <= maximum, factor >= 1, steady >= 0")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self.steady = steady
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        grown = max(0, self._attempt - self.steady)
        base = min(self.maximum, self.initial * self.factor**grown)
        if base < self.maximum:
            self._attempt += 1
        return self._rng.uniform(base / 2, base)

    def skip_steady(self) -> None:
        """Grow from the next delay on: for refusals that a quick retry cannot cure."""
        self._attempt = max(self._attempt, self.steady)

    def reset(self) -> None:
        self._attempt = 0
