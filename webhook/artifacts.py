"""What registry, signature sources and verifiers hand one another: an image and its digest, its resolved
manifest, and the candidate signatures a source found. Plain data, beneath all three layers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field

from webhook.references import ImageReference


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
