"""Notation end to end: images signed by the real `notation` CLI on a real docker-registry, checked by
`trustgate verify`.

docker-registry 2.8 has no referrers API, so notation stores each signature under the referrers tag schema
(`sha256-<hex>` index) and trustgate must find it there. Keys: a `notation cert generate-test` self-signed
certificate, and an openssl root CA with a code-signing leaf that names a CRL distribution point.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization

from tests.e2e import infra
from tests.e2e.conftest import Run, reasons, verify, write_config

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
ACME_SUBJECT = "x509.subject: C=US, ST=WA, L=Seattle, O=Acme Rockets, CN=release"

_EXTENSIONS = """
[root]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[leaf]
basicConstraints = CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = codeSigning
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
crlDistributionPoints = URI:http://crl.acme.invalid/root.crl
"""


@dataclass
class NotationKeys:
    home: Path  # XDG_CONFIG_HOME of the notation CLI
    selfsigned: Path
    root: Path
    root_key: Path
    leaf: Path

    def crl(self, *, revoke_leaf: bool) -> str:
        """A current CRL of the root CA, revoking the leaf or not."""
        root = x509.load_pem_x509_certificate(self.root.read_bytes())
        key = serialization.load_pem_private_key(self.root_key.read_bytes(), None)
        now = datetime.now(UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(root.subject)
                   .last_update(now - timedelta(hours=1)).next_update(now + timedelta(days=7)))
        if revoke_leaf:
            serial = x509.load_pem_x509_certificate(self.leaf.read_bytes()).serial_number
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now - timedelta(hours=1))
                .build())
        return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM).decode()  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def notation_keys(tmp_path_factory: pytest.TempPathFactory) -> NotationKeys:
    home = tmp_path_factory.mktemp("notation")
    env = {"XDG_CONFIG_HOME": str(home)}
    infra.run("notation", "cert", "generate-test", "--default", "selfsigned", env=env)
    pki = tmp_path_factory.mktemp("pki")
    extensions = pki / "extensions.cnf"
    extensions.write_text(_EXTENSIONS)
    root_key, root, leaf_key, leaf_csr, leaf = (pki / name for name in (
        "root.key", "root.pem", "leaf.key", "leaf.csr", "leaf.pem"))
    infra.run("openssl", "req", "-x509", "-newkey", "rsa:3072", "-nodes", "-keyout", str(root_key),
              "-out", str(root), "-days", "30", "-subj", "/C=US/ST=WA/O=Acme Rockets/CN=Acme Root CA",
              "-extensions", "root", "-config", str(extensions))
    infra.run("openssl", "req", "-newkey", "rsa:3072", "-nodes", "-keyout", str(leaf_key), "-out", str(leaf_csr),
              "-subj", "/C=US/ST=WA/L=Seattle/O=Acme Rockets/CN=release", "-config", str(extensions))
    infra.run("openssl", "x509", "-req", "-in", str(leaf_csr), "-CA", str(root), "-CAkey", str(root_key),
              "-set_serial", "4242", "-days", "10", "-out", str(leaf), "-extfile", str(extensions),
              "-extensions", "leaf")
    chain = pki / "chain.pem"
    chain.write_text(leaf.read_text() + root.read_text())
    signing_keys = home / "notation" / "signingkeys.json"
    document = json.loads(signing_keys.read_text())
    document["keys"].append({"name": "acme", "keyPath": str(leaf_key), "certPath": str(chain)})
    signing_keys.write_text(json.dumps(document))
    selfsigned = home / "notation" / "localkeys" / "selfsigned.crt"
    return NotationKeys(home, selfsigned, root, root_key, leaf)


@pytest.fixture
def push_signed(tmp_path: Path, registry: infra.Registry, notation_keys: NotationKeys) -> Any:
    """Push a fresh image to `repository:v1` and sign it with notation; return its digest."""

    def push(repository: str, key: str | None, *, signature_format: str = "jws", expiry: str | None = None) -> str:
        layout = infra.write_oci_layout(tmp_path / f"layout-{repository.replace('/', '_')}", seed=repository)
        digest = infra.push(layout, registry, repository, "v1")
        if key is not None:
            infra.run("notation", "sign", "--insecure-registry", "--key", key, "--signature-format",
                      signature_format, *(["--expiry", expiry] if expiry else []),
                      f"{registry.host}/{repository}@{digest}", env={"XDG_CONFIG_HOME": str(notation_keys.home)})
        return digest

    return push


def notation_config(directory: Path, registry: infra.Registry, certificates: str, *, crls: str | None = None,
                    **authority: Any) -> Path:
    x509_entry: dict[str, Any] = {"role": "ca", "certificates": certificates}
    if crls is not None:
        x509_entry["crls"] = crls
    store = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "acme-roots"},
             "spec": {"keys": [{"name": "roots", "x509": x509_entry}]}}
    notation = {"trustStore": "acme-roots", "trustedIdentities": ["*"], **authority}
    if notation.get("verificationLevel") == "skip":
        notation = {"verificationLevel": "skip"}
    policy = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustPolicy", "metadata": {"name": "acme"},
              "spec": {"images": [f"{registry.host}/notation/**"],
                       "authorities": [{"name": "acme", "notation": notation}]}}
    return write_config(directory, store, policy)


def explanation(run: Run) -> str:
    return json.dumps(run.json()["images"])


def test_selfsigned_jws_and_chain_cose_signatures_are_admitted(
        tmp_path: Path, push_signed: Any, registry: infra.Registry, notation_keys: NotationKeys) -> None:
    selfsigned = push_signed("notation/selfsigned", "selfsigned")
    chained = push_signed("notation/chained", "acme", signature_format="cose")
    certificates = notation_keys.selfsigned.read_text() + notation_keys.root.read_text()
    config = notation_config(tmp_path / "config", registry, certificates, crls=notation_keys.crl(revoke_leaf=False))
    run = verify(config, registry, f"{registry.host}/notation/selfsigned:v1", f"{registry.host}/notation/chained:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    images = run.json()["images"]
    assert [image["digest"] for image in images] == [selfsigned, chained]
    assert "application/cose" in explanation(run) and "application/jose+json" in explanation(run)


def test_unsigned_image_is_denied(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                  notation_keys: NotationKeys) -> None:
    push_signed("notation/unsigned", None)
    config = notation_config(tmp_path / "config", registry, notation_keys.root.read_text())
    run = verify(config, registry, f"{registry.host}/notation/unsigned:v1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "no signatures found" in reasons(run)


def test_untrusted_root_is_denied(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                  notation_keys: NotationKeys) -> None:
    push_signed("notation/untrusted", "selfsigned")
    config = notation_config(tmp_path / "config", registry, notation_keys.root.read_text())
    run = verify(config, registry, f"{registry.host}/notation/untrusted:v1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "authenticity validation failed" in reasons(run)
    assert "does not lead to a trusted ca certificate" in reasons(run)


def test_identity_mismatch_is_denied_and_match_admitted(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                                        notation_keys: NotationKeys) -> None:
    push_signed("notation/identity", "acme")
    image = f"{registry.host}/notation/identity:v1"
    wrong = notation_config(tmp_path / "wrong", registry, notation_keys.root.read_text(),
                            trustedIdentities=["x509.subject: C=US, ST=WA, O=Acme Rockets, CN=nightly"])
    run = verify(wrong, registry, image)
    assert run.returncode == 1, run.stdout + run.stderr
    assert "does not match the trusted identities" in reasons(run)
    right = notation_config(tmp_path / "right", registry, notation_keys.root.read_text(),
                            trustedIdentities=[ACME_SUBJECT], crls=notation_keys.crl(revoke_leaf=False))
    assert verify(right, registry, image).returncode == 0


def test_revoked_leaf_is_denied_by_the_crl_in_the_trust_store(
        tmp_path: Path, push_signed: Any, registry: infra.Registry, notation_keys: NotationKeys) -> None:
    push_signed("notation/revocation", "acme")
    image = f"{registry.host}/notation/revocation:v1"
    root = notation_keys.root.read_text()

    revoked = verify(notation_config(tmp_path / "revoked", registry, root,
                                     crls=notation_keys.crl(revoke_leaf=True)), registry, image)
    assert revoked.returncode == 1, revoked.stdout + revoked.stderr
    assert "was revoked" in reasons(revoked)

    # The leaf names a CRL distribution point: without a CRL of its issuer, strict cannot vouch for it.
    no_crl = verify(notation_config(tmp_path / "no-crl", registry, root), registry, image)
    assert no_crl.returncode == 1
    assert "holds no CRL of its issuer" in reasons(no_crl)

    current = verify(notation_config(tmp_path / "ok", registry, root, crls=notation_keys.crl(revoke_leaf=False)),
                     registry, image)
    assert current.returncode == 0, current.stdout + current.stderr

    # permissive only logs revocation failures; the override puts it back to enforce.
    permissive = verify(notation_config(tmp_path / "permissive", registry, root,
                                        crls=notation_keys.crl(revoke_leaf=True), verificationLevel="permissive"),
                        registry, image)
    assert permissive.returncode == 0, permissive.stdout + permissive.stderr
    assert "verified_with_warnings" in explanation(permissive)
    enforced = verify(notation_config(tmp_path / "enforced", registry, root, crls=notation_keys.crl(revoke_leaf=True),
                                      verificationLevel="permissive", override={"revocation": "enforce"}),
                      registry, image)
    assert enforced.returncode == 1


def _registry_put(registry: infra.Registry, repository: str, data: bytes, *, manifest_tag: str | None = None,
                  media_type: str = OCI_MANIFEST) -> str:
    """Upload a blob (or a manifest under `manifest_tag`) as an attacker with push rights could."""
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    with httpx.Client(base_url=registry.url) as client:
        if manifest_tag is not None:
            client.put(f"/v2/{repository}/manifests/{manifest_tag}", content=data,
                       headers={"Content-Type": media_type}).raise_for_status()
            return digest
        location = client.post(f"/v2/{repository}/blobs/uploads/").raise_for_status().headers["Location"]
        separator = "&" if "?" in location else "?"
        client.put(f"{location}{separator}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    return digest


def _signature_manifest(registry: infra.Registry, repository: str, digest: str) -> dict[str, Any]:
    index = infra.registry_get(registry, f"/v2/{repository}/manifests/{digest.replace(':', '-')}").json()
    return dict(infra.registry_get(registry, f"/v2/{repository}/manifests/{index['manifests'][0]['digest']}").json())


def _plant_signature(registry: infra.Registry, repository: str, target: str, manifest: dict[str, Any]) -> None:
    data = json.dumps(manifest).encode()
    descriptor: dict[str, Any] = {"mediaType": OCI_MANIFEST, "digest": f"sha256:{hashlib.sha256(data).hexdigest()}",
                                  "size": len(data), "artifactType": "application/vnd.cncf.notary.signature"}
    _registry_put(registry, repository, data, manifest_tag=descriptor["digest"])
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [descriptor]}).encode()
    _registry_put(registry, repository, index, manifest_tag=target.replace(":", "-"), media_type=OCI_INDEX)


def test_expired_signature_is_denied(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                     notation_keys: NotationKeys) -> None:
    push_signed("notation/expiring", "selfsigned", expiry="1m")
    config = notation_config(tmp_path / "config", registry, notation_keys.selfsigned.read_text())
    image = f"{registry.host}/notation/expiring:v1"
    assert verify(config, registry, image).returncode == 0
    # The same verification two minutes later (libfaketime moves the clock of that process only).
    later = verify(config, registry, image, wrapper=(infra.tool("faketime"), "-f", "+2m"))
    assert later.returncode == 1, later.stdout + later.stderr
    assert "expired" in reasons(later), reasons(later)


def test_tampered_envelope_is_denied(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                     notation_keys: NotationKeys) -> None:
    digest = push_signed("notation/tampered", "selfsigned")
    manifest = _signature_manifest(registry, "notation/tampered", digest)
    layer = manifest["layers"][0]
    envelope = json.loads(infra.registry_get(registry, f"/v2/notation/tampered/blobs/{layer['digest']}").content)
    signature = envelope["signature"]
    envelope["signature"] = ("A" if signature[0] != "A" else "B") + signature[1:]
    data = json.dumps(envelope).encode()
    manifest["layers"] = [{**layer, "digest": _registry_put(registry, "notation/tampered", data), "size": len(data)}]
    _plant_signature(registry, "notation/tampered", digest, manifest)

    config = notation_config(tmp_path / "config", registry, notation_keys.selfsigned.read_text(),
                             verificationLevel="audit")
    run = verify(config, registry, f"{registry.host}/notation/tampered:v1")
    assert run.returncode == 1, run.stdout + run.stderr  # integrity is enforced even at audit
    assert "integrity validation failed" in reasons(run)


def test_signature_of_another_image_is_denied(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                              notation_keys: NotationKeys) -> None:
    signed = push_signed("notation/original", "selfsigned")
    victim = push_signed("notation/victim", None)
    manifest = _signature_manifest(registry, "notation/original", signed)
    layer = manifest["layers"][0]
    envelope = infra.registry_get(registry, f"/v2/notation/original/blobs/{layer['digest']}").content
    _registry_put(registry, "notation/victim", envelope)
    config_blob = infra.registry_get(registry, f"/v2/notation/original/blobs/{manifest['config']['digest']}").content
    _registry_put(registry, "notation/victim", config_blob)
    victim_manifest = infra.registry_get(registry, f"/v2/notation/victim/manifests/{victim}")
    # The copied signature now claims the victim as its subject; its signed payload still names the original.
    manifest["subject"] = {"mediaType": OCI_MANIFEST, "digest": victim, "size": len(victim_manifest.content)}
    _plant_signature(registry, "notation/victim", victim, manifest)

    config = notation_config(tmp_path / "config", registry, notation_keys.selfsigned.read_text())
    run = verify(config, registry, f"{registry.host}/notation/victim:v1")
    assert run.returncode == 1, run.stdout + run.stderr
    assert "content descriptor mismatch" in reasons(run)


@pytest.mark.parametrize(("level", "admitted", "says"), [
    ("strict", False, "authenticity validation failed"),
    ("permissive", False, "authenticity validation failed"),
    ("audit", True, "verified_with_warnings"),
    ("skip", True, "WITHOUT signature verification"),
])
def test_levels_on_an_untrusted_signature(tmp_path: Path, push_signed: Any, registry: infra.Registry,
                                          notation_keys: NotationKeys, level: str, admitted: bool, says: str) -> None:
    push_signed(f"notation/level-{level}", "selfsigned")
    config = notation_config(tmp_path / "config", registry, notation_keys.root.read_text(), verificationLevel=level)
    run = verify(config, registry, f"{registry.host}/notation/level-{level}:v1")
    assert run.returncode == (0 if admitted else 1), run.stdout + run.stderr
    assert says in explanation(run)
