"""The Notary Project conformance vectors (tests/conformance/notation), each check with the verdict it expects.

A notation trust policy statement maps onto a trustgate `notation` authority: its `trustStores` become one
TrustStore whose x509 entries carry the store type as their role, `registryScopes` decide which statement
applies (exact repository or `*`), and the rest (`signatureVerification`, `trustedIdentities`) is copied.
Signatures come from the OCI layouts exactly as the referrers source reads them from a registry.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import cbor2
import pytest
from pydantic import ValidationError

from webhook.artifacts import ResolvedImage, SignatureMaterial
from webhook.policy.models import TrustStore
from webhook.references import InvalidReferenceError, parse_reference
from webhook.results import Result
from webhook.sources.referrers import envelope_layer, signature_descriptors
from webhook.trust import compile_trust_store
from webhook.validation import ConfigError
from webhook.verifiers.notary_envelope import COSE_MEDIA_TYPE, JWS_MEDIA_TYPE
from webhook.verifiers.notation import NotationVerifier

CASES = Path(__file__).parent.parent / "conformance" / "notation"
# Checks whose "reject" is trustgate refusing the configuration (which denies every image it covers).
CONFIG_REJECTIONS = {
    ("nt-15-cose-and-jws-self-signed", "COSE envelope, trust store lacks the signer"),
    ("nt-16-rfc3161-timestamp-valid", "tsa trust store name does not exist"),
    ("nt-16-rfc3161-timestamp-valid", "tsa trust store value without ':'"),
    # notation then silently skips timestamp checks; trustgate refuses `verifyTimestamp: always` without tsa roots.
    ("nt-17-rfc3161-timestamp-expired-signer", "no tsa store: signer cert must be valid now"),
}
# Registry-scope rules of notation's single trust-policy file that trustgate expresses differently: scopes are
# TrustPolicy `images` globs, and several TrustPolicies may cover one image (all must pass), so overlapping
# scopes and repeated statement names are not errors of one document. Each is asserted below as what it is.
SCOPE_RULES_OF_ONE_DOCUMENT = {
    "overlapped_registry_scope_trustpolicy.json",
    "multi_statements_with_the_same_registry_scope_trustpolicy.json",
    "multi_statements_with_the_same_name_trustpolicy.json",
    "multi_statements_with_multi_wildcard_registry_scope_trustpolicy.json",
    "wildcard_plus_other_registry_scope_trustpolicy.json",
}


class ConfigRefused(Exception):
    pass


def _load_certificates(directory: Path) -> str:
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import Encoding

    pems: list[str] = []
    for path in sorted(directory.iterdir()):
        data = path.read_bytes()
        certificates = (x509.load_pem_x509_certificates(data) if b"-----BEGIN" in data
                        else [x509.load_der_x509_certificate(data)])
        pems.extend(certificate.public_bytes(Encoding.PEM).decode() for certificate in certificates)
    return "".join(pems)


def trust_store_for(case: Path, values: list[str], *, empty: str | None = None) -> dict[str, Any]:
    """The trustgate TrustStore standing for a statement's `trustStores` (missing store: config refused)."""
    keys = []
    for value in values:
        kind, separator, name = value.partition(":")
        directory = case / "truststore" / "x509" / kind / name
        if not separator or not name or kind not in ("ca", "signingAuthority", "tsa"):
            raise ConfigRefused(f"malformed trust store value {value!r}")
        if not directory.is_dir():
            raise ConfigRefused(f"trust store {value!r} does not exist")
        if empty == f"{kind}:{name}":
            continue
        keys.append({"name": f"{kind}-{name}", "x509": {"role": kind, "certificates": _load_certificates(directory)}})
    if not keys:
        raise ConfigRefused("the trust stores hold no certificates")
    return {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "store"},
            "spec": {"keys": keys}}


def authority_spec(statement: dict[str, Any]) -> dict[str, Any]:
    verification = statement.get("signatureVerification", {})
    spec: dict[str, Any] = {"verificationLevel": verification.get("level")}
    if verification.get("level") != "skip":
        spec["trustStore"] = "store"
        spec["trustedIdentities"] = statement.get("trustedIdentities")
    if "override" in verification:
        spec["override"] = verification["override"]
    if "verifyTimestamp" in verification:
        spec["verifyTimestamp"] = verification["verifyTimestamp"]
    return {key: value for key, value in spec.items() if value is not None}


def applicable_statement(document: dict[str, Any], repository: str) -> dict[str, Any] | None:
    statements = document["trustPolicies"]
    exact = [s for s in statements if repository in s.get("registryScopes", [])]
    wildcard = [s for s in statements if "*" in s.get("registryScopes", [])]
    chosen: dict[str, Any] | None = (exact or wildcard or [None])[0]
    return chosen


def compile_authority(case: Path, statement: dict[str, Any], *, empty_store: str | None = None) -> Any:
    spec = authority_spec(statement)
    stores = {}
    if spec.get("verificationLevel") != "skip":
        if not statement.get("trustStores") or not statement.get("trustedIdentities"):
            raise ConfigRefused("trust stores and trusted identities are both required")
        document = trust_store_for(case, statement["trustStores"], empty=empty_store)
        stores["store"] = compile_trust_store(TrustStore.model_validate(document))
    try:
        return NotationVerifier().compile("acme", spec, stores, "spec.authorities[0].notation")
    except ConfigError as exc:
        raise ConfigRefused(str(exc)) from None


@dataclass
class Layout:
    blobs: Path

    def blob(self, digest: str) -> bytes:
        data = (self.blobs / digest.removeprefix("sha256:")).read_bytes()
        assert f"sha256:{hashlib.sha256(data).hexdigest()}" == digest
        return data

    def signatures(self, image: ResolvedImage) -> Iterator[SignatureMaterial]:
        """What the referrers source collects: the tag-schema index, its signature manifests, their envelopes."""
        tag_index = json.loads(self.blob(self.tagged(image.digest.replace(":", "-"))))
        for descriptor in signature_descriptors(tag_index) or []:
            layer, why = envelope_layer(json.loads(self.blob(descriptor["digest"])), image.target)
            if layer is None:
                # A listed signature manifest that is no envelope is a failed signature, as in the pipeline.
                yield SignatureMaterial(descriptor["digest"], b"", f"unusable: {why}")
                continue
            yield SignatureMaterial(descriptor["digest"], self.blob(layer["digest"]), layer["mediaType"])

    def tagged(self, tag: str) -> str:
        index = json.loads((self.blobs.parent.parent / "index.json").read_text())
        for entry in index["manifests"]:
            if entry.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag:
                return str(entry["digest"])
        raise AssertionError(f"no {tag} in the layout")


def _media_type(name: str) -> str:
    return COSE_MEDIA_TYPE if name.endswith(".cose") else JWS_MEDIA_TYPE


def _image(case: Path, reference: str | None, signature: str | None) -> ResolvedImage:
    if reference is None:
        reference = "registry.acme-rockets.io/software/net-monitor@" + _descriptor(case, signature)["digest"]
    ref = parse_reference(reference)
    assert ref.digest is not None
    for candidate in (case / "oci-layout" / "blobs" / "sha256", case / "other-image", case):
        manifest = next((p.read_bytes() for p in candidate.glob("*")
                         if p.is_file() and f"sha256:{hashlib.sha256(p.read_bytes()).hexdigest()}" == ref.digest),
                        None)
        if manifest is not None:
            media_type = json.loads(manifest).get("mediaType", "application/vnd.oci.image.manifest.v1+json")
            return ResolvedImage(ref, ref.digest, manifest, media_type)
    # Upstream publishes only the descriptor of these artifacts; the verifier compares media type, digest and
    # size, so placeholder bytes of the signed size stand in for the manifest.
    descriptor = _descriptor(case, signature)
    assert descriptor["digest"] == ref.digest
    return ResolvedImage(ref, ref.digest, b"\0" * descriptor["size"], descriptor["mediaType"])


def _descriptor(case: Path, signature: str | None) -> dict[str, Any]:
    signed = json.loads((case / "case.json").read_text()).get("signed") or {}
    if "targetArtifact" in signed:
        return dict(signed["targetArtifact"])
    # The descriptor the signature claims (read without verifying it: the verifier under test does that).
    assert signature is not None
    if signature.endswith(".cose"):
        payload = cbor2.loads((case / signature).read_bytes()).value[2]
    else:
        encoded = json.loads((case / signature).read_text())["payload"]
        payload = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    return dict(json.loads(payload)["targetArtifact"])


def verdict(results: list[Result]) -> str:
    passing = [result for result in results if result.passed]
    if not passing:
        return "reject"
    return "accept-with-warning" if all(r.code == "notation.verified_with_warnings" for r in passing) else "accept"


def run_check(case: Path, check: dict[str, Any], policy: dict[str, Any], reference: str | None,
              signature: str | None, token: str | None = None, *,
              artifacts: Path | None = None) -> tuple[str, list[Result]]:
    """Verify as `check` says: trust material from `case`, image and signatures from `artifacts` (or `case`)."""
    artifacts = artifacts or case
    layout = artifacts / "oci-layout"
    if signature is None and not layout.is_dir():
        signature = "signature.jws"
    try:
        if reference is not None:
            parsed = parse_reference(reference)
            if parsed.digest is None:
                return "reject", []
            if applicable_statement(policy, parsed.repository) is None:
                return "reject", []  # no applicable trust policy statement
    except InvalidReferenceError:
        return "reject", []
    image = _image(artifacts, reference, signature)
    statement = applicable_statement(policy, image.reference.repository)
    assert statement is not None
    try:
        override = check.get("trust_store_override", "")
        authority = compile_authority(case, statement, empty_store=override.removeprefix("empty ") or None)
    except (ConfigRefused, ValidationError) as exc:
        return "config-error", [Result.fail("config", "config", str(exc))]
    if authority.skipped:
        return verdict([authority.verify_signature(image, SignatureMaterial("skip", b""))]), []
    if signature is not None:
        data = (case / signature).read_bytes()
        if token is not None:
            document = json.loads(data)
            document["header"]["io.cncf.notary.timestampSignature"] = base64.b64encode(
                (case / token).read_bytes()).decode()
            data = json.dumps(document).encode()
        materials = [SignatureMaterial(signature, data, _media_type(signature))]
    else:
        materials = list(Layout(layout / "blobs" / "sha256").signatures(image))
    results = [authority.verify_signature(image, material) for material in materials]
    return verdict(results), results


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def expanded_checks() -> Iterator[Any]:
    for case in sorted(p for p in CASES.iterdir() if (p / "case.json").is_file()):
        if case.name == "nt-19-trustpolicy-validation":
            continue
        for check in json.loads((case / "case.json").read_text())["checks"]:
            policies = [json.dumps(check["trust_policy_inline"])] if "trust_policy_inline" in check \
                else _as_list(check["trust_policy"])
            for policy in policies:
                for reference in _as_list(check.get("image_reference")):
                    for signature in _as_list(check.get("signature")):
                        for token in _as_list(check.get("tokens")):
                            yield pytest.param(case, check, policy, reference, signature, token,
                                               id=f"{case.name}:{check['name']}:{policy}:{signature}:{token}"[:180])


@pytest.mark.parametrize(("case", "check", "policy_file", "reference", "signature", "token"), list(expanded_checks()))
def test_vector(case: Path, check: dict[str, Any], policy_file: str, reference: str | None, signature: str | None,
                token: str | None) -> None:
    policy = json.loads(policy_file) if policy_file.startswith("{") else json.loads((case / policy_file).read_text())
    outcome, results = run_check(case, check, policy, reference, signature, token)
    expected = check["expected"]
    explanation = [line for result in results for line in result.explain()]
    if expected == "authentic-timestamp-pass":
        steps = [child for result in results for child in result.children if child.subject == "authenticTimestamp"]
        assert steps and all(step.passed for step in steps), explanation
        return
    if (case.name, check["name"]) in CONFIG_REJECTIONS:
        assert outcome == "config-error", explanation
        return
    assert outcome == expected, explanation


# --- nt-19: trust-policy validation --------------------------------------------------------------------

VALIDATION = CASES / "nt-19-trustpolicy-validation"


def _validation_checks() -> list[Any]:
    checks = json.loads((VALIDATION / "case.json").read_text())["checks"]
    return [pytest.param(check, id=check["name"]) for check in checks]


def _trustgate_policy(document: dict[str, Any]) -> list[Any]:
    """The document as trustgate TrustPolicies: one per statement, its scopes as `images` globs."""
    from webhook.policy.models import TrustPolicy

    policies = []
    for statement in document["trustPolicies"]:
        images = ["**" if scope == "*" else scope for scope in statement.get("registryScopes", [])]
        policies.append(TrustPolicy.model_validate({
            "apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": "p"},
            "spec": {"images": images, "authorities": [{"name": statement["name"],
                                                        "notation": authority_spec(statement)}]},
        }))
        compile_authority(VALIDATION, statement)
    return policies


@pytest.mark.parametrize("check", _validation_checks())
def test_trust_policy_validation(check: dict[str, Any]) -> None:
    path = VALIDATION / check["trust_policy"]
    try:
        document = json.loads(path.read_text())
        policies = _trustgate_policy(document)
        refused = None
    except (json.JSONDecodeError, ValidationError, ConfigRefused) as exc:
        refused = str(exc)
    if path.name in SCOPE_RULES_OF_ONE_DOCUMENT:
        # Valid as trustgate TrustPolicies (see SCOPE_RULES_OF_ONE_DOCUMENT); notation refuses the one file.
        assert refused is None and check["expected"] == "reject"
        return
    if check["expected"] == "reject":
        assert refused is not None, f"{path.name} was accepted"
        return
    assert refused is None, refused
    assert policies
    reference = check["image_reference"]
    # nt-19 pairs its policies with the nt-01 artifact and signature.
    outcome, results = run_check(VALIDATION, check, document, reference, None, artifacts=CASES / "nt-01-jws-valid")
    assert outcome == "accept", [line for result in results for line in result.explain()]


def test_identity_errors_use_notation_wording() -> None:
    document = json.loads((VALIDATION / "trustpolicy" / "missing_state_trusted_identity_trustpolicy.json").read_text())
    with pytest.raises(ValidationError, match=r"no mandatory RDN attribute for .ST."):
        _trustgate_policy(document)


def test_now_is_within_the_vectors_validity() -> None:
    # The README promises the accept verdicts until 2033-05-10; these tests use the real clock.
    assert datetime.now(UTC) < datetime(2033, 5, 10, tzinfo=UTC)
