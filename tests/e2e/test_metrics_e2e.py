"""/metrics after real admissions: every metric docs/metrics.md lists is exported and moved by what happened.

Images are signed by the real skopeo and gpg in a real registry; the webhook is `trustgate serve`.
"""

from __future__ import annotations

import datetime
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e import infra
from tests.e2e.conftest import admission_review, webhook_process
from tests.helpers import key_store
from tests.unit.test_metrics import documented


def scrape(client: httpx.Client) -> dict[str, list[tuple[dict[str, str], float]]]:
    """Sample name -> (labels, value) for trustgate's samples."""
    samples: dict[str, list[tuple[dict[str, str], float]]] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name.startswith("trustgate_"):
                samples.setdefault(sample.name, []).append((sample.labels, sample.value))
    return samples


def total(samples: dict[str, list[tuple[dict[str, str], float]]], name: str, **labels: str) -> float:
    return sum(value for found, value in samples.get(name, []) if labels.items() <= found.items())


def test_every_documented_metric_is_exported_and_moves(tmp_path: Path, sign: Any, config: Path,
                                                        registry: infra.Registry) -> None:
    roots = infra.make_tls(tmp_path / "roots", common_name="release roots")
    (config / "roots.yaml").write_text(yaml.safe_dump(key_store("roots", [
        {"name": "release-ca", "x509": {"role": "ca", "certificates": roots.ca.read_text()}}])))
    signed = f"{registry.host}/gpg/metrics:v1"
    sign("gpg/metrics", "release-rsa")
    unsigned = f"{registry.host}/gpg/metrics-unsigned:v1"
    sign("gpg/metrics-unsigned", None)
    missing = f"{registry.host}/gpg/metrics-missing:v1"
    with webhook_process(tmp_path, config, registry) as webhook:
        client = webhook.client
        before = scrape(client)
        for uid, image in (("m-1", signed), ("m-2", unsigned), ("m-3", missing), ("m-4", signed)):
            assert client.post("/validate", json=admission_review(uid, image)).status_code == 200
        assert client.post("/mutate", json=admission_review("m-5", signed)).status_code == 200
        after = scrape(client)
        serving_certificate = x509.load_pem_x509_certificate(
            (tmp_path / "webhook-tls" / "server.pem").read_bytes())

    def moved(name: str, **labels: str) -> float:
        return total(after, name, **labels) - total(before, name, **labels)

    assert moved("trustgate_admission_reviews_total", webhook="validate", outcome="admitted") == 2
    assert moved("trustgate_admission_reviews_total", webhook="validate", outcome="denied") == 2
    assert moved("trustgate_admission_reviews_total", webhook="mutate", outcome="admitted") == 1
    assert moved("trustgate_admission_review_duration_seconds_count", webhook="validate") == 4
    assert moved("trustgate_image_verdicts_total", webhook="validate", outcome="denied") == 2
    assert moved("trustgate_policy_violations_total", policy="release", mode="enforce") == 2
    assert moved("trustgate_image_denials_total", webhook="validate", code="TG-SIG-NONE") == 1
    assert moved("trustgate_image_denials_total", webhook="validate", code="TG-REGISTRY-UNREACHABLE") == 1
    # Two uncached verifications (the signed and the unsigned image); the missing one never got a manifest
    # to verify signatures against.
    assert moved("trustgate_verification_duration_seconds_count", verifier="gpg", outcome="passed") == 1
    assert moved("trustgate_verification_duration_seconds_count", verifier="gpg") >= 2
    assert total(after, "trustgate_verifications_in_flight") == 0
    assert moved("trustgate_registry_requests_total", registry=registry.host, status="200") > 0
    assert moved("trustgate_registry_requests_total", registry=registry.host, status="404") > 0
    assert moved("trustgate_registry_request_duration_seconds_count", registry=registry.host) > 0
    assert moved("trustgate_cache_lookups_total", outcome="hit") > 0
    assert moved("trustgate_cache_lookups_total", outcome="miss") > 0
    assert total(after, "trustgate_policy_generation") == 1
    assert total(after, "trustgate_policy_load_errors_total") == 0  # none refused: counted in the unit tests
    assert total(after, "trustgate_certificate_expiry_timestamp_seconds") == (
        serving_certificate.not_valid_after_utc.timestamp())
    ca = x509.load_pem_x509_certificate(roots.ca.read_bytes())
    assert total(after, "trustgate_trust_key_expiry_timestamp_seconds", trust_store="roots", key="release-ca") == (
        ca.not_valid_after_utc.timestamp())
    assert ca.not_valid_after_utc > datetime.datetime.now(datetime.UTC)

    # Every documented metric appears; coalescing needs concurrent duplicates, shown in the unit tests, and
    # Kubernetes Events are written only in-cluster (tests/cluster).
    exported = {name.removesuffix(suffix) for name in after for suffix in ("_bucket", "_count", "_sum", "")
                if name.endswith(suffix)}
    assert set(documented()) - {"trustgate_coalesced_total", "trustgate_events_written_total",
                                "trustgate_events_dropped_total"} <= exported
    for samples in after.values():
        for labels, _ in samples:
            assert not any("/" in value and ":" in value for value in labels.values()), labels  # no image names
