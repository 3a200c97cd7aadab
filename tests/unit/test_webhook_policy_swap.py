"""The webhook in in-cluster mode: not ready until a bundle arrives, then atomic swaps recorded per verdict."""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable

from fastapi.testclient import TestClient

from webhook.app import InLoop, WebhookConfig, create_app
from webhook.bundle import BundleContent, UnavailablePolicy, compile_bundle, decode_bundle
from webhook.pipeline import VerifySettings
from webhook.policy.compile import PolicySet
from webhook.registry.client import RegistrySettings


def _policies(generation: int) -> PolicySet:
    unavailable = UnavailablePolicy(name="apps", images=["registry.example/apps/**"], reason="test")
    return compile_bundle(decode_bundle(BundleContent((), (), (unavailable,)).encode(generation)))


def _review(image: str) -> bytes:
    return json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u-1", "kind": {"group": "", "version": "v1", "kind": "Pod"}, "operation": "CREATE",
        "object": {"spec": {"containers": [{"name": "c", "image": image}]}}}}).encode()


def _ready_generation(client: TestClient) -> int | None:
    answer = client.get("/readyz")
    return answer.json()["policyGeneration"] if answer.status_code == 200 else None


def test_not_ready_until_the_first_bundle_then_each_swap_is_recorded() -> None:
    hooks: list[tuple[InLoop, Callable[[PolicySet], None]]] = []
    stopped: list[bool] = []

    def follow(in_loop: InLoop, install: Callable[[PolicySet], None]) -> Callable[[], None]:
        hooks.append((in_loop, install))
        return lambda: stopped.append(True)

    app = create_app(WebhookConfig(None, RegistrySettings(), VerifySettings(), follow=follow))
    with TestClient(app) as client:
        assert client.get("/readyz").status_code == 503
        answer = client.post("/validate", content=_review("nomatch.example/x:1")).json()["response"]
        assert not answer["allowed"] and "not ready" in answer["status"]["message"]

        (in_loop, install), = hooks
        for generation in (41, 42):
            policies = _policies(generation)
            in_loop(functools.partial(install, policies))
            deadline = time.monotonic() + 10
            while _ready_generation(client) != generation and time.monotonic() < deadline:
                time.sleep(0.01)
            assert _ready_generation(client) == generation

        answer = client.post("/validate", content=_review("nomatch.example/x:1")).json()["response"]
        assert not answer["allowed"] and "no TrustPolicy matches" in answer["status"]["message"]
        assert answer["auditAnnotations"] == {"policy-generation": "42"}
    assert stopped == [True]
