"""cosign end to end: images signed by the real cosign CLI in a real registry, verified by `trustgate verify|serve`.

cosign signs offline (`--tlog-upload=false`) with ECDSA P-256 (`cosign generate-key-pair`), Ed25519
(`cosign import-key-pair`), RSA and ECDSA P-384 keys (written in cosign's encrypted key format, because this
cosign's import-key-pair refuses them), and with a key whose certificate chains to a private CA. Forged
signatures are made the way an attacker with push rights would: by rewriting the `.sig` manifest.

cosign 3 (`cosign3`) signs the same keys into sigstore bundles kept as OCI referrers: on docker-registry 2.8
under the referrers tag schema, and read back also through a front that offers only the referrers API.
"""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import nacl.secret
import nacl.utils
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from tests.e2e import infra
from tests.e2e.conftest import Run, admission_review, reasons, running_webhook, verify, write_config
from tests.helpers import key_store, trust_policy
from tests.tsa import timestamp_authority
from webhook.verifiers.cosign_bundle import pae

PASSWORD = "cosign-test-password"
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"


# --- keys and certificates --------------------------------------------------------------------------------


def write_cosign_key(private_key: Any, path: Path) -> None:
    """cosign's encrypted private key format: scrypt-derived nacl/secretbox over the PKCS#8 DER."""
    der = private_key.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
    salt = nacl.utils.random(32)
    secret = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=32768, r=8, p=1, dklen=32, maxmem=64 * 1024 * 1024)
    nonce = nacl.utils.random(nacl.secret.SecretBox.NONCE_SIZE)
    document = {
        "kdf": {"name": "scrypt", "params": {"N": 32768, "r": 8, "p": 1}, "salt": base64.b64encode(salt).decode()},
        "cipher": {"name": "nacl/secretbox", "nonce": base64.b64encode(nonce).decode()},
        "ciphertext": base64.b64encode(nacl.secret.SecretBox(secret).encrypt(der, nonce).ciphertext).decode(),
    }
    body = base64.encodebytes(json.dumps(document).encode()).decode()
    path.write_text(f"-----BEGIN ENCRYPTED SIGSTORE PRIVATE KEY-----\n{body}"
                    "-----END ENCRYPTED SIGSTORE PRIVATE KEY-----\n")


def public_pem(private_key: Any) -> str:
    text: str = private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                      serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    return text


def _certificate(subject: str, public_key: Any, issuer_name: x509.Name | None, issuer_key: Any, *, ca: bool,
                 email: str | None = None) -> tuple[x509.Name, x509.Certificate]:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    issuer_name = issuer_name or name
    now = datetime.now(UTC)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name).public_key(public_key)
               .serial_number(x509.random_serial_number())
               .not_valid_before(now - timedelta(days=1)).not_valid_after(now + timedelta(days=30))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
               .add_extension(x509.KeyUsage(digital_signature=not ca, content_commitment=False,
                                            key_encipherment=False, data_encipherment=False, key_agreement=False,
                                            key_cert_sign=ca, crl_sign=ca, encipher_only=False,
                                            decipher_only=False), critical=True))
    if email is not None:
        builder = (builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
                   .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False))
    return name, builder.sign(issuer_key, hashes.SHA256())


@dataclass
class CosignKeys:
    directory: Path
    public: dict[str, str]
    ca_pem: str = ""

    def key(self, name: str) -> str:
        return str(self.directory / f"{name}.key")


def _pem(certificate: x509.Certificate) -> str:
    return certificate.public_bytes(serialization.Encoding.PEM).decode()


@pytest.fixture(scope="session")
def cosign_keys(tmp_path_factory: pytest.TempPathFactory) -> CosignKeys:
    """Trusted keys of four types, an attacker's key, and a signing key certified by a private CA."""
    directory = tmp_path_factory.mktemp("cosign-keys")
    env = {"COSIGN_PASSWORD": PASSWORD}
    public: dict[str, str] = {}
    for name in ("p256", "attacker"):
        infra.run("cosign", "generate-key-pair", "--output-key-prefix", str(directory / name), env=env)
        public[name] = (directory / f"{name}.pub").read_text()
    ed_key = ed25519.Ed25519PrivateKey.generate()
    (directory / "ed25519.pem").write_bytes(ed_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    infra.run("cosign", "import-key-pair", "--key", str(directory / "ed25519.pem"),
              "--output-key-prefix", str(directory / "ed25519"), env=env)
    public["ed25519"] = (directory / "ed25519.pub").read_text()
    for name, private_key in (("rsa", rsa.generate_private_key(65537, 3072)),
                              ("p384", ec.generate_private_key(ec.SECP384R1())),
                              ("certified", ec.generate_private_key(ec.SECP256R1()))):
        write_cosign_key(private_key, directory / f"{name}.key")
        public[name] = public_pem(private_key)
        if name == "certified":
            root_key = ec.generate_private_key(ec.SECP256R1())
            intermediate_key = ec.generate_private_key(ec.SECP256R1())
            root_name, root = _certificate("trustgate test root", root_key.public_key(), None, root_key, ca=True)
            intermediate_name, intermediate = _certificate("trustgate test signing CA",
                                                           intermediate_key.public_key(), root_name, root_key,
                                                           ca=True)
            _, leaf = _certificate("release", private_key.public_key(), intermediate_name, intermediate_key,
                                   ca=False, email="release@example.com")
            (directory / "certified.crt").write_text(_pem(leaf))
            (directory / "certified-chain.crt").write_text(_pem(intermediate) + _pem(root))
            ca_pem = _pem(root)
    return CosignKeys(directory, public, ca_pem)


# --- signing and tampering ---------------------------------------------------------------------------------


@pytest.fixture
def image(tmp_path: Path, registry: infra.Registry) -> Any:
    """Push a fresh image to `repository:tag` (an index over `architectures` if given); return its digest."""

    def push(repository: str, *, tag: str = "v1", architectures: tuple[str, ...] = ()) -> str:
        layout = infra.write_oci_layout(tmp_path / f"layout-{repository.replace('/', '_')}-{tag}",
                                        seed=f"cosign {repository}:{tag}", architectures=architectures)
        return infra.push(layout, registry, repository, tag)

    return push


def cosign_sign(registry: infra.Registry, keys: CosignKeys, reference: str, key: str, *flags: str,
                signatures_repository: str | None = None) -> None:
    env = {"COSIGN_PASSWORD": PASSWORD, "HOME": str(keys.directory)}
    if signatures_repository is not None:
        env["COSIGN_REPOSITORY"] = signatures_repository
    if key == "certified":
        flags = (*flags, "--certificate", str(keys.directory / "certified.crt"),
                 "--certificate-chain", str(keys.directory / "certified-chain.crt"))
    infra.run("cosign", "sign", "--key", keys.key(key), "--tlog-upload=false", "-y", "--allow-http-registry",
              "--allow-insecure-registry", *flags, f"{registry.host}/{reference}", env=env)


def signature_tag(digest: str) -> str:
    return digest.replace(":", "-") + ".sig"


def get_signature_manifest(registry: infra.Registry, repository: str, digest: str) -> dict[str, Any]:
    response = infra.registry_get(registry, f"/v2/{repository}/manifests/{signature_tag(digest)}")
    response.raise_for_status()
    manifest: dict[str, Any] = response.json()
    return manifest


def put_blob(registry: infra.Registry, repository: str, data: bytes) -> str:
    digest = f"sha256:{hashlib.sha256(data).hexdigest()}"
    with httpx.Client(base_url=registry.url) as client:
        started = client.post(f"/v2/{repository}/blobs/uploads/")
        started.raise_for_status()
        location = started.headers["Location"]
        separator = "&" if "?" in location else "?"
        client.put(f"{location}{separator}digest={digest}", content=data,
                   headers={"Content-Type": "application/octet-stream"}).raise_for_status()
    return digest


def put_signature_manifest(registry: infra.Registry, repository: str, digest: str,
                           manifest: dict[str, Any]) -> None:
    """Write a (forged) signature manifest at the image's `.sig` tag, as anyone with push rights can."""
    httpx.put(f"{registry.url}/v2/{repository}/manifests/{signature_tag(digest)}",
              content=json.dumps(manifest).encode(),
              headers={"Content-Type": manifest["mediaType"]}).raise_for_status()


def blob(registry: infra.Registry, repository: str, digest: str) -> bytes:
    response = infra.registry_get(registry, f"/v2/{repository}/blobs/{digest}", accept="*/*")
    response.raise_for_status()
    return response.content


# --- configuration and verification ------------------------------------------------------------------------


def cosign_config(directory: Path, registry: infra.Registry, material: CosignKeys, *, key_names: tuple[str, ...] = (
        "p256", "ed25519", "rsa", "p384"), extra_entries: tuple[dict[str, Any], ...] = (), **authority: Any) -> Path:
    entries = [{"name": name, "publicKey": material.public[name]} for name in key_names]
    store = key_store("ci-keys", [*entries, *extra_entries])
    policy = trust_policy("ci", [f"{registry.host}/cosign/**"], [
        {"name": "ci", "cosign": {"trustStore": "ci-keys", **authority}}])
    return write_config(directory, store, policy)


@pytest.fixture
def config(tmp_path: Path, registry: infra.Registry, cosign_keys: CosignKeys) -> Path:
    return cosign_config(tmp_path / "config", registry, cosign_keys)


def assert_denied(run: Run, *expected: str) -> None:
    assert run.returncode == 1, run.stdout + run.stderr
    text = reasons(run)
    for fragment in expected:
        assert fragment in text, text


# --- admitted ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["p256", "ed25519", "rsa", "p384"])
def test_image_signed_by_cosign_with_a_trusted_key_is_admitted(
        key: str, image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    digest = image(f"cosign/app-{key}")
    # Annotations land in the payload's `optional` section, which carries no meaning for admission.
    cosign_sign(registry, cosign_keys, f"cosign/app-{key}@{digest}", key, "-a", "team=payments", "-a", "build=42")
    run = verify(config, registry, f"{registry.host}/cosign/app-{key}:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    verdict = run.json()["images"][0]
    assert verdict["digest"] == digest
    assert f"good signature by key {key}" in json.dumps(verdict["explanation"])


def test_cosign_verify_agrees_on_a_valid_signature(image: Any, registry: infra.Registry,
                                                   cosign_keys: CosignKeys) -> None:
    digest = image("cosign/agree")
    cosign_sign(registry, cosign_keys, f"cosign/agree@{digest}", "p256")
    infra.run("cosign", "verify", "--key", str(cosign_keys.directory / "p256.pub"), "--insecure-ignore-tlog=true",
              "--allow-http-registry", "--allow-insecure-registry", f"{registry.host}/cosign/agree@{digest}",
              env={"HOME": str(cosign_keys.directory)})


def test_key_subset_excludes_other_trusted_keys(tmp_path: Path, image: Any, registry: infra.Registry,
                                                cosign_keys: CosignKeys) -> None:
    digest = image("cosign/subset")
    cosign_sign(registry, cosign_keys, f"cosign/subset@{digest}", "ed25519")
    only_p256 = cosign_config(tmp_path / "subset", registry, cosign_keys, keys=["p256"])
    assert_denied(verify(only_p256, registry, f"{registry.host}/cosign/subset:v1"),
                  "does not verify with any trusted key (p256 of TrustStore ci-keys)")


def test_signatures_repository(tmp_path: Path, image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                               config: Path) -> None:
    digest = image("cosign/elsewhere")
    cosign_sign(registry, cosign_keys, f"cosign/elsewhere@{digest}", "p256",
                signatures_repository=f"{registry.host}/cosign-signatures/store")
    assert_denied(verify(config, registry, f"{registry.host}/cosign/elsewhere:v1"), "no signatures found")
    with_repository = cosign_config(tmp_path / "repo", registry, cosign_keys,
                                    signaturesRepository=f"{registry.host}/cosign-signatures/store")
    run = verify(with_repository, registry, f"{registry.host}/cosign/elsewhere:v1")
    assert run.returncode == 0, run.stdout + run.stderr


def test_index_signed_recursively_admits_index_and_children(image: Any, registry: infra.Registry,
                                                            cosign_keys: CosignKeys, config: Path) -> None:
    digest = image("cosign/multi", architectures=("amd64", "arm64"))
    cosign_sign(registry, cosign_keys, f"cosign/multi@{digest}", "p256", "--recursive")
    index = infra.registry_get(registry, f"/v2/cosign/multi/manifests/{digest}").json()
    children = [f"{registry.host}/cosign/multi@{child['digest']}" for child in index["manifests"]]
    run = verify(config, registry, f"{registry.host}/cosign/multi:v1", *children)
    assert run.returncode == 0, run.stdout + run.stderr


def test_index_signed_at_the_top_does_not_cover_a_child_used_directly(
        image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    digest = image("cosign/top", architectures=("amd64", "arm64"))
    cosign_sign(registry, cosign_keys, f"cosign/top@{digest}", "p256")
    child = infra.registry_get(registry, f"/v2/cosign/top/manifests/{digest}").json()["manifests"][0]["digest"]
    run = verify(config, registry, f"{registry.host}/cosign/top:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert_denied(verify(config, registry, f"{registry.host}/cosign/top@{child}"), "no signatures found")


def test_certificate_chaining_to_a_private_ca(tmp_path: Path, image: Any, registry: infra.Registry,
                                              cosign_keys: CosignKeys) -> None:
    digest = image("cosign/certified")
    cosign_sign(registry, cosign_keys, f"cosign/certified@{digest}", "certified")
    ca_entry = {"name": "private-ca", "x509": {"role": "ca", "certificates": cosign_keys.ca_pem}}
    trusted = cosign_config(tmp_path / "ca", registry, cosign_keys, key_names=(), extra_entries=(ca_entry,),
                            certificateIdentity={"subject": "release@example.com"})
    run = verify(trusted, registry, f"{registry.host}/cosign/certified:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "certificate for release@example.com" in run.stdout
    other_subject = cosign_config(tmp_path / "other", registry, cosign_keys, key_names=(),
                                  extra_entries=(ca_entry,), certificateIdentity={"subjectRegExp": "ops@.*"})
    assert_denied(verify(other_subject, registry, f"{registry.host}/cosign/certified:v1"),
                  "certificate names release@example.com, not /ops@.*/")


# --- denied ------------------------------------------------------------------------------------------------


def test_unsigned_image_is_denied(image: Any, registry: infra.Registry, config: Path) -> None:
    digest = image("cosign/unsigned")
    assert_denied(verify(config, registry, f"{registry.host}/cosign/unsigned:v1"), "no signatures found",
                  signature_tag(digest))


def test_flipped_signature_byte_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                          config: Path) -> None:
    digest = image("cosign/flipped")
    cosign_sign(registry, cosign_keys, f"cosign/flipped@{digest}", "p256")
    manifest = get_signature_manifest(registry, "cosign/flipped", digest)
    annotations = manifest["layers"][0]["annotations"]
    signature = bytearray(base64.b64decode(annotations[SIGNATURE_ANNOTATION]))
    signature[-1] ^= 0x01
    annotations[SIGNATURE_ANNOTATION] = base64.b64encode(bytes(signature)).decode()
    put_signature_manifest(registry, "cosign/flipped", digest, manifest)
    assert_denied(verify(config, registry, f"{registry.host}/cosign/flipped:v1"),
                  "signature does not verify with any trusted key")


def test_tampered_payload_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                    config: Path) -> None:
    digest = image("cosign/tampered")
    cosign_sign(registry, cosign_keys, f"cosign/tampered@{digest}", "p256")
    manifest = get_signature_manifest(registry, "cosign/tampered", digest)
    layer = manifest["layers"][0]
    payload = blob(registry, "cosign/tampered", layer["digest"]).replace(b"cosign/tampered", b"cosign/tampereD")
    layer["digest"], layer["size"] = put_blob(registry, "cosign/tampered", payload), len(payload)
    put_signature_manifest(registry, "cosign/tampered", digest, manifest)
    assert_denied(verify(config, registry, f"{registry.host}/cosign/tampered:v1"),
                  "signature does not verify with any trusted key")


def test_removed_signature_annotation_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                                config: Path) -> None:
    digest = image("cosign/bare")
    cosign_sign(registry, cosign_keys, f"cosign/bare@{digest}", "p256")
    manifest = get_signature_manifest(registry, "cosign/bare", digest)
    del manifest["layers"][0]["annotations"][SIGNATURE_ANNOTATION]
    put_signature_manifest(registry, "cosign/bare", digest, manifest)
    assert_denied(verify(config, registry, f"{registry.host}/cosign/bare:v1"), f"no {SIGNATURE_ANNOTATION}")


def test_signature_layer_with_another_media_type_is_not_a_signature(
        image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    digest = image("cosign/mediatype")
    cosign_sign(registry, cosign_keys, f"cosign/mediatype@{digest}", "p256")
    manifest = get_signature_manifest(registry, "cosign/mediatype", digest)
    manifest["layers"][0]["mediaType"] = "application/vnd.example.attachment+json"
    put_signature_manifest(registry, "cosign/mediatype", digest, manifest)
    assert_denied(verify(config, registry, f"{registry.host}/cosign/mediatype:v1"),
                  "media type application/vnd.example.attachment+json is not " + SIMPLE_SIGNING)


def test_signature_of_image_a_filed_under_image_b_is_denied(
        image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    signed = image("cosign/swap", tag="a")
    other = image("cosign/swap", tag="b")
    cosign_sign(registry, cosign_keys, f"cosign/swap@{signed}", "p256")
    put_signature_manifest(registry, "cosign/swap", other, get_signature_manifest(registry, "cosign/swap", signed))
    assert_denied(verify(config, registry, f"{registry.host}/cosign/swap:b"),
                  f"signed for manifest digest {signed}, not {other}")


def test_signature_copied_to_another_repository_is_denied_unless_the_rule_allows_it(
        tmp_path: Path, image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    digest = image("cosign/original")
    cosign_sign(registry, cosign_keys, f"cosign/original@{digest}", "p256")
    infra.copy_image(registry, "cosign/original:v1", "cosign/copy:v1")
    infra.copy_image(registry, f"cosign/original:{signature_tag(digest)}", f"cosign/copy:{signature_tag(digest)}")
    # cosign itself checks only the digest and accepts the copy ...
    infra.run("cosign", "verify", "--key", str(cosign_keys.directory / "p256.pub"), "--insecure-ignore-tlog=true",
              "--allow-http-registry", "--allow-insecure-registry", f"{registry.host}/cosign/copy:v1",
              env={"HOME": str(cosign_keys.directory)})
    # ... trustgate's default matchRepository does not.
    assert_denied(verify(config, registry, f"{registry.host}/cosign/copy:v1"),
                  f"signed for {registry.host}/cosign/original, not accepted by matchRepository")
    allowed = cosign_config(tmp_path / "allowed", registry, cosign_keys, signedIdentity={
        "type": "exactRepository", "dockerRepository": f"{registry.host}/cosign/original"})
    run = verify(allowed, registry, f"{registry.host}/cosign/copy:v1")
    assert run.returncode == 0, run.stdout + run.stderr


def test_required_transparency_log_entry_is_missing(tmp_path: Path, image: Any, registry: infra.Registry,
                                                    cosign_keys: CosignKeys) -> None:
    digest = image("cosign/no-tlog")
    cosign_sign(registry, cosign_keys, f"cosign/no-tlog@{digest}", "p256")
    log_key = {"name": "rekor", "rekorPublicKey": public_pem(ec.generate_private_key(ec.SECP256R1()))}
    config = cosign_config(tmp_path / "tlog", registry, cosign_keys, extra_entries=(log_key,),
                           transparencyLog={"require": True})
    assert_denied(verify(config, registry, f"{registry.host}/cosign/no-tlog:v1"),
                  "no dev.sigstore.cosign/bundle annotation, and the authority requires a Rekor entry")


# --- the webhook -------------------------------------------------------------------------------------------


def test_serve_admits_cosign_signed_and_denies_attacker_signed(
        tmp_path: Path, image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    cosign_sign(registry, cosign_keys, f"cosign/served@{image('cosign/served')}", "ed25519")
    cosign_sign(registry, cosign_keys, f"cosign/forged@{image('cosign/forged')}", "attacker")
    with running_webhook(tmp_path, config, registry) as client:
        admitted = client.post("/validate", json=admission_review("a-1", f"{registry.host}/cosign/served:v1")).json()
        assert admitted["response"]["allowed"] is True, admitted
        denied = client.post("/validate", json=admission_review("d-1", f"{registry.host}/cosign/forged:v1")).json()
        assert denied["response"]["allowed"] is False
        message = denied["response"]["status"]["message"]
        assert "cosign/forged:v1" in message and "does not verify with any trusted key" in message, message


# --- cosign 3: sigstore bundles as OCI referrers ---------------------------------------------------------------

BUNDLE_V03 = "application/vnd.dev.sigstore.bundle.v0.3+json"
EMPTY_CONFIG = "application/vnd.oci.empty.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SIGN_PREDICATE = "https://sigstore.dev/cosign/sign/v1"


def cosign3_sign(registry: infra.Registry, keys: CosignKeys, reference: str, key: str) -> None:
    """`cosign sign` of cosign 3 with a key and no Sigstore services: a bundle without log entries."""
    env = {"COSIGN_PASSWORD": PASSWORD, "HOME": str(keys.directory)}
    signing_config = keys.directory / "offline-signing-config.json"
    if not signing_config.exists():
        infra.run("cosign3", "signing-config", "create", "--no-default-fulcio", "--no-default-rekor",
                  "--no-default-oidc", "--no-default-tsa", "--out", str(signing_config), env=env)
    infra.run("cosign3", "sign", "--key", keys.key(key), "--signing-config", str(signing_config), "-y",
              "--allow-http-registry", "--allow-insecure-registry", f"{registry.host}/{reference}", env=env)


def cosign3_verify(registry: infra.Registry, keys: CosignKeys, key: str, reference: str) -> None:
    public_key = keys.directory / f"{key}.public.pem"
    public_key.write_text(keys.public[key])
    infra.run("cosign3", "verify", "--key", str(public_key), "--insecure-ignore-tlog=true",
              "--allow-http-registry", "--allow-insecure-registry", f"{registry.host}/{reference}",
              env={"HOME": str(keys.directory)})


def referrers_index(registry: infra.Registry, repository: str, digest: str) -> dict[str, Any]:
    response = infra.registry_get(registry, f"/v2/{repository}/manifests/{digest.replace(':', '-')}")
    if response.status_code == 404:
        return {"schemaVersion": 2, "mediaType": infra.OCI_INDEX, "manifests": []}
    response.raise_for_status()
    index: dict[str, Any] = response.json()
    return index


def bundle_of(registry: infra.Registry, repository: str, digest: str) -> bytes:
    """The bundle cosign 3 filed for `digest` (its only referrer)."""
    [entry] = referrers_index(registry, repository, digest)["manifests"]
    manifest = infra.registry_get(registry, f"/v2/{repository}/manifests/{entry['digest']}").json()
    return blob(registry, repository, manifest["layers"][0]["digest"])


def attach_bundle(registry: infra.Registry, repository: str, digest: str, bundle: bytes) -> None:
    """File `bundle` as a referrer of `digest` as anyone with push rights can: manifest plus tag-schema index."""
    subject = infra.registry_get(registry, f"/v2/{repository}/manifests/{digest}")
    manifest = {
        "schemaVersion": 2, "mediaType": infra.OCI_MANIFEST, "artifactType": BUNDLE_V03,
        "config": {"mediaType": EMPTY_CONFIG, "digest": put_blob(registry, repository, b"{}"), "size": 2},
        "layers": [{"mediaType": BUNDLE_V03, "digest": put_blob(registry, repository, bundle), "size": len(bundle)}],
        "subject": {"mediaType": subject.headers["Content-Type"], "digest": digest, "size": len(subject.content)},
    }
    body = json.dumps(manifest).encode()
    manifest_digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
    httpx.put(f"{registry.url}/v2/{repository}/manifests/{manifest_digest}", content=body,
              headers={"Content-Type": infra.OCI_MANIFEST}).raise_for_status()
    index = referrers_index(registry, repository, digest)
    index["manifests"].append({"mediaType": infra.OCI_MANIFEST, "digest": manifest_digest, "size": len(body),
                               "artifactType": BUNDLE_V03})
    httpx.put(f"{registry.url}/v2/{repository}/manifests/{digest.replace(':', '-')}",
              content=json.dumps(index).encode(), headers={"Content-Type": infra.OCI_INDEX}).raise_for_status()


# cosign 3.1.1 writes Ed25519 and P-384 bundles that its own `verify --key` refuses: see the test after this one.
@pytest.mark.parametrize("key", ["p256"])
def test_cosign3_bundle_signed_with_a_trusted_key_is_admitted_by_tag_and_digest(
        key: str, image: Any, registry: infra.Registry, cosign_keys: CosignKeys, config: Path) -> None:
    digest = image(f"cosign/bundle-{key}")
    cosign3_sign(registry, cosign_keys, f"cosign/bundle-{key}@{digest}", key)
    cosign3_verify(registry, cosign_keys, key, f"cosign/bundle-{key}@{digest}")  # the reference accepts it
    for reference in (f"cosign/bundle-{key}:v1", f"cosign/bundle-{key}@{digest}"):
        run = verify(config, registry, f"{registry.host}/{reference}")
        assert run.returncode == 0, run.stdout + run.stderr
        verdict = json.dumps(run.json()["images"][0]["explanation"])
        assert f"good sigstore bundle signature by key {key}" in verdict, verdict


def test_cosign3_p384_and_ed25519_bundles_use_sigstores_algorithms(
        tmp_path: Path, image: Any, registry: infra.Registry, cosign_keys: CosignKeys) -> None:
    """cosign 3 signs bundles as sigstore's algorithm registry says (P-384 with SHA-384, Ed25519 as
    Ed25519ph), unlike its `.sig` signatures and its own `verify --key` (SHA-256, pure Ed25519)."""
    for key in ("p384", "ed25519"):
        cosign3_sign(registry, cosign_keys, f"cosign/bundle-{key}@{image(f'cosign/bundle-{key}')}", key)
        with pytest.raises(RuntimeError):
            cosign3_verify(registry, cosign_keys, key, f"cosign/bundle-{key}:v1")
    sha384 = cosign_config(tmp_path / "sha384", registry, cosign_keys, key_names=(), extra_entries=(
        {"name": "p384", "publicKey": cosign_keys.public["p384"], "hashAlgorithm": "sha384"},))
    run = verify(sha384, registry, f"{registry.host}/cosign/bundle-p384:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert_denied(verify(cosign_config(tmp_path / "sha256", registry, cosign_keys), registry,
                         f"{registry.host}/cosign/bundle-p384:v1"), "does not verify with any trusted key")
    # Ed25519ph is not verified: documented in docs/cosign.md.
    assert_denied(verify(cosign_config(tmp_path / "ed", registry, cosign_keys), registry,
                         f"{registry.host}/cosign/bundle-ed25519:v1"), "does not verify with any trusted key")


def test_cosign3_bundle_is_found_through_the_referrers_api(image: Any, registry: infra.Registry,
                                                           cosign_keys: CosignKeys, config: Path) -> None:
    digest = image("cosign/bundle-api")
    cosign3_sign(registry, cosign_keys, f"cosign/bundle-api@{digest}", "p256")
    front = infra.start_referrers_registry(registry)
    try:
        through_api = dataclasses.replace(registry, port=front.port)
        run = verify(cosign_config(config.parent / "api", through_api, cosign_keys), through_api,
                     f"{through_api.host}/cosign/bundle-api:v1")
    finally:
        front.stop()
    # The front hides the referrers tag: only the API can have found the bundle.
    assert front.api_requests, "the referrers API was never asked"
    assert run.returncode == 0, run.stdout + run.stderr
    assert "good sigstore bundle signature by key p256" in json.dumps(run.json()["images"][0]["explanation"])


def test_quorum_counts_a_cosign2_signature_and_a_cosign3_bundle_as_two_signers(
        tmp_path: Path, image: Any, registry: infra.Registry, cosign_keys: CosignKeys) -> None:
    entries = [{"name": name, "publicKey": cosign_keys.public[name]} for name in ("p256", "ed25519")]
    authority = {"name": "ci", "minSignatures": 2, "cosign": {"trustStore": "ci-keys"}}
    document = write_config(tmp_path / "quorum", key_store("ci-keys", entries),
                            trust_policy("ci", [f"{registry.host}/cosign/**"], [authority]))
    digest = image("cosign/quorum")
    cosign_sign(registry, cosign_keys, f"cosign/quorum@{digest}", "p256")
    assert_denied(verify(document, registry, f"{registry.host}/cosign/quorum:v1"),
                  "valid signatures by 1 distinct signers; 2 required")
    cosign3_sign(registry, cosign_keys, f"cosign/quorum@{digest}", "p256")  # the same key again: one signer
    assert_denied(verify(document, registry, f"{registry.host}/cosign/quorum:v1"),
                  "valid signatures by 1 distinct signers; 2 required")
    cosign_sign(registry, cosign_keys, f"cosign/quorum@{digest}", "ed25519")
    run = verify(document, registry, f"{registry.host}/cosign/quorum:v1")
    assert run.returncode == 0, run.stdout + run.stderr


@pytest.mark.parametrize(("repository", "sign"), [("cosign/attacker", cosign_sign),
                                                  ("cosign/bundle-attacker", cosign3_sign)], ids=["sig", "bundle"])
def test_signature_by_an_attacker_key_is_denied(repository: str, sign: Callable[..., None], image: Any,
                                                registry: infra.Registry, cosign_keys: CosignKeys,
                                                config: Path) -> None:
    digest = image(repository)
    sign(registry, cosign_keys, f"{repository}@{digest}", "attacker")
    assert_denied(verify(config, registry, f"{registry.host}/{repository}:v1"),
                  "signature does not verify with any trusted key")


def test_bundle_grafted_onto_another_image_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                                     config: Path) -> None:
    signed = image("cosign/graft", tag="a")
    other = image("cosign/graft", tag="b")
    cosign3_sign(registry, cosign_keys, f"cosign/graft@{signed}", "p256")
    attach_bundle(registry, "cosign/graft", other, bundle_of(registry, "cosign/graft", signed))
    assert_denied(verify(config, registry, f"{registry.host}/cosign/graft:b"),
                  f"the statement names {signed}, not the admitted manifest {other}")
    with pytest.raises(RuntimeError):  # cosign agrees
        cosign3_verify(registry, cosign_keys, "p256", f"cosign/graft@{other}")


def test_truncated_bundle_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                    config: Path) -> None:
    digest = image("cosign/truncated")
    cosign3_sign(registry, cosign_keys, f"cosign/truncated@{digest}", "p256")
    bundle = bundle_of(registry, "cosign/truncated", digest)
    other = image("cosign/truncated", tag="b")
    attach_bundle(registry, "cosign/truncated", other, bundle[: len(bundle) // 2])
    assert_denied(verify(config, registry, f"{registry.host}/cosign/truncated:b"),
                  "not a valid sigstore bundle: not valid JSON")


def test_max_signature_age_counts_from_a_bundle_timestamp(tmp_path: Path, image: Any, registry: infra.Registry) -> None:
    """A bundle whose only signed time is an RFC 3161 timestamp: ten days old by a trusted TSA."""
    now = datetime.now(UTC)
    tsa = timestamp_authority(around=now)
    key = ec.generate_private_key(ec.SECP256R1())
    digest = image("cosign/stamped")
    statement = json.dumps({"_type": "https://in-toto.io/Statement/v1", "predicateType": SIGN_PREDICATE,
                            "subject": [{"digest": {"sha256": digest.removeprefix("sha256:")}}],
                            "predicate": {}}).encode()
    signature = key.sign(pae(IN_TOTO, statement), ec.ECDSA(hashes.SHA256()))
    attach_bundle(registry, "cosign/stamped", digest, json.dumps({
        "mediaType": BUNDLE_V03,
        "verificationMaterial": {"publicKey": {"hint": "ci"}, "timestampVerificationData": {"rfc3161Timestamps": [
            {"signedTimestamp": base64.b64encode(tsa.stamp(signature, now - timedelta(days=10))).decode()}]}},
        "dsseEnvelope": {"payload": base64.b64encode(statement).decode(), "payloadType": IN_TOTO,
                         "signatures": [{"sig": base64.b64encode(signature).decode()}]}}).encode())

    def config(name: str, max_age: str, *, with_tsa: bool = True) -> Path:
        entries: list[dict[str, Any]] = [{"name": "ci", "publicKey": public_pem(key)}]
        if with_tsa:
            entries.append({"name": "tsa", "x509": {"role": "tsa", "certificates": tsa.root_pem}})
        return write_config(tmp_path / name, key_store("ci-keys", entries), trust_policy(
            "ci", [f"{registry.host}/cosign/**"],
            [{"name": "ci", "maxSignatureAge": max_age, "cosign": {"trustStore": "ci-keys"}}]))

    reference = f"{registry.host}/cosign/stamped:v1"
    run = verify(config("month", "30d"), registry, reference)
    assert run.returncode == 0, run.stdout + run.stderr
    assert_denied(verify(config("week", "7d"), registry, reference), "older than maxSignatureAge (7 days)")
    # Without a tsa root the timestamp proves nothing: the signature has no signed time at all.
    assert_denied(verify(config("no-tsa", "30d", with_tsa=False), registry, reference), "carries no signed time")


def test_two_authorities_read_one_referrers_index(tmp_path: Path, image: Any, registry: infra.Registry,
                                                  cosign_keys: CosignKeys) -> None:
    """Two cosign authorities of one policy check one image: the referrers API is asked once for it."""
    digest = image("cosign/two-authorities")
    cosign3_sign(registry, cosign_keys, f"cosign/two-authorities@{digest}", "p256")
    front = infra.start_referrers_registry(registry)
    try:
        through_api = dataclasses.replace(registry, port=front.port)
        store = key_store("ci-keys", [{"name": "p256", "publicKey": cosign_keys.public["p256"]}])
        policy = trust_policy("ci", [f"{through_api.host}/cosign/**"], [
            {"name": name, "cosign": {"trustStore": "ci-keys"}} for name in ("build", "release")])
        run = verify(write_config(tmp_path / "two", store, policy), through_api,
                     f"{through_api.host}/cosign/two-authorities:v1")
    finally:
        front.stop()
    assert run.returncode == 0, run.stdout + run.stderr
    asked = [path for path in front.api_requests if digest in path]
    assert len(asked) == 1, asked


def test_cosign3_bundle_copied_with_oras_is_admitted_in_the_copy(image: Any, registry: infra.Registry,
                                                                 cosign_keys: CosignKeys, config: Path) -> None:
    """Bundles name no repository, so a copy with its referrers passes under the default rule (as the README's
    identity table says), where a `.sig` copy is refused (test_signature_copied_to_another_repository_...)."""
    digest = image("cosign/bundle-origin")
    cosign3_sign(registry, cosign_keys, f"cosign/bundle-origin@{digest}", "p256")
    infra.run("oras", "cp", "-r", "--from-plain-http", "--to-plain-http", f"{registry.host}/cosign/bundle-origin:v1",
              f"{registry.host}/cosign/bundle-copy:v1")
    assert referrers_index(registry, "cosign/bundle-copy", digest)["manifests"], "oras copied no referrer"
    run = verify(config, registry, f"{registry.host}/cosign/bundle-copy:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    assert "good sigstore bundle signature by key p256" in json.dumps(run.json()["images"][0]["explanation"])
