"""Fixtures over the real components in `infra`: one registry, lookaside and keyring per test session."""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import pytest
import yaml

from tests.e2e import infra
from tests.helpers import trust_policy, trust_store


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e" in str(item.path):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.Registry]:
    server = infra.start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def lookaside(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.Lookaside]:
    server = infra.start_lookaside(tmp_path_factory.mktemp("lookaside"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registries_d(tmp_path_factory: pytest.TempPathFactory, lookaside: infra.Lookaside,
                 registry: infra.Registry) -> Path:
    return lookaside.write_registries_d(tmp_path_factory.mktemp("registries.d"), registry)


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.GpgKeys]:
    """Release keys the cluster trusts (RSA and Ed25519) and a rogue key it does not."""
    with infra.gpg_keys(tmp_path_factory.mktemp("gnupg")) as keys:
        keys.generate("release-rsa", "rsa3072")
        keys.generate("release-ed", "ed25519")
        keys.generate("rogue", "rsa3072")
        yield keys


@dataclass
class Run:
    returncode: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def trustgate(*args: str, env: dict[str, str] | None = None, wrapper: tuple[str, ...] = ()) -> Run:
    """Run the trustgate CLI (under `wrapper`, e.g. faketime, when given)."""
    completed = subprocess.run([*wrapper, sys.executable, "-m", "webhook", *args], capture_output=True, text=True,
                               timeout=120, check=False, env={**os.environ, **(env or {})})
    return Run(completed.returncode, completed.stdout, completed.stderr)


@dataclass
class Webhook:
    process: subprocess.Popen[bytes]
    client: httpx.Client


class Reachable(Protocol):
    """A registry `trustgate serve` can be pointed at: the real one, or a hostile stand-in."""

    def trustgate_flags(self, directory: Path) -> list[str]: ...


@contextmanager
def webhook_process(directory: Path, config: Path, registry: Reachable, *flags: str,
                    env: dict[str, str] | None = None, output: Path | None = None) -> Iterator[Webhook]:
    """`trustgate serve` on a free port with a certificate from a test CA; a client that trusts that CA. Its
    stdout and stderr go to `output` when given."""
    tls = infra.make_tls(directory / "webhook-tls")
    port = infra.free_port()
    with output.open("wb") if output is not None else open(os.devnull, "wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "webhook", "serve", "--config", str(config), *registry.trustgate_flags(config),
             "--port", str(port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key), *flags],
            stdout=sink, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
    try:
        infra.wait_until_listening(port, process)
        with httpx.Client(base_url=f"https://127.0.0.1:{port}", verify=ssl.create_default_context(cafile=tls.ca),
                          timeout=30) as client:
            yield Webhook(process, client)
    finally:
        infra.stop(process)


@contextmanager
def running_webhook(directory: Path, config: Path, registry: Reachable,
                    *flags: str) -> Iterator[httpx.Client]:
    with webhook_process(directory, config, registry, *flags) as webhook:
        yield webhook.client


def admission_review(uid: str, *images: str, kind: str = "Pod", group: str = "", operation: str = "CREATE",
                     field: str = "containers", volumes: Sequence[str] = (), **request: Any) -> dict[str, Any]:
    """An AdmissionReview as the API server sends it, for a Pod or (with `kind`) a workload template; `volumes`
    are mounted as image volumes after a `configMap` volume (so the first is `volumes[1]`)."""
    containers = [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]
    pod_spec: dict[str, Any] = {field: containers}
    if field != "containers":
        pod_spec["containers"] = [{"name": "main", "image": images[0]}]
    if volumes:
        pod_spec["volumes"] = [{"name": "settings", "configMap": {"name": "settings"}}] + [
            {"name": f"v{index}", "image": {"reference": reference, "pullPolicy": "IfNotPresent"}}
            for index, reference in enumerate(volumes)]
    obj: dict[str, Any] = {"metadata": {"name": "app"}, "spec": pod_spec}
    if kind == "CronJob":
        obj["spec"] = {"jobTemplate": {"spec": {"template": {"spec": pod_spec}}}}
    elif kind != "Pod":
        obj["spec"] = {"template": {"spec": pod_spec}}
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": group, "version": "v1", "kind": kind}, "operation": operation,
        "namespace": "default", "userInfo": {"username": "deployer"}, "object": obj, **request}}


def verify(config: Path, registry: infra.Registry, *images: str, extra: tuple[str, ...] = (),
           wrapper: tuple[str, ...] = (), env: dict[str, str] | None = None) -> Run:
    """`trustgate verify --output json` against `registry` with the flags that reach it."""
    return trustgate("verify", "--config", str(config), *registry.trustgate_flags(config), "--output", "json",
                     *extra, *images, wrapper=wrapper, env=env)


def reasons(run: Run) -> str:
    return "\n".join(reason for image in run.json()["images"] for reason in image["reasons"])


def write_config(directory: Path, *documents: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "trust.yaml").write_text(yaml.safe_dump_all(documents))
    return directory


@pytest.fixture
def sign(tmp_path: Path, registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys) -> Any:
    """Push a fresh image to `repository:tag`, signed by the named key (or unsigned); return its digest."""

    def push(repository: str, key: str | None, *, tag: str = "v1", architectures: tuple[str, ...] = (),
             manifest_format: str | None = None, seed: str = "") -> str:
        seed = seed or f"{repository}:{tag}"
        layout = infra.write_oci_layout(tmp_path / f"layout-{re.sub(r'[^A-Za-z0-9]', '_', seed)}", seed=seed,
                                        architectures=architectures)
        return infra.push(layout, registry, repository, tag, registries_d=registries_d, gnupg_home=gpg.home,
                          sign_by=gpg.fingerprints[key] if key else None, manifest_format=manifest_format)

    return push


def gpg_config(directory: Path, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys, *,
               rules: dict[str, Any] | None = None, spec: dict[str, Any] | None = None,
               revoked: tuple[str, ...] = (), **authority: Any) -> Path:
    """The release store and a policy over `<registry>/gpg/**`: `authority` goes into the gpg entry, `rules`
    beside it (minSignatures, maxSignatureAge), `spec` into the policy spec, `revoked` into the store."""
    store = trust_store("release", {name: gpg.armored(name) for name in ("release-rsa", "release-ed")})
    if revoked:
        store["spec"]["revokedKeys"] = list(revoked)
    policy = trust_policy("release", [f"{registry.host}/gpg/**"], [
        {"name": "release", "gpg": {"trustStore": "release", "lookaside": lookaside.url, **authority},
         **(rules or {})}], **(spec or {}))
    return write_config(directory, store, policy)


@pytest.fixture
def config(tmp_path: Path, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> Path:
    """The release TrustStore (RSA and Ed25519 keys) and a policy over `<registry>/gpg/**` using the lookaside."""
    return gpg_config(tmp_path / "config", registry, lookaside, gpg)
