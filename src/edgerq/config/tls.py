"""Certificates for the udp carrier: generate the SC's once, fingerprint it, compare pins."""

from __future__ import annotations

import datetime
import hashlib
import logging
import os
import socket
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgerq.errors import ConfigError

log = logging.getLogger("edgerq.tls")


def generate_self_signed(cert_path: Path, key_path: Path, names: list[str]) -> None:
    """Write a new EC P-256 key and a 10-year self-signed certificate for ``names``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0])])
    now = datetime.datetime.now(datetime.UTC)
    alt: list[x509.GeneralName] = []
    for name in names:
        try:
            import ipaddress

            alt.append(x509.IPAddress(ipaddress.ip_address(name)))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=3650))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        # An end-entity certificate (CA:FALSE) without an EKU: qh3 refuses a CA
        # certificate as the server's own, and takes a self-issued one with a TLS EKU
        # out of the trust anchors, so either would fail when given as <ca_file>.
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(key_bytes)
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))


def ensure_certificate(cert_path: Path, key_path: Path) -> bool:
    """Generate the pair if neither exists; return True when it was generated."""
    if cert_path.exists() and key_path.exists():
        return False
    if cert_path.exists() != key_path.exists():
        missing = key_path if cert_path.exists() else cert_path
        raise ConfigError(f"{missing}: missing (the other half of the key pair exists)")
    try:
        generate_self_signed(
            cert_path, key_path, ["edgerq-sc", "localhost", "127.0.0.1", socket.gethostname()]
        )
    except OSError as exc:
        raise ConfigError(
            f"cannot write a new certificate to {cert_path}: {exc.strerror or exc}; "
            "configure <certificate> and <private_key> instead"
        ) from exc
    log.warning(
        "generated a self-signed certificate %s (key %s); its fingerprint is %s",
        cert_path,
        key_path,
        fingerprint_file(cert_path),
    )
    return True


def check_key_pair(cert_path: Path, key_path: Path) -> None:
    """Raise ``ConfigError`` naming the file unless ``cert_path`` holds a PEM
    certificate and ``key_path`` the PEM private key that belongs to it (qh3 would
    fail on either with an error that names neither, or not at all)."""
    cert = _read_certificates(cert_path)[0]
    try:
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except OSError as exc:
        raise ConfigError(
            f"{key_path}: cannot read the private key: {exc.strerror or exc}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"{key_path}: not a PEM private key without a passphrase") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    der = serialization.Encoding.DER
    if key.public_key().public_bytes(der, public) != cert.public_key().public_bytes(der, public):
        raise ConfigError(f"{key_path}: this private key does not belong to {cert_path}")


def check_ca_file(path: Path) -> None:
    """Raise ``ConfigError`` naming the file unless it holds PEM certificates."""
    _read_certificates(path)


def _read_certificates(path: Path) -> list[x509.Certificate]:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the certificate: {exc.strerror or exc}") from exc
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError as exc:
        raise ConfigError(f"{path}: not a PEM certificate") from exc
    if not certificates:
        raise ConfigError(f"{path}: not a PEM certificate")
    return certificates


def fingerprint_der(der: bytes) -> str:
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def fingerprint_file(cert_path: Path) -> str:
    cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
    return fingerprint_der(cert.public_bytes(serialization.Encoding.DER))


def normalize_fingerprint(text: str) -> str:
    """Accept ``AB:CD:…``, ``abcd…`` or ``SHA256:…`` and return ``AB:CD:…``."""
    value = text.strip()
    if value.lower().startswith("sha256:") and len(value.replace(":", "")) > 64:
        value = value[7:]
    hexdigits = value.replace(":", "").replace(" ", "").upper()
    if len(hexdigits) != 64 or any(c not in "0123456789ABCDEF" for c in hexdigits):
        raise ValueError(f"not a SHA-256 fingerprint: {text!r}")
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))
