"""The simple-signing payload and its identity rules, shared by the GPG and cosign verifiers.

Both formats sign the same JSON document (containers/image "atomic container signature", cosign "cosign
container image signature"). Parsing is as strict as containers/image's: duplicate keys, unknown keys in
`critical`, missing fields and wrong types are all refused; unknown keys in `optional` are ignored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from webhook import strictjson
from webhook.policy.models import SignedIdentity
from webhook.references import (
    ImageReference,
    InvalidDigestError,
    InvalidReferenceError,
    parse_reference,
    validate_digest,
)

ATOMIC_SIGNATURE_TYPE = "atomic container signature"
COSIGN_SIGNATURE_TYPE = "cosign container image signature"
MAX_PAYLOAD_BYTES = 64 * 1024
MAX_JSON_DEPTH = 8


class InvalidPayloadError(ValueError):
    """A signed payload that is not a valid simple-signing document."""


@dataclass(frozen=True, slots=True)
class SimpleSigningPayload:
    docker_reference: str
    manifest_digest: str
    creator: str | None = None
    timestamp: int | None = None


def _exact_object(value: Any, where: str, fields: set[str]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidPayloadError(f"{where} is not a JSON object")
    unknown = sorted(set(value) - fields)
    if unknown:
        raise InvalidPayloadError(f"{where} has unknown field(s) {', '.join(map(repr, unknown))}")
    missing = sorted(fields - set(value))
    if missing:
        raise InvalidPayloadError(f"{where} is missing field(s) {', '.join(map(repr, missing))}")
    return value


def _string(value: Any, where: str) -> str:
    if not isinstance(value, str):
        raise InvalidPayloadError(f"{where} is not a string")
    return value


def parse_payload(data: bytes, expected_type: str) -> SimpleSigningPayload:
    """Parse a signed simple-signing document, raising InvalidPayloadError with the first fault found."""
    if len(data) > MAX_PAYLOAD_BYTES:
        raise InvalidPayloadError(f"payload of {len(data)} bytes exceeds {MAX_PAYLOAD_BYTES}")
    try:
        decoded = strictjson.loads(data, MAX_JSON_DEPTH)
    except strictjson.StrictJSONError as exc:
        raise InvalidPayloadError(str(exc)) from None
    document = _exact_object(decoded, "payload", {"critical", "optional"})
    critical = _exact_object(document["critical"], "critical", {"type", "image", "identity"})
    signature_type = _string(critical["type"], "critical.type")
    if signature_type != expected_type:
        raise InvalidPayloadError(f"signature type {signature_type!r} is not {expected_type!r}")
    image = _exact_object(critical["image"], "critical.image", {"docker-manifest-digest"})
    digest = _string(image["docker-manifest-digest"], "critical.image.docker-manifest-digest")
    try:
        validate_digest(digest)
    except InvalidDigestError as exc:
        raise InvalidPayloadError(f"critical.image.docker-manifest-digest: {exc}") from None
    identity = _exact_object(critical["identity"], "critical.identity", {"docker-reference"})
    reference = _string(identity["docker-reference"], "critical.identity.docker-reference")

    creator: str | None = None
    timestamp: int | None = None
    optional = document["optional"]
    if optional is not None:
        if not isinstance(optional, dict):
            raise InvalidPayloadError("optional is not a JSON object or null")
        if "creator" in optional:
            creator = _string(optional["creator"], "optional.creator")
        if "timestamp" in optional:
            raw = optional["timestamp"]
            integral = isinstance(raw, int) or (isinstance(raw, float) and raw.is_integer())
            if isinstance(raw, bool) or not integral:
                raise InvalidPayloadError("optional.timestamp is not an integer")
            timestamp = int(raw)
    return SimpleSigningPayload(reference, digest, creator, timestamp)


def manifest_matches_digest(manifest: bytes, digest: str) -> bool:
    """True if `manifest` hashes to `digest` with the digest's own algorithm."""
    algorithm, _, expected = digest.partition(":")
    return hashlib.new(algorithm, manifest).hexdigest() == expected


# --- identity rules (containers-policy.json `signedIdentity`) -------------------------------------------


def _prefix_covers(name: str, prefix: str) -> bool:
    return name == prefix or (name.startswith(prefix) and name[len(prefix)] == "/")


def _pinned_tag(reference: ImageReference) -> ImageReference:
    """`name:tag@digest` names the image `name:tag` with its content fixed at `digest`: signers sign the tag
    they push (`name:tag`), and the digest is compared with the signed manifest digest on its own. Without this,
    pinning a verified tag to its digest (what the mutating webhook does) would make its signature unusable."""
    if reference.tag is not None and reference.digest is not None:
        return ImageReference(reference.domain, reference.path, reference.tag, None)
    return reference


def _exact(intended: ImageReference, signed: ImageReference) -> bool:
    if intended.is_name_only or signed.is_name_only:
        return False
    return str(signed) in (str(intended), str(_pinned_tag(intended)))


def _repo_digest_or_exact(intended: ImageReference, signed: ImageReference) -> bool:
    if intended.tag is not None:
        return _exact(intended, signed)
    if intended.digest is not None:
        # The manifest digest itself is compared against the signed digest elsewhere; here only the
        # repository has to agree.
        return not signed.is_name_only and signed.repository == intended.repository
    return False


def _remap(prefix: str | None, signed_prefix: str | None, intended: ImageReference) -> ImageReference:
    assert prefix is not None and signed_prefix is not None
    if not _prefix_covers(intended.repository, prefix):
        return intended
    return parse_reference(signed_prefix + str(intended)[len(prefix) :])


_RULES: dict[str, Callable[[SignedIdentity, ImageReference, ImageReference], bool]] = {
    "matchExact": lambda rule, intended, signed: _exact(intended, signed),
    "matchRepoDigestOrExact": lambda rule, intended, signed: _repo_digest_or_exact(intended, signed),
    "matchRepository": lambda rule, intended, signed: signed.repository == intended.repository,
    "exactReference": lambda rule, intended, signed: _exact(parse_reference(rule.dockerReference or ""), signed),
    "exactRepository": lambda rule, intended, signed: (
        signed.repository == parse_reference(rule.dockerRepository or "").repository
    ),
    "remapIdentity": lambda rule, intended, signed: _repo_digest_or_exact(
        _remap(rule.prefix, rule.signedPrefix, intended), signed),
}


def identity_matches(rule: SignedIdentity, intended: ImageReference, signed_reference: str) -> bool:
    """Does a signature naming `signed_reference` vouch for the image admitted as `intended`?"""
    try:
        signed = parse_reference(signed_reference)
        if rule.remap is not None:
            intended = _remap(rule.remap.prefix, rule.remap.signedPrefix, intended)
        return _RULES[rule.type](rule, intended, signed)
    except InvalidReferenceError:
        return False


def describe_rule(rule: SignedIdentity) -> str:
    if rule.type == "exactReference":
        return f"exactReference {rule.dockerReference}"
    if rule.type == "exactRepository":
        return f"exactRepository {rule.dockerRepository}"
    if rule.type == "remapIdentity":
        return f"remapIdentity {rule.prefix} -> {rule.signedPrefix}"
    if rule.remap is not None:
        return f"{rule.type} after remap {rule.remap.prefix} -> {rule.remap.signedPrefix}"
    return rule.type
