"""Signatures on a lookaside server: `<base>/<repository path>@<algorithm>=<hex>/signature-N`.

This is the layout containers/image reads and skopeo/podman write (registries.d `lookaside`). Readers ask
for signature-1, signature-2, ... until the first 404, so the number read is capped.

The signatures are asked LOOKASIDE_WINDOW at a time: an image usually has one, and signature-2, the probe for
the end of the list, then costs no round trip of its own. The answers are read in order exactly as if they had
been asked one by one: whatever was asked past the first 404 or fault is discarded unread.
"""

from __future__ import annotations

import asyncio

from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.registry.client import RegistryClient, RegistryError
from webhook.sources.base import SignatureSource

MAX_LOOKASIDE_SIGNATURES = 16
MAX_SIGNATURE_BYTES = 64 * 1024
LOOKASIDE_WINDOW = 2


def lookaside_url(base: str, image: ImageTarget) -> str:
    algorithm, _, encoded = image.digest.partition(":")
    return f"{base.rstrip('/')}/{image.reference.path}@{algorithm}={encoded}"


class LookasideSignatures(SignatureSource):
    def __init__(self, base_url: str, limit: int = MAX_LOOKASIDE_SIGNATURES) -> None:
        self.base_url = base_url
        self.limit = limit

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        """Signatures from the lookaside of the mirrors the image is pulled from, in their order, under the
        mirror's repository path (where a copy to the mirror writes them, as containers/image does); from the
        configured lookaside when no mirror of the image has one."""
        try:
            endpoints = registry.endpoints(image.reference)
        except RegistryError as exc:
            return Collected("lookaside", problems=(("lookaside", str(exc)),))
        locations = [(endpoint.lookaside, ImageTarget(endpoint.reference, image.digest)) for endpoint in endpoints
                     if endpoint.lookaside is not None] or [(self.base_url, image)]
        searched: list[str] = []
        problems: list[tuple[str, str]] = []
        for base, target in locations:
            found = await self._collect_from(lookaside_url(base, target), registry)
            if found.materials:
                return found
            searched.append(found.searched)
            problems.extend(found.problems)
        return Collected("; ".join(searched), (), tuple(problems))

    async def _collect_from(self, directory: str, registry: RegistryClient) -> Collected:
        materials: list[SignatureMaterial] = []
        problems: list[tuple[str, str]] = []
        searched = f"lookaside {directory}/"
        limit = registry.settings.max_signatures_per_source or self.limit
        for first in range(1, limit + 1, LOOKASIDE_WINDOW):
            numbers = range(first, min(first + LOOKASIDE_WINDOW, limit + 1))
            answers = await asyncio.gather(*(registry.fetch_url(f"{directory}/signature-{number}",
                                                                MAX_SIGNATURE_BYTES) for number in numbers),
                                           return_exceptions=True)
            for number, answer in zip(numbers, answers, strict=True):
                name = f"signature-{number}"
                if isinstance(answer, RegistryError):
                    problems.append((f"lookaside {name}", str(answer)))
                    return Collected(searched, tuple(materials), tuple(problems))
                if isinstance(answer, BaseException):
                    raise answer
                if answer is None:
                    return Collected(searched, tuple(materials), tuple(problems))
                materials.append(SignatureMaterial(f"lookaside {name}", answer))
        problems.append(("lookaside", f"holds more than {limit} signatures; only the first {limit} were examined"))
        return Collected(searched, tuple(materials), tuple(problems))
