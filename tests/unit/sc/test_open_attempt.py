"""The SC's open attempt, as h11 tests its state machine: tables of transitions."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from edgerq.errors import LocalProtocolError
from edgerq.sc.open_attempt import OpenAttempt, OpenState, Probe
from edgerq.sc.registry import SUSPECT_AFTER

S = OpenState
DEADLINE = 100.0


def at(state: OpenState, pipe: str = "A", tried: frozenset[str] = frozenset()) -> OpenAttempt[str]:
    """An attempt brought to ``state`` the legal way."""
    attempt: OpenAttempt[str] = OpenAttempt(DEADLINE)
    path = {
        S.WAITING_FOR_SLOT: [],
        S.WAITING_FOR_PIPE: ["slot"],
        S.OPENING: ["slot", "pipe"],
        S.CONFIRMED: ["slot", "pipe", "confirmed"],
        S.FAILED: ["failed"],
    }[state]
    for step in path:
        if step == "slot":
            attempt.slot_taken()
        elif step == "pipe":
            attempt.pipe_chosen(pipe)
        elif step == "confirmed":
            attempt.confirmed()
        else:
            attempt.failed()
    attempt.tried = tried
    assert attempt.state is state
    return attempt


EVENTS: dict[str, Callable[[OpenAttempt[str]], object]] = {
    "slot_taken": lambda a: a.slot_taken(),
    "pipe_chosen": lambda a: a.pipe_chosen("B"),
    "confirmed": lambda a: a.confirmed(),
    "failed": lambda a: a.failed(),
}

# (state, event) -> the next state; every pair not listed is illegal.
TRANSITIONS = {
    (S.WAITING_FOR_SLOT, "slot_taken"): S.WAITING_FOR_PIPE,
    (S.WAITING_FOR_SLOT, "failed"): S.FAILED,
    (S.WAITING_FOR_PIPE, "pipe_chosen"): S.OPENING,
    (S.WAITING_FOR_PIPE, "failed"): S.FAILED,
    (S.OPENING, "confirmed"): S.CONFIRMED,
    (S.OPENING, "failed"): S.FAILED,
    (S.FAILED, "failed"): S.FAILED,
}


@pytest.mark.parametrize("state", list(OpenState), ids=lambda s: s.name)
@pytest.mark.parametrize("event", list(EVENTS))
def test_transitions(state: OpenState, event: str) -> None:
    attempt = at(state)
    expected = TRANSITIONS.get((state, event))
    if expected is None:
        with pytest.raises(LocalProtocolError):
            EVENTS[event](attempt)
        assert attempt.state is state  # an illegal event changes nothing
    else:
        EVENTS[event](attempt)
        assert attempt.state is expected


def test_the_chosen_pipe_is_remembered() -> None:
    attempt = at(S.OPENING, pipe="A")
    assert attempt.pipe == "A"


# now, silent for, answered, another pipe heard -> decision
PROBES = [
    (DEADLINE, 0.0, False, True, Probe.EXPIRED),
    (DEADLINE + 5, SUSPECT_AFTER + 1, False, True, Probe.EXPIRED),
    (10.0, 0.0, False, True, Probe.WAIT),
    (10.0, SUSPECT_AFTER, False, True, Probe.WAIT),  # not silent for longer yet
    (10.0, SUSPECT_AFTER + 0.1, False, True, Probe.FAIL_OVER),
    (10.0, SUSPECT_AFTER + 0.1, True, True, Probe.WAIT),  # the client got bytes
    (10.0, SUSPECT_AFTER + 0.1, False, False, Probe.WAIT),  # nowhere else to go
]


@pytest.mark.parametrize(("now", "silent", "answered", "other", "decision"), PROBES)
def test_probe(now: float, silent: float, answered: bool, other: bool, decision: Probe) -> None:
    attempt = at(S.OPENING)
    assert attempt.probe(now, silent, answered, lambda: other) is decision
    assert attempt.state is S.OPENING  # a probe decides, the caller acts


# now, replayable, pipe lost, another pipe besides those tried -> failed over?, tried after
FAILOVERS = [
    (10.0, True, True, False, True, {"A"}),  # pipe lost: look for the next pipe, even later
    (10.0, True, False, True, True, {"A"}),  # refused, another SP to ask
    (10.0, True, False, False, False, {"A"}),  # refused, nobody else: 502
    (10.0, False, True, True, False, set()),  # bytes reached the client: cannot replay
    (DEADLINE, True, True, True, False, set()),  # request_ttl is over
]


@pytest.mark.parametrize(("now", "replayable", "lost", "other", "moved", "tried"), FAILOVERS)
def test_fail_over(
    now: float, replayable: bool, lost: bool, other: bool, moved: bool, tried: set[str]
) -> None:
    attempt = at(S.OPENING, pipe="A")
    asked: list[frozenset[str]] = []

    def other_pipe(excluding: frozenset[str]) -> bool:
        asked.append(excluding)
        return other

    assert (
        attempt.fail_over(now, replayable=replayable, pipe_lost=lost, other_pipe=other_pipe)
        is moved
    )
    assert attempt.state is (S.WAITING_FOR_PIPE if moved else S.OPENING)
    assert attempt.tried == tried
    assert all(excluding == {"A"} for excluding in asked)  # never offered the pipe it lost


def test_a_second_failover_excludes_both_pipes() -> None:
    attempt = at(S.OPENING, pipe="A")
    assert attempt.fail_over(1.0, replayable=True, pipe_lost=True, other_pipe=lambda t: True)
    attempt.pipe_chosen("B")
    assert attempt.fail_over(2.0, replayable=True, pipe_lost=True, other_pipe=lambda t: True)
    assert attempt.tried == {"A", "B"}


@pytest.mark.parametrize(
    "state", [s for s in OpenState if s is not S.OPENING], ids=lambda s: s.name
)
def test_fail_over_only_while_opening(state: OpenState) -> None:
    with pytest.raises(LocalProtocolError):
        at(state).fail_over(1.0, replayable=True, pipe_lost=True, other_pipe=lambda t: True)
