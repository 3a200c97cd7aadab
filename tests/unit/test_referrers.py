"""Which referrers lookup a registry is asked: the API, the tag schema, or both until it is known which one it
offers (counted against a stub registry, on an injected clock)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from webhook.artifacts import ImageTarget
from webhook.references import parse_reference
from webhook.registry.client import RegistryError, RegistrySettings
from webhook.sources.referrers import REFERRERS_MODE_SECONDS, BundleReferrers, NotationReferrers, shared_lookups

DIGEST = "sha256:" + "ab" * 32
TARGET = ImageTarget(parse_reference(f"registry.example.com/app@{DIGEST}"), DIGEST)
EMPTY_INDEX = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": []}'


@dataclass
class Document:
    document: dict[str, Any]


@dataclass
class StubRegistry:
    """`api`: what the referrers API answers (bytes, None for 404, or an exception to raise)."""

    api: bytes | Exception | None
    asked: list[str] = field(default_factory=list)
    settings: RegistrySettings = field(default_factory=RegistrySettings)

    async def get_api(self, reference: Any, path: str, limit: int) -> bytes | None:
        self.asked.append("api")
        if isinstance(self.api, Exception):
            raise self.api
        return self.api

    async def get_manifest(self, reference: Any, tag: str) -> Document:
        self.asked.append("tag")
        return Document({"manifests": []})


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def lookups(source: NotationReferrers, registry: StubRegistry) -> tuple[list[str], str]:
    """What one collection asks the registry, and where it says it searched."""
    registry.asked.clear()
    searched = asyncio.run(source.collect(TARGET, registry)).searched  # type: ignore[arg-type]
    return sorted(registry.asked), searched


def test_a_registry_without_the_api_is_asked_by_tag_only_until_that_is_worth_checking_again() -> None:
    clock, registry = Clock(), StubRegistry(api=None)
    source = NotationReferrers(clock=clock)
    assert lookups(source, registry)[0] == ["api", "tag"]
    assert lookups(source, registry) == (["tag"], f"referrers tag registry.example.com/app:{DIGEST.replace(':', '-')}")
    clock.now += REFERRERS_MODE_SECONDS
    assert lookups(source, registry)[0] == ["api", "tag"]


def test_a_registry_with_the_api_is_asked_through_it_only() -> None:
    registry = StubRegistry(api=EMPTY_INDEX)
    source = NotationReferrers(clock=Clock())
    assert lookups(source, registry)[0] == ["api", "tag"]
    assert lookups(source, registry) == (["api"], "referrers API of registry.example.com/app")


def test_when_the_api_goes_away_the_tag_schema_is_asked_after_it_at_once() -> None:
    registry = StubRegistry(api=EMPTY_INDEX)
    source = NotationReferrers(clock=Clock())
    lookups(source, registry)
    registry.api = None
    assert lookups(source, registry)[0] == ["api", "tag"]
    assert lookups(source, registry)[0] == ["tag"]


def test_a_fault_of_the_api_teaches_nothing_about_the_registry() -> None:
    registry = StubRegistry(api=RegistryError("HTTP 503"))
    source = NotationReferrers(clock=Clock())
    assert lookups(source, registry)[0] == ["api", "tag"]
    assert lookups(source, registry)[0] == ["api", "tag"]
    registry.api = EMPTY_INDEX
    lookups(source, registry)
    registry.api = RegistryError("HTTP 503")  # a known API failing once: the tag schema answers, nothing is unlearned
    assert lookups(source, registry)[0] == ["api", "tag"]
    registry.api = EMPTY_INDEX
    assert lookups(source, registry)[0] == ["api"]


def test_within_one_verification_the_index_is_fetched_once_for_every_kind() -> None:
    """Notation and cosign authorities checking one image, at once and one after the other."""
    registry = StubRegistry(api=EMPTY_INDEX)
    notation, bundles, more_bundles = NotationReferrers(clock=Clock()), BundleReferrers(), BundleReferrers()

    async def verification() -> None:
        with shared_lookups():
            await asyncio.gather(notation.collect(TARGET, registry), bundles.collect(TARGET, registry))  # type: ignore[arg-type]
            await more_bundles.collect(TARGET, registry)  # type: ignore[arg-type]

    asyncio.run(verification())
    assert sorted(registry.asked) == ["api", "tag"]
    asyncio.run(verification())  # the next verification asks again
    assert sorted(registry.asked) == ["api", "api", "tag"]
