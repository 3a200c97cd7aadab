"""The FastAPI webhook: `POST /validate`, `POST /mutate` (digest pinning), `GET /healthz`, `GET /readyz`,
`GET /metrics` (Prometheus).

Every AdmissionReview gets an answer: a malformed body is a 400 with a message, and any fault during
verification denies the images concerned (the pipeline fails closed), never a 500 that a `failurePolicy:
Ignore` would turn into an admission.
"""

from __future__ import annotations

import asyncio
import functools
import gc
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, Counter, Histogram, generate_latest
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from webhook.admission import (
    AUDIT_POLICY_GENERATION,
    MAX_CONTAINERS_PER_POD,
    AdmissionRequest,
    BadReviewError,
    PullSecretRefs,
    digest_pins,
    fit_message,
    object_images,
    parse_review,
    pull_secret_refs,
    review_response,
)
from webhook.codes import KIND_UNSUPPORTED, NOT_READY, TOO_MANY_IMAGES, public_code
from webhook.logs import Decision
from webhook.metrics import CERTIFICATE_EXPIRY, POLICY_GENERATION, TRUST_KEY_EXPIRY
from webhook.pipeline import AdmissionContext, ImageVerdict, Pipeline, VerificationCaches, VerifySettings
from webhook.policy.compile import PolicySet
from webhook.policy.scope import RegistryScope
from webhook.registry.client import RegistryClient, RegistrySettings
from webhook.registry.keyring import NO_PULL_CREDENTIALS, PullCredentials
from webhook.tls import CertificateExpiry
from webhook.trust import expires_at

log = logging.getLogger(__name__)

MAX_BODY_BYTES = 3 * 1024 * 1024  # the API server's own request limit

ADMISSIONS = Counter("trustgate_admission_reviews", "AdmissionReviews answered, by webhook and outcome",
                     ["webhook", "outcome"])
IMAGE_VERDICTS = Counter("trustgate_image_verdicts", "Image verdicts, by webhook and outcome", ["webhook", "outcome"])
POLICY_VIOLATIONS = Counter("trustgate_policy_violations",
                            "Images that failed a TrustPolicy, by policy and mode (audit and warn included); "
                            "dry-run requests are not counted", ["policy", "mode"])
IMAGE_DENIALS = Counter("trustgate_image_denials",
                        "Reasons images were denied, by webhook and public code (docs/errors.md); an image denied "
                        "for several reasons counts once under each code", ["webhook", "code"])
REVIEW_SECONDS = Histogram("trustgate_admission_review_duration_seconds",
                           "Time from a complete AdmissionReview body to its answer, by webhook", ["webhook"],
                           buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
WEBHOOKS = ("validate", "mutate")
RELEASE_GRACE_SECONDS = 5.0


# Runs a callable on the webhook's event loop; safe to call from any thread.
InLoop = Callable[[Callable[[], None]], None]
# Reports a finding on an admitted object (reason, message) to its owners, e.g. as a Kubernetes Event; must
# return at once.
FindingSink = Callable[[AdmissionRequest, str, str], None]
DENIED_REASON = "ImageDenied"
WARNED_REASON = "ImagePolicyWarning"
# Starts delivering policy updates (in-cluster mode) and returns a function that stops it.
PolicyFollower = Callable[[InLoop, Callable[[PolicySet], None]], Callable[[], None]]


async def _labels_unknown(namespace: str) -> Mapping[str, str] | None:
    return None


@dataclass
class Drain:
    """Set by the server once it starts shutting down; from then on /readyz says not ready, so that
    endpoints stop sending reviews while the ones in flight are answered."""

    started: bool = False


@dataclass
class WebhookConfig:
    policies: PolicySet | None
    registry: RegistrySettings
    verify: VerifySettings
    follow: PolicyFollower | None = None
    # Labels of a namespace for TrustPolicy namespaceSelectors; None when they cannot be read, and then no
    # selector exempts an image.
    namespace_labels: Callable[[str], Awaitable[Mapping[str, str] | None]] = _labels_unknown
    # The pull credentials of a pod (its namespace and what its spec names); None: pods' own are not used.
    pull_credentials: Callable[[str, PullSecretRefs], Awaitable[PullCredentials]] | None = None
    max_containers_per_pod: int = MAX_CONTAINERS_PER_POD
    drain: Drain = field(default_factory=Drain)
    # The PEM file being served, for its expiry metric.
    serving_certificate: Path | None = None
    # Where denials and warn-mode findings of /validate go (in-cluster: Kubernetes Events).
    findings: FindingSink | None = None


class _WebhookState:
    pipeline: Pipeline | None = None


def publish_trust_key_expiry(policies: PolicySet) -> None:
    """The expiry metric of every key in the generation now enforced, and of no key it no longer holds."""
    TRUST_KEY_EXPIRY.clear()
    for store in policies.trust_stores.values():
        for key_name, material in store.keys.items():
            expiry = expires_at(material)
            if expiry is not None:
                TRUST_KEY_EXPIRY.labels(store.name, key_name).set(expiry.timestamp())


def create_app(config: WebhookConfig) -> FastAPI:
    state = _WebhookState()
    if config.serving_certificate is not None:
        CERTIFICATE_EXPIRY.set_function(CertificateExpiry(config.serving_certificate))

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        registry = RegistryClient(config.registry)
        caches = VerificationCaches(config.verify)  # shared across generations; verdicts are keyed by generation
        loop = asyncio.get_running_loop()

        # Generations replaced but not yet closed: requests in flight may still be verifying with them.
        retired: dict[int, PolicySet] = {}

        def release(policies: PolicySet) -> None:
            retired.pop(id(policies), None)
            policies.close()

        def install(policies: PolicySet) -> None:
            """Swap in a whole policy generation; requests in flight finish on the one they started with."""
            previous = state.pipeline
            registry.scope = RegistryScope.of(policies)  # only registries the serving policies cover
            state.pipeline = Pipeline(policies, registry, config.verify, caches=caches)
            POLICY_GENERATION.set(policies.generation)
            publish_trust_key_expiry(policies)
            log.info("serving policy generation %d with %d TrustPolicies", policies.generation,
                     len(policies.policies))
            if previous is not None:
                # Its trust material (gpg homes) is released once no request can still be using it.
                retired[id(previous.policies)] = previous.policies
                loop.call_later(config.verify.deadline_seconds + RELEASE_GRACE_SECONDS, release,
                                previous.policies)

        if config.policies is not None:
            install(config.policies)

        def in_loop(call: Callable[[], None]) -> None:
            loop.call_soon_threadsafe(call)

        stop_following = config.follow(in_loop, install) if config.follow is not None else None
        # What exists now (modules, the app, the first policies) lives as long as the process: kept out of the
        # collector's full passes, which otherwise rescan it all and stall requests for tens of milliseconds.
        gc.freeze()
        try:
            yield
        finally:
            if stop_following is not None:
                stop_following()
            # The server has drained: no request uses any generation any more.
            serving, state.pipeline = state.pipeline, None
            for policies in [*retired.values(), *([serving.policies] if serving is not None else [])]:
                release(policies)
            await registry.aclose()

    # FastAPI's own OpenTelemetry hooks are off: trustgate reports through its Prometheus metrics and decision log,
    # never exports anywhere, and would otherwise look up the telemetry providers on every review.
    app = WebhookAPI(title="trustgate", lifespan=lifespan, docs_url=None, redoc_url=None, openapi_url=None,
                     telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False})

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        if config.drain.started:
            return JSONResponse({"status": "not ready", "reason": "shutting down"}, status_code=503)
        if state.pipeline is None:
            return JSONResponse({"status": "not ready", "reason": "no policy loaded"}, status_code=503)
        return JSONResponse({"status": "ready", "policyGeneration": state.pipeline.policies.generation})

    async def decide(body: bytes, webhook: str) -> tuple[dict[str, Any], Decision | None]:
        """The AdmissionReview answer and, when images were verified and decisions are logged, the decision to
        log; BadReviewError for a body that is not a usable review."""
        review = parse_review(body)
        images = object_images(review)
        if images is None:
            return review_response(review.uid, False, f"[{public_code(KIND_UNSUPPORTED)}] trustgate has no rule "
                                                      f"for {review.group or 'core'}/{review.kind}; check the "
                                                      "webhook rules"), None
        if not images:
            return review_response(review.uid, True), None
        if len(images) > config.max_containers_per_pod:
            return review_response(
                review.uid, False, f"[{public_code(TOO_MANY_IMAGES)}] the object names {len(images)} images to "
                                   "verify (containers and image volumes), more than the limit of "
                                   f"{config.max_containers_per_pod}; denied without verification"), None
        pipeline = state.pipeline
        if pipeline is None:
            return review_response(review.uid, False,
                                   f"[{public_code(NOT_READY)}] trustgate is not ready: no policy loaded"), None
        labels = await config.namespace_labels(review.namespace) if review.namespace else None
        mutating = webhook == "mutate"
        context = AdmissionContext(namespace_labels=labels, enforce_require_digest=not mutating,
                                   pull_credentials=await _pull_credentials(review))
        decided = await pipeline.decide_images([image.image for image in images], context)
        verdicts = [verdict for verdict, _ in decided]
        # Every field naming an image, so that a denial points at each place it is used (a container and a volume).
        fields: dict[str, list[str]] = {}
        for image in images:
            fields.setdefault(image.image, []).append(image.field_path)
        where = {name: ", ".join(paths) for name, paths in fields.items()}
        generation = pipeline.policies.generation
        denial_codes = image_denials[webhook]
        for verdict in verdicts:
            image_verdicts[webhook, verdict.allowed].inc()
            if not verdict.allowed:
                for code in verdict.codes:
                    denial_codes(code).inc()
            if not review.dry_run:
                for policy, mode in verdict.violations:
                    POLICY_VIOLATIONS.labels(policy, mode).inc()
        warnings = [warning for verdict in verdicts for warning in verdict.warnings]
        audit = {AUDIT_POLICY_GENERATION: str(generation)}  # which policy generation decided
        denied = {verdict.image: verdict for verdict in verdicts if not verdict.allowed}
        decision = _decision(review, webhook, generation, decided, where) if log.isEnabledFor(logging.INFO) else None
        report = config.findings if config.findings is not None and not mutating and not review.dry_run else None
        if denied:
            parts = [denial_text(verdict, where[verdict.image]) for verdict in denied.values()]
            message = fit_message(parts, explain_hint(review, list(denied)))
            if report is not None:
                report(review, DENIED_REASON, message)
            return review_response(review.uid, False, message, warnings, audit_annotations=audit), decision
        if warnings and report is not None:
            report(review, WARNED_REASON, fit_message(warnings))
        patch = digest_pins(images, verdicts) if mutating else []
        return review_response(review.uid, True, warnings=warnings, patch=patch,
                               audit_annotations=audit), decision

    async def _pull_credentials(review: AdmissionRequest) -> PullCredentials:
        read = config.pull_credentials
        refs = pull_secret_refs(review) if read is not None and review.namespace else None
        return NO_PULL_CREDENTIALS if read is None or refs is None else await read(review.namespace, refs)

    # Labelled metric children, bound once: looking them up costs more per review than counting does.
    admissions = {(webhook, allowed): ADMISSIONS.labels(webhook, _outcome(allowed))
                  for webhook in WEBHOOKS for allowed in (True, False)}
    image_verdicts = {(webhook, allowed): IMAGE_VERDICTS.labels(webhook, _outcome(allowed))
                      for webhook in WEBHOOKS for allowed in (True, False)}
    review_seconds = {webhook: REVIEW_SECONDS.labels(webhook) for webhook in WEBHOOKS}
    image_denials = {webhook: functools.partial(functools.cache(IMAGE_DENIALS.labels), webhook)
                     for webhook in WEBHOOKS}

    async def answer(request: Request, webhook: str) -> Response:
        try:
            body = await _read_body(request)
            started = time.perf_counter()
            review, decision = await decide(body, webhook)
        except BadReviewError as exc:
            return _bad_request(str(exc))
        admissions[webhook, review["response"]["allowed"]].inc()
        seconds = time.perf_counter() - started
        review_seconds[webhook].observe(seconds)
        if decision is not None:
            # One line per review (not per image): at admission rates, log writes are a large share of the work.
            decision.fields["durationMs"] = round(seconds * 1000, 3)
            log.info(decision)
        return ReviewResponse(review)

    async def validate(request: Request) -> Response:
        return await answer(request, "validate")

    async def mutate(request: Request) -> Response:
        return await answer(request, "mutate")

    # Plain routes: the webhooks read their own body and need none of FastAPI's per-request parameter work. A
    # review POSTed to its exact path does not even reach the router (WebhookAPI).
    app.router.routes += [Route("/validate", validate, methods=["POST"]), Route("/mutate", mutate, methods=["POST"])]
    app.reviews = {"/validate": validate, "/mutate": mutate}
    return app


Endpoint = Callable[[Request], Awaitable[Response]]


class WebhookAPI(FastAPI):
    """FastAPI, answering a review POSTed to its exact path before the middleware and the router.

    None of the middleware acts on a review: no exception handler applies (a fault is a 500 from uvicorn, as it
    would be from the middleware), no OpenTelemetry hook is on, and the body is bounded as it is read. Passing
    each review through them cost about a quarter of what trustgate adds to a warm review. Any other request goes
    the usual way (a GET of a webhook path is still answered 405 by the router).
    """

    reviews: Mapping[str, Endpoint] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self.reviews.get(scope["path"]) if scope["type"] == "http" and scope["method"] == "POST" else None
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


# JSONResponse's rendering, with one encoder for every answer: json.dumps with options builds one per call.
_ANSWER_ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


class ReviewResponse(JSONResponse):
    """An AdmissionReview answer: the same bytes as JSONResponse's."""

    def render(self, content: Any) -> bytes:
        return _ANSWER_ENCODER.encode(content).encode("utf-8")


async def _read_body(request: Request) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_BODY_BYTES:
        raise BadReviewError(f"body larger than {MAX_BODY_BYTES} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body.extend(chunk)
        if len(body) > MAX_BODY_BYTES:
            raise BadReviewError(f"body larger than {MAX_BODY_BYTES} bytes")
    return bytes(body)


def denial_text(verdict: ImageVerdict, where: str) -> str:
    """Why one image is denied: where the object names it, what it resolved to, and each failing reason with
    its public code and the path of policy, authority and signature that led to it."""
    digest = f" at {verdict.digest}" if verdict.digest else ""
    return f"image {verdict.image} ({where}) denied{digest}: " + "; ".join(verdict.reasons)


def explain_hint(review: AdmissionRequest, images: list[str]) -> str:
    """Where a deployer reads more, kept whole when the message is cut."""
    command = f"trustgate explain {images[0]}" if len(images) == 1 else "trustgate explain IMAGE"
    events = f"kubectl get events -n {review.namespace}" if review.namespace else "kubectl get events"
    return (f"codes are explained in trustgate's docs/errors.md; every policy, authority and signature "
            f"considered: `{command}`, or `{events} --field-selector reason={DENIED_REASON}`")


def _decision(review: AdmissionRequest, webhook: str, generation: int,
              decided: list[tuple[ImageVerdict, bool]], where: Mapping[str, str]) -> Decision:
    distinct = {verdict.image: (verdict, cached) for verdict, cached in decided}.values()
    return Decision({
        "uid": review.uid, "webhook": webhook, "operation": review.operation, "kind": review.kind,
        "namespace": review.namespace, "name": review.name, "dryRun": review.dry_run,
        "policyGeneration": generation,
        "verdict": _outcome(all(verdict.allowed for verdict, _ in distinct)),
        "codes": list(dict.fromkeys(code for verdict, _ in distinct for code in verdict.codes)),
        "cached": all(cached for _, cached in distinct),
        "images": [{**verdict.log_fields, "field": where[verdict.image], "cached": cached}
                   for verdict, cached in distinct],
    })


def _outcome(allowed: bool) -> str:
    return "admitted" if allowed else "denied"


def _bad_request(message: str) -> JSONResponse:
    return JSONResponse({"error": "bad AdmissionReview", "message": message}, status_code=400)
