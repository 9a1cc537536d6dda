"""``edgerq pki`` on the command line (``cli.pki``): its actions, what each prints, exit
statuses, and refusals on stderr. What makes the keys and tokens is ``config.pki``
(``tests/unit/config/test_pki.py``)."""

from __future__ import annotations

import logging
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from edgerq.cli import run
from edgerq.config import pki


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """``run`` installs its own root handler; put pytest's back afterwards."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_key_and_certificate_for_a_dns_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["pki", "key", "edge.example.test", "--out", str(tmp_path)]) == 0
    key = tmp_path / "edge.example.test-key.pem"
    cert_path = tmp_path / "edge.example.test-cert.pem"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in key.read_bytes()
    assert b"PRIVATE KEY" not in cert_path.read_bytes()
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge.example.test"]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    out = capsys.readouterr().out
    assert pki.fingerprint(cert) in out
    assert "stays on this host" in out


def test_existing_files_are_kept_unless_forced(tmp_path: Path) -> None:
    pki.make_key("sp", tmp_path)
    before = (tmp_path / "sp-key.pem").read_bytes()
    assert run(["pki", "key", "sp", "--out", str(tmp_path)]) == 1
    assert (tmp_path / "sp-key.pem").read_bytes() == before
    assert run(["pki", "key", "sp", "--out", str(tmp_path), "--force"]) == 0
    assert (tmp_path / "sp-key.pem").read_bytes() != before


def test_token_is_random_private_and_not_overwritten(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    assert run(["pki", "token", str(a)]) == 0
    assert run(["pki", "token", str(b)]) == 0
    assert a.read_text() != b.read_text() and len(a.read_text().strip()) == 64
    assert stat.S_IMODE(a.stat().st_mode) == 0o600
    assert run(["pki", "token", str(a)]) == 1


def test_export_refuses_a_key_and_copies_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert = pki.make_key("sc", tmp_path / "own")
    pki.make_token(tmp_path / "own" / "pipe-token")
    bundle = tmp_path / "bundle"
    key = tmp_path / "own" / "sc-key.pem"
    assert run(["pki", "export", str(bundle), str(cert), str(key)]) == 1
    assert "holds a private key" in capsys.readouterr().err
    assert not bundle.exists()
    assert run(["pki", "export", str(bundle), str(cert), str(tmp_path / "own" / "pipe-token")]) == 0
    assert sorted(p.name for p in bundle.iterdir()) == ["pipe-token", "sc-cert.pem"]


def test_show_prints_the_fingerprint_and_refuses_keys(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_path = pki.make_key("sc", tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert run(["pki", "show", str(cert_path)]) == 0
    assert pki.fingerprint(cert) in capsys.readouterr().out
    assert run(["pki", "show", str(tmp_path / "sc-key.pem")]) == 1


def test_prefix_names_the_files(tmp_path: Path) -> None:
    assert run(["pki", "key", "10.9.8.7", "--out", str(tmp_path), "--prefix", "sc"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["sc-cert.pem", "sc-key.pem"]


# --- what each action prints ------------------------------------------------------------


def test_key_prints_where_the_key_stays_and_the_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert run(["pki", "key", "sc.example.test", "--out", str(tmp_path), "--prefix", "sc"]) == 0
    cert_path = tmp_path / "sc-cert.pem"
    (described,) = pki.describe_file(cert_path)
    assert capsys.readouterr().out == (
        f"key:         {tmp_path / 'sc-key.pem'} (stays on this host)\ncertificate: {described}\n"
    )


def test_token_prints_where_it_goes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    token = tmp_path / "secrets" / "pipe-token"
    assert run(["pki", "token", str(token)]) == 0
    assert capsys.readouterr().out == (
        f"token: {token} (mode 0600; copy it to the other host's token file)\n"
    )


def test_a_refusal_is_one_line_on_stderr_and_nothing_on_stdout(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    token = tmp_path / "pipe-token"
    pki.make_token(token)
    assert run(["pki", "token", str(token)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err == f"edgerq pki: {token} exists: keep it, or pass --force to replace it\n"
    assert run(["pki", "token", str(token), "--force"]) == 0


def test_show_prints_every_file_and_says_what_is_not_a_certificate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cert_path = pki.make_key("sc", tmp_path)
    token = tmp_path / "pipe-token"
    pki.make_token(token)
    assert run(["pki", "show", str(cert_path), str(token)]) == 0
    (described,) = pki.describe_file(cert_path)
    assert capsys.readouterr().out == (
        f"{described}\n{token}: not a certificate (64 bytes; a token?)\n"
    )


def test_show_of_a_missing_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "absent.pem"
    assert run(["pki", "show", str(missing)]) == 1
    assert capsys.readouterr().err == (
        f"edgerq pki: [Errno 2] No such file or directory: '{missing}'\n"
    )


def test_export_prints_each_file_copied(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cert = pki.make_key("sc", tmp_path / "own")
    bundle = tmp_path / "bundle"
    assert run(["pki", "export", str(bundle), str(cert)]) == 0
    assert capsys.readouterr().out == f"exported {bundle / 'sc-cert.pem'}\n"


@pytest.mark.parametrize(
    "argv", [["pki"], ["pki", "rotate"], ["pki", "key"], ["pki", "export", "d"]]
)
def test_an_incomplete_pki_command_is_a_usage_error(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as info:
        run(argv)
    assert info.value.code == 2
    assert capsys.readouterr().err.startswith("usage: edgerq pki")
