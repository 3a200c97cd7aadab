"""A pod's own pull credentials: pull Secrets of both types, the kubelet's host matching, the identity that
tells credential sets apart in cache keys, and what a pod spec names."""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from webhook.admission import PullSecretRefs, parse_review, pull_secret_refs
from webhook.registry.auth import Credentials, CredentialsError
from webhook.registry.keyring import PullCredentials, pull_secret_entries

DOCKERCONFIGJSON = "kubernetes.io/dockerconfigjson"
DOCKERCFG = "kubernetes.io/dockercfg"


def auth(user: str, password: str) -> str:
    return base64.b64encode(f"{user}:{password}".encode()).decode()


def secret_data(registries: dict[str, Any], *, legacy: bool = False) -> dict[str, bytes]:
    if legacy:
        return {".dockercfg": json.dumps(registries).encode()}
    return {".dockerconfigjson": json.dumps({"auths": registries}).encode()}


# --- parsing both Secret types --------------------------------------------------------------------------------


@pytest.mark.parametrize("legacy", [False, True])
def test_auth_and_username_password_entries_of_both_secret_types(legacy: bool) -> None:
    entries = pull_secret_entries(DOCKERCFG if legacy else DOCKERCONFIGJSON, secret_data({
        "https://index.docker.io/v1/": {"auth": auth("hub", "pa:ss"), "email": "ignored@example.com"},
        "registry.example.com:5000": {"username": "ci", "password": "s3cret"},
    }, legacy=legacy), "pull secret a/regcred")
    assert entries == [("https://index.docker.io/v1/", Credentials("hub", "pa:ss")),
                       ("registry.example.com:5000", Credentials("ci", "s3cret"))]


@pytest.mark.parametrize(("secret_type", "data", "expected"), [
    ("Opaque", secret_data({}), "type Opaque is not a pull secret type"),
    (DOCKERCONFIGJSON, {".dockercfg": b"{}"}, "no .dockerconfigjson key"),
    (DOCKERCFG, secret_data({}), "no .dockercfg key"),
    (DOCKERCONFIGJSON, {".dockerconfigjson": b"\xff"}, "not UTF-8"),
    (DOCKERCONFIGJSON, {".dockerconfigjson": b"{"}, "not JSON"),
    (DOCKERCONFIGJSON, {".dockerconfigjson": b'{"r.example": {}}'}, "no \"auths\" object"),
    (DOCKERCFG, {".dockercfg": b"[]"}, "not a JSON object of registries"),
    (DOCKERCONFIGJSON, secret_data({"r.example": {"auth": "%%%not-base64"}}), "not base64 of user:password"),
    (DOCKERCONFIGJSON, secret_data({"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}),
     "not base64 of user:password"),
    (DOCKERCFG, secret_data({"r.example": {"email": "a@b.c"}}, legacy=True),
     "neither auth nor username/password"),
    (DOCKERCONFIGJSON, secret_data({"r.example": {"username": "u"}}), "neither auth nor username/password"),
])
def test_unusable_secrets_are_refused_naming_the_secret_and_entry(secret_type: str, data: dict[str, bytes],
                                                                  expected: str) -> None:
    with pytest.raises(CredentialsError, match=expected) as raised:
        pull_secret_entries(secret_type, data, "pull secret a/regcred")
    assert str(raised.value).startswith("pull secret a/regcred")


def test_messages_and_reprs_never_carry_a_password() -> None:
    with pytest.raises(CredentialsError) as raised:
        pull_secret_entries(DOCKERCONFIGJSON, secret_data({"r.example": {"auth": auth("u", "hunter2") + "!"}}), "s")
    pull = PullCredentials.of([("r.example", Credentials("u", "hunter2"))])
    for text in (str(raised.value), repr(pull), pull.identity, repr(pull.lookup("r.example", "app"))):
        assert "hunter2" not in text and auth("u", "hunter2") not in text


# --- host matching, as the kubelet does it ----------------------------------------------------------------------


@pytest.mark.parametrize(("server", "registry", "path", "matches"), [
    ("registry.example.com", "registry.example.com", "team/app", True),
    ("https://registry.example.com", "registry.example.com", "team/app", True),
    ("http://registry.example.com/v2/", "registry.example.com", "team/app", True),
    ("registry.example.com", "registry.example.com:5000", "team/app", False),  # ports must be equal
    ("registry.example.com:5000", "registry.example.com", "team/app", False),
    ("registry.example.com:5000", "registry.example.com:5000", "team/app", True),
    ("registry.example.com", "evil.registry.example.com", "team/app", False),  # as many host parts
    ("registry.example.com", "registry.example.com.evil.example", "team/app", False),
    ("registry.example", "registry.example.com", "team/app", False),
    ("*.example.com", "registry.example.com", "team/app", True),  # globs within one part
    ("*.example.com", "a.b.example.com", "team/app", False),
    ("*.example.com", "example.com", "team/app", False),
    ("registry.example.com/team", "registry.example.com", "team/app", True),  # path prefix
    ("registry.example.com/team", "registry.example.com", "other/app", False),
    ("https://registry.example.com/v1/team", "registry.example.com", "team/app", True),
    ("https://index.docker.io/v1/", "docker.io", "library/nginx", True),  # Docker Hub's names
    ("registry-1.docker.io", "docker.io", "library/nginx", True),
    ("https://index.docker.io/v1/", "quay.io", "library/nginx", False),
    ("Registry.Example.COM", "registry.example.com", "app", True),  # host names have no case
    ("[::1]:5000", "[::1]:5000", "app", True),
    ("[::1]", "[::1]:5000", "app", False),
])
def test_a_secret_entry_applies_only_to_the_registry_it_names(server: str, registry: str, path: str,
                                                              matches: bool) -> None:
    credentials = Credentials("u", "p")
    assert PullCredentials.of([(server, credentials)]).lookup(registry, path) == ([credentials] if matches else [])


def test_candidates_come_most_specific_key_first_then_in_secret_order() -> None:
    host, team, other_host = Credentials("host", "1"), Credentials("team", "2"), Credentials("other", "3")
    second_host = Credentials("host2", "4")
    pull = PullCredentials.of([("registry.example.com", host), ("registry.example.com/team", team),
                               ("quay.io", other_host), ("https://registry.example.com/", second_host)])
    assert pull.lookup("registry.example.com", "team/app") == [team, host, second_host]
    assert pull.lookup("registry.example.com", "elsewhere/app") == [host, second_host]
    assert pull.lookup("gcr.io", "app") == []


# --- identity ----------------------------------------------------------------------------------------------------


def test_the_identity_tells_credential_sets_apart_and_is_stable_for_equal_sets() -> None:
    def identity(*entries: tuple[str, str, str]) -> str:
        return PullCredentials.of((server, Credentials(user, password)) for server, user, password in entries).identity

    base = identity(("r.example", "u", "p"))
    assert base == identity(("r.example", "u", "p"))
    assert len({base, identity(("r.example", "u", "q")), identity(("r.example", "v", "p")),
                identity(("s.example", "u", "p")), identity()}) == 5
    assert identity() == "" and not PullCredentials.of([])


# --- what a pod spec names -----------------------------------------------------------------------------------


def review(kind: str, group: str, obj: dict[str, Any]) -> Any:
    return parse_review(json.dumps({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": "u", "kind": {"group": group, "version": "v1", "kind": kind}, "operation": "CREATE",
        "namespace": "team-a", "object": obj}}).encode())


def test_pull_secret_references_of_pods_and_templates() -> None:
    spec = {"containers": [{"name": "c", "image": "app"}], "serviceAccountName": "builder",
            "imagePullSecrets": [{"name": "one"}, {"name": "two"}, {"name": "one"}, {}]}
    assert pull_secret_refs(review("Pod", "", {"spec": spec})) == PullSecretRefs(("one", "two"), "builder")
    deployment = {"spec": {"template": {"spec": {"containers": [{"name": "c", "image": "app"}]}}}}
    assert pull_secret_refs(review("Deployment", "apps", deployment)) == PullSecretRefs((), "default")
    legacy_field = {"spec": {"containers": [], "serviceAccount": "old"}}
    assert pull_secret_refs(review("Pod", "", legacy_field)) == PullSecretRefs((), "old")
    # Kubernetes 1.20-1.21 send ephemeral containers without the pod spec: nothing to read.
    assert pull_secret_refs(review("EphemeralContainers", "", {"ephemeralContainers": []})) is None
