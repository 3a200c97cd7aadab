"""cosign signatures: the `sha256-<hex>.sig` tag in the image's repository or in a signatures repository.

cosign keeps every signature of a manifest in one OCI image manifest tagged `<algorithm>-<hex>.sig`. Each
layer is one signature: the blob is the signed payload, the layer annotations carry the base64 signature
and, optionally, a certificate, its chain and a Rekor bundle. Only layers of the simple-signing media type
are signatures; any other layer is reported and ignored, never verified.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass

from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.references import ImageReference, InvalidDigestError, validate_digest
from webhook.registry.client import INDEX_MEDIA_TYPES, RegistryClient, RegistryError
from webhook.simple_signing import MAX_PAYLOAD_BYTES
from webhook.sources.base import SignatureSource

SIMPLE_SIGNING_MEDIA_TYPE = "application/vnd.dev.cosign.simplesigning.v1+json"
# cosign appends a layer per signature; a tag holding more than this is examined only in part.
MAX_COSIGN_SIGNATURES = 32
# Certificates, chains and Rekor bundles travel as annotations: a signature's annotations stay small.
MAX_ANNOTATION_BYTES = 64 * 1024


class LayerError(ValueError):
    """A layer of a signature manifest that cannot be a cosign signature."""


@dataclass(frozen=True, slots=True)
class SignatureLayer:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str]


def signature_tag(digest: str) -> str:
    """`sha256:abc...` -> `sha256-abc....sig`, the tag cosign files an image's signatures under."""
    algorithm, _, encoded = digest.partition(":")
    return f"{algorithm}-{encoded}.sig"


def parse_layer(descriptor: object) -> SignatureLayer:
    """Check the shape of one layer descriptor of a signature manifest."""
    if not isinstance(descriptor, dict):
        raise LayerError("descriptor is not a JSON object")
    media_type = descriptor.get("mediaType")
    digest = descriptor.get("digest")
    size = descriptor.get("size")
    annotations = descriptor.get("annotations", {})
    if not isinstance(media_type, str):
        raise LayerError("descriptor has no mediaType")
    if not isinstance(digest, str):
        raise LayerError("descriptor has no digest")
    try:
        validate_digest(digest)
    except InvalidDigestError as exc:
        raise LayerError(f"descriptor digest: {exc}") from None
    if isinstance(size, bool) or not isinstance(size, int) or size < 0:
        raise LayerError("descriptor size is not a non-negative integer")
    if not isinstance(annotations, dict) or not all(
        isinstance(key, str) and isinstance(value, str) for key, value in annotations.items()
    ):
        raise LayerError("descriptor annotations are not a string map")
    if sum(len(key) + len(value) for key, value in annotations.items()) > MAX_ANNOTATION_BYTES:
        raise LayerError(f"descriptor annotations exceed {MAX_ANNOTATION_BYTES} bytes")
    return SignatureLayer(media_type, digest, size, dict(annotations))


def signature_material(label: str, layer: SignatureLayer, blob: bytes) -> SignatureMaterial:
    """The signature a layer carries, once its blob is proven to be the one the descriptor names."""
    algorithm, _, expected = layer.digest.partition(":")
    if len(blob) != layer.size or hashlib.new(algorithm, blob).hexdigest() != expected:
        raise LayerError(f"payload blob does not match its descriptor ({layer.digest}, {layer.size} bytes)")
    return SignatureMaterial(label, blob, layer.media_type, layer.annotations)


class CosignSignatureTag(SignatureSource):
    def __init__(self, signatures_repository: ImageReference | None = None,
                 limit: int = MAX_COSIGN_SIGNATURES) -> None:
        self.signatures_repository = signatures_repository
        self.limit = limit

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        repository = self.signatures_repository or image.reference
        tag = signature_tag(image.digest)
        where = f"{repository.repository}:{tag}"
        try:
            manifest = await registry.get_manifest(repository, tag)
        except RegistryError as exc:
            return Collected(where, problems=((where, str(exc)),))
        if manifest is None:
            return Collected(where)
        layers = manifest.document.get("layers")
        if manifest.media_type in INDEX_MEDIA_TYPES or not isinstance(layers, list):
            return Collected(where, problems=((where, f"is a {manifest.media_type}, not a signature manifest"),))
        limit = registry.settings.max_signatures_per_source or self.limit
        materials: list[SignatureMaterial] = []
        problems: list[tuple[str, str]] = []
        for index, descriptor in enumerate(layers[:limit]):
            label = f"{where} layer {index}"
            try:
                layer = parse_layer(descriptor)
                if layer.media_type != SIMPLE_SIGNING_MEDIA_TYPE:
                    raise LayerError(f"media type {layer.media_type} is not {SIMPLE_SIGNING_MEDIA_TYPE}; "
                                     "not a signature")
                if layer.size > MAX_PAYLOAD_BYTES:
                    raise LayerError(f"payload of {layer.size} bytes exceeds {MAX_PAYLOAD_BYTES}")
                blob = await registry.get_blob(repository, layer.digest, MAX_PAYLOAD_BYTES)
                materials.append(signature_material(label, layer, blob))
            except (LayerError, RegistryError) as exc:
                problems.append((label, str(exc)))
        if len(layers) > limit:
            problems.append((where, f"holds {len(layers)} layers; only the first {limit} were examined"))
        return Collected(where, tuple(materials), tuple(problems))
