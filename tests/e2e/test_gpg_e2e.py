"""GPG simple signing end to end: images signed by the real skopeo, served by a real registry and lookaside.

The reference behaviour is `skopeo copy` with a signedBy policy: unsigned images, unknown keys, tampered
signatures, signatures filed under another digest and signatures of another repository are all refused.
"""

from __future__ import annotations

import json
import shutil
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e import infra
from tests.e2e.conftest import Run, trustgate, write_config
from tests.helpers import trust_policy, trust_store


@pytest.fixture
def sign(tmp_path: Path, registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys) -> Any:
    """Push a fresh image to `repository:tag`, signed by the named key (or unsigned); return its digest."""

    def push(repository: str, key: str | None, *, tag: str = "v1", architectures: tuple[str, ...] = (),
             manifest_format: str | None = None) -> str:
        layout = infra.write_oci_layout(tmp_path / f"layout-{repository.replace('/', '_')}-{tag}",
                                        seed=f"{repository}:{tag}", architectures=architectures)
        return infra.push(layout, registry, repository, tag, registries_d=registries_d, gnupg_home=gpg.home,
                          sign_by=gpg.fingerprints[key] if key else None, manifest_format=manifest_format)

    return push


def gpg_config(directory: Path, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys,
               **authority: Any) -> Path:
    store = trust_store("release", {name: gpg.armored(name) for name in ("release-rsa", "release-ed")})
    policy = trust_policy("release", [f"{registry.host}/gpg/**"], [
        {"name": "release", "gpg": {"trustStore": "release", "lookaside": lookaside.url, **authority}}])
    return write_config(directory, store, policy)


@pytest.fixture
def config(tmp_path: Path, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> Path:
    return gpg_config(tmp_path / "config", registry, lookaside, gpg)


def verify(config: Path, registry: infra.Registry, *images: str, extra: tuple[str, ...] = ()) -> Run:
    return trustgate("verify", "--config", str(config), *registry.trustgate_flags(config), "--output", "json",
                     *extra, *images)


def reasons(run: Run) -> str:
    return "\n".join(reason for image in run.json()["images"] for reason in image["reasons"])


def test_images_signed_with_rsa_and_ed25519_keys_are_admitted(
        sign: Any, config: Path, registry: infra.Registry, gpg: infra.GpgKeys) -> None:
    rsa_digest = sign("gpg/app-rsa", "release-rsa")
    ed_digest = sign("gpg/app-ed", "release-ed")
    run = verify(config, registry, f"{registry.host}/gpg/app-rsa:v1", f"{registry.host}/gpg/app-ed:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    images = run.json()["images"]
    assert [image["digest"] for image in images] == [rsa_digest, ed_digest]
    explanation = json.dumps(images)
    assert gpg.fingerprints["release-rsa"] in explanation and gpg.fingerprints["release-ed"] in explanation


def test_text_output_names_the_verdict_and_digest(sign: Any, config: Path, registry: infra.Registry) -> None:
    digest = sign("gpg/text", "release-rsa")
    run = trustgate("verify", "--config", str(config), *registry.trustgate_flags(config),
                    f"{registry.host}/gpg/text:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stdout.startswith(f"ADMITTED {registry.host}/gpg/text:v1 ({digest})")


def test_a_pinned_digest_is_verified_as_is(sign: Any, config: Path, registry: infra.Registry) -> None:
    digest = sign("gpg/pinned", "release-rsa")
    run = verify(config, registry, f"{registry.host}/gpg/pinned@{digest}")
    assert run.returncode == 0, run.stdout + run.stderr


def test_unsigned_image_is_denied(sign: Any, config: Path, registry: infra.Registry) -> None:
    sign("gpg/unsigned", None)
    run = verify(config, registry, f"{registry.host}/gpg/unsigned:v1")
    assert run.returncode == 1
    assert "no signatures found" in reasons(run)


def test_signature_by_an_untrusted_key_is_denied(sign: Any, config: Path, registry: infra.Registry,
                                                 gpg: infra.GpgKeys) -> None:
    sign("gpg/rogue", "rogue")
    run = verify(config, registry, f"{registry.host}/gpg/rogue:v1")
    assert run.returncode == 1
    assert f"signed by key {gpg.fingerprints['rogue']}, not in TrustStore release" in reasons(run), reasons(run)


def test_key_subset_excludes_the_other_trusted_keys(tmp_path: Path, sign: Any, registry: infra.Registry,
                                                   lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    sign("gpg/subset", "release-rsa")
    only_ed = gpg_config(tmp_path / "only-ed", registry, lookaside, gpg, keys=["release-ed"])
    assert verify(only_ed, registry, f"{registry.host}/gpg/subset:v1").returncode == 1
    only_rsa = gpg_config(tmp_path / "only-rsa", registry, lookaside, gpg, keys=["release-rsa"])
    assert verify(only_rsa, registry, f"{registry.host}/gpg/subset:v1").returncode == 0


def test_tampered_signature_is_denied(sign: Any, config: Path, registry: infra.Registry,
                                      lookaside: infra.Lookaside) -> None:
    digest = sign("gpg/tampered", "release-rsa")
    signature = lookaside.signature_dir("gpg/tampered", digest) / "signature-1"
    data = bytearray(signature.read_bytes())
    data[-10] ^= 0x01
    signature.write_bytes(bytes(data))
    run = verify(config, registry, f"{registry.host}/gpg/tampered:v1")
    assert run.returncode == 1
    assert "gpg" in reasons(run).lower()


def test_signature_filed_under_another_digest_is_denied(sign: Any, config: Path, registry: infra.Registry,
                                                        lookaside: infra.Lookaside) -> None:
    signed = sign("gpg/replay", "release-rsa", tag="old")
    unsigned = sign("gpg/replay", None, tag="new")
    target = lookaside.signature_dir("gpg/replay", unsigned)
    shutil.copytree(lookaside.signature_dir("gpg/replay", signed), target)
    run = verify(config, registry, f"{registry.host}/gpg/replay:new")
    assert run.returncode == 1
    assert "manifest digest" in reasons(run), reasons(run)


def test_image_and_signature_copied_to_another_repository_are_denied(
        tmp_path: Path, sign: Any, config: Path, registry: infra.Registry, lookaside: infra.Lookaside,
        gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/original", "release-rsa")
    infra.copy_image(registry, "gpg/original:v1", "gpg/copied:v1")
    shutil.copytree(lookaside.signature_dir("gpg/original", digest), lookaside.signature_dir("gpg/copied", digest))
    run = verify(config, registry, f"{registry.host}/gpg/copied:v1")
    assert run.returncode == 1
    assert f"{registry.host}/gpg/original:v1" in reasons(run), reasons(run)

    # An explicit identity rule is what lets a mirror be admitted under the signed name.
    remapped = gpg_config(tmp_path / "remap", registry, lookaside, gpg, signedIdentity={
        "type": "remapIdentity", "prefix": f"{registry.host}/gpg/copied",
        "signedPrefix": f"{registry.host}/gpg/original"})
    assert verify(remapped, registry, f"{registry.host}/gpg/copied:v1").returncode == 0


def test_multi_platform_index_is_verified_by_its_own_signature(sign: Any, config: Path, registry: infra.Registry,
                                                               lookaside: infra.Lookaside) -> None:
    digest = sign("gpg/multi", "release-ed", architectures=("amd64", "arm64"))
    assert lookaside.signature_dir("gpg/multi", digest).is_dir()
    run = verify(config, registry, f"{registry.host}/gpg/multi:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["images"][0]["digest"] == digest


def test_docker_manifest_list_is_verified_by_its_own_signature(sign: Any, config: Path,
                                                               registry: infra.Registry) -> None:
    digest = sign("gpg/docker-list", "release-rsa", architectures=("amd64", "arm64"), manifest_format="v2s2")
    manifest = infra.registry_get(registry, f"/v2/gpg/docker-list/manifests/{digest}",
                                  accept="application/vnd.docker.distribution.manifest.list.v2+json")
    assert manifest.headers["Content-Type"] == "application/vnd.docker.distribution.manifest.list.v2+json"
    run = verify(config, registry, f"{registry.host}/gpg/docker-list:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.json()["images"][0]["digest"] == digest


def test_a_bad_signature_does_not_hide_a_good_one(sign: Any, config: Path, registry: infra.Registry,
                                                  lookaside: infra.Lookaside) -> None:
    rogue_digest = sign("gpg/several", "rogue", tag="rogue")
    good_digest = sign("gpg/several", "release-ed", tag="good")
    signatures = lookaside.signature_dir("gpg/several", good_digest)
    # signature-1: a rogue key's signature; signature-2: the release signature.
    (signatures / "signature-1").rename(signatures / "signature-2")
    shutil.copy(lookaside.signature_dir("gpg/several", rogue_digest) / "signature-1", signatures / "signature-1")
    run = verify(config, registry, f"{registry.host}/gpg/several:good")
    assert run.returncode == 0, run.stdout + run.stderr
    explanation = json.dumps(run.json()["images"][0]["explanation"])
    assert "signature-1" in explanation and "not in TrustStore release" in explanation


def test_the_callers_gnupg_home_is_ignored(sign: Any, config: Path, registry: infra.Registry,
                                           gpg: infra.GpgKeys) -> None:
    # GNUPGHOME holds the rogue key (and its secret): trust must still come only from the TrustStore.
    sign("gpg/homedir", "rogue")
    run = trustgate("verify", "--config", str(config), *registry.trustgate_flags(config), "--output", "json",
                    f"{registry.host}/gpg/homedir:v1", env={"GNUPGHOME": str(gpg.home)})
    assert run.returncode == 1
    assert "not in TrustStore release" in reasons(run)


def test_invalid_reference_is_denied_quoting_it(config: Path, registry: infra.Registry) -> None:
    run = verify(config, registry, f"{registry.host}/gpg/UPPER:v1")
    assert run.returncode == 1
    assert f"{registry.host}/gpg/UPPER:v1" in reasons(run), reasons(run)


def test_warn_mode_admits_with_the_reasons_as_warnings(tmp_path: Path, sign: Any, registry: infra.Registry,
                                                        lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    sign("gpg/warned", None)
    store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
    policy = trust_policy("release", [f"{registry.host}/gpg/**"], [
        {"name": "release", "gpg": {"trustStore": "release", "lookaside": lookaside.url}}], mode="warn")
    config = write_config(tmp_path / "warn", store, policy)
    run = verify(config, registry, f"{registry.host}/gpg/warned:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    (image,) = run.json()["images"]
    assert image["allowed"] is True
    assert any("no signatures found" in warning for warning in image["warnings"]), image


def test_bearer_token_registry(tmp_path: Path, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    tls = infra.make_tls(tmp_path / "tls")
    tokens = infra.start_token_service(tmp_path / "tokens", tls, ("puller", "t0ken-pass"))
    secured = infra.start_registry(tmp_path / "token-registry", tls=tls, token_service=tokens)
    try:
        registries_d = lookaside.write_registries_d(tmp_path / "registries.d", secured)
        layout = infra.write_oci_layout(tmp_path / "layout", seed="token")
        infra.push(layout, secured, "gpg/token", "v1", registries_d=registries_d, gnupg_home=gpg.home,
                   sign_by=gpg.fingerprints["release-rsa"])
        issued_for_push = tokens.issued
        config = gpg_config(tmp_path / "config", secured, lookaside, gpg)
        run = verify(config, secured, f"{secured.host}/gpg/token:v1")
        assert run.returncode == 0, run.stdout + run.stderr
        assert tokens.issued > issued_for_push

        anonymous = trustgate("verify", "--config", str(config), "--registry-ca", str(tls.ca), "--output", "json",
                              f"{secured.host}/gpg/token:v1")
        assert anonymous.returncode == 1
        assert "token service" in reasons(anonymous) and "refused access" in reasons(anonymous), reasons(anonymous)
    finally:
        secured.stop()
        tokens.stop()


def test_private_ca_and_basic_auth_registry(tmp_path: Path, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    tls = infra.make_tls(tmp_path / "tls")
    secured = infra.start_registry(tmp_path / "secured", tls=tls, credentials=("deployer", "s3cret-pass"))
    try:
        registries_d = lookaside.write_registries_d(tmp_path / "registries.d", secured)
        layout = infra.write_oci_layout(tmp_path / "layout", seed="secured")
        infra.push(layout, secured, "gpg/secured", "v1", registries_d=registries_d, gnupg_home=gpg.home,
                   sign_by=gpg.fingerprints["release-rsa"])
        config = gpg_config(tmp_path / "config", secured, lookaside, gpg)
        assert verify(config, secured, f"{secured.host}/gpg/secured:v1").returncode == 0

        # Without the credentials the registry refuses, and the image is denied with that reason.
        anonymous = trustgate("verify", "--config", str(config), "--registry-ca", str(tls.ca), "--output", "json",
                              f"{secured.host}/gpg/secured:v1")
        assert anonymous.returncode == 1
        assert "requires credentials and none are configured" in reasons(anonymous), reasons(anonymous)

        # Without the private CA the TLS handshake fails: certificates are never left unchecked.
        untrusted = trustgate("verify", "--config", str(config), *secured.trustgate_flags(config)[2:],
                              "--output", "json", f"{secured.host}/gpg/secured:v1")
        assert untrusted.returncode == 1
        assert "certificate" in reasons(untrusted).lower(), reasons(untrusted)
    finally:
        secured.stop()


def test_image_matching_no_policy_is_decided_without_network(config: Path, registry: infra.Registry) -> None:
    # Nothing listens on port 1: any attempt to reach the registry would be an error, not a no-match verdict.
    run = verify(config, registry, "127.0.0.1:1/elsewhere/app:v1")
    assert run.returncode == 1
    assert "no TrustPolicy" in reasons(run) or "no policy" in reasons(run).lower(), reasons(run)
    allowed = verify(config, registry, "127.0.0.1:1/elsewhere/app:v1", extra=("--no-match", "allow"))
    assert allowed.returncode == 0, allowed.stdout + allowed.stderr


def test_configuration_error_exits_2_naming_file_and_field(tmp_path: Path, registry: infra.Registry) -> None:
    broken = write_config(tmp_path / "broken", trust_policy("app", ["registry.example.com/**"], [
        {"name": "release", "gpg": {"trustStore": "missing"}}]))
    run = trustgate("verify", "--config", str(broken), "registry.example.com/app:v1")
    assert run.returncode == 2
    assert "trust.yaml" in run.stderr and "TrustPolicy app" in run.stderr and "missing" in run.stderr, run.stderr


@pytest.fixture
def webhook_server(tmp_path: Path, config: Path, registry: infra.Registry) -> Iterator[tuple[str, Path]]:
    tls = infra.make_tls(tmp_path / "webhook-tls")
    port = infra.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(config), *registry.trustgate_flags(config),
         "--port", str(port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        infra.wait_until_listening(port, process)
        yield f"https://127.0.0.1:{port}", tls.ca
    finally:
        infra.stop(process)


def review(uid: str, *images: str) -> dict[str, Any]:
    containers = [{"name": f"c{index}", "image": image} for index, image in enumerate(images)]
    return {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {
        "uid": uid, "kind": {"group": "", "version": "v1", "kind": "Pod"},
        "resource": {"group": "", "version": "v1", "resource": "pods"}, "operation": "CREATE",
        "namespace": "default", "userInfo": {"username": "deployer"},
        "object": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "app"}, "spec": {"containers": containers}},
    }}


def test_serve_answers_admission_reviews_over_tls(sign: Any, registry: infra.Registry,
                                                  webhook_server: tuple[str, Path]) -> None:
    url, ca = webhook_server
    sign("gpg/served", "release-rsa")
    sign("gpg/served-unsigned", None)
    context = ssl.create_default_context(cafile=str(ca))
    with httpx.Client(verify=context, timeout=30) as client:
        assert client.get(f"{url}/healthz").status_code == 200
        admitted = client.post(f"{url}/validate", json=review("a-1", f"{registry.host}/gpg/served:v1")).json()
        assert admitted["response"]["uid"] == "a-1"
        assert admitted["response"]["allowed"] is True

        denied = client.post(f"{url}/validate", json=review(
            "d-1", f"{registry.host}/gpg/served:v1", f"{registry.host}/gpg/served-unsigned:v1")).json()
        assert denied["response"]["uid"] == "d-1"
        assert denied["response"]["allowed"] is False
        message = denied["response"]["status"]["message"]
        assert "gpg/served-unsigned:v1" in message and "no signatures found" in message, message

        malformed = client.post(f"{url}/validate", content=b'{"kind": "AdmissionReview"')
        assert malformed.status_code == 400


def test_signatures_served_by_the_registry_extension_api(tmp_path: Path, sign: Any, registry: infra.Registry,
                                                         lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/extension", "release-rsa")
    unsigned = sign("gpg/extension", None, tag="unsigned")
    front = infra.start_extension_registry(registry)
    try:
        signature = (lookaside.signature_dir("gpg/extension", digest) / "signature-1").read_bytes()
        front.signatures[("gpg/extension", digest)] = [signature]
        # The policy names no lookaside: the extension API is the only place signatures can come from. The
        # signature names the image under the real registry's host, so the rule maps the front's name to it.
        store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
        policy = trust_policy("release", [f"{front.host}/gpg/**"], [{"name": "release", "gpg": {
            "trustStore": "release", "signedIdentity": {
                "type": "remapIdentity", "prefix": f"{front.host}/gpg", "signedPrefix": f"{registry.host}/gpg"}}}])
        config = write_config(tmp_path / "config", store, policy)
        flags = ("--insecure-registry", front.host)
        admitted = trustgate("verify", "--config", str(config), *flags, f"{front.host}/gpg/extension:v1")
        assert admitted.returncode == 0, admitted.stdout + admitted.stderr

        front.signatures[("gpg/extension", unsigned)] = [signature]
        replayed = trustgate("verify", "--config", str(config), *flags, "--output", "json",
                             f"{front.host}/gpg/extension:unsigned")
        assert replayed.returncode == 1
        assert "manifest digest" in reasons(replayed), reasons(replayed)
    finally:
        front.stop()
