"""What the reliability tests on the real API server share: the bundle generations the controller publishes, probe
images whose verdict each generation decides, and AdmissionReviews sent straight to webhook replicas, each answer
checked against the policy generation it reports (the `policy-generation` audit annotation).

The probe TrustPolicy covers `<registry>/probe/**` with one gpg authority on the probe TrustStore. The signed
image (signed with `release-ed`) is admitted by a generation exactly when that store holds `release-ed` (not only
`rogue`), the policy does not list its digest in `deniedDigests`, and no other TrustPolicy denies that digest; the
unsigned image is never admitted.
"""

from __future__ import annotations

import base64
import json
import ssl
import statistics
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from kubernetes import client, config, watch

from tests.cluster.apiserver import NAMESPACE, ApiServer
from tests.e2e import infra
from tests.e2e.conftest import admission_review
from tests.helpers import trust_policy

PROBE = "probe"
TRUSTED_KEY, UNTRUSTED_KEY = "release-ed", "rogue"
BUNDLE_SECRET = "trustgate-policy-bundle"
AUDIT_GENERATION = "policy-generation"
# How long after the test sees a new bundle every replica must enforce it (a loaded two-core machine included).
CONVERGENCE_BOUND_SECONDS = 5.0


@dataclass(frozen=True)
class ProbeImages:
    signed: str
    digest: str  # of the signed image
    unsigned: str
    repositories: str  # the glob the probe policy covers


def push_probe_images(registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys,
                      work: Path) -> ProbeImages:
    digests = {}
    for name, signer in (("signed", TRUSTED_KEY), ("unsigned", None)):
        layout = infra.write_oci_layout(work / f"probe-{name}", seed=f"probe-{name}")
        digests[name] = infra.push(layout, registry, f"probe/{name}", "v1", registries_d=registries_d,
                                   gnupg_home=gpg.home, sign_by=gpg.fingerprints[signer] if signer else None)
    return ProbeImages(f"{registry.host}/probe/signed:v1", digests["signed"], f"{registry.host}/probe/unsigned:v1",
                       f"{registry.host}/probe/**")


def probe_store(gpg: infra.GpgKeys, *, trusted: bool) -> dict[str, Any]:
    """The probe TrustStore, holding the key the signed image is signed with or only another one."""
    key = TRUSTED_KEY if trusted else UNTRUSTED_KEY
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": PROBE},
            "spec": {"keys": [{"name": key, "gpg": gpg.armored(key)}]}}


def probe_policy(images: ProbeImages, lookaside: infra.Lookaside, *, denied: bool,
                 name: str = PROBE) -> dict[str, Any]:
    """A TrustPolicy over the probe images; `denied` lists the signed image's digest in deniedDigests."""
    return trust_policy(name, [images.repositories],
                        [{"name": "release", "gpg": {"trustStore": PROBE, "lookaside": lookaside.url}}],
                        deniedDigests=[images.digest] if denied else [])


def admits_signed(bundle: dict[str, Any], images: ProbeImages) -> bool:
    """Whether a bundle generation admits the signed probe image."""
    policies = {policy["metadata"]["name"]: policy for policy in bundle["trustPolicies"]}
    stores = {store["metadata"]["name"]: store for store in bundle["trustStores"]}
    if PROBE not in policies or PROBE not in stores or bundle["unavailablePolicies"]:
        return False
    if any(images.digest in policy["spec"].get("deniedDigests", []) for policy in policies.values()):
        return False
    return [key["name"] for key in stores[PROBE]["spec"]["keys"]] == [TRUSTED_KEY]


def webhook_tls(cluster: ApiServer, directory: Path) -> tuple[Path, Path, Path]:
    """The controller's webhook CA, serving certificate and key, as files."""
    data = cluster.get("secret", "-n", NAMESPACE, "trustgate-webhook-tls")["data"]
    paths = tuple(directory / name for name in ("ca.crt", "tls.crt", "tls.key"))
    for path in paths:
        path.write_bytes(base64.b64decode(data[path.name]))
    return paths[0], paths[1], paths[2]


def admin_client(cluster: ApiServer) -> client.ApiClient:
    return config.new_client_from_config(config_file=str(cluster.kubeconfig("admin")))


@dataclass(frozen=True)
class Published:
    seen: float  # time.monotonic() when the test first saw it
    admits_signed: bool


class BundleHistory:
    """Every bundle generation the controller publishes, with when it was seen: a list and watch of the Secret,
    listed again after any error (an API server outage included)."""

    def __init__(self, cluster: ApiServer, images: ProbeImages) -> None:
        self.core = client.CoreV1Api(admin_client(cluster))
        self.images = images
        self.published: dict[int, Published] = {}
        self._changed = threading.Condition()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="bundle history", daemon=True)

    def __enter__(self) -> BundleHistory:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(15)

    def _record(self, secret: Any) -> None:
        bundle = json.loads(base64.b64decode(secret.data["bundle.json"]))
        with self._changed:
            if bundle["generation"] not in self.published:
                self.published[bundle["generation"]] = Published(time.monotonic(), admits_signed(bundle, self.images))
                self._changed.notify_all()

    def _follow(self) -> None:
        selector = f"metadata.name={BUNDLE_SECRET}"
        while not self._stop.is_set():
            try:
                listing = self.core.list_namespaced_secret(NAMESPACE, field_selector=selector, _request_timeout=10)
                for secret in listing.items:
                    self._record(secret)
                for event in watch.Watch().stream(self.core.list_namespaced_secret, NAMESPACE,
                                                  field_selector=selector, timeout_seconds=5, _request_timeout=15,
                                                  resource_version=listing.metadata.resource_version):
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._record(event["object"])
                    if self._stop.is_set():
                        return
            except Exception:  # the API server is away: list again once it answers
                self._stop.wait(0.2)

    def latest(self) -> int:
        with self._changed:
            return max(self.published, default=0)

    def wait_newer(self, than: int, timeout: float = 60) -> int:
        """The first generation newer than `than` (waiting for it), as soon as it is published."""
        with self._changed:
            if not self._changed.wait_for(lambda: max(self.published, default=0) > than, timeout):
                raise AssertionError(f"no bundle newer than generation {than} within {timeout} s")
            return min(generation for generation in self.published if generation > than)

    def newest_before(self, moment: float) -> int:
        with self._changed:
            return max((generation for generation, published in self.published.items() if published.seen < moment),
                       default=0)


@dataclass(frozen=True)
class Answer:
    port: int
    image: str  # "signed" or "unsigned"
    sent: float
    status: int | None  # None: no HTTP answer
    allowed: bool | None
    generation: int | None
    message: str


class Reviewer:
    """Sends AdmissionReviews for the probe images straight to webhook replicas (HTTPS, the controller's CA)."""

    def __init__(self, ca: Path, images: ProbeImages) -> None:
        self.images = images
        self.http = httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30)
        self.answers: list[Answer] = []
        self._lock = threading.Lock()

    def close(self) -> None:
        self.http.close()

    def review(self, port: int, image: str) -> Answer:
        body = admission_review(f"{image}-{time.monotonic_ns()}", getattr(self.images, image))
        sent = time.monotonic()
        try:
            response = self.http.post(f"https://127.0.0.1:{port}/validate", json=body)
        except httpx.HTTPError as exc:
            answer = Answer(port, image, sent, None, None, None, f"{exc.__class__.__name__}: {exc}")
        else:
            verdict = response.json().get("response", {}) if response.status_code == 200 else {}
            generation = (verdict.get("auditAnnotations") or {}).get(AUDIT_GENERATION)
            answer = Answer(port, image, sent, response.status_code, verdict.get("allowed"),
                            int(generation) if generation is not None else None,
                            (verdict.get("status") or {}).get("message", "") or response.text[:300])
        with self._lock:
            self.answers.append(answer)
        return answer

    def ready_generation(self, port: int) -> int | None:
        try:
            response = self.http.get(f"https://127.0.0.1:{port}/readyz", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json().get("policyGeneration") if response.status_code == 200 else None

    def serves(self, port: int, generation: int) -> bool:
        """Whether the replica on `port` is ready with `generation` or a later one."""
        return (self.ready_generation(port) or 0) >= generation


def problems(answers: Iterable[Answer], history: BundleHistory, bound: float) -> list[str]:
    """What is wrong with answers: not a 200 review; no generation reported, or one never published; a verdict
    other than the reported generation's; a generation older than the newest published `bound` s before."""
    found = []
    for answer in answers:
        where = f"{answer.image} image on port {answer.port} at {answer.sent:.1f}"
        if answer.status != 200 or answer.allowed is None:
            found.append(f"{where}: no review answer ({answer.status}): {answer.message}")
            continue
        published = history.published.get(answer.generation or 0)
        if published is None:
            found.append(f"{where}: reports generation {answer.generation}, which was never published")
            continue
        expected = answer.image == "signed" and published.admits_signed
        if answer.allowed != expected:
            found.append(f"{where}: {'admitted' if answer.allowed else 'denied'} by generation "
                         f"{answer.generation}, which {'admits' if expected else 'denies'} it: {answer.message}")
        newest = history.newest_before(answer.sent - bound)
        if answer.generation is not None and answer.generation < newest:
            found.append(f"{where}: decided by generation {answer.generation}, while {newest} was published more "
                         f"than {bound} s before")
    return found


def percentiles(values: list[float]) -> dict[str, float]:
    return {"p50": round(statistics.median(values), 3), "max": round(max(values), 3)}


def process_figures(pid: int, temporary: Path) -> dict[str, int]:
    """RSS (KiB), open file descriptors and trustgate gpg homes of a process with its own TMPDIR."""
    rss = next(int(line.split()[1]) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
               if line.startswith("VmRSS:"))
    return {"rssKiB": rss, "fds": len(list(Path(f"/proc/{pid}/fd").iterdir())),
            "gpgHomes": sum(1 for home in temporary.glob("tg-gpg-*/*") if home.is_dir())}  # under its root
