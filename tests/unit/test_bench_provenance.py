"""Published figures name the code that made them: a bench run refuses a tree with
uncommitted changes unless told otherwise, and then says so in its table."""

from __future__ import annotations

import importlib
from typing import Any

import bench.run
import pytest
from bench.common import provenance
from bench.report import provenance_line

DIRTY = {"commit": "0" * 40, "revision": "abc1234-dirty", "dirty": True, "date": "2026-01-01"}
CLEAN = {**DIRTY, "revision": "abc1234", "dirty": False}


def test_provenance_names_the_commit_checked_out() -> None:
    prov = provenance()
    assert len(prov["commit"]) == 40 and prov["revision"].endswith("-dirty") == prov["dirty"]


def test_a_dirty_tree_is_said_in_the_header_line() -> None:
    assert "DIRTY TREE" in provenance_line(DIRTY)
    assert "DIRTY" not in provenance_line(CLEAN) and "0000000000" in provenance_line(CLEAN)


def test_the_header_line_says_whether_the_daemons_ran_compiled() -> None:
    from edgerq import compiled

    prov = provenance()
    assert prov["build"] == compiled.describe()
    assert prov["build"] in provenance_line(prov)


ARGS: dict[str, list[str]] = {
    "bench.run": ["--quick"],
    "bench.scale": ["--connections", "10"],
    "bench.capacity": ["--quick"],
    "bench.wan.run": ["--quick"],
}


@pytest.mark.parametrize("name", sorted(ARGS))
def test_bench_refuses_a_dirty_tree_before_measuring(
    name: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    module = importlib.import_module(name)
    monkeypatch.setattr(module, "provenance", lambda: dict(DIRTY))
    measured: list[str] = []
    # What each would do next, past the refusal: never reached.
    for step in ("interruptible", "ensure_tools"):
        if hasattr(module, step):
            monkeypatch.setattr(module, step, lambda *a, s=step: measured.append(s))
    if hasattr(module, "why_unavailable"):
        monkeypatch.setattr(module, "why_unavailable", lambda: None)
    assert module.main(ARGS[name]) == 2
    assert measured == []
    assert "--allow-dirty" in capsys.readouterr().err


def test_the_markdown_table_says_dirty_tree() -> None:
    meta: dict[str, Any] = {
        "date": "2026-01-01",
        "machine": {"cores": 2, "cpu_model": "x", "kernel": "6", "python": "3.11"},
        "revision": "abc1234-dirty",
        "dirty": True,
        "rounds": 1,
        "duration_s": 1.0,
    }
    assert "**Dirty tree**" in bench.run.markdown([], meta, {}, [])
    assert "Dirty" not in bench.run.markdown([], {**meta, "dirty": False}, {}, [])


def test_each_fault_figure_carries_the_run_that_made_it(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """faults.json merges sections from several runs: each entry says its own."""
    import json

    from tests.fault import report

    path = tmp_path / "faults.json"
    path.write_text(json.dumps({"kill9": {"udp": {"ok": 1, "run": {"commit": "older"}}}}))
    monkeypatch.setenv("EDGERQ_FAULT_RESULTS", str(path))
    monkeypatch.setattr(report, "RESULTS", {})
    monkeypatch.setattr(report, "RUN", {})
    report.record("soak", "tcp", {"requests": 5})
    report.write()
    data = json.loads(path.read_text())
    assert data["kill9"]["udp"]["run"] == {"commit": "older"}  # kept, with its own origin
    run = data["soak"]["tcp"]["run"]
    assert run["commit"] == provenance()["commit"] and "date" in run and "dirty" in run


def test_the_loss_table_is_rendered_from_its_results_with_their_commit() -> None:
    from bench.loss import render

    run = {**CLEAN, "commit": "1234567890abcdef"}
    entry = {"run": run, "up_mib_s": 12.04, "down_mib_s": 9.7}
    data = {
        "results": {
            "udp 0.02": {**entry, "carrier": "udp", "loss": 0.02},
            "tcp 0.02": {**entry, "carrier": "tcp", "loss": 0.02, "up_mib_s": 150.3},
        }
    }
    text = render(data)
    assert "edgerq 1234567890" in text and "DIRTY" not in text
    assert "| 2 % | 12.0 MiB/s | 9.7 MiB/s | 150.3 MiB/s | 9.7 MiB/s |" in text
    other = {**data["results"]["tcp 0.02"], "run": {**run, "commit": "f" * 16}}
    assert "more than one run" in render({"results": {**data["results"], "tcp 0.02": other}})
