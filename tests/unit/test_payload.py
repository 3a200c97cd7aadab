from __future__ import annotations

import contextlib
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.simple_signing import (
    ATOMIC_SIGNATURE_TYPE,
    COSIGN_SIGNATURE_TYPE,
    InvalidPayloadError,
    manifest_matches_digest,
    parse_payload,
)

DIGEST = "sha256:" + "ab" * 32


def payload(**overrides: object) -> dict[str, object]:
    document: dict[str, object] = {
        "critical": {
            "identity": {"docker-reference": "registry.example.com/app:v1"},
            "image": {"docker-manifest-digest": DIGEST},
            "type": ATOMIC_SIGNATURE_TYPE,
        },
        "optional": {"creator": "skopeo", "timestamp": 1700000000},
    }
    document.update(overrides)
    return document


def encode(document: object) -> bytes:
    return json.dumps(document).encode()


def test_valid_payload() -> None:
    parsed = parse_payload(encode(payload()), ATOMIC_SIGNATURE_TYPE)
    assert parsed.docker_reference == "registry.example.com/app:v1"
    assert parsed.manifest_digest == DIGEST
    assert (parsed.creator, parsed.timestamp) == ("skopeo", 1700000000)


def test_cosign_null_optional_and_unknown_optional_fields() -> None:
    document = payload(optional=None)
    document["critical"]["type"] = COSIGN_SIGNATURE_TYPE  # type: ignore[index]
    assert parse_payload(encode(document), COSIGN_SIGNATURE_TYPE).timestamp is None
    assert parse_payload(encode(payload(optional={"x": [1]})), ATOMIC_SIGNATURE_TYPE).creator is None


def _critical(**changes: object) -> dict[str, object]:
    document = payload()
    critical = dict(document["critical"])  # type: ignore[call-overload]
    critical.update(changes)
    return payload(critical={k: v for k, v in critical.items() if v is not None})


@pytest.mark.parametrize(("raw", "fault"), [
    (encode(_critical(extra="x")), "unknown field"),
    (encode(_critical(type=COSIGN_SIGNATURE_TYPE)), "signature type"),
    (encode(_critical(identity=None)), "missing"),
    (encode(_critical(image={"docker-manifest-digest": DIGEST, "x": 1})), "unknown field"),
    (encode(_critical(image={"docker-manifest-digest": "sha256:abc"})), "invalid digest"),
    (encode(_critical(identity={"docker-reference": 5})), "not a string"),
    (encode({"critical": payload()["critical"]}), "missing"),
    (encode({**payload(), "extra": 1}), "unknown field"),
    (encode(payload(optional={"timestamp": 1.5})), "not an integer"),
    (encode(payload(optional={"timestamp": True})), "not an integer"),
    (encode(payload(optional={"timestamp": "1"})), "not an integer"),
    (encode(payload(optional={"creator": 1})), "not a string"),
    (encode(payload(optional=[])), "not a JSON object"),
    (b'{"critical": {}, "critical": {}, "optional": null}', "duplicate"),
    (encode(payload(optional={"timestamp": 0})).replace(b'"timestamp": 0', b'"timestamp": 1e400'), "not an integer"),
    (b'{"critical": NaN, "optional": null}', "not allowed"),
    (b"\xff\xfe", "UTF-8"),
    (b"[" * 100 + b"]" * 100, "nested"),
    (b"x" * 70000, "exceeds"),
    (b"This is not JSON\n", "not JSON"),
])
def test_strictness(raw: bytes, fault: str) -> None:
    with pytest.raises(InvalidPayloadError) as raised:
        parse_payload(raw, ATOMIC_SIGNATURE_TYPE)
    assert fault in str(raised.value)


def test_duplicate_key_inside_critical_is_refused() -> None:
    # A second docker-reference must never be read differently by two parsers.
    raw = (b'{"critical":{"identity":{"docker-reference":"a.com/x:1","docker-reference":"b.com/y:1"},'
           b'"image":{"docker-manifest-digest":"' + DIGEST.encode() + b'"},"type":"atomic container signature"},'
           b'"optional":{}}')
    with pytest.raises(InvalidPayloadError, match="duplicate"):
        parse_payload(raw, ATOMIC_SIGNATURE_TYPE)


def test_manifest_digest_uses_the_signed_algorithm() -> None:
    import hashlib

    manifest = b'{"schemaVersion": 2}'
    assert manifest_matches_digest(manifest, "sha512:" + hashlib.sha512(manifest).hexdigest())
    assert not manifest_matches_digest(manifest + b" ", "sha256:" + hashlib.sha256(manifest).hexdigest())


@given(st.binary(max_size=512))
def test_arbitrary_bytes_never_crash(raw: bytes) -> None:
    with contextlib.suppress(InvalidPayloadError):
        parse_payload(raw, ATOMIC_SIGNATURE_TYPE)
