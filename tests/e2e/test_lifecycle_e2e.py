"""Nothing outlives trustgate: no gpg daemon and no temporary directory after `serve`, `verify` and `explain`.

Each trustgate process runs with its own TMPDIR, so the gpg homes and serving keys it makes, and any gpg
program started for them (whose command line or environment names that directory), are told apart from
those of other processes. Images are really verified with gpg, so an agent gpg started would be seen.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.e2e import infra
from tests.e2e.conftest import Webhook, admission_review, trustgate, verify, webhook_process
from tests.helpers import resources, trust_policy, trust_store
from webhook.app import InLoop, WebhookConfig, create_app
from webhook.pipeline import VerifySettings
from webhook.policy.compile import PolicySet, compile_policy_set
from webhook.registry.client import RegistrySettings
from webhook.verifiers.gpg import GpgAuthorityVerifier


@pytest.fixture
def temporary() -> Iterator[Path]:
    """The TMPDIR of the trustgate processes a test starts: short, as the system's, so that an agent gpg
    started would find room for its socket names in the home and really run."""
    directory = Path(tempfile.mkdtemp(prefix="tg-t-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def signed(sign: Any, registry: infra.Registry) -> str:
    sign("gpg/lifecycle", "release-rsa")
    return f"{registry.host}/gpg/lifecycle:v1"


def _nothing_left(temporary: Path) -> None:
    assert infra.gpg_processes_naming(temporary) == []
    assert infra.trustgate_temporaries(temporary) == []


def _admitted(webhook: Webhook, image: str) -> None:
    response = webhook.client.post("/validate", json=admission_review("uid", image)).json()["response"]
    assert response["allowed"] is True, response


@pytest.fixture
def serving(tmp_path: Path, config: Path, registry: infra.Registry, temporary: Path) -> Callable[..., Any]:
    """`serve` with its own TMPDIR."""
    def start(*flags: str) -> Any:
        return webhook_process(tmp_path, config, registry, *flags, env={"TMPDIR": str(temporary)})
    return start


def _wait_for(what: str, check: Callable[[], bool], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_serve_stopped_by_sigterm_exits_0_and_leaves_nothing(serving: Callable[..., Any], temporary: Path,
                                                             signed: str) -> None:
    with serving() as webhook:
        _admitted(webhook, signed)
        assert [name for name in infra.trustgate_temporaries(temporary) if name.startswith("tg-gpg-")]
        assert infra.gpg_processes_naming(temporary) == []  # none, not even while serving
        webhook.process.send_signal(signal.SIGTERM)
        assert webhook.process.wait(30) == 0
    _nothing_left(temporary)


def test_serve_with_a_self_signed_certificate_removes_its_key(config: Path, registry: infra.Registry,
                                                              temporary: Path) -> None:
    port = infra.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(config), *registry.trustgate_flags(config),
         "--port", str(port)], env={**os.environ, "TMPDIR": str(temporary)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        infra.wait_until_listening(port, process)
        assert [name for name in infra.trustgate_temporaries(temporary) if name.startswith("trustgate-tls-")]
        process.send_signal(signal.SIGTERM)
        assert process.wait(30) == 0
    finally:
        infra.stop(process)
    _nothing_left(temporary)


def test_after_sigkill_no_daemon_survives_and_the_next_run_removes_the_homes(
        serving: Callable[..., Any], config: Path, registry: infra.Registry, temporary: Path, signed: str) -> None:
    with serving() as webhook:
        _admitted(webhook, signed)
        webhook.process.kill()
        webhook.process.wait(30)
    assert infra.gpg_processes_naming(temporary) == []
    # A killed process cannot remove its directory; the next trustgate process on the machine does.
    (left,) = infra.trustgate_temporaries(temporary)
    assert left.startswith("tg-gpg-")
    run = verify(config, registry, signed, env={"TMPDIR": str(temporary)})
    assert run.returncode == 0, run.stdout + run.stderr
    _nothing_left(temporary)


def test_the_homes_of_a_live_process_are_never_removed(serving: Callable[..., Any], config: Path,
                                                       registry: infra.Registry, temporary: Path,
                                                       signed: str) -> None:
    with serving("--verdict-cache-seconds", "0") as webhook:
        _admitted(webhook, signed)
        homes = infra.trustgate_temporaries(temporary)
        run = verify(config, registry, signed, env={"TMPDIR": str(temporary)})
        assert run.returncode == 0, run.stdout + run.stderr
        assert infra.trustgate_temporaries(temporary) == homes
        _admitted(webhook, signed)  # verified again with the same gpg home
        webhook.process.send_signal(signal.SIGTERM)
        assert webhook.process.wait(30) == 0
    _nothing_left(temporary)


@pytest.mark.parametrize("command", ["verify", "explain"])
def test_verify_and_explain_leave_nothing(command: str, config: Path, registry: infra.Registry,
                                          temporary: Path, signed: str) -> None:
    run = trustgate(command, "--config", str(config), *registry.trustgate_flags(config), signed,
                    env={"TMPDIR": str(temporary)})
    assert run.returncode == 0, run.stdout + run.stderr
    _nothing_left(temporary)


def test_readiness_turns_false_when_draining_starts(serving: Callable[..., Any], signed: str) -> None:
    """During --shutdown-delay the server still answers reviews but tells probes it is not ready."""
    with serving("--shutdown-delay", "120") as webhook:
        assert webhook.client.get("/readyz").status_code == 200
        webhook.process.send_signal(signal.SIGTERM)
        _wait_for("/readyz to answer 503", lambda: webhook.client.get("/readyz").status_code == 503)
        assert webhook.client.get("/readyz").json()["reason"] == "shutting down"
        _admitted(webhook, signed)
        assert webhook.process.poll() is None
        webhook.process.send_signal(signal.SIGTERM)  # a second signal ends the delay
        assert webhook.process.wait(30) == 0
        with pytest.raises(httpx.TransportError):
            webhook.client.get("/readyz")


# --- policy reloads --------------------------------------------------------------------------------------------


def _homes(policies: PolicySet) -> list[Path]:
    return [Path(rules.verifier.home.path) for policy in policies.policies for rules in policy.authorities
            if isinstance(rules.verifier, GpgAuthorityVerifier)]


@pytest.fixture
def compiled(gpg: infra.GpgKeys) -> Iterator[Callable[[], PolicySet]]:
    store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
    policy = trust_policy("release", ["registry.example/**"], [{"name": "release", "gpg": {"trustStore": "release"}}])
    made: list[PolicySet] = []

    def compile_one() -> PolicySet:
        made.append(compile_policy_set(resources(store, policy)))
        return made[-1]

    yield compile_one
    for policies in made:
        policies.close()


def test_100_policy_reloads_close_the_homes_they_replace(compiled: Callable[[], PolicySet]) -> None:
    hooks: list[tuple[InLoop, Callable[[PolicySet], None]]] = []

    def follow(in_loop: InLoop, install: Callable[[PolicySet], None]) -> Callable[[], None]:
        hooks.append((in_loop, install))
        return lambda: None

    generations = [compiled() for _ in range(100)]
    homes = [home for policies in generations for home in _homes(policies)]
    assert len(homes) == 100 and all(home.is_dir() for home in homes)
    # A replaced generation is closed once no review can still use it: the deadline and a grace later.
    app = create_app(WebhookConfig(None, RegistrySettings(), VerifySettings(deadline_seconds=0.01), follow=follow))
    with TestClient(app) as client:
        (in_loop, install), = hooks
        for policies in generations:
            in_loop(partial(install, policies))
        _wait_for("generation 100 to serve",
                  lambda: client.get("/readyz").json().get("policyGeneration") == generations[-1].generation)
        _wait_for("the 99 replaced generations to be closed", lambda: not any(home.exists() for home in homes[:-1]))
        assert homes[-1].is_dir()
        assert infra.gpg_processes_naming(homes[-1].parent) == []
    assert not homes[-1].exists()  # the serving generation is closed at shutdown
