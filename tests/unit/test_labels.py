"""The label enums' values: what dashboards and alert rules match on."""

from __future__ import annotations

from edgerq.labels import Outcome


def test_outcome_labels_are_the_ones_dashboards_use() -> None:
    assert str(Outcome.IDLE_TIMEOUT) == "idle_timeout"
    assert Outcome.for_status(504) is Outcome.GATEWAY_TIMEOUT
    assert {str(o) for o in Outcome} == {
        "ok",
        "502",
        "503",
        "504",
        "idle_timeout",
        "pipe_closed",
        "reset",
        "closed_early",
        "error",
    }
