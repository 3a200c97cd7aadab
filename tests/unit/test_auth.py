"""Registry credentials (dockerconfigjson) and authentication challenges."""

from __future__ import annotations

import base64
import json

import pytest

from webhook.registry.auth import Challenge, CredentialsError, parse_challenges, parse_docker_config, registry_key


def config(auths: object) -> str:
    return json.dumps({"auths": auths})


def test_auth_and_username_password_forms() -> None:
    found = parse_docker_config(config({
        "https://index.docker.io/v1/": {"auth": base64.b64encode(b"hub:pa:ss").decode()},
        "registry.example.com:5000": {"username": "ci", "password": "secret"},
    }), "creds.json")
    assert found["docker.io"].username == "hub" and found["docker.io"].password == "pa:ss"
    assert found["registry.example.com:5000"].basic_header() == "Basic " + base64.b64encode(b"ci:secret").decode()


def test_passwords_stay_out_of_reprs() -> None:
    found = parse_docker_config(config({"r.example": {"username": "u", "password": "hunter2"}}), "c")
    assert "hunter2" not in repr(found)


@pytest.mark.parametrize(("text", "expected"), [
    ("{", "not JSON"),
    ('{"credsStore": "desktop"}', "credential helpers are not supported"),
    (config({"r.example": "x"}), "is not an object"),
    (config({"r.example": {"auth": "!!!"}}), "not base64 of user:password"),
    (config({"r.example": {"auth": base64.b64encode(b"nocolon").decode()}}), "not base64 of user:password"),
    (config({"r.example": {"identitytoken": "t"}}), "neither auth nor username/password"),
])
def test_unusable_files_are_refused_naming_the_entry(text: str, expected: str) -> None:
    with pytest.raises(CredentialsError, match=expected):
        parse_docker_config(text, "creds.json")


@pytest.mark.parametrize(("server", "key"), [
    ("https://index.docker.io/v1/", "docker.io"),
    ("registry-1.docker.io", "docker.io"),
    ("https://registry.example.com:5000/v2/", "registry.example.com:5000"),
    ("quay.io/org", "quay.io"),
])
def test_registry_keys(server: str, key: str) -> None:
    assert registry_key(server) == key


def test_challenges_with_quoted_and_escaped_parameters() -> None:
    assert parse_challenges(['Bearer realm="https://auth.example/token",service="reg",scope="repository:a/b:pull"',
                             'Basic realm="say \\"hi\\""']) == [
        Challenge("bearer", {"realm": "https://auth.example/token", "service": "reg",
                             "scope": "repository:a/b:pull"}),
        Challenge("basic", {"realm": 'say "hi"'}),
    ]
