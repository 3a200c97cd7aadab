"""The verification pipeline shared by `trustgate verify` and the webhook, so their answers never differ.

image string -> reference -> matching TrustPolicies (no match: decided without any network call)
-> manifest digest (bytes hashed) -> per authority: collect signatures from its sources, verify each one
-> combine (authorities by threshold, policies all must pass) -> ImageVerdict with its reason tree.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal, TypeVar

from webhook.artifacts import Collected, ImageTarget, ResolvedImage, SignatureMaterial
from webhook.cache import ExpiringLRU, SingleFlight, estimated_bytes
from webhook.metrics import VERIFICATION_SECONDS, VERIFICATIONS_IN_FLIGHT
from webhook.policy.compile import AuthorityRules, CompiledPolicy, PolicySet
from webhook.references import ImageReference, InvalidReferenceError, parse_reference
from webhook.registry.client import RegistryClient, RegistryError
from webhook.registry.keyring import NO_PULL_CREDENTIALS, PullCredentials
from webhook.results import Result, at_least
from webhook.sources.referrers import shared_lookups as shared_referrers_lookups

log = logging.getLogger(__name__)

NoMatch = Literal["deny", "warn", "allow"]
T = TypeVar("T")


async def _all(coroutines: Sequence[Coroutine[Any, Any, T]]) -> list[T]:
    """The results of all the coroutines, run concurrently. A lone one is awaited in place: the common pod,
    policy and authority has one of each, and a verdict answered from cache then costs no task."""
    if len(coroutines) == 1:
        return [await coroutines[0]]
    return list(await asyncio.gather(*coroutines))


@dataclass(frozen=True)
class VerifySettings:
    no_match: NoMatch = "deny"
    deadline_seconds: float = 9.0
    max_parallel_signature_checks: int = 8
    # How long a tag keeps resolving to the digest it last had (0: ask the registry every time).
    tag_cache_seconds: float = 10.0
    # How long a passing authority verdict is reused within one policy generation; time-dependent checks
    # (certificate and signature expiry) are evaluated again at least this often.
    verdict_cache_seconds: float = 600.0
    # Failures are remembered briefly, so a burst of admissions of a bad image costs one verification.
    failure_cache_seconds: float = 5.0
    cache_entries: int = 10_000
    # Signatures one authority examines for one image, over all its sources (each source has its own cap too).
    max_signatures_per_image: int = 64
    max_parallel_per_registry: int = 64


# Manifests are immutable by digest; they are kept for a day, bounded by count and, as each may be up to
# 4 MiB, by their bytes in all (a usual manifest is 1-2 KiB: the entries bound comes first).
MANIFEST_CACHE_SECONDS = 86_400.0
MANIFEST_CACHE_ENTRIES = 1_000
MANIFEST_CACHE_BYTES = 16 * 1024 * 1024
# The other caches hold `VerifySettings.cache_entries` entries each, and weigh at most (by estimate):
TAG_CACHE_BYTES = 8 * 1024 * 1024  # a digest under (credentials, repository, tag): about 600 bytes an entry
VERDICT_CACHE_BYTES = 16 * 1024 * 1024  # an authority's Result tree: about 2.5 KiB when one signature passes
IMAGE_CACHE_BYTES = 24 * 1024 * 1024  # an image's whole verdict, twice: about 8.5 KiB for one authority
# Computations shared while in flight (per kind: resolving tags, fetching manifests, verifying authorities):
# no more than the reviews in flight can ask for at once.
FLIGHT_ENTRIES = 1_024
FLIGHT_BYTES = 4 * 1024 * 1024
# Registries with their own bound on concurrent work, each kept REGISTRY_SLOT_SECONDS from its first use. A
# registry forgotten while busy (expired, or evicted by more than this many others) gets a fresh bound: until the
# work holding the old one ends, both apply, so for those seconds up to twice the work may run against it.
REGISTRY_SLOT_ENTRIES = 1_024
REGISTRY_SLOT_BYTES = 1024 * 1024
REGISTRY_SLOT_SECONDS = 3_600.0
SEMAPHORE_BYTES = 400  # an asyncio.Semaphore and its waiter deque


def _image_verdict_bytes(verdict: ImageVerdict) -> int:
    """The verdict, and as much again for the reasons, codes and log fields rendered from it once it is used."""
    return 2 * estimated_bytes(verdict)


class VerificationCaches:
    """State shared by every policy generation a webhook serves: what the registry said, and verdicts (keyed
    by generation, so a new generation never sees the old one's).

    Every key also carries the identity of the pull credentials the registry was asked with: what a registry
    showed one namespace's credentials (a tag, a manifest, signatures, a verdict) never decides an image for
    pods with other credentials, which may not be allowed to read it at all.
    """

    def __init__(self, settings: VerifySettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        # (credential identity, repository, digest or tag)
        self.manifests: ExpiringLRU[tuple[str, str, str], tuple[bytes, str]] = ExpiringLRU(
            "manifest", MANIFEST_CACHE_ENTRIES, clock, max_bytes=MANIFEST_CACHE_BYTES,
            size=lambda manifest: len(manifest[0]) + len(manifest[1]))
        self.tags: ExpiringLRU[tuple[str, str, str], str] = ExpiringLRU(
            "tag", settings.cache_entries, clock, max_bytes=TAG_CACHE_BYTES)
        self.verdicts: ExpiringLRU[tuple[object, ...], Result] = ExpiringLRU(
            "verdict", settings.cache_entries, clock, max_bytes=VERDICT_CACHE_BYTES)
        # Whole image verdicts, each kept until the first of the entries it was decided from expires.
        self.images: ExpiringLRU[tuple[object, ...], ImageVerdict] = ExpiringLRU(
            "image", settings.cache_entries, clock, max_bytes=IMAGE_CACHE_BYTES, size=_image_verdict_bytes)
        self.resolving: SingleFlight[tuple[str, str, str], tuple[ResolvedImage, float]] = SingleFlight(
            "resolve", FLIGHT_ENTRIES, max_bytes=FLIGHT_BYTES)
        self.fetching: SingleFlight[tuple[str, str, str], tuple[bytes, str]] = SingleFlight(
            "manifest", FLIGHT_ENTRIES, max_bytes=FLIGHT_BYTES)
        self.verifying: SingleFlight[tuple[object, ...], tuple[float, Result]] = SingleFlight(
            "verdict", FLIGHT_ENTRIES, max_bytes=FLIGHT_BYTES)
        self.registry_slots: ExpiringLRU[str, asyncio.Semaphore] = ExpiringLRU(
            "registry_slot", REGISTRY_SLOT_ENTRIES, clock, max_bytes=REGISTRY_SLOT_BYTES,
            size=lambda _: SEMAPHORE_BYTES)
        self._slots_per_registry = settings.max_parallel_per_registry

    def registry_slot(self, registry: str) -> asyncio.Semaphore:
        """Bounds concurrent verification work against one registry (and the signature servers it implies)."""
        slot = self.registry_slots.get(registry)
        if slot is None:
            slot = asyncio.Semaphore(self._slots_per_registry)
            self.registry_slots.put(registry, slot, REGISTRY_SLOT_SECONDS)
        return slot


@dataclass(frozen=True)
class AdmissionContext:
    """What a request says about where its images will run."""

    # Labels of the pod's namespace; None when unknown (then no namespaceSelector exempts an image).
    namespace_labels: Mapping[str, str] | None = None
    # False for the mutating webhook, whose job is to add the digest that requireDigest asks for.
    enforce_require_digest: bool = True
    # The pod's own pull credentials (its imagePullSecrets, else its ServiceAccount's), offered before the
    # configured ones.
    pull_credentials: PullCredentials = NO_PULL_CREDENTIALS


UNKNOWN_CONTEXT = AdmissionContext()


@dataclass(frozen=True)
class _Access:
    """How one image is read: the registry client offering the pod's credentials, and their identity (part of
    every cache key)."""

    registry: RegistryClient
    identity: str


class Freshness:
    """Until when a verdict holds: the earliest expiry (on the caches' clock) among what it was decided from."""

    def __init__(self, until: float) -> None:
        self.until = until

    def bound(self, expires: float) -> None:
        self.until = min(self.until, expires)


@dataclass(frozen=True)
class ImageVerdict:
    image: str
    allowed: bool
    result: Result
    digest: str | None = None
    reference: ImageReference | None = None
    warnings: tuple[str, ...] = ()
    generation: int | None = None
    # May the mutating webhook pin this image to `digest`? (verified, and no matching policy opted out)
    pinnable: bool = False
    # (policy name, mode) of every matching policy that failed, whatever its mode made of it.
    violations: tuple[tuple[str, str], ...] = ()
    # Why `audit` policies failed: logged each time the verdict is used, not only when it is computed.
    audit_findings: tuple[str, ...] = ()
    # Names of the matching TrustPolicies and of their authorities ("policy/authority").
    policies: tuple[str, ...] = ()
    authorities: tuple[str, ...] = ()

    @cached_property
    def reasons(self) -> list[str]:
        return self.result.failure_reasons(include_subject=False)

    @cached_property
    def codes(self) -> list[str]:
        """Public codes of why the image failed (also when a warn or audit policy let it through)."""
        return self.result.failure_codes()

    @cached_property
    def log_fields(self) -> dict[str, object]:
        """What the decision log says of this verdict, gathered once however often it is answered from cache."""
        return {"image": self.image, "digest": self.digest, "verdict": "admitted" if self.allowed else "denied",
                "policies": list(self.policies), "authorities": list(self.authorities), "codes": self.codes,
                "reasons": self.reasons}

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "reference": str(self.reference) if self.reference else None,
            "digest": self.digest,
            "allowed": self.allowed,
            "reasons": self.reasons,
            "codes": self.codes,
            "warnings": list(self.warnings),
            "policyGeneration": self.generation,
            "explanation": self.result.to_dict(),
        }


@dataclass
class Pipeline:
    policies: PolicySet
    registry: RegistryClient
    settings: VerifySettings = field(default_factory=VerifySettings)
    clock: Callable[[], float] = time.time
    caches: VerificationCaches | None = None

    def __post_init__(self) -> None:
        self._signature_checks = asyncio.Semaphore(self.settings.max_parallel_signature_checks)
        if self.caches is None:
            self.caches = VerificationCaches(self.settings)

    async def verify_images(self, images: Sequence[str],
                            context: AdmissionContext = UNKNOWN_CONTEXT) -> list[ImageVerdict]:
        """Verify each distinct image once, concurrently; verdicts come back in the order given."""
        return [verdict for verdict, _ in await self.decide_images(images, context)]

    async def decide_images(self, images: Sequence[str],
                            context: AdmissionContext = UNKNOWN_CONTEXT) -> list[tuple[ImageVerdict, bool]]:
        """Each image's verdict, in the order given, and whether it was answered from the cache.

        An image whose verdict still holds in this context is answered from the cache, without a task.
        """
        caches = self._caches
        labels = None if context.namespace_labels is None else frozenset(context.namespace_labels.items())
        identity = context.pull_credentials.identity
        keys = {image: (self.policies.generation, identity, image, labels, context.enforce_require_digest)
                for image in images}
        known: dict[str, ImageVerdict] = {}
        for image, key in keys.items():
            cached = caches.images.get(key)
            if cached is not None:
                known[image] = cached
        from_cache = set(known)
        unknown = [image for image in keys if image not in from_cache]
        if unknown:
            known.update(zip(unknown, await _all([self._decide(image, keys[image], context) for image in unknown]),
                             strict=True))
        for verdict in known.values():
            for reason in verdict.audit_findings:
                log.warning("audit: %s: %s", verdict.image, reason)
        return [(known[image], image in from_cache) for image in images]

    async def verify_image(self, image: str, context: AdmissionContext = UNKNOWN_CONTEXT) -> ImageVerdict:
        return (await self.verify_images([image], context))[0]

    async def _decide(self, image: str, key: tuple[object, ...], context: AdmissionContext) -> ImageVerdict:
        caches = self._caches
        freshness = Freshness(caches.clock() + self.settings.verdict_cache_seconds)
        try:
            # Every authority checking this image reads its referrers index from one lookup.
            with shared_referrers_lookups():
                async with asyncio.timeout(self.settings.deadline_seconds):
                    verdict = await self._verify(image, context, freshness)
        except TimeoutError:
            message = f"verification did not finish within {self.settings.deadline_seconds:g}s; denied"
            return self._verdict(image, Result.fail(image, "deadline", message), allowed=False)
        except Exception as exc:  # fail closed: a fault anywhere denies, it never admits
            log.exception("verification of %s failed", image)
            message = f"internal error during verification ({exc.__class__.__name__}); denied"
            return self._verdict(image, Result.fail(image, "internal_error", message), allowed=False)
        caches.images.put_until(key, verdict, freshness.until)
        return verdict

    def _verdict(self, image: str, result: Result, *, allowed: bool, **kwargs: object) -> ImageVerdict:
        return ImageVerdict(image, allowed, result, generation=self.policies.generation, **kwargs)  # type: ignore[arg-type]

    async def _verify(self, image: str, context: AdmissionContext, freshness: Freshness) -> ImageVerdict:
        pull = context.pull_credentials
        access = _Access(self.registry.with_pull_credentials(pull) if pull else self.registry, pull.identity)
        try:
            reference = parse_reference(image).with_default_tag()
        except InvalidReferenceError as exc:
            return self._verdict(image, Result.fail(image, "reference.invalid", str(exc)), allowed=False)

        policies = self.policies.matching(reference.repository, context.namespace_labels)
        if not policies:
            return self._no_match(image, reference)

        # Policies that fail whatever the registry says are decided before any request is made.
        results: dict[str, Result] = {}
        for policy in policies:
            if policy.unavailable is not None:
                results[policy.name] = Result.fail(f"policy {policy.name}", "policy.unavailable", policy.unavailable)
            elif policy.require_digest and reference.digest is None and context.enforce_require_digest:
                results[policy.name] = Result.fail(
                    f"policy {policy.name}", "reference.digest_required",
                    f"requires a digest-pinned reference (name@sha256:...); {image} has none")
        to_check = [policy for policy in policies if policy.name not in results]
        digest: str | None = None
        if to_check:
            try:
                # A digest reference names its target at once: its signatures are searched while its manifest
                # is fetched. A tag is resolved first.
                if reference.digest is None:
                    target = (await self._resolve_tag(access, reference, freshness)).target
                else:
                    target = ImageTarget(reference, reference.digest)
                checked = await _all([self._check_policy(access, policy, target, freshness)
                                      for policy in to_check])
                digest = target.digest
            except RegistryError as exc:
                freshness.bound(float("-inf"))  # a registry fault is asked about again next time
                message = f"cannot resolve {reference}: {exc}"
                results.update((policy.name, Result.fail(f"policy {policy.name}", "registry", message))
                               for policy in to_check)
            else:
                results.update((policy.name, result) for policy, result in zip(to_check, checked, strict=True))
        return self._combine(image, reference, digest, policies, [results[policy.name] for policy in policies])

    def _no_match(self, image: str, reference: ImageReference) -> ImageVerdict:
        mode = self.settings.no_match
        message = f"no TrustPolicy matches repository {reference.repository} (no-match: {mode})"
        if mode == "allow":
            return self._verdict(image, Result.ok(image, "policy.no_match", message), allowed=True,
                                 reference=reference)
        result = Result.fail(image, "policy.no_match", message)
        warnings = (f"{image}: {message}",) if mode == "warn" else ()
        return self._verdict(image, result, allowed=mode == "warn", reference=reference, warnings=warnings)

    def _combine(self, image: str, reference: ImageReference, digest: str | None,
                 policies: Sequence[CompiledPolicy], results: Sequence[Result]) -> ImageVerdict:
        """All matching policies must pass; only failures of `enforce` policies deny the image."""
        failed = [(policy, result) for policy, result in zip(policies, results, strict=True) if not result.passed]
        summary = f"{len(results) - len(failed)} of {len(results)} matching TrustPolicies passed"
        if digest:
            summary += f" for digest {digest}"
        code = "image.rejected" if failed else "image.verified"
        result = Result(image, not failed, code, summary, tuple(results))
        warnings: list[str] = []
        audit_findings: list[str] = []
        for policy, policy_result in failed:
            if policy.mode == "warn":
                warnings.extend(f"{image}: {reason}" for reason in policy_result.failure_reasons())
            elif policy.mode == "audit":
                audit_findings.extend(policy_result.failure_reasons())
        # Checks a verifier was told to log rather than enforce (e.g. Notation's permissive level) still reach
        # the deployer as warnings.
        warnings.extend(f"{image}: {node.subject}: {node.details['warnings']}"
                        for _, node in result.walk() if node.passed and "warnings" in node.details)
        allowed = all(policy.mode != "enforce" for policy, _ in failed)
        pinnable = allowed and digest is not None and all(policy.mutate_digest for policy in policies)
        return self._verdict(image, result, allowed=allowed, digest=digest, reference=reference,
                             warnings=tuple(warnings), pinnable=pinnable,
                             violations=tuple((policy.name, policy.mode) for policy, _ in failed),
                             audit_findings=tuple(audit_findings),
                             policies=tuple(policy.name for policy in policies),
                             authorities=tuple(f"{policy.name}/{rules.name}" for policy in policies
                                               for rules in policy.authorities))

    async def _resolve_tag(self, access: _Access, reference: ImageReference, freshness: Freshness) -> ResolvedImage:
        """The manifest a tag names now, asking the registry once for any number of concurrent callers; the
        answer holds only as long as the tag cache keeps it."""
        caches = self._caches
        repository = reference.repository
        tag_key = (access.identity, repository, reference.tag or "")
        tagged = caches.tags.lookup(tag_key)
        if tagged is not None:
            expires, digest = tagged
            freshness.bound(expires)
            return await self._manifest(access, ImageTarget(reference, digest))

        async def fetch() -> tuple[ResolvedImage, float]:
            async with caches.registry_slot(reference.domain):
                resolved = await access.registry.resolve(reference)
            caches.manifests.put((access.identity, repository, resolved.digest),
                                 (resolved.manifest, resolved.media_type), MANIFEST_CACHE_SECONDS)
            return resolved, caches.tags.put(tag_key, resolved.digest, self.settings.tag_cache_seconds)

        resolved, expires = await caches.resolving.run(tag_key, fetch)
        freshness.bound(expires)
        return ResolvedImage(reference, resolved.digest, resolved.manifest, resolved.media_type)

    async def _manifest(self, access: _Access, target: ImageTarget) -> ResolvedImage:
        """The manifest a digest names (immutable, so kept long), fetched once for concurrent callers.

        Fetched by digest even for an image admitted by tag: the tag may have moved since it named `target`.
        """
        caches = self._caches
        reference = target.reference
        key = (access.identity, reference.repository, target.digest)
        cached = caches.manifests.get(key)
        if cached is None:
            async def fetch() -> tuple[bytes, str]:
                async with caches.registry_slot(reference.domain):
                    resolved = await access.registry.resolve(reference.with_digest(target.digest))
                caches.manifests.put(key, (resolved.manifest, resolved.media_type), MANIFEST_CACHE_SECONDS)
                return resolved.manifest, resolved.media_type

            cached = await caches.fetching.run(key, fetch)
        return ResolvedImage(reference, target.digest, *cached)

    @property
    def _caches(self) -> VerificationCaches:
        assert self.caches is not None  # set in __post_init__
        return self.caches

    async def _check_policy(self, access: _Access, policy: CompiledPolicy, target: ImageTarget,
                            freshness: Freshness) -> Result:
        subject = f"policy {policy.name}"
        # An index is parsed for its children only for policies that deny digests at all (not on the hot path).
        if policy.denied_digests:
            image = await self._manifest(access, target)
            denied = policy.denied_digests & {image.digest, *image.child_digests()}
            if denied:
                which = "the image" if image.digest in denied else f"its child manifest {sorted(denied)[0]}"
                return Result.fail(subject, "digest.denied",
                                   f"{which} is listed in deniedDigests ({image.digest}); never admitted")
        results = await _all([self._cached_authority(access, policy, rules, target, freshness)
                              for rules in policy.authorities])
        return at_least(subject, policy.threshold, results, what="authorities")

    async def _cached_authority(self, access: _Access, policy: CompiledPolicy, rules: AuthorityRules,
                                target: ImageTarget, freshness: Freshness) -> Result:
        """An authority's verdict on (reference, digest) within this policy generation, computed once."""
        caches = self._caches
        # The reference is part of the key: identity rules judge the name an image is admitted under.
        key = (self.policies.generation, access.identity, policy.name, rules.name, str(target.reference),
               target.digest)
        cached = caches.verdicts.lookup(key)
        if cached is None:
            async def verify() -> tuple[float, Result]:
                started = time.perf_counter()
                with VERIFICATIONS_IN_FLIGHT.track_inprogress():
                    result = await self._check_authority(access, rules, target)
                VERIFICATION_SECONDS.labels(rules.verifier.verifier_type, "passed" if result.passed else "failed"
                                            ).observe(time.perf_counter() - started)
                return caches.verdicts.put(key, result, self._verdict_lifetime(result, rules)), result

            cached = await caches.verifying.run(key, verify)
        expires, result = cached
        freshness.bound(expires)
        return result

    def _verdict_lifetime(self, result: Result, rules: AuthorityRules) -> float:
        if not result.passed:
            return self.settings.failure_cache_seconds
        lifetime = self.settings.verdict_cache_seconds
        if rules.max_signature_age_seconds is not None:
            # A pass stands only while its signatures are young enough; the oldest one counted ages out first.
            now = self.clock()
            for check in result.children:
                if check.passed and check.signed_at is not None:
                    lifetime = min(lifetime, check.signed_at + rules.max_signature_age_seconds - now)
        return lifetime

    async def _check_authority(self, access: _Access, rules: AuthorityRules, target: ImageTarget) -> Result:
        authority = rules.verifier
        subject = f"authority {authority.name} ({authority.verifier_type})"

        async def collect() -> list[Collected]:
            async with self._caches.registry_slot(target.reference.domain):
                return await asyncio.gather(*(source.collect(target, access.registry)
                                              for source in authority.sources(target)))

        collected, image = await asyncio.gather(collect(), self._manifest(access, target))
        problems = [Result.fail(where, "signature.source", message)
                    for found in collected for where, message in found.problems]
        materials: list[SignatureMaterial] = []
        first_label: dict[bytes, str] = {}
        for material in (material for found in collected for material in found.materials):
            # Annotations count: two cosign `.sig` layers share the payload and differ only in their signature.
            fingerprint = hashlib.sha256(material.data + repr(sorted(material.annotations.items())).encode()).digest()
            if fingerprint in first_label:
                problems.append(Result.fail(material.label, "signature.duplicate",
                                            f"the same bytes as {first_label[fingerprint]}; counted once"))
            else:
                first_label[fingerprint] = material.label
                materials.append(material)
        budget = self.settings.max_signatures_per_image
        if len(materials) > budget:
            problems.append(Result.fail(subject, "signature.limit",
                                        f"{len(materials)} signatures found; only the first {budget} were examined "
                                        "(max signatures per image)"))
            materials = materials[:budget]
        checks = await asyncio.gather(*(self._check_signature(rules, image, material) for material in materials))
        if not checks and not problems:
            searched = "; ".join(found.searched for found in collected)
            return Result.fail(subject, "signature.none", f"no signatures found (searched: {searched})")
        signers = list(dict.fromkeys(check.signer or check.subject for check in checks if check.passed))
        required = rules.min_signatures
        passed = len(signers) >= required
        if required == 1:
            message = "a valid signature" if passed else "no valid signature"
            message += f" among {len(checks) + len(problems)} examined"
        else:
            message = f"valid signatures by {len(signers)} distinct signers; {required} required"
        return Result(subject, passed, "signatures.satisfied" if passed else "signatures.unsatisfied", message,
                      (*checks, *problems))

    async def _check_signature(self, rules: AuthorityRules, image: ResolvedImage,
                               material: SignatureMaterial) -> Result:
        async with self._signature_checks:
            result = await asyncio.to_thread(rules.verifier.verify_signature, image, material)
        if not result.passed:
            return result
        return self._withdrawn(result, rules) or result

    def _withdrawn(self, result: Result, rules: AuthorityRules) -> Result | None:
        """A valid signature that trust has since been withdrawn from: a revoked key or too old to count."""
        identifiers = [identifier.upper() for identifier in (result.signer_ids or (result.signer or "",))]
        for revoked in self.policies.revoked_keys:
            if any(identifier == revoked or (len(revoked) == 16 and identifier.endswith(revoked))
                   for identifier in identifiers):
                return Result.fail(result.subject, "key.revoked",
                                   f"signed by key {revoked}, which a TrustStore lists in revokedKeys")
        max_age = rules.max_signature_age_seconds
        if max_age is not None:
            if result.signed_at is None:
                return Result.fail(result.subject, "signature.undated",
                                   f"carries no signed time, and maxSignatureAge is {max_age}s")
            age = self.clock() - result.signed_at
            if age > max_age:
                return Result.fail(result.subject, "signature.too_old",
                                   f"signed {age / 86400:.1f} days ago, older than maxSignatureAge "
                                   f"({max_age / 86400:g} days)")
        return None
