"""Real components for end-to-end tests: docker-registry, OCI layouts pushed with skopeo, gpg keys, a lookaside.

Every server binds 127.0.0.1 on a free port and is stopped by the PID this module started. A missing tool is
an error telling how to install it (scripts/install-test-deps.sh), never a skipped test.
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import io
import ipaddress
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tarfile
import threading
import time
import urllib.parse
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature
from cryptography.x509.oid import NameOID

REPO_ROOT = Path(__file__).resolve().parents[2]
TOOLS_BIN = REPO_ROOT / ".tools" / "bin"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
# trustgate refuses loopback registries unless told otherwise; every test server binds 127.0.0.1.
ALLOW_LOOPBACK = ("--allow-registry-cidr", "127.0.0.1/32")


class MissingToolError(RuntimeError):
    pass


def tool(name: str) -> str:
    """Absolute path of a test tool, looking in the project's .tools/bin first."""
    found = shutil.which(name, path=f"{TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if found is None:
        raise MissingToolError(f"{name} is not installed: run scripts/install-test-deps.sh")
    return found


def run(*command: str, env: dict[str, str] | None = None, input: bytes | None = None) -> str:
    """Run a tool, raising with its stderr on failure."""
    completed = subprocess.run([tool(command[0]), *command[1:]], capture_output=True, input=input,
                               env={**os.environ, **(env or {})}, timeout=120, check=False)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({completed.returncode}): "
                           f"{completed.stderr.decode(errors='replace')}")
    return completed.stdout.decode(errors="replace")


def run_process_group(command: Sequence[str], timeout: float, *,
                      stderr: int = subprocess.PIPE) -> subprocess.CompletedProcess[bytes]:
    """Run `command` from the repository root, the project's tools first on PATH, as the leader of its own process
    group. Past `timeout` the whole group (whatever the command started: servers, a namespace's processes) is
    stopped; what it wrote until then is returned with its exit status."""
    process = subprocess.Popen(list(command), stdout=subprocess.PIPE, stderr=stderr, cwd=REPO_ROOT,
                               env={**os.environ, "PATH": f"{TOOLS_BIN}{os.pathsep}{os.environ['PATH']}"},
                               start_new_session=True)
    try:
        output, errors = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGTERM)
        output, errors = process.communicate()
    return subprocess.CompletedProcess(process.args, process.returncode, output, errors)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_until_listening(port: int, process: subprocess.Popen[bytes] | None = None, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"process {process.args!r} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listened on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# --- TLS -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TlsFiles:
    """A private CA and a serving certificate for 127.0.0.1/localhost signed by it."""

    ca: Path
    cert: Path
    key: Path
    ca_dir: Path  # holds ca.crt only: skopeo's --dest-cert-dir layout


def _general_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def make_tls(directory: Path, common_name: str = "trustgate test CA",
             hosts: Sequence[str] = ("127.0.0.1", "localhost")) -> TlsFiles:
    """A CA and a serving certificate for `hosts` (IP addresses or DNS names)."""
    directory.mkdir(parents=True, exist_ok=True)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    ca_cert = (
        x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([_general_name(host) for host in hosts]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_dir = directory / "ca"
    ca_dir.mkdir(exist_ok=True)
    pem = ca_cert.public_bytes(serialization.Encoding.PEM)
    (ca_dir / "ca.crt").write_bytes(pem)
    (directory / "ca.pem").write_bytes(pem)
    (directory / "server.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (directory / "server.key").write_bytes(key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    return TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key", ca_dir)


# --- registry --------------------------------------------------------------------------------------------


@dataclass
class Registry:
    """A real docker-registry (CNCF distribution) process on 127.0.0.1."""

    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    storage: Path
    tls: TlsFiles | None = None
    credentials: tuple[str, str] | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def skopeo_dest_flags(self) -> list[str]:
        flags = ["--dest-cert-dir", str(self.tls.ca_dir)] if self.tls else ["--dest-tls-verify=false"]
        if self.credentials:
            flags += ["--dest-creds", ":".join(self.credentials)]
        return flags

    def skopeo_src_flags(self) -> list[str]:
        return [flag.replace("--dest-", "--src-") for flag in self.skopeo_dest_flags()]

    def trustgate_flags(self, directory: Path) -> list[str]:
        """The `trustgate verify|serve` flags that reach this registry."""
        flags = ["--registry-ca", str(self.tls.ca)] if self.tls else ["--insecure-registry", self.host]
        if self.credentials:
            auth = directory / f"auth-{self.port}.json"
            token = ":".join(self.credentials).encode()
            auth.write_text(json.dumps({"auths": {self.host: {"auth": base64.b64encode(token).decode()}}}))
            flags += ["--registry-auth", str(auth)]
        return [*flags, *ALLOW_LOOPBACK]

    def stop(self) -> None:
        stop(self.process)


def start_registry(directory: Path, *, tls: TlsFiles | None = None, credentials: tuple[str, str] | None = None,
                   token_service: TokenService | None = None, storage: Path | None = None) -> Registry:
    """A registry keeping its files under `directory`, its repositories in `storage` (default: a new one)."""
    directory.mkdir(parents=True, exist_ok=True)
    storage = storage or directory / "storage"
    port = free_port()
    config: dict[str, Any] = {
        "version": 0.1,
        "log": {"level": "info", "accesslog": {"disabled": False}},
        "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
        "http": {"addr": f"127.0.0.1:{port}"},
    }
    if tls is not None:
        config["http"]["tls"] = {"certificate": str(tls.cert), "key": str(tls.key)}
    if credentials is not None:
        htpasswd = directory / "htpasswd"
        htpasswd.write_text(run("htpasswd", "-Bbn", *credentials))
        config["auth"] = {"htpasswd": {"realm": "trustgate-test", "path": str(htpasswd)}}
    if token_service is not None:
        config["auth"] = {"token": token_service.registry_config()}
        credentials = token_service.credentials
    config_path = directory / "config.yml"
    config_path.write_text(json.dumps(config))  # JSON is YAML
    log_path = directory / "registry.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen([tool("docker-registry"), "serve", str(config_path)],
                                   stdout=log, stderr=subprocess.STDOUT)
    registry = Registry(port, process, log_path, storage, tls, credentials)
    try:
        wait_until_listening(port, process)
    except BaseException:
        registry.stop()
        raise
    return registry


class Canary:
    """A TCP listener where a registry trustgate must not contact would be: it records every connection and
    answers none, so that an attempt is observed rather than lost in a connection error."""

    def __init__(self, port: int, host: str = "127.0.0.1") -> None:
        self.socket = socket.create_server((host, port))
        self.connections = 0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.connections += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()
        self._thread.join(timeout=5)


# --- images ----------------------------------------------------------------------------------------------


def _blob(blobs: Path, data: bytes) -> dict[str, Any]:
    digest = hashlib.sha256(data).hexdigest()
    (blobs / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(seed: str) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        content = f"trustgate test image {seed}\n".encode()
        info = tarfile.TarInfo("etc/trustgate-seed")
        info.size, info.mtime = len(content), 0
        tar.addfile(info, io.BytesIO(content))
    return gzip.compress(raw.getvalue(), mtime=0)


def _image_manifest(blobs: Path, seed: str, architecture: str) -> dict[str, Any]:
    layer = _layer(f"{seed}/{architecture}")
    config = json.dumps({
        "architecture": architecture, "os": "linux", "config": {"Cmd": ["/bin/true"]},
        "rootfs": {"type": "layers", "diff_ids": [f"sha256:{hashlib.sha256(gzip.decompress(layer)).hexdigest()}"]},
    }, sort_keys=True).encode()
    manifest = json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", **_blob(blobs, config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **_blob(blobs, layer)}],
    }, sort_keys=True).encode()
    return {"mediaType": OCI_MANIFEST, **_blob(blobs, manifest),
            "platform": {"architecture": architecture, "os": "linux"}}


def write_oci_layout(directory: Path, seed: str, *, architectures: Sequence[str] = ()) -> Path:
    """An OCI image layout with tag `latest`: one image, or an index over `architectures`.

    `seed` goes into the layer, so different seeds give different digests.
    """
    blobs = directory / "blobs" / "sha256"
    blobs.mkdir(parents=True, exist_ok=True)
    if architectures:
        children = [_image_manifest(blobs, seed, architecture) for architecture in architectures]
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children},
                           sort_keys=True).encode()
        top = {"mediaType": OCI_INDEX, **_blob(blobs, index)}
    else:
        top = _image_manifest(blobs, seed, "amd64")
        del top["platform"]
    top["annotations"] = {"org.opencontainers.image.ref.name": "latest"}
    (directory / "oci-layout").write_text(json.dumps({"imageLayoutVersion": "1.0.0"}))
    (directory / "index.json").write_text(json.dumps({"schemaVersion": 2, "manifests": [top]}))
    return directory


def push(layout: Path, registry: Registry, repository: str, tag: str, *, sign_by: str | None = None,
         registries_d: Path | None = None, gnupg_home: Path | None = None, manifest_format: str | None = None) -> str:
    """Copy an OCI layout to `registry/repository:tag` with skopeo (signing with `sign_by`); return the digest."""
    digest_file = layout.parent / f"{layout.name}.{repository.replace('/', '_')}.{tag}.digest"
    command = ["skopeo", "--insecure-policy"]
    if registries_d is not None:
        command += ["--registries.d", str(registries_d)]
    command += ["copy", "--all", "--quiet", "--digestfile", str(digest_file), *registry.skopeo_dest_flags()]
    if sign_by is not None:
        command += ["--sign-by", sign_by]
    if manifest_format is not None:
        command += ["--format", manifest_format]
    command += [f"oci:{layout}:latest", f"docker://{registry.host}/{repository}:{tag}"]
    run(*command, env={"GNUPGHOME": str(gnupg_home)} if gnupg_home else None)
    return digest_file.read_text().strip()


def copy_image(registry: Registry, source: str, destination: str) -> None:
    """Copy an image inside the registry without signing (what an attacker with push rights can do)."""
    run("skopeo", "--insecure-policy", "copy", "--all", "--quiet", "--preserve-digests",
        *registry.skopeo_src_flags(), *registry.skopeo_dest_flags(),
        f"docker://{registry.host}/{source}", f"docker://{registry.host}/{destination}")


# --- gpg -------------------------------------------------------------------------------------------------


@dataclass
class GpgKeys:
    """A throw-away GNUPGHOME holding signing keys, as a release engineer's machine would."""

    home: Path
    fingerprints: dict[str, str] = field(default_factory=dict)

    def generate(self, name: str, algorithm: str) -> str:
        run("gpg", "--homedir", str(self.home), "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
            "--quick-gen-key", f"{name} <{name}@trustgate.test>", algorithm, "sign", "1d")
        listing = run("gpg", "--homedir", str(self.home), "--batch", "--with-colons", "--list-keys",
                      f"{name}@trustgate.test")
        fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))
        self.fingerprints[name] = fingerprint
        return fingerprint

    def armored(self, name: str) -> str:
        return run("gpg", "--homedir", str(self.home), "--batch", "--armor", "--export", self.fingerprints[name])

    def close(self) -> None:
        subprocess.run([tool("gpgconf"), "--homedir", str(self.home), "--kill", "all"],
                       capture_output=True, check=False)


@contextmanager
def gpg_keys(directory: Path) -> Iterator[GpgKeys]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    keys = GpgKeys(directory)
    try:
        yield keys
    finally:
        keys.close()


# --- what a trustgate run must not leave behind ----------------------------------------------------------

GPG_PROGRAMS = frozenset({"gpg", "gpg2", "gpg-agent", "dirmngr", "keyboxd", "scdaemon", "gpgsm"})


def gpg_processes_naming(path: Path) -> list[str]:
    """Command lines of running gpg programs whose command line or environment names `path` (or below it)."""
    needle = os.fsencode(path)
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            command, environment = (entry / "cmdline").read_bytes(), (entry / "environ").read_bytes()
        except OSError:  # exited meanwhile
            continue
        program = os.fsdecode(command.split(b"\0")[0])
        if Path(program).name in GPG_PROGRAMS and (needle in command or needle in environment):
            found.append(os.fsdecode(command.replace(b"\0", b" ")).strip())
    return found


def trustgate_temporaries(directory: Path) -> list[str]:
    """trustgate's temporary directories (gpg homes, serving keys) under `directory`."""
    return sorted(path.name for pattern in ("tg-gpg-*", "trustgate-tls-*") for path in directory.glob(pattern))


# --- lookaside -------------------------------------------------------------------------------------------


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass
class Lookaside:
    """A static HTTP server over skopeo's lookaside staging directory, like a sigstore web server."""

    root: Path
    server: ThreadingHTTPServer

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def signature_dir(self, repository: str, digest: str) -> Path:
        return self.root / f"{repository}@{digest.replace(':', '=')}"

    def write_registries_d(self, directory: Path, registry: Registry) -> Path:
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "trustgate-test.yaml").write_text(json.dumps({"docker": {registry.host: {
            "lookaside": self.url, "lookaside-staging": self.root.as_uri()}}}))
        return directory

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_lookaside(root: Path) -> Lookaside:
    root.mkdir(parents=True, exist_ok=True)
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return Lookaside(root, server)


def registry_get(registry: Registry, path: str, accept: str = f"{OCI_MANIFEST}, {OCI_INDEX}") -> httpx.Response:
    auth = httpx.BasicAuth(*registry.credentials) if registry.credentials else None
    verify: Any = str(registry.tls.ca) if registry.tls else False
    return httpx.get(f"{registry.url}{path}", headers={"Accept": accept}, auth=auth, verify=verify)


# --- fronts of a real registry that add what docker-registry 2.8 lacks -------------------------------------


class _RegistryFront(SimpleHTTPRequestHandler):
    """Forwards a read to the real registry behind it; subclasses answer some paths themselves."""

    upstream: str

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _forward(self, extra_headers: dict[str, str] | None = None) -> None:
        headers = {key: value for key, value in self.headers.items() if key.lower() in ("accept", "authorization")}
        answer = httpx.request(self.command, f"{self.upstream}{self.path}", headers=headers)
        forwarded = {key: value for key, value in answer.headers.items()
                     if key.lower() in ("content-type", "docker-content-digest", "www-authenticate")}
        self._answer(answer.status_code, {**forwarded, **(extra_headers or {})}, answer.content)

    def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


class _ExtensionHandler(_RegistryFront):
    """Forwards /v2/ to the real registry and answers /extensions/v2/<name>/signatures/<digest> itself."""

    signatures: dict[tuple[str, str], list[bytes]]

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if self.path.startswith("/extensions/v2/"):
            name, _, digest = self.path.removeprefix("/extensions/v2/").rpartition("/signatures/")
            entries = [{"schemaVersion": 2, "type": "atomic", "name": f"{digest}@sig{index}",
                        "content": base64.b64encode(content).decode()}
                       for index, content in enumerate(self.signatures.get((name, digest), []))]
            self._answer(200, {"Content-Type": "application/json"}, json.dumps({"signatures": entries}).encode())
        else:
            self._forward({"X-Registry-Supports-Signatures": "1"} if self.path == "/v2/" else None)


@dataclass
class ExtensionRegistry:
    """A plain-HTTP front of a real registry that serves signatures through the registry extension API."""

    server: ThreadingHTTPServer
    signatures: dict[tuple[str, str], list[bytes]]

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_extension_registry(upstream: Registry) -> ExtensionRegistry:
    signatures: dict[tuple[str, str], list[bytes]] = {}
    handler = type("Handler", (_ExtensionHandler,), {"upstream": upstream.url, "signatures": signatures})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return ExtensionRegistry(server, signatures)


# --- a registry offering the OCI referrers API -------------------------------------------------------------


class _ReferrersHandler(_RegistryFront):
    """Forwards reads to the real registry (docker-registry 2.8, which has no referrers API) and answers
    /v2/<name>/referrers/<digest> from the referrers tag schema's index, each entry's artifactType taken from
    its manifest as a registry computes it. The `sha256-<hex>` tags themselves are hidden: whatever finds a
    referrer here found it through the API."""

    api_requests: list[str]

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        path = urllib.parse.urlsplit(self.path).path
        name, separator, digest = path.removeprefix("/v2/").rpartition("/referrers/")
        if path.startswith("/v2/") and separator:
            self.api_requests.append(self.path)
            self._answer(200, {"Content-Type": OCI_INDEX}, json.dumps(self._index(name, digest)).encode())
            return
        if "/manifests/sha256-" in path:
            self._answer(404, {"Content-Type": "application/json"}, b'{"errors":[{"code":"MANIFEST_UNKNOWN"}]}')
            return
        self._forward()

    def _index(self, name: str, digest: str) -> dict[str, Any]:
        accept = {"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"}
        tagged = httpx.get(f"{self.upstream}/v2/{name}/manifests/{digest.replace(':', '-')}", headers=accept)
        manifests = []
        for entry in tagged.json().get("manifests", []) if tagged.status_code == 200 else []:
            manifest = httpx.get(f"{self.upstream}/v2/{name}/manifests/{entry['digest']}", headers=accept).json()
            manifests.append({**entry, "artifactType": manifest.get("artifactType",
                                                                    manifest["config"]["mediaType"])})
        return {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}


@dataclass
class ReferrersRegistry:
    """A plain-HTTP, read-only front of a real registry that offers the OCI referrers API."""

    server: ThreadingHTTPServer
    api_requests: list[str]

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def start_referrers_registry(upstream: Registry) -> ReferrersRegistry:
    api_requests: list[str] = []
    handler = type("Handler", (_ReferrersHandler,), {"upstream": upstream.url, "api_requests": api_requests})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return ReferrersRegistry(server, api_requests)


# --- a bearer-token service (the docker/distribution token flow) ---------------------------------------------


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


class _TokenHandler(SimpleHTTPRequestHandler):
    service: TokenService

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        expected = "Basic " + base64.b64encode(":".join(self.service.credentials).encode()).decode()
        if self.headers.get("Authorization") != expected:
            self._answer(401, {"errors": [{"code": "UNAUTHORIZED"}]})
            return
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
        access = []
        for scope in query.get("scope", []):
            kind, name, actions = scope.split(":")
            access.append({"type": kind, "name": name, "actions": actions.split(",")})
        self.service.issued += 1
        self._answer(200, {"token": self.service.token(access)})

    def _answer(self, status: int, document: dict[str, Any]) -> None:
        body = json.dumps(document).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@dataclass
class TokenService:
    """An HTTPS token endpoint issuing ES256 JWTs that docker-registry's `auth.token` accepts."""

    directory: Path
    tls: TlsFiles
    credentials: tuple[str, str]
    issued: int = 0
    server: ThreadingHTTPServer | None = None

    def __post_init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustgate test token issuer")])
        now = datetime.datetime.now(datetime.UTC)
        self._certificate = (
            x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .sign(self._key, hashes.SHA256())
        )
        self.bundle = self.directory / "token-issuer.pem"
        self.bundle.write_bytes(self._certificate.public_bytes(serialization.Encoding.PEM))

    @property
    def realm(self) -> str:
        assert self.server is not None
        return f"https://127.0.0.1:{self.server.server_address[1]}/token"

    def registry_config(self) -> dict[str, str]:
        return {"realm": self.realm, "service": "trustgate-test", "issuer": "trustgate-test-issuer",
                "rootcertbundle": str(self.bundle)}

    def token(self, access: list[dict[str, Any]]) -> str:
        now = int(time.time())
        header = {"typ": "JWT", "alg": "ES256",
                  "x5c": [base64.b64encode(self._certificate.public_bytes(serialization.Encoding.DER)).decode()]}
        claims = {"iss": "trustgate-test-issuer", "sub": self.credentials[0], "aud": "trustgate-test",
                  "exp": now + 300, "nbf": now - 60, "iat": now, "jti": _b64url(os.urandom(12)), "access": access}
        signing_input = f"{_b64url(json.dumps(header).encode())}.{_b64url(json.dumps(claims).encode())}"
        r, s = decode_dss_signature(self._key.sign(signing_input.encode(), ec.ECDSA(hashes.SHA256())))
        return f"{signing_input}.{_b64url(r.to_bytes(32, 'big') + s.to_bytes(32, 'big'))}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def start_token_service(directory: Path, tls: TlsFiles, credentials: tuple[str, str]) -> TokenService:
    directory.mkdir(parents=True, exist_ok=True)
    service = TokenService(directory, tls, credentials)
    handler = type("Handler", (_TokenHandler,), {"service": service})
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(tls.cert, tls.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    service.server = server
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return service
