"""The udp carrier's certificates (``config.tls``): the SC's pair made once and reused,
SHA-256 fingerprints as ``AB:CD:…``, and pins as people write them."""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import logging
import socket
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from edgerq.config.tls import (
    ensure_certificate,
    fingerprint_der,
    fingerprint_file,
    normalize_fingerprint,
)
from edgerq.errors import ConfigError

EMPTY_SHA256 = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"


def colons(hexdigest: str) -> str:
    upper = hexdigest.upper()
    return ":".join(upper[i : i + 2] for i in range(0, len(upper), 2))


# --- ensure_certificate --------------------------------------------------------------


def test_a_missing_pair_is_made_once_and_then_reused(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="edgerq.tls")
    cert_path, key_path = tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem"
    assert ensure_certificate(cert_path, key_path) is True
    cert_bytes, key_bytes = cert_path.read_bytes(), key_path.read_bytes()
    assert ensure_certificate(cert_path, key_path) is False
    assert ensure_certificate(cert_path, key_path) is False
    assert cert_path.read_bytes() == cert_bytes and key_path.read_bytes() == key_bytes
    assert [r.getMessage() for r in caplog.records] == [
        f"generated a self-signed certificate {cert_path} (key {key_path}); "
        f"its fingerprint is {fingerprint_file(cert_path)}"
    ]


def test_the_key_is_private_and_the_certificate_holds_none(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem"
    ensure_certificate(cert_path, key_path)
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    assert key_path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----")
    assert b"PRIVATE KEY" not in cert_path.read_bytes()
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    assert isinstance(key, ec.EllipticCurvePrivateKey) and key.curve.name == "secp256r1"
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.public_key() == key.public_key()


def test_the_certificate_names_the_sc_for_ten_years_as_an_end_entity(tmp_path: Path) -> None:
    cert_path = tmp_path / "sc-cert.pem"
    ensure_certificate(cert_path, tmp_path / "sc-key.pem")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert cert.subject == cert.issuer  # self-signed
    assert cert.subject.get_attributes_for_oid(x509.NameOID.COMMON_NAME)[0].value == "edgerq-sc"
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["edgerq-sc", "localhost", socket.gethostname()]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca is False
    assert not any(isinstance(e.value, x509.ExtendedKeyUsage) for e in cert.extensions)
    lifetime = cert.not_valid_after_utc - cert.not_valid_before_utc
    assert lifetime == datetime.timedelta(days=3650, minutes=5)
    assert cert.not_valid_before_utc < datetime.datetime.now(datetime.UTC)


@pytest.mark.parametrize("present", ["cert", "key"])
def test_half_a_pair_is_refused_and_left_alone(tmp_path: Path, present: str) -> None:
    cert_path, key_path = tmp_path / "sc-cert.pem", tmp_path / "sc-key.pem"
    kept = cert_path if present == "cert" else key_path
    missing = key_path if present == "cert" else cert_path
    kept.write_bytes(b"left as it is")
    with pytest.raises(ConfigError) as info:
        ensure_certificate(cert_path, key_path)
    assert str(info.value) == f"{missing}: missing (the other half of the key pair exists)"
    assert kept.read_bytes() == b"left as it is" and not missing.exists()


def test_a_pair_that_cannot_be_written_is_a_config_error(tmp_path: Path) -> None:
    cert_path, key_path = tmp_path / "no" / "sc-cert.pem", tmp_path / "no" / "sc-key.pem"
    with pytest.raises(ConfigError) as info:
        ensure_certificate(cert_path, key_path)
    assert str(info.value) == (
        f"cannot write a new certificate to {cert_path}: No such file or directory; "
        "configure <certificate> and <private_key> instead"
    )


# --- fingerprints ----------------------------------------------------------------------


def test_fingerprint_der_is_the_sha256_in_colon_separated_upper_case_pairs() -> None:
    fingerprint = fingerprint_der(b"")
    assert fingerprint == colons(EMPTY_SHA256)
    assert fingerprint.startswith("E3:B0:C4:42:98:FC:1C:14:")
    assert len(fingerprint) == 95 and fingerprint.count(":") == 31
    assert fingerprint_der(b"der") == colons(hashlib.sha256(b"der").hexdigest())


def test_fingerprint_file_is_that_of_the_certificates_der(tmp_path: Path) -> None:
    cert_path = tmp_path / "sc-cert.pem"
    ensure_certificate(cert_path, tmp_path / "sc-key.pem")
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    assert fingerprint_file(cert_path) == colons(cert.fingerprint(hashes.SHA256()).hex())
    assert fingerprint_file(cert_path) == fingerprint_der(
        cert.public_bytes(serialization.Encoding.DER)
    )


def test_two_new_pairs_have_two_fingerprints(tmp_path: Path) -> None:
    ensure_certificate(tmp_path / "a-cert.pem", tmp_path / "a-key.pem")
    ensure_certificate(tmp_path / "b-cert.pem", tmp_path / "b-key.pem")
    assert fingerprint_file(tmp_path / "a-cert.pem") != fingerprint_file(tmp_path / "b-cert.pem")


# --- normalize_fingerprint -----------------------------------------------------------------

PIN = colons(EMPTY_SHA256)


@pytest.mark.parametrize(
    "text",
    [
        PIN,
        PIN.lower(),
        EMPTY_SHA256,
        EMPTY_SHA256.upper(),
        f"SHA256:{PIN}",
        f"sha256:{EMPTY_SHA256}",
        f"  {PIN}\n",
        " ".join(PIN.split(":")),
        PIN[:10].lower() + PIN[10:],
    ],
    ids=[
        "canonical",
        "lower",
        "bare-hex",
        "bare-hex-upper",
        "sha256-prefix",
        "sha256-prefix-bare",
        "surrounding-space",
        "space-separated",
        "mixed-case",
    ],
)
def test_a_pin_is_accepted_however_it_is_written(text: str) -> None:
    assert normalize_fingerprint(text) == PIN


@pytest.mark.parametrize(
    "text",
    [
        "not a fingerprint",
        "",
        EMPTY_SHA256[:-2],  # 31 bytes
        EMPTY_SHA256 + "00",  # 33 bytes
        EMPTY_SHA256[:-1] + "G",
        "SHA1:" + EMPTY_SHA256[:40],
        "sha256:" + EMPTY_SHA256[:-2],
    ],
    ids=["words", "empty", "short", "long", "not-hex", "sha1", "sha256-short"],
)
def test_anything_else_is_refused_with_the_text_quoted(text: str) -> None:
    with pytest.raises(ValueError) as info:
        normalize_fingerprint(text)
    assert str(info.value) == f"not a SHA-256 fingerprint: {text!r}"
