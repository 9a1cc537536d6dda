"""Figures the fault suite measures: printed at the end of the run (a terminal
summary, so they show without ``-s``) and written as JSON to
``bench/results/faults.json`` (or ``$EDGERQ_FAULT_RESULTS``)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
RESULTS: dict[str, Any] = {}
RUN: dict[str, Any] = {}
"""Which code this run measured, taken at its first figure (``bench.common.provenance``)."""


def results_path() -> Path:
    return Path(os.environ.get("EDGERQ_FAULT_RESULTS", ROOT / "bench" / "results" / "faults.json"))


def record(section: str, key: str, value: Any) -> None:
    """``value`` under ``section``/``key``; a dict gets this run's ``run`` (date,
    commit, dirty) so that, merged with other runs' entries, each says its origin."""
    if not RUN:
        from bench.common import provenance

        RUN.update(provenance())
    if isinstance(value, dict):
        value = {**value, "run": dict(RUN)}
    RESULTS.setdefault(section, {})[key] = value


def write() -> Path | None:
    """Merge this run's sections into the JSON file (sections not run are kept)."""
    if not RESULTS:
        return None
    path = results_path()
    old: dict[str, Any] = {}
    if path.exists():
        try:
            old = json.loads(path.read_text())
        except ValueError:
            old = {}
    for section, values in RESULTS.items():
        old.setdefault(section, {}).update(values)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(old, indent=2, sort_keys=True) + "\n")
    return path


def lines() -> list[str]:
    out: list[str] = []
    if RUN:
        from bench.common import provenance_line

        out.append(provenance_line(RUN))
    for carrier, faults in sorted(RESULTS.get("kill9", {}).items()):
        out.append(f"kill -9 under load, {carrier} carrier (seconds to the first good request):")
        out.append(
            f"  {'target':8} {'round':>5} {'from kill':>10} {'from restart':>13} "
            f"{'load resumed':>13}"
        )
        for f in faults["recoveries"]:
            out.append(
                f"  {f['target']:8} {f['round']:>5} {f['from_kill_s']:>10.2f} "
                f"{f['from_restart_s']:>13.2f} {f['load_resumed_s']:>13.2f}"
            )
        out.append(
            f"  requests ok {faults['ok']} (10 MiB: {faults['ok_big']}), "
            f"failed {faults['failed']}, corrupted {faults['corrupted']}"
        )
    for carrier, p in sorted(RESULTS.get("partition", {}).items()):
        out.append(
            f"partition {p['partition_s']:.0f} s, {carrier}: SP noticed after "
            f"{p['noticed_s']:.1f} s; served again {p['recovery_after_heal_s']:.2f} s after "
            f"healing; ok {p['ok']}, failed {p['failed']}, corrupted {p['corrupted']}"
        )
    for carrier, s in sorted(RESULTS.get("soak", {}).items()):
        out.append(
            f"soak {s['duration_s']:.0f} s, {carrier} ({s['requests_ok']} requests ok, "
            f"{s['big_ok']} of 1 MiB, failed {s['failed']}):"
        )
        for who in ("sc", "sp"):
            f = s[who]
            out.append(
                f"  {who}: fds warm-up max {f['fds_warmup_max']}, after {f['fds_after_max']}, "
                f"final {f['fds_final']}; RSS warm-up {f['rss_warmup_kib'] / 1024:.1f} MiB, "
                f"max after {f['rss_after_max_kib'] / 1024:.1f} MiB, "
                f"final {f['rss_final_kib'] / 1024:.1f} MiB (bound {f['rss_bound_kib'] / 1024:.1f})"
            )
    for name, f in sorted(RESULTS.get("fuzz", {}).items()):
        out.append(f"fuzz {name}: {f['examples']} examples in {f['seconds']:.1f} s")
    return out
