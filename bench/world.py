"""The real components a benchmark run measures against: a docker-registry, a lookaside, signing keys for the
three formats, images signed by the real CLIs (cosign in both its formats: the `.sig` tag of cosign 2 and the
sigstore bundles of cosign 3), and the trustgate configuration that trusts them.

Everything binds 127.0.0.1 and is started (and stopped) by this process. Registry and signer plumbing comes
from the end-to-end test infrastructure, so the benchmark and the tests exercise the same components.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import httpx

from bench.proxy import BackloggedServer
from tests.e2e import infra
from tests.e2e.conftest import write_config
from tests.helpers import key_store, trust_policy

Format = Literal["gpg", "cosign", "notation", "cosign-bundle"]
# The three verifiers, one image each (the warm path's pod, the rollout's and the slow registry's mix).
FORMATS: tuple[Format, ...] = ("gpg", "cosign", "notation")
# Every signature format, each measured on its own: cosign 3's sigstore bundles besides the three.
SIGNATURE_FORMATS: tuple[Format, ...] = (*FORMATS, "cosign-bundle")
COSIGN_PASSWORD = "trustgate-bench"
# Signing runs the real CLIs as processes; a few at once keeps both cores busy without thrashing gpg-agent.
PUBLISH_THREADS = 4
# Images one `cosign sign` process signs (it takes many references; its start-up dominates a single signature).
COSIGN_BATCH = 50
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
# One small layer every fast-published image shares; each image differs by its config blob.
SHARED_LAYER = infra._layer("trustgate-bench shared layer")


class CountingHandler(infra._QuietHandler):
    """The lookaside's static file server, remembering every path asked for (the registry logs its own)."""

    requests: list[tuple[str, str]]
    requests_lock: threading.Lock

    def do_GET(self) -> None:
        with self.requests_lock:
            self.requests.append(("GET", self.path))
        super().do_GET()


@dataclass(frozen=True)
class Image:
    format: Format
    repository: str  # with the registry host
    digest: str

    @property
    def by_digest(self) -> str:
        return f"{self.repository}@{self.digest}"


@dataclass
class World:
    directory: Path
    registry: infra.Registry
    lookaside: infra.Lookaside
    lookaside_requests: list[tuple[str, str]]
    gpg: infra.GpgKeys
    cosign_key: Path
    cosign3_signing_config: Path
    notation_home: Path
    _names: Iterator[int] = dataclasses.field(default_factory=itertools.count)
    _registries_d_lock: threading.Lock = dataclasses.field(default_factory=threading.Lock)

    # --- images -------------------------------------------------------------------------------------------

    def registries_d(self, registry: infra.Registry, lookaside_url: str) -> Path:
        """skopeo's registries.d for `registry`: signatures staged under the lookaside root, read from `url`.

        Written once per registry, whole, under a lock: images are signed in parallel, and a skopeo reading a
        half-written file finds no lookaside and stages its signature in containers/image's default place. A port
        may be taken again by a later registry: the directory is named by the port and the lookaside both."""
        lookaside_port = urllib.parse.urlsplit(lookaside_url).port
        directory = self.directory / f"registries.d-{registry.port}-{lookaside_port}"
        with self._registries_d_lock:
            if not directory.exists():
                staging = directory.with_name(f"{directory.name}.staging")
                staging.mkdir(parents=True)
                (staging / "trustgate-bench.yaml").write_text(json.dumps({"docker": {registry.host: {
                    "lookaside": lookaside_url, "lookaside-staging": self.lookaside.root.as_uri()}}}))
                staging.rename(directory)
        return directory

    def publish(self, image_format: Format, name: str, *, registry: infra.Registry | None = None,
                lookaside_url: str | None = None) -> Image:
        """Push a fresh image to `<format>/<name>:v1` and sign it with that format's real CLI."""
        registry = registry or self.registry
        seed = f"{image_format}/{name}/{next(self._names)}"
        layout = infra.write_oci_layout(self.directory / "layouts" / seed.replace("/", "_"), seed=seed)
        repository = f"{image_format}/{name}"
        if image_format == "gpg":
            registries_d = self.registries_d(registry, lookaside_url or self.lookaside.url)
            digest = infra.push(layout, registry, repository, "v1", sign_by=self.gpg.fingerprints["release"],
                                registries_d=registries_d, gnupg_home=self.gpg.home)
        elif image_format == "cosign":
            digest = infra.push(layout, registry, repository, "v1")
            self._sign_cosign([f"{registry.host}/{repository}@{digest}"])
        elif image_format == "cosign-bundle":
            digest = infra.push(layout, registry, repository, "v1")
            infra.run("cosign3", "sign", "--key", str(self.cosign_key), "--signing-config",
                      str(self.cosign3_signing_config), "-y", "--allow-http-registry", "--allow-insecure-registry",
                      f"{registry.host}/{repository}@{digest}",
                      env={"COSIGN_PASSWORD": COSIGN_PASSWORD, "HOME": str(self.directory)})
        else:
            digest = infra.push(layout, registry, repository, "v1")
            self._sign_notation(f"{registry.host}/{repository}@{digest}")
        return Image(image_format, f"{registry.host}/{repository}", digest)

    def publish_many(self, wanted: Sequence[tuple[Format, str]], *, registry: infra.Registry | None = None,
                     lookaside_url: str | None = None) -> list[Image]:
        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            return list(pool.map(lambda item: self.publish(*item, registry=registry, lookaside_url=lookaside_url),
                                 wanted))

    def publish_fast(self, wanted: Sequence[tuple[Format, str]], *,
                     registry: infra.Registry | None = None) -> list[Image]:
        """Like `publish_many` for many images, at a fraction of its cost, still signed by the real signers: each
        image is pushed over the registry API (a shared layer and its own small config blob, no skopeo copy);
        GPG signatures are made by `skopeo standalone-sign` straight into the lookaside, cosign signs a batch
        of images per process, and the signer processes run side by side."""
        registry = registry or self.registry
        with httpx.Client(base_url=registry.url, timeout=30) as http:
            pushed = [(image_format, name, self._push_small(http, f"{image_format}/{name}", "v1"))
                      for image_format, name in wanted]
        images = [Image(image_format, f"{registry.host}/{image_format}/{name}", digest)
                  for image_format, name, (digest, _) in pushed]
        manifests = {image.by_digest: manifest for image, (_, _, (_, manifest)) in zip(images, pushed, strict=True)}
        cosign = [image.by_digest for image in images if image.format == "cosign"]
        jobs = [partial(self._sign_gpg, image, manifests[image.by_digest]) for image in images if image.format == "gpg"]
        jobs += [partial(self._sign_cosign, cosign[start:start + COSIGN_BATCH])
                 for start in range(0, len(cosign), COSIGN_BATCH)]
        jobs += [partial(self._sign_notation, image.by_digest) for image in images if image.format == "notation"]
        with ThreadPoolExecutor(PUBLISH_THREADS) as pool:
            list(pool.map(lambda job: job(), jobs))
        return images

    def _push_small(self, http: httpx.Client, repository: str, tag: str) -> tuple[str, bytes]:
        """Push a one-layer image whose config names `repository`; returns (manifest digest, manifest)."""
        config = json.dumps({"architecture": "amd64", "os": "linux", "config": {"Labels": {"name": repository}},
                             "rootfs": {"type": "layers", "diff_ids": []}}, sort_keys=True).encode()
        descriptors = [self._upload_blob(http, repository, blob) for blob in (config, SHARED_LAYER)]
        manifest = json.dumps({
            "schemaVersion": 2, "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **descriptors[0]},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **descriptors[1]}],
        }, sort_keys=True).encode()
        http.put(f"/v2/{repository}/manifests/{tag}", content=manifest,
                 headers={"Content-Type": OCI_MANIFEST}).raise_for_status()
        return f"sha256:{hashlib.sha256(manifest).hexdigest()}", manifest

    @staticmethod
    def _upload_blob(http: httpx.Client, repository: str, blob: bytes) -> dict[str, Any]:
        digest = f"sha256:{hashlib.sha256(blob).hexdigest()}"
        started = http.post(f"/v2/{repository}/blobs/uploads/")
        started.raise_for_status()
        # The upload URL carries the registry's own state in its query; the digest is added to it.
        location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
        http.put(location, content=blob,
                 headers={"Content-Type": "application/octet-stream"}).raise_for_status()
        return {"digest": digest, "size": len(blob)}

    def _sign_gpg(self, image: Image, manifest: bytes) -> None:
        repository = image.repository.split("/", 1)[1]
        directory = self.lookaside.signature_dir(repository, image.digest)
        directory.mkdir(parents=True, exist_ok=True)
        manifest_file = directory / "manifest.json"
        manifest_file.write_bytes(manifest)
        infra.run("skopeo", "standalone-sign", str(manifest_file), f"{image.repository}:v1",
                  self.gpg.fingerprints["release"], "--output", str(directory / "signature-1"),
                  env={"GNUPGHOME": str(self.gpg.home)})
        manifest_file.unlink()

    def _sign_cosign(self, references: Sequence[str]) -> None:
        infra.run("cosign", "sign", "--key", str(self.cosign_key), "--tlog-upload=false", "-y",
                  "--allow-http-registry", "--allow-insecure-registry", *references,
                  env={"COSIGN_PASSWORD": COSIGN_PASSWORD, "HOME": str(self.directory)})

    def _sign_notation(self, reference: str) -> None:
        infra.run("notation", "sign", "--insecure-registry", "--key", "selfsigned", reference,
                  env={"XDG_CONFIG_HOME": str(self.notation_home)})

    # --- configuration ------------------------------------------------------------------------------------

    def trustgate_config(self, name: str, hosts: Sequence[tuple[str, str]] = ()) -> Path:
        """TrustStores for the three verifiers and one TrustPolicy per format and (registry host, lookaside)."""
        hosts = hosts or [(self.registry.host, self.lookaside.url)]
        notation_certificate = (self.notation_home / "notation" / "localkeys" / "selfsigned.crt").read_text()
        documents: list[dict[str, Any]] = [
            key_store("gpg-release", [{"name": "release", "gpg": self.gpg.armored("release")}]),
            key_store("cosign-release", [{"name": "release", "publicKey": self.cosign_public_key.read_text()}]),
            key_store("notation-release", [{"name": "release",
                                            "x509": {"role": "ca", "certificates": notation_certificate}}]),
        ]
        for index, (host, lookaside_url) in enumerate(hosts):
            documents += [
                trust_policy(f"gpg-{index}", [f"{host}/gpg/**"], [
                    {"name": "release", "gpg": {"trustStore": "gpg-release", "lookaside": lookaside_url}}]),
                trust_policy(f"cosign-{index}", [f"{host}/cosign/**", f"{host}/cosign-bundle/**"], [
                    {"name": "release", "cosign": {"trustStore": "cosign-release"}}]),
                trust_policy(f"notation-{index}", [f"{host}/notation/**"], [
                    {"name": "release", "notation": {"trustStore": "notation-release", "trustedIdentities": ["*"]}}]),
            ]
        return write_config(self.directory / name, *documents)

    @property
    def cosign_public_key(self) -> Path:
        return self.cosign_key.with_suffix(".pub")

    # --- the reference CLIs ---------------------------------------------------------------------------------

    def reference_cli(self, image: Image) -> tuple[list[str], dict[str, str]]:
        """The upstream CLI command (and environment) that verifies `image` as trustgate's policy does."""
        if image.format == "gpg":
            return (["skopeo", "--policy", str(self._skopeo_policy()), "--registries.d",
                     str(self.registries_d(self.registry, self.lookaside.url)), "copy", "--quiet",
                     "--src-tls-verify=false", f"docker://{image.by_digest}",
                     f"dir:{self.directory / 'skopeo-copy'}"], {})
        if image.format in ("cosign", "cosign-bundle"):
            cli = "cosign" if image.format == "cosign" else "cosign3"
            return ([cli, "verify", "--key", str(self.cosign_public_key), "--insecure-ignore-tlog=true",
                     "--allow-http-registry", "--allow-insecure-registry", image.by_digest],
                    {"HOME": str(self.directory)})
        return (["notation", "verify", "--insecure-registry", image.by_digest],
                {"XDG_CONFIG_HOME": str(self.notation_home)})

    def _skopeo_policy(self) -> Path:
        path = self.directory / "skopeo-policy.json"
        if not path.exists():
            keyring = self.directory / "release.asc"
            keyring.write_text(self.gpg.armored("release"))
            path.write_text(json.dumps({"default": [{"type": "reject"}], "transports": {"docker": {
                self.registry.host: [{"type": "signedBy", "keyType": "GPGKeys", "keyPath": str(keyring)}]}}}))
        return path


def _notation_home(directory: Path) -> Path:
    home = directory / "notation"
    env = {"XDG_CONFIG_HOME": str(home)}
    infra.run("notation", "cert", "generate-test", "--default", "selfsigned", env=env)
    policy = directory / "notation-trustpolicy.json"
    policy.write_text(json.dumps({"version": "1.0", "trustPolicies": [{
        "name": "release", "registryScopes": ["*"], "signatureVerification": {"level": "strict"},
        "trustStores": ["ca:selfsigned"], "trustedIdentities": ["*"]}]}))
    infra.run("notation", "policy", "import", "--force", str(policy), env=env)
    return home


@contextmanager
def world(directory: Path) -> Iterator[World]:
    with ExitStack() as stack:
        registry = infra.start_registry(directory / "registry")
        stack.callback(registry.stop)
        requests: list[tuple[str, str]] = []
        handler = type("Handler", (CountingHandler,), {"requests": requests, "requests_lock": threading.Lock()})
        root = directory / "lookaside"
        root.mkdir(parents=True)
        server = BackloggedServer(("127.0.0.1", 0), partial(handler, directory=str(root)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        lookaside = infra.Lookaside(root, server)
        stack.callback(lookaside.stop)
        gpg = stack.enter_context(infra.gpg_keys(directory / "gnupg"))
        gpg.generate("release", "rsa3072")
        cosign_prefix = directory / "cosign"
        infra.run("cosign", "generate-key-pair", "--output-key-prefix", str(cosign_prefix),
                  env={"COSIGN_PASSWORD": COSIGN_PASSWORD})
        # cosign 3 signs with the same key, into a bundle without Sigstore services (no log entry, no timestamp).
        signing_config = directory / "cosign3-signing-config.json"
        infra.run("cosign3", "signing-config", "create", "--no-default-fulcio", "--no-default-rekor",
                  "--no-default-oidc", "--no-default-tsa", "--out", str(signing_config), env={"HOME": str(directory)})
        yield World(directory, registry, lookaside, requests, gpg, cosign_prefix.with_suffix(".key"),
                    signing_config, _notation_home(directory))
