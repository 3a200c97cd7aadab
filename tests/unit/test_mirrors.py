"""Node-side registry mirrors: which registries an image named by its upstream reference is read from."""

from __future__ import annotations

from pathlib import Path

import pytest

from webhook.cli import EXIT_USAGE, main
from webhook.references import parse_reference
from webhook.registry.mirrors import MirrorConfigError, RegistryMirrors


def _endpoints(mirrors: RegistryMirrors, image: str) -> list[str]:
    return [str(endpoint.reference) for endpoint in mirrors.endpoints(parse_reference(image))]


def test_mirrors_of_a_registry_are_tried_in_order_and_never_the_upstream_by_default() -> None:
    mirrors = RegistryMirrors.build(["docker.io=mirror-a.internal", "docker.io=mirror-b.internal:5000/hub"], [], [])
    assert _endpoints(mirrors, "nginx:1.27") == [
        "mirror-a.internal/library/nginx:1.27", "mirror-b.internal:5000/hub/library/nginx:1.27"]
    assert _endpoints(mirrors, "quay.io/app/x@sha256:" + "a" * 64) == ["quay.io/app/x@sha256:" + "a" * 64]


def test_fallback_to_the_upstream_is_explicit_and_last() -> None:
    mirrors = RegistryMirrors.build(["docker.io=mirror.internal"], ["docker.io"], [])
    assert _endpoints(mirrors, "nginx:1.27") == ["mirror.internal/library/nginx:1.27", "docker.io/library/nginx:1.27"]


def test_longest_upstream_prefix_wins_on_path_segments() -> None:
    mirrors = RegistryMirrors.build(["docker.io=general.internal", "docker.io/library=official.internal/lib"], [], [])
    assert _endpoints(mirrors, "nginx:1") == ["official.internal/lib/nginx:1"]
    assert _endpoints(mirrors, "docker.io/libraryx/app:1") == ["general.internal/libraryx/app:1"]
    assert _endpoints(mirrors, "index.docker.io/team/app:1") == ["general.internal/team/app:1"]


def test_lookaside_belongs_to_its_mirror() -> None:
    mirrors = RegistryMirrors.build(["docker.io=a.internal", "docker.io=b.internal"], [],
                                    ["b.internal=https://sigs.internal/store/"])
    endpoints = mirrors.endpoints(parse_reference("nginx:1"))
    assert [endpoint.lookaside for endpoint in endpoints] == [None, "https://sigs.internal/store"]
    assert endpoints[1].describe() == "b.internal (mirror of docker.io)"


def test_an_upstream_mapped_to_a_bare_host_is_refused_when_used() -> None:
    mirrors = RegistryMirrors.build(["registry.example.com/team/app=mirror.internal"], [], [])
    with pytest.raises(MirrorConfigError, match="bare host"):
        mirrors.endpoints(parse_reference("registry.example.com/team/app:v1"))


@pytest.mark.parametrize(("mirrors", "fallback", "lookasides", "setting", "message"), [
    (["docker.io"], [], [], "mirrors", "expected UPSTREAM=MIRROR"),
    (["library=mirror.internal"], [], [], "mirrors", "upstream 'library'"),
    (["docker.io=mirror"], [], [], "mirrors", "mirror 'mirror'"),
    (["docker.io=mirror.internal:5000/Hub"], [], [], "mirrors", "mirror"),
    (["docker.io=docker.io/cache"], [], [], "mirrors", "overlaps"),
    (["docker.io/library=docker.io"], [], [], "mirrors", "overlaps"),
    (["docker.io=m.internal", "docker.io=m.internal"], [], [], "mirrors", "twice"),
    (["docker.io=m.internal"], ["quay.io"], [], "fallback", "no mirror to fall back from"),
    (["docker.io=m.internal"], ["quay"], [], "fallback", "upstream 'quay'"),
    (["docker.io=m.internal"], [], ["other.internal=https://sigs"], "lookasides", "not one of the mirrors"),
    (["docker.io=m.internal"], [], ["m.internal"], "lookasides", "expected MIRROR=URL"),
    (["docker.io=m.internal"], [], ["m.internal=ftp://sigs"], "lookasides", "not an http"),
    (["docker.io=m.internal"], [], ["m.internal=https://u:p@sigs"], "lookasides", "without credentials"),
    (["docker.io=m.internal"], [], ["m.internal=https://a", "m.internal=https://b"], "lookasides", "more than one"),
])
def test_bad_mirror_settings_are_refused(mirrors: list[str], fallback: list[str], lookasides: list[str],
                                         setting: str, message: str) -> None:
    with pytest.raises(MirrorConfigError, match=message) as raised:
        RegistryMirrors.build(mirrors, fallback, lookasides)
    assert raised.value.setting == setting


@pytest.mark.parametrize(("flags", "named"), [
    (["--registry-mirror", "docker.io"], "--registry-mirror "),
    (["--registry-mirror", "docker.io=m.internal", "--registry-mirror-fallback", "quay.io"],
     "--registry-mirror-fallback "),
    (["--registry-mirror", "docker.io=m.internal", "--registry-mirror-lookaside", "m.internal=ftp://x"],
     "--registry-mirror-lookaside "),
])
@pytest.mark.parametrize("command", [["verify", "nginx:1"], ["explain", "nginx:1"], ["serve", "--port", "0"]])
def test_bad_mirror_flags_are_usage_errors_naming_the_flag(
        command: list[str], flags: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    config = str(Path(__file__).parents[2] / "examples/config")
    assert main([command[0], "--config", config, *flags, *command[1:]]) == EXIT_USAGE == 2
    assert f"trustgate: error: {named}" in capsys.readouterr().err
