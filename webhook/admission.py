"""AdmissionReview (admission.k8s.io/v1) in, the images an object runs out, and the response back.

Only what the API server sends is read: the object itself. Annotations, labels and ownerReferences on it
are never taken as evidence of anything.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook import strictjson

ADMISSION_API_VERSION = "admission.k8s.io/v1"
MAX_MESSAGE_CHARS = 4000
# Pod objects with managedFields nest deeply; the API server itself has already validated them.
MAX_REVIEW_DEPTH = 100
MAX_WARNING_CHARS = 255
MAX_WARNINGS_TOTAL_CHARS = 4096
POD_CONTAINER_FIELDS = ("initContainers", "containers", "ephemeralContainers")
# Audit annotation recording which policy generation decided a review (the API server prefixes the
# webhook's name).
AUDIT_POLICY_GENERATION = "policy-generation"


class BadReviewError(ValueError):
    """A request body that is not a usable AdmissionReview; answered with HTTP 400."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    kind: str
    operation: str
    namespace: str
    name: str
    obj: Mapping[str, Any] | None
    dry_run: bool
    subresource: str


@dataclass(frozen=True, slots=True)
class ContainerImage:
    field_path: str
    image: str


def parse_review(body: bytes) -> AdmissionRequest:
    try:
        review = strictjson.loads(body, MAX_REVIEW_DEPTH)
    except strictjson.StrictJSONError as exc:
        raise BadReviewError(f"body is not valid JSON: {exc}") from None
    if not isinstance(review, dict):
        raise BadReviewError("body is not a JSON object")
    if review.get("apiVersion") != ADMISSION_API_VERSION or review.get("kind") != "AdmissionReview":
        raise BadReviewError(f"expected apiVersion {ADMISSION_API_VERSION} kind AdmissionReview, got "
                             f"{review.get('apiVersion')!r} {review.get('kind')!r}")
    request = review.get("request")
    if not isinstance(request, dict):
        raise BadReviewError("AdmissionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        raise BadReviewError("request.uid is missing")
    kind = request.get("kind")
    obj = request.get("object")
    if obj is not None and not isinstance(obj, dict):
        raise BadReviewError("request.object is not an object")
    return AdmissionRequest(
        uid=uid,
        kind=kind.get("kind", "") if isinstance(kind, dict) else "",
        operation=str(request.get("operation", "")),
        namespace=str(request.get("namespace", "")),
        name=str(request.get("name", "")),
        obj=obj,
        dry_run=request.get("dryRun") is True,
        subresource=str(request.get("subResource", "")),
    )


def pod_spec_images(spec: Any, prefix: str) -> Iterator[ContainerImage]:
    if not isinstance(spec, dict):
        raise BadReviewError(f"{prefix} is not an object")
    for field_name in POD_CONTAINER_FIELDS:
        containers = spec.get(field_name)
        if containers is None:
            continue
        if not isinstance(containers, list):
            raise BadReviewError(f"{prefix}.{field_name} is not a list")
        for index, container in enumerate(containers):
            if not isinstance(container, dict):
                raise BadReviewError(f"{prefix}.{field_name}[{index}] is not an object")
            image = container.get("image")
            if image is None:
                continue
            if not isinstance(image, str):
                raise BadReviewError(f"{prefix}.{field_name}[{index}].image is not a string")
            yield ContainerImage(f"{prefix}.{field_name}[{index}].image", image)


def object_images(request: AdmissionRequest) -> list[ContainerImage] | None:
    """Every image the object runs, or None if trustgate has no rule for this kind."""
    if request.kind != "Pod":
        return None
    if request.obj is None:
        raise BadReviewError("request.object is missing for a Pod")
    return list(pod_spec_images(request.obj.get("spec"), "spec"))


def fit_message(parts: Sequence[str], limit: int = MAX_MESSAGE_CHARS) -> str:
    message = "; ".join(parts)
    return message if len(message) <= limit else message[: limit - 15] + " ... (cut)"


def fit_warnings(warnings: Sequence[str]) -> list[str]:
    """Each warning under 256 characters and all of them within 4096, as the API server requires."""
    fitted: list[str] = []
    total = 0
    for warning in dict.fromkeys(warnings):
        text = warning if len(warning) <= MAX_WARNING_CHARS else warning[: MAX_WARNING_CHARS - 3] + "..."
        if total + len(text) > MAX_WARNINGS_TOTAL_CHARS:
            break
        fitted.append(text)
        total += len(text)
    return fitted


def review_response(uid: str, allowed: bool, message: str | None = None,
                    warnings: Sequence[str] = (), audit_annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message or "denied"}
    elif message:
        response["status"] = {"code": 200, "message": message}
    fitted = fit_warnings(warnings)
    if fitted:
        response["warnings"] = fitted
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}
