"""`edgerq check`, `--version` and `--help`, run in-process."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from edgerq import __version__
from edgerq.cli import run

ROOT = Path(__file__).resolve().parents[3]
DATA = Path(__file__).resolve().parents[1] / "data"


@pytest.fixture(autouse=True)
def _restore_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``run`` installs its own root handler; put pytest's back afterwards."""
    monkeypatch.delenv("EDGERQ_AUTH_TOKEN", raising=False)
    monkeypatch.delenv("EDGERQ_AUTH_TOKEN_FILE", raising=False)
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_check_consumer_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(ROOT / "sc" / "consumer.xml")]) == 0
    out, err = capsys.readouterr()
    assert "service consumer" in out
    assert "127.0.0.1:12345" in out
    assert "name_of_service1" in out
    assert "11111111-2222-3333-4444-555555555555" in out
    assert "127.0.0.1:3000" in out
    assert "max_connections 50" in out
    assert "configuration is valid" in out
    assert "invalid" not in err


def test_check_provider_sample(capsys: pytest.CaptureFixture[str]) -> None:
    assert run(["check", str(ROOT / "sp" / "provider.xml")]) == 0
    out, _ = capsys.readouterr()
    assert "service provider" in out
    assert "pipe 'pipe1'" in out
    assert "127.0.0.1:12345" in out
    assert "-> 127.0.0.1:3088" in out
    assert "configuration is valid" in out


def test_check_warns_that_without_a_token_any_sp_may_register(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["check", str(ROOT / "sc" / "consumer.xml")]) == 0
    out, _ = capsys.readouterr()
    assert "any SP" in out


def test_check_shows_every_service_with_its_effective_settings(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert run(["check", str(DATA / "consumer_full.xml")]) == 0
    out, _ = capsys.readouterr()
    assert "0.0.0.0:12345" in out
    assert "'inherits'" in out and "127.0.0.1:3000" in out
    assert "max_connections 100" in out and "request_ttl 2.5 s" in out
    assert "'overrides'" in out and "(http)" in out and "0.0.0.0:3001" in out
    assert "token from config" in out
    assert "consumer-secret-4f1a" not in out


def test_check_never_prints_a_token_from_the_environment(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGERQ_AUTH_TOKEN", "env-secret-5150")
    assert run(["check", str(DATA / "provider_full.xml")]) == 0
    out, err = capsys.readouterr()
    assert "token from EDGERQ_AUTH_TOKEN" in out
    assert "env-secret-5150" not in out + err


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("bad/port_70000.xml", "bad/port_70000.xml:9:"),
        ("bad/duplicate_uuid.xml", "bad/duplicate_uuid.xml:12: duplicate service uuid"),
        ("bad/not_xml.xml", "bad/not_xml.xml:1: not well-formed XML"),
        ("bad/provider_udp.xml", "bad/provider_udp.xml:8: udp pipe 'pipe1' must verify the SC"),
        ("bad/provider_missing_hostname.xml", "missing required element(s) <hostname>"),
    ],
)
def test_check_bad_file_exits_1_with_the_reason_on_stderr(
    capsys: pytest.CaptureFixture[str], name: str, reason: str
) -> None:
    assert run(["check", str(DATA / name)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert "invalid configuration" in err
    assert reason in err


def test_check_missing_file(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    path = tmp_path / "absent.xml"
    assert run(["check", str(path)]) == 1
    _, err = capsys.readouterr()
    assert str(path) in err


@pytest.mark.parametrize(
    "argv", [["--version"], ["check", "--version"], ["sc", "--version"], ["sp", "--version"]]
)
def test_version(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 0
    assert f"edgerq {__version__}" in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv", [["--help"], ["check", "--help"], ["sc", "--help"], ["sp", "--help"]]
)
def test_help(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "usage: edgerq" in out
    assert "--log-level" in out


def test_help_lists_the_commands(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        run(["--help"])
    out = capsys.readouterr().out
    for command in ("sc", "sp", "check"):
        assert command in out


@pytest.mark.parametrize("argv", [[], ["check"], ["frobnicate", "x.xml"]])
def test_usage_errors_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_the_ready_line_is_one_json_object_after_its_prefix(
    capsys: pytest.CaptureFixture[str],
) -> None:
    import json
    from typing import Any, cast

    from edgerq.cli import READY_PREFIX, announce_ready

    class Bound:
        def bound(self) -> dict[str, Any]:
            return {"role": "sc", "listeners": {"tcp": 40001}, "services": {}, "admin": None}

    announce_ready(cast(Any, Bound()))
    out = capsys.readouterr().out
    assert out.startswith(READY_PREFIX) and out.endswith("\n") and out.count("\n") == 1
    assert json.loads(out.removeprefix(READY_PREFIX))["listeners"] == {"tcp": 40001}
