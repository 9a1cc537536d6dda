"""kill -9 of the SC, the SP and the service, in turn and repeatedly, under a
mixed load (small uploads and 10 MiB transfers both ways, every completed
response checked by SHA-256). Requests may fail while a process is down; no
completed response may be corrupted, and the tunnel must serve again after
each restart, within ``RECOVERY_LIMIT`` (60 s: generous on purpose, the bound
a user may count on, not a measurement) of the restart, for the probe and the
load alike. The recovery times themselves go to faults.json, not compared.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.fault import report
from tests.fault.harness import BackendProcess, Load, wait_served
from tests.integration.conftest import (
    Daemon,
    Processes,
    free_port,
    start_consumer,
    start_provider,
    wait_for,
)

pytestmark = pytest.mark.fault

ROUNDS = int(os.environ.get("EDGERQ_FAULT_ROUNDS", "3"))
OUTAGE = 1.0
"""Seconds the killed process stays dead, with the load running against it."""
SETTLE = 2.0
"""Seconds of load on the recovered tunnel before the next fault."""
RECOVERY_LIMIT = 60.0


@pytest.mark.timeout(600)
@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_kill_9_under_load(processes: Processes, tmp_path: Path, carrier: str) -> None:
    backend = BackendProcess(free_port()).start()
    load: Load | None = None
    try:
        consumer = start_consumer(processes, carrier, tmp_path)
        sc: Daemon = consumer.sc
        sp: Daemon = start_provider(processes, consumer, backend.port)
        port = consumer.service_port
        wait_served(port, RECOVERY_LIMIT, time.monotonic())
        load = Load(port).start()
        time.sleep(SETTLE)
        recoveries = []
        for round_ in range(1, ROUNDS + 1):
            for target in ("sc", "sp", "service"):
                killed = time.monotonic()
                if target == "sc":
                    sc.kill()
                elif target == "sp":
                    sp.kill()
                else:
                    backend.kill()
                time.sleep(OUTAGE)
                restarted = time.monotonic()
                if target == "sc":
                    # On the ports the killed one had bound: the SP dials that one.
                    sc = processes.start("sc", sc.pinned_config())
                elif target == "sp":
                    sp = processes.start("sp", sp.config.read_text())
                else:
                    backend.start()
                since_restart = wait_served(port, RECOVERY_LIMIT, restarted)
                # The probe got through; the load's own clients must too.
                ok_served = load.snapshot()[0]
                wait_for(
                    lambda ok=ok_served: load.snapshot()[0] > ok,  # type: ignore[misc]
                    RECOVERY_LIMIT,
                    f"the load to get a request through after the {target} restarted",
                )
                recoveries.append(
                    {
                        "target": target,
                        "round": round_,
                        "from_kill_s": round(restarted - killed + since_restart, 3),
                        "from_restart_s": round(since_restart, 3),
                        "load_resumed_s": round(time.monotonic() - restarted, 3),
                    }
                )
                time.sleep(SETTLE)
        load.stop()
        ok, failed, corrupted = load.snapshot()
        report.record(
            "kill9",
            carrier,
            {
                "recoveries": recoveries,
                "ok": ok,
                "ok_big": load.ok_big,
                "failed": failed,
                "corrupted": corrupted,
                "outage_s": OUTAGE,
                "rounds": ROUNDS,
            },
        )
        assert not load.corrupted, f"corrupted responses: {load.corrupted[:5]}"
        assert load.ok_big > 0, "no 10 MiB transfer completed"
        # Every process still alive ends cleanly.
        for daemon in (sc, sp):
            assert daemon.proc is not None and daemon.proc.poll() is None
    finally:
        if load is not None:
            load.stop()
        backend.stop()
