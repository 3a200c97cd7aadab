"""The policy bundle: every Ready TrustStore and TrustPolicy, compiled by the controller into one object.

`trustgate controller` writes it as the Secret `trustgate-policy-bundle` in its namespace; every webhook
replica reads it (`trustgate serve --namespace NS`) and swaps policies when it changes. The bundle is
self-contained: TrustStore key material taken from Secrets and ConfigMaps is inlined, so the webhook needs
read access to this one object only.

A TrustPolicy that exists but is not Ready (say, its TrustStore has an expired key) is carried as an
*unavailable* policy: it still matches its images and denies them with its reason, so breaking a policy's
dependency can never turn its images into unmatched ones.

Format (JSON, key `bundle.json`):
    {"apiVersion": "trustgate.dev/v1alpha1", "kind": "PolicyBundle", "generation": 7, "digest": "sha256:...",
     "trustStores": [TrustStore...], "trustPolicies": [TrustPolicy...],
     "unavailablePolicies": [{"name", "images", "mode", "reason"}], "revokedKeys": [...]}
`digest` covers everything but `generation` and `digest`; `generation` grows by one with each new content.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator

from webhook import strictjson
from webhook.config import ConfigFileError, LoadedResources, Origin
from webhook.policy.compile import CompiledPolicy, PolicySet, compile_policy_set
from webhook.policy.matching import ImageGlob
from webhook.policy.models import (
    API_VERSION,
    ImagePattern,
    ResourceName,
    Strict,
    TrustPolicy,
    TrustStore,
    _validate_glob,
)
from webhook.validation import validation_errors
from webhook.verifiers.base import VerifierPlugin

BUNDLE_SECRET = "trustgate-policy-bundle"
BUNDLE_KEY = "bundle.json"
BUNDLE_KIND = "PolicyBundle"
ANNOTATION_GENERATION = "trustgate.dev/bundle-generation"
ANNOTATION_DIGEST = "trustgate.dev/bundle-digest"
MAX_BUNDLE_BYTES = 1024 * 1024  # the API server's limit for one Secret
MAX_BUNDLE_DEPTH = 64


class BundleError(ValueError):
    """A bundle that must not be loaded; the webhook keeps the policies it has."""


class UnavailablePolicy(Strict):
    name: ResourceName
    images: list[ImagePattern] = Field(min_length=1)
    mode: Literal["enforce", "warn", "audit"] = "enforce"
    reason: str

    @field_validator("images")
    @classmethod
    def _patterns(cls, images: list[str]) -> list[str]:
        return [_validate_glob(pattern) for pattern in images]


class PolicyBundle(Strict):
    apiVersion: Literal["trustgate.dev/v1alpha1"]
    kind: Literal["PolicyBundle"]
    generation: int = Field(ge=1)
    digest: str
    trustStores: list[TrustStore]
    trustPolicies: list[TrustPolicy]
    unavailablePolicies: list[UnavailablePolicy]
    revokedKeys: list[str]


@dataclass(frozen=True)
class BundleContent:
    """What a bundle holds, before it is given a generation."""

    trust_stores: tuple[TrustStore, ...]
    trust_policies: tuple[TrustPolicy, ...]
    unavailable_policies: tuple[UnavailablePolicy, ...]
    # The revokedKeys of every TrustStore, Ready or not: a store that breaks must not un-revoke a key.
    revoked_keys: frozenset[str] = frozenset()

    def document(self) -> dict[str, Any]:
        def clean(resource: TrustStore | TrustPolicy) -> dict[str, Any]:
            document = resource.model_dump(mode="json", exclude_none=True, exclude={"status"})
            document["metadata"] = {"name": resource.metadata.name}
            return document

        return {
            "trustStores": [clean(store) for store in sorted(self.trust_stores, key=_name)],
            "trustPolicies": [clean(policy) for policy in sorted(self.trust_policies, key=_name)],
            "unavailablePolicies": [policy.model_dump(mode="json") for policy in
                                    sorted(self.unavailable_policies, key=lambda policy: policy.name)],
            "revokedKeys": sorted(self.revoked_keys),
        }

    @property
    def digest(self) -> str:
        canonical = json.dumps(self.document(), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return "sha256:" + hashlib.sha256(canonical.encode()).hexdigest()

    def encode(self, generation: int) -> bytes:
        document = {"apiVersion": API_VERSION, "kind": BUNDLE_KIND, "generation": generation,
                    "digest": self.digest, **self.document()}
        return json.dumps(document, sort_keys=True, indent=1, ensure_ascii=False).encode()


def _name(resource: TrustStore | TrustPolicy) -> str:
    return resource.metadata.name


def decode_bundle(data: bytes) -> PolicyBundle:
    """Parse and check a bundle: strict JSON, the schema, and a digest that matches the content."""
    if len(data) > MAX_BUNDLE_BYTES:
        raise BundleError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    try:
        bundle = PolicyBundle.model_validate(strictjson.loads(data, MAX_BUNDLE_DEPTH))
    except strictjson.StrictJSONError as exc:
        raise BundleError(f"bundle is not valid JSON: {exc}") from None
    except ValidationError as exc:
        path, message = validation_errors(exc)[0]
        raise BundleError(f"bundle: {path}: {message}") from None
    content = BundleContent(tuple(bundle.trustStores), tuple(bundle.trustPolicies),
                            tuple(bundle.unavailablePolicies), frozenset(bundle.revokedKeys))
    if content.digest != bundle.digest:
        raise BundleError(f"bundle digest {bundle.digest} does not match its content ({content.digest})")
    return bundle


def compile_bundle(bundle: PolicyBundle, verifiers: Mapping[str, VerifierPlugin] | None = None,
                   previous: PolicySet | None = None) -> PolicySet:
    """The bundle as a PolicySet whose generation is the bundle's; BundleError if any part does not compile.
    What is unchanged since `previous` (the generation being served) is reused from it."""
    where = f"policy bundle generation {bundle.generation}"
    resources = LoadedResources(
        tuple((Origin(where, "TrustStore", store.metadata.name), store) for store in bundle.trustStores),
        tuple((Origin(where, "TrustPolicy", policy.metadata.name), policy) for policy in bundle.trustPolicies),
    )
    try:
        compiled = compile_policy_set(resources, verifiers, generation=bundle.generation, previous=previous)
    except ConfigFileError as exc:
        raise BundleError(str(exc)) from None
    unavailable = tuple(
        CompiledPolicy(name=policy.name, globs=tuple(ImageGlob.compile(pattern) for pattern in policy.images),
                       mode=policy.mode, threshold=1, authorities=(),
                       unavailable=f"TrustPolicy {policy.name} is not Ready: {policy.reason}")
        for policy in bundle.unavailablePolicies
    )
    return PolicySet(compiled.generation, compiled.policies + unavailable, compiled.trust_stores,
                     compiled.revoked_keys | frozenset(bundle.revokedKeys))


def unavailable_policy(body: Mapping[str, Any], reason: str) -> UnavailablePolicy | None:
    """A not-Ready TrustPolicy as an unavailable entry, or None if even its image patterns are unusable."""
    spec = body.get("spec")
    if not isinstance(spec, Mapping):
        return None
    mode = spec.get("mode", "enforce")
    try:
        return UnavailablePolicy(name=str(body.get("metadata", {}).get("name", "")), images=spec.get("images"),
                                 mode=mode if mode in ("enforce", "warn", "audit") else "enforce", reason=reason)
    except ValidationError:
        return None
