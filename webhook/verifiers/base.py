"""The one verifier interface, and the registry that finds verifiers by authority type.

A verifier plugin turns an authority's configuration plus the TrustStores it names into a
`CompiledAuthority`. A compiled authority says where its signatures live (`sources`) and verifies one
signature at a time (`verify_signature`): bytes and trust material in, a `Result` with its reason out. It
never opens a socket; the pipeline fetches through the sources and combines the per-signature results.

Built-in types are `gpg`, `cosign` and `notation`. Third parties add a type through the
Python entry-point group `trustgate.verifiers`; a third-party plugin can never replace a built-in type.
"""

from __future__ import annotations

import importlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from importlib.metadata import entry_points
from typing import Any, ClassVar, TypeVar

from pydantic import BaseModel

from webhook.artifacts import ImageTarget, ResolvedImage, SignatureMaterial
from webhook.results import Result
from webhook.sources.base import SignatureSource
from webhook.trust import CompiledTrustStore
from webhook.validation import ConfigError

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trustgate.verifiers"


def find_trust_store(trust_stores: Mapping[str, CompiledTrustStore], name: str, path: str) -> CompiledTrustStore:
    """The TrustStore an authority names at `path`.trustStore, or a ConfigError."""
    store = trust_stores.get(name)
    if store is None:
        raise ConfigError(f"{path}.trustStore", f"TrustStore {name!r} not found")
    return store


KeyT = TypeVar("KeyT")


def select_keys(available: Mapping[str, KeyT], wanted: Sequence[str] | None, store_name: str, kind: str,
                path: str) -> dict[str, KeyT]:
    """The `keys:` subset of an authority (every usable entry when None), each name checked to exist."""
    if wanted is None:
        if not available:
            raise ConfigError(f"{path}.trustStore", f"TrustStore {store_name!r} holds no {kind} entries")
        return dict(available)
    selected = {}
    for index, key_name in enumerate(wanted):
        if key_name not in available:
            raise ConfigError(f"{path}.keys[{index}]", f"no {kind} entry {key_name!r} in TrustStore {store_name!r}")
        selected[key_name] = available[key_name]
    return selected


class CompiledAuthority(ABC):
    """An authority with its trust material loaded and checked, ready to verify signatures."""

    name: str
    verifier_type: str

    @abstractmethod
    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        """The places to look for signatures of `image`."""

    @abstractmethod
    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        """Verify one signature. A passing result names its distinct signer in `Result.signer`."""

    def registries(self) -> Sequence[str]:
        """Registries this authority reads signatures from besides each image's own (none by default)."""
        return ()

    def close(self) -> None:  # noqa: B027 - optional hook, most authorities hold nothing to release
        """Release resources held by the trust material (temporary keyrings, worker state)."""


class VerifierPlugin(ABC):
    """A signature format. `type_name` is the key of the authority entry that selects it."""

    type_name: ClassVar[str]
    spec_model: ClassVar[type[BaseModel]]

    @abstractmethod
    def compile(
        self,
        authority_name: str,
        spec: Any,
        trust_stores: Mapping[str, CompiledTrustStore],
        path: str,
    ) -> CompiledAuthority:
        """Check `spec` (an instance of `spec_model`) against the TrustStores; raise ConfigError on faults."""


_BUILTIN_VERIFIERS: dict[str, str] = {
    "gpg": "webhook.verifiers.gpg:GpgVerifier",
    "cosign": "webhook.verifiers.cosign:CosignVerifier",
    "notation": "webhook.verifiers.notation:NotationVerifier",
}


def _load(target: str) -> type[VerifierPlugin]:
    module_name, _, attribute = target.partition(":")
    plugin: type[VerifierPlugin] = getattr(importlib.import_module(module_name), attribute)
    return plugin


def discover_verifiers() -> dict[str, VerifierPlugin]:
    """Built-in verifiers plus those registered under the `trustgate.verifiers` entry-point group."""
    found: dict[str, VerifierPlugin] = {}
    for name, target in _BUILTIN_VERIFIERS.items():
        found[name] = _load(target)()
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        if entry.name in _BUILTIN_VERIFIERS:
            if entry.value != _BUILTIN_VERIFIERS[entry.name]:
                log.warning("ignoring entry point %s=%s: %r is a built-in verifier type",
                            entry.name, entry.value, entry.name)
            continue
        try:
            plugin_class = entry.load()
            if not (isinstance(plugin_class, type) and issubclass(plugin_class, VerifierPlugin)):
                raise TypeError(f"{entry.value} is not a VerifierPlugin subclass")
            if plugin_class.type_name != entry.name:
                raise TypeError(f"its type_name {plugin_class.type_name!r} differs from the entry-point name")
        except Exception as exc:
            log.error("cannot load verifier plugin %s=%s: %s", entry.name, entry.value, exc)
            continue
        found[entry.name] = plugin_class()
    return found
