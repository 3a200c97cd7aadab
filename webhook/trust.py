"""TrustStores compiled: every key entry parsed and checked once, when the configuration is loaded."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.hazmat.primitives.serialization import load_pem_public_key

from webhook.gpgkeys import GnupgHome, GpgKey, GpgKeyError, GpgKeyring
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


# One parser per key-material field of a TrustStore key entry, besides `gpg` (inspected in the store's keyring).
_KEY_PARSERS: dict[str, Callable[[Any], KeyMaterial]] = {
    "publicKey": _pem_public_key,
    "rekorPublicKey": _rekor_public_key,
    "x509": parse_x509,
}


class SharedUse:
    """Counts the policy generations that hold one compiled object, so that a bundle swap can reuse it and only
    the last generation to let go releases what it holds."""

    def __init__(self) -> None:
        self._holders = 0
        self._released = False
        self._lock = threading.Lock()

    def acquire(self) -> bool:
        """Count one more holder; False if the object was already released (it must then be compiled anew)."""
        with self._lock:
            if self._released:
                return False
            self._holders += 1
            return True

    def release(self) -> bool:
        """Count one holder less; True for the caller that must release the object (the last one, or the
        compilation that made it and never handed it to a generation)."""
        with self._lock:
            if self._released:
                return False
            self._holders = max(0, self._holders - 1)
            self._released = self._holders == 0
            return self._released


@dataclass(frozen=True, slots=True)
class CompiledTrustStore:
    name: str
    keys: Mapping[str, KeyMaterial]
    # The one GNUPGHOME holding every GPG key of the store, shared by every authority that names it.
    gpg_home: GnupgHome | None = field(default=None, repr=False, compare=False)
    # What it was compiled from: an identical TrustStore in the next generation reuses this one.
    source: TrustStore | None = field(default=None, repr=False, compare=False)
    use: SharedUse = field(default_factory=SharedUse, repr=False, compare=False)

    def release(self) -> None:
        """Let go of the store for one generation; the last to let go removes its GNUPGHOME."""
        if self.use.release() and self.gpg_home is not None:
            self.gpg_home.close()


def compile_trust_store(store: TrustStore) -> CompiledTrustStore:
    """Parse every key of `store`; raise ConfigError at the first entry that is not usable key material.

    The store's GPG keys are inspected in one GNUPGHOME, which the compiled store keeps for verification.
    """
    keyring: GpgKeyring | None = None
    try:
        keys: dict[str, KeyMaterial] = {}
        gpg_entries: dict[str, str] = {}  # entry name -> primary fingerprint
        for index, entry in enumerate(store.spec.keys):
            if entry.valueFrom is not None:
                raise ConfigError(
                    f"spec.keys[{index}].valueFrom",
                    f"key material in a {entry.valueFrom.kind} is read only by `trustgate controller` in a "
                    f"cluster; give the {entry.material_field} value inline here",
                )
            field_name = entry.material_field
            try:
                if field_name == "gpg":
                    keyring = keyring or GpgKeyring()
                    gpg_entries[entry.name] = keyring.add(entry.gpg or "")
                    continue
                keys[entry.name] = _KEY_PARSERS[field_name](getattr(entry, field_name))
            except (KeyMaterialError, GpgKeyError) as exc:
                raise ConfigError(f"spec.keys[{index}].{field_name}", str(exc)) from None
            if entry.hashAlgorithm is not None:
                if isinstance(keys[entry.name].key, ed25519.Ed25519PublicKey):
                    raise ConfigError(f"spec.keys[{index}].hashAlgorithm",
                                      "Ed25519 signs the message itself; a hashAlgorithm does not apply")
                keys[entry.name] = replace(keys[entry.name], hash_algorithm=entry.hashAlgorithm)
        if keyring is not None:
            inspected = keyring.keys()
            keys.update((name, inspected[fingerprint]) for name, fingerprint in gpg_entries.items())
    except BaseException:
        if keyring is not None:
            keyring.close()
        raise
    # Entries in the order the TrustStore gives them.
    ordered = {entry.name: keys[entry.name] for entry in store.spec.keys}
    return CompiledTrustStore(store.metadata.name, ordered, keyring.home if keyring is not None else None, store)
