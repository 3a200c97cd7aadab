"""The Prometheus metrics that say how verification and the registries are doing.

Every label value is bounded: verifier types, outcomes and HTTP status classes are fixed sets; registries are
the ones the serving policies cover, and past `MAX_REGISTRY_LABELS` distinct hosts the rest are counted as
`other`, so a policy with a wildcard registry cannot grow the series without bound. No image name or digest
is ever a label. docs/metrics.md lists each metric, and a test keeps the page and this code in step.
"""

from __future__ import annotations

import threading

from prometheus_client import Counter, Gauge, Histogram

MAX_REGISTRY_LABELS = 32
OTHER = "other"

_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

VERIFICATION_SECONDS = Histogram(
    "trustgate_verification_duration_seconds",
    "Time to verify one image against one authority (signatures looked up, fetched and checked), by verifier "
    "type and outcome; cached verdicts are not counted",
    ["verifier", "outcome"], buckets=_SECONDS_BUCKETS)
VERIFICATIONS_IN_FLIGHT = Gauge(
    "trustgate_verifications_in_flight", "Authority verifications running now")
REGISTRY_REQUESTS = Counter(
    "trustgate_registry_requests", "HTTP requests to registries and their token services, by registry and "
    "status (an HTTP status code, or `error` when no answer came)", ["registry", "status"])
REGISTRY_REQUEST_SECONDS = Histogram(
    "trustgate_registry_request_duration_seconds",
    "Time from sending a registry request to its whole answer (body read), by registry", ["registry"],
    buckets=_SECONDS_BUCKETS)
POLICY_GENERATION = Gauge(
    "trustgate_policy_generation", "The policy generation being enforced (the controller's bundle generation)")
POLICY_LOAD_ERRORS = Counter(
    "trustgate_policy_load_errors", "Policy bundles or configurations refused; the last good generation is kept")
CERTIFICATE_EXPIRY = Gauge(
    "trustgate_certificate_expiry_timestamp_seconds",
    "When the webhook's serving certificate expires (Unix time)")
TRUST_KEY_EXPIRY = Gauge(
    "trustgate_trust_key_expiry_timestamp_seconds",
    "When a TrustStore key or certificate expires (Unix time; the earliest of a certificate chain); keys "
    "without an expiry are not listed", ["trust_store", "key"])


class BoundedLabel:
    """Hands out a label value per name for the first `limit` names, `other` for every name after."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._known: set[str] = set()
        self._lock = threading.Lock()

    def __call__(self, name: str) -> str:
        if name in self._known:
            return name
        with self._lock:
            if len(self._known) < self.limit:
                self._known.add(name)
                return name
        return OTHER


registry_label = BoundedLabel(MAX_REGISTRY_LABELS)
