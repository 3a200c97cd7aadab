"""TrustStores compiled: every key entry parsed and checked once, when the configuration is loaded."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from webhook.gpgkeys import GpgKey, GpgKeyError, inspect_gpg_key
from webhook.policy.models import TrustStore, X509Material
from webhook.validation import ConfigError

MIN_RSA_BITS = 2048
_CURVES = (ec.SECP256R1, ec.SECP384R1, ec.SECP521R1)

PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyMaterialError(ValueError):
    """Key material that cannot be used, with the reason."""


@dataclass(frozen=True, slots=True)
class PemPublicKey:
    """A PEM SubjectPublicKeyInfo key (cosign `publicKey`, or a Rekor log key)."""

    pem: str
    key: PublicKey
    rekor: bool = False
    # The digest ECDSA and RSA signatures are made over (a TrustStore key's `hashAlgorithm`).
    hash_algorithm: str = "sha256"


@dataclass(frozen=True, slots=True)
class X509Bundle:
    role: str
    certificates: tuple[x509.Certificate, ...]
    crls: tuple[x509.CertificateRevocationList, ...] = ()


def parse_public_key(text: str) -> PublicKey:
    try:
        key = load_pem_public_key(text.strip().encode())
    except (ValueError, TypeError) as exc:
        raise KeyMaterialError(f"not a PEM public key (SubjectPublicKeyInfo): {exc}") from None
    if isinstance(key, rsa.RSAPublicKey):
        if key.key_size < MIN_RSA_BITS:
            raise KeyMaterialError(f"RSA key of {key.key_size} bits; at least {MIN_RSA_BITS} are required")
        return key
    if isinstance(key, ec.EllipticCurvePublicKey):
        if not isinstance(key.curve, _CURVES):
            raise KeyMaterialError(f"ECDSA curve {key.curve.name} is not supported (P-256, P-384, P-521)")
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise KeyMaterialError(f"unsupported key type {type(key).__name__}")


def _pem_public_key(text: str) -> PemPublicKey:
    return PemPublicKey(text.strip(), parse_public_key(text))


def _rekor_public_key(text: str) -> PemPublicKey:
    return PemPublicKey(text.strip(), parse_public_key(text), rekor=True)


def parse_x509(material: X509Material) -> X509Bundle:
    try:
        certificates = tuple(x509.load_pem_x509_certificates(material.certificates.strip().encode()))
    except ValueError as exc:
        raise KeyMaterialError(f"certificates: not a PEM certificate bundle: {exc}") from None
    crls: list[x509.CertificateRevocationList] = []
    if material.crls is not None:
        blocks = [block for block in material.crls.split("-----END X509 CRL-----") if block.strip()]
        for index, block in enumerate(blocks):
            try:
                crls.append(x509.load_pem_x509_crl((block.strip() + "\n-----END X509 CRL-----\n").encode()))
            except ValueError as exc:
                raise KeyMaterialError(f"crls: CRL {index + 1} is not a PEM X.509 CRL: {exc}") from None
    return X509Bundle(material.role, certificates, tuple(crls))


KeyMaterial = Any  # GpgKey | PemPublicKey | X509Bundle; verifiers pick the kinds they understand


def expires_at(material: KeyMaterial) -> datetime | None:
    """When key material stops being usable by its own terms: a GPG primary key's expiry, or the earliest
    end of validity in a certificate bundle (a chain is only as valid as its shortest-lived member)."""
    if isinstance(material, GpgKey):
        return material.expires
    if isinstance(material, X509Bundle):
        return min((certificate.not_valid_after_utc for certificate in material.certificates), default=None)
    return None


# One parser per key-material field of a TrustStore key entry.
_KEY_PARSERS: dict[str, Callable[[Any], KeyMaterial]] = {
    "gpg": inspect_gpg_key,
    "publicKey": _pem_public_key,
    "rekorPublicKey": _rekor_public_key,
    "x509": parse_x509,
}


@dataclass(frozen=True, slots=True)
class CompiledTrustStore:
    name: str
    keys: Mapping[str, KeyMaterial]


def compile_trust_store(store: TrustStore) -> CompiledTrustStore:
    """Parse every key of `store`; raise ConfigError at the first entry that is not usable key material."""
    keys: dict[str, KeyMaterial] = {}
    for index, entry in enumerate(store.spec.keys):
        if entry.valueFrom is not None:
            raise ConfigError(
                f"spec.keys[{index}].valueFrom",
                f"key material in a {entry.valueFrom.kind} is read only by `trustgate controller` in a cluster; "
                f"give the {entry.material_field} value inline here",
            )
        field_name = entry.material_field
        try:
            keys[entry.name] = _KEY_PARSERS[field_name](getattr(entry, field_name))
        except (KeyMaterialError, GpgKeyError) as exc:
            raise ConfigError(f"spec.keys[{index}].{field_name}", str(exc)) from None
        if entry.hashAlgorithm is not None:
            if isinstance(keys[entry.name].key, ed25519.Ed25519PublicKey):
                raise ConfigError(f"spec.keys[{index}].hashAlgorithm",
                                  "Ed25519 signs the message itself; a hashAlgorithm does not apply")
            keys[entry.name] = replace(keys[entry.name], hash_algorithm=entry.hashAlgorithm)
    return CompiledTrustStore(store.metadata.name, keys)
