"""The verification pipeline shared by `trustgate verify` and the webhook, so their answers never differ.

image string -> reference -> matching TrustPolicies (no match: decided without any network call)
-> manifest digest (bytes hashed) -> per authority: collect signatures from its sources, verify each one
-> combine (authorities by threshold, policies all must pass) -> ImageVerdict with its reason tree.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from webhook.policy.compile import CompiledPolicy, PolicySet
from webhook.references import ImageReference, InvalidReferenceError, parse_reference
from webhook.registry.client import RegistryClient, RegistryError
from webhook.results import Result, any_of, at_least
from webhook.verifiers.base import CompiledAuthority, ResolvedImage, SignatureMaterial

log = logging.getLogger(__name__)

NoMatch = Literal["deny", "warn", "allow"]


@dataclass(frozen=True)
class VerifySettings:
    no_match: NoMatch = "deny"
    deadline_seconds: float = 9.0
    max_parallel_signature_checks: int = 8


@dataclass(frozen=True)
class ImageVerdict:
    image: str
    allowed: bool
    result: Result
    digest: str | None = None
    reference: ImageReference | None = None
    warnings: tuple[str, ...] = ()
    generation: int | None = None

    @property
    def reasons(self) -> list[str]:
        return self.result.failure_reasons(include_subject=False)

    def to_dict(self) -> dict[str, object]:
        return {
            "image": self.image,
            "reference": str(self.reference) if self.reference else None,
            "digest": self.digest,
            "allowed": self.allowed,
            "reasons": self.reasons,
            "warnings": list(self.warnings),
            "policyGeneration": self.generation,
            "explanation": self.result.to_dict(),
        }


@dataclass
class Pipeline:
    policies: PolicySet
    registry: RegistryClient
    settings: VerifySettings = field(default_factory=VerifySettings)

    def __post_init__(self) -> None:
        self._signature_checks = asyncio.Semaphore(self.settings.max_parallel_signature_checks)

    async def verify_images(self, images: Sequence[str]) -> list[ImageVerdict]:
        """Verify each distinct image once, concurrently; verdicts come back in the order given."""
        distinct = list(dict.fromkeys(images))
        verdicts = await asyncio.gather(*(self.verify_image(image) for image in distinct))
        by_image = dict(zip(distinct, verdicts, strict=True))
        return [by_image[image] for image in images]

    async def verify_image(self, image: str) -> ImageVerdict:
        try:
            async with asyncio.timeout(self.settings.deadline_seconds):
                return await self._verify(image)
        except TimeoutError:
            message = f"verification did not finish within {self.settings.deadline_seconds:g}s; denied"
            return self._verdict(image, Result.fail(image, "deadline", message), allowed=False)
        except Exception as exc:  # fail closed: a fault anywhere denies, it never admits
            log.exception("verification of %s failed", image)
            message = f"internal error during verification ({exc.__class__.__name__}); denied"
            return self._verdict(image, Result.fail(image, "internal_error", message), allowed=False)

    def _verdict(self, image: str, result: Result, *, allowed: bool, **kwargs: object) -> ImageVerdict:
        return ImageVerdict(image, allowed, result, generation=self.policies.generation, **kwargs)  # type: ignore[arg-type]

    async def _verify(self, image: str) -> ImageVerdict:
        try:
            reference = parse_reference(image).with_default_tag()
        except InvalidReferenceError as exc:
            return self._verdict(image, Result.fail(image, "reference.invalid", str(exc)), allowed=False)

        policies = self.policies.matching(reference.repository)
        if not policies:
            return self._no_match(image, reference)

        try:
            resolved = await self.registry.resolve(reference)
        except RegistryError as exc:
            message = f"cannot resolve {reference}: {exc}"
            failures = [Result.fail(f"policy {policy.name}", "registry", message) for policy in policies]
            return self._combine(image, reference, None, policies, failures)

        results = await asyncio.gather(*(self._check_policy(policy, resolved) for policy in policies))
        return self._combine(image, reference, resolved.digest, policies, list(results))

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
        for policy, policy_result in failed:
            if policy.mode == "warn":
                warnings.extend(f"{image}: {reason}" for reason in policy_result.failure_reasons())
            elif policy.mode == "audit":
                for reason in policy_result.failure_reasons():
                    log.warning("audit: %s: %s", image, reason)
        allowed = all(policy.mode != "enforce" for policy, _ in failed)
        return self._verdict(image, result, allowed=allowed, digest=digest, reference=reference,
                             warnings=tuple(warnings))

    async def _check_policy(self, policy: CompiledPolicy, image: ResolvedImage) -> Result:
        if policy.unavailable is not None:
            return Result.fail(f"policy {policy.name}", "policy.unavailable", policy.unavailable)
        results = await asyncio.gather(*(self._check_authority(authority, image)
                                         for authority in policy.authorities))
        return at_least(f"policy {policy.name}", policy.threshold, results, what="authorities")

    async def _check_authority(self, authority: CompiledAuthority, image: ResolvedImage) -> Result:
        subject = f"authority {authority.name} ({authority.verifier_type})"
        collected = await asyncio.gather(*(source.collect(image, self.registry)
                                           for source in authority.sources(image)))
        materials = [material for found in collected for material in found.materials]
        problems = [Result.fail(where, "signature.source", message)
                    for found in collected for where, message in found.problems]
        checks = await asyncio.gather(*(self._check_signature(authority, image, material)
                                        for material in materials))
        if not checks and not problems:
            searched = "; ".join(found.searched for found in collected)
            return Result.fail(subject, "signature.none", f"no signatures found (searched: {searched})")
        return any_of(subject, [*checks, *problems], what="signatures")

    async def _check_signature(self, authority: CompiledAuthority, image: ResolvedImage,
                               material: SignatureMaterial) -> Result:
        async with self._signature_checks:
            return await asyncio.to_thread(authority.verify_signature, image, material)
