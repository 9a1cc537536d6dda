"""Redial delays: exponential, capped, jittered within [base/2, base], resettable."""

from __future__ import annotations

import random

import pytest

from edgerq.runtime.backoff import Backoff


def bases(initial: float, maximum: float, factor: float, count: int) -> list[float]:
    return [min(maximum, initial * factor**n) for n in range(count)]


@pytest.mark.parametrize("seed", range(5))
def test_every_delay_is_within_half_base_and_base(seed: int) -> None:
    backoff = Backoff(0.5, 30.0, 2.0, rng=random.Random(seed))
    for base in bases(0.5, 30.0, 2.0, 40):
        delay = backoff.next_delay()
        assert base / 2 <= delay <= base


def test_delays_grow_until_the_cap() -> None:
    backoff = Backoff(0.5, 30.0, 2.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(12)]
    # Bases 0.5, 1, 2, 4, 8, 16, then capped at 30. With factor 2 each delay's
    # floor is the previous one's ceiling, so delays never shrink before the cap.
    assert delays[:6] == sorted(delays[:6])
    assert delays[5] >= 8.0 > 0.5 >= delays[0]
    assert all(15.0 <= d <= 30.0 for d in delays[6:])


def test_delays_are_capped_at_the_maximum_forever() -> None:
    backoff = Backoff(1.0, 10.0, 3.0, rng=random.Random(2))
    delays = [backoff.next_delay() for _ in range(1000)]
    assert max(delays) <= 10.0
    assert all(5.0 <= d <= 10.0 for d in delays[3:])


def test_reset_starts_again_from_the_initial_delay() -> None:
    backoff = Backoff(0.5, 30.0, 2.0, rng=random.Random(3))
    for _ in range(10):
        backoff.next_delay()
    assert backoff.next_delay() >= 15.0
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5
    assert 0.5 <= backoff.next_delay() <= 1.0


def test_jitter_spreads_delays_of_sps_restarted_together() -> None:
    first = [Backoff(rng=random.Random(seed)).next_delay() for seed in range(50)]
    assert len(set(first)) > 40


def test_same_seed_same_delays() -> None:
    a = Backoff(rng=random.Random(7))
    b = Backoff(rng=random.Random(7))
    assert [a.next_delay() for _ in range(20)] == [b.next_delay() for _ in range(20)]


def test_factor_one_is_a_constant_jittered_delay() -> None:
    backoff = Backoff(2.0, 2.0, 1.0, rng=random.Random(4))
    assert all(1.0 <= backoff.next_delay() <= 2.0 for _ in range(100))


@pytest.mark.parametrize(
    ("initial", "maximum", "factor"), [(0, 1, 2), (-1, 1, 2), (2, 1, 2), (1, 2, 0.5)]
)
def test_nonsense_parameters_are_refused(initial: float, maximum: float, factor: float) -> None:
    with pytest.raises(ValueError):
        Backoff(initial, maximum, factor)


def test_steady_delays_come_first_then_growth() -> None:
    backoff = Backoff(0.5, 30.0, 2.0, rng=random.Random(3), steady=4)
    delays = [backoff.next_delay() for _ in range(8)]
    assert all(0.25 <= d <= 0.5 for d in delays[:5])  # the steady ones, then the first base
    assert 0.5 <= delays[5] <= 1.0 and 1.0 <= delays[6] <= 2.0 and 2.0 <= delays[7] <= 4.0
    backoff.reset()
    assert 0.25 <= backoff.next_delay() <= 0.5


def test_steady_must_not_be_negative() -> None:
    with pytest.raises(ValueError):
        Backoff(steady=-1)


def test_a_refusal_skips_the_steady_delays() -> None:
    backoff = Backoff(0.5, 30.0, 2.0, rng=random.Random(4), steady=6)
    assert backoff.next_delay() <= 0.5
    backoff.skip_steady()
    assert [backoff.next_delay() >= low for low in (0.25, 0.5, 1.0, 2.0)] == [True] * 4
    backoff.skip_steady()  # never moves growth back
    assert backoff.next_delay() >= 4.0
