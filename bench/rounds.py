"""``make bench``'s measuring: wrk rounds at each path interleaved with direct, and the
figures of a path (medians, ratio to the direct rounds paired with it, CPU per request
by role) that the results are made of."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field
from typing import Any

from bench.cpu import session_cpu_seconds
from bench.paths import PATH_TITLES
from bench.procs import log
from bench.wrk import LARGE_BODY, Scenario, WrkResult, run_wrk


def cpu_role(proc_name: str) -> str:
    """Whose CPU a benchmark process's time is: the SC, the SP, or the relay itself."""
    if proc_name.endswith("-sc"):
        return "SC"
    if proc_name.endswith("-sp"):
        return "SP"
    if proc_name.startswith("stunnel"):
        return "stunnel"
    return "ssh" if proc_name.startswith("ssh") else proc_name


Sessions = dict[str, list[int]]
"""CPU role -> the session ids (the processes' own pids) whose time is that role's."""


def cpu_by_role(sessions: Sessions) -> dict[str, float]:
    return {role: sum(session_cpu_seconds(s) for s in ids) for role, ids in sessions.items()}


@dataclass
class Cell:
    scenario: Scenario
    path: str
    rounds: list[WrkResult] = field(default_factory=list)
    direct_rounds: list[WrkResult] = field(default_factory=list)
    cpu_rounds: list[dict[str, float]] = field(default_factory=list)
    """CPU seconds each role spent in each round (same order as ``rounds``)."""

    @property
    def cpu_unit(self) -> str:
        return "MB" if self.scenario.bulk else "request"

    def cpu_per_unit(self) -> dict[str, float]:
        """Median CPU microseconds per request (per MB for bulk), by role and in total."""
        if not self.cpu_rounds:  # direct: no relay of ours to read
            return {}
        per_round: list[dict[str, float]] = []
        for result, cpu in zip(self.rounds, self.cpu_rounds, strict=True):
            units = result.requests * LARGE_BODY / 1e6 if self.scenario.bulk else result.requests
            if units <= 0:
                continue
            shares = {role: seconds * 1e6 / units for role, seconds in cpu.items()}
            shares["total"] = sum(shares.values())
            per_round.append(shares)
        if not per_round:
            return {}
        return {role: float(statistics.median(r[role] for r in per_round)) for role in per_round[0]}

    def cpu_text(self) -> str:
        shares = self.cpu_per_unit()
        if not shares:
            return ""
        total = shares.pop("total")
        if len(shares) == 1:
            return f"{total:.0f}"
        return " + ".join(f"{role} {v:.0f}" for role, v in shares.items()) + f" = {total:.0f}"

    @staticmethod
    def _median(results: list[WrkResult], attr: str) -> float:
        return float(statistics.median(getattr(r, attr) for r in results))

    def median(self, attr: str) -> float:
        return self._median(self.rounds, attr)

    def direct_median(self, attr: str) -> float:
        return self._median(self.direct_rounds, attr)

    @property
    def metric(self) -> str:
        return "mb_per_s" if self.scenario.bulk else "requests_per_s"

    @property
    def ratio(self) -> float | None:
        if not self.direct_rounds:
            return None
        base = self.direct_median(self.metric)
        return self.median(self.metric) / base if base else None

    @property
    def errors(self) -> int:
        return sum(r.errors for r in self.rounds)

    def as_dict(self) -> dict[str, Any]:
        ratio = self.ratio
        out: dict[str, Any] = {
            "scenario": self.scenario.key,
            "path": self.path,
            "req_s": round(self.median("requests_per_s"), 1),
            "mb_s": round(self.median("mb_per_s"), 2),
            "p50_ms": round(self.median("p50_ms"), 3),
            "p99_ms": round(self.median("p99_ms"), 3),
            "errors": self.errors,
            "ratio": None if ratio is None else round(ratio, 3),
            "rounds": [r.as_dict() for r in self.rounds],
        }
        if self.cpu_rounds:
            out["cpu_unit"] = self.cpu_unit
            out["cpu_us_per_unit"] = {k: round(v, 1) for k, v in self.cpu_per_unit().items()}
            out["cpu_s_rounds"] = [{k: round(v, 3) for k, v in c.items()} for c in self.cpu_rounds]
        if self.direct_rounds:
            out["p99_added_ms"] = round(self.median("p99_ms") - self.direct_median("p99_ms"), 3)
            out["direct_rounds"] = [r.as_dict() for r in self.direct_rounds]
        return out


def direct_cell(scenario: Scenario, cells: list[Cell]) -> Cell:
    """All direct rounds of a scenario (run paired with the paths) as one row."""
    rounds = [r for c in cells if c.scenario == scenario for r in c.direct_rounds]
    return Cell(scenario, "direct", rounds)


def measure(
    wrk: str,
    ports: dict[str, int],
    direct_port: int,
    scenarios: list[Scenario],
    rounds: int,
    duration: float,
    sessions: dict[str, Sessions],
) -> list[Cell]:
    cells: list[Cell] = []
    for scenario in scenarios:
        row = {name: Cell(scenario, name) for name in ports}
        cells.extend(row.values())
        for n in range(1, rounds + 1):
            for name, port in ports.items():
                for label, target, bucket in (
                    ("direct", direct_port, row[name].direct_rounds),
                    (name, port, row[name].rounds),
                ):
                    watched = sessions.get(label, {})
                    cpu_before = cpu_by_role(watched)
                    result = run_wrk(wrk, target, scenario, duration)
                    bucket.append(result)
                    if label != "direct":
                        after = cpu_by_role(watched)
                        row[name].cpu_rounds.append(
                            {role: after[role] - cpu_before[role] for role in after}
                        )
                    unit = (
                        f"{result.mb_per_s:8.1f} MB/s"
                        if scenario.bulk
                        else f"{result.requests_per_s:8.0f} req/s"
                    )
                    err = f"  ERRORS: {result.error_text}" if result.errors else ""
                    log(
                        f"  {scenario.key:<15} round {n}/{rounds} {label:<19} {unit}  "
                        f"p50 {result.p50_ms:7.2f} ms  p99 {result.p99_ms:7.2f} ms{err}"
                    )
    return cells


def nagle_notes(cells: list[Cell]) -> list[str]:
    notes = []
    for cell in cells:
        if cell.scenario.bulk or cell.scenario.close or not cell.direct_rounds:
            continue
        p99, base = cell.median("p99_ms"), cell.direct_median("p99_ms")
        if 36.0 <= p99 <= 50.0 and base < 15.0 and cell.median("p50_ms") < 10.0:
            notes.append(
                f"{PATH_TITLES[cell.path]}, {cell.scenario.title}: p99 {p99:.1f} ms vs direct "
                f"{base:.1f} ms looks like Nagle + delayed ACK (~40 ms; "
                + (
                    "OpenSSH sets TCP_NODELAY only on interactive sessions)"
                    if cell.path == "ssh-R"
                    else "TCP_NODELAY missing on a hop)"
                )
            )
    return notes
