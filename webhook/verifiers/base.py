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
import json
import logging
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, ValidationError

from webhook.references import ImageReference
from webhook.results import Result

if TYPE_CHECKING:
    from webhook.registry.client import RegistryClient
    from webhook.trust import CompiledTrustStore

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "trustgate.verifiers"
ModelT = TypeVar("ModelT", bound=BaseModel)


@dataclass(frozen=True, slots=True)
class ImageTarget:
    """An image as admitted and the digest it names: all a signature source needs, so the signatures of a
    digest reference can be looked up while its manifest is still being fetched."""

    reference: ImageReference
    digest: str


@dataclass(frozen=True, slots=True)
class ResolvedImage:
    """An image as admitted, with the manifest its reference resolved to (bytes hashed, never trusted)."""

    reference: ImageReference
    digest: str
    manifest: bytes
    media_type: str

    @property
    def target(self) -> ImageTarget:
        return ImageTarget(self.reference, self.digest)

    def child_digests(self) -> tuple[str, ...]:
        """The manifests an index (or Docker manifest list) points at; none for an image manifest."""
        if not self.media_type.endswith(("index.v1+json", "manifest.list.v2+json")):
            return ()
        document = json.loads(self.manifest)
        return tuple(entry["digest"] for entry in document.get("manifests", [])
                     if isinstance(entry, dict) and isinstance(entry.get("digest"), str))


@dataclass(frozen=True, slots=True)
class SignatureMaterial:
    """One candidate signature as a source found it: where it came from, and its raw bytes."""

    label: str
    data: bytes
    media_type: str = ""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Collected:
    """What a source found: the signatures, the faults that kept it from finding others, where it looked."""

    searched: str
    materials: tuple[SignatureMaterial, ...] = ()
    # (where, what went wrong): each becomes a failing entry in the explanation.
    problems: tuple[tuple[str, str], ...] = ()


class SignatureSource(ABC):
    """Where one format keeps the signatures of an image, e.g. a lookaside server or a `.sig` tag."""

    @abstractmethod
    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        """Fetch candidate signatures for `image`, applying this source's limits."""


class ConfigError(ValueError):
    """A configuration fault, located by a field path such as `spec.authorities[0].gpg.trustStore`."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}" if path else message)
        self.path = path
        self.message = message


def location_path(location: Sequence[int | str]) -> str:
    """`('spec', 'keys', 0, 'gpg')` -> `spec.keys[0].gpg`."""
    path = ""
    for part in location:
        path += f"[{part}]" if isinstance(part, int) else f".{part}" if path else str(part)
    return path


def validation_errors(exc: ValidationError) -> list[tuple[str, str]]:
    """Each pydantic error as (field path, message), in the words a config author reads."""
    found = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown field"
        elif error["type"] == "missing":
            message = "required field is missing"
        found.append((location_path(error["loc"]), message))
    return found


def validate_spec(model: type[ModelT], raw: Any, path: str) -> ModelT:
    """Validate a plugin's configuration, raising ConfigError at the first faulty field."""
    if isinstance(raw, model):
        return raw
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        where, message = validation_errors(exc)[0]
        raise ConfigError(f"{path}.{where}" if where else path, message) from None


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
