"""Soak: `trustgate serve` under steady admission load for SOAK_SECONDS while the registry misbehaves at random.

A real docker-registry holds a signed and an unsigned image; trustgate reaches it through a chaos front (the
hostile server) that answers a share of requests with a random fault: HTTP errors, stalls past the deadline,
truncated or wrong bytes. Workers send AdmissionReviews for the signed image, the unsigned one, an image no
policy covers and malformed bodies. The run fails when an unsigned image is ever admitted, when the webhook
answers anything but 200 (or 400 to a malformed body), or when its memory grows by 10% or more after warm-up.

    python -m tests.soak [--seconds N] [--output FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import hostile, infra
from tests.e2e.conftest import admission_review, write_config
from tests.helpers import trust_policy, trust_store

FAULT_SHARE = 0.25
WORKERS = 8
MAX_RSS_GROWTH = 0.10


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for process {pid}")


def stall(handler: hostile.HostileHandler) -> None:
    """Answer nothing for a while (until the registry stops)."""
    handler.registry.released.wait(3)


def chaos(upstream: str, injected: Counter[str]) -> hostile.Behaviour:
    """Forward to the real registry, or answer with a random fault."""
    faults: dict[str, hostile.Behaviour] = {
        "500": hostile.status(500),
        "429": hostile.status(429, {"Retry-After": "1"}),
        "404": hostile.status(404),
        "truncated": hostile.truncated(hostile.image_manifest("soak")),
        "wrong bytes": hostile.document(hostile.image_manifest("soak-other")),
        "stall": stall,
        "trickle": hostile.trickle(hostile.image_manifest("soak") * 2, pause=0.5),
    }

    def behave(handler: hostile.HostileHandler) -> None:
        if handler.path != "/v2/" and random.random() < FAULT_SHARE:
            name = random.choice(sorted(faults))
            injected[name] += 1
            faults[name](handler)
            return
        headers = {key: value for key, value in handler.headers.items() if key.lower() in ("accept", "authorization")}
        answer = httpx.get(f"{upstream}{handler.path}", headers=headers)
        handler.send(answer.status_code, answer.content, {key: value for key, value in answer.headers.items()
                                                          if key.lower() in ("content-type", "www-authenticate")})
    return behave


def run(seconds: float) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="trustgate-soak-"))
    registry = infra.start_registry(work / "registry")
    lookaside = infra.start_lookaside(work / "lookaside")
    front = hostile.start()
    injected: Counter[str] = Counter()
    outcomes: Counter[str] = Counter()
    process: subprocess.Popen[bytes] | None = None
    try:
        with infra.gpg_keys(work / "gnupg") as keys:
            keys.generate("release", "ed25519")
            registries_d = lookaside.write_registries_d(work / "registries.d", registry)
            for name, signer in (("good", keys.fingerprints["release"]), ("unsigned", None)):
                layout = infra.write_oci_layout(work / f"layout-{name}", seed=name)
                infra.push(layout, registry, f"gpg/{name}", "v1", registries_d=registries_d, gnupg_home=keys.home,
                           sign_by=signer)
            front.ping = front.fallback = chaos(registry.url, injected)
            store = trust_store("release", {"release": keys.armored("release")})
            policy = trust_policy("release", [f"{front.host}/gpg/**"], [{"name": "release", "gpg": {
                "trustStore": "release", "lookaside": lookaside.url, "signedIdentity": {
                    "type": "remapIdentity", "prefix": f"{front.host}/gpg", "signedPrefix": f"{registry.host}/gpg"}}}])
            config = write_config(work / "config", store, policy)

        tls = infra.make_tls(work / "webhook-tls")
        port = infra.free_port()
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--config", str(config), *front.flags(), "--deadline", "2",
             "--port", str(port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), "--log-level", "warning"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        infra.wait_until_listening(port, process)
        reviews: list[tuple[str, bytes]] = [
            ("signed", json.dumps(admission_review("s", f"{front.host}/gpg/good:v1")).encode()),
            ("unsigned", json.dumps(admission_review("u", f"{front.host}/gpg/unsigned:v1")).encode()),
            ("no policy", json.dumps(admission_review("n", "registry.example/other:v1")).encode()),
            ("malformed", b'{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"'),
        ]
        lock = threading.Lock()
        started = time.monotonic()
        warm_up = min(max(seconds * 0.1, 5.0), seconds / 2)
        rss: dict[str, int] = {}

        def worker() -> None:
            context = ssl.create_default_context(cafile=tls.ca)
            with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=context, timeout=30) as client:
                while time.monotonic() - started < seconds:
                    kind, body = random.choice(reviews)
                    try:
                        answer = client.post("/validate", content=body)
                    except httpx.HTTPError as exc:
                        outcome = f"error: {exc.__class__.__name__}"
                    else:
                        if answer.status_code == 400 and kind == "malformed":
                            outcome = "bad request (400)"
                        elif answer.status_code != 200:
                            outcome = f"error: HTTP {answer.status_code}"
                        elif answer.json()["response"]["allowed"]:
                            outcome = "VIOLATION: unsigned admitted" if kind != "signed" else "admitted"
                        else:
                            outcome = "denied"
                    with lock:
                        outcomes[outcome] += 1

        threads = [threading.Thread(target=worker) for _ in range(WORKERS)]
        for thread in threads:
            thread.start()
        time.sleep(warm_up)
        rss["afterWarmUpKiB"] = rss_kib(process.pid)
        for thread in threads:
            thread.join()
        rss["atEndKiB"] = rss_kib(process.pid)
    finally:
        if process is not None:
            infra.stop(process)
        front.stop()
        lookaside.stop()
        registry.stop()
    growth = (rss["atEndKiB"] - rss["afterWarmUpKiB"]) / rss["afterWarmUpKiB"]
    errors = sum(count for outcome, count in outcomes.items() if outcome.startswith(("error", "VIOLATION")))
    return {
        "seconds": seconds, "workers": WORKERS, "faultShare": FAULT_SHARE,
        "reviews": sum(outcomes.values()),
        "admitted": outcomes["admitted"], "denied": outcomes["denied"], "badRequests": outcomes["bad request (400)"],
        "errors": errors, "outcomes": dict(sorted(outcomes.items())), "faultsInjected": dict(sorted(injected.items())),
        "rss": rss, "rssGrowth": round(growth, 4),
        "passed": errors == 0 and growth < MAX_RSS_GROWTH and outcomes["admitted"] > 0,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=float(os.environ.get("SOAK_SECONDS", "600")))
    parser.add_argument("--output", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    return report(run(args.seconds), args.output)


def report(figures: dict[str, Any], output: Path | None) -> int:
    """Print a campaign's figures (and write them to `output`); its exit status: 0 when it passed."""
    text = json.dumps(figures, indent=2)
    print(text)
    if output:
        output.write_text(text + "\n")
    return 0 if figures["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
