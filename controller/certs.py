"""The webhook's TLS material: a private CA and a serving certificate it signs, rotated before expiry.

The Secret holds `ca.crt`/`ca.key` (current CA), `tls.crt`/`tls.key` (serving pair) and, for a while after a
CA rotation, `ca-previous.crt`. The webhook configurations' `caBundle` is the current CA plus the previous
one while it is still valid, so serving certificates of either CA are trusted during the switch-over.

`plan_tls` is a pure function of the Secret's data, the wanted host names and the time: it returns new data
when anything must change, or None.
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from webhook.cluster import TLS_SECRET as TLS_SECRET  # the webhook reads what the controller writes

CA_LIFETIME = datetime.timedelta(days=365)
CA_RENEW_BEFORE = datetime.timedelta(days=90)
SERVING_LIFETIME = datetime.timedelta(days=90)
SERVING_RENEW_BEFORE = datetime.timedelta(days=30)
# Certificates start a little in the past so that nodes with a slow clock accept them at once.
BACKDATE = datetime.timedelta(minutes=5)

CA_CERT, CA_KEY, CA_PREVIOUS = "ca.crt", "ca.key", "ca-previous.crt"
TLS_CERT, TLS_KEY = "tls.crt", "tls.key"


@dataclass(frozen=True, slots=True)
class TlsPlan:
    data: dict[str, bytes]
    reason: str


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def service_hosts(service: str, namespace: str) -> list[str]:
    """The names the API server uses to reach a webhook behind a Service."""
    return [service, f"{service}.{namespace}", f"{service}.{namespace}.svc", f"{service}.{namespace}.svc.cluster.local"]


def issue_ca(now: datetime.datetime) -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"trustgate webhook CA {now:%Y-%m-%d}")])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                     data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                     crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return _pem(certificate), _key_pem(key)


def issue_serving(ca_cert_pem: bytes, ca_key_pem: bytes, hosts: Sequence[str],
                  now: datetime.datetime) -> tuple[bytes, bytes]:
    ca_certificate = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey):
        raise ValueError("the webhook CA key is not an ECDSA key")
    key = ec.generate_private_key(ec.SECP256R1())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_certificate.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + SERVING_LIFETIME, ca_certificate.not_valid_after_utc))
        .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in dict.fromkeys(hosts)]),
                       critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return _pem(certificate), _key_pem(key)


def _load(data: Mapping[str, bytes], name: str) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(data[name])
    except (KeyError, ValueError):
        return None


def _signed_by(certificate: x509.Certificate, issuer: x509.Certificate) -> bool:
    try:
        certificate.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _hosts_of(certificate: x509.Certificate) -> set[str]:
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return set()
    return {str(name.value) for name in names if isinstance(name, x509.DNSName | x509.IPAddress)}


def plan_tls(data: Mapping[str, bytes], hosts: Sequence[str], now: datetime.datetime) -> TlsPlan | None:
    """New Secret data when the CA or the serving certificate is missing, due for renewal or wrong."""
    ca = _load(data, CA_CERT)
    new = dict(data)
    reason = ""
    if ca is None or CA_KEY not in data:
        new = dict(zip((CA_CERT, CA_KEY), issue_ca(now), strict=True))
        reason = "created the webhook CA"
    elif ca.not_valid_after_utc - now <= CA_RENEW_BEFORE:
        new = dict(zip((CA_CERT, CA_KEY), issue_ca(now), strict=True))
        new[CA_PREVIOUS] = data[CA_CERT]
        reason = f"rotated the webhook CA (the old one expires at {ca.not_valid_after_utc:%Y-%m-%d})"
    else:
        previous = _load(data, CA_PREVIOUS)
        if previous is not None and previous.not_valid_after_utc <= now:
            del new[CA_PREVIOUS]
            reason = "dropped the expired previous webhook CA"

    current_ca = x509.load_pem_x509_certificate(new[CA_CERT])
    serving = _load(new, TLS_CERT)
    renew = ""
    if serving is None or TLS_KEY not in new:
        renew = "issued the webhook serving certificate"
    elif not _signed_by(serving, current_ca):
        renew = "issued a serving certificate from the current CA"
    elif serving.not_valid_after_utc - now <= SERVING_RENEW_BEFORE:
        renew = f"renewed the serving certificate (it expires at {serving.not_valid_after_utc:%Y-%m-%d})"
    elif _hosts_of(serving) != set(hosts):
        renew = "reissued the serving certificate for new host names"
    if renew:
        new[TLS_CERT], new[TLS_KEY] = issue_serving(new[CA_CERT], new[CA_KEY], hosts, now)
        reason = f"{reason}; {renew}" if reason else renew
    return TlsPlan(new, reason) if reason else None


def ca_bundle(data: Mapping[str, bytes], now: datetime.datetime) -> bytes:
    """PEM of the CAs a webhook configuration must trust: the current one and a still-valid previous one."""
    bundle = data[CA_CERT].strip() + b"\n"
    previous = _load(data, CA_PREVIOUS)
    if previous is not None and previous.not_valid_after_utc > now:
        bundle += data[CA_PREVIOUS].strip() + b"\n"
    return bundle
