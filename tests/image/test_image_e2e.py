"""The container image end to end: built from the Dockerfile by scripts/build-image.sh, pushed to a real
docker-registry and signed there with GPG (skopeo), cosign and Notation, then pulled back and run with buildah,
where trustgate admits its own image under a policy requiring all three and denies altered copies of it.

`make e2e-image`; the build takes about 25 s with its bases cached, 65 s without.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.e2e import infra
from tests.e2e.conftest import Run, reasons
from tests.e2e.test_cosign_e2e import CosignKeys, cosign_sign
from tests.e2e.test_notation_e2e import NotationKeys
from tests.helpers import key_store, trust_policy, trust_store

REPOSITORY = "trustgate"
CONFIG_MOUNT = "/etc/trustgate/config"
IMAGE_UID = "65532"
AUTHORITIES = ("authority release (gpg)", "authority ci (cosign)", "authority notary (notation)")


@dataclass
class Buildah:
    """buildah over a storage of its own (vfs), running containers with chroot isolation on the host's network."""

    root: Path
    registry: infra.Registry

    def __call__(self, *args: str) -> str:
        return infra.run("buildah", *self._storage(), *args)

    def _storage(self) -> list[str]:
        return ["--root", str(self.root / "storage"), "--runroot", str(self.root / "run"), "--storage-driver", "vfs"]

    def pull(self, digest: str) -> str:
        """A working container of `digest` pulled from the registry: what a node would run."""
        return self("from", "--quiet", "--tls-verify=false",
                    f"docker://{self.registry.host}/{REPOSITORY}@{digest}").strip()

    def run(self, container: str, *command: str, config: Path | None = None) -> Run:
        mounts = ["--volume", f"{config}:{CONFIG_MOUNT}:ro"] if config else []
        completed = subprocess.run(
            [infra.tool("buildah"), *self._storage(), "run", "--isolation", "chroot", *mounts, container, "--",
             *command], capture_output=True, text=True, timeout=120, check=False)
        return Run(completed.returncode, completed.stdout, completed.stderr)


@pytest.fixture(scope="session")
def image_layout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The image as scripts/build-image.sh writes it: an OCI layout of this checkout's Dockerfile and code."""
    layout = tmp_path_factory.mktemp("image") / "oci"
    subprocess.run([str(infra.REPO_ROOT / "scripts" / "build-image.sh"), "--oci-layout", str(layout)],
                   check=True, timeout=900)
    return layout


@pytest.fixture(scope="session")
def buildah(tmp_path_factory: pytest.TempPathFactory, registry: infra.Registry,
            image_layout: Path) -> Iterator[Buildah]:
    tool = Buildah(tmp_path_factory.mktemp("buildah"), registry)
    yield tool
    tool("rm", "--all")


@dataclass(frozen=True)
class Signers:
    registry: infra.Registry
    registries_d: Path
    gpg: infra.GpgKeys
    cosign: CosignKeys
    notation: NotationKeys

    def push(self, layout: Path, tag: str, *, gpg: bool, cosign: bool, notation: bool) -> str:
        """Push `layout` to trustgate:`tag`, signing it with the named signers; return its digest."""
        digest = infra.push(layout, self.registry, REPOSITORY, tag, registries_d=self.registries_d,
                            gnupg_home=self.gpg.home, sign_by=self.gpg.fingerprints["release-rsa"] if gpg else None)
        if cosign:
            cosign_sign(self.registry, self.cosign, f"{REPOSITORY}@{digest}", "p256")
        if notation:
            infra.run("notation", "sign", "--insecure-registry", "--key", "selfsigned",
                      f"{self.registry.host}/{REPOSITORY}@{digest}",
                      env={"XDG_CONFIG_HOME": str(self.notation.home)})
        return digest


@pytest.fixture(scope="session")
def signers(registry: infra.Registry, registries_d: Path, gpg: infra.GpgKeys, cosign_keys: CosignKeys,
            notation_keys: NotationKeys) -> Signers:
    return Signers(registry, registries_d, gpg, cosign_keys, notation_keys)


@pytest.fixture(scope="session")
def signed_digest(image_layout: Path, signers: Signers) -> str:
    return signers.push(image_layout, "v1", gpg=True, cosign=True, notation=True)


@pytest.fixture(scope="session")
def container(buildah: Buildah, signed_digest: str) -> str:
    return buildah.pull(signed_digest)


@pytest.fixture(scope="session")
def config(tmp_path_factory: pytest.TempPathFactory, registry: infra.Registry, lookaside: infra.Lookaside,
           gpg: infra.GpgKeys, cosign_keys: CosignKeys, notation_keys: NotationKeys) -> Path:
    """A TrustPolicy over the trustgate repository requiring GPG, cosign and Notation (no threshold: all)."""
    directory = tmp_path_factory.mktemp("image-config")
    directory.chmod(0o755)  # read inside the container by its non-root user
    documents = [
        trust_store("release", {"release-rsa": gpg.armored("release-rsa")}),
        key_store("ci-keys", [{"name": "p256", "publicKey": cosign_keys.public["p256"]}]),
        key_store("notation-roots", [{"name": "selfsigned", "x509": {
            "role": "ca", "certificates": notation_keys.selfsigned.read_text()}}]),
        trust_policy("trustgate-image", [f"{registry.host}/{REPOSITORY}"], [
            {"name": "release", "gpg": {"trustStore": "release", "lookaside": lookaside.url}},
            {"name": "ci", "cosign": {"trustStore": "ci-keys"}},
            {"name": "notary", "notation": {"trustStore": "notation-roots", "trustedIdentities": ["*"]}},
        ]),
    ]
    (directory / "trust.yaml").write_text(yaml.safe_dump_all(documents))
    return directory


def verify_inside(buildah: Buildah, container: str, config: Path, reference: str) -> Run:
    """`trustgate verify` run by the image itself, reading `config` mounted where the chart mounts it."""
    return buildah.run(container, "trustgate", "verify", "--config", CONFIG_MOUNT,
                       *buildah.registry.trustgate_flags(config), "--output", "json", reference, config=config)


def authority_results(run: Run) -> dict[str, bool]:
    """Whether each authority of the one matching policy passed, from `verify --output json`."""
    [verdict] = run.json()["images"]
    [policy] = verdict["explanation"]["children"]
    return {node["subject"]: node["passed"] for node in policy["children"]}


def altered_copy(layout: Path, directory: Path, marker: str) -> Path:
    """The image with one environment variable added to its configuration: same layers, another digest."""
    shutil.copytree(layout / "blobs", directory / "blobs", copy_function=os.link)  # blobs are never rewritten
    shutil.copy(layout / "oci-layout", directory)
    blobs = directory / "blobs" / "sha256"
    index = json.loads((layout / "index.json").read_text())
    manifest = json.loads((blobs / index["manifests"][0]["digest"].removeprefix("sha256:")).read_bytes())
    image_config = json.loads((blobs / manifest["config"]["digest"].removeprefix("sha256:")).read_bytes())
    image_config["config"]["Env"].append(f"ALTERED={marker}")
    manifest["config"].update(_write_blob(blobs, json.dumps(image_config).encode()))
    index["manifests"][0].update(_write_blob(blobs, json.dumps(manifest).encode()))
    (directory / "index.json").write_text(json.dumps(index))
    return directory


def _write_blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def test_image_runs_trustgate_as_its_fixed_uid_with_gpg_and_no_pip(buildah: Buildah, container: str) -> None:
    release = tomllib.loads((infra.REPO_ROOT / "pyproject.toml").read_text())["project"]["version"]
    version = buildah.run(container, "trustgate", "--version")
    assert (version.returncode, version.stdout) == (0, f"trustgate {release}\n"), version.stderr
    assert buildah.run(container, "id", "-u").stdout.strip() == IMAGE_UID
    assert buildah.run(container, "gpg", "--version").stdout.startswith("gpg (GnuPG) 2.")
    no_pip = buildah.run(container, "python3", "-c", "import pip")
    assert no_pip.returncode == 1 and "No module named 'pip'" in no_pip.stderr


def test_trustgate_admits_its_own_image_signed_three_ways(buildah: Buildah, container: str, config: Path,
                                                          signed_digest: str) -> None:
    run = verify_inside(buildah, container, config, f"{buildah.registry.host}/{REPOSITORY}:v1")
    assert run.returncode == 0, run.stdout + run.stderr
    [verdict] = run.json()["images"]
    assert verdict["allowed"] and verdict["digest"] == signed_digest
    assert authority_results(run) == dict.fromkeys(AUTHORITIES, True)


@pytest.mark.parametrize(("tag", "signed_by", "denied_by"), [
    ("unsigned", {"gpg": False, "cosign": False, "notation": False}, AUTHORITIES),
    ("no-notation", {"gpg": True, "cosign": True, "notation": False}, ("authority notary (notation)",)),
])
def test_an_altered_image_is_denied_unless_signed_by_all_three(
        tmp_path: Path, buildah: Buildah, container: str, config: Path, image_layout: Path, signers: Signers,
        tag: str, signed_by: dict[str, bool], denied_by: tuple[str, ...]) -> None:
    digest = signers.push(altered_copy(image_layout, tmp_path / "altered", tag), tag, **signed_by)
    run = verify_inside(buildah, container, config, f"{buildah.registry.host}/{REPOSITORY}:{tag}")
    assert run.returncode == 1, run.stdout + run.stderr
    [verdict] = run.json()["images"]
    assert verdict["digest"] == digest and not verdict["allowed"]
    assert {name for name, passed in authority_results(run).items() if not passed} == set(denied_by), reasons(run)
