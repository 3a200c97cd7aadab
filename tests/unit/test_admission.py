"""AdmissionReview parsing (upstream request vectors) and the webhook's answers that need no registry."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import REGISTRY
from starlette.responses import JSONResponse

from tests.helpers import resources, trust_policy
from webhook.admission import (
    MAX_WARNING_CHARS,
    MAX_WARNINGS_TOTAL_CHARS,
    BadReviewError,
    digest_pins,
    fit_message,
    fit_warnings,
    object_images,
    parse_review,
    pinned_reference,
)
from webhook.app import MAX_BODY_BYTES, ReviewResponse, WebhookConfig, create_app
from webhook.config import LoadedResources, load_resources
from webhook.pipeline import ImageVerdict, VerifySettings
from webhook.policy.compile import compile_policy_set
from webhook.registry.client import RegistrySettings
from webhook.results import Result

REPO = Path(__file__).resolve().parents[2]
VECTORS = REPO / "tests" / "conformance" / "kubernetes" / "admission-requests"
CHECKS = json.loads((VECTORS / "case.json").read_text())["checks"]


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c["name"])
def test_vectors_yield_every_image(check: dict[str, Any]) -> None:
    request = parse_review((VECTORS / "admission-reviews" / check["name"]).read_bytes())
    assert (request.uid, request.kind, request.operation) == (check["uid"], check["kind"], check["operation"])
    images = object_images(request)
    assert images is not None
    assert sorted(image.image for image in images) == sorted(check["images"])
    assert {image.field_path.rsplit("[", 1)[0] for image in images} == {
        path.strip() for path in check["image_paths"].split(",")}


def review(obj: Any, kind: str = "Pod", group: str = "", **request: Any) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": group, "version": "v1", "kind": kind}, "operation": "CREATE",
        "object": obj, **request}}).encode()


def images_of(body: bytes) -> list[tuple[str, str]] | None:
    images = object_images(parse_review(body))
    return None if images is None else [(image.pointer, image.image) for image in images]


TEMPLATE = {"template": {"spec": {"containers": [{"name": "a", "image": "app:1"}],
                                  "initContainers": [{"name": "i", "image": "init:1"}],
                                  "volumes": [{"name": "c", "configMap": {"name": "c"}},
                                              {"name": "v", "image": {"reference": "data:1"}}]}}}


@pytest.mark.parametrize(("group", "kind"), [("apps", "Deployment"), ("apps", "ReplicaSet"), ("apps", "StatefulSet"),
                                             ("apps", "DaemonSet"), ("batch", "Job"), ("", "ReplicationController")])
def test_workload_templates_are_read(group: str, kind: str) -> None:
    assert images_of(review({"spec": TEMPLATE}, kind, group)) == [
        ("/spec/template/spec/initContainers/0/image", "init:1"), ("/spec/template/spec/containers/0/image", "app:1"),
        ("/spec/template/spec/volumes/1/image/reference", "data:1")]


def test_cronjob_job_template_is_read() -> None:
    assert images_of(review({"spec": {"jobTemplate": {"spec": TEMPLATE}}}, "CronJob", "batch")) == [
        ("/spec/jobTemplate/spec/template/spec/initContainers/0/image", "init:1"),
        ("/spec/jobTemplate/spec/template/spec/containers/0/image", "app:1"),
        ("/spec/jobTemplate/spec/template/spec/volumes/1/image/reference", "data:1")]


def test_a_custom_resource_named_like_a_workload_has_no_rule() -> None:
    assert images_of(review({"spec": TEMPLATE}, "Deployment", "evil.example.com")) is None


def test_ephemeral_containers_in_both_request_shapes() -> None:
    debug = {"name": "debug", "image": "busybox:1"}
    old_shape = review({"kind": "EphemeralContainers", "ephemeralContainers": [debug]}, "EphemeralContainers",
                       operation="UPDATE", subResource="ephemeralcontainers",
                       oldObject={"kind": "EphemeralContainers", "ephemeralContainers": []})
    assert images_of(old_shape) == [("/ephemeralContainers/0/image", "busybox:1")]
    running = pod({"name": "a", "image": "app:1"})
    debugged = pod({"name": "a", "image": "app:1"})
    debugged["spec"]["ephemeralContainers"] = [debug]
    new_shape = review(debugged, operation="UPDATE", subResource="ephemeralcontainers", oldObject=running)
    assert images_of(new_shape) == [("/spec/ephemeralContainers/0/image", "busybox:1")]


def test_update_verifies_only_images_that_change() -> None:
    before = pod({"name": "a", "image": "app:1"}, {"name": "b", "image": "side:1"})
    after = pod({"name": "a", "image": "app:2"}, {"name": "b", "image": "side:1"})
    assert images_of(review(after, operation="UPDATE", oldObject=before)) == [("/spec/containers/0/image", "app:2")]


def test_update_verifies_an_image_volume_only_when_it_changes() -> None:
    before = {"spec": TEMPLATE}
    after = json.loads(json.dumps(before))
    after["spec"]["template"]["spec"]["volumes"][1]["image"]["reference"] = "data:2"
    assert images_of(review(after, "Deployment", "apps", operation="UPDATE", oldObject=before)) == [
        ("/spec/template/spec/volumes/1/image/reference", "data:2")]
    assert images_of(review(before, "Deployment", "apps", operation="UPDATE", oldObject=before)) == []


def test_status_updates_need_no_verification() -> None:
    assert images_of(review(pod({"name": "a", "image": "app:1"}), operation="UPDATE", subResource="status",
                            oldObject=pod())) == []


def test_annotations_and_owner_references_are_not_evidence() -> None:
    forged = pod({"name": "a", "image": "evil:1"})
    forged["metadata"]["annotations"] = {"trustgate.dev/verified": "true", "trustgate.dev/digest": "sha256:0"}
    forged["metadata"]["ownerReferences"] = [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "verified",
                                              "uid": "1", "controller": True}]
    assert images_of(review(forged)) == [("/spec/containers/0/image", "evil:1")]


def pod(*containers: Any, field: str = "containers") -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "spec": {field: list(containers)}}


def test_pinned_references() -> None:
    digest = "sha256:" + "a" * 64
    assert pinned_reference("registry.example.com/app:v1", digest) == f"registry.example.com/app:v1@{digest}"
    assert pinned_reference("nginx", digest) == f"nginx:latest@{digest}"
    assert pinned_reference(f"nginx@{digest}", digest) is None


def test_every_image_field_of_a_pod_is_read() -> None:
    obj = pod({"name": "a", "image": "app:1"})
    obj["spec"]["initContainers"] = [{"name": "i", "image": "init:1"},
                                     {"name": "sidecar", "image": "proxy:1", "restartPolicy": "Always"}]
    obj["spec"]["ephemeralContainers"] = [{"name": "e", "image": "debug:1"}]
    obj["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "c"}}, VOLUME,
                              {"name": "filled-in-later", "image": {"pullPolicy": "Always"}}]
    images = object_images(parse_review(review(obj)))
    assert images is not None
    assert [(image.field_path, image.image) for image in images] == [
        ("spec.initContainers[0].image", "init:1"), ("spec.initContainers[1].image", "proxy:1"),
        ("spec.containers[0].image", "app:1"), ("spec.ephemeralContainers[0].image", "debug:1"),
        ("spec.volumes[1].image.reference", "nginx:1.27")]


VOLUME = {"name": "models", "image": {"reference": "nginx:1.27", "pullPolicy": "IfNotPresent"}}


def pod_with_volumes(*volumes: Any) -> dict[str, Any]:
    """A pod whose only container runs from a digest, beside a configMap volume and `volumes`."""
    obj = pod({"name": "a", "image": "app@sha256:" + "a" * 64})
    obj["spec"]["volumes"] = [{"name": "c", "configMap": {"name": "c"}}, *volumes]
    return obj


def test_mutate_pins_an_image_volume_like_a_container_image() -> None:
    digest = "sha256:" + "b" * 64
    obj = pod_with_volumes(VOLUME)
    images = object_images(parse_review(review(obj)))
    assert images is not None
    verdicts = [ImageVerdict(image.image, True, Result.ok("image", "ok", "ok"), digest=digest, pinnable=True)
                for image in images]
    assert digest_pins(images, verdicts) == [
        {"op": "replace", "path": "/spec/volumes/1/image/reference", "value": f"nginx:1.27@{digest}"}]


@pytest.mark.parametrize(("body", "expected"), [
    (b"{", "not valid JSON"),
    (b"[]", "not a JSON object"),
    (b'{"apiVersion": "admission.k8s.io/v1beta1", "kind": "AdmissionReview"}', "expected apiVersion"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}', "no request object"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {}}', "uid is missing"),
    (b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "kind": "x"}', "duplicate"),
])
def test_malformed_reviews_are_refused(body: bytes, expected: str) -> None:
    with pytest.raises(BadReviewError, match=expected):
        parse_review(body)


@pytest.mark.parametrize(("obj", "expected"), [
    ({"spec": "x"}, "spec is not an object"),
    ({"spec": {"containers": {}}}, "spec.containers is not a list"),
    ({"spec": {"containers": ["x"]}}, r"spec.containers\[0\] is not an object"),
    ({"spec": {"containers": [{"image": 3}]}}, r"spec.containers\[0\].image is not a string"),
    ({"spec": {"volumes": {}}}, "spec.volumes is not a list"),
    ({"spec": {"volumes": ["x"]}}, r"spec.volumes\[0\] is not an object"),
    ({"spec": {"volumes": [{"image": "app:1"}]}}, r"spec.volumes\[0\].image is not an object"),
    ({"spec": {"volumes": [{"image": {"reference": 1}}]}}, r"spec.volumes\[0\].image.reference is not a string"),
])
def test_malformed_pods_are_refused(obj: Any, expected: str) -> None:
    with pytest.raises(BadReviewError, match=expected):
        object_images(parse_review(review(obj)))


def test_messages_and_warnings_fit_the_api_server_limits() -> None:
    assert len(fit_message(["x" * 3000, "y" * 3000])) <= 4000
    warnings = fit_warnings(["w" * 1000] * 40)
    assert all(len(warning) <= MAX_WARNING_CHARS for warning in warnings)
    assert sum(len(warning) for warning in warnings) <= MAX_WARNINGS_TOTAL_CHARS


def test_answers_are_rendered_byte_for_byte_as_json_responses_are() -> None:
    answer = {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview",
              "response": {"uid": "u-1", "allowed": False, "warnings": ["ünïcode \u2028 \"quoted\""],
                           "status": {"code": 403, "message": "denied"}}}
    assert ReviewResponse(answer).body == JSONResponse(answer).body
    with pytest.raises(ValueError, match="JSON compliant"):
        ReviewResponse({"value": float("nan")})


@pytest.fixture
def client() -> Iterator[TestClient]:
    policies = compile_policy_set(load_resources(REPO / "examples" / "config"))
    app = create_app(WebhookConfig(policies, RegistrySettings(), VerifySettings()))
    with TestClient(app) as test_client:
        yield test_client
    policies.close()


def test_health_and_readiness(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


@pytest.mark.parametrize("webhook", ["/validate", "/mutate"])
def test_webhooks_answer_only_posts(client: TestClient, webhook: str) -> None:
    assert client.get(webhook).status_code == 405
    assert client.post(webhook, content=review(pod({"name": "a", "image": "nginx:1.27"}))).status_code == 200


def test_image_matching_no_policy_is_denied_by_default(client: TestClient) -> None:
    answer = client.post("/validate", content=review(pod({"name": "a", "image": "nginx:1.27"}))).json()
    assert answer["response"]["uid"] == "u-1"
    assert answer["response"]["allowed"] is False
    message = answer["response"]["status"]["message"]
    assert "docker.io/library/nginx" in message or "nginx:1.27" in message
    assert "spec.containers[0].image" in message


@pytest.mark.parametrize("webhook", ["/validate", "/mutate"])
def test_an_image_volume_no_policy_covers_is_denied(client: TestClient, webhook: str) -> None:
    answer = client.post(webhook, content=review(pod_with_volumes(VOLUME))).json()["response"]
    assert answer["allowed"] is False and "patch" not in answer
    assert "image nginx:1.27 (spec.volumes[1].image.reference) denied" in answer["status"]["message"]


def test_a_denial_names_every_field_using_the_image(client: TestClient) -> None:
    obj = pod_with_volumes(VOLUME)
    obj["spec"]["initContainers"] = [{"name": "i", "image": "nginx:1.27"}]
    message = client.post("/validate", content=review(obj)).json()["response"]["status"]["message"]
    assert "image nginx:1.27 (spec.initContainers[0].image, spec.volumes[1].image.reference) denied" in message


def test_image_volumes_count_against_the_image_limit() -> None:
    policies = compile_policy_set(load_resources(REPO / "examples" / "config"))
    app = create_app(WebhookConfig(policies, RegistrySettings(), VerifySettings(), max_containers_per_pod=1))
    with TestClient(app) as test_client:
        answer = test_client.post("/validate", content=review(pod_with_volumes(VOLUME))).json()["response"]
    policies.close()
    assert answer["allowed"] is False
    assert "names 2 images to verify (containers and image volumes), more than the limit of 1" in answer[
        "status"]["message"]


def test_mutate_denies_what_validate_denies(client: TestClient) -> None:
    answer = client.post("/mutate", content=review(pod({"name": "a", "image": "nginx:1.27"}))).json()
    assert answer["response"]["allowed"] is False and "patch" not in answer["response"]


def test_metrics_count_answers_but_not_dry_run_violations(client: TestClient) -> None:
    def sample(name: str, **labels: str) -> float:
        value = REGISTRY.get_sample_value(name, labels)
        return value or 0.0

    before = sample("trustgate_admission_reviews_total", webhook="validate", outcome="denied")
    timed = sample("trustgate_admission_review_duration_seconds_count", webhook="validate")
    client.post("/validate", content=review(pod({"name": "a", "image": "nginx:1.27"}), dryRun=True))
    assert sample("trustgate_admission_reviews_total", webhook="validate", outcome="denied") == before + 1
    client.post("/validate", content=review({"spec": {}}, kind="Service"))  # answered without verification
    assert sample("trustgate_admission_reviews_total", webhook="validate", outcome="denied") == before + 2
    assert sample("trustgate_admission_review_duration_seconds_count", webhook="validate") == timed + 2
    client.post("/validate", content=b"not json")  # a bad request is not an answered review
    assert sample("trustgate_admission_reviews_total", webhook="validate", outcome="denied") == before + 2
    exposition = client.get("/metrics").text
    assert "trustgate_admission_reviews_total" in exposition and "trustgate_cache_lookups_total" in exposition


def test_policy_violations_are_counted_except_for_dry_runs() -> None:
    example = load_resources(REPO / "examples" / "config")
    policy = trust_policy("unreachable", ["127.0.0.1:1/**"], [{"name": "release", "gpg": {"trustStore": "release"}}],
                          mode="audit")
    loaded = LoadedResources(example.stores, resources(policy).policies)
    policies = compile_policy_set(loaded)
    app = create_app(WebhookConfig(policies, RegistrySettings(insecure_registries=frozenset({"127.0.0.1:1"})),
                                   VerifySettings()))
    labels = {"policy": "unreachable", "mode": "audit"}
    with TestClient(app) as test_client:
        before = REGISTRY.get_sample_value("trustgate_policy_violations_total", labels) or 0.0
        body = review(pod({"name": "a", "image": "127.0.0.1:1/app:v1"}), dryRun=True)
        assert test_client.post("/validate", content=body).json()["response"]["allowed"] is True  # audit admits
        assert (REGISTRY.get_sample_value("trustgate_policy_violations_total", labels) or 0.0) == before
        test_client.post("/validate", content=review(pod({"name": "a", "image": "127.0.0.1:1/app:v1"})))
        assert REGISTRY.get_sample_value("trustgate_policy_violations_total", labels) == before + 1
    policies.close()


def test_kind_without_a_rule_is_denied(client: TestClient) -> None:
    answer = client.post("/validate", content=review({"spec": {}}, kind="Service")).json()
    assert answer["response"]["allowed"] is False
    assert "no rule for core/Service" in answer["response"]["status"]["message"]


def test_delete_is_admitted_without_verification(client: TestClient) -> None:
    answer = client.post("/validate", content=review(None, operation="DELETE")).json()
    assert answer["response"] == {"uid": "u-1", "allowed": True}


@pytest.mark.parametrize("body", [b"not json", b'{"apiVersion": "v1"}', review({"spec": []})])
def test_malformed_bodies_get_400_with_a_message(client: TestClient, body: bytes) -> None:
    answer = client.post("/validate", content=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad AdmissionReview" and answer.json()["message"]


def test_oversized_body_is_refused(client: TestClient) -> None:
    answer = client.post("/validate", content=b" " * (MAX_BODY_BYTES + 1))
    assert answer.status_code == 400
    assert "larger than" in answer.json()["message"]
