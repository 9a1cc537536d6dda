"""``edgerq`` run in-process end to end (``run()``): ``edgerq check`` on the samples and
on bad files. The grammar alone (``--version``, ``--help``, usage errors, the log
options) is ``test_parser.py``; the ready line and reloads ``test_runner.py``."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

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


# --- edgerq fingerprint ---------------------------------------------------------------------


def udp_consumer(tmp_path: Path) -> tuple[Path, Path]:
    """A consumer.xml with a udp listener whose pair is in ``tmp_path`` (not made yet)."""
    cert = tmp_path / "sc-cert.pem"
    path = tmp_path / "consumer.xml"
    path.write_text(
        "<service_consumer><listener><port>4433</port><protocol>udp</protocol>"
        f"<certificate>{cert}</certificate><private_key>{tmp_path / 'sc-key.pem'}"
        "</private_key></listener><services><service>"
        "<uuid>11111111-2222-3333-4444-555555555555</uuid><port>3000</port></service>"
        "</services></service_consumer>"
    )
    return path, cert


def test_fingerprint_makes_the_pair_once_and_prints_its_fingerprint(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from edgerq.config.tls import fingerprint_file

    path, cert = udp_consumer(tmp_path)
    assert run(["fingerprint", str(path)]) == 0
    first = capsys.readouterr().out
    assert first == f"{fingerprint_file(cert)}  {cert}\n"
    assert run(["fingerprint", str(path)]) == 0
    assert capsys.readouterr().out == first  # the same pair, not a new one


def test_fingerprint_of_a_provider_config_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    path = ROOT / "sp" / "provider.xml"
    assert run(["fingerprint", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"edgerq: {path} is a provider config; fingerprint reads consumer.xml\n"


def test_fingerprint_without_a_udp_listener_is_refused(
    capsys: pytest.CaptureFixture[str],
) -> None:
    path = ROOT / "sc" / "consumer.xml"
    assert run(["fingerprint", str(path)]) == 1
    assert capsys.readouterr().err == (f"edgerq: {path} has no udp listener and no certificate\n")


def test_fingerprint_with_half_a_pair_says_which_half_is_missing(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path, cert = udp_consumer(tmp_path)
    cert.write_text("a certificate whose key was lost")
    assert run(["fingerprint", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == (
        f"edgerq: {tmp_path / 'sc-key.pem'}: missing (the other half of the key pair exists)\n"
    )
