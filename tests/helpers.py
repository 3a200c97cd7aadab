"""Small builders shared by unit tests: resources as the CLI would load them, armored keys."""

from __future__ import annotations

import hashlib
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from webhook.artifacts import ResolvedImage
from webhook.config import LoadedResources, Origin
from webhook.policy.models import TrustPolicy, TrustStore
from webhook.references import parse_reference
from webhook.trust import CompiledTrustStore, compile_trust_store


def armor_keys(binary_keyring: bytes) -> list[str]:
    """Armored public key blocks, one per primary key, from a binary keyring."""
    with tempfile.TemporaryDirectory(prefix="tg-t-") as home:
        subprocess.run(["gpg", "--homedir", home, "--batch", "--import"], input=binary_keyring,
                       capture_output=True, check=True)
        listing = subprocess.run(["gpg", "--homedir", home, "--batch", "--with-colons", "--list-keys"],
                                 capture_output=True, check=True, text=True).stdout
        fingerprints, previous = [], ""
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr" and previous == "pub":
                fingerprints.append(fields[9])
            if fields[0] in ("pub", "sub", "uid"):
                previous = fields[0]
        armored = [subprocess.run(["gpg", "--homedir", home, "--batch", "--armor", "--export", fpr],
                                  capture_output=True, check=True, text=True).stdout for fpr in fingerprints]
        subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
    return armored


def trust_store(name: str, keys: dict[str, str]) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": name},
        "spec": {"keys": [{"name": key_name, "gpg": armored} for key_name, armored in keys.items()]},
    }


def key_store(name: str, entries: list[dict[str, Any]]) -> dict[str, Any]:
    """A TrustStore with entries of any kind, e.g. `{"name": "k", "publicKey": PEM}`."""
    return {
        "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": name},
        "spec": {"keys": entries},
    }


def trust_policy(name: str, images: list[str], authorities: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": name},
        "spec": {"images": images, "authorities": authorities, **spec},
    }


def resources(*documents: dict[str, Any]) -> LoadedResources:
    stores, policies = [], []
    for document in documents:
        origin = Origin("test.yaml", document["kind"], document["metadata"]["name"])
        if document["kind"] == "TrustStore":
            stores.append((origin, TrustStore.model_validate(document)))
        else:
            policies.append((origin, TrustPolicy.model_validate(document)))
    return LoadedResources(tuple(stores), tuple(policies))


def resolved(reference: str, manifest: bytes, *, default_tag: bool = False) -> ResolvedImage:
    ref = parse_reference(reference)
    if default_tag:
        ref = ref.with_default_tag()
    return ResolvedImage(ref, f"sha256:{hashlib.sha256(manifest).hexdigest()}", manifest,
                         "application/vnd.docker.distribution.manifest.v2+json")


def read(path: Path) -> bytes:
    return path.read_bytes()


def record_store_compiles(monkeypatch: Any, module: Any) -> list[str]:
    """The names of the TrustStores `module` compiles from now on, in order (each still compiled as before)."""
    compiled: list[str] = []

    def recording(store: TrustStore) -> CompiledTrustStore:
        compiled.append(store.metadata.name)
        return compile_trust_store(store)

    monkeypatch.setattr(module, "compile_trust_store", recording)
    return compiled
