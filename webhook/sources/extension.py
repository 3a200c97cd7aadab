"""Signatures served by the registry's signature API extension (`/extensions/v2/<name>/signatures/<digest>`).

Registries that offer it announce `X-Registry-Supports-Signatures: 1` on `/v2/` (OpenShift's integrated
registry does); others are not asked.
"""

from __future__ import annotations

import base64
import binascii

from webhook import strictjson
from webhook.artifacts import Collected, ImageTarget, SignatureMaterial
from webhook.registry.client import RegistryClient, RegistryError
from webhook.sources.base import SignatureSource

MAX_EXTENSION_SIGNATURES = 16
MAX_EXTENSION_RESPONSE_BYTES = 1024 * 1024
SIGNATURE_SCHEMA_VERSION = 2
ATOMIC_TYPE = "atomic"


def parse_extension_response(body: bytes, limit: int) -> tuple[list[SignatureMaterial], list[tuple[str, str]]]:
    """Atomic signatures of schema version 2 from the extension's JSON; other entries are reported."""
    try:
        document = strictjson.loads(body)
    except strictjson.StrictJSONError as exc:
        return [], [("registry signature API", f"answer is not valid JSON: {exc}")]
    entries = document.get("signatures") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return [], [("registry signature API", "answer has no \"signatures\" list")]
    materials: list[SignatureMaterial] = []
    problems: list[tuple[str, str]] = []
    for index, entry in enumerate(entries[:limit], start=1):
        label = f"registry signature-{index}"
        if not isinstance(entry, dict) or entry.get("schemaVersion") != SIGNATURE_SCHEMA_VERSION \
                or entry.get("type") != ATOMIC_TYPE or not isinstance(entry.get("content"), str):
            problems.append((label, "not a schemaVersion 2 atomic signature entry"))
            continue
        try:
            materials.append(SignatureMaterial(label, base64.b64decode(entry["content"], validate=True)))
        except binascii.Error:
            problems.append((label, "content is not base64"))
    if len(entries) > limit:
        problems.append(("registry signature API",
                         f"lists {len(entries)} signatures; only the first {limit} were examined"))
    return materials, problems


class ExtensionSignatures(SignatureSource):
    def __init__(self, limit: int = MAX_EXTENSION_SIGNATURES) -> None:
        self.limit = limit

    async def collect(self, image: ImageTarget, registry: RegistryClient) -> Collected:
        reference = image.reference
        try:
            if not await registry.supports_signature_extension(reference):
                return Collected(f"registry signature API (not offered by {reference.domain})")
            body = await registry.get_api(
                reference, f"/extensions/v2/{reference.path}/signatures/{image.digest}",
                MAX_EXTENSION_RESPONSE_BYTES,
            )
        except RegistryError as exc:
            return Collected("registry signature API", problems=(("registry signature API", str(exc)),))
        if body is None:
            return Collected(f"registry signature API of {reference.domain}")
        limit = registry.settings.max_signatures_per_source or self.limit
        materials, problems = parse_extension_response(body, limit)
        return Collected(f"registry signature API of {reference.domain}", tuple(materials), tuple(problems))
