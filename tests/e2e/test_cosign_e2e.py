"""cosign end to end: images signed by the real cosign CLI in a real registry, verified by `trustgate verify|serve`.

cosign signs offline (`--tlog-upload=false`) with ECDSA P-256 (`cosign generate-key-pair`), Ed25519
(`cosign import-key-pair`), RSA and ECDSA P-384 keys (written in cosign's encrypted key format, because this
cosign's import-key-pair refuses them), and with a key whose certificate chains to a private CA. Forged
signatures are made the way an attacker with push rights would: by rewriting the `.sig` manifest.
"""

from __future__ import annotations

import base64
import hashlib
import json
import ssl
import subprocess
import sys
from collections.abc import Iterator
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
from tests.e2e.conftest import Run, trustgate, write_config
from tests.helpers import key_store, trust_policy

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
    return private_key.public_key().public_bytes(serialization.Encoding.PEM,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo).decode()


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


def verify(config: Path, registry: infra.Registry, *images: str) -> Run:
    return trustgate("verify", "--config", str(config), *registry.trustgate_flags(config), "--output", "json",
                     *images)


def reasons(run: Run) -> str:
    return "\n".join(reason for image in run.json()["images"] for reason in image["reasons"])


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


def test_signature_by_an_attacker_key_is_denied(image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
                                                config: Path) -> None:
    digest = image("cosign/attacker")
    cosign_sign(registry, cosign_keys, f"cosign/attacker@{digest}", "attacker")
    assert_denied(verify(config, registry, f"{registry.host}/cosign/attacker:v1"),
                  "signature does not verify with any trusted key")


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


@pytest.fixture
def webhook_server(tmp_path: Path, config: Path, registry: infra.Registry) -> Iterator[tuple[str, Path]]:
    tls = infra.make_tls(tmp_path / "webhook-tls")
    port = infra.free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "webhook", "serve", "--config", str(config), *registry.trustgate_flags(config),
         "--port", str(port), "--tls-cert", str(tls.cert), "--tls-key", str(tls.key)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
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


def test_serve_admits_cosign_signed_and_denies_attacker_signed(
        image: Any, registry: infra.Registry, cosign_keys: CosignKeys,
        webhook_server: tuple[str, Path]) -> None:
    url, ca = webhook_server
    cosign_sign(registry, cosign_keys, f"cosign/served@{image('cosign/served')}", "ed25519")
    cosign_sign(registry, cosign_keys, f"cosign/forged@{image('cosign/forged')}", "attacker")
    with httpx.Client(verify=ssl.create_default_context(cafile=str(ca)), timeout=30) as client:
        admitted = client.post(f"{url}/validate", json=review("a-1", f"{registry.host}/cosign/served:v1")).json()
        assert admitted["response"]["allowed"] is True, admitted
        denied = client.post(f"{url}/validate", json=review("d-1", f"{registry.host}/cosign/forged:v1")).json()
        assert denied["response"]["allowed"] is False
        message = denied["response"]["status"]["message"]
        assert "cosign/forged:v1" in message and "does not verify with any trusted key" in message, message
