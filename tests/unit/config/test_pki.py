"""``config.pki``: keys made where they stay, random tokens, and only public material
exported. The ``edgerq pki`` command around it: ``tests/unit/cli/test_pki.py``."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes

from edgerq.config import pki
from edgerq.config.pki import PkiError


def test_an_ip_address_gets_an_ip_san(tmp_path: Path) -> None:
    cert_path = pki.make_key("203.0.113.7", tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("203.0.113.7")]


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


# --- make_key ----------------------------------------------------------------------------


def test_make_key_writes_a_private_key_and_a_public_certificate(tmp_path: Path) -> None:
    out = tmp_path / "new" / "folder"  # made if missing
    cert_path = pki.make_key("edge.example.test", out)
    key_path = out / "edge.example.test-key.pem"
    assert cert_path == out / "edge.example.test-cert.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert stat.S_IMODE(cert_path.stat().st_mode) == 0o644
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edge.example.test"]
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime.days == pki.VALID_DAYS


def test_make_key_keeps_existing_files_unless_forced(tmp_path: Path) -> None:
    pki.make_key("sp", tmp_path)
    key_path, cert_path = tmp_path / "sp-key.pem", tmp_path / "sp-cert.pem"
    before = key_path.read_bytes(), cert_path.read_bytes()
    with pytest.raises(PkiError) as info:
        pki.make_key("sp", tmp_path)
    assert str(info.value) == f"{key_path} or {cert_path} exists: keep them, or pass --force"
    assert (key_path.read_bytes(), cert_path.read_bytes()) == before
    pki.make_key("sp", tmp_path, force=True)
    assert key_path.read_bytes() != before[0] and cert_path.read_bytes() != before[1]


def test_half_a_pair_is_kept_too(tmp_path: Path) -> None:
    (tmp_path / "sp-cert.pem").write_text("an old certificate")
    with pytest.raises(PkiError, match="exists: keep them, or pass --force"):
        pki.make_key("sp", tmp_path)
    assert not (tmp_path / "sp-key.pem").exists()


def test_the_fingerprint_is_the_sha256_in_upper_case_pairs(tmp_path: Path) -> None:
    cert = x509.load_pem_x509_certificate(pki.make_key("sc", tmp_path).read_bytes())
    digest = cert.fingerprint(hashes.SHA256()).hex().upper()
    assert pki.fingerprint(cert) == ":".join(digest[i : i + 2] for i in range(0, 64, 2))


# --- make_token --------------------------------------------------------------------------


def test_a_token_is_64_random_hex_digits_in_a_private_file(tmp_path: Path) -> None:
    a, b = tmp_path / "dir" / "a", tmp_path / "b"
    pki.make_token(a)
    pki.make_token(b)
    text = a.read_text()
    assert text.endswith("\n") and len(text) == 65
    assert all(c in "0123456789abcdef" for c in text.strip())
    assert text != b.read_text()
    assert stat.S_IMODE(a.stat().st_mode) == 0o600


def test_a_token_is_never_overwritten_unless_forced(tmp_path: Path) -> None:
    token = tmp_path / "pipe-token"
    pki.make_token(token)
    before = token.read_text()
    with pytest.raises(PkiError) as info:
        pki.make_token(token)
    assert str(info.value) == f"{token} exists: keep it, or pass --force to replace it"
    assert token.read_text() == before
    token.chmod(0o644)
    pki.make_token(token, force=True)
    assert token.read_text() != before
    assert stat.S_IMODE(token.stat().st_mode) == 0o600  # private again


# --- describe_file -----------------------------------------------------------------------


def test_a_certificate_is_described_by_subject_names_expiry_and_fingerprint(
    tmp_path: Path,
) -> None:
    cert_path = pki.make_key("10.9.8.7", tmp_path)
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert pki.describe_file(cert_path) == [
        f"{cert_path}: {cert.subject.rfc4514_string()}, names 10.9.8.7, "
        f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, SHA-256 {pki.fingerprint(cert)}"
    ]


def test_a_bundle_is_described_one_line_per_certificate(tmp_path: Path) -> None:
    first = pki.make_key("a", tmp_path).read_bytes()
    second = pki.make_key("b", tmp_path).read_bytes()
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(first + second)
    lines = pki.describe_file(bundle)
    assert len(lines) == 2
    assert ", names a, " in lines[0] and ", names b, " in lines[1]


def test_a_token_is_not_a_certificate(tmp_path: Path) -> None:
    token = tmp_path / "pipe-token"
    pki.make_token(token)
    assert pki.describe_file(token) == [f"{token}: not a certificate (64 bytes; a token?)"]


def test_a_private_key_is_not_described(tmp_path: Path) -> None:
    pki.make_key("sc", tmp_path)
    key = tmp_path / "sc-key.pem"
    with pytest.raises(PkiError) as info:
        pki.describe_file(key)
    assert str(info.value) == f"{key} holds a private key: it must stay on this host"


# --- export ------------------------------------------------------------------------------


def test_export_copies_certificates_and_tokens_with_their_modes(tmp_path: Path) -> None:
    cert = pki.make_key("sc", tmp_path / "own")
    token = tmp_path / "own" / "pipe-token"
    pki.make_token(token)
    dest = tmp_path / "bundle"
    assert pki.export(dest, [cert, token]) == [dest / "sc-cert.pem", dest / "pipe-token"]
    assert (dest / "sc-cert.pem").read_bytes() == cert.read_bytes()
    assert (dest / "pipe-token").read_bytes() == token.read_bytes()
    assert stat.S_IMODE((dest / "sc-cert.pem").stat().st_mode) == 0o644
    assert stat.S_IMODE((dest / "pipe-token").stat().st_mode) == 0o600


def test_export_refuses_a_key_before_copying_anything(tmp_path: Path) -> None:
    cert = pki.make_key("sc", tmp_path / "own")
    key = tmp_path / "own" / "sc-key.pem"
    dest = tmp_path / "bundle"
    with pytest.raises(PkiError) as info:
        pki.export(dest, [cert, key])  # the certificate comes first: not copied either
    assert str(info.value) == (f"{key} holds a private key: refusing to export it (nothing copied)")
    assert not dest.exists()


def test_export_refuses_a_key_hidden_in_a_bundle(tmp_path: Path) -> None:
    cert = pki.make_key("sc", tmp_path / "own")
    mixed = tmp_path / "own" / "all.pem"
    mixed.write_bytes(cert.read_bytes() + (tmp_path / "own" / "sc-key.pem").read_bytes())
    with pytest.raises(PkiError) as info:
        pki.export(tmp_path / "bundle", [mixed])
    assert str(info.value) == (
        f"{mixed} holds a private key: refusing to export it (nothing copied)"
    )
    assert not (tmp_path / "bundle").exists()
