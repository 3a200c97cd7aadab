"""Policy semantics and admission coverage end to end, with images signed by the real skopeo and gpg:
digest pinning through /mutate, tags moved after admission, workloads, ephemeral containers, image volumes,
quorum, revocation and denied digests."""

from __future__ import annotations

import base64
import json
import shutil
from pathlib import Path
from typing import Any

import httpx

from tests.e2e import infra
from tests.e2e.conftest import admission_review, gpg_config, reasons, running_webhook, trustgate, verify


def patch_of(answer: dict[str, Any]) -> list[dict[str, str]]:
    response = answer["response"]
    assert response["allowed"] is True, response
    assert response["patchType"] == "JSONPatch"
    patch: list[dict[str, str]] = json.loads(base64.b64decode(response["patch"]))
    return patch


def post(client: httpx.Client, path: str, review: dict[str, Any]) -> dict[str, Any]:
    answer = client.post(path, json=review)
    assert answer.status_code == 200, answer.text
    result: dict[str, Any] = answer.json()
    return result


def test_mutate_pins_the_verified_digest_and_a_moved_tag_cannot_swap_the_image(
        tmp_path: Path, sign: Any, config: Path, registry: infra.Registry) -> None:
    image = f"{registry.host}/gpg/pinned:v1"
    signed = sign("gpg/pinned", "release-rsa")
    # Tags are re-resolved on every request here, to show what an unpinned reference runs into.
    with running_webhook(tmp_path, config, registry, "--tag-cache-seconds", "0") as client:
        patch = patch_of(post(client, "/mutate", admission_review("m-1", image)))
        assert patch == [{"op": "replace", "path": "/spec/containers/0/image", "value": f"{image}@{signed}"}]

        # The tag now moves to an unsigned image, after admission and before the kubelet pulls.
        moved = sign("gpg/pinned", None, seed="attacker's replacement")
        assert moved != signed
        pinned = post(client, "/validate", admission_review("v-1", f"{image}@{signed}"))
        assert pinned["response"]["allowed"] is True  # the kubelet runs exactly the verified bytes
        unpinned = post(client, "/validate", admission_review("v-2", image))
        assert unpinned["response"]["allowed"] is False
        assert "no signatures found" in unpinned["response"]["status"]["message"]


def test_require_digest_denies_tags_at_validate_but_mutate_pins_them(
        tmp_path: Path, sign: Any, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/strict", "release-ed")
    image = f"{registry.host}/gpg/strict:v1"
    config = gpg_config(tmp_path / "strict", registry, lookaside, gpg, spec={"requireDigest": True})
    with running_webhook(tmp_path, config, registry) as client:
        denied = post(client, "/validate", admission_review("v-1", image))
        assert denied["response"]["allowed"] is False
        assert "requires a digest-pinned reference" in denied["response"]["status"]["message"]
        (operation,) = patch_of(post(client, "/mutate", admission_review("m-1", image)))
        assert operation["value"] == f"{image}@{digest}"
        assert post(client, "/validate", admission_review("v-2", operation["value"]))["response"]["allowed"]


def test_mutate_digest_false_leaves_specs_untouched(
        tmp_path: Path, sign: Any, registry: infra.Registry, lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    sign("gpg/gitops", "release-rsa")
    config = gpg_config(tmp_path / "gitops", registry, lookaside, gpg, spec={"mutateDigest": False})
    with running_webhook(tmp_path, config, registry) as client:
        answer = post(client, "/mutate", admission_review("m-1", f"{registry.host}/gpg/gitops:v1"))
        assert answer["response"]["allowed"] is True and "patch" not in answer["response"]


def test_workloads_and_ephemeral_containers_are_checked(
        tmp_path: Path, sign: Any, config: Path, registry: infra.Registry) -> None:
    sign("gpg/workload", "release-rsa")
    sign("gpg/debug", None)
    signed, unsigned = f"{registry.host}/gpg/workload:v1", f"{registry.host}/gpg/debug:v1"
    with running_webhook(tmp_path, config, registry) as client:
        for kind, group in (("Deployment", "apps"), ("CronJob", "batch"), ("StatefulSet", "apps")):
            assert post(client, "/validate", admission_review("w", signed, kind=kind, group=group))["response"][
                "allowed"] is True
            denied = post(client, "/validate", admission_review("w", unsigned, kind=kind, group=group))["response"]
            assert denied["allowed"] is False and "template" in denied["status"]["message"], denied
        # kubectl debug on a running pod: the Pod arrives again on the ephemeralcontainers subresource.
        running = admission_review("e", signed)["request"]["object"]
        debugged = admission_review("e", signed, unsigned, field="ephemeralContainers")
        debugged["request"].update(operation="UPDATE", subResource="ephemeralcontainers", oldObject=running)
        answer = post(client, "/validate", debugged)["response"]
        assert answer["allowed"] is False
        assert "spec.ephemeralContainers" in answer["status"]["message"], answer


# Where each kind keeps its pod spec: (field path, JSONPatch pointer).
POD_SPEC_AT = {"Pod": ("spec.", "/spec"), "Deployment": ("spec.template.spec.", "/spec/template/spec"),
               "CronJob": ("spec.jobTemplate.spec.template.spec.", "/spec/jobTemplate/spec/template/spec")}


def test_image_volumes_are_verified_and_pinned_in_pods_and_workloads(
        tmp_path: Path, sign: Any, config: Path, registry: infra.Registry) -> None:
    """A pod whose containers are all signed, mounting an image as a volume: the kubelet pulls that image too."""
    app_digest = sign("gpg/volume-app", "release-rsa")
    data_digest = sign("gpg/volume-data", "release-ed")
    sign("gpg/volume-payload", None)
    app, data = f"{registry.host}/gpg/volume-app:v1", f"{registry.host}/gpg/volume-data:v1"
    unsigned = f"{registry.host}/gpg/volume-payload:v1"
    with running_webhook(tmp_path, config, registry) as client:
        for kind, group in (("Pod", ""), ("Deployment", "apps"), ("CronJob", "batch")):
            field_path, pointer = POD_SPEC_AT[kind]
            signed_review = admission_review("s", app, kind=kind, group=group, volumes=[data])
            assert post(client, "/validate", signed_review)["response"]["allowed"] is True, kind
            assert patch_of(post(client, "/mutate", signed_review)) == [
                {"op": "replace", "path": f"{pointer}/containers/0/image", "value": f"{app}@{app_digest}"},
                {"op": "replace", "path": f"{pointer}/volumes/1/image/reference", "value": f"{data}@{data_digest}"}]

            unsigned_review = admission_review("u", app, kind=kind, group=group, volumes=[unsigned])
            for webhook in ("/validate", "/mutate"):
                denied = post(client, webhook, unsigned_review)["response"]
                assert denied["allowed"] is False and "patch" not in denied, (kind, webhook, denied)
                assert f"image {unsigned} ({field_path}volumes[1].image.reference) denied" in denied["status"][
                    "message"], (kind, webhook, denied)
                assert "no signatures found" in denied["status"]["message"]


def test_min_signatures_needs_distinct_keys(tmp_path: Path, sign: Any, registry: infra.Registry,
                                            lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/quorum", "release-rsa")
    signatures = lookaside.signature_dir("gpg/quorum", digest)
    by_rsa = (signatures / "signature-1").read_bytes()
    two_keys = gpg_config(tmp_path / "quorum", registry, lookaside, gpg, rules={"minSignatures": 2})
    image = f"{registry.host}/gpg/quorum:v1"

    # The same signature stored twice counts once.
    (signatures / "signature-2").write_bytes(by_rsa)
    run = verify(two_keys, registry, image)
    assert run.returncode == 1 and "1 distinct signers; 2 required" in json.dumps(run.json()), run.stdout

    # A second key's signature completes the quorum.
    shutil.rmtree(signatures)
    sign("gpg/quorum", "release-ed")
    (signatures / "signature-2").write_bytes((signatures / "signature-1").read_bytes())
    (signatures / "signature-1").write_bytes(by_rsa)
    run = verify(two_keys, registry, image)
    assert run.returncode == 0, run.stdout


def test_revoked_key_is_refused_at_once(tmp_path: Path, sign: Any, registry: infra.Registry,
                                        lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    sign("gpg/revoked", "release-rsa")
    fingerprint = gpg.fingerprints["release-rsa"]
    image = f"{registry.host}/gpg/revoked:v1"
    for revoked in (fingerprint, fingerprint[-16:]):
        config = gpg_config(tmp_path / f"revoked-{len(revoked)}", registry, lookaside, gpg, revoked=(revoked,))
        run = verify(config, registry, image)
        assert run.returncode == 1 and "revokedKeys" in reasons(run), run.stdout


def test_denied_digest_is_never_admitted(tmp_path: Path, sign: Any, registry: infra.Registry,
                                         lookaside: infra.Lookaside, gpg: infra.GpgKeys) -> None:
    digest = sign("gpg/vulnerable", "release-rsa")
    config = gpg_config(tmp_path / "denied", registry, lookaside, gpg, spec={"deniedDigests": [digest]})
    run = verify(config, registry, f"{registry.host}/gpg/vulnerable:v1")
    assert run.returncode == 1 and "deniedDigests" in reasons(run), run.stdout


def test_explain_shows_every_signature_considered(sign: Any, config: Path, registry: infra.Registry,
                                                  lookaside: infra.Lookaside) -> None:
    rogue = sign("gpg/explained", "rogue", tag="rogue")
    digest = sign("gpg/explained", "release-rsa")
    signatures = lookaside.signature_dir("gpg/explained", digest)
    shutil.copy(lookaside.signature_dir("gpg/explained", rogue) / "signature-1", signatures / "signature-2")
    run = trustgate("explain", "--config", str(config), *registry.trustgate_flags(config),
                    f"{registry.host}/gpg/explained:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"ADMITTED {registry.host}/gpg/explained:v1 ({digest})"
    assert any("[pass] lookaside signature-1" in line for line in lines), run.stdout
    assert any("[FAIL] lookaside signature-2" in line and "not in TrustStore release" in line for line in lines)
