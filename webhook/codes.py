"""Public error codes: the `TG-AREA-NAME` a user looks up in docs/errors.md for every internal result code.

The internal dotted codes (`signature.none`, `payload.identity`, ...) stay a contract of their own
(`--output json` carries both). This table is the one place they meet: a test fails when a result code used
anywhere in trustgate is missing here, and when docs/errors.md and this table disagree. A public code never
changes meaning once published; a new check gets a new row.
"""

from __future__ import annotations

# Codes that are not results of a check but answers of the webhook itself.
KIND_UNSUPPORTED = "admission.kind_unsupported"
TOO_MANY_IMAGES = "admission.too_many_images"
NOT_READY = "admission.not_ready"

# internal code -> public code
PUBLIC_CODES: dict[str, str] = {
    # the verdict on an image and how it was combined
    "image.verified": "TG-IMAGE-VERIFIED",
    "image.rejected": "TG-IMAGE-REJECTED",
    "satisfied": "TG-THRESHOLD-MET",
    "unsatisfied": "TG-THRESHOLD-UNMET",
    "empty": "TG-THRESHOLD-EMPTY",
    "invalid_threshold": "TG-THRESHOLD-INVALID",
    "signatures.satisfied": "TG-SIG-QUORUM-MET",
    "signatures.unsatisfied": "TG-SIG-QUORUM-UNMET",
    # before any signature is looked at
    "reference.invalid": "TG-REFERENCE-INVALID",
    "reference.digest_required": "TG-DIGEST-REQUIRED",
    "policy.no_match": "TG-POLICY-NO-MATCH",
    "policy.unavailable": "TG-POLICY-UNAVAILABLE",
    "registry": "TG-REGISTRY-UNREACHABLE",
    "digest.denied": "TG-DIGEST-DENIED",
    "deadline": "TG-DEADLINE",
    "internal_error": "TG-INTERNAL",
    # finding signatures
    "signature.none": "TG-SIG-NONE",
    "signature.source": "TG-SIG-SOURCE",
    "signature.duplicate": "TG-SIG-DUPLICATE",
    "signature.limit": "TG-SIG-LIMIT",
    # one signature
    "signature.valid": "TG-SIG-VALID",
    "gpg.signature": "TG-SIG-INVALID",
    "cosign.signature": "TG-SIG-INVALID",
    "cosign.media_type": "TG-SIG-FORMAT",
    "payload.invalid": "TG-PAYLOAD-INVALID",
    "payload.digest": "TG-DIGEST-MISMATCH",
    "payload.identity": "TG-IDENTITY-MISMATCH",
    "cosign.certificate": "TG-CERT-UNTRUSTED",
    "cosign.identity": "TG-CERT-IDENTITY-MISMATCH",
    "cosign.tlog": "TG-TLOG-INVALID",
    "cosign.bundle": "TG-BUNDLE-INVALID",
    "cosign.timestamp": "TG-TIMESTAMP-INVALID",
    "key.revoked": "TG-KEY-REVOKED",
    "signature.undated": "TG-SIG-UNDATED",
    "signature.too_old": "TG-SIG-TOO-OLD",
    # Notation
    "notation.verified": "TG-NOTATION-VERIFIED",
    "notation.verified_with_warnings": "TG-NOTATION-VERIFIED-WITH-WARNINGS",
    "notation.skipped": "TG-NOTATION-SKIPPED",
    "notation.integrity": "TG-NOTATION-INTEGRITY",
    "notation.rejected": "TG-NOTATION-REJECTED",
    "notation.check_passed": "TG-NOTATION-CHECK-PASSED",
    "notation.check_skipped": "TG-NOTATION-CHECK-SKIPPED",
    "notation.check_failed": "TG-NOTATION-CHECK-FAILED",
    "notation.check_logged": "TG-NOTATION-CHECK-LOGGED",
    # the webhook's own answers
    KIND_UNSUPPORTED: "TG-KIND-UNSUPPORTED",
    TOO_MANY_IMAGES: "TG-TOO-MANY-IMAGES",
    NOT_READY: "TG-NOT-READY",
}

# A code trustgate does not know, e.g. from a verifier plugin: shown with its internal code.
UNLISTED = "TG-UNLISTED"


def public_code(internal: str) -> str:
    return PUBLIC_CODES.get(internal, UNLISTED)
