"""The policy-scale configuration: many TrustPolicies over many TrustStores, GPG keys, cosign keys and Notation
certificates mixed, as a large multi-team cluster would hold.

Every key is real (gpg-generated OpenPGP keys, ECDSA P-256 keys and self-signed certificates from
`cryptography`), so loading the configuration does all the work a cluster's would.
"""

from __future__ import annotations

import datetime
import itertools
import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.e2e import infra
from tests.e2e.conftest import write_config
from tests.helpers import key_store, trust_policy

KEY_KINDS = ("gpg", "publicKey", "x509")


def gpg_public_keys(home: Path, count: int) -> list[str]:
    """`count` fresh Ed25519 OpenPGP public keys, armored, generated in one gpg run."""
    batch = "".join(f"Key-Type: eddsa\nKey-Curve: ed25519\nKey-Usage: sign\nName-Real: scale key {index}\n"
                    f"Name-Email: scale-{index}@trustgate.test\nExpire-Date: 1d\n%no-protection\n%commit\n"
                    for index in range(count))
    with infra.gpg_keys(home) as keys:
        infra.run("gpg", "--homedir", str(home), "--batch", "--gen-key", input=batch.encode())
        listing = infra.run("gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-keys")
        lines = listing.splitlines()
        fingerprints = [line.split(":")[9] for previous, line in itertools.pairwise(lines)
                        if line.startswith("fpr:") and previous.startswith("pub:")]
        armored = [infra.run("gpg", "--homedir", str(keys.home), "--batch", "--armor", "--export", fingerprint)
                   for fingerprint in fingerprints]
    if len(armored) != count:
        raise RuntimeError(f"gpg generated {len(armored)} keys, {count} were asked for")
    return armored


def cosign_public_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.public_key().public_bytes(serialization.Encoding.PEM,
                                         serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def ca_certificate(name: str) -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.datetime.now(datetime.UTC)
    certificate = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                   .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                                key_encipherment=False, data_encipherment=False, key_agreement=False,
                                                key_cert_sign=True, crl_sign=True, encipher_only=False,
                                                decipher_only=False), critical=True)
                   .sign(key, hashes.SHA256()))
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


def scale_documents(work: Path, *, policies: int, stores: int, keys: int) -> list[dict[str, Any]]:
    """`stores` TrustStores holding `keys` keys in all (the three kinds in turn) and `policies` TrustPolicies,
    each over its own repositories on one of ten registries, with a GPG, a cosign and a Notation authority
    naming one store (the GPG and cosign ones select half of its keys of their kind)."""
    kinds = [KEY_KINDS[index % len(KEY_KINDS)] for index in range(keys)]
    gpg_keys = iter(gpg_public_keys(work / "scale-gnupg", kinds.count("gpg")))
    entries: list[list[dict[str, Any]]] = [[] for _ in range(stores)]
    for index, kind in enumerate(kinds):
        name = f"key-{index}"
        if kind == "gpg":
            entry: dict[str, Any] = {"name": name, "gpg": next(gpg_keys)}
        elif kind == "publicKey":
            entry = {"name": name, "publicKey": cosign_public_key()}
        else:
            entry = {"name": name, "x509": {"role": "ca", "certificates": ca_certificate(f"scale CA {index}")}}
        entries[index % stores].append(entry)
    documents = [key_store(f"store-{index}", store_entries) for index, store_entries in enumerate(entries)]
    for index in range(policies):
        store_index = index % stores
        store = f"store-{store_index}"

        def half(kind: str, store_entries: Sequence[dict[str, Any]] = entries[store_index]) -> list[str]:
            names = [entry["name"] for entry in store_entries if kind in entry]
            return names[:max(1, len(names) // 2)]

        authorities: list[dict[str, Any]] = []
        if half("gpg"):
            authorities.append({"name": "gpg", "gpg": {"trustStore": store, "keys": half("gpg")}})
        if half("publicKey"):
            authorities.append({"name": "cosign", "cosign": {"trustStore": store, "keys": half("publicKey")}})
        if half("x509"):
            authorities.append({"name": "notation", "notation": {"trustStore": store, "trustedIdentities": ["*"]}})
        documents.append(trust_policy(
            f"team-{index}", [f"registry-{index % 10}.scale.example/team-{index}/**",
                              f"registry-{index % 10}.scale.example/shared/team-{index}-*"],
            authorities, threshold=1))
    return documents


def write_scale_config(directory: Path, work: Path, *, policies: int, stores: int, keys: int,
                       extra: Sequence[dict[str, Any]] = ()) -> Path:
    return write_config(directory, *scale_documents(work, policies=policies, stores=stores, keys=keys), *extra)


def _smoke(directory: Path) -> None:
    """Write a configuration at full scale into `directory` (for profiling by hand)."""
    write_scale_config(directory / "config", directory, policies=1000, stores=100, keys=1000)


if __name__ == "__main__":
    import sys

    _smoke(Path(sys.argv[1]))
    subprocess.run(["ls", sys.argv[1]], check=False)
