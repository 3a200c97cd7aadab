"""Signatures of an image found as OCI referrers: Notary Project signatures and cosign's sigstore bundles.

Asks the referrers API (`/v2/<name>/referrers/<digest>?artifactType=...`, OCI distribution 1.1) first and,
when the registry does not offer it (404, or an answer that is not an image index, as docker-registry 2.8
gives), the referrers tag schema: an index tagged `sha256-<hex>` next to the image. Until it is known which
one a registry offers, both are asked at once; then only that one, for REFERRERS_MODE_SECONDS (a registry
may be upgraded), as ORAS and notation remember it too. Each listed manifest must
be of the wanted kind (a Notary signature: artifactType or config mediaType
`application/vnd.cncf.notary.signature`; a sigstore bundle: artifactType
`application/vnd.dev.sigstore.bundle.v0.3+json` or an older bundle version) with exactly one layer of that
kind's media types and a `subject` naming the image's digest; that layer's blob becomes the material. The
subject is only where the registry filed it: the verifiers check what the signed content names.

Within one verification (`shared_lookups`), an image's referrers index is fetched once, however many
authorities (Notation and cosign alike) look for their signatures in it, at once or one after another: the
index is asked for unfiltered and each kind picks its own entries.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Literal

from webhook import strictjson
from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.cache import ExpiringLRU
from webhook.registry.client import RegistryClient, RegistryError
from webhook.sources.base import SignatureSource

NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
ENVELOPE_MEDIA_TYPES = ("application/jose+json", "application/cose")
# The sigstore bundle media types; v0.3 spells its version in the type, older ones as a parameter.
SIGSTORE_BUNDLE_MEDIA_TYPES = (
    "application/vnd.dev.sigstore.bundle.v0.3+json",
    "application/vnd.dev.sigstore.bundle+json;version=0.3",
    "application/vnd.dev.sigstore.bundle+json;version=0.2",
    "application/vnd.dev.sigstore.bundle+json;version=0.1",
)
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_REFERRERS_BYTES = 4 * 1024 * 1024
MAX_SIGNATURES = 16
MAX_ENVELOPE_BYTES = 1024 * 1024
REFERRERS_MODE_SECONDS = 300.0
REFERRERS_MODE_ENTRIES = 256  # registries, per authority that reads referrers
REFERRERS_MODE_BYTES = 128 * 1024
MAX_SHARED_LOOKUPS = 64


@dataclass(frozen=True, slots=True)
class ReferrerKind:
    """One format of signature kept as a referrer: the artifact types that mark it and its layer media types."""

    description: str
    artifact_types: tuple[str, ...]
    layer_media_types: tuple[str, ...]
    # Also accepted in place of an artifactType, as the config media type (how older clients mark artifacts).
    config_media_type: str | None = None
    # Further artifact types an index may list such a manifest under; the manifest itself is then checked.
    also_listed_as: tuple[str, ...] = ()


NOTARY_SIGNATURES = ReferrerKind("Notary Project signature", (NOTARY_SIGNATURE,), ENVELOPE_MEDIA_TYPES,
                                 NOTARY_SIGNATURE)
# cosign 3 files its bundles in the referrers tag schema's index under the empty config's media type.
SIGSTORE_BUNDLES = ReferrerKind("sigstore bundle", SIGSTORE_BUNDLE_MEDIA_TYPES, SIGSTORE_BUNDLE_MEDIA_TYPES,
                                also_listed_as=("application/vnd.oci.empty.v1+json",))

ReferrersMode = Literal["api", "tag"]


def referrers_tag(digest: str) -> str:
    """`sha256:abc...` -> `sha256-abc...`, the tag the referrers tag schema files an image's referrers under."""
    return digest.replace(":", "-")


def signature_descriptors(index: Any, kind: ReferrerKind = NOTARY_SIGNATURES) -> list[dict[str, Any]] | None:
    """The descriptors of `kind` in a referrers index; None when it is not an image index."""
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        return None
    return [entry for entry in index["manifests"]
            if isinstance(entry, dict) and entry.get("artifactType") in (*kind.artifact_types, *kind.also_listed_as)
            and isinstance(entry.get("digest"), str)]


def envelope_layer(manifest: Any, image: ImageTarget,
                   kind: ReferrerKind = NOTARY_SIGNATURES) -> tuple[dict[str, Any] | None, str]:
    """The signature layer descriptor of a referrer manifest, or None with the reason it is not one."""
    if not isinstance(manifest, dict):
        return None, "not a JSON object"
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if manifest.get("artifactType") not in kind.artifact_types and (
            kind.config_media_type is None or config_type != kind.config_media_type):
        return None, f"not a {kind.description} manifest"
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        return None, f"its subject is not {image.digest}"
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return None, "a signature manifest must have exactly one layer"
    layer = layers[0]
    if layer.get("mediaType") not in kind.layer_media_types:
        return None, f"layer media type {layer.get('mediaType')!r} is not a {kind.description}"
    size = layer.get("size")
    if not isinstance(size, int) or not 0 < size <= MAX_ENVELOPE_BYTES or not isinstance(layer.get("digest"), str):
        return None, f"envelope layer size must be 1..{MAX_ENVELOPE_BYTES} bytes with a digest"
    return layer, ""


class _SharedLookups:
    """The referrers lookups of one verification by (registry, repository, digest): the first asker fetches,
    the others await its answer (or its error). Beyond MAX_SHARED_LOOKUPS images, lookups are not shared."""

    def __init__(self) -> None:
        self._lookups: dict[tuple[str, str, str], asyncio.Future[tuple[str, Any]]] = {}

    async def get(self, key: tuple[str, str, str],
                  lookup: Callable[[], Awaitable[tuple[str, Any]]]) -> tuple[str, Any]:
        shared = self._lookups.get(key)
        if shared is None:
            if len(self._lookups) >= MAX_SHARED_LOOKUPS:
                return await lookup()
            shared = asyncio.ensure_future(lookup())
            self._lookups[key] = shared
        # Shielded: one asker giving up does not cancel the lookup the others wait for.
        return await asyncio.shield(shared)


_SHARED: ContextVar[_SharedLookups | None] = ContextVar("shared_referrers_lookups", default=None)


@contextmanager
def shared_lookups() -> Iterator[None]:
    """Referrers lookups made in this context (and the tasks it starts) are shared, each image's once."""
    token = _SHARED.set(_SharedLookups())
    try:
        yield
    finally:
        _SHARED.reset(token)


class OciReferrers(SignatureSource):
    """The referrers of one kind; an instance remembers which lookup each registry offers."""

    def __init__(self, kind: ReferrerKind, limit: int = MAX_SIGNATURES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.kind = kind
        self.limit = limit
        self._clock = clock
        # registry -> what it offers, trusted for REFERRERS_MODE_SECONDS
        self.modes: ExpiringLRU[str, ReferrersMode] = ExpiringLRU(
            "referrers_mode", REFERRERS_MODE_ENTRIES, clock, max_bytes=REFERRERS_MODE_BYTES)

    def _mode(self, registry: str) -> ReferrersMode | None:
        return self.modes.get(registry)

    def _learned(self, registry: str, mode: ReferrersMode) -> None:
        self.modes.put(registry, mode, REFERRERS_MODE_SECONDS)

    async def _from_api(self, image: ImageTarget, registry: RegistryClient) -> tuple[Any, bool]:
        """(the referrers index the API answers or None, whether the registry said it does not offer the API).

        A fault (an error status, a timeout) says nothing about what the registry offers."""
        reference = image.reference
        # Unfiltered: the index serves every kind of referrer (see `shared_lookups`); each picks its own entries.
        path = f"/v2/{reference.path}/referrers/{image.digest}"
        try:
            answer = await registry.get_api(reference, path, MAX_REFERRERS_BYTES)
        except RegistryError:
            return None, False
        try:
            index = strictjson.loads(answer) if answer is not None else None
        except strictjson.StrictJSONError:
            index = None
        if signature_descriptors(index, self.kind) is None:
            return None, True
        return index, False

    async def _from_tag(self, image: ImageTarget, registry: RegistryClient) -> Any:
        manifest = await registry.get_manifest(image.reference, referrers_tag(image.digest))
        return manifest.document if manifest is not None else {"manifests": []}

    async def _referrers(self, image: ImageTarget, registry: RegistryClient) -> tuple[str, Any]:
        reference = image.reference
        by_api = f"referrers API of {reference.repository}"
        by_tag = f"referrers tag {reference.repository}:{referrers_tag(image.digest)}"
        mode = self._mode(reference.domain)
        if mode == "tag":
            return by_tag, await self._from_tag(image, registry)
        if mode == "api":
            index, not_offered = await self._from_api(image, registry)
            if index is not None:
                return by_api, index
            if not_offered:  # the registry no longer offers the API
                self._learned(reference.domain, "tag")
            return by_tag, await self._from_tag(image, registry)
        # Not known yet: both at once, so a registry without the API (docker-registry 2.8) costs no extra round
        # trip; the tag schema's answer is used only when the API gives no image index.
        from_api, from_tag = await asyncio.gather(self._from_api(image, registry), self._from_tag(image, registry),
                                                  return_exceptions=True)
        if isinstance(from_api, BaseException):
            raise from_api
        index, not_offered = from_api
        if index is not None:
            self._learned(reference.domain, "api")
            return by_api, index
        if not_offered:
            self._learned(reference.domain, "tag")
        if isinstance(from_tag, BaseException):
            raise from_tag
        return by_tag, from_tag

    async def _shared_referrers(self, image: ImageTarget, registry: RegistryClient) -> tuple[str, Any]:
        shared = _SHARED.get()
        if shared is None:
            return await self._referrers(image, registry)
        reference = image.reference
        return await shared.get((reference.domain, reference.path, image.digest),
                                lambda: self._referrers(image, registry))

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        reference = image.reference
        try:
            searched, index = await self._shared_referrers(image, registry)
        except RegistryError as exc:
            return Collected("OCI referrers", problems=(("OCI referrers", str(exc)),))
        descriptors = signature_descriptors(index, self.kind)
        if descriptors is None:
            return Collected(searched, problems=((searched, "is not an image index"),))
        materials: list[SignatureMaterial] = []
        problems: list[tuple[str, str]] = []
        limit = registry.settings.max_signatures_per_source or self.limit
        for descriptor in descriptors[:limit]:
            label = f"{reference.repository}@{descriptor['digest']}"
            try:
                manifest = await registry.get_manifest(reference, descriptor["digest"])
                if manifest is None:
                    problems.append((label, "listed as a referrer but not found"))
                    continue
                layer, why = envelope_layer(manifest.document, image, self.kind)
                if layer is None:
                    problems.append((label, why))
                    continue
                data = await registry.get_blob(reference, layer["digest"], limit=MAX_ENVELOPE_BYTES)
            except RegistryError as exc:
                problems.append((label, str(exc)))
                continue
            materials.append(SignatureMaterial(label, data, layer["mediaType"]))
        if len(descriptors) > limit:
            problems.append((searched, f"lists {len(descriptors)} signatures; only the first {limit} "
                                       "were examined"))
        return Collected(searched, tuple(materials), tuple(problems))


class NotationReferrers(OciReferrers):
    def __init__(self, limit: int = MAX_SIGNATURES, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(NOTARY_SIGNATURES, limit, clock)


class BundleReferrers(OciReferrers):
    def __init__(self, limit: int = MAX_SIGNATURES, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(SIGSTORE_BUNDLES, limit, clock)
