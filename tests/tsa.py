"""A test RFC 3161 timestamp authority: its own root and a TSA certificate (extendedKeyUsage timeStamping,
critical, as RFC 3161 requires), answering with `openssl ts -reply` at a chosen time (libfaketime)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.certificates import NOW, name

_CONFIG = """[ tsa ]
default_tsa = test_tsa
[ test_tsa ]
serial = {serial}
signer_digest = sha256
default_policy = 1.3.6.1.4.1.57264.2
digests = sha256
accuracy = secs:1
ess_cert_id_alg = sha256
"""


def _tool(command: str) -> str:
    found = shutil.which(command)
    if found is None:
        raise RuntimeError(f"{command} is not installed: run scripts/install-test-deps.sh")
    return found


@dataclass(frozen=True)
class TimestampAuthority:
    root: x509.Certificate
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def root_pem(self) -> str:
        return self.root.public_bytes(serialization.Encoding.PEM).decode()

    def stamp(self, data: bytes, at: datetime) -> bytes:
        """The DER TimeStampResp this TSA gives at `at` for a SHA-256 imprint of `data`."""
        with tempfile.TemporaryDirectory(prefix="tg-tsa-") as work:
            directory = Path(work)
            (directory / "data").write_bytes(data)
            (directory / "tsa.pem").write_bytes(self.certificate.public_bytes(serialization.Encoding.PEM))
            (directory / "tsa.key").write_bytes(self.key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
            (directory / "serial").write_text("01\n")
            (directory / "ts.cnf").write_text(_CONFIG.format(serial=directory / "serial"))
            openssl = _tool("openssl")
            subprocess.run([openssl, "ts", "-query", "-data", "data", "-sha256", "-cert", "-out", "query.tsq"],
                           cwd=directory, check=True, capture_output=True)
            subprocess.run([_tool("faketime"), at.strftime("%Y-%m-%d %H:%M:%S"), openssl, "ts", "-reply",
                            "-config", "ts.cnf", "-queryfile", "query.tsq", "-signer", "tsa.pem", "-inkey", "tsa.key",
                            "-out", "reply.tsr"], cwd=directory, check=True, capture_output=True,
                           env={**os.environ, "TZ": "UTC"})
            return (directory / "reply.tsr").read_bytes()


def timestamp_authority(common_name: str = "Test TSA", around: datetime = NOW) -> TimestampAuthority:
    """A root valid from a year before `around` to a year after it, and a TSA certificate it issued."""
    root_key = ec.generate_private_key(ec.SECP256R1())
    key = ec.generate_private_key(ec.SECP256R1())
    root_name, subject = name(f"{common_name} Root"), name(common_name)

    def builder(subject_name: x509.Name, public_key: ec.EllipticCurvePublicKey) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject_name).issuer_name(root_name).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(around - timedelta(days=365)).not_valid_after(around + timedelta(days=365)))

    root = (builder(root_name, root_key.public_key())
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .sign(root_key, hashes.SHA256()))
    certificate = (builder(subject, key.public_key())
                   .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=False, crl_sign=False, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
                   .sign(root_key, hashes.SHA256()))
    return TimestampAuthority(root, certificate, key)
