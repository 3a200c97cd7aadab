"""AdmissionReview (admission.k8s.io/v1) in, the images an object runs out, and the response back.

Only what the API server sends is read: the object itself. Annotations, labels and ownerReferences on it
are never taken as evidence of anything.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from webhook import strictjson
from webhook.pipeline import ImageVerdict
from webhook.references import parse_reference

ADMISSION_API_VERSION = "admission.k8s.io/v1"
MAX_MESSAGE_CHARS = 4000
# Pod objects with managedFields nest deeply; the API server itself has already validated them.
MAX_REVIEW_DEPTH = 100
MAX_WARNING_CHARS = 255
MAX_WARNINGS_TOTAL_CHARS = 4096
# Each image costs registry round trips: an object naming more (containers and image volumes alike) is denied
# without verifying any.
MAX_CONTAINERS_PER_POD = 64
# Audit annotation recording which policy generation decided a review (the API server prefixes the
# webhook's name).
AUDIT_POLICY_GENERATION = "policy-generation"


class BadReviewError(ValueError):
    """A request body that is not a usable AdmissionReview; answered with HTTP 400."""


@dataclass(frozen=True, slots=True)
class AdmissionRequest:
    uid: str
    group: str
    kind: str
    operation: str
    namespace: str
    name: str
    obj: Mapping[str, Any] | None
    dry_run: bool
    subresource: str
    old_obj: Mapping[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class PodImageField:
    """A list in the pod spec whose entries may each name an image the kubelet pulls, and where in an entry."""

    list_name: str
    reference_path: tuple[str, ...]


# Every pod-spec field naming an image the kubelet pulls, in the order denials and patches list them.
# The README's table and a test walking the Kubernetes OpenAPI model keep this complete.
POD_IMAGE_FIELDS = (
    PodImageField("initContainers", ("image",)),  # sidecars (restartPolicy: Always) included
    PodImageField("containers", ("image",)),
    PodImageField("ephemeralContainers", ("image",)),
    PodImageField("volumes", ("image", "reference")),  # image volumes (KEP-4639)
)


@dataclass(frozen=True, slots=True)
class PodImage:
    field_path: str  # for people: spec.template.spec.volumes[1].image.reference
    pointer: str  # for JSONPatch: /spec/template/spec/volumes/1/image/reference
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
    old_obj = request.get("oldObject")
    if old_obj is not None and not isinstance(old_obj, dict):
        raise BadReviewError("request.oldObject is not an object")
    return AdmissionRequest(
        uid=uid,
        group=str(kind.get("group", "")) if isinstance(kind, dict) else "",
        kind=str(kind.get("kind", "")) if isinstance(kind, dict) else "",
        operation=str(request.get("operation", "")),
        namespace=str(request.get("namespace", "")),
        name=str(request.get("name", "")),
        obj=obj,
        dry_run=request.get("dryRun") is True,
        subresource=str(request.get("subResource", "")),
        old_obj=old_obj,
    )


# Where each kind keeps the pod spec whose images run: (API group, kind) -> path of the pod spec. The group
# matters: a custom resource that calls itself Deployment is not an apps/v1 Deployment.
POD_SPEC_PATHS: dict[tuple[str, str], tuple[str, ...]] = {
    ("", "Pod"): ("spec",),
    ("", "ReplicationController"): ("spec", "template", "spec"),
    ("apps", "Deployment"): ("spec", "template", "spec"),
    ("apps", "ReplicaSet"): ("spec", "template", "spec"),
    ("apps", "StatefulSet"): ("spec", "template", "spec"),
    ("apps", "DaemonSet"): ("spec", "template", "spec"),
    ("batch", "Job"): ("spec", "template", "spec"),
    ("batch", "CronJob"): ("spec", "jobTemplate", "spec", "template", "spec"),
    # Kubernetes 1.20-1.21 send the pods/ephemeralcontainers subresource as this kind, the list at top level.
    ("", "EphemeralContainers"): (),
}


def pod_spec_images(spec: Any, path: tuple[str, ...]) -> Iterator[PodImage]:
    prefix = ".".join(path) or "object"
    if not isinstance(spec, dict):
        raise BadReviewError(f"{prefix} is not an object")
    for field in POD_IMAGE_FIELDS:
        entries = spec.get(field.list_name)
        if entries is None:
            continue
        if not isinstance(entries, list):
            raise BadReviewError(f"{prefix}.{field.list_name} is not a list")
        list_path = (*path, field.list_name)
        # Each entry's paths extend its list's, which are joined once per list rather than once per entry.
        list_where = ".".join(list_path)
        list_pointer = "".join(f"/{part}" for part in list_path)
        for index, entry in enumerate(entries):
            image = _named_image(entry, f"{list_where}[{index}]", f"{list_pointer}/{index}", field.reference_path)
            if image is not None:
                yield image


def _named_image(entry: Any, where: str, pointer: str, reference_path: tuple[str, ...]) -> PodImage | None:
    """The image one list entry (at `where`, JSON pointer `pointer`) names at `reference_path`; None where it
    names none (a volume of another type, a template leaving the image to be filled in)."""
    value = entry
    for part in reference_path:
        if not isinstance(value, dict):
            raise BadReviewError(f"{where} is not an object")
        value = value.get(part)
        if value is None:
            return None
        where = f"{where}.{part}"
        pointer = f"{pointer}/{part}"
    if not isinstance(value, str):
        raise BadReviewError(f"{where} is not a string")
    return PodImage(where, pointer, value)


# Subresources through which no image can change: their requests are admitted without verification (a status
# update by the kubelet must not fail because a key was revoked after the pod started).
IMAGE_SUBRESOURCES = ("", "ephemeralcontainers")


def _images_of(obj: Mapping[str, Any] | None, path: tuple[str, ...], what: str) -> list[PodImage]:
    if obj is None:
        raise BadReviewError(f"request.{what} is missing")
    spec: Any = obj
    for index, part in enumerate(path):
        if not isinstance(spec, dict):
            raise BadReviewError(f"{'.'.join(path[:index]) or 'object'} is not an object")
        spec = spec.get(part)
        if spec is None:
            raise BadReviewError(f"{'.'.join(path[: index + 1])} is missing")
    return list(pod_spec_images(spec, path))


def object_images(request: AdmissionRequest) -> list[PodImage] | None:
    """The images to verify for this request, or None if trustgate has no rule for this kind.

    Only the pod spec is read: labels, annotations and ownerReferences are never evidence of anything (a pod
    claiming to belong to a verified Deployment is verified on its own merits). On UPDATE, images the object
    already ran (per the API server's oldObject) are not verified again: every pod is verified at CREATE, so
    a changed key or policy never blocks relabelling or scaling what already runs. Image volumes follow the same
    rule: immutable in a Pod, they change only in workload templates.
    """
    path = POD_SPEC_PATHS.get((request.group, request.kind))
    if path is None:
        return None
    if request.operation not in ("CREATE", "UPDATE") or request.subresource not in IMAGE_SUBRESOURCES:
        return []
    images = _images_of(request.obj, path, "object")
    if request.operation == "UPDATE" and request.old_obj is not None:
        before = {(image.pointer, image.image) for image in _images_of(request.old_obj, path, "oldObject")}
        images = [image for image in images if (image.pointer, image.image) not in before]
    return images


@dataclass(frozen=True, slots=True)
class PullSecretRefs:
    """What a pod spec says about its pull credentials: the Secrets it names, and its ServiceAccount."""

    secrets: tuple[str, ...]
    service_account: str


def pull_secret_refs(request: AdmissionRequest) -> PullSecretRefs | None:
    """The pull Secrets and ServiceAccount of the pod spec the object carries; None when it carries none (the
    EphemeralContainers kind of Kubernetes 1.20-1.21 sends only the new containers)."""
    path = POD_SPEC_PATHS.get((request.group, request.kind))
    if not path:
        return None
    spec: Any = request.obj
    for part in path:
        spec = spec.get(part) if isinstance(spec, dict) else None
    if not isinstance(spec, dict):
        return None
    entries = spec.get("imagePullSecrets")
    names = tuple(dict.fromkeys(entry["name"] for entry in entries if isinstance(entry, dict)
                                and isinstance(entry.get("name"), str) and entry["name"])
                  ) if isinstance(entries, list) else ()
    account = spec.get("serviceAccountName") or spec.get("serviceAccount") or "default"
    return PullSecretRefs(names, account if isinstance(account, str) else "default")


def fit_message(parts: Sequence[str], footer: str = "", limit: int = MAX_MESSAGE_CHARS) -> str:
    """The parts joined within `limit` characters (the API server keeps a denial's message short); the footer
    is never cut."""
    tail = f". {footer}" if footer else ""
    room = limit - len(tail)
    message = "; ".join(parts)
    if len(message) > room:
        message = message[: room - 10] + " ... (cut)"
    return message + tail


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


def pinned_reference(image: str, digest: str) -> str | None:
    """`name:tag` -> `name:tag@digest` (a bare name gets its implied `latest`); None if already pinned."""
    reference = parse_reference(image)
    if reference.digest is not None:
        return None
    return f"{image}@{digest}" if reference.tag is not None else f"{image}:latest@{digest}"


def digest_pins(images: Sequence[PodImage], verdicts: Sequence[ImageVerdict]) -> list[dict[str, str]]:
    """JSONPatch operations rewriting each verified image to the digest it was verified at."""
    patch = []
    for image, verdict in zip(images, verdicts, strict=True):
        if verdict.pinnable and verdict.digest is not None:
            pinned = pinned_reference(image.image, verdict.digest)
            if pinned is not None:
                patch.append({"op": "replace", "path": image.pointer, "value": pinned})
    return patch


def review_response(uid: str, allowed: bool, message: str | None = None, warnings: Sequence[str] = (),
                    patch: Sequence[Mapping[str, str]] = (),
                    audit_annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"uid": uid, "allowed": allowed}
    if audit_annotations:
        response["auditAnnotations"] = dict(audit_annotations)
    if patch:
        response["patchType"] = "JSONPatch"
        response["patch"] = base64.b64encode(json.dumps(list(patch)).encode()).decode()
    if not allowed:
        response["status"] = {"code": 403, "reason": "Forbidden", "message": message or "denied"}
    elif message:
        response["status"] = {"code": 200, "message": message}
    fitted = fit_warnings(warnings)
    if fitted:
        response["warnings"] = fitted
    return {"apiVersion": ADMISSION_API_VERSION, "kind": "AdmissionReview", "response": response}
