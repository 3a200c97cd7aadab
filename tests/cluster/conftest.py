"""Fixtures for the real-API-server tests: the control plane, the CRDs and RBAC, trustgate's processes.

The registry, lookaside and signing keys are the e2e suite's (a real docker-registry, skopeo signing).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.cluster import apiserver
from tests.e2e import infra
from tests.e2e.conftest import gpg, lookaside, registries_d, registry

__all__ = ["gpg", "lookaside", "registries_d", "registry"]

NAMESPACE = apiserver.NAMESPACE

# (repository, GPG key name or None for unsigned) -> (reference, digest)
PushImage = Callable[[str, str | None], tuple[str, str]]


@pytest.fixture
def push_image(registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys, tmp_path: Path) -> PushImage:
    """Pushes a one-layer image as `repository:v1`, signed into the lookaside by the named key."""
    def push(repository: str, key: str | None) -> tuple[str, str]:
        layout = infra.write_oci_layout(tmp_path / repository.replace("/", "_"), seed=repository)
        digest = infra.push(layout, registry, repository, "v1", registries_d=registries_d, gnupg_home=gpg.home,
                            sign_by=gpg.fingerprints[key] if key else None)
        return f"{registry.host}/{repository}:v1", digest

    return push


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/cluster" in str(item.path):
            item.add_marker(pytest.mark.cluster)


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60, interval: float = 0.3) -> Any:
    """Poll until `check()` returns something truthy; fail with `what` (and the last error) otherwise."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except Exception as exc:  # a not-yet-existing object is a normal state while waiting
            last = exc
        else:
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last})" if last else ""))


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[apiserver.ApiServer]:
    server = apiserver.start(tmp_path_factory.mktemp("kube"))
    try:
        apiserver.install_trustgate_resources(server)
        yield server
    finally:
        server.stop()


@dataclass
class Process:
    process: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        infra.stop(self.process)


@pytest.fixture
def start_trustgate(cluster: apiserver.ApiServer, tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Start `trustgate ARGS` as the given user (its kubeconfig); everything started is stopped afterwards."""
    started: list[Process] = []

    def start(user: str, *args: str, name: str | None = None, env: dict[str, str] | None = None) -> Process:
        log = tmp_path / f"{name or args[0]}-{len(started)}.log"
        started.append(Process(cluster.start_trustgate(user, *args, log=log, env=env), log))
        return started[-1]

    yield start
    for process in reversed(started):
        process.stop()
        print(f"--- {process.log.name}\n{process.output()}")  # shown by pytest when the test failed


def condition(cluster: apiserver.ApiServer, resource: str, name: str) -> dict[str, Any]:
    """The Ready condition of a TrustStore/TrustPolicy, or {} before the controller has written it."""
    body = cluster.get(resource, name)
    found: dict[str, Any] = next((c for c in (body.get("status") or {}).get("conditions") or []
                                  if c["type"] == "Ready"), {})
    return found
