"""Notary Project signatures of an image, found as OCI referrers.

Asks the referrers API (`/v2/<name>/referrers/<digest>?artifactType=...`, OCI distribution 1.1) first and,
when the registry does not offer it (404, or an answer that is not an image index, as docker-registry 2.8
gives), the referrers tag schema: an index tagged `sha256-<hex>` next to the image. Until it is known which
one a registry offers, both are asked at once; then only that one, for REFERRERS_MODE_SECONDS (a registry
may be upgraded), as ORAS and notation remember it too. Each listed manifest must
be a Notary signature (artifactType or config mediaType `application/vnd.cncf.notary.signature`) with exactly
one envelope layer and a `subject` naming the image's digest; its envelope blob becomes the material.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Literal

from webhook import strictjson
from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.registry.client import RegistryClient, RegistryError
from webhook.sources.base import SignatureSource

NOTARY_SIGNATURE = "application/vnd.cncf.notary.signature"
ENVELOPE_MEDIA_TYPES = ("application/jose+json", "application/cose")
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
MAX_REFERRERS_BYTES = 4 * 1024 * 1024
MAX_SIGNATURES = 16
MAX_ENVELOPE_BYTES = 1024 * 1024
REFERRERS_MODE_SECONDS = 300.0

ReferrersMode = Literal["api", "tag"]


def referrers_tag(digest: str) -> str:
    """`sha256:abc...` -> `sha256-abc...`, the tag the referrers tag schema files an image's referrers under."""
    return digest.replace(":", "-")


def signature_descriptors(index: Any) -> list[dict[str, Any]] | None:
    """The Notary signature descriptors of a referrers index; None when it is not an image index."""
    if not isinstance(index, dict) or not isinstance(index.get("manifests"), list):
        return None
    return [entry for entry in index["manifests"]
            if isinstance(entry, dict) and entry.get("artifactType") == NOTARY_SIGNATURE
            and isinstance(entry.get("digest"), str)]


def envelope_layer(manifest: Any, image: ImageTarget) -> tuple[dict[str, Any] | None, str]:
    """The envelope layer descriptor of a signature manifest, or None with the reason it is not one."""
    if not isinstance(manifest, dict):
        return None, "not a JSON object"
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, dict) else None
    if NOTARY_SIGNATURE not in (manifest.get("artifactType"), config_type):
        return None, "not a Notary Project signature manifest"
    subject = manifest.get("subject")
    if not isinstance(subject, dict) or subject.get("digest") != image.digest:
        return None, f"its subject is not {image.digest}"
    layers = manifest.get("layers")
    if not isinstance(layers, list) or len(layers) != 1 or not isinstance(layers[0], dict):
        return None, "a signature manifest must have exactly one layer"
    layer = layers[0]
    if layer.get("mediaType") not in ENVELOPE_MEDIA_TYPES:
        return None, f"layer media type {layer.get('mediaType')!r} is not a signature envelope"
    size = layer.get("size")
    if not isinstance(size, int) or not 0 < size <= MAX_ENVELOPE_BYTES or not isinstance(layer.get("digest"), str):
        return None, f"envelope layer size must be 1..{MAX_ENVELOPE_BYTES} bytes with a digest"
    return layer, ""


class NotationReferrers(SignatureSource):
    def __init__(self, limit: int = MAX_SIGNATURES, clock: Callable[[], float] = time.monotonic) -> None:
        self.limit = limit
        self._clock = clock
        # registry -> (what it offers, until when that is trusted)
        self._modes: dict[str, tuple[ReferrersMode, float]] = {}

    def _mode(self, registry: str) -> ReferrersMode | None:
        known = self._modes.get(registry)
        return known[0] if known is not None and known[1] > self._clock() else None

    def _learned(self, registry: str, mode: ReferrersMode) -> None:
        self._modes[registry] = (mode, self._clock() + REFERRERS_MODE_SECONDS)

    async def _from_api(self, image: ImageTarget, registry: RegistryClient) -> tuple[Any, bool]:
        """(the referrers index the API answers or None, whether the registry said it does not offer the API).

        A fault (an error status, a timeout) says nothing about what the registry offers."""
        reference = image.reference
        path = f"/v2/{reference.path}/referrers/{image.digest}?artifactType={NOTARY_SIGNATURE}"
        try:
            answer = await registry.get_api(reference, path, MAX_REFERRERS_BYTES)
        except RegistryError:
            return None, False
        try:
            index = strictjson.loads(answer) if answer is not None else None
        except strictjson.StrictJSONError:
            index = None
        if signature_descriptors(index) is None:
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

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        reference = image.reference
        try:
            searched, index = await self._referrers(image, registry)
        except RegistryError as exc:
            return Collected("OCI referrers", problems=(("OCI referrers", str(exc)),))
        descriptors = signature_descriptors(index)
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
                layer, why = envelope_layer(manifest.document, image)
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
