"""Nothing outlives the controller or the in-cluster webhook: no gpg daemon, no gpg home, no serving key.

Both processes run with their own TMPDIR against the real API server; the controller inspects gpg keys and
compiles a gpg policy, the webhook loads its bundles (one reload included) and serves the certificate it
reads from the cluster. Stopped by SIGTERM, both exit 0 and leave nothing behind.
"""

from __future__ import annotations

import shutil
import signal
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.cluster.apiserver import ApiServer
from tests.cluster.conftest import NAMESPACE, Process, condition, wait_for
from tests.cluster.test_controller_cluster import Webhook
from tests.e2e import infra
from tests.helpers import trust_policy, trust_store


@pytest.fixture
def temporary() -> Iterator[Path]:
    """A TMPDIR as short as the system's, so that an agent gpg started would really run."""
    directory = Path(tempfile.mkdtemp(prefix="tg-t-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def _policy(images: list[str]) -> dict[str, object]:
    return trust_policy("lifecycle", images, [{"name": "release", "gpg": {"trustStore": "lifecycle"}}])


def test_controller_and_webhook_stopped_by_sigterm_exit_0_and_leave_nothing(
        cluster: ApiServer, start_trustgate: Callable[..., Process], gpg: infra.GpgKeys, temporary: Path,
        tmp_path: Path) -> None:
    cluster.kubectl("delete", "lease", "-n", NAMESPACE, "trustgate-controller", "--ignore-not-found")
    cluster.apply(trust_store("lifecycle", {"ed": gpg.armored("release-ed")}),
                  _policy(["registry.example/lifecycle/**"]))
    env = {"TMPDIR": str(temporary)}
    try:
        controller = start_trustgate("trustgate-controller", "controller", "--namespace", NAMESPACE,
                                     "--webhook-host", "127.0.0.1", env=env)
        wait_for("TrustPolicy lifecycle Ready",
                 lambda: condition(cluster, "trustpolicy", "lifecycle").get("status") == "True")
        port = infra.free_port()
        webhook_process = start_trustgate("trustgate-webhook", "serve", "--namespace", NAMESPACE, "--host",
                                          "127.0.0.1", "--port", str(port), env=env)
        infra.wait_until_listening(port, webhook_process.process, timeout=60)
        webhook = Webhook(cluster, port)
        ca = webhook.ca(tmp_path)
        generation = wait_for("the webhook to load a bundle", lambda: webhook.generation(ca))
        cluster.apply(_policy(["registry.example/lifecycle/**", "registry.example/other/**"]))
        webhook.wait_for_new_bundle(ca, generation)

        made = infra.trustgate_temporaries(temporary)
        assert any(name.startswith("tg-gpg-") for name in made)
        assert any(name.startswith("trustgate-tls-") for name in made)
        assert infra.gpg_processes_naming(temporary) == []
        for process in (webhook_process, controller):
            process.process.send_signal(signal.SIGTERM)
            assert process.process.wait(60) == 0, process.output()
    finally:
        cluster.kubectl("delete", "trustpolicy", "lifecycle", "--ignore-not-found")
        cluster.kubectl("delete", "truststore", "lifecycle", "--ignore-not-found")
    assert infra.gpg_processes_naming(temporary) == []
    assert infra.trustgate_temporaries(temporary) == []
    assert "Traceback" not in controller.output() + webhook_process.output()
