"""Registry faults, end to end through `trustgate verify` and `serve`: each one denies the image with its reason.

The registry is the hostile server of `hostile.py` on 127.0.0.1; the policy covers every image (`**`) so each
fault is reached. Nothing here measures time: a stall or trickle is denied by the deadline, whichever of the
HTTP timeout or the verification deadline fires first.
"""

from __future__ import annotations

import json
import signal
import socket
import ssl
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e import hostile, infra
from tests.e2e.conftest import Run, admission_review, reasons, running_webhook, trustgate, write_config
from tests.e2e.hostile import HostileRegistry
from tests.helpers import trust_policy, trust_store

DEADLINE = ("--deadline", "3")
LOOPBACK = infra.ALLOW_LOOPBACK
MANIFEST = hostile.image_manifest()


@pytest.fixture
def server() -> Iterator[HostileRegistry]:
    registry = hostile.start()
    yield registry
    registry.stop()


@pytest.fixture
def everything(tmp_path: Path, gpg: infra.GpgKeys, server: HostileRegistry) -> Path:
    """A policy over every image (`**`), signatures looked up on the hostile server's lookaside path."""
    store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
    policy = trust_policy("everything", ["**"], [
        {"name": "release", "gpg": {"trustStore": "release", "lookaside": f"http://{server.host}/sigstore"}}])
    return write_config(tmp_path / "config", store, policy)


def verify(config: Path, *args: str) -> Run:
    return trustgate("verify", "--config", str(config), "--output", "json", *DEADLINE, *args)


def denied(run: Run) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    document = run.json()
    assert document["allowed"] is False
    assert all(not image["allowed"] for image in document["images"])
    return reasons(run)


# --- every fault a registry can answer with ------------------------------------------------------------------

DIGEST_OF_OTHER_BYTES = hostile.sha256(b"the bytes the signer saw")
FAULTS: dict[str, tuple[str, hostile.Behaviour, str]] = {
    # name: (tag or digest asked for, behaviour of the manifest route, reason expected)
    "401": ("v1", hostile.status(401), "refused the credentials for manifest"),
    "403": ("v1", hostile.status(403), "denied access to manifest"),
    "404": ("v1", hostile.status(404), "not found on"),
    "429 with Retry-After": ("v1", hostile.status(429, {"Retry-After": "30"}),
                             "rate-limiting requests (HTTP 429, retry after 30)"),
    "500": ("v1", hostile.status(500), "(HTTP 500)"),
    "stalled past the deadline": ("v1", hostile.stall, "in time|within 3s"),
    "truncated body": ("v1", hostile.truncated(MANIFEST), "broke off its answer"),
    "bytes not hashing to the digest": (DIGEST_OF_OTHER_BYTES, hostile.document(MANIFEST),
                                        "do not hash to that digest"),
    "redirect loop": ("v1", hostile.redirect("/v2/app/manifests/v1"), "redirected more than 3 times"),
    "byte-by-byte trickle": ("v1", hostile.trickle(MANIFEST * 4), "within 3s"),
    "declared size over the limit": ("v1", lambda handler: handler.send(200, b"{}", length=5 * 1024 * 1024),
                                     "more than the 4194304-byte limit"),
    "endless body": ("v1", hostile.endless, "more than the 4194304-byte limit"),
    "JSON nested too deep": ("v1", hostile.document(b"[" * 5000 + b"]" * 5000), "not valid JSON"),
    "index with too many children": ("v1", hostile.document(hostile.index_manifest(65), infra.OCI_INDEX),
                                     "lists 65 manifests, more than the limit of 64"),
    "schema 1 manifest": ("v1", hostile.document(b'{"schemaVersion": 1, "name": "app", "fsLayers": []}'),
                          "only schema 2"),
    "not JSON": ("v1", hostile.document(b"\xff\xfe<html>"), "not valid JSON"),
}


@pytest.mark.parametrize("fault", FAULTS)
def test_registry_fault_denies_with_its_reason(fault: str, server: HostileRegistry, everything: Path) -> None:
    reference, behaviour, expected = FAULTS[fault]
    server.manifest("app", reference, behaviour)
    separator = "@" if ":" in reference else ":"
    found = denied(verify(everything, *server.flags(), f"{server.host}/app{separator}{reference}"))
    assert any(part in found for part in expected.split("|")), found


def test_a_header_never_names_the_digest(server: HostileRegistry, everything: Path) -> None:
    """A tag resolves to the hash of the bytes served, whatever Docker-Content-Digest claims."""
    server.manifest("app", "v1", hostile.document(MANIFEST, headers={"Docker-Content-Digest": DIGEST_OF_OTHER_BYTES}))
    run = verify(everything, *server.flags(), f"{server.host}/app:v1")
    denied(run)
    assert run.json()["images"][0]["digest"] == hostile.sha256(MANIFEST)


def test_connection_refused(everything: Path) -> None:
    host = f"127.0.0.1:{hostile.refused_port()}"
    assert "cannot connect to registry" in denied(verify(everything, "--insecure-registry", host, *LOOPBACK,
                                                         f"{host}/app:v1"))


def test_connection_closed_during_the_tls_handshake_is_named(everything: Path) -> None:
    canary = infra.Canary(infra.free_port())  # accepts every connection and closes it unanswered
    try:
        host = f"127.0.0.1:{canary.socket.getsockname()[1]}"
        found = denied(verify(everything, *LOOPBACK, f"{host}/app:v1"))
    finally:
        canary.close()
    assert f"cannot connect to registry {host}: ConnectionResetError" in found, found


def test_dns_failure(everything: Path) -> None:
    host = f"{'x' * 70}.example"  # a label no resolver accepts: refused before any DNS query is sent
    assert f"cannot resolve host {host}" in denied(verify(everything, f"{host}/app:v1"))


def test_tls_certificate_for_another_name(tmp_path: Path, everything: Path) -> None:
    tls = infra.make_tls(tmp_path / "tls", hosts=("registry.example",))
    wrong = hostile.start(tls=tls)
    try:
        found = denied(verify(everything, "--registry-ca", str(tls.ca), *LOOPBACK, f"{wrong.host}/app:v1"))
        assert "TLS certificate of" in found and "not trusted" in found, found
    finally:
        wrong.stop()


def test_tls_certificate_from_an_unknown_ca(tmp_path: Path, everything: Path) -> None:
    secured = hostile.start(tls=infra.make_tls(tmp_path / "tls"))
    try:
        found = denied(verify(everything, *LOOPBACK, f"{secured.host}/app:v1"))
        assert "TLS certificate of" in found and "not trusted" in found, found
        assert secured.requests_to("/v2/app") == []
    finally:
        secured.stop()


def test_tls_handshake_with_a_plain_http_server(server: HostileRegistry, everything: Path) -> None:
    assert "TLS error talking to" in denied(verify(everything, *LOOPBACK, f"{server.host}/app:v1"))



# --- the webhook: a fault is a denial, a bad body is a 400, never a 500 -----------------------------------------


def test_serve_denies_on_registry_faults_and_never_answers_500(tmp_path: Path, server: HostileRegistry,
                                                               everything: Path) -> None:
    server.manifest("app", "v1", hostile.status(500))
    server.manifest("app", "stalled", hostile.stall)
    server.manifest("app", "trickle", hostile.trickle(MANIFEST * 4))
    with running_webhook(tmp_path, everything, server, *DEADLINE) as client:
        for tag, expected in (("v1", "(HTTP 500)"), ("stalled", "in time|within 3s"), ("trickle", "within 3s")):
            answer = client.post("/validate", json=admission_review(f"uid-{tag}", f"{server.host}/app:{tag}"))
            assert answer.status_code == 200, answer.text
            response = answer.json()["response"]
            assert response["allowed"] is False
            assert any(part in response["status"]["message"] for part in expected.split("|")), response


BAD_BODIES = {
    "empty": b"",
    "not JSON": b"not json",
    "not an object": b"[]",
    "no request": b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}',
    "not UTF-8": b'{"apiVersion": "\xff"}',
    "duplicate keys": b'{"kind": "AdmissionReview", "kind": "AdmissionReview"}',
    "NaN": b'{"apiVersion": NaN}',
    "nesting bomb": b"[" * 100_000 + b"]" * 100_000,
    "containers not a list": json.dumps(admission_review("u", "x")).replace('[{"name": "c0", "image": "x"}]',
                                                                            '"x"').encode(),
    "image not a string": json.dumps(admission_review("u", "x")).replace('"image": "x"', '"image": 7').encode(),
    "over 3 MiB": b" " * (3 * 1024 * 1024 + 1) + b"{}",
}


def test_malformed_bodies_get_400_with_a_message(tmp_path: Path, server: HostileRegistry, everything: Path) -> None:
    with running_webhook(tmp_path, everything, server) as client:
        for name, body in BAD_BODIES.items():
            for path in ("/validate", "/mutate"):
                answer = client.post(path, content=body, headers={"Content-Type": "application/json"})
                assert answer.status_code == 400, (name, path, answer.status_code, answer.text)
                assert answer.json()["message"], name


def test_a_pod_with_too_many_containers_is_denied_unverified(tmp_path: Path, server: HostileRegistry,
                                                            everything: Path) -> None:
    images = [f"{server.host}/app:v{index}" for index in range(4)]
    review = admission_review("uid", *images, volumes=[f"{server.host}/app:v4"])  # image volumes count too
    with running_webhook(tmp_path, everything, server, "--max-containers-per-pod", "4") as client:
        response = client.post("/validate", json=review).json()["response"]
    assert response["allowed"] is False
    assert "names 5 images to verify (containers and image volumes), more than the limit of 4" in response[
        "status"]["message"]
    assert server.requests_to("/v2/app") == []


def test_shutdown_drains_a_review_in_flight(tmp_path: Path, server: HostileRegistry, everything: Path) -> None:
    """SIGTERM while a review waits on the registry: the review is still answered, then the server exits."""
    arrived, proceed = threading.Event(), threading.Event()
    server.manifest("app", "v1", hostile.gate(arrived, proceed, hostile.status(404)))
    tls = infra.make_tls(tmp_path / "webhook-tls")
    port = infra.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(everything), *server.flags(), "--port", str(port),
         "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    answers: list[httpx.Response] = []
    try:
        infra.wait_until_listening(port, process)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=tls.ca),
                          timeout=60) as client:
            review = threading.Thread(target=lambda: answers.append(
                client.post("/validate", json=admission_review("in-flight", f"{server.host}/app:v1"))))
            review.start()
            assert arrived.wait(60)
            process.send_signal(signal.SIGTERM)
            proceed.set()
            review.join(60)
        # Drained: a clean exit, which Kubernetes and process supervisors do not count as a failure.
        assert process.wait(30) == 0
    finally:
        proceed.set()
        infra.stop(process)
    assert len(answers) == 1 and answers[0].status_code == 200
    response = answers[0].json()["response"]
    assert response["uid"] == "in-flight" and response["allowed"] is False
    assert "not found" in response["status"]["message"]



def test_webhook_tls_offers_only_aead_suites_from_tls_1_2(tmp_path: Path, server: HostileRegistry,
                                                          everything: Path) -> None:
    with running_webhook(tmp_path, everything, server) as client:
        port = client.base_url.port
        assert port is not None

        def handshake(ciphers: str, version: ssl.TLSVersion) -> str:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # only the negotiation matters here
            context.minimum_version = context.maximum_version = version
            context.set_ciphers(ciphers)
            try:
                with socket.create_connection(("127.0.0.1", port)) as raw, \
                        context.wrap_socket(raw) as tls:
                    return str(tls.version())
            except ssl.SSLError as exc:
                return f"refused: {exc.reason}"

        assert handshake("ECDHE-ECDSA-AES128-GCM-SHA256", ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert handshake("ECDHE-ECDSA-CHACHA20-POLY1305", ssl.TLSVersion.TLSv1_2) == "TLSv1.2"
        assert handshake("DEFAULT", ssl.TLSVersion.TLSv1_3) == "TLSv1.3"
        cbc = handshake("ECDHE-ECDSA-AES128-SHA256:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA",
                        ssl.TLSVersion.TLSv1_2)
        assert cbc.startswith("refused"), cbc
