"""The daemons' open files limit and listen backlog (issue 12, finding 5)."""

from __future__ import annotations

import logging
import resource
from pathlib import Path

import pytest

from edgerq.runtime import oslimits


def test_the_soft_open_files_limit_is_raised_to_the_hard_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lowered = min(256, hard)
    resource.setrlimit(resource.RLIMIT_NOFILE, (lowered, hard))
    try:
        with caplog.at_level(logging.INFO, "edgerq"):
            assert oslimits.raise_open_files_limit() == (hard, hard)
        assert resource.getrlimit(resource.RLIMIT_NOFILE) == (hard, hard)
        if lowered != hard:
            assert f"raised from {lowered} to" in caplog.text
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_near_the_open_files_limit_one_warning_per_interval() -> None:
    watch = oslimits.OpenFilesWatch(limit=1000)
    assert watch.check(899, now=0.0) == (False, None)
    near, warning = watch.check(900, now=0.0)
    assert near and warning is not None and "RLIMIT_NOFILE 1000" in warning
    assert [watch.check(950, now=t / 10) for t in range(50)] == [(True, None)] * 50
    near, warning = watch.check(990, now=10.0)
    assert warning is not None and "51 client(s) accepted this close to it" in warning


def test_the_backlog_asked_for_is_capped_by_somaxconn() -> None:
    cap = oslimits.somaxconn()
    if cap is None:
        pytest.skip("no /proc/sys/net/core/somaxconn here")
    assert oslimits.effective_backlog(cap + 1) == cap
    assert oslimits.effective_backlog(1) == 1


def test_a_capped_backlog_is_described_with_the_sysctl_to_raise(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sysctl = tmp_path / "somaxconn"
    sysctl.write_text("4096\n")
    monkeypatch.setattr(oslimits, "SOMAXCONN", sysctl)
    assert oslimits.describe_backlog(1024) == "1024"
    assert oslimits.describe_backlog(65535) == (
        "4096 (listen_backlog 65535 is capped by net.core.somaxconn = 4096; "
        "raise that sysctl for more)"
    )
