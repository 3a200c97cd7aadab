"""Policy combination over a stub verifier type: quorum, revocation, signature age, denied digests, digest rules,
namespaces. The verifier and registry here are test doubles of the edges; the real formats are tested end to end."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from tests.helpers import resources, trust_policy
from webhook.artifacts import Collected, ImageTarget, ResolvedImage, SignatureMaterial
from webhook.pipeline import UNKNOWN_CONTEXT, AdmissionContext, ImageVerdict, Pipeline, VerifySettings
from webhook.policy.compile import compile_policy_set
from webhook.references import ImageReference
from webhook.results import Result
from webhook.sources.base import SignatureSource
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, discover_verifiers

NOW = 2_000_000_000
DAY = 86400


class StubSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    trusted: list[str]


class Registry:
    """Images by repository:tag; signatures by digest (what a signature store would hold)."""

    def __init__(self) -> None:
        self.manifests: dict[str, bytes] = {}
        self.signatures: dict[str, list[dict[str, Any]]] = {}
        self.resolved = 0

    def add(self, name: str, *, children: Sequence[str] = ()) -> str:
        document: dict[str, Any] = {"schemaVersion": 2, "name": name}
        if children:
            document["manifests"] = [{"digest": child} for child in children]
        data = json.dumps(document).encode()
        self.manifests[name] = data
        return f"sha256:{hashlib.sha256(data).hexdigest()}"

    def sign(self, digest: str, signer: str, signed_at: int | None = NOW) -> None:
        self.signatures.setdefault(digest, []).append({"signer": signer, "signed_at": signed_at})

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        self.resolved += 1
        data = self.manifests[f"{reference.repository}:{reference.tag}"]
        digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
        if reference.digest is not None:
            assert reference.digest == digest
        media_type = ("application/vnd.oci.image.index.v1+json" if b'"manifests"' in data
                      else "application/vnd.oci.image.manifest.v1+json")
        return ResolvedImage(reference, digest, data, media_type)


class StubSource(SignatureSource):
    async def collect(self, image: ImageTarget, registry: Any) -> Collected:
        entries = registry.signatures.get(image.digest, [])
        return Collected("stub store", tuple(SignatureMaterial(f"signature-{index}", json.dumps(entry).encode())
                                            for index, entry in enumerate(entries, start=1)))


class StubAuthority(CompiledAuthority):
    verifier_type = "stub"

    def __init__(self, name: str, trusted: list[str]) -> None:
        self.name, self.trusted = name, trusted

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        return (StubSource(),)

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        entry = json.loads(material.data)
        if entry["signer"] not in self.trusted:
            return Result.fail(material.label, "stub.untrusted", f"signer {entry['signer']} not trusted")
        return Result.ok(material.label, "signature.valid", f"signed by {entry['signer']}",
                         signer=entry["signer"], signed_at=entry["signed_at"])


class StubVerifier(VerifierPlugin):
    type_name = "stub"
    spec_model = StubSpec

    def compile(self, authority_name: str, spec: Any, trust_stores: Any, path: str) -> StubAuthority:
        return StubAuthority(authority_name, StubSpec.model_validate(spec).trusted)


def store(revoked: Sequence[str] = ()) -> dict[str, Any]:
    spec: dict[str, Any] = {"keys": [{"name": "unused", "publicKey": PUBLIC_KEY}]}
    if revoked:
        spec["revokedKeys"] = list(revoked)
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "s"}, "spec": spec}


PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----"""

KEY_A = "A" * 64
KEY_B = "B" * 64
KEY_C = "C" * 64


def authority(name: str = "release", trusted: Sequence[str] = (KEY_A, KEY_B, KEY_C), **rules: Any) -> dict[str, Any]:
    return {"name": name, "stub": {"trusted": list(trusted)}, **rules}


def run(registry: Registry, documents: Sequence[dict[str, Any]], images: Sequence[str],
        context: AdmissionContext = UNKNOWN_CONTEXT) -> list[ImageVerdict]:
    verifiers = {**discover_verifiers(), "stub": StubVerifier()}
    policies = compile_policy_set(resources(*documents), verifiers)
    pipeline = Pipeline(policies, registry, clock=lambda: NOW)  # type: ignore[arg-type]
    return asyncio.run(pipeline.verify_images(list(images), context))


def verdict(registry: Registry, *policies: dict[str, Any], image: str = "registry.example.com/app:v1",
            revoked: Sequence[str] = (), context: AdmissionContext = UNKNOWN_CONTEXT) -> ImageVerdict:
    (result,) = run(registry, [store(revoked), *policies], [image], context)
    return result


def policy(*authorities: dict[str, Any], **spec: Any) -> dict[str, Any]:
    return trust_policy("app", ["registry.example.com/**"], list(authorities or [authority()]), **spec)


@pytest.fixture
def registry() -> Registry:
    return Registry()


def test_one_valid_signature_admits(registry: Registry) -> None:
    registry.sign(registry.add("registry.example.com/app:v1"), KEY_A)
    assert verdict(registry, policy()).allowed


def test_min_signatures_counts_distinct_signers(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    registry.sign(digest, KEY_A)
    registry.sign(digest, KEY_A, signed_at=NOW - 1)  # the same key again, other bytes: still one signer
    registry.sign(digest, KEY_A)  # the same bytes stored twice
    two = policy(authority(minSignatures=2))
    result = verdict(registry, two)
    assert not result.allowed
    assert "valid signatures by 1 distinct signers; 2 required" in json.dumps(result.result.to_dict())
    assert "the same bytes as signature-1; counted once" in json.dumps(result.result.to_dict())
    registry.sign(digest, KEY_B)
    assert verdict(registry, two).allowed


def test_signatures_beyond_the_per_image_cap_are_not_examined(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    for index in range(3):
        registry.sign(digest, f"untrusted-{index}")
    registry.sign(digest, KEY_A)  # the valid one comes fourth
    verifiers = {**discover_verifiers(), "stub": StubVerifier()}
    policies = compile_policy_set(resources(store(), policy()), verifiers)
    capped = Pipeline(policies, registry, VerifySettings(max_signatures_per_image=3),  # type: ignore[arg-type]
                      clock=lambda: NOW)
    (result,) = asyncio.run(capped.verify_images(["registry.example.com/app:v1"]))
    assert not result.allowed
    assert "4 signatures found; only the first 3 were examined" in " ".join(result.reasons)
    assert verdict(registry, policy()).allowed  # the default cap examines all four


def test_threshold_counts_authorities(registry: Registry) -> None:
    registry.sign(registry.add("registry.example.com/app:v1"), KEY_A)
    only_a, only_b = authority("a", [KEY_A]), authority("b", [KEY_B])
    assert not verdict(registry, policy(only_a, only_b)).allowed
    assert verdict(registry, policy(only_a, only_b, threshold=1)).allowed


def test_revoked_key_rejects_its_signatures(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    registry.sign(digest, KEY_A)
    result = verdict(registry, policy(), revoked=[KEY_A.lower()])
    assert not result.allowed
    assert "revokedKeys" in " ".join(result.reasons)
    registry.sign(digest, KEY_B)
    assert verdict(registry, policy(), revoked=[KEY_A]).allowed


def test_revocation_by_openpgp_key_id_matches_the_fingerprint_suffix(registry: Registry) -> None:
    fingerprint = "0123456789ABCDEF0123456789ABCDEF01234567"
    registry.sign(registry.add("registry.example.com/app:v1"), fingerprint)
    assert not verdict(registry, policy(authority(trusted=[fingerprint])), revoked=["89ABCDEF01234567"]).allowed
    assert verdict(registry, policy(authority(trusted=[fingerprint])), revoked=["89ABCDEF01234568"]).allowed


def test_max_signature_age_rejects_old_and_undated_signatures(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    registry.sign(digest, KEY_A, signed_at=NOW - 40 * DAY)
    recent = policy(authority(maxSignatureAge="30d"))
    result = verdict(registry, recent)
    assert not result.allowed and "older than maxSignatureAge" in " ".join(result.reasons)
    registry.signatures[digest] = []
    registry.sign(digest, KEY_A, signed_at=None)
    assert "carries no signed time" in " ".join(verdict(registry, recent).reasons)
    registry.sign(digest, KEY_B, signed_at=NOW - 2 * DAY)
    assert verdict(registry, recent).allowed


def test_denied_digest_is_denied_even_when_signed(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    registry.sign(digest, KEY_A)
    result = verdict(registry, policy(deniedDigests=[digest]))
    assert not result.allowed and "deniedDigests" in " ".join(result.reasons)


def test_index_listing_a_denied_child_is_denied(registry: Registry) -> None:
    child = registry.add("registry.example.com/app:child")
    digest = registry.add("registry.example.com/app:v1", children=[child])
    registry.sign(digest, KEY_A)
    result = verdict(registry, policy(deniedDigests=[child]))
    assert not result.allowed and f"child manifest {child}" in " ".join(result.reasons)


def test_require_digest_denies_tags_without_network_but_not_at_mutate(registry: Registry) -> None:
    digest = registry.add("registry.example.com/app:v1")
    registry.sign(digest, KEY_A)
    strict = policy(requireDigest=True)
    result = verdict(registry, strict)
    assert not result.allowed and "requires a digest-pinned reference" in " ".join(result.reasons)
    assert registry.resolved == 0
    assert verdict(registry, strict, image=f"registry.example.com/app:v1@{digest}").allowed
    assert verdict(registry, strict, context=AdmissionContext(enforce_require_digest=False)).allowed


def test_all_matching_policies_must_pass(registry: Registry) -> None:
    registry.sign(registry.add("registry.example.com/app:v1"), KEY_A)
    lenient = trust_policy("lenient", ["registry.example.com/**"], [authority(trusted=[KEY_A])])
    strict = trust_policy("strict", ["registry.example.com/app"], [authority(trusted=[KEY_B])])
    result = verdict(registry, lenient, strict)
    assert not result.allowed and "policy strict" in json.dumps(result.result.to_dict())


@pytest.mark.parametrize(("labels", "applies"), [
    ({"env": "prod"}, True), ({"env": "dev"}, False), ({}, False), (None, True)])
def test_namespace_selector(registry: Registry, labels: Mapping[str, str] | None, applies: bool) -> None:
    registry.add("registry.example.com/app:v1")  # unsigned
    prod_only = policy(namespaceSelector={"matchLabels": {"env": "prod"}})
    result = verdict(registry, prod_only, context=AdmissionContext(namespace_labels=labels))
    # Outside the selector the policy does not apply, and the image falls to no-match (deny by default).
    assert not result.allowed
    assert (result.result.code == "policy.no_match") is (not applies)


def test_modes(registry: Registry) -> None:
    registry.add("registry.example.com/app:v1")
    warned = verdict(registry, policy(mode="warn"))
    assert warned.allowed and warned.warnings and warned.pinnable  # what runs is what was checked
    audited = verdict(registry, policy(mode="audit"))
    assert audited.allowed and not audited.warnings


def test_mutate_digest_opt_out(registry: Registry) -> None:
    registry.sign(registry.add("registry.example.com/app:v1"), KEY_A)
    assert verdict(registry, policy()).pinnable
    assert not verdict(registry, policy(mutateDigest=False)).pinnable


def test_identical_images_are_verified_once(registry: Registry) -> None:
    registry.sign(registry.add("registry.example.com/app:v1"), KEY_A)
    verdicts = run(registry, [store(), policy()], ["registry.example.com/app:v1"] * 8)
    assert all(result.allowed for result in verdicts) and len(verdicts) == 8
    assert registry.resolved == 1
