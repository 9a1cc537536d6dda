"""The fault suite: ``make fault-test`` (``pytest tests/fault -m fault``).

It is not part of ``make test``: ``testpaths`` leaves tests/fault out and the
``fault`` marker is deselected by default. Fixtures of the integration suite
are reused from there.

Knobs (environment): ``EDGERQ_FAULT_ROUNDS`` (kill rounds per process, 3),
``EDGERQ_SOAK_SECONDS`` (300), ``EDGERQ_SOAK_CARRIER`` (tcp),
``EDGERQ_FUZZ_SECONDS`` (120, in total), ``EDGERQ_FAULT_RESULTS`` (where the
figures are written; bench/results/faults.json).
"""

from __future__ import annotations

import pytest

from tests.fault import report
from tests.integration.conftest import processes
from tests.integration.test_loss import link

__all__ = ["link", "processes"]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    lines = report.lines()
    if not lines:
        return
    terminalreporter.section("fault suite figures")
    for line in lines:
        terminalreporter.write_line(line)
    path = report.write()
    terminalreporter.write_line(f"written to {path}")
