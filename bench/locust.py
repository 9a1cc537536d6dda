"""Locust on the Compose suite: where the latency and the CPU of a request go.

Runs ``scripts/loadtest`` (headless Locust, the documented 50 users) against
the running Compose stack, interleaved for ``--rounds`` rounds over three
targets, so that drift in the machine's load falls on each alike:

- ``direct``: straight at the web server, from the private network;
- ``sc``: the tunnel without the proxy (``http://sc:3000``, from the public network);
- ``tunnel``: the whole path (proxy → sc → 2 stunnels → sp → web server).

On the udp variant's stack (``COMPOSE_FILE=docker-compose.yml:docker-compose.udp.yml``
in the environment of ``make up`` and of this) the tunnel has no stunnels.
Around every run it reads each container's CPU time (its cgroup) and divides
by the run's requests; an idle spell before the rounds measures what each
container spends doing nothing (healthchecks) per second, and that share is
taken off. It writes ``bench/results/locust.json`` (with the commit, date and
load average) and prints the tables ``docs/compose.md`` shows::

    make up && python -m bench.locust --rounds 3 --duration 50s
    python -m bench.locust --render            # the tables again, from the file
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from bench.cli import DIRTY_REFUSAL
from bench.common import REPO, RESULTS, provenance
from bench.procs import log
from bench.report import markdown_table, provenance_line, write_json

TARGETS = {
    "direct": "direct to the web server",
    "sc": "the tunnel without the proxy (`sc:3000`)",
    "tunnel": "through the tunnel (proxy → sc → 2 stunnels → sp → web server)",
}
SUMMARY = re.compile(
    r"loadtest summary \((?P<target>\w+)\): (?P<requests>\d+) requests, (?P<failures>\d+) "
    r"failures, (?P<rps>[\d.]+) req/s, p50 (?P<p50>[\d.]+) ms, p95 (?P<p95>[\d.]+) ms, "
    r"p99 (?P<p99>[\d.]+) ms"
)
LOCUST_SERVICES = ("loadtest", "loadtest-direct")
"""Locust's own containers: their CPU is the load, not the path."""


def parse_summary(text: str) -> dict[str, Any]:
    """The figures of the ``loadtest summary`` line ``scripts/loadtest`` printed."""
    for line in reversed(text.splitlines()):
        m = SUMMARY.search(line)
        if m:
            out: dict[str, Any] = {k: float(v) for k, v in m.groupdict().items() if k != "target"}
            out["requests"], out["failures"] = int(out["requests"]), int(out["failures"])
            return out
    raise RuntimeError("scripts/loadtest printed no summary line")


def exact_latency(report_dir: Path) -> dict[str, float]:
    """The exact p50/p95/p99 (ms) the locustfile wrote (Locust's own are whole ms)."""
    path = report_dir / "latency.json"
    if not path.exists():
        return {}
    data = json.loads(path.read_text())
    return {f"exact_{k}": float(data[f"{k}_ms"]) for k in ("p50", "p95", "p99", "mean")}


def compose_project() -> str:
    return os.environ.get("COMPOSE_PROJECT_NAME") or REPO.name


def containers(project: str) -> dict[str, str]:
    """Compose service name -> container id of the project's running containers."""
    out = subprocess.run(
        [
            "docker",
            "ps",
            "--no-trunc",
            "--filter",
            f"label=com.docker.compose.project={project}",
            "--format",
            '{{.ID}} {{.Label "com.docker.compose.service"}}',
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found: dict[str, str] = {}
    for line in out.splitlines():
        cid, _, service = line.partition(" ")
        if service and service not in LOCUST_SERVICES:
            found[service] = cid
    return found


def cpu_seconds(container_id: str) -> float:
    """CPU time the container's processes used so far (cgroup v1 or v2)."""
    v1 = Path(f"/sys/fs/cgroup/cpuacct/docker/{container_id}/cpuacct.usage")
    if v1.exists():
        return int(v1.read_text()) / 1e9
    for v2 in (
        Path(f"/sys/fs/cgroup/system.slice/docker-{container_id}.scope/cpu.stat"),
        Path(f"/sys/fs/cgroup/docker/{container_id}/cpu.stat"),
    ):
        if v2.exists():
            for line in v2.read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
    raise RuntimeError(f"no cgroup CPU counter found for container {container_id[:12]}")


def cpu_snapshot(ids: dict[str, str]) -> dict[str, float]:
    return {service: cpu_seconds(cid) for service, cid in ids.items()}


def run_time(duration: str) -> str:
    """A Locust ``--run-time`` (50s, 2m, 1h30m), checked before anything runs."""
    if not re.fullmatch(r"(\d+[smh])+", duration):
        raise argparse.ArgumentTypeError(f"{duration!r}: want a Locust run time, e.g. 50s or 2m")
    return duration


def run_once(target: str, args: argparse.Namespace, report_dir: Path) -> str:
    cmd = [
        str(REPO / "scripts" / "loadtest"),
        "--duration",
        args.duration,
        "--users",
        str(args.users),
        "--target",
        target,
        "--report-dir",
        str(report_dir),
    ]
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if done.returncode != 0:
        sys.stderr.write(done.stdout[-3000:] + done.stderr[-3000:])
        raise RuntimeError(f"scripts/loadtest --target {target} failed ({done.returncode})")
    return done.stdout


def measure(args: argparse.Namespace) -> dict[str, Any]:
    prov = provenance()
    if prov["dirty"] and not args.allow_dirty:
        raise SystemExit(DIRTY_REFUSAL)
    project = compose_project()
    ids = containers(project)
    if "proxy" not in ids or "sc" not in ids:
        raise SystemExit(
            f"no running stack in Compose project '{project}' (make up, or set "
            "COMPOSE_PROJECT_NAME)"
        )
    log(f"idle for {args.idle:g} s: what each container spends doing nothing (healthchecks)")
    before, t0 = cpu_snapshot(ids), time.monotonic()
    time.sleep(args.idle)
    after, t1 = cpu_snapshot(ids), time.monotonic()
    idle = {s: (after[s] - before[s]) / (t1 - t0) for s in ids}
    runs: list[dict[str, Any]] = []
    reports = Path(args.reports)
    for r in range(args.rounds):
        for target in args.targets:
            load = os.getloadavg()[0]
            before, t0 = cpu_snapshot(ids), time.monotonic()
            out = run_once(target, args, reports / f"{r + 1}-{target}")
            after, t1 = cpu_snapshot(ids), time.monotonic()
            summary = parse_summary(out)
            summary |= exact_latency(reports / f"{r + 1}-{target}")
            requests = max(1, summary["requests"])
            cpu_ms = {
                s: max(0.0, after[s] - before[s] - idle[s] * (t1 - t0)) * 1e3 / requests
                for s in ids
            }
            runs.append(
                {"round": r + 1, "target": target, "loadavg": round(load, 2), **summary}
                | {"cpu_ms_per_request": {s: round(v, 3) for s, v in cpu_ms.items()}}
            )
            log(
                f"round {r + 1} {target:>6}: p50 {summary['p50']:g} ms, p95 {summary['p95']:g}"
                f" ms, {summary['rps']:.1f} req/s, {summary['failures']} failures (load {load:.1f})"
            )
    return {
        "provenance": prov,
        "project": project,
        "carrier": "tcp" if "stunnel-sc" in ids else "udp",
        "users": args.users,
        "duration": args.duration,
        "rounds": args.rounds,
        "idle_cpu_ms_per_s": {s: round(v * 1e3, 3) for s, v in idle.items()},
        "runs": runs,
    }


def render(data: dict[str, Any]) -> str:
    runs = data["runs"]
    targets = [t for t in TARGETS if any(r["target"] == t for r in runs)]

    def med(target: str, key: str) -> float:
        return float(statistics.median(r[key] for r in runs if r["target"] == target))

    def latency(run: dict[str, Any], key: str) -> float:
        """Exact where the locustfile wrote it, else Locust's (whole ms under 100)."""
        return float(run.get(f"exact_{key}", run[key]))

    def med_latency(target: str, key: str) -> float:
        return float(statistics.median(latency(r, key) for r in runs if r["target"] == target))

    exact = all("exact_p50" in r for r in runs)
    fmt = "{:.2f} ms" if exact else "{:g} ms"

    lines = [
        f"Locust, {data['users']} users, {data['rounds']} interleaved rounds of "
        f"{data['duration']} per target (medians; "
        + ("exact latencies" if exact else "Locust's latencies: whole ms under 100 ms")
        + "); "
        + provenance_line(data["provenance"]),
        "",
    ]
    direct_p50 = med_latency("direct", "p50") if "direct" in targets else None
    rows = []
    for t in targets:
        p50 = med_latency(t, "p50")
        ratio = f"{p50 / direct_p50:.1f} x" if direct_p50 else "—"
        label = TARGETS[t]
        if t == "tunnel" and data.get("carrier") == "udp":
            label = "through the tunnel (proxy → sc → QUIC → sp → web server)"
        rows.append(
            [
                label,
                f"{med(t, 'rps'):.1f}",
                fmt.format(p50),
                ratio,
                fmt.format(med_latency(t, "p95")),
                fmt.format(med_latency(t, "p99")),
                str(sum(r["failures"] for r in runs if r["target"] == t)),
                " ".join(
                    f"{latency(r, 'p50'):.2f}" if exact else f"{r['p50']:g}"
                    for r in runs
                    if r["target"] == t
                ),
            ]
        )
    lines += markdown_table(
        ["target", "requests/s", "p50", "p50 / direct", "p95", "p99", "failures", "p50 per round"],
        rows,
    )
    services = sorted({s for r in runs for s in r["cpu_ms_per_request"]})
    lines += [
        "",
        "CPU ms per request by container (median over rounds; idle healthcheck share taken off):",
        "",
    ]
    cpu_rows = []
    for s in services:
        cells = []
        for t in targets:
            values = [r["cpu_ms_per_request"].get(s, 0.0) for r in runs if r["target"] == t]
            cells.append(f"{statistics.median(values):.2f}")
        cpu_rows.append([s, *cells])
    lines += markdown_table(["container", *targets], cpu_rows)
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.locust", description=__doc__)
    p.add_argument("--rounds", type=int, default=3, help="interleaved rounds (default 3)")
    p.add_argument(
        "--duration", type=run_time, default="50s", help="Locust run time per run (default 50s)"
    )
    p.add_argument("--users", type=int, default=50, help="Locust users (default 50)")
    p.add_argument(
        "--targets",
        default="direct,sc,tunnel",
        type=lambda s: [t for t in s.split(",") if t],
        help="comma-separated, from direct, sc, tunnel (default all three)",
    )
    p.add_argument("--idle", type=float, default=15.0, help="idle seconds measured first")
    p.add_argument("--results", type=Path, default=RESULTS / "locust.json")
    p.add_argument("--reports", default="/tmp/edgerq-locust", help="Locust's reports go under here")
    p.add_argument("--allow-dirty", action="store_true", help="measure uncommitted changes")
    p.add_argument("--render", action="store_true", help="print the tables from --results")
    args = p.parse_args(argv)
    if args.render:
        print(render(json.loads(args.results.read_text())), end="")
        return 0
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        p.error(f"unknown target(s) {unknown}: choose from {', '.join(TARGETS)}")
    data = measure(args)
    write_json(args.results, data)
    print(render(data), end="")
    log(f"results: {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
