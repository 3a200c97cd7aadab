"""Every cache and map that grows with images, keys, namespaces or requests is bounded in entries and in bytes,
and docs/memory.md states exactly the bounds the code has.

Each cache is filled past its entry bound with small entries and past its byte bound with heavy ones; the test
fails if it keeps more than either bound allows (or if it is not filled up to its entry bound: a bound that
keeps nothing proves nothing).
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import yaml

from webhook.cache import ExpiringLRU, SingleFlight
from webhook.cluster import NAMESPACE_LABELS_BYTES, NAMESPACE_LABELS_ENTRIES, NamespaceLabels, PodPullCredentials
from webhook.events import Correlator, EventSettings, Finding, InvolvedObject
from webhook.pipeline import VerificationCaches, VerifySettings
from webhook.pki import NAMED_CERTIFICATE_BYTES, NAMED_CERTIFICATES
from webhook.registry.client import RegistryClient, RegistrySettings
from webhook.sources.referrers import NOTARY_SIGNATURES, OciReferrers

PAGE = Path(__file__).resolve().parents[2] / "docs" / "memory.md"
HEAVY_ENTRIES = 64  # heavy entries this many of which fill a byte bound


def heavy_chars(max_bytes: int) -> int:
    return max_bytes // HEAVY_ENTRIES


def caches() -> dict[str, ExpiringLRU[Any, Any]]:
    verification = VerificationCaches(VerifySettings())
    pull = PodPullCredentials(SimpleNamespace())
    registry = RegistryClient(RegistrySettings())
    return {
        "VerificationCaches.manifests": verification.manifests,
        "VerificationCaches.tags": verification.tags,
        "VerificationCaches.verdicts": verification.verdicts,
        "VerificationCaches.images": verification.images,
        "VerificationCaches.registry_slots": verification.registry_slots,
        "RegistryClient.registry_states": registry.registry_states,
        "RegistryClient.tokens": registry.tokens,
        "OciReferrers.modes": OciReferrers(NOTARY_SIGNATURES).modes,
        "PodPullCredentials.secrets": pull.secrets,
        "PodPullCredentials.accounts": pull.accounts,
        "PodPullCredentials.credential_sets": pull.credential_sets,
    }


def flights() -> dict[str, SingleFlight[Any, Any]]:
    verification = VerificationCaches(VerifySettings())
    pull = PodPullCredentials(SimpleNamespace())
    return {
        "VerificationCaches.resolving": verification.resolving,
        "VerificationCaches.fetching": verification.fetching,
        "VerificationCaches.verifying": verification.verifying,
        "PodPullCredentials.reading_secrets": pull.reading_secrets,
        "PodPullCredentials.reading_accounts": pull.reading_accounts,
    }


def namespace_labels() -> NamespaceLabels:
    return NamespaceLabels(SimpleNamespace(list_namespace=None))


def code_bounds() -> dict[str, tuple[int, int]]:
    events = EventSettings()
    bounded: dict[str, ExpiringLRU[Any, Any] | SingleFlight[Any, Any]] = {**caches(), **flights()}
    return {**{name: (cache.max_entries, cache.max_bytes) for name, cache in bounded.items()},
            "NamespaceLabels": (NAMESPACE_LABELS_ENTRIES, NAMESPACE_LABELS_BYTES),
            "Correlator.aggregates": (events.max_aggregates, events.max_bytes),
            # Two memories (names and fingerprints) of at most NAMED_CERTIFICATES certificates each.
            "pki.describe": (2 * NAMED_CERTIFICATES, 2 * NAMED_CERTIFICATES * NAMED_CERTIFICATE_BYTES)}


# A value each cache's own size function takes (the manifest cache weighs (bytes, media type) pairs).
def small_value(name: str) -> object:
    return (b"{}", "application/json") if name == "VerificationCaches.manifests" else "v"


@pytest.mark.parametrize("name", sorted(caches()))
def test_a_cache_keeps_no_more_entries_than_its_bound(name: str) -> None:
    cache = caches()[name]
    for index in range(cache.max_entries + 100):
        cache.put(f"k{index}", small_value(name), 60)
        assert len(cache) <= cache.max_entries
    assert len(cache) == cache.max_entries


@pytest.mark.parametrize("name", sorted(caches()))
def test_a_cache_weighs_no_more_than_its_bound(name: str) -> None:
    cache = caches()[name]
    chars = heavy_chars(cache.max_bytes)
    for index in range(HEAVY_ENTRIES + 100):
        cache.put(f"{index}:" + "x" * chars, small_value(name), 60)
        assert cache.bytes <= cache.max_bytes
    assert cache.bytes > cache.max_bytes - 2 * chars  # filled up to the bound, not short of it


@pytest.mark.parametrize("name", sorted(flights()))
def test_computations_shared_in_flight_are_bounded_and_the_rest_still_computed(name: str) -> None:
    flight = flights()[name]

    async def fill(count: int, key: str) -> tuple[int, int, list[int]]:
        release = asyncio.Event()
        most = heaviest = 0

        async def compute(index: int) -> int:
            await release.wait()
            return index

        async def one(index: int) -> int:
            answer: int = await flight.run(key.format(index), lambda: compute(index))
            return answer

        callers = [asyncio.ensure_future(one(index)) for index in range(count)]
        for _ in range(3):
            await asyncio.sleep(0)
            most, heaviest = max(most, len(flight)), max(heaviest, flight.bytes)
        release.set()
        return most, heaviest, list(await asyncio.gather(*callers))

    most, _, answers = asyncio.run(fill(flight.max_entries + 100, "k{}"))
    assert most == flight.max_entries and answers == list(range(flight.max_entries + 100))
    assert len(flight) == 0 and flight.bytes == 0
    chars, count = heavy_chars(flight.max_bytes), HEAVY_ENTRIES + 100
    _, heaviest, answers = asyncio.run(fill(count, "{}:" + "x" * chars))
    assert flight.max_bytes - 2 * chars < heaviest <= flight.max_bytes and answers == list(range(count))


def namespace(name: str, labels: dict[str, str]) -> SimpleNamespace:
    return SimpleNamespace(metadata=SimpleNamespace(name=name, labels=labels))


def test_namespace_labels_are_bounded_in_entries_and_bytes_and_one_past_them_is_unknown() -> None:
    labels = namespace_labels()
    labels._listed([namespace(f"ns-{index}", {"team": "a"}) for index in range(NAMESPACE_LABELS_ENTRIES + 10)])
    assert len(labels) == NAMESPACE_LABELS_ENTRIES
    labels._changed("ADDED", namespace("late", {"team": "b"}))
    assert len(labels) == NAMESPACE_LABELS_ENTRIES and asyncio.run(labels("late")) is None
    labels._changed("DELETED", namespace("ns-0", {}))
    labels._changed("ADDED", namespace("late", {"team": "b"}))
    assert asyncio.run(labels("late")) == {"team": "b"}

    chars = heavy_chars(NAMESPACE_LABELS_BYTES)
    heavy = namespace_labels()
    heavy._listed([namespace(f"ns-{index}", {"note": "x" * chars}) for index in range(HEAVY_ENTRIES + 10)])
    assert NAMESPACE_LABELS_BYTES - 2 * chars < heavy.bytes <= NAMESPACE_LABELS_BYTES


def test_event_aggregates_are_bounded_in_entries_and_bytes() -> None:
    settings = EventSettings()
    correlator = Correlator(settings, 0.0)
    for index in range(settings.max_aggregates + 10):
        correlator.add(Finding(InvolvedObject("v1", "Namespace", f"ns-{index}", f"ns-{index}"), "Denied", "m"),
                       0.0, "t")
        assert len(correlator.aggregates) <= settings.max_aggregates
    assert len(correlator.aggregates) == settings.max_aggregates
    correlator.due(1.0)
    assert len(correlator.object_buckets) <= settings.max_aggregates

    chars = heavy_chars(settings.max_bytes)
    heavy = Correlator(settings, 0.0)
    for index in range(HEAVY_ENTRIES + 10):
        name = f"{index}-" + "x" * chars
        heavy.add(Finding(InvolvedObject("v1", "Pod", name, "default"), "Denied", "m"), 0.0, "t")
        assert heavy.bytes <= settings.max_bytes
    assert heavy.bytes > settings.max_bytes - 4 * chars


# --- the documented table -----------------------------------------------------------------------------------

_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 * 1024}


def documented_bounds() -> dict[str, tuple[int, int]]:
    """`| \\`name\\` | holds | entries | bytes | ... |` rows of the page's Bounds section."""
    text = PAGE.read_text()
    section = text[text.index("## Bounds"):]
    section = section[:section.index("\n## ", 1)]
    found = {}
    for name, entries, number, unit in re.findall(
            r"^\| `([\w.]+)` \| [^|]+ \| ([\d,]+) \| ([\d.]+) (B|KiB|MiB) \|", section, re.MULTILINE):
        found[name] = (int(entries.replace(",", "")), int(float(number) * _UNITS[unit]))
    return found


def test_the_memory_table_states_every_bound_the_code_has() -> None:
    assert documented_bounds() == code_bounds()
    stated = re.search(r"The byte bounds above add up to (\d+) MiB", PAGE.read_text())
    assert stated is not None
    assert int(stated.group(1)) == round(sum(bytes_bound for _, bytes_bound in code_bounds().values()) / 2**20)


def test_the_memory_page_states_the_charts_webhook_memory_limit() -> None:
    values = yaml.safe_load((PAGE.parents[1] / "charts" / "trustgate" / "values.yaml").read_text())
    limit = values["webhook"]["resources"]["limits"]["memory"]
    assert limit.endswith("Mi") and int(limit.removesuffix("Mi")) >= 200
    assert f"The chart's webhook memory limit ({limit.removesuffix('Mi')} MiB)" in " ".join(PAGE.read_text().split())
