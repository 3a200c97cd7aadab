"""Copies and mirrors end to end: images signed in an upstream registry (GPG, cosign `.sig`, a cosign 3
sigstore bundle, Notation), copied with their signatures by the real tools (`cosign copy`, `oras cp -r`,
`skopeo copy` with the lookaside), verified as copies under the
remap rules, and verified under their upstream names from the mirror (`--registry-mirror`) once the upstream
is gone: its port then belongs to a canary that counts every connection trustgate makes to it.
"""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import infra
from tests.e2e.conftest import Run, admission_review, reasons, running_webhook, verify, write_config
from tests.helpers import key_store, trust_policy

COSIGN_PASSWORD = "mirror-test"
# Inside the network namespace: a host name that resolves only to the canary's address, through a private
# /etc/hosts (where nothing else resolves, there being no network to ask).
NETNS_UPSTREAM = "upstream.registry.test"
NETNS_CANARY_ADDRESS = "127.0.0.2"
NETNS_TIMEOUT = 300
FORMATS = ("cos", "bun", "gpg", "nota")  # cosign `.sig`, cosign 3 bundle, GPG simple signing, Notation


@dataclass
class World:
    upstream: str  # the upstream registry's host:port, now served by the canary
    mirror: infra.Registry
    canary: infra.Canary
    mirror_sigs: infra.Lookaside
    store: list[dict[str, Any]]  # TrustStores trusting the cosign key, the GPG key and the notation certificate
    digests: dict[str, str]

    def config(self, directory: Path, images: str, *, cosign_identity: dict[str, Any] | None = None,
               gpg_identity: dict[str, Any] | None = None, gpg_lookaside: str | None = None) -> Path:
        """Policies over `<images>/{cos,bun,gpg,nota}`, one format each (`bun` under the cosign authority)."""
        cosign: dict[str, Any] = {"trustStore": "keys", "keys": ["cosign"]}
        if cosign_identity is not None:
            cosign["signedIdentity"] = cosign_identity
        gpg: dict[str, Any] = {"trustStore": "keys", "keys": ["gpg"],
                               "lookaside": gpg_lookaside or self.mirror_sigs.url}
        if gpg_identity is not None:
            gpg["signedIdentity"] = gpg_identity
        return write_config(
            directory, *self.store,
            trust_policy("cos", [f"{images}/cos"], [{"name": "ci", "cosign": cosign}]),
            trust_policy("bun", [f"{images}/bun"], [{"name": "ci", "cosign": cosign}]),
            trust_policy("gpg", [f"{images}/gpg"], [{"name": "release", "gpg": gpg}]),
            trust_policy("nota", [f"{images}/nota"], [{"name": "acme", "notation": {
                "trustStore": "notation", "trustedIdentities": ["*"]}}]))

    def mirror_flags(self) -> tuple[str, ...]:
        return ("--registry-mirror", f"{self.upstream}/origin={self.mirror.host}/mirror",
                "--registry-mirror-lookaside", f"{self.mirror.host}/mirror={self.mirror_sigs.url}")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory, registry: infra.Registry, gpg: infra.GpgKeys) -> Iterator[World]:
    """Sign one image per format in an upstream registry, copy each to `<registry>/mirror/` with the real tools,
    then replace the upstream by a canary."""
    base = tmp_path_factory.mktemp("mirrors")
    upstream = infra.start_registry(base / "upstream")
    up_sigs = infra.start_lookaside(base / "upstream-sigs")
    mirror_sigs = infra.start_lookaside(base / "mirror-sigs")
    canary: infra.Canary | None = None
    try:
        registries_d = base / "registries.d"
        registries_d.mkdir()
        (registries_d / "mirrors.yaml").write_text(json.dumps({"docker": {
            upstream.host: {"lookaside": up_sigs.url, "lookaside-staging": up_sigs.root.as_uri()},
            registry.host: {"lookaside": mirror_sigs.url, "lookaside-staging": mirror_sigs.root.as_uri()}}}))
        digests = {}
        for name in FORMATS:
            layout = infra.write_oci_layout(base / f"layout-{name}", seed=f"mirrored {name}")
            digests[name] = infra.push(layout, upstream, f"origin/{name}", "v1", registries_d=registries_d,
                                       gnupg_home=gpg.home,
                                       sign_by=gpg.fingerprints["release-rsa"] if name == "gpg" else None)
        cosign_env = {"COSIGN_PASSWORD": COSIGN_PASSWORD, "HOME": str(base)}
        infra.run("cosign", "generate-key-pair", "--output-key-prefix", str(base / "cosign"), env=cosign_env)
        infra.run("cosign", "sign", "--key", str(base / "cosign.key"), "--tlog-upload=false", "-y",
                  "--allow-http-registry", "--allow-insecure-registry",
                  f"{upstream.host}/origin/cos@{digests['cos']}", env=cosign_env)
        # cosign 3 with no Sigstore service: a bundle without log entries, filed as an OCI referrer.
        signing_config = base / "offline-signing-config.json"
        infra.run("cosign3", "signing-config", "create", "--no-default-fulcio", "--no-default-rekor",
                  "--no-default-oidc", "--no-default-tsa", "--out", str(signing_config), env=cosign_env)
        infra.run("cosign3", "sign", "--key", str(base / "cosign.key"), "--signing-config", str(signing_config),
                  "-y", "--allow-http-registry", "--allow-insecure-registry",
                  f"{upstream.host}/origin/bun@{digests['bun']}", env=cosign_env)
        notation_env = {"XDG_CONFIG_HOME": str(base / "notation-home")}
        infra.run("notation", "cert", "generate-test", "--default", "selfsigned", env=notation_env)
        infra.run("notation", "sign", "--insecure-registry", "--key", "selfsigned",
                  f"{upstream.host}/origin/nota@{digests['nota']}", env=notation_env)

        infra.run("cosign", "copy", "--allow-http-registry", "--allow-insecure-registry",
                  f"{upstream.host}/origin/cos:v1", f"{registry.host}/mirror/cos:v1", env=cosign_env)
        for name in ("bun", "nota"):
            infra.run("oras", "cp", "-r", "--from-plain-http", "--to-plain-http",
                      f"{upstream.host}/origin/{name}:v1", f"{registry.host}/mirror/{name}:v1")
        # skopeo carries the signature from the upstream's lookaside to the mirror's (registries.d above).
        infra.run("skopeo", "--insecure-policy", "--registries.d", str(registries_d), "copy", "--quiet",
                  "--preserve-digests", *upstream.skopeo_src_flags(), *registry.skopeo_dest_flags(),
                  f"docker://{upstream.host}/origin/gpg:v1", f"docker://{registry.host}/mirror/gpg:v1")
        assert (mirror_sigs.signature_dir("mirror/gpg", digests["gpg"]) / "signature-1").is_file()

        store = [key_store("keys", [{"name": "cosign", "publicKey": (base / "cosign.pub").read_text()},
                                    {"name": "gpg", "gpg": gpg.armored("release-rsa")}]),
                 key_store("notation", [{"name": "selfsigned", "x509": {"role": "ca", "certificates": (
                     base / "notation-home/notation/localkeys/selfsigned.crt").read_text()}}])]
        port = upstream.port
        upstream.stop()
        up_sigs.stop()
        canary = infra.Canary(port)
        yield World(upstream.host, registry, canary, mirror_sigs, store, digests)
    finally:
        if canary is not None:
            canary.close()
        upstream.stop()
        up_sigs.stop()
        mirror_sigs.stop()


def _allowed(run: Run) -> dict[str, bool]:
    return {image["image"].rsplit("/", 1)[1]: image["allowed"] for image in run.json()["images"]}


def test_copies_are_admitted_under_the_remap_rules_and_refused_without_them(tmp_path: Path, world: World) -> None:
    mirror, origin = f"{world.mirror.host}/mirror", f"{world.upstream}/origin"
    copies = [f"{mirror}/{name}:v1" for name in FORMATS]
    remapped = world.config(tmp_path / "remapped", mirror,
                            cosign_identity={"type": "matchRepository", "remap": {"prefix": mirror,
                                                                                  "signedPrefix": origin}},
                            gpg_identity={"type": "remapIdentity", "prefix": mirror, "signedPrefix": origin})
    run = verify(remapped, world.mirror, *copies)
    assert _allowed(run) == {"cos:v1": True, "bun:v1": True, "gpg:v1": True, "nota:v1": True}, reasons(run)

    plain = world.config(tmp_path / "plain", mirror)
    run = verify(plain, world.mirror, *copies)
    # Notation and bundles sign the digest alone: a copy verifies as it is. The others name the origin's repository.
    assert _allowed(run) == {"cos:v1": False, "bun:v1": True, "gpg:v1": False, "nota:v1": True}, reasons(run)
    assert f"signed for {origin}/cos, not accepted by matchRepository" in reasons(run)
    assert f"signed for {origin}/gpg:v1, not accepted by matchRepoDigestOrExact" in reasons(run)

    # remapIdentity keeps containers/image's meaning: cosign's repository-only name does not vouch for a tag.
    legacy = world.config(tmp_path / "legacy", mirror,
                          cosign_identity={"type": "remapIdentity", "prefix": mirror, "signedPrefix": origin})
    assert _allowed(verify(legacy, world.mirror, copies[0])) == {"cos:v1": False}
    assert world.canary.connections == 0


def test_pods_naming_the_upstream_are_verified_from_the_mirror_without_contacting_it(
        tmp_path: Path, world: World) -> None:
    origin = f"{world.upstream}/origin"
    images = [f"{origin}/{name}:v1" for name in FORMATS]
    # The authority's own lookaside is the (gone) upstream's: the mirror's lookaside flag must take its place.
    config = world.config(tmp_path / "upstream", origin, gpg_lookaside=f"http://{world.upstream}/sigstore")
    run = verify(config, world.mirror, *world.mirror_flags(), *images)
    assert _allowed(run) == {"cos:v1": True, "bun:v1": True, "gpg:v1": True, "nota:v1": True}, reasons(run)
    assert [image["digest"] for image in run.json()["images"]] == [world.digests[n] for n in FORMATS]
    assert "good sigstore bundle signature by key cosign" in json.dumps(run.json()["images"][1]["explanation"])
    assert world.canary.connections == 0

    missing = verify(config, world.mirror, *world.mirror_flags(), f"{origin}/cos:absent", f"{origin}/bun:absent")
    assert missing.returncode == 1
    for name in ("cos", "bun"):
        assert f"{origin}/{name}:absent not found on {world.mirror.host} (mirror of {world.upstream})" \
            in reasons(missing)
    assert world.canary.connections == 0

    # The canary does see trustgate when no mirror is configured, or when falling back is allowed.
    direct = verify(config, world.mirror, images[0])
    assert direct.returncode == 1 and world.upstream in reasons(direct)
    seen = world.canary.connections
    assert seen > 0
    fallback = verify(config, world.mirror, *world.mirror_flags(), "--registry-mirror-fallback", origin,
                      f"{origin}/cos:absent")
    assert fallback.returncode == 1
    assert world.canary.connections > seen


def test_mutate_pins_the_mirror_digest_under_the_upstream_name(tmp_path: Path, world: World) -> None:
    origin = f"{world.upstream}/origin"
    config = world.config(tmp_path / "upstream", origin)
    before = world.canary.connections
    with running_webhook(tmp_path, config, world.mirror, *world.mirror_flags()) as client:
        for name in FORMATS:
            image = f"{origin}/{name}:v1"
            answer = client.post("/mutate", json=admission_review(f"m-{name}", image)).json()["response"]
            assert answer["allowed"] is True, answer
            patch = json.loads(base64.b64decode(answer["patch"]))
            assert patch == [{"op": "replace", "path": "/spec/containers/0/image",
                              "value": f"{image}@{world.digests[name]}"}]
    assert world.canary.connections == before


def _in_network_namespace(tmp_path: Path, spec: dict[str, Any]) -> dict[str, Any]:
    """Run tests/e2e/mirror_netns.py under `unshare --net --mount` with `lo` up and a private /etc/hosts
    naming the upstream; return what it observed."""
    hosts = tmp_path / "hosts"
    hosts.write_text(f"127.0.0.1 localhost\n{NETNS_CANARY_ADDRESS} {NETNS_UPSTREAM}\n")
    spec_file = tmp_path / "spec.json"
    spec_file.write_text(json.dumps(spec))
    command = [infra.tool("unshare"), "--net", "--mount", "--", "sh", "-c",
               'ip link set lo up && mount --bind "$0" /etc/hosts && exec "$@"', str(hosts),
               sys.executable, "-m", "tests.e2e.mirror_netns", str(spec_file)]
    # What the helper starts is in its process group, stopped whole if it overruns.
    completed = infra.run_process_group(command, NETNS_TIMEOUT)
    assert completed.returncode == 0, completed.stderr.decode(errors="replace")[-8000:]
    observed: dict[str, Any] = json.loads(completed.stdout.decode().splitlines()[-1])
    return observed


def test_mirror_is_used_for_every_format_where_the_upstream_cannot_be_reached(tmp_path: Path, world: World) -> None:
    """In a network namespace with only loopback, the upstream's name resolves to a canary alone: pods naming
    it are verified and pinned from the mirror with no attempt on it; without the mirror flag, they are not."""
    origin, signed_origin = f"{NETNS_UPSTREAM}/origin", f"{world.upstream}/origin"
    images = [f"{origin}/{name}:v1" for name in FORMATS]
    # The fixture signed under the upstream's test address: the remap says so for the formats naming it.
    config = world.config(tmp_path / "config", origin, gpg_lookaside=f"https://{NETNS_UPSTREAM}/sigstore",
                          cosign_identity={"type": "matchRepository", "remap": {"prefix": origin,
                                                                                "signedPrefix": signed_origin}},
                          gpg_identity={"type": "remapIdentity", "prefix": origin, "signedPrefix": signed_origin})
    observed = _in_network_namespace(tmp_path, {
        "work": str(tmp_path / "netns"), "config": str(config), "images": images, "upstream": NETNS_UPSTREAM,
        "upstreamPrefix": origin, "canaryAddress": NETNS_CANARY_ADDRESS, "mirrorPath": "mirror",
        "mirrorStorage": str(world.mirror.storage), "mirrorLookaside": str(world.mirror_sigs.root)})
    assert observed["interfaces"] == ["lo"]
    assert observed["upstreamResolvesTo"] == NETNS_CANARY_ADDRESS

    mirrored = observed["mirrored"]
    verdicts = {image["image"]: image["allowed"] for image in mirrored["result"]["images"]}
    assert verdicts == dict.fromkeys(images, True), mirrored["result"]
    assert [image["digest"] for image in mirrored["result"]["images"]] == [world.digests[n] for n in FORMATS]
    assert mirrored["returncode"] == 0 and mirrored["canary"] == 0

    assert observed["mutate"]["patches"] == {image: {"allowed": True, "patch": [
        {"op": "replace", "path": "/spec/containers/0/image", "value": f"{image}@{world.digests[name]}"}]}
        for name, image in zip(FORMATS, images, strict=True)}
    assert observed["mutate"]["canary"] == 0

    # The control: the same images without the mirror flag go to the upstream's name, reach only the canary,
    # and are denied.
    for image, direct in observed["direct"].items():
        assert direct["returncode"] == 1 and direct["result"]["images"][0]["allowed"] is False, direct
        assert direct["attempts"] > 0, (image, direct)
        assert NETNS_UPSTREAM in "\n".join(direct["result"]["images"][0]["reasons"]), direct
