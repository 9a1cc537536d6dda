"""Exponential backoff with jitter, capped, for redialing pipes forever."""

from __future__ import annotations

import random


class Backoff:
    """Delays of ``initial * factor**n`` seconds, capped at ``maximum``, each
    drawn uniformly from the upper half of that value so that many SPs
    restarted together do not redial in lockstep."""

    def __init__(
        self,
        initial: float = 0.5,
        maximum: float = 30.0,
        factor: float = 2.0,
        rng: random.Random | None = None,
    ) -> None:
        if initial <= 0 or maximum < initial or factor < 1:
            raise ValueError("backoff needs 0 < initial <= maximum and factor >= 1")
        self.initial = initial
        self.maximum = maximum
        self.factor = factor
        self._attempt = 0
        self._rng = rng or random.Random()

    def next_delay(self) -> float:
        base = min(self.maximum, self.initial * self.factor**self._attempt)
        if base < self.maximum:
            self._attempt += 1
        return self._rng.uniform(base / 2, base)

    def reset(self) -> None:
        self._attempt = 0
