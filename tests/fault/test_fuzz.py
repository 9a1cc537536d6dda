"""The protocol fuzzing of tests/unit/protocol/test_fuzz.py, for minutes instead
of seconds: batches of fresh random examples until the time budget is spent.

``EDGERQ_FUZZ_SECONDS`` is the total budget (default 120), shared out as half
for the frame decoder and a quarter each for the message decoders and the
handshake. The number of examples run is recorded and printed.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgerq.protocol.frames import FrameType
from tests.fault import report
from tests.unit.protocol.properties import (
    check_decoder,
    check_encoded_message,
    check_handshake,
    check_message,
    handshake_frames,
    limits,
    message_payloads,
    messages,
    tokens,
    wire_bytes,
)

pytestmark = pytest.mark.fault

BUDGET = float(os.environ.get("EDGERQ_FUZZ_SECONDS", "120"))
BATCH = settings(
    max_examples=200,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)

PROPERTIES: dict[str, tuple[float, Callable[..., None], dict[str, st.SearchStrategy[Any]]]] = {
    "frame_decoder": (
        0.5,
        check_decoder,
        {
            "data": wire_bytes,
            "max_payload": limits,
            "cuts": st.lists(st.integers(0, 2000), max_size=12),
            "modes": st.lists(st.booleans(), max_size=6),
        },
    ),
    "messages": (
        0.2,
        check_message,
        {"frame_type": st.sampled_from(list(FrameType)), "payload": message_payloads},
    ),
    "sent_messages": (0.05, check_encoded_message, {"value": messages}),
    "handshake": (
        0.25,
        check_handshake,
        {"frames": handshake_frames, "sc_token": tokens, "sp_token": tokens},
    ),
}


@pytest.mark.timeout(BUDGET + 120)
@pytest.mark.parametrize("name", sorted(PROPERTIES))
def test_protocol_fuzzing_for_a_time_budget(name: str) -> None:
    share, check, strategies = PROPERTIES[name]
    seconds = BUDGET * share
    examples = 0

    def counted(**kwargs: Any) -> None:
        nonlocal examples
        examples += 1
        check(**kwargs)

    batch = BATCH(given(**strategies)(counted))
    started = time.monotonic()
    batches = 0
    while time.monotonic() - started < seconds:
        batch()  # each batch draws fresh random examples; a failure raises here
        batches += 1
    spent = time.monotonic() - started
    report.record(
        "fuzz", name, {"examples": examples, "seconds": round(spent, 1), "batches": batches}
    )
    assert examples > 0
