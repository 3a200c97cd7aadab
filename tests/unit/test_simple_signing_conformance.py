"""The simple-signing conformance vectors (tests/conformance/simple-signing, from containers/image).

Each check is translated into a GPG authority and verified through the real verifier and real gpg.
Checks phrased as containers/image's `VerifyDockerManifestSignature` (an expected reference compared for
equality after normalization) become `matchExact` for tagged references and `matchRepository` for bare
names, which is the same comparison; `signedBy` requirements keep their own signedIdentity.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import armor_keys, resolved, resources, trust_policy, trust_store
from webhook.artifacts import SignatureMaterial
from webhook.config import ConfigFileError
from webhook.policy.compile import compile_policy_set
from webhook.references import InvalidReferenceError
from webhook.simple_signing import ATOMIC_SIGNATURE_TYPE, parse_payload
from webhook.verifiers.gpg import GpgAuthorityVerifier

SUITE = Path(__file__).parents[1] / "conformance" / "simple-signing"
CASES = sorted(path for path in SUITE.glob("ss-*") if path.is_dir())


def _checks() -> list[Any]:
    found = []
    for case in CASES:
        document = json.loads((case / "case.json").read_text())
        for check in document["checks"]:
            found.append(pytest.param(case, document, check, id=f"{case.name}:{check['name']}"))
    return found


def _key_files(check: dict[str, Any]) -> list[str]:
    requirement = check.get("policy_requirement", {})
    if "keyPaths" in requirement:
        return list(requirement["keyPaths"])
    if "keyPath" in requirement:
        return [requirement["keyPath"]]
    if "keyData" in requirement:
        return []
    return list(check.get("trust", {}).get("keys", []))


def _identity(check: dict[str, Any], image_reference: str) -> dict[str, Any]:
    requirement = check.get("policy_requirement")
    if requirement is not None:
        return dict(requirement["signedIdentity"])
    bare = ":" not in image_reference.rsplit("/", 1)[-1] and "@" not in image_reference
    return {"type": "matchRepository" if bare else "matchExact"}


def _armored_keys(case: Path, check: dict[str, Any]) -> dict[str, str]:
    accepted = check.get("accepted_fingerprints", check.get("trust", {}).get("accepted_fingerprints"))
    keys: dict[str, str] = {}
    for key_file in _key_files(check):
        for index, armored in enumerate(armor_keys((case / key_file).read_bytes())):
            keys[f"{Path(key_file).stem}-{index}"] = armored
    if accepted is None:
        return keys
    from webhook.gpgkeys import inspect_gpg_key

    return {name: armored for name, armored in keys.items() if inspect_gpg_key(armored).fingerprint in accepted}


def _signatures(case: Path, check: dict[str, Any]) -> list[bytes]:
    if "signature_bytes" in check:
        return [value.encode() for value in check["signature_bytes"]]
    names = check.get("signatures")
    if names is None:
        names = sorted(path.name for path in case.glob("signature-*") if path.is_file())
    return [(case / name).read_bytes() for name in names]


def _manifest(case: Path) -> bytes:
    # Cases without their own manifest sign the common one (see the suite's README).
    own = case / "manifest.json"
    return (own if own.exists() else SUITE / "ss-01-valid-basic" / "manifest.json").read_bytes()


def _verdict(case: Path, check: dict[str, Any]) -> str:
    image_reference = check.get("image_reference", "testing/manifest")
    manifest = (check["manifest_override_bytes"].encode() if "manifest_override_bytes" in check
                else _manifest(case))
    keys = _armored_keys(case, check)
    if not keys:
        return "reject"  # no trusted key at all: nothing can be accepted (and the config is refused)
    try:
        image = resolved(image_reference, manifest)
    except InvalidReferenceError:
        return "reject"
    authority = {"name": "a", "gpg": {"trustStore": "s", "signedIdentity": _identity(check, image_reference)}}
    try:
        policy_set = compile_policy_set(resources(trust_store("s", keys), trust_policy("p", ["**"], [authority])))
    except ConfigFileError:
        return "reject"
    try:
        verifier = policy_set.policies[0].authorities[0].verifier
        assert isinstance(verifier, GpgAuthorityVerifier)
        results = [verifier.verify_signature(image, SignatureMaterial(f"signature-{n}", data))
                   for n, data in enumerate(_signatures(case, check), start=1)]
    finally:
        policy_set.close()
    return "accept" if any(result.passed for result in results) else "reject"


@pytest.mark.parametrize(("case", "document", "check"), _checks())
def test_conformance(case: Path, document: dict[str, Any], check: dict[str, Any]) -> None:
    if check["expected"] == "parse-ok":
        keys = _armored_keys(case, {"trust": {"keys": ["keys/public-key.gpg"]}})
        from webhook.gpgkeys import GnupgHome

        with GnupgHome(keys.values()) as home:
            plaintext = home.gpg.decrypt((case / "signature-1").read_bytes()).data
        payload = parse_payload(plaintext, ATOMIC_SIGNATURE_TYPE)
        info = check["untrusted_info"]
        assert payload.docker_reference == info["docker-reference"]
        assert payload.manifest_digest == info["docker-manifest-digest"]
        assert payload.creator == info["creator"]
        assert payload.timestamp == info["timestamp"]
        return
    assert _verdict(case, check) == check["expected"]


def test_every_case_is_exercised() -> None:
    assert len(CASES) == 16
    assert len(_checks()) >= 30


def test_subkey_signature_reports_primary_fingerprint() -> None:
    case = SUITE / "ss-05-subkey"
    keys = _armored_keys(case, {"trust": {"keys": ["keys/public-key-with-subkey.gpg"]}})
    authority = {"name": "a", "gpg": {"trustStore": "s", "signedIdentity": {"type": "matchExact"}}}
    policy_set = compile_policy_set(resources(trust_store("s", keys), trust_policy("p", ["**"], [authority])))
    try:
        image = resolved("testing/manifest:latest", (case / "manifest.json").read_bytes())
        result = policy_set.policies[0].authorities[0].verifier.verify_signature(
            image, SignatureMaterial("signature-1", (case / "signature-1").read_bytes()))
    finally:
        policy_set.close()
    assert result.passed, result.message
    assert result.signer == "B9F4CDB9FD8C475BFA340AC38D54A947EE396F36"
