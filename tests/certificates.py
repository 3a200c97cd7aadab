"""Certificates and CRLs made on the fly for unit tests: roots, intermediates, code-signing leaves."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
_DEFAULT_KU = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                            data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                            encipher_only=False, decipher_only=False)
_CA_KU = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                       data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                       encipher_only=False, decipher_only=False)
_UNSET: object = object()


def name(common_name: str, organization: str = "Acme Rockets") -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.COUNTRY_NAME, "US"),
        x509.NameAttribute(NameOID.STATE_OR_PROVINCE_NAME, "WA"),
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, organization),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def pem(self) -> str:
        from cryptography.hazmat.primitives.serialization import Encoding
        return self.certificate.public_bytes(Encoding.PEM).decode()


def issue(
    common_name: str,
    *,
    issuer: Issued | None = None,
    ca: bool = False,
    path_length: int | None = None,
    key_usage: x509.KeyUsage | object | None = _UNSET,
    extended_key_usage: Sequence[x509.ObjectIdentifier] | None = (ExtendedKeyUsageOID.CODE_SIGNING,),
    basic_constraints: bool = True,
    not_before: datetime = NOW - timedelta(days=30),
    not_after: datetime = NOW + timedelta(days=365),
    crl_url: str | None = None,
    serial: int | None = None,
) -> Issued:
    """A certificate signed by `issuer` (self-signed without one), with the extensions asked for."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = name(common_name)
    builder = (x509.CertificateBuilder()
               .subject_name(subject)
               .issuer_name(issuer.certificate.subject if issuer else subject)
               .public_key(key.public_key())
               .serial_number(serial if serial is not None else x509.random_serial_number())
               .not_valid_before(not_before)
               .not_valid_after(not_after)
               .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False))
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False)
    if basic_constraints:
        builder = builder.add_extension(x509.BasicConstraints(ca=ca, path_length=path_length), critical=True)
    usage = (_CA_KU if ca else _DEFAULT_KU) if key_usage is _UNSET else key_usage
    if isinstance(usage, x509.KeyUsage):
        builder = builder.add_extension(usage, critical=True)
    if extended_key_usage is not None and not ca:
        builder = builder.add_extension(x509.ExtendedKeyUsage(list(extended_key_usage)), critical=False)
    if crl_url is not None:
        builder = builder.add_extension(x509.CRLDistributionPoints([x509.DistributionPoint(
            [x509.UniformResourceIdentifier(crl_url)], None, None, None)]), critical=False)
    signer = issuer.key if issuer else key
    return Issued(builder.sign(signer, hashes.SHA256()), key)


def crl(issuer: Issued, revoked: Sequence[x509.Certificate] = (), *, last_update: datetime = NOW - timedelta(days=1),
        next_update: datetime = NOW + timedelta(days=7)) -> x509.CertificateRevocationList:
    builder = (x509.CertificateRevocationListBuilder()
               .issuer_name(issuer.certificate.subject)
               .last_update(last_update)
               .next_update(next_update))
    for certificate in revoked:
        builder = builder.add_revoked_certificate(
            x509.RevokedCertificateBuilder().serial_number(certificate.serial_number)
            .revocation_date(last_update).build())
    return builder.sign(issuer.key, hashes.SHA256())


def ca_chain() -> tuple[Issued, Issued, Issued]:
    """root -> intermediate -> code-signing leaf."""
    root = issue("Acme Root CA", ca=True)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True, path_length=0)
    leaf = issue("release", issuer=intermediate)
    return root, intermediate, leaf
