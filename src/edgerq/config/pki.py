"""Keys, certificates and tokens: each host makes its own key; only public material crosses.

The public host and the private site each run ``edgerq pki key`` for
themselves. The private key never leaves the host that made it; what the
other side needs is the certificate (for stunnel's ``CAfile``, or the SP's
``<ca_file>``) or its SHA-256 fingerprint (``<server_fingerprint>``), plus
the pipe token, which ``edgerq pki token`` makes on the public host.

``edgerq pki export`` copies files into the folder that is carried to the
other host and refuses anything that holds a private key, so a slip of the
finger cannot ship one.

    edgerq pki key NAME --out DIR [--prefix P]   DIR/P-key.pem (0600), DIR/P-cert.pem
    edgerq pki token FILE            a new random pipe token (0600)
    edgerq pki show FILE...          subject, names, expiry, SHA-256 fingerprint
    edgerq pki export DIR FILE...    copy certificates and tokens only into DIR
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import shutil
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edgerq.errors import EdgerqError

VALID_DAYS = 3650

PRIVATE_MARKER = b"PRIVATE KEY-----"


class PkiError(EdgerqError):
    """A refusal with a message for the operator (exit status 1)."""


def fingerprint(cert: x509.Certificate) -> str:
    return ":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256()))


def _write_private(path: Path, data: bytes, force: bool) -> None:
    """Create ``path`` with mode 0600 from the start (never readable by others)."""
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if force else os.O_EXCL)
    try:
        fd = os.open(path, flags, 0o600)
    except FileExistsError:
        raise PkiError(f"{path} exists: keep it, or pass --force to replace it") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(path, 0o600)


def _certificate(name: str, key: ec.EllipticCurvePrivateKey) -> x509.Certificate:
    """Self-signed, end entity (``CA:FALSE``), no extended key usage: stunnel trusts
    it as the peer's ``CAfile`` and qh3 takes it as the SC's own and as the SP's
    ``<ca_file>`` (see ``edgerq.tls``). Its subject carries a random serial and it
    has key identifiers, so that a ``CAfile`` holding the old and the new
    certificate of one name during a rotation picks the right one (OpenSSL finds
    trust anchors by subject)."""
    try:
        alt: x509.GeneralName = x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        alt = x509.DNSName(name)
    serial = x509.random_serial_number()
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.COMMON_NAME, name),
            x509.NameAttribute(NameOID.SERIAL_NUMBER, f"{serial:x}"[:16]),
        ]
    )
    now = datetime.datetime.now(datetime.UTC)
    public = key.public_key()
    return (
        x509.CertificateBuilder(
            issuer_name=subject,
            subject_name=subject,
            public_key=public,
            serial_number=serial,
            not_valid_before=now - datetime.timedelta(minutes=5),
            not_valid_after=now + datetime.timedelta(days=VALID_DAYS),
        )
        .add_extension(x509.SubjectAlternativeName([alt]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(public), critical=False)
        .sign(key, hashes.SHA256())
    )


def make_key(name: str, out: Path, force: bool = False, prefix: str | None = None) -> Path:
    """A P-256 key (mode 0600) and a self-signed certificate for ``name`` (a DNS
    name or an IP address) in ``out``; returns the certificate's path."""
    out.mkdir(parents=True, exist_ok=True)
    prefix = prefix or name
    key_path, cert_path = out / f"{prefix}-key.pem", out / f"{prefix}-cert.pem"
    if not force and (key_path.exists() or cert_path.exists()):
        raise PkiError(f"{key_path} or {cert_path} exists: keep them, or pass --force")
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write_private(key_path, pem, force=True)
    cert_path.write_bytes(_certificate(name, key).public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return cert_path


def make_token(path: Path, force: bool = False) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path, (secrets.token_hex(32) + "\n").encode(), force)


def describe_file(path: Path) -> list[str]:
    data = path.read_bytes()
    if PRIVATE_MARKER in data:
        raise PkiError(f"{path} holds a private key: it must stay on this host")
    certs = x509.load_pem_x509_certificates(data) if b"CERTIFICATE-----" in data else []
    if not certs:
        return [f"{path}: not a certificate ({len(data.strip())} bytes; a token?)"]
    lines = []
    for cert in certs:
        try:
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
            alt = ", ".join(str(n.value) for n in names)
        except x509.ExtensionNotFound:
            alt = "-"
        lines.append(
            f"{path}: {cert.subject.rfc4514_string()}, names {alt}, "
            f"valid until {cert.not_valid_after_utc:%Y-%m-%d}, SHA-256 {fingerprint(cert)}"
        )
    return lines


def export(dest: Path, files: list[Path]) -> list[Path]:
    """Copy ``files`` into ``dest``, refusing (before copying anything) any that
    holds a private key."""
    for path in files:
        if PRIVATE_MARKER in path.read_bytes():
            raise PkiError(f"{path} holds a private key: refusing to export it (nothing copied)")
    dest.mkdir(parents=True, exist_ok=True)
    copied = []
    for path in files:
        target = dest / path.name
        shutil.copyfile(path, target)
        target.chmod(0o600 if b"CERTIFICATE-----" not in path.read_bytes() else 0o644)
        copied.append(target)
    return copied
