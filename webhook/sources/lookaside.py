"""Signatures on a lookaside server: `<base>/<repository path>@<algorithm>=<hex>/signature-N`.

This is the layout containers/image reads and skopeo/podman write (registries.d `lookaside`). Readers ask
for signature-1, signature-2, ... until the first 404, so the number read is capped.
"""

from __future__ import annotations

from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.registry.client import RegistryClient, RegistryError
from webhook.sources.base import SignatureSource

MAX_LOOKASIDE_SIGNATURES = 16
MAX_SIGNATURE_BYTES = 64 * 1024


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
        limit = registry.settings.max_signatures_per_source or self.limit
        for index in range(1, limit + 1):
            name = f"signature-{index}"
            try:
                data = await registry.fetch_url(f"{directory}/{name}", MAX_SIGNATURE_BYTES)
            except RegistryError as exc:
                problems.append((f"lookaside {name}", str(exc)))
                break
            if data is None:
                break
            materials.append(SignatureMaterial(f"lookaside {name}", data))
        else:
            problems.append(("lookaside", f"holds more than {limit} signatures; only the first "
                                          f"{limit} were examined"))
        return Collected(f"lookaside {directory}/", tuple(materials), tuple(problems))
