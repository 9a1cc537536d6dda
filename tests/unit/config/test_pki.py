"""``edgerq pki``: keys made where they stay, only public material exported."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509

from edgerq.cli import run
from edgerq.config import pki


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


def test_an_ip_address_gets_an_ip_san(tmp_path: Path) -> None:
    cert_path = pki.make_key("203.0.113.7", tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("203.0.113.7")]


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


def test_two_certificates_of_one_name_stay_apart(tmp_path: Path) -> None:
    """A CAfile holding the old and the new certificate during a rotation: OpenSSL
    looks trust anchors up by subject, so each must have its own, and its key id."""
    old = x509.load_pem_x509_certificate(pki.make_key("sc", tmp_path / "old").read_bytes())
    new = x509.load_pem_x509_certificate(pki.make_key("sc", tmp_path / "new").read_bytes())
    assert old.subject != new.subject
    for cert in (old, new):
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
        aki = cert.extensions.get_extension_for_class(x509.AuthorityKeyIdentifier).value
        assert aki.key_identifier == ski.digest
        assert not any(isinstance(e.value, x509.ExtendedKeyUsage) for e in cert.extensions)
