"""Caches and coalescing, counted rather than timed: how often the registry and the verifier are asked, which
keys a verdict is stored under, and lifetimes on an injected clock."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from collections.abc import Sequence
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from tests.helpers import resources, trust_policy
from webhook.artifacts import Collected, ImageTarget, ResolvedImage, SignatureMaterial
from webhook.cache import ENTRY_OVERHEAD_BYTES, ExpiringLRU, SingleFlight, estimated_bytes
from webhook.pipeline import AdmissionContext, ImageVerdict, Pipeline, VerificationCaches, VerifySettings
from webhook.policy.compile import PolicySet, compile_policy_set
from webhook.references import ImageReference
from webhook.registry.auth import Credentials
from webhook.registry.client import RegistryError
from webhook.registry.keyring import PullCredentials
from webhook.results import Result
from webhook.sources.base import SignatureSource
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, discover_verifiers

IMAGE = "registry.example.com/app:v1"
SIGNED_AT = 1_700_000_000.0  # when every counting signature was made (wall clock)
PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----"""


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- ExpiringLRU and SingleFlight ----------------------------------------------------------------------------


def test_an_entry_lives_exactly_its_lifetime() -> None:
    clock = Clock()
    cache: ExpiringLRU[str, int] = ExpiringLRU("test", 10, clock, max_bytes=1 << 20)
    cache.put("a", 1, 5.0)
    clock.now += 4.999
    assert cache.get("a") == 1
    clock.now += 0.001
    assert cache.get("a") is None
    assert len(cache) == 0


def test_the_least_recently_used_entry_goes_first_and_nothing_lives_for_zero_seconds() -> None:
    cache: ExpiringLRU[str, int] = ExpiringLRU("test", 2, Clock(), max_bytes=1 << 20)
    cache.put("a", 1, 60)
    cache.put("b", 2, 60)
    assert cache.get("a") == 1  # now "b" is the least recently used
    cache.put("c", 3, 60)
    assert (cache.get("a"), cache.get("b"), cache.get("c")) == (1, None, 3)
    cache.put("d", 4, 0)
    assert cache.get("d") is None


def test_a_cache_never_weighs_more_than_its_bytes_bound() -> None:
    def weight(key: str, value: bytes) -> int:
        return ENTRY_OVERHEAD_BYTES + estimated_bytes(key) + len(value)

    bound = 3 * weight("k10", bytes(6))
    cache: ExpiringLRU[str, bytes] = ExpiringLRU("test", 100, Clock(), max_bytes=bound, size=len)

    def kept() -> int:
        return sum(weight(f"k{index}", value) for index in range(50)
                   if (value := cache.get(f"k{index}")) is not None)

    for index in range(50):
        cache.put(f"k{index}", bytes(index % 7), 60)
        assert cache.bytes <= bound and len(cache) <= 100
    assert cache.bytes == kept()
    cache.put("huge", bytes(bound), 60)  # heavier than the whole bound: not kept, nothing evicted for it
    assert cache.get("huge") is None and cache.bytes <= bound
    cache.put("k49", bytes(2), 60)  # replaced: its old weight goes with it
    assert cache.bytes == kept()


def test_the_manifest_cache_is_bounded_in_bytes() -> None:
    caches = VerificationCaches(VerifySettings())
    manifest = bytes(4 * 1024 * 1024)
    for index in range(100):
        caches.manifests.put(("", "registry.example.com/app", f"sha256:{index:064x}"), (manifest, "m"), 60)
    assert caches.manifests.max_bytes is not None and caches.manifests.bytes <= caches.manifests.max_bytes
    assert len(caches.manifests) == caches.manifests.max_bytes // (len(manifest) + 1)


def test_concurrent_callers_share_one_computation_and_a_later_caller_starts_another() -> None:
    flights: SingleFlight[str, int] = SingleFlight("test", 100, max_bytes=1 << 20)
    started = 0
    release = asyncio.Event()

    async def compute() -> int:
        nonlocal started
        started += 1
        await release.wait()
        return started

    async def main() -> tuple[list[int], int]:
        waiters = [asyncio.ensure_future(flights.run("key", compute)) for _ in range(50)]
        await asyncio.sleep(0)
        release.set()
        results = await asyncio.gather(*waiters)
        return results, await flights.run("key", compute)

    results, later = asyncio.run(main())
    assert results == [1] * 50
    assert later == 2


def test_a_caller_that_gives_up_does_not_cancel_the_others_computation() -> None:
    flights: SingleFlight[str, str] = SingleFlight("test", 100, max_bytes=1 << 20)
    release = asyncio.Event()

    async def compute() -> str:
        await release.wait()
        return "done"

    async def main() -> str:
        impatient = asyncio.ensure_future(flights.run("key", compute))
        patient = asyncio.ensure_future(flights.run("key", compute))
        await asyncio.sleep(0)
        impatient.cancel()
        await asyncio.sleep(0)
        release.set()
        return await patient

    assert asyncio.run(main()) == "done"


def test_a_failed_computation_reaches_every_waiter_and_is_not_kept() -> None:
    flights: SingleFlight[str, str] = SingleFlight("test", 100, max_bytes=1 << 20)
    attempts = 0

    async def compute() -> str:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)
        if attempts == 1:
            raise RuntimeError("registry down")
        return "ok"

    async def main() -> tuple[list[BaseException | str], str]:
        first = await asyncio.gather(*(flights.run("key", compute) for _ in range(3)), return_exceptions=True)
        return first, await flights.run("key", compute)

    first, second = asyncio.run(main())
    assert all(isinstance(outcome, RuntimeError) for outcome in first)
    assert (second, attempts) == ("ok", 2)


# --- the pipeline's caches -----------------------------------------------------------------------------------


class CountingRegistry:
    """Manifests by repository:tag and signatures by digest; counts what is asked. `gate` holds every request
    until it is set, so concurrent callers are all in flight together."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.signers: dict[str, list[str]] = {}
        self.resolved: list[str] = []
        self.collected: list[str] = []
        self.gate = asyncio.Event()

    def add(self, image: str, *, seed: str = "") -> str:
        data = json.dumps({"schemaVersion": 2, "image": image, "seed": seed}).encode()
        self.manifests[image] = data
        return f"sha256:{hashlib.sha256(data).hexdigest()}"

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        self.resolved.append(str(reference))
        await self.gate.wait()
        data = self.manifests[f"{reference.repository}:{reference.tag}"]
        return ResolvedImage(reference, f"sha256:{hashlib.sha256(data).hexdigest()}", data,
                             "application/vnd.oci.image.manifest.v1+json")


class CountingSource(SignatureSource):
    async def collect(self, image: ImageTarget, registry: Any) -> Collected:
        registry.collected.append(image.digest)
        await registry.gate.wait()
        return Collected("stub store", tuple(SignatureMaterial(f"signature-{index}", signer.encode())
                                            for index, signer in enumerate(registry.signers.get(image.digest, []))))


class StubSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trusted: list[str]


class CountingAuthority(CompiledAuthority):
    verifier_type = "counting"
    checked: list[str] = []  # noqa: RUF012 (shared by every compiled authority of a test, reset per test)

    def __init__(self, name: str, trusted: list[str]) -> None:
        self.name, self.trusted = name, trusted

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        return (CountingSource(),)

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        signer = material.data.decode()
        CountingAuthority.checked.append(signer)
        if signer not in self.trusted:
            return Result.fail(material.label, "counting.untrusted", f"{signer} is not trusted")
        return Result.ok(material.label, "signature.valid", f"signed by {signer}", signer=signer,
                         signed_at=SIGNED_AT)


class CountingVerifier(VerifierPlugin):
    type_name = "counting"
    spec_model = StubSpec

    def compile(self, authority_name: str, spec: Any, trust_stores: Any, path: str) -> CountingAuthority:
        return CountingAuthority(authority_name, StubSpec.model_validate(spec).trusted)


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    CountingAuthority.checked = []


def policy_set(trusted: Sequence[str] = ("release",), authority: dict[str, Any] | None = None,
               **spec: Any) -> PolicySet:
    store = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "s"},
             "spec": {"keys": [{"name": "unused", "publicKey": PUBLIC_KEY}]}}
    policy = trust_policy("app", ["registry.example.com/**"], [{"name": "release", "counting": {
        "trusted": list(trusted)}, **(authority or {})}], **spec)
    return compile_policy_set(resources(store, policy), {**discover_verifiers(), "counting": CountingVerifier()})


def pipeline(registry: CountingRegistry, policies: PolicySet, caches: VerificationCaches | None = None,
             **settings: Any) -> Pipeline:
    return Pipeline(policies, registry, VerifySettings(**settings), caches=caches)  # type: ignore[arg-type]


async def admit_concurrently(pipeline: Pipeline, registry: CountingRegistry,
                             pods: Sequence[Sequence[str]]) -> list[list[ImageVerdict]]:
    """Start every pod's verification, let them all reach the registry, then let the registry answer."""
    registry.gate.clear()
    pending = [asyncio.ensure_future(pipeline.verify_images(list(images))) for images in pods]
    for _ in range(10):
        await asyncio.sleep(0)
    registry.gate.set()
    return await asyncio.gather(*pending)


def test_200_concurrent_admissions_of_one_new_image_resolve_and_verify_it_once() -> None:
    registry = CountingRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    verifier = pipeline(registry, policy_set())
    verdicts = asyncio.run(admit_concurrently(verifier, registry, [[IMAGE]] * 200))
    assert all(pod[0].allowed for pod in verdicts)
    assert (len(registry.resolved), registry.collected, CountingAuthority.checked) == (1, [digest], ["release"])


def test_a_pod_with_8_containers_of_one_image_resolves_and_verifies_it_once() -> None:
    registry = CountingRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    (verdicts,) = asyncio.run(admit_concurrently(pipeline(registry, policy_set()), registry, [[IMAGE] * 8]))
    assert len(verdicts) == 8 and all(verdict.allowed for verdict in verdicts)
    assert (len(registry.resolved), len(registry.collected), len(CountingAuthority.checked)) == (1, 1, 1)


def test_a_verified_digest_is_reused_without_asking_the_registry_again() -> None:
    registry = CountingRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    registry.gate.set()
    verifier = pipeline(registry, policy_set())
    by_digest = f"registry.example.com/app@{digest}"

    async def main() -> None:
        for image in (IMAGE, IMAGE, by_digest, by_digest):
            assert (await verifier.verify_image(image)).allowed

    asyncio.run(main())
    # The tag is resolved once; the digest reference is answered from the manifest cache; each reference
    # string is verified once (identity rules judge the name an image is admitted under).
    assert len(registry.resolved) == 1
    assert len(CountingAuthority.checked) == 2


def test_the_verdict_key_carries_the_policy_generation() -> None:
    registry = CountingRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    registry.gate.set()
    caches = VerificationCaches(VerifySettings())
    first, second = policy_set(), policy_set(trusted=())
    assert first.generation != second.generation

    async def main() -> list[bool]:
        return [(await pipeline(registry, policies, caches).verify_image(IMAGE)).allowed
                for policies in (first, first, second)]

    # The second generation no longer trusts the signer: it must not reuse the first generation's pass.
    assert asyncio.run(main()) == [True, True, False]
    assert CountingAuthority.checked == ["release", "release"]
    keys = list(caches.verdicts._entries)
    assert {key[0] for key in keys} == {first.generation, second.generation}
    assert all(digest in key for key in keys)


def test_a_failure_is_reused_only_within_its_lifetime() -> None:
    registry = CountingRegistry()
    digest = registry.add(IMAGE)
    registry.gate.set()
    clock = Clock()
    settings = VerifySettings(failure_cache_seconds=5.0, tag_cache_seconds=60.0)
    caches = VerificationCaches(settings, clock)
    verifier = pipeline(registry, policy_set(), caches, failure_cache_seconds=5.0, tag_cache_seconds=60.0)

    async def allowed() -> bool:
        return (await verifier.verify_image(IMAGE)).allowed

    assert not asyncio.run(allowed())  # unsigned
    registry.signers[digest] = ["release"]  # signed just after
    clock.now += 4.9
    assert not asyncio.run(allowed())  # the failure is still remembered
    assert registry.collected == [digest]
    clock.now += 0.1
    assert asyncio.run(allowed())  # past its lifetime the image is verified afresh
    assert registry.collected == [digest, digest]


def signed_tag_with_10s_cache() -> tuple[CountingRegistry, Pipeline, Clock]:
    registry = CountingRegistry()
    registry.signers[registry.add(IMAGE)] = ["release"]
    registry.gate.set()
    clock = Clock()
    verifier = pipeline(registry, policy_set(), VerificationCaches(VerifySettings(tag_cache_seconds=10.0), clock),
                        tag_cache_seconds=10.0)
    return registry, verifier, clock


def test_a_tag_is_resolved_again_after_its_lifetime() -> None:
    registry, verifier, clock = signed_tag_with_10s_cache()

    def digest_now() -> str | None:
        return asyncio.run(verifier.verify_image(IMAGE)).digest

    first = digest_now()
    moved = registry.add(IMAGE, seed="moved")  # the tag now names another image
    registry.signers[moved] = ["release"]
    clock.now += 9.9
    assert digest_now() == first
    clock.now += 0.1
    assert digest_now() == moved
    assert len(registry.resolved) == 2


class ByDigestRegistry(CountingRegistry):
    """Also serves every manifest it ever held by digest, as a registry does after a tag moves."""

    def __init__(self) -> None:
        super().__init__()
        self.by_digest: dict[str, bytes] = {}

    def add(self, image: str, *, seed: str = "") -> str:
        digest = super().add(image, seed=seed)
        self.by_digest[digest] = self.manifests[image]
        return digest

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        if reference.digest is None:
            return await super().resolve(reference)
        self.resolved.append(str(reference))
        await self.gate.wait()
        return ResolvedImage(reference, reference.digest, self.by_digest[reference.digest],
                             "application/vnd.oci.image.manifest.v1+json")


def test_a_tag_fetch_never_answers_a_caller_that_asked_for_a_digest() -> None:
    registry = ByDigestRegistry()
    pinned = registry.add(IMAGE)
    registry.gate.set()
    caches = VerificationCaches(VerifySettings())
    verifier = pipeline(registry, policy_set(), caches)
    asyncio.run(verifier.verify_image(IMAGE))  # the tag cache now maps the tag to `pinned`
    caches.manifests.clear()  # ... and the manifest has left its cache
    registry.add(IMAGE, seed="moved")  # the tag moves

    _, by_digest = asyncio.run(admit_concurrently(verifier, registry, [[IMAGE], [f"{IMAGE}@{pinned}"]]))
    assert by_digest[0].digest == pinned


# --- whole image verdicts ------------------------------------------------------------------------------------


def test_an_image_verdict_is_reused_only_while_the_signatures_it_counted_are_young_enough() -> None:
    registry = CountingRegistry()
    registry.signers[registry.add(IMAGE)] = ["release"]
    registry.gate.set()
    monotonic, wall = Clock(), Clock()
    wall.now = SIGNED_AT + 50
    verifier = pipeline(registry, policy_set(authority={"maxSignatureAge": "100s"}),
                        VerificationCaches(VerifySettings(), monotonic))
    verifier.clock = wall

    def reasons() -> list[str]:
        return asyncio.run(verifier.verify_image(IMAGE)).reasons

    assert reasons() == []
    for clock in (monotonic, wall):
        clock.now += 50.1  # the signature is now older than maxSignatureAge
    assert "older than maxSignatureAge" in " ".join(reasons())


def test_an_image_verdict_holds_only_for_the_namespace_labels_it_was_decided_with() -> None:
    registry = CountingRegistry()
    registry.add(IMAGE)  # unsigned
    registry.gate.set()
    verifier = pipeline(registry, policy_set(namespaceSelector={"matchLabels": {"env": "prod"}}), no_match="allow")

    def allowed(labels: dict[str, str] | None) -> bool:
        return asyncio.run(verifier.verify_image(IMAGE, AdmissionContext(namespace_labels=labels))).allowed

    assert [allowed({"env": "dev"}), allowed({"env": "prod"}), allowed(None), allowed({"env": "dev"})] == [
        True, False, False, True]


def test_an_image_verdict_holds_only_for_the_webhook_that_asked() -> None:
    registry = CountingRegistry()
    registry.signers[registry.add(IMAGE)] = ["release"]
    registry.gate.set()
    verifier = pipeline(registry, policy_set(requireDigest=True))

    def allowed(enforce_require_digest: bool) -> bool:
        context = AdmissionContext(enforce_require_digest=enforce_require_digest)
        return asyncio.run(verifier.verify_image(IMAGE, context)).allowed

    # The mutating webhook verifies the tag it is about to pin; validation still wants the digest written.
    assert [allowed(False), allowed(True), allowed(False)] == [True, False, True]


class FlakyRegistry(CountingRegistry):
    """Fails its first `failures` resolutions, then answers."""

    def __init__(self, failures: int) -> None:
        super().__init__()
        self.failures = failures

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        if self.failures:
            self.failures -= 1
            raise RegistryError("connection refused")
        return await super().resolve(reference)


def test_a_registry_fault_is_not_remembered_as_the_image_verdict() -> None:
    registry = FlakyRegistry(failures=1)
    registry.signers[registry.add(IMAGE)] = ["release"]
    registry.gate.set()
    verifier = pipeline(registry, policy_set())

    async def main() -> list[bool]:
        return [(await verifier.verify_image(IMAGE)).allowed for _ in range(2)]

    assert asyncio.run(main()) == [False, True]


def test_an_audit_finding_is_logged_each_time_its_verdict_is_used(caplog: pytest.LogCaptureFixture) -> None:
    registry = CountingRegistry()
    registry.add(IMAGE)  # unsigned
    registry.gate.set()
    verifier = pipeline(registry, policy_set(mode="audit"))

    async def main() -> list[bool]:
        return [(await verifier.verify_image(IMAGE)).allowed for _ in range(3)]

    with caplog.at_level("WARNING", logger="webhook.pipeline"):
        assert asyncio.run(main()) == [True] * 3
    assert sum(record.getMessage().startswith(f"audit: {IMAGE}: ") for record in caplog.records) == 3
    assert len(registry.collected) == 1


def test_an_image_verdict_from_a_cached_tag_ends_when_the_tag_does() -> None:
    registry, verifier, clock = signed_tag_with_10s_cache()

    def digest_in(namespace: str) -> str | None:
        context = AdmissionContext(namespace_labels={"kubernetes.io/metadata.name": namespace})
        return asyncio.run(verifier.verify_image(IMAGE, context)).digest

    first = digest_in("a")
    clock.now += 5
    assert digest_in("b") == first  # decided from the tag cache, which holds for 5 more seconds
    moved = registry.add(IMAGE, seed="moved")
    registry.signers[moved] = ["release"]
    clock.now += 5
    assert digest_in("b") == moved
    assert len(registry.resolved) == 2


# --- digest references: signatures searched while the manifest is fetched ---------------------------------------


class ManifestAfterSignaturesRegistry(ByDigestRegistry):
    """Answers a manifest by digest only once a signature source has asked about that digest: a pipeline that
    waited for the manifest before searching would never get it (and hit its deadline)."""

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        while reference.digest is not None and reference.digest not in self.collected:
            await asyncio.sleep(0)
        return await super().resolve(reference)


def test_the_signatures_of_a_digest_reference_are_searched_while_its_manifest_is_fetched() -> None:
    registry = ManifestAfterSignaturesRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    registry.gate.set()
    verdict = asyncio.run(pipeline(registry, policy_set(), deadline_seconds=2.0).verify_image(
        f"registry.example.com/app@{digest}"))
    assert verdict.allowed, verdict.reasons
    assert (registry.resolved, registry.collected) == ([f"registry.example.com/app@{digest}"], [digest])


class MissingManifestRegistry(ByDigestRegistry):
    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        self.resolved.append(str(reference))
        raise RegistryError("manifest not found (HTTP 404)")


def test_a_digest_whose_manifest_cannot_be_fetched_is_denied_although_its_signatures_verify() -> None:
    registry = MissingManifestRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    registry.gate.set()
    verifier = pipeline(registry, policy_set())

    async def main() -> list[ImageVerdict]:
        return [await verifier.verify_image(f"registry.example.com/app@{digest}") for _ in range(2)]

    verdicts = asyncio.run(main())
    assert [verdict.allowed for verdict in verdicts] == [False, False]
    assert "cannot resolve" in verdicts[0].reasons[0]
    assert len(registry.resolved) == 2  # the fault was not kept


def test_one_registry_slot_still_lets_every_image_through() -> None:
    registry = ByDigestRegistry()
    digests = [registry.add(f"registry.example.com/app{index}:v1") for index in range(3)]
    for digest in digests:
        registry.signers[digest] = ["release"]
    registry.gate.set()
    verifier = pipeline(registry, policy_set(), max_parallel_per_registry=1, deadline_seconds=2.0)
    images = [f"registry.example.com/app{index}@{digest}" for index, digest in enumerate(digests)]
    images += [f"registry.example.com/app{index}:v1" for index in range(3)]
    verdicts = asyncio.run(verifier.verify_images(images))
    assert all(verdict.allowed for verdict in verdicts), [verdict.reasons for verdict in verdicts]


# --- one namespace's credentials never decide another's pod -----------------------------------------------------

TEAM_A = Credentials("team-a", "a-password")
CONTEXT_A = AdmissionContext(pull_credentials=PullCredentials.of([("registry.example.com", TEAM_A)]))
CONTEXT_B = AdmissionContext(pull_credentials=PullCredentials.of(
    [("registry.example.com", Credentials("team-b", "b-password"))]))
CONTEXT_NONE = AdmissionContext()


class PrivateRegistry(CountingRegistry):
    """Serves manifests only to a view offering team A's credentials; its signatures (like a lookaside's) are
    public. Records every manifest request with whether it was made with team A's credentials."""

    def __init__(self) -> None:
        super().__init__()
        self.with_team_a = False
        self.asked: list[tuple[str, bool]] = []
        self.gate.set()

    def with_pull_credentials(self, pull: PullCredentials) -> PrivateRegistry:
        view = copy.copy(self)  # shares what it records
        view.with_team_a = TEAM_A in pull.lookup("registry.example.com", "app")
        return view

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        self.asked.append((str(reference), self.with_team_a))
        if not self.with_team_a:
            raise RegistryError(f"registry.example.com refused the credentials for manifest {reference} (HTTP 401)")
        if reference.digest is None:
            return await super().resolve(reference)
        await self.gate.wait()
        (data,) = (data for data in self.manifests.values()
                   if f"sha256:{hashlib.sha256(data).hexdigest()}" == reference.digest)
        return ResolvedImage(reference, reference.digest, data, "application/vnd.oci.image.manifest.v1+json")


@pytest.mark.parametrize("other", [CONTEXT_B, CONTEXT_NONE], ids=["other-secret", "no-secret"])
@pytest.mark.parametrize("by_digest", [False, True], ids=["tag", "digest"])
@pytest.mark.parametrize("forget", [(), ("images",), ("images", "verdicts"), ("images", "verdicts", "tags")],
                         ids=["warm", "no-image-verdicts", "no-authority-verdicts", "manifests-only"])
def test_what_one_namespaces_credentials_read_never_decides_another_namespaces_pod(
        other: AdmissionContext, by_digest: bool, forget: tuple[str, ...]) -> None:
    """Each cache layer in turn answers the second pod (the ones above it forgotten): it must ask the registry
    with its own credentials, and be refused."""
    registry = PrivateRegistry()
    digest = registry.add(IMAGE)
    registry.signers[digest] = ["release"]
    image = f"registry.example.com/app@{digest}" if by_digest else IMAGE
    caches = VerificationCaches(VerifySettings())
    verifier = pipeline(registry, policy_set(), caches)

    async def main() -> tuple[ImageVerdict, ImageVerdict, ImageVerdict]:
        first = await verifier.verify_image(image, CONTEXT_A)
        for name in forget:
            getattr(caches, name).clear()
        registry.asked.clear()
        second = await verifier.verify_image(image, other)
        return first, second, await verifier.verify_image(image, CONTEXT_A)

    admitted, denied, again = asyncio.run(main())
    assert admitted.allowed and again.allowed
    assert not denied.allowed
    assert "refused the credentials" in "; ".join(denied.reasons) and "HTTP 401" in "; ".join(denied.reasons)
    assert registry.asked[0] == (image, False)  # asked with its own credentials, before anything was used


def test_concurrent_pods_with_different_credentials_share_no_computation() -> None:
    registry = PrivateRegistry()
    registry.signers[registry.add(IMAGE)] = ["release"]
    verifier = pipeline(registry, policy_set())

    async def main() -> list[ImageVerdict]:
        registry.gate.clear()
        pending = [asyncio.ensure_future(verifier.verify_image(IMAGE, context))
                   for context in (CONTEXT_A, CONTEXT_B, CONTEXT_A, CONTEXT_NONE)]
        for _ in range(10):
            await asyncio.sleep(0)
        registry.gate.set()
        return list(await asyncio.gather(*pending))

    assert [verdict.allowed for verdict in asyncio.run(main())] == [True, False, True, False]
    assert sorted(registry.asked) == [(IMAGE, False), (IMAGE, False), (IMAGE, True)]


def test_cache_keys_carry_the_credential_identity_and_no_credential() -> None:
    registry = PrivateRegistry()
    registry.signers[registry.add(IMAGE)] = ["release"]
    caches = VerificationCaches(VerifySettings())
    asyncio.run(pipeline(registry, policy_set(), caches).verify_image(IMAGE, CONTEXT_A))
    identity = CONTEXT_A.pull_credentials.identity
    for cache in (caches.images, caches.verdicts, caches.tags, caches.manifests):
        assert cache._entries and all(identity in key for key in cache._entries)
        assert all("a-password" not in str(key) for key in cache._entries)
