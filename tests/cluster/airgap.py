"""The chart README's air-gapped install, run for real inside a network namespace of its own.

`python -m tests.cluster.airgap WORKDIR IMAGE_ARCHIVE` is started by test_chart_cluster.py under
`unshare --net`: the only network is loopback, and on it only what an air-gapped cluster has: a private
registry (TLS, private CA) and the API server (with etcd). Each README step is run with the real tool: skopeo
mirrors the image tarball (trustgate's own image, built by scripts/build-image.sh), `helm install` installs
the packaged chart, kubectl applies the trust objects and creates pods. One is admitted, one refused; then
`helm upgrade` and `helm uninstall` are checked.

The API server is Debian's kube-apiserver 1.20, older than the chart's `kubeVersion` (1.29), and has no
kubelet, kube-proxy or Service routing. What is adapted for it, and why:
- the chart is packaged from a copy whose `kubeVersion` admits 1.20 (nothing else in it changes);
- `webhook.podDisruptionBudget.enabled=false`: policy/v1 PodDisruptionBudget exists from 1.21;
- namespaces get the `kubernetes.io/metadata.name` label by hand: 1.21 and newer set it themselves;
- a Helm post-renderer points the webhooks' clientConfig at https://127.0.0.1:PORT instead of the Service:
  without kube-proxy and Endpoints the API server cannot reach a Service (the rendered Service reference
  itself is checked by tests/chart);
- the chart's pods stay Pending, so the controller and the webhook run here as processes, with the exact
  arguments of the installed Deployments, authenticated with their ServiceAccounts' tokens. The only
  argument changes: addresses bound to 127.0.0.1, `--webhook-host=127.0.0.1` on the serving certificate
  (the API server reaches the webhook by that address), and `--registry-ca` pointing at a file holding the
  chart's ConfigMap content, where the kubelet would have mounted it.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
import textwrap
from pathlib import Path

import yaml

from tests.cluster import apiserver
from tests.cluster.conftest import wait_for
from tests.e2e import infra
from tests.helpers import key_store, trust_policy

NAMESPACE = "trustgate-system"
CHART = infra.REPO_ROOT / "charts" / "trustgate"
COSIGN_PASSWORD = "airgap-test"


def step(message: str) -> None:
    print(f"== {message}", flush=True)


def assert_isolated() -> None:
    """Only loopback exists: nothing here can reach another host."""
    # /proc/self/net follows the process's network namespace (/sys/class/net shows the one sysfs was mounted in).
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    interfaces = sorted(line.split(":", 1)[0].strip() for line in lines)
    assert interfaces == ["lo"], f"not an isolated network namespace: interfaces {interfaces}"


class Walkthrough:
    def __init__(self, work: Path, image_archive: Path, stack: contextlib.ExitStack) -> None:
        self.work = work
        self.image_archive = image_archive
        self.stack = stack
        tls = infra.make_tls(work / "registry-tls")
        self.registry = infra.start_registry(work / "registry", tls=tls)
        stack.callback(self.registry.stop)
        self.ca = tls.ca
        self.mirror = self.registry.host
        self.cluster = apiserver.start(work / "kube")
        stack.callback(self.cluster.stop)
        self.helm_env = {**os.environ, "KUBECONFIG": str(self.cluster.kubeconfig("admin")),
                         "HELM_CACHE_HOME": str(work / "helm" / "cache"),
                         "HELM_CONFIG_HOME": str(work / "helm" / "config"),
                         "HELM_DATA_HOME": str(work / "helm" / "data")}
        self.processes: list[tuple[str, subprocess.Popen[bytes], Path]] = []
        stack.callback(self._stop_processes)

    def _stop_processes(self) -> None:
        for name, process, log in reversed(self.processes):
            infra.stop(process)
            print(f"--- {name} log\n{log.read_text(errors='replace')[-6000:]}")

    # --- tools ---------------------------------------------------------------------------------------

    def helm(self, *args: str) -> str:
        completed = subprocess.run([infra.tool("helm"), *args], capture_output=True, text=True, timeout=180,
                                   env=self.helm_env, check=False)
        assert completed.returncode == 0, f"helm {' '.join(args)}: {completed.stderr}"
        return completed.stdout + completed.stderr

    def kubectl(self, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return self.cluster.kubectl(*args, input=input, check=False)

    def run_pod(self, name: str, image: str, namespace: str = "apps") -> tuple[bool, str]:
        completed = self.kubectl("-n", namespace, "run", name, f"--image={image}", "--restart=Never")
        return completed.returncode == 0, completed.stdout + completed.stderr

    def start(self, name: str, account: str, args: list[str]) -> None:
        log = self.work / f"{name}.log"
        env = {**os.environ, "KUBECONFIG": str(self.service_account_kubeconfig(account)),
               "TMPDIR": str(self.work), "PATH": f"{infra.TOOLS_BIN}{os.pathsep}{os.environ.get('PATH', '')}"}
        process = subprocess.Popen([sys.executable, "-m", "webhook", *args], stdout=log.open("wb"),
                                   stderr=subprocess.STDOUT, env=env, cwd=infra.REPO_ROOT)
        self.processes.append((name, process, log))

    def service_account_kubeconfig(self, account: str) -> Path:
        """A kubeconfig with a token the API server issued for the chart's ServiceAccount (TokenRequest)."""
        path = self.work / f"kubeconfig-{account}"
        if not path.exists():
            completed = self.kubectl("-n", NAMESPACE, "create", "token", account, "--duration=2h")
            assert completed.returncode == 0, completed.stderr
            path.write_text(yaml.safe_dump({
                "apiVersion": "v1", "kind": "Config", "current-context": "sa",
                "clusters": [{"name": "kube", "cluster": {"server": self.cluster.url,
                                                          "certificate-authority": str(self.cluster.ca)}}],
                "users": [{"name": account, "user": {"token": completed.stdout.strip()}}],
                "contexts": [{"name": "sa", "context": {"cluster": "kube", "user": account}}],
            }))
            path.chmod(0o600)
        return path

    # --- what the admin brings into the air gap ------------------------------------------------------

    def package_chart(self) -> Path:
        copy = self.work / "chart" / "trustgate"
        shutil.copytree(CHART, copy)
        chart_yaml = copy / "Chart.yaml"
        text = chart_yaml.read_text()
        assert 'kubeVersion: ">=1.29.0-0"' in text
        chart_yaml.write_text(text.replace('kubeVersion: ">=1.29.0-0"', 'kubeVersion: ">=1.20.0-0"'))
        self.helm("package", str(copy), "--destination", str(self.work))
        return self.work / "trustgate-0.1.0.tgz"

    def post_renderer(self, port: int) -> Path:
        script = self.work / "webhooks-by-url"
        script.write_text(textwrap.dedent(f"""\
            #!{sys.executable}
            # Test adaptation: the API server reaches the webhooks by URL (no Service routing here).
            import sys, yaml
            documents = [d for d in yaml.safe_load_all(sys.stdin) if d]
            for document in documents:
                if document["kind"].endswith("WebhookConfiguration"):
                    for hook in document["webhooks"]:
                        service = hook["clientConfig"].pop("service")
                        hook["clientConfig"]["url"] = "https://127.0.0.1:{port}" + service["path"]
            yaml.safe_dump_all(documents, sys.stdout)
            """))
        script.chmod(0o755)
        return script

    def push_app(self, repository: str) -> str:
        layout = infra.write_oci_layout(self.work / repository.replace("/", "_"), seed=repository)
        return infra.push(layout, self.registry, repository, "v1")

    def cosign_key(self) -> tuple[Path, str]:
        prefix = self.work / "release"
        infra.run("cosign", "generate-key-pair", "--output-key-prefix", str(prefix),
                  env={"COSIGN_PASSWORD": COSIGN_PASSWORD, "HOME": str(self.work)})
        return prefix.with_suffix(".key"), prefix.with_suffix(".pub").read_text()

    def cosign_sign(self, key: Path, reference: str) -> None:
        infra.run("cosign", "sign", "--key", str(key), "--tlog-upload=false", "-y", reference,
                  env={"COSIGN_PASSWORD": COSIGN_PASSWORD, "HOME": str(self.work), "SSL_CERT_FILE": str(self.ca)})

    # --- the installed objects -----------------------------------------------------------------------

    def deployment_args(self, name: str) -> list[str]:
        deployment = self.cluster.get("deployment", "-n", NAMESPACE, name)
        args: list[str] = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        return args

    def deployment_image(self, name: str) -> str:
        image: str = self.cluster.get("deployment", "-n", NAMESPACE, name)["spec"]["template"]["spec"][
            "containers"][0]["image"]
        return image

    def ca_bundles(self) -> list[str]:
        return [hook["clientConfig"].get("caBundle", "")
                for kind in ("validatingwebhookconfiguration", "mutatingwebhookconfiguration")
                for hook in self.cluster.get(kind, "trustgate")["webhooks"]]

    def configurations(self) -> list[str]:
        completed = self.kubectl("get", "validatingwebhookconfigurations,mutatingwebhookconfigurations",
                                 "-o", "name")
        return [line for line in completed.stdout.splitlines() if "trustgate" in line]


def replace_flag(args: list[str], flag: str, value: str) -> list[str]:
    replaced = [f"{flag}={value}" if arg.startswith(f"{flag}=") else arg for arg in args]
    assert replaced != args or f"{flag}={value}" in args, f"{flag} is not among {args}"
    return replaced


def served_certificate_verifies(port: int, ca_pem: str, hostname: str) -> bool:
    context = ssl.create_default_context(cadata=ca_pem)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=hostname):
        return True


def walkthrough(work: Path, image_archive: Path) -> None:
    assert_isolated()
    with contextlib.ExitStack() as stack:
        world = Walkthrough(work, image_archive, stack)
        cluster = world.cluster
        webhook_port = infra.free_port()

        step("1. mirror the image into the private registry")
        infra.run("skopeo", "--insecure-policy", "copy", "--quiet", "--dest-cert-dir", str(world.ca.parent / "ca"),
                  f"oci-archive:{world.image_archive}", f"docker://{world.mirror}/trustgate/trustgate:0.1.0")
        inspected = json.loads(infra.run("skopeo", "inspect", "--cert-dir", str(world.ca.parent / "ca"),
                                         f"docker://{world.mirror}/trustgate/trustgate:0.1.0"))
        trustgate_digest = inspected["Digest"]
        signed_digest = world.push_app("apps/signed")
        world.push_app("apps/unsigned")
        key, public_key = world.cosign_key()
        world.cosign_sign(key, f"{world.mirror}/apps/signed@{signed_digest}")

        step("2. install from the tarball")
        for namespace in ("apps", NAMESPACE):
            assert world.kubectl("create", "namespace", namespace).returncode == 0
        for namespace in ("default", "kube-system", "apps", NAMESPACE):
            world.kubectl("label", "--overwrite", "namespace", namespace, f"kubernetes.io/metadata.name={namespace}")
        tarball = world.package_chart()
        (work / "registry-ca.pem").write_text(world.ca.read_text())
        install_values = ["--set", f"global.imageRegistry={world.mirror}",
                          "--set", f"image.digest={trustgate_digest}",
                          "--set", "webhook.registry.allowedCIDRs={127.0.0.1/32}",
                          "--set-file", f"webhook.registry.ca.certificates={work / 'registry-ca.pem'}",
                          "--set", "webhook.podDisruptionBudget.enabled=false",
                          "--post-renderer", str(world.post_renderer(webhook_port))]
        world.helm("install", "trustgate", str(tarball), "--namespace", NAMESPACE, "--create-namespace",
                   *install_values)
        for deployment in ("trustgate-controller", "trustgate-webhook"):
            assert world.deployment_image(deployment) == f"{world.mirror}/trustgate/trustgate@{trustgate_digest}"

        step("before the first certificate: fail closed, trustgate's own namespace unaffected")
        assert world.ca_bundles() == ["", ""]
        admitted, output = world.run_pod("early", f"{world.mirror}/apps/signed:v1")
        assert not admitted and "failed calling webhook" in output, output
        admitted, output = world.run_pod("own", f"{world.mirror}/apps/unsigned:v1", namespace=NAMESPACE)
        assert admitted, output

        controller_args = replace_flag(world.deployment_args("trustgate-controller"), "--liveness",
                                       f"http://127.0.0.1:{infra.free_port()}/healthz")
        world.start("controller", "trustgate-controller", [*controller_args, "--webhook-host=127.0.0.1"])
        registry_ca = work / "mounted-registry-ca.crt"
        registry_ca.write_text(cluster.get("configmap", "-n", NAMESPACE, "trustgate-registry-ca")["data"]["ca.crt"])
        webhook_args = replace_flag(world.deployment_args("trustgate-webhook"), "--host", "127.0.0.1")
        webhook_args = replace_flag(webhook_args, "--port", str(webhook_port))
        webhook_args = replace_flag(webhook_args, "--registry-ca", str(registry_ca))
        world.start("webhook", "trustgate-webhook", webhook_args)

        step("3. trust the release key; 4. wait for the controller to accept it")
        cluster.apply(key_store("release", [{"name": "release", "publicKey": public_key}]),
                      trust_policy("release", [f"{world.mirror}/apps/**"],
                                   [{"name": "release", "cosign": {"trustStore": "release"}}]))
        waited = world.kubectl("wait", "--for=condition=Ready", "truststore/release", "trustpolicy/release",
                               "--timeout=120s")
        assert waited.returncode == 0, waited.stderr
        ca_bundle = wait_for("the controller to fill both caBundles",
                             lambda: len(set(world.ca_bundles()) - {""}) == 1 and world.ca_bundles()[0])
        ca_pem = base64.b64decode(ca_bundle).decode()
        infra.wait_until_listening(webhook_port, world.processes[-1][1], timeout=60)
        for name in (f"trustgate-webhook.{NAMESPACE}.svc", "127.0.0.1"):
            assert served_certificate_verifies(webhook_port, ca_pem, name)

        step("5. a signed image is admitted (and pinned), an unsigned one refused with the reason")
        wait_for("the webhook to take part in admission", lambda: "no signatures found" in world.run_pod(
            "probe", f"{world.mirror}/apps/unsigned:v1")[1], timeout=90)
        admitted, output = world.run_pod("signed", f"{world.mirror}/apps/signed:v1")
        assert admitted, output
        stored = cluster.get("pod", "-n", "apps", "signed")["spec"]["containers"][0]["image"]
        assert stored == f"{world.mirror}/apps/signed:v1@{signed_digest}"
        admitted, output = world.run_pod("unsigned", f"{world.mirror}/apps/unsigned:v1")
        assert not admitted
        assert 'admission webhook "validate.trustgate.dev" denied the request' in output or (
            'admission webhook "mutate.trustgate.dev" denied the request' in output), output
        assert "no signatures found" in output

        step("helm upgrade keeps the caBundle and keeps admissions answered")
        world.helm("upgrade", "trustgate", str(tarball), "--namespace", NAMESPACE, "--reuse-values",
                   "--set", "webhook.logLevel=debug", "--post-renderer", str(world.post_renderer(webhook_port)))
        assert world.ca_bundles() == [ca_bundle, ca_bundle]
        admitted, output = world.run_pod("after-upgrade", f"{world.mirror}/apps/signed:v1")
        assert admitted, output
        assert "--log-level=debug" in world.deployment_args("trustgate-webhook")

        step("helm uninstall removes the webhooks with the rest, and pods are admitted afterwards")
        output = world.helm("uninstall", "trustgate", "--namespace", NAMESPACE, "--debug")
        deleted = re.findall(r'Starting delete for "[^"]+" (\w+)', output)
        print(f"helm uninstall deleted, in order: {', '.join(deleted)}")
        assert {"ValidatingWebhookConfiguration", "MutatingWebhookConfiguration", "Service"} <= set(deleted)
        assert world.configurations() == []
        for name, process, _ in world.processes:
            infra.stop(process)
            print(f"{name} exited with {process.returncode}")
        admitted, output = world.run_pod("after-uninstall", f"{world.mirror}/apps/unsigned:v1")
        assert admitted, output
        assert world.configurations() == [], "the controller recreated a webhook configuration"
    step("walkthrough passed")


def main(argv: list[str]) -> int:
    work = Path(argv[0])
    work.mkdir(parents=True, exist_ok=True)
    walkthrough(work, Path(argv[1]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
