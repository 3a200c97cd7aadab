"""Dependent rounds of registry requests, counted rather than timed: a stub registry holds every request until
the verification has nothing left to do but wait for it, then answers all of them at once. Each such batch is
one round; a request asked only after another's answer falls into a later round."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Sequence
from typing import Any, TypeVar

import pytest
from pydantic import BaseModel, ConfigDict

from tests.helpers import resources, trust_policy
from webhook.artifacts import ImageTarget, ResolvedImage, SignatureMaterial
from webhook.pipeline import Pipeline, VerifySettings
from webhook.policy.compile import compile_policy_set
from webhook.references import ImageReference, parse_reference
from webhook.registry.client import Manifest, RegistryError, RegistrySettings
from webhook.registry.mirrors import Endpoint
from webhook.results import Result
from webhook.sources.base import SignatureSource
from webhook.sources.cosign_tag import SIMPLE_SIGNING_MEDIA_TYPE, CosignSignatureTag, signature_tag
from webhook.sources.lookaside import LookasideSignatures
from webhook.sources.referrers import (
    NOTARY_SIGNATURE,
    OCI_INDEX,
    SIGSTORE_BUNDLE_MEDIA_TYPES,
    BundleReferrers,
    NotationReferrers,
    referrers_tag,
)
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, discover_verifiers

T = TypeVar("T")
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
LOOKASIDE = "http://lookaside.example.com"
PUBLIC_KEY = """-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAGb9ECWmEzf6FQbrBZ9w7lshQhqowtrbLDFw4rXAxZuE=
-----END PUBLIC KEY-----"""
# Enough passes of the event loop for every task the verification started to reach its next request.
SETTLE_PASSES = 50


def digest_of(data: bytes) -> str:
    return f"sha256:{hashlib.sha256(data).hexdigest()}"


IMAGE_MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": []}).encode()
DIGEST = digest_of(IMAGE_MANIFEST)
REFERENCE = parse_reference(f"registry.example.com/app@{DIGEST}")
TARGET = ImageTarget(REFERENCE, DIGEST)
SIGNATURES = f"{LOOKASIDE}/app@{DIGEST.replace(':', '=')}"


class RoundRegistry:
    """Answers from `documents` (manifests by tag or digest, blobs by digest, lookaside URLs; an exception is
    raised, a missing key is a 404), each request held until the round it belongs to is answered."""

    def __init__(self, documents: dict[str, bytes | Exception], settings: RegistrySettings | None = None) -> None:
        self.documents = documents
        self.settings = settings or RegistrySettings()
        self.rounds: list[list[str]] = []
        self._held: list[tuple[str, asyncio.Future[None]]] = []

    async def _answer(self, key: str) -> bytes | None:
        release = asyncio.get_running_loop().create_future()
        self._held.append((key, release))
        await release
        answer = self.documents.get(key)
        if isinstance(answer, Exception):
            raise answer
        return answer

    def release_round(self) -> bool:
        """Answer every request held now, as one round; False when none is held."""
        if not self._held:
            return False
        held, self._held = self._held, []
        self.rounds.append(sorted(key for key, _ in held))
        for _, release in held:
            release.set_result(None)
        return True

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        data = await self._answer(f"manifest {reference.digest}")
        assert data is not None and reference.digest == digest_of(data)
        return ResolvedImage(reference, reference.digest, data, OCI_MANIFEST)

    async def get_manifest(self, reference: ImageReference, tag_or_digest: str) -> Manifest | None:
        data = await self._answer(f"manifest {tag_or_digest}")
        if data is None:
            return None
        document = json.loads(data)
        return Manifest(data, digest_of(data), document.get("mediaType", OCI_MANIFEST), document)

    async def get_blob(self, reference: ImageReference, digest: str, limit: int | None = None) -> bytes:
        data = await self._answer(f"blob {digest}")
        assert data is not None
        return data

    async def get_api(self, reference: ImageReference, path: str, limit: int) -> bytes | None:
        return await self._answer(f"api {path}")

    async def fetch_url(self, url: str, limit: int) -> bytes | None:
        return await self._answer(url.removeprefix(f"{SIGNATURES}/"))

    def endpoints(self, reference: ImageReference) -> tuple[Endpoint, ...]:
        return (Endpoint(reference),)


async def in_rounds(registry: RoundRegistry, work: Awaitable[T]) -> T:
    task = asyncio.ensure_future(work)
    while not task.done():
        for _ in range(SETTLE_PASSES):
            await asyncio.sleep(0)
        if not registry.release_round() and not task.done():
            await asyncio.sleep(0.001)  # a signature check in a worker thread; no request is waiting
    return task.result()


def collect(source: SignatureSource, registry: RoundRegistry) -> tuple[list[str], list[str]]:
    """(labels of the materials, problems) one collection finds."""
    found = asyncio.run(in_rounds(registry, source.collect(TARGET, registry)))  # type: ignore[arg-type]
    return [material.label for material in found.materials], [f"{where}: {why}" for where, why in found.problems]


# --- the lookaside ------------------------------------------------------------------------------------------


def test_one_lookaside_signature_and_the_end_of_the_list_are_asked_in_one_round() -> None:
    registry = RoundRegistry({"signature-1": b"one"})
    assert collect(LookasideSignatures(LOOKASIDE), registry) == (["lookaside signature-1"], [])
    assert registry.rounds == [["signature-1", "signature-2"]]


def test_lookaside_signatures_are_asked_two_at_a_time_and_read_in_order() -> None:
    registry = RoundRegistry({"signature-1": b"one", "signature-2": b"two", "signature-3": b"three"})
    assert collect(LookasideSignatures(LOOKASIDE), registry)[0] == [f"lookaside signature-{n}" for n in (1, 2, 3)]
    assert registry.rounds == [["signature-1", "signature-2"], ["signature-3", "signature-4"]]


@pytest.mark.parametrize("beyond", [b"stray", RegistryError("lookaside.example.com: HTTP 500")])
def test_what_was_asked_past_the_first_missing_signature_is_never_read(beyond: bytes | Exception) -> None:
    registry = RoundRegistry({"signature-2": beyond})
    assert collect(LookasideSignatures(LOOKASIDE), registry) == ([], [])


def test_a_fault_ends_the_list_where_it_happens_as_when_asked_one_by_one() -> None:
    fault = RegistryError("lookaside.example.com: HTTP 500")
    registry = RoundRegistry({"signature-1": b"one", "signature-2": fault, "signature-3": b"three"})
    assert collect(LookasideSignatures(LOOKASIDE), registry) == (
        ["lookaside signature-1"], [f"lookaside signature-2: {fault}"])
    registry = RoundRegistry({"signature-1": fault, "signature-2": b"two"})
    assert collect(LookasideSignatures(LOOKASIDE), registry) == ([], [f"lookaside signature-1: {fault}"])


def test_the_lookaside_is_never_asked_past_its_cap() -> None:
    registry = RoundRegistry({f"signature-{n}": b"%d" % n for n in range(1, 10)})
    materials, problems = collect(LookasideSignatures(LOOKASIDE, limit=3), registry)
    assert len(materials) == 3 and problems == ["lookaside: holds more than 3 signatures; only the first 3 were "
                                                "examined"]
    assert registry.rounds == [["signature-1", "signature-2"], ["signature-3"]]


# --- a digest reference through the pipeline, per format ------------------------------------------------------


def signature_manifest(artifact_type: str, layer_type: str, blob: bytes) -> bytes:
    return json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": artifact_type,
                       "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": digest_of(b"{}"),
                                  "size": 2},
                       "layers": [{"mediaType": layer_type, "digest": digest_of(blob), "size": len(blob)}],
                       "subject": {"mediaType": OCI_MANIFEST, "digest": DIGEST, "size": len(IMAGE_MANIFEST)}}
                      ).encode()


def referrer(artifact_type: str, layer_type: str) -> dict[str, bytes | Exception]:
    """A registry without the referrers API holding one referrer of the image in the tag schema."""
    blob = b'{"signature": "envelope"}'
    manifest = signature_manifest(artifact_type, layer_type, blob)
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
        {"mediaType": OCI_MANIFEST, "digest": digest_of(manifest), "size": len(manifest),
         "artifactType": artifact_type}]}).encode()
    return {f"manifest {referrers_tag(DIGEST)}": index, f"manifest {digest_of(manifest)}": manifest,
            f"blob {digest_of(blob)}": blob}


def cosign_signature_tag() -> dict[str, bytes | Exception]:
    payload = b'{"critical": {}}'
    manifest = json.dumps({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "layers": [
        {"mediaType": SIMPLE_SIGNING_MEDIA_TYPE, "digest": digest_of(payload), "size": len(payload),
         "annotations": {"dev.cosignproject.cosign/signature": "c2lnbmF0dXJl"}}]}).encode()
    return {f"manifest {signature_tag(DIGEST)}": manifest, f"blob {digest_of(payload)}": payload}


class RoundsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    format: str


class RoundsAuthority(CompiledAuthority):
    """The real signature sources of one format; every signature found counts (rounds are what is measured)."""

    verifier_type = "rounds"

    def __init__(self, name: str, image_format: str) -> None:
        self.name, self.format = name, image_format

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        if self.format == "gpg":
            return (LookasideSignatures(LOOKASIDE),)
        if self.format == "cosign":
            return (CosignSignatureTag(), BundleReferrers())
        return (NotationReferrers(),)

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        assert image.manifest == IMAGE_MANIFEST  # the signatures are checked against the fetched manifest
        return Result.ok(material.label, "signature.valid", "counted", signer=material.label)


class RoundsVerifier(VerifierPlugin):
    type_name = "rounds"
    spec_model = RoundsSpec

    def compile(self, authority_name: str, spec: Any, trust_stores: Any, path: str) -> RoundsAuthority:
        return RoundsAuthority(authority_name, RoundsSpec.model_validate(spec).format)


def verify_in_rounds(image_format: str, documents: dict[str, bytes | Exception]) -> RoundRegistry:
    store = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "s"},
             "spec": {"keys": [{"name": "unused", "publicKey": PUBLIC_KEY}]}}
    policy = trust_policy("app", ["registry.example.com/**"], [{"name": "release", "rounds": {
        "format": image_format}}])
    policies = compile_policy_set(resources(store, policy), {**discover_verifiers(), "rounds": RoundsVerifier()})
    registry = RoundRegistry({f"manifest {DIGEST}": IMAGE_MANIFEST, **documents})
    verifier = Pipeline(policies, registry, VerifySettings())  # type: ignore[arg-type]
    verdict = asyncio.run(in_rounds(registry, verifier.verify_image(str(REFERENCE))))
    assert verdict.allowed, verdict.reasons
    return registry


def test_a_gpg_digest_reference_costs_one_round() -> None:
    registry = verify_in_rounds("gpg", {"signature-1": b"one"})
    assert registry.rounds == [sorted([f"manifest {DIGEST}", "signature-1", "signature-2"])]


def test_a_cosign_signature_tag_costs_two_rounds() -> None:
    registry = verify_in_rounds("cosign", cosign_signature_tag())
    first, second = registry.rounds
    assert first == sorted([f"manifest {DIGEST}", f"manifest {signature_tag(DIGEST)}",
                            f"api /v2/app/referrers/{DIGEST}", f"manifest {referrers_tag(DIGEST)}"])
    assert len(second) == 1 and second[0].startswith("blob ")


@pytest.mark.parametrize(("image_format", "artifact_type", "layer_type"), [
    ("notation", NOTARY_SIGNATURE, "application/jose+json"),
    ("cosign", SIGSTORE_BUNDLE_MEDIA_TYPES[0], SIGSTORE_BUNDLE_MEDIA_TYPES[0]),
])
def test_a_referrer_costs_three_rounds_index_then_signature_manifest_then_envelope(
        image_format: str, artifact_type: str, layer_type: str) -> None:
    registry = verify_in_rounds(image_format, referrer(artifact_type, layer_type))
    first, second, third = registry.rounds
    assert {f"manifest {DIGEST}", f"api /v2/app/referrers/{DIGEST}", f"manifest {referrers_tag(DIGEST)}"} <= set(first)
    assert [key.split()[0] for key in (*second, *third)] == ["manifest", "blob"]
