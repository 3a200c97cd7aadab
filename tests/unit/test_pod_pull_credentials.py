"""Reading a pod's pull Secrets from the API server: the pod's own, else its ServiceAccount's; missing,
malformed and unreadable ones skipped (the latter asked again next time); nothing of a Secret logged."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from types import SimpleNamespace
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from webhook.admission import PullSecretRefs
from webhook.cluster import PodPullCredentials
from webhook.registry.auth import Credentials


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def pull_secret(user: str, password: str, server: str = "registry.example.com") -> Any:
    config = json.dumps({"auths": {server: {"auth": _b64(f"{user}:{password}".encode())}}}).encode()
    return SimpleNamespace(type="kubernetes.io/dockerconfigjson", data={".dockerconfigjson": _b64(config)})


class FakeCore:
    def __init__(self, secrets: dict[tuple[str, str], Any], accounts: dict[tuple[str, str], list[str]]) -> None:
        self.secrets, self.accounts = secrets, accounts
        self.reads: list[str] = []
        self.failing: set[str] = set()

    def _get(self, kind: str, found: dict[tuple[str, str], Any], name: str, namespace: str) -> Any:
        self.reads.append(f"{kind} {namespace}/{name}")
        if name in self.failing:
            raise ApiException(status=500, reason="Internal Server Error")
        if (namespace, name) not in found:
            raise ApiException(status=404, reason="Not Found")
        return found[namespace, name]

    def read_namespaced_secret(self, name: str, namespace: str, **_: Any) -> Any:
        return self._get("secret", self.secrets, name, namespace)

    def read_namespaced_service_account(self, name: str, namespace: str, **_: Any) -> Any:
        names = self._get("account", {key: SimpleNamespace(image_pull_secrets=[SimpleNamespace(name=secret)
                                                                               for secret in value])
                                      for key, value in self.accounts.items()}, name, namespace)
        return names


def lookup(credentials: Any) -> list[Credentials]:
    found: list[Credentials] = credentials.lookup("registry.example.com", "app")
    return found


def test_the_pods_own_secrets_else_its_service_accounts_from_its_namespace() -> None:
    core = FakeCore({("a", "own"): pull_secret("own", "own-pw"), ("a", "shared"): pull_secret("sa", "sa-pw"),
                     ("b", "own"): pull_secret("b", "b-pw")}, {("a", "builder"): ["shared"]})
    reader = PodPullCredentials(core)

    async def main() -> list[list[Credentials]]:
        return [lookup(await reader("a", PullSecretRefs(("own",), "builder"))),
                lookup(await reader("a", PullSecretRefs((), "builder"))),
                lookup(await reader("b", PullSecretRefs((), "builder"))),
                lookup(await reader("a", PullSecretRefs((), "builder")))]

    own, by_account, other_namespace, again = asyncio.run(main())
    assert own == [Credentials("own", "own-pw")]  # the account's Secrets only when the pod names none
    assert by_account == again == [Credentials("sa", "sa-pw")]
    assert other_namespace == []  # never another namespace's Secret
    assert core.reads.count("account a/builder") == 1 and core.reads.count("secret a/shared") == 1  # kept


def test_missing_malformed_and_unreadable_secrets_are_skipped_and_never_logged(
        caplog: pytest.LogCaptureFixture) -> None:
    malformed = SimpleNamespace(type="kubernetes.io/dockerconfigjson", data={".dockerconfigjson": _b64(
        json.dumps({"auths": {"registry.example.com": {"auth": _b64(b"user-no-colon-hunter2")}}}).encode())})
    core = FakeCore({("a", "good"): pull_secret("u", "hunter2"), ("a", "malformed"): malformed,
                     ("a", "flaky"): pull_secret("f", "flaky-pw"),
                     ("a", "opaque"): SimpleNamespace(type="Opaque", data={"password": _b64(b"hunter2")})}, {})
    core.failing.add("flaky")
    reader = PodPullCredentials(core)
    refs = PullSecretRefs(("missing", "malformed", "opaque", "flaky", "good"), "default")

    async def main() -> tuple[list[Credentials], list[Credentials]]:
        first = lookup(await reader("a", refs))
        core.failing.clear()
        return first, lookup(await reader("a", refs))

    with caplog.at_level(logging.DEBUG):
        first, second = asyncio.run(main())
    assert first == [Credentials("u", "hunter2")]
    assert second == [Credentials("f", "flaky-pw"), Credentials("u", "hunter2")]  # the failed read is retried
    assert core.reads.count("secret a/flaky") == 2 and core.reads.count("secret a/missing") == 1
    logged = caplog.text
    for expected in ("pull secret a/missing does not exist", "pull secret a/malformed not used",
                     "is not base64 of user:password", "type Opaque is not a pull secret type",
                     "cannot read pull secret a/flaky (500"):
        assert expected in logged, logged
    assert "hunter2" not in logged and "flaky-pw" not in logged
