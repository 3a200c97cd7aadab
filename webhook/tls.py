"""Serving certificates: a self-signed one for `serve` without `--tls-cert`, and the TLS settings."""

from __future__ import annotations

import datetime
import ipaddress
import os
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.scratch import ScratchRoot

# TLS 1.2+ AEAD suites only (TLS 1.3 suites are always enabled by OpenSSL and are all AEAD).
MODERN_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# Serving keys written by this process (self-signed, or from the cluster's Secret) are removed with it.
TLS_FILES = ScratchRoot("trustgate-tls-")


def _san(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def write_self_signed(hosts: list[str], directory: Path | None = None, days: int = 30) -> tuple[Path, Path]:
    """Write a self-signed ECDSA P-256 serving certificate for `hosts`; return (cert, key) paths."""
    directory = directory or Path(TLS_FILES.directory())
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trustgate {hosts[0]}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName([_san(host) for host in dict.fromkeys(hosts)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "tls.crt", directory / "tls.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    return cert_path, key_path


class CertificateExpiry:
    """The expiry (Unix time) of the first certificate in a PEM file, read again only when the file changes:
    the serving certificate is rotated in place, and a scrape must see the one being served."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._expiry = float("nan")

    def __call__(self) -> float:
        try:
            stat = self.path.stat()
            if (stat.st_mtime_ns, stat.st_size) != self._seen:
                certificate = x509.load_pem_x509_certificate(self.path.read_bytes())
                self._seen = (stat.st_mtime_ns, stat.st_size)
                self._expiry = certificate.not_valid_after_utc.timestamp()
        except (OSError, ValueError):
            return float("nan")  # no certificate to speak of: no number rather than a stale one
        return self._expiry
