"""The metrics trustgate exports, the page that documents them, the dashboard built on them, and the pieces
that keep their label values bounded and their values current."""

from __future__ import annotations

import datetime
import json
import os
import re
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import webhook.app
import webhook.cache
import webhook.cluster
import webhook.events
from tests.helpers import key_store, resources
from webhook.metrics import OTHER, TRUST_KEY_EXPIRY, BoundedLabel
from webhook.policy.compile import compile_policy_set
from webhook.tls import CertificateExpiry

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "metrics.md"
PUBLIC_KEY = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
    serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
DASHBOARD = ROOT / "docs" / "grafana" / "trustgate.json"
CHART_DASHBOARD = ROOT / "charts" / "trustgate" / "dashboards" / "trustgate.json"
assert webhook.app and webhook.cache and webhook.cluster and webhook.events  # imported for the metrics they define


def label_names(cell: str) -> set[str]:
    """The label names of a table cell such as "`webhook` (`validate`, ...), `outcome` (...)": the
    backticked words outside parentheses."""
    return set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cell)))


def documented() -> dict[str, tuple[str, frozenset[str]]]:
    """The table of docs/metrics.md: name -> (type, label names)."""
    found = {}
    for line in PAGE.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 4 and cells[0].startswith("`trustgate_"):
            found[cells[0].strip("`")] = (cells[1], frozenset(label_names(cells[2])))
    return found


def declared() -> dict[str, tuple[str, frozenset[str]]]:
    """trustgate's metrics as declared (whether or not a labelled child exists yet): name -> (type, labels)."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for collector in set(REGISTRY._names_to_collectors.values()):
        if isinstance(collector, MetricWrapperBase) and collector._name.startswith("trustgate_"):
            kind = collector._type
            name = f"{collector._name}_total" if kind == "counter" else collector._name
            found[name] = (str(kind), frozenset(collector._labelnames))
    return found


def test_the_metrics_page_lists_exactly_what_is_declared() -> None:
    assert documented() == declared()


def test_the_page_test_sees_a_missing_label() -> None:
    assert label_names("`webhook` (`validate`, `mutate`), `outcome` (`allowed`)") == {"webhook", "outcome"}
    assert label_names("") == set()


def test_the_chart_carries_the_documented_dashboard() -> None:
    assert CHART_DASHBOARD.read_bytes() == DASHBOARD.read_bytes()


SELECTOR = re.compile(r"(trustgate_[a-z_]+)(\{[^}]*\})?")
GROUPING = re.compile(r"\bby \(([^)]*)\)")


def series_labels(metric: str) -> set[str] | None:
    """The labels a sample name carries (a histogram's _bucket adds `le`), or None if trustgate has no such
    series."""
    families = declared()
    for suffix, extra in (("_bucket", {"le"}), ("_sum", set()), ("_count", set()), ("", set())):
        base = metric.removesuffix(suffix) if suffix else metric
        if suffix and base == metric:
            continue
        if base in families and (not suffix or families[base][0] == "histogram"):
            return set(families[base][1]) | extra | {"job", "instance"}
    return None


def test_every_dashboard_query_names_exported_metrics_and_their_labels() -> None:
    queries = [target["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for target in panel["targets"]]
    assert len(queries) >= 10
    for query in queries:
        metrics = SELECTOR.findall(query)
        assert metrics, query
        known: set[str] = set()
        for metric, selector in metrics:
            labels = series_labels(metric)
            assert labels is not None, f"{metric} is not exported ({query})"
            used = set(re.findall(r"([a-z_]+)\s*[=!]~?", selector))
            assert used <= labels, f"{metric} has no label {used - labels} ({query})"
            known |= labels
        for grouping in GROUPING.findall(query):
            assert {label.strip() for label in grouping.split(",")} <= known, query


def test_a_dashboard_query_naming_an_unknown_metric_is_caught() -> None:
    assert series_labels("trustgate_admission_review_duration_seconds_bucket") is not None
    assert series_labels("trustgate_admissions_total") is None
    assert series_labels("trustgate_admission_reviews_total_bucket") is None


def test_registry_labels_stop_growing_at_their_bound() -> None:
    label = BoundedLabel(3)
    assert [label(name) for name in ("a", "b", "c", "d", "a", "e")] == ["a", "b", "c", OTHER, "a", OTHER]


def _certificate(path: Path, days: int) -> datetime.datetime:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "webhook")])
    now = datetime.datetime.now(datetime.UTC).replace(microsecond=0)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now)
                   .not_valid_after(now + datetime.timedelta(days=days)).sign(key, hashes.SHA256()))
    path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    return certificate.not_valid_after_utc


def test_certificate_expiry_follows_a_rotated_certificate(tmp_path: Path) -> None:
    path = tmp_path / "tls.crt"
    first = _certificate(path, 30)
    expiry = CertificateExpiry(path)
    assert expiry() == first.timestamp()
    second = _certificate(path, 90)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert expiry() == second.timestamp()
    path.write_text("not a certificate")
    assert expiry() != expiry()  # NaN: no number rather than the old certificate's


def test_trust_key_expiry_lists_the_enforced_keys_only(tmp_path: Path) -> None:
    pem = (tmp_path / "ca.pem")
    expires = _certificate(pem, 10)
    first = compile_policy_set(resources(key_store("roots", [
        {"name": "ca", "x509": {"role": "ca", "certificates": pem.read_text()}},
        {"name": "plain", "publicKey": PUBLIC_KEY}])))
    second = compile_policy_set(resources(key_store("others", [{"name": "plain", "publicKey": PUBLIC_KEY}])))
    try:
        webhook.app.publish_trust_key_expiry(first)
        assert _expiry_samples() == {("roots", "ca"): expires.timestamp()}
        webhook.app.publish_trust_key_expiry(second)
        assert _expiry_samples() == {}
    finally:
        first.close()
        second.close()


def _expiry_samples() -> dict[tuple[str, str], float]:
    return {(sample.labels["trust_store"], sample.labels["key"]): sample.value
            for family in TRUST_KEY_EXPIRY.collect() for sample in family.samples}
