"""A pipe partition: the SP in a network namespace (the set-up of
tests/integration/test_loss.py), iptables dropping every packet of the pipe
both ways for 20 s under load, then healing. The SP must notice (heartbeat),
redial and serve again; requests after healing succeed with intact hashes and
nothing is ever corrupted. Bounds asserted, generous on purpose (what a user
may count on, not a measurement): the SP gives the pipe up within the 20 s
partition, and the tunnel serves again within ``RECOVERY_LIMIT`` (120 s) of the
heal. The times themselves go to faults.json, not compared.
"""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from tests.fault import report
from tests.fault.harness import Load, download_checked, upload_checked, wait_served
from tests.integration.backends import payload
from tests.integration.conftest import Processes
from tests.integration.test_loss import NS, NS_IF, LossyLink, start_lossy_tunnel

pytestmark = pytest.mark.fault

PARTITION = 20.0
RECOVERY_LIMIT = 120.0


def partition() -> None:
    """DROP everything on the namespace's end of the veth, both directions."""
    for chain, flag in (("INPUT", "-i"), ("OUTPUT", "-o")):
        subprocess.run(
            ["ip", "netns", "exec", NS, "iptables", "-A", chain, flag, NS_IF, "-j", "DROP"],
            check=True,
            capture_output=True,
        )


@pytest.mark.timeout(400)
@pytest.mark.parametrize("carrier", ["tcp", "udp"])
def test_partition_then_heal(
    processes: Processes, link: LossyLink, tmp_path: Path, carrier: str
) -> None:
    port = start_lossy_tunnel(processes, link, carrier, tmp_path)
    sp = processes.daemons[-1]
    assert sp.command == "sp"
    wait_served(port, 60, time.monotonic())
    # The SP's own line when it gives a pipe up: "pipe closed (reason); redial in".
    marker = "); redial in"
    closes_before = sp.log.count(marker)
    load = Load(port, small=3, big=1, big_size=1 << 20).start()
    try:
        time.sleep(2)
        started = time.monotonic()
        partition()
        try:
            sp.wait_log(marker, timeout=PARTITION, count=closes_before + 1)
            noticed = time.monotonic() - started
            time.sleep(max(0.0, started + PARTITION - time.monotonic()))
        finally:
            link.drop(0)  # heal: flush the namespace's rules
        healed = time.monotonic()
        recovery = wait_served(port, RECOVERY_LIMIT, healed)
        time.sleep(2)
    finally:
        load.stop()
    ok, failed, corrupted = load.snapshot()
    reason = [line for line in sp.log.splitlines() if marker in line][closes_before]
    report.record(
        "partition",
        carrier,
        {
            "partition_s": PARTITION,
            "noticed_s": round(noticed, 2),
            "sp_log": reason.split("WARNING", 1)[-1].strip(),
            "recovery_after_heal_s": round(recovery, 3),
            "ok": ok,
            "failed": failed,
            "corrupted": corrupted,
        },
    )
    assert not load.corrupted, f"corrupted responses: {load.corrupted[:5]}"
    # After healing everything works again, in full.
    for i in range(10):
        assert upload_checked(port, payload(3000 + i, i)), f"request {i} after healing failed"
    assert download_checked(port, 10 << 20, 5), "10 MiB download after healing failed"
    assert upload_checked(port, payload(10 << 20, 6)), "10 MiB upload after healing failed"
