"""Property tests over every parser of attacker-controlled input: each input is accepted or refused with the
parser's own error, never another exception. `make fuzz` runs the same properties with many more examples
(FUZZ_EXAMPLES) and records how many inputs each one saw.

Crashes found this way stay as regression tests at the end of this file.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import socket
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from aiohttp import web
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.helpers import resolved
from webhook.admission import BadReviewError, object_images, parse_review
from webhook.app import WebhookConfig, create_app
from webhook.config import load_resources
from webhook.pipeline import VerifySettings
from webhook.policy.compile import compile_policy_set
from webhook.policy.matching import GlobIndex, ImageGlob
from webhook.references import InvalidReferenceError, parse_reference
from webhook.registry.client import OCI_INDEX, OCI_MANIFEST, RegistryClient, RegistryError, RegistrySettings
from webhook.registry.network import parse_cidr
from webhook.simple_signing import InvalidPayloadError, parse_payload
from webhook.sources.cosign_tag import LayerError, parse_layer
from webhook.sources.referrers import envelope_layer, signature_descriptors
from webhook.verifiers.notary_envelope import COSE_MEDIA_TYPE, JWS_MEDIA_TYPE, EnvelopeError, open_envelope

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "60"))
FIGURES = os.environ.get("FUZZ_FIGURES")  # where `make fuzz` wants the input counts written
INPUTS: Counter[str] = Counter()
fuzz = settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module", autouse=True)
def record_counts() -> Iterator[None]:
    yield
    if FIGURES:
        Path(FIGURES).write_text(json.dumps(dict(sorted(INPUTS.items())), indent=2) + "\n")


# --- strategies ---------------------------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20)
json_values = st.recursive(scalars, lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.text(max_size=12), children, max_size=4), max_leaves=20)
digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda hex_: f"sha256:{hex_}")
components = st.from_regex(r"[a-z0-9]{1,8}([._-][a-z0-9]{1,4}){0,2}", fullmatch=True)
domains = st.from_regex(r"[a-z0-9]{1,10}(\.[a-z0-9]{1,6}){0,2}(:[1-9][0-9]{0,4})?", fullmatch=True)
tags = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,20}", fullmatch=True)


def mutate(base: Any) -> st.SearchStrategy[Any]:
    """`base` with one value somewhere replaced by an arbitrary JSON value."""
    def replace(document: Any, path: list[int], value: Any) -> Any:
        if not path or not isinstance(document, dict | list) or not document:
            return value
        keys = list(document) if isinstance(document, dict) else list(range(len(document)))
        key = keys[path[0] % len(keys)]
        copy = dict(document) if isinstance(document, dict) else list(document)
        copy[key] = replace(document[key], path[1:], value)
        return copy
    return st.builds(replace, st.just(base), st.lists(st.integers(0, 10), max_size=6), json_values)


# --- image references ---------------------------------------------------------------------------------------


@fuzz
@given(st.text(max_size=200))
def test_any_text_is_a_reference_or_refused(text: str) -> None:
    INPUTS.update(["image references (text)"])
    with contextlib.suppress(InvalidReferenceError):
        parse_reference(text)


@fuzz
@given(domains, st.lists(components, min_size=1, max_size=4), st.none() | tags, st.none() | digests)
def test_references_round_trip(domain: str, path: list[str], tag: str | None, digest: str | None) -> None:
    INPUTS.update(["image references (structured)"])
    text = f"{domain}/{'/'.join(path)}" + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")
    try:
        reference = parse_reference(text)
    except InvalidReferenceError:
        return  # e.g. longer than the grammar allows
    assert parse_reference(str(reference)) == reference
    assert reference.tag == tag and reference.digest == digest


# --- AdmissionReview ----------------------------------------------------------------------------------------

REVIEW = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
    "uid": "u", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE", "namespace": "ns",
    "object": {"metadata": {"name": "p"}, "spec": {"containers": [{"name": "c", "image": "nginx"}],
                                                   "initContainers": [{"name": "i", "image": "busybox"}],
                                                   "volumes": [{"name": "v", "image": {"reference": "data"}}]}}}}


@fuzz
@given(st.binary(max_size=400) | mutate(REVIEW).map(lambda document: json.dumps(document).encode()))
def test_any_body_is_a_review_or_a_bad_request(body: bytes) -> None:
    INPUTS.update(["AdmissionReview bodies"])
    try:
        images = object_images(parse_review(body))
    except BadReviewError:
        return
    assert images is None or all(isinstance(image.image, str) for image in images)


@pytest.fixture(scope="module")
def webhook() -> Iterator[TestClient]:
    policies = compile_policy_set(load_resources(REPO / "examples" / "config"))
    with TestClient(create_app(WebhookConfig(policies, RegistrySettings(), VerifySettings()))) as client:
        yield client
    policies.close()


@settings(max_examples=max(EXAMPLES // 4, 10), deadline=None, suppress_health_check=list(HealthCheck))
@given(mutate(REVIEW))
def test_the_webhook_answers_any_review_with_200_or_400(webhook: TestClient, document: Any) -> None:
    """Images no policy covers are denied without network calls, so this exercises parsing and answering."""
    INPUTS.update(["AdmissionReviews through /validate"])
    answer = webhook.post("/validate", content=json.dumps(document))
    assert answer.status_code in (200, 400), answer.text
    if answer.status_code == 200:
        assert answer.json()["response"]["uid"] == document["request"]["uid"]


# --- simple-signing payloads --------------------------------------------------------------------------------

PAYLOAD = {"critical": {"identity": {"docker-reference": "registry.example.com/app:v1"},
                        "image": {"docker-manifest-digest": "sha256:" + "a" * 64},
                        "type": "atomic container signature"}, "optional": {"timestamp": 1700000000}}


@fuzz
@given(st.binary(max_size=300) | mutate(PAYLOAD).map(lambda document: json.dumps(document).encode()))
def test_any_payload_is_parsed_or_refused(data: bytes) -> None:
    INPUTS.update(["simple-signing payloads"])
    try:
        parsed = parse_payload(data, "atomic container signature")
    except InvalidPayloadError:
        return
    assert parsed.manifest_digest.startswith("sha256:")


@fuzz
@given(st.text(min_size=1, max_size=20).filter(lambda key: key not in ("type", "image", "identity")), json_values)
def test_an_unknown_critical_field_is_always_refused(key: str, value: Any) -> None:
    INPUTS.update(["simple-signing payloads (unknown critical fields)"])
    document = json.loads(json.dumps(PAYLOAD))
    document["critical"][key] = value
    with pytest.raises(InvalidPayloadError):
        parse_payload(json.dumps(document).encode(), "atomic container signature")


# --- OCI manifests and indexes ------------------------------------------------------------------------------

MANIFEST = {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + "b" * 64,
                       "size": 2},
            "layers": [{"mediaType": "application/vnd.dev.cosign.simplesigning.v1+json",
                        "digest": "sha256:" + "c" * 64, "size": 10, "annotations": {"a": "b"}}]}
INDEX = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
    {"mediaType": OCI_MANIFEST, "digest": "sha256:" + "d" * 64, "size": 5,
     "artifactType": "application/vnd.cncf.notary.signature"}]}


class ManifestRegistry:
    """An aiohttp server on 127.0.0.1 answering every manifest with `served`, and the client's own manifest
    handling over it; both run on one event loop, so one keep-alive connection carries every example."""

    def __init__(self) -> None:
        self.served = (b"{}", "")
        self.loop = asyncio.Runner()
        application = web.Application()
        application.router.add_get("/{path:.*}", self.answer)
        self.server = web.AppRunner(application)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.host = f"127.0.0.1:{self.listener.getsockname()[1]}"
        self.loop.run(self.start())
        self.client = RegistryClient(RegistrySettings(insecure_registries=frozenset({self.host}),
                                                      allowed_cidrs=(parse_cidr("127.0.0.1"),)))

    async def start(self) -> None:
        await self.server.setup()
        await web.SockSite(self.server, self.listener).start()

    async def answer(self, request: web.Request) -> web.Response:
        body, content_type = self.served if "/manifests/" in request.path else (b"{}", "")
        return web.Response(body=body, headers={"Content-Type": content_type})

    def resolve(self, body: bytes, content_type: str) -> Any:
        self.served = (body, content_type)
        return self.loop.run(self.client.resolve(parse_reference(f"{self.host}/app:v1")))

    def close(self) -> None:
        self.loop.run(self.client.aclose())
        self.loop.run(self.server.cleanup())
        self.loop.close()


@pytest.fixture(scope="module")
def manifest_registry() -> Iterator[ManifestRegistry]:
    registry = ManifestRegistry()
    yield registry
    registry.close()


@fuzz
@given(st.binary(max_size=200) | (mutate(MANIFEST) | mutate(INDEX)).map(lambda doc: json.dumps(doc).encode()),
       st.sampled_from([OCI_MANIFEST, OCI_INDEX, "", "text/html"]))
def test_any_manifest_is_resolved_or_refused(manifest_registry: ManifestRegistry, body: bytes,
                                             content_type: str) -> None:
    INPUTS.update(["OCI manifests and indexes"])
    try:
        resolved = manifest_registry.resolve(body, content_type)
    except RegistryError:
        return
    assert all(digest.startswith("sha256:") or digest for digest in resolved.child_digests())


@fuzz
@given(mutate(MANIFEST["layers"][0]))  # type: ignore[index]
def test_any_signature_layer_is_parsed_or_refused(descriptor: Any) -> None:
    INPUTS.update(["cosign signature layer descriptors"])
    with contextlib.suppress(LayerError):
        parse_layer(descriptor)


@fuzz
@given(mutate(INDEX), mutate({**MANIFEST, "subject": {"digest": "sha256:" + "e" * 64}}))
def test_any_referrers_index_and_signature_manifest_are_read_or_refused(index: Any, manifest: Any) -> None:
    INPUTS.update(["OCI referrers indexes and signature manifests"])
    signature_descriptors(index)
    layer, why = envelope_layer(manifest, resolved("registry.test/app@sha256:" + "e" * 64, b"{}").target)
    assert (layer is None) == bool(why)


# --- JWS and COSE envelopes ---------------------------------------------------------------------------------


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


JWS = {"payload": b64url(b'{"targetArtifact": {}}'), "protected": b64url(json.dumps(
    {"alg": "PS256", "crit": ["io.cncf.notary.signingScheme"], "cty": "application/vnd.cncf.notary.payload.v1+json",
     "io.cncf.notary.signingScheme": "notary.x509", "io.cncf.notary.signingTime": "2024-01-01T00:00:00Z"}).encode()),
       "header": {"x5c": [base64.b64encode(b"not a certificate").decode()]}, "signature": b64url(b"sig")}


@fuzz
@given(st.binary(max_size=300) | mutate(JWS).map(lambda document: json.dumps(document).encode()))
def test_any_jws_envelope_is_opened_or_refused(data: bytes) -> None:
    INPUTS.update(["JWS envelopes"])
    with pytest.raises(EnvelopeError):  # none of these carries a valid signature
        open_envelope(JWS_MEDIA_TYPE, data)


cbor_values = st.recursive(st.none() | st.booleans() | st.integers(-2**64, 2**64) | st.binary(max_size=16)
                           | st.text(max_size=12),
                           lambda children: st.lists(children, max_size=4)
                           | st.dictionaries(st.integers(-10, 10) | st.text(max_size=6), children, max_size=4),
                           max_leaves=16)


@fuzz
@given(st.binary(max_size=300)
       | st.tuples(cbor_values, cbor_values, cbor_values, cbor_values).map(
           lambda parts: cbor2.dumps(cbor2.CBORTag(18, list(parts))))
       | cbor_values.map(cbor2.dumps))
def test_any_cose_envelope_is_opened_or_refused(data: bytes) -> None:
    INPUTS.update(["COSE envelopes"])
    with pytest.raises(EnvelopeError):
        open_envelope(COSE_MEDIA_TYPE, data)


# --- regressions found by `make fuzz` -----------------------------------------------------------------------


def test_regression_non_ascii_x5c_entry_is_an_envelope_error() -> None:
    """base64 of non-ASCII text raised ValueError instead of EnvelopeError (an internal error, not a reason)."""
    with pytest.raises(EnvelopeError, match="x5c"):
        open_envelope(JWS_MEDIA_TYPE, json.dumps({**JWS, "header": {"x5c": ["\u0080"]}}).encode())


# Few distinct segments, so that random globs and repositories often meet; wildcards in every position.
_literal_segments = st.sampled_from(["a", "b", "ab", "library", "docker.io", "r.io", "r.io:5000", "localhost"])
_glob_segments = _literal_segments | st.sampled_from(["*", "**", "a*", "*b", "a**", "**b", "*.io", "r.*"])
_globs = st.lists(_glob_segments, min_size=1, max_size=5).map("/".join)
_repositories = st.lists(_literal_segments | st.sampled_from(["", "x"]), min_size=1, max_size=6).map("/".join)


@fuzz
@given(st.lists(st.lists(_globs, min_size=1, max_size=3), max_size=12), st.lists(_repositories, max_size=8))
def test_the_glob_index_answers_as_trying_every_glob(owners: list[list[str]], repositories: list[str]) -> None:
    compiled = [[ImageGlob.compile(pattern) for pattern in patterns] for patterns in owners]
    index = GlobIndex(compiled)
    for repository in repositories:
        scanned = [position for position, globs in enumerate(compiled) if any(g.matches(repository) for g in globs)]
        assert index.matching(repository) == scanned
