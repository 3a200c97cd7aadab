"""A real Kubernetes control plane on 127.0.0.1: etcd and kube-apiserver 1.20 with a throw-away CA.

The API server runs with RBAC authorization and the admission webhook plugins, authenticates static bearer
tokens (one in system:masters for the test, one per trustgate component, so the RBAC rules trustgate needs
are exercised), and has no controller-manager: objects are stored and admitted, pods stay Pending.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
import secrets
import ssl
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID

from tests.e2e import infra

BUILD_SCRIPT = infra.REPO_ROOT / "scripts" / "build-kube-apiserver.sh"
CACHED_BINARY = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "trustgate" / "kube-apiserver-1.20"
USERS = {"admin": "system:masters", "trustgate-controller": "", "trustgate-webhook": ""}
NAMESPACE = "trustgate-system"
RBAC = infra.REPO_ROOT / "deploy" / "rbac.yaml"
CRDS = infra.REPO_ROOT / "crds"


def kube_apiserver_binary() -> str:
    if not os.access(CACHED_BINARY, os.X_OK):
        raise infra.MissingToolError(f"kube-apiserver 1.20 is not built: run {BUILD_SCRIPT} (make e2e-cluster does)")
    return str(CACHED_BINARY)


def _pem(certificate: x509.Certificate) -> bytes:
    return certificate.public_bytes(serialization.Encoding.PEM)


def _write_key(path: Path, key: Any) -> None:
    path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    path.chmod(0o600)


def _serving_pair(directory: Path) -> tuple[Path, Path, Path]:
    """(CA cert, server cert, server key) for 127.0.0.1, valid one day."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "trustgate test kube CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "apiserver")]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    (directory / "ca.crt").write_bytes(_pem(ca))
    (directory / "apiserver.crt").write_bytes(_pem(cert))
    _write_key(directory / "apiserver.key", key)
    return directory / "ca.crt", directory / "apiserver.crt", directory / "apiserver.key"


@dataclass
class ApiServer:
    url: str
    ca: Path
    directory: Path
    tokens: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # How kube-apiserver was started, so that it can be started again the same way (etcd keeps running).
    command: list[str] = field(default_factory=list)

    def kubeconfig(self, user: str) -> Path:
        """A kubeconfig file authenticating as `user` (admin, trustgate-controller, trustgate-webhook)."""
        path = self.directory / f"kubeconfig-{user}"
        if not path.exists():
            path.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "test",
                "clusters": [{"name": "test", "cluster": {"server": self.url,
                                                          "certificate-authority": str(self.ca)}}],
                "users": [{"name": user, "user": {"token": self.tokens[user]}}],
                "contexts": [{"name": "test", "context": {"cluster": "test", "user": user}}],
            }))
            path.chmod(0o600)
        return path

    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        completed = subprocess.run([infra.tool("kubectl"), "--kubeconfig", str(self.kubeconfig("admin")), *args],
                                   capture_output=True, text=True, input=input, timeout=60, check=False)
        if check and completed.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {completed.stderr}")
        return completed

    def apply(self, *documents: dict[str, Any]) -> None:
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(documents))

    def get(self, *args: str) -> Any:
        return yaml.safe_load(self.kubectl("get", "-o", "json", *args).stdout)

    def start_trustgate(self, user: str, *args: str, log: Path,
                        env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `trustgate ARGS` as `user` (its kubeconfig), its output going to `log`."""
        environment = {**os.environ, "KUBECONFIG": str(self.kubeconfig(user)),
                       "PATH": f"{infra.TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}", **(env or {})}
        return subprocess.Popen([sys.executable, "-m", "webhook", *args], stdout=log.open("wb"),
                                stderr=subprocess.STDOUT, env=environment, cwd=infra.REPO_ROOT)

    def stop(self) -> None:
        for process in reversed(self.processes):
            infra.stop(process)

    @property
    def api_process(self) -> subprocess.Popen[bytes]:
        return self.processes[-1]

    def stop_api(self) -> None:
        """Stop kube-apiserver (by its PID), keeping etcd: an API server outage."""
        infra.stop(self.api_process)

    def start_api(self) -> None:
        """Start kube-apiserver again, on the same port with the same flags; return once it is ready."""
        log = self.directory / "kube-apiserver.log"
        self.processes[-1] = subprocess.Popen(self.command, stdout=log.open("ab"), stderr=subprocess.STDOUT)
        _wait_ready(self.url, self.ca, self.tokens["admin"], self.api_process, log)


def _user_bindings() -> list[dict[str, Any]]:
    """Bind the roles of deploy/rbac.yaml to the test's token users, as they are bound to ServiceAccounts."""
    def binding(kind: str, user: str, namespace: str | None = None) -> dict[str, Any]:
        metadata: dict[str, Any] = {"name": f"{user}-test-user"}
        if namespace:
            metadata["namespace"] = namespace
        return {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": f"{kind}Binding", "metadata": metadata,
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": user},
                "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}]}

    return [binding("ClusterRole", "trustgate-controller"), binding("Role", "trustgate-controller", NAMESPACE),
            binding("ClusterRole", "trustgate-webhook"), binding("Role", "trustgate-webhook", NAMESPACE)]


def install_trustgate_resources(server: ApiServer) -> None:
    """trustgate's CRDs and deploy/rbac.yaml, its roles bound to the test's token users."""
    server.kubectl("apply", "-f", str(CRDS))
    for crd in ("truststores.trustgate.dev", "trustpolicies.trustgate.dev"):
        server.kubectl("wait", "--for", "condition=established", "--timeout", "60s", f"crd/{crd}")
    server.kubectl("apply", "-f", str(RBAC))
    server.apply(*_user_bindings())


def _wait_ready(url: str, ca: Path, token: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"kube-apiserver exited with {process.returncode}: {log.read_text()[-3000:]}")
        try:
            response = httpx.get(f"{url}/readyz", verify=ssl.create_default_context(cafile=str(ca)),
                                 headers={"Authorization": f"Bearer {token}"}, timeout=2)
            if response.status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"kube-apiserver was not ready within 120 s: {log.read_text()[-3000:]}")


def start(directory: Path) -> ApiServer:
    binary = kube_apiserver_binary()
    etcd = infra.tool("etcd")
    directory.mkdir(parents=True, exist_ok=True)
    client_port, peer_port, api_port = infra.free_port(), infra.free_port(), infra.free_port()
    server = ApiServer(f"https://127.0.0.1:{api_port}", directory / "ca.crt", directory,
                       {user: secrets.token_hex(16) for user in USERS})
    etcd_log = (directory / "etcd.log").open("wb")
    server.processes.append(subprocess.Popen([
        etcd, "--data-dir", str(directory / "etcd"), "--name", "test",
        "--listen-client-urls", f"http://127.0.0.1:{client_port}",
        "--advertise-client-urls", f"http://127.0.0.1:{client_port}",
        "--listen-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer_port}",
        "--initial-cluster", f"test=http://127.0.0.1:{peer_port}",
    ], stdout=etcd_log, stderr=subprocess.STDOUT))
    try:
        infra.wait_until_listening(client_port, server.processes[0], timeout=30)
        ca, cert, key = _serving_pair(directory)
        account_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        _write_key(directory / "sa.key", account_key)
        (directory / "sa.pub").write_bytes(account_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        (directory / "tokens.csv").write_text("".join(
            f'{server.tokens[user]},{user},{user},"{group}"\n' if group else f"{server.tokens[user]},{user},{user}\n"
            for user, group in USERS.items()))
        log = directory / "kube-apiserver.log"
        server.command = [
            binary,
            "--etcd-servers", f"http://127.0.0.1:{client_port}",
            "--bind-address", "127.0.0.1", "--advertise-address", "127.0.0.1",
            "--secure-port", str(api_port), "--insecure-port", "0",
            "--tls-cert-file", str(cert), "--tls-private-key-file", str(key), "--client-ca-file", str(ca),
            "--token-auth-file", str(directory / "tokens.csv"),
            "--authorization-mode", "RBAC",
            "--enable-admission-plugins", "NamespaceLifecycle,MutatingAdmissionWebhook,ValidatingAdmissionWebhook",
            "--disable-admission-plugins", "ServiceAccount",
            "--service-account-key-file", str(directory / "sa.pub"),
            "--service-account-signing-key-file", str(directory / "sa.key"),
            "--service-account-issuer", "https://kubernetes.default.svc",
            "--service-cluster-ip-range", "10.0.0.0/24",
            "--endpoint-reconciler-type", "none",
            "--cert-dir", str(directory / "certs"),
        ]
        server.processes.append(subprocess.Popen(server.command, stdout=log.open("wb"), stderr=subprocess.STDOUT))
        _wait_ready(server.url, ca, server.tokens["admin"], server.api_process, log)
    except BaseException:
        server.stop()
        raise
    return server
