"""The attack corpus, end to end: each attack is denied with its reason.

Attacks already covered elsewhere are listed in docs/reliability.md with the test that covers them (replayed
and copied signatures, moved tags, quorum padding, revoked keys, ephemeral containers, slow registries); this
file holds the rest. Signed payloads are made by the real gpg, images pushed by the real skopeo.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e import hostile, infra
from tests.e2e.conftest import admission_review, gpg_config, reasons, running_webhook, verify, write_config
from tests.e2e.hostile import HostileRegistry
from tests.helpers import trust_policy, trust_store

FAKED_PAST = "20200101T120000!"  # gpg's clock for a key that expired long ago


def denied(run: Any) -> str:
    assert run.returncode == 1, run.stdout + run.stderr
    return str(reasons(run))


def gpg_sign(home: Path, signer: str, payload: bytes, *extra: str) -> bytes:
    """An OpenPGP signed message over `payload`, as skopeo writes them (`gpg --sign`)."""
    directory = home.parent / f"signed-{os.urandom(4).hex()}"
    directory.mkdir()
    (directory / "payload").write_bytes(payload)
    infra.run("gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "", *extra,
              "--local-user", signer, "--output", str(directory / "signature"), "--sign", str(directory / "payload"))
    return (directory / "signature").read_bytes()


def payload(reference: str, digest: str, **critical: Any) -> dict[str, Any]:
    return {"critical": {"identity": {"docker-reference": reference}, "image": {"docker-manifest-digest": digest},
                         "type": "atomic container signature", **critical}, "optional": {}}


def plant(lookaside: infra.Lookaside, repository: str, digest: str, *signatures: bytes) -> None:
    directory = lookaside.signature_dir(repository, digest)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for index, signature in enumerate(signatures, start=1):
        (directory / f"signature-{index}").write_bytes(signature)


# --- names --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("repository", ["attacker/gpg/app", "gpgx/app", "gpg"])
def test_policy_globs_are_anchored(repository: str, sign: Any, config: Path, registry: infra.Registry) -> None:
    """`<registry>/gpg/**` covers neither `<registry>/attacker/gpg/...` nor `<registry>/gpgx/...`."""
    sign(repository, "rogue")
    found = denied(verify(config, registry, f"{registry.host}/{repository}:v1"))
    assert f"no TrustPolicy matches repository {registry.host}/{repository}" in found, found


# --- payloads -----------------------------------------------------------------------------------------------


def test_unknown_critical_field_is_refused(sign: Any, config: Path, registry: infra.Registry,
                                           lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/critical", None)
    reference = f"{registry.host}/gpg/critical:v1"
    document = payload(reference, digest, **{"x-run-as-root": True})
    plant(lookaside, "gpg/critical", digest,
          gpg_sign(gpg.home, gpg.fingerprints["release-rsa"], json.dumps(document).encode()))
    assert "x-run-as-root" in denied(verify(config, registry, reference))


def test_duplicate_json_keys_in_the_payload_are_refused(sign: Any, config: Path, registry: infra.Registry,
                                                        lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    """Two digests under one key: a parser keeping the last one would read the attacker's."""
    digest = sign("gpg/duplicate", None)
    reference = f"{registry.host}/gpg/duplicate:v1"
    honest = json.dumps(payload(reference, digest))
    other = "sha256:" + "0" * 64
    forged = honest.replace('"docker-manifest-digest": ', f'"docker-manifest-digest": "{other}", '
                                                          '"docker-manifest-digest": ')
    plant(lookaside, "gpg/duplicate", digest, gpg_sign(gpg.home, gpg.fingerprints["release-rsa"], forged.encode()))
    assert "duplicate JSON key" in denied(verify(config, registry, reference))


def test_a_correct_payload_signed_the_same_way_is_admitted(sign: Any, config: Path, registry: infra.Registry,
                                                           lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    """The control for the two tests above: their signing path is sound, only the payload is at fault."""
    digest = sign("gpg/control", None)
    reference = f"{registry.host}/gpg/control:v1"
    plant(lookaside, "gpg/control", digest,
          gpg_sign(gpg.home, gpg.fingerprints["release-rsa"], json.dumps(payload(reference, digest)).encode()))
    run = verify(config, registry, reference)
    assert run.returncode == 0, run.stdout + run.stderr


# --- keys ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def old_keys(tmp_path_factory: pytest.TempPathFactory) -> Iterator[infra.GpgKeys]:
    """A key created in 2020 that expired a day later, and a rogue primary with a signing subkey."""
    home = tmp_path_factory.mktemp("old-gnupg")
    home.chmod(0o700)
    with infra.gpg_keys(home) as keys:
        infra.run("gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                  "--faked-system-time", "20200101T000000!", "--quick-gen-key", "expired <expired@trustgate.test>",
                  "rsa3072", "sign", "1d")
        keys.generate("rogue-primary", "rsa3072")
        infra.run("gpg", "--homedir", str(home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                  "--quick-add-key", keys.fingerprints["rogue-primary"], "rsa3072", "sign", "1d")
        listing = infra.run("gpg", "--homedir", str(home), "--batch", "--with-colons", "--list-keys")
        fingerprints = [line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:")]
        keys.fingerprints["expired"] = next(fpr for fpr in fingerprints if fpr not in keys.fingerprints.values())
        keys.fingerprints["rogue-subkey"] = fingerprints[-1]
        yield keys


def test_signature_by_an_expired_key_is_refused(tmp_path: Path, sign: Any, registry: infra.Registry,
                                                lookaside: infra.Lookaside, old_keys: infra.GpgKeys) -> None:
    digest = sign("gpg/expired", None)
    reference = f"{registry.host}/gpg/expired:v1"
    signature = gpg_sign(old_keys.home, old_keys.fingerprints["expired"],
                         json.dumps(payload(reference, digest)).encode(), "--faked-system-time", FAKED_PAST)
    plant(lookaside, "gpg/expired", digest, signature)
    store = trust_store("old", {"expired": old_keys.armored("expired")})
    policy = trust_policy("old", [f"{registry.host}/gpg/**"], [
        {"name": "old", "gpg": {"trustStore": "old", "lookaside": lookaside.url}}])
    found = denied(verify(write_config(tmp_path / "config", store, policy), registry, reference))
    assert "expired" in found.lower(), found


def test_signature_by_a_subkey_of_an_untrusted_primary_is_refused(
        sign: Any, config: Path, registry: infra.Registry, lookaside: infra.Lookaside,
        old_keys: infra.GpgKeys, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/subkey", None)
    reference = f"{registry.host}/gpg/subkey:v1"
    signature = gpg_sign(old_keys.home, old_keys.fingerprints["rogue-subkey"] + "!",
                         json.dumps(payload(reference, digest)).encode())
    plant(lookaside, "gpg/subkey", digest, signature)
    subkey = old_keys.fingerprints["rogue-subkey"]
    assert subkey != old_keys.fingerprints["rogue-primary"]
    found = denied(verify(config, registry, reference))
    assert f"signed by key {subkey}, not in TrustStore release" in found, found


# --- manifests ----------------------------------------------------------------------------------------------


def test_index_with_a_swapped_child_does_not_keep_the_signature(
        sign: Any, config: Path, registry: infra.Registry, lookaside: infra.Lookaside) -> None:
    signed = sign("gpg/multi", "release-rsa", architectures=("amd64", "arm64"), seed="multi")
    swapped = sign("gpg/multi", None, architectures=("amd64", "s390x"), seed="multi")
    assert swapped != signed
    # The attacker moves the tag to an index with one child replaced and files the old signature under it.
    shutil.copytree(lookaside.signature_dir("gpg/multi", signed), lookaside.signature_dir("gpg/multi", swapped))
    found = denied(verify(config, registry, f"{registry.host}/gpg/multi:v1"))
    assert "manifest digest" in found, found


# --- signature servers --------------------------------------------------------------------------------------


@pytest.fixture
def sigserver() -> Iterator[HostileRegistry]:
    server = hostile.start()
    yield server
    server.stop()


def hostile_lookaside_config(directory: Path, registry: infra.Registry, gpg: infra.GpgKeys,
                             server: HostileRegistry) -> Path:
    store = trust_store("release", {"release-rsa": gpg.armored("release-rsa")})
    policy = trust_policy("release", [f"{registry.host}/gpg/**"], [
        {"name": "release", "gpg": {"trustStore": "release", "lookaside": f"http://{server.host}"}}])
    return write_config(directory, store, policy)


def test_endless_signature_list_is_cut_at_the_cap(tmp_path: Path, sign: Any, registry: infra.Registry,
                                                  gpg: infra.GpgKeys, sigserver: HostileRegistry) -> None:
    sign("gpg/endless", "release-rsa")
    sigserver.fallback = hostile.document(b"not a signature", "application/octet-stream")
    config = hostile_lookaside_config(tmp_path / "config", registry, gpg, sigserver)
    image = f"{registry.host}/gpg/endless:v1"
    found = denied(verify(config, registry, image))
    assert "holds more than 16 signatures; only the first 16 were examined" in found, found
    assert len(sigserver.seen) == 16
    capped = denied(verify(config, registry, image, extra=("--max-signatures-per-source", "3")))
    assert "only the first 3 were examined" in capped, capped
    assert len(sigserver.seen) == 16 + 3


def test_oversized_signature_is_refused(tmp_path: Path, sign: Any, registry: infra.Registry,
                                        gpg: infra.GpgKeys, sigserver: HostileRegistry) -> None:
    sign("gpg/oversized", "release-rsa")
    sigserver.fallback = hostile.document(b"\x00" * (64 * 1024 + 1), "application/octet-stream")
    config = hostile_lookaside_config(tmp_path / "config", registry, gpg, sigserver)
    found = denied(verify(config, registry, f"{registry.host}/gpg/oversized:v1"))
    assert "more than the 65536-byte limit" in found, found


# --- what a pod claims about itself -------------------------------------------------------------------------


def test_forged_verdicts_owner_references_and_init_containers_are_no_evidence(
        tmp_path: Path, sign: Any, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    signed_digest = sign("gpg/claimed", "release-rsa")
    sign("gpg/unsigned-init", None)
    config = gpg_config(tmp_path / "config", registry, lookaside, gpg)
    unsigned = f"{registry.host}/gpg/unsigned-init:v1"
    with running_webhook(tmp_path, config, registry) as client:
        claims = admission_review("claims", unsigned)
        claims["request"]["object"]["metadata"].update(
            annotations={"trustgate.dev/verified": "true", "trustgate.dev/digest": signed_digest,
                         "trustgate.dev/verdict": "admitted"},
            ownerReferences=[{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "verified-rs",
                              "uid": "00000000-0000-0000-0000-000000000000", "controller": True}])
        answer = client.post("/validate", json=claims).json()["response"]
        assert answer["allowed"] is False and "spec.containers[0].image" in answer["status"]["message"], answer

        init = admission_review("init", unsigned, field="initContainers")
        init["request"]["object"]["spec"]["containers"][0]["image"] = f"{registry.host}/gpg/claimed:v1"
        answer = client.post("/validate", json=init).json()["response"]
        assert answer["allowed"] is False and "spec.initContainers[0].image" in answer["status"]["message"], answer
