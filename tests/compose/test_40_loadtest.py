"""A headless Locust run through the tunnel: every answer checked, 0 failures."""

from __future__ import annotations

import csv
import os
import re
import subprocess


def test_locust_headless_run_has_no_failures(stack, tmp_path) -> None:
    duration = os.environ.get("EDGERQ_E2E_LOCUST_DURATION", "30s")
    users = os.environ.get("EDGERQ_E2E_LOCUST_USERS", "20")
    report_dir = tmp_path / "locust"
    report_dir.mkdir()
    os.chmod(report_dir, 0o777)
    res = subprocess.run(
        [
            str(stack.root / "scripts" / "loadtest"),
            "--duration",
            duration,
            "--users",
            users,
            "--target",
            "tunnel",
            "--report-dir",
            str(report_dir),
        ],
        cwd=stack.root,
        capture_output=True,
        text=True,
        timeout=600,
    )
    print(res.stdout[-3000:], res.stderr[-3000:])
    stats = report_dir / "locust_stats.csv"
    assert stats.exists(), f"no Locust report (exit {res.returncode}): {res.stderr[-2000:]}"
    with stats.open(newline="") as fh:
        rows = {r["Name"]: r for r in csv.DictReader(fh)}
    total = rows["Aggregated"]
    assert int(total["Request Count"]) > 0
    failures = (
        (report_dir / "locust_failures.csv").read_text() if int(total["Failure Count"]) else ""
    )
    assert int(total["Failure Count"]) == 0, failures
    assert res.returncode == 0, res.stderr[-2000:]
    assert (report_dir / "report.html").stat().st_size > 0
    # the printed summary agrees with Locust's own table (it once read the CSV,
    # written before the last requests finished, and counted fewer)
    summary = re.search(r"loadtest summary \(tunnel\): (\d+) requests", res.stdout)
    table = re.findall(r"^\s+Aggregated\s+(\d+)\s+\d+\(", res.stdout, re.M)
    assert summary and table, res.stdout[-2000:]
    assert summary.group(1) == table[-1]
