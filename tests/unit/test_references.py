from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from webhook.references import InvalidReferenceError, parse_reference

DIGEST = "sha256:" + "0123456789abcdef" * 4


@pytest.mark.parametrize(("text", "expected"), [
    ("nginx", "docker.io/library/nginx"),
    ("nginx:1.25", "docker.io/library/nginx:1.25"),
    ("library/nginx", "docker.io/library/nginx"),
    ("index.docker.io/library/nginx", "docker.io/library/nginx"),
    ("team/app", "docker.io/team/app"),
    ("localhost/app", "localhost/app"),
    ("localhost:5000/app:v1", "localhost:5000/app:v1"),
    ("127.0.0.1:5000/acc/app:v1", "127.0.0.1:5000/acc/app:v1"),
    ("registry.example.com/a/b/c", "registry.example.com/a/b/c"),
    (f"nginx@{DIGEST}", f"docker.io/library/nginx@{DIGEST}"),
    (f"nginx:1.25@{DIGEST}", f"docker.io/library/nginx:1.25@{DIGEST}"),
    ("Example.com/app", "Example.com/app"),
])
def test_normalization(text: str, expected: str) -> None:
    assert str(parse_reference(text)) == expected


def test_default_tag_only_for_bare_names() -> None:
    assert str(parse_reference("nginx").with_default_tag()) == "docker.io/library/nginx:latest"
    assert str(parse_reference(f"nginx@{DIGEST}").with_default_tag()) == f"docker.io/library/nginx@{DIGEST}"


@pytest.mark.parametrize("text", [
    "", "UPPERCASE", "nginx:", "nginx@sha256:abc", "nginx@md5:" + "0" * 32, "a//b", "-a/b", "nginx:-tag",
    "http://registry/app", "nginx@sha256:" + "A" * 64, "nginx@sha512:" + "0" * 64, "0" * 64,
    "registry.example.com/" + "a" * 300, "app:tag with space",
])
def test_invalid_references_quote_the_input(text: str) -> None:
    with pytest.raises(InvalidReferenceError) as raised:
        parse_reference(text)
    assert repr(text) in str(raised.value)


def test_repository_and_parts() -> None:
    ref = parse_reference(f"127.0.0.1:5000/acc/app:v1@{DIGEST}")
    assert (ref.domain, ref.path, ref.tag, ref.digest) == ("127.0.0.1:5000", "acc/app", "v1", DIGEST)
    assert ref.repository == "127.0.0.1:5000/acc/app"


@given(st.text(max_size=80))
def test_parse_never_crashes_and_round_trips(text: str) -> None:
    try:
        ref = parse_reference(text)
    except InvalidReferenceError:
        return
    assert parse_reference(str(ref)) == ref
