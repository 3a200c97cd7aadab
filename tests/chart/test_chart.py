"""The Helm chart as rendered by the real helm: lint, schema, Kubernetes schemas, and what each object must hold.

Rendered objects are validated with kubernetes-validate (strict: unknown fields fail) for the oldest
supported Kubernetes, a current one and the newest schemas available. Every pod template is checked for the
restricted Pod Security Standard, every image for the air-gapped registry, the webhook configurations for
the rules and exclusions trustgate relies on, and the arguments of both components are parsed by
trustgate's own command line, so a flag the chart passes cannot drift from the CLI.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from tests.e2e import infra
from webhook.admission import POD_SPEC_PATHS
from webhook.cli import build_parser
from webhook.registry.mirrors import RegistryMirrors

CHART = infra.REPO_ROOT / "charts" / "trustgate"
VALUES = Path(__file__).parent
NAMESPACE = "trustgate-system"
KUBERNETES_VERSIONS = ("1.29.0", "1.33.0", "1.36.0")
VALUE_SETS = {"default": (), "airgap": ("-f", str(VALUES / "values-airgap.yaml")),
              "cert-manager": ("-f", str(VALUES / "values-cert-manager.yaml"))}
AIRGAP_REGISTRY = "registry.internal:5000/mirror"
# Kinds of other projects' CRDs: kubernetes-validate has no schema for them; their fields are checked below.
FOREIGN_KINDS = {"Certificate", "Issuer", "ServiceMonitor"}


def helm(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([infra.tool("helm"), *args], capture_output=True, text=True, timeout=60, check=False)


def render(*args: str) -> list[dict[str, Any]]:
    result = helm("template", "trustgate", str(CHART), "--namespace", NAMESPACE, "--include-crds", *args)
    assert result.returncode == 0, result.stderr
    return [document for document in yaml.safe_load_all(result.stdout) if document]


@pytest.fixture(scope="module", params=sorted(VALUE_SETS))
def rendered(request: pytest.FixtureRequest) -> list[dict[str, Any]]:
    return render(*VALUE_SETS[request.param])


def find(documents: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    matches = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(matches) == 1, f"expected one {kind} {name or ''}, found {len(matches)}"
    return matches[0]


def pod_specs(documents: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    for document in documents:
        if document["kind"] in ("Deployment", "Job", "DaemonSet", "StatefulSet"):
            yield f"{document['kind']} {document['metadata']['name']}", document["spec"]["template"]["spec"]


def container_args(documents: list[dict[str, Any]], deployment: str) -> list[str]:
    args: list[str] = find(documents, "Deployment", deployment)["spec"]["template"]["spec"]["containers"][0]["args"]
    return args


def test_helm_lint_strict_passes_for_every_value_set() -> None:
    for name, args in VALUE_SETS.items():
        result = helm("lint", "--strict", str(CHART), *args)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_rendered_objects_match_the_kubernetes_schemas_strictly(rendered: list[dict[str, Any]],
                                                                version: str) -> None:
    checked = 0
    for document in rendered:
        if document["kind"] in FOREIGN_KINDS:
            continue
        try:
            kubernetes_validate.validate(document, version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{document['kind']} {document['metadata']['name']} for Kubernetes {version}: {exc.message}")
        checked += 1
    assert checked >= 14


@pytest.mark.parametrize(("flag", "message"), [
    ("webhook.replicas=-1", "webhook.replicas: Must be greater than or equal to 1"),
    ("webhook.failurePolicy=Sometimes", 'webhook.failurePolicy must be one of the following: "Fail", "Ignore"'),
    ("surprise=1", "Additional property surprise is not allowed"),
    ("webhook.surprise=1", "Additional property surprise is not allowed"),
    ("webhook.noMatch=maybe", "webhook.noMatch must be one of the following"),
    ("image.digest=sha256:abc", "image.digest: Does not match pattern"),
    ("webhook.registry.allowedCIDRs={example.com}", "webhook.registry.allowedCIDRs.0: Does not match pattern"),
    ("controller.replicas=3", "controller.replicas: Must be less than or equal to 2"),
    ("webhook.port=443", "webhook.port: Must be greater than or equal to 1024"),
    ("global.imageRegistry=https://registry.internal", "global.imageRegistry: Does not match pattern"),
    ("webhook.deadlineSeconds=10", "webhook.deadlineSeconds must be below webhook.timeoutSeconds"),
])
def test_values_the_chart_must_refuse_are_refused_with_the_key_named(flag: str, message: str) -> None:
    result = helm("template", "trustgate", str(CHART), "--set", flag)
    assert result.returncode != 0
    assert message in result.stderr


def test_chart_crds_are_the_generated_crds() -> None:
    top_level = sorted(path.name for path in (infra.REPO_ROOT / "crds").glob("*.yaml"))
    assert sorted(path.name for path in (CHART / "crds").glob("*.yaml")) == top_level
    for name in top_level:
        assert (CHART / "crds" / name).read_bytes() == (infra.REPO_ROOT / "crds" / name).read_bytes(), (
            f"charts/trustgate/crds/{name} differs from crds/{name}: run `make crds`")


def test_chart_metadata_states_helm_3_and_the_oldest_kubernetes() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["kubeVersion"] == f">={KUBERNETES_VERSIONS[0]}-0"
    result = helm("template", "trustgate", str(CHART), "--kube-version", "1.28.9")
    assert result.returncode != 0 and "incompatible with Kubernetes v1.28.9" in result.stderr


def test_every_pod_runs_restricted(rendered: list[dict[str, Any]]) -> None:
    specs = list(pod_specs(rendered))
    assert len(specs) == 2
    for where, spec in specs:
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, where
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, where
        assert "automountServiceAccountToken" in spec, f"{where}: token mounting must be decided explicitly"
        for container in spec["containers"] + spec.get("initContainers", []):
            context = container["securityContext"]
            assert context["readOnlyRootFilesystem"] is True, where
            assert context["allowPrivilegeEscalation"] is False, where
            assert context["capabilities"] == {"drop": ["ALL"]}, where
            assert context["seccompProfile"] == {"type": "RuntimeDefault"}, where
            # gpg homes and certificate files need a writable directory on a read-only root.
            mounts = {mount["mountPath"]: mount["name"] for mount in container["volumeMounts"]}
            volumes = {volume["name"]: volume for volume in spec["volumes"]}
            assert "emptyDir" in volumes[mounts["/tmp"]], where
            assert {"name": "TMPDIR", "value": "/tmp"} in container["env"], where
    for account in (d for d in rendered if d["kind"] == "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_component_arguments_are_accepted_by_trustgate_itself(rendered: list[dict[str, Any]]) -> None:
    parser = build_parser()
    webhook = parser.parse_args(container_args(rendered, "trustgate-webhook"))
    assert (webhook.command, webhook.namespace, webhook.host) == ("serve", NAMESPACE, "0.0.0.0")
    configuration = find(rendered, "ValidatingWebhookConfiguration")["webhooks"][0]
    assert webhook.deadline < configuration["timeoutSeconds"]
    controller = parser.parse_args(container_args(rendered, "trustgate-controller"))
    assert (controller.command, controller.namespace) == ("controller", NAMESPACE)
    assert controller.webhook_configuration == configuration_name(rendered)
    assert controller.webhook_service == configuration["clientConfig"]["service"]["name"]


def configuration_name(rendered: list[dict[str, Any]]) -> str:
    name: str = find(rendered, "ValidatingWebhookConfiguration")["metadata"]["name"]
    return name


def test_values_reach_the_flags_they_name() -> None:
    documents = render("-f", str(VALUES / "values-airgap.yaml"), "--set", "webhook.noMatch=warn",
                       "--set", "webhook.limits.maxSignaturesPerSource=5", "--set-json", "webhook.deadlineSeconds=7.5",
                       "--set", "webhook.registry.insecure={plain.internal:5000}",
                       "--set", "webhook.registry.mirrorLookasides={registry.internal:5000/dockerhub=https://sigs}")
    args = build_parser().parse_args(container_args(documents, "trustgate-webhook"))
    assert args.no_match == "warn" and args.deadline == 7.5 and args.max_signatures_per_source == 5
    assert args.allow_registry_cidr == ["10.20.0.0/16"]
    assert args.registry_delegate == ["registry.internal:5000=auth.internal"]
    assert args.insecure_registry == ["plain.internal:5000"]
    assert args.registry_mirror == ["docker.io=registry.internal:5000/dockerhub"]
    assert args.registry_mirror_lookaside == ["registry.internal:5000/dockerhub=https://sigs"]
    assert args.registry_mirror_fallback == []  # air-gapped: the upstream is never tried
    RegistryMirrors.build(args.registry_mirror, args.registry_mirror_fallback, args.registry_mirror_lookaside)
    spec = find(documents, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]
    mounts = {m["mountPath"]: m["name"] for m in spec["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert Path(args.registry_auth).parent.as_posix() in mounts
    assert volumes[mounts[Path(args.registry_auth).parent.as_posix()]]["secret"]["secretName"] == (
        find(documents, "Secret", "trustgate-registry-credentials")["metadata"]["name"])
    assert volumes[mounts[Path(args.registry_ca).parent.as_posix()]]["configMap"]["name"] == "trustgate-registry-ca"
    assert "BEGIN CERTIFICATE" in find(documents, "ConfigMap", "trustgate-registry-ca")["data"]["ca.crt"]
    controller = build_parser().parse_args(container_args(documents, "trustgate-controller"))
    assert controller.key_source_namespace == ["release-keys"]
    assert args.log_format == controller.log_format == "json"  # the default for log pipelines
    text = render("--set", "webhook.logFormat=text")
    assert build_parser().parse_args(container_args(text, "trustgate-webhook")).log_format == "text"


def test_existing_secrets_are_used_as_they_are() -> None:
    documents = render("--set", "webhook.registry.credentials.existingSecret=pull",
                       "--set", "webhook.registry.ca.existingSecret=cas")
    assert not [d for d in documents if d["kind"] in ("Secret", "ConfigMap")]
    volumes = {v["name"]: v for v in
               find(documents, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]["volumes"]}
    assert volumes["registry-auth"]["secret"]["secretName"] == "pull"
    assert volumes["registry-ca"]["secret"]["secretName"] == "cas"


def test_webhook_configurations_are_fail_closed_and_cover_every_kind_trustgate_reads(
        rendered: list[dict[str, Any]]) -> None:
    service = find(rendered, "Service", "trustgate-webhook")
    deployment = find(rendered, "Deployment", "trustgate-webhook")
    ports = deployment["spec"]["template"]["spec"]["containers"][0]["ports"]
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}]
    assert [port["name"] for port in ports] == ["https"]
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    read_kinds = set()
    for group, kind in POD_SPEC_PATHS:
        read_kinds.add((group, "pods/ephemeralcontainers" if kind == "EphemeralContainers" else f"{kind.lower()}s"))
    read_kinds.add(("", "pods/ephemeralcontainers"))
    for kind, path in (("ValidatingWebhookConfiguration", "/validate"), ("MutatingWebhookConfiguration", "/mutate")):
        [hook] = find(rendered, kind)["webhooks"]
        assert hook["clientConfig"]["service"] == {"name": "trustgate-webhook", "namespace": NAMESPACE,
                                                   "path": path, "port": 443}
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["timeoutSeconds"] == 10
        assert hook["matchPolicy"] == "Equivalent"
        assert hook.get("reinvocationPolicy") == ("IfNeeded" if kind.startswith("Mutating") else None)
        covered = {(group, resource) for rule in hook["rules"] for group in rule["apiGroups"]
                   for resource in rule["resources"]}
        assert read_kinds <= covered, f"{kind} misses {read_kinds - covered}"
        assert all(set(rule["operations"]) == {"CREATE", "UPDATE"} for rule in hook["rules"])
        [exclusion] = hook["namespaceSelector"]["matchExpressions"]
        assert exclusion["key"] == "kubernetes.io/metadata.name" and exclusion["operator"] == "NotIn"
        assert {"kube-system", NAMESPACE} <= set(exclusion["values"])


def test_user_excluded_namespaces_and_selectors_are_added() -> None:
    documents = render("--set", "webhook.excludedNamespaces={monitoring,kube-system}",
                       "--set", "webhook.namespaceSelectorExpressions[0].key=trustgate.dev/enforce",
                       "--set", "webhook.namespaceSelectorExpressions[0].operator=Exists")
    hook = find(documents, "ValidatingWebhookConfiguration")["webhooks"][0]
    exclusion, extra = hook["namespaceSelector"]["matchExpressions"]
    assert exclusion["values"] == ["kube-system", NAMESPACE, "monitoring"]
    assert extra == {"key": "trustgate.dev/enforce", "operator": "Exists"}


def test_mutating_webhook_can_be_left_out() -> None:
    assert not [d for d in render("--set", "webhook.mutating.enabled=false")
                if d["kind"] == "MutatingWebhookConfiguration"]


def test_webhook_replicas_spread_and_a_disruption_budget_only_with_more_than_one() -> None:
    documents = render()
    deployment = find(documents, "Deployment", "trustgate-webhook")
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    spread = deployment["spec"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    terms = spread["preferredDuringSchedulingIgnoredDuringExecution"]
    keys = {term["podAffinityTerm"]["topologyKey"] for term in terms}
    assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert find(documents, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items())
    assert not [d for d in render("--set", "webhook.replicas=1") if d["kind"] == "PodDisruptionBudget"]
    priority = render("--set", "webhook.priorityClassName=system-cluster-critical")
    assert find(priority, "Deployment", "trustgate-webhook")["spec"]["template"]["spec"]["priorityClassName"] == (
        "system-cluster-critical")


def test_air_gapped_values_pull_every_image_from_the_mirror_by_digest() -> None:
    documents = render(*VALUE_SETS["airgap"])
    digest = yaml.safe_load((VALUES / "values-airgap.yaml").read_text())["image"]["digest"]
    specs = list(pod_specs(documents))
    assert specs
    for where, spec in specs:
        for container in spec["containers"] + spec.get("initContainers", []):
            assert container["image"] == f"{AIRGAP_REGISTRY}/trustgate/trustgate@{digest}", where
        assert spec["imagePullSecrets"] == [{"name": "mirror-pull"}], where


def test_tag_defaults_to_the_app_version() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    for _, spec in pod_specs(render()):
        assert spec["containers"][0]["image"] == f"trustgate/trustgate:{chart['appVersion']}"


URL = re.compile(r"[a-z][a-z0-9+.-]*://[^\s\"']+")


def test_nothing_rendered_names_a_place_outside_the_cluster() -> None:
    """No URL but the controller's own liveness listener, and no image naming a registry host by default."""
    for name, args in VALUE_SETS.items():
        text = helm("template", "trustgate", str(CHART), "--namespace", NAMESPACE, *args).stdout
        assert set(URL.findall(text)) <= {"http://0.0.0.0:8080/healthz"}, name
    for _, spec in pod_specs(render()):
        image = spec["containers"][0]["image"]
        assert "." not in image.split("/")[0] and ":" not in image.split("/")[0], image


def test_cert_manager_issues_the_certificate_the_webhook_follows_and_injects_the_ca() -> None:
    documents = render(*VALUE_SETS["cert-manager"])
    certificate = find(documents, "Certificate", "trustgate-webhook-tls")
    # The Secret name the webhook follows (webhook.cluster.TLS_SECRET).
    assert certificate["spec"]["secretName"] == "trustgate-webhook-tls"
    assert f"trustgate-webhook.{NAMESPACE}.svc" in certificate["spec"]["dnsNames"]
    assert certificate["spec"]["issuerRef"] == {"name": "trustgate-ca", "kind": "Issuer"}
    assert find(documents, "Issuer", "trustgate-ca")["spec"]["ca"]["secretName"] == (
        find(documents, "Certificate", "trustgate-ca")["spec"]["secretName"])
    for kind in ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration"):
        assert find(documents, kind)["metadata"]["annotations"] == {
            "cert-manager.io/inject-ca-from": f"{NAMESPACE}/trustgate-webhook-tls"}
    args = build_parser().parse_args(container_args(documents, "trustgate-controller"))
    assert args.webhook_certificates == "external"
    # Without certificates to manage, the controller may not write the webhook configurations.
    rules = find(documents, "ClusterRole", "trustgate-controller")["rules"]
    assert not [rule for rule in rules
                if "patch" in rule["verbs"] and "admissionregistration.k8s.io" in rule["apiGroups"]]
    own = render("--set", "certManager.enabled=true", "--set", "certManager.issuerRef.name=corp",
                 "--set", "certManager.issuerRef.kind=ClusterIssuer")
    assert not [d for d in own if d["kind"] == "Issuer"]
    assert find(own, "Certificate")["spec"]["issuerRef"] == {"name": "corp", "kind": "ClusterIssuer"}
    assert build_parser().parse_args(container_args(render(), "trustgate-controller")).webhook_certificates == "managed"


def test_service_monitor_checks_the_serving_certificate() -> None:
    monitor = find(render(*VALUE_SETS["cert-manager"]), "ServiceMonitor")
    [endpoint] = monitor["spec"]["endpoints"]
    assert endpoint["scheme"] == "https" and endpoint["path"] == "/metrics"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "trustgate-webhook-tls", "key": "ca.crt"}
    assert endpoint["tlsConfig"]["serverName"] == f"trustgate-webhook.{NAMESPACE}.svc"
    assert monitor["metadata"]["labels"]["release"] == "prometheus"


def test_network_policies_allow_the_webhook_port_in_and_only_the_named_places_out() -> None:
    documents = render(*VALUE_SETS["airgap"])
    webhook = find(documents, "NetworkPolicy", "trustgate-webhook")["spec"]
    assert webhook["ingress"] == [{"ports": [{"port": 8443, "protocol": "TCP"}]}]
    destinations = [(tuple(peer["ipBlock"]["cidr"] for peer in rule.get("to", [])),
                     tuple(port["port"] for port in rule["ports"])) for rule in webhook["egress"]]
    assert destinations == [(("10.96.0.1/32",), (443,)), (("10.20.0.0/16",), (5000,)), ((), (53, 53))]
    controller = find(documents, "NetworkPolicy", "trustgate-controller")["spec"]
    assert [rule.get("to") for rule in controller["egress"]] == [[{"ipBlock": {"cidr": "10.96.0.1/32"}}], None]
    assert not [d for d in render() if d["kind"] == "NetworkPolicy"]


def _rules(documents: list[dict[str, Any]]) -> dict[tuple[str, str, str | None], list[dict[str, Any]]]:
    return {(d["kind"], d["metadata"]["name"], d["metadata"].get("namespace")): d["rules"]
            for d in documents if d["kind"] in ("ClusterRole", "Role")}


def test_deploy_rbac_grants_what_the_chart_grants() -> None:
    with (infra.REPO_ROOT / "deploy" / "rbac.yaml").open() as handle:
        deployed = [d for d in yaml.safe_load_all(handle) if d]
    assert _rules(deployed) == _rules(render())


def test_secret_read_access_is_limited_to_the_named_namespaces() -> None:
    documents = render("--set", "controller.keySourceNamespaces={keys,trustgate-system}")
    rules = _rules(documents)
    cluster_rules = rules[("ClusterRole", "trustgate-controller", None)]
    assert not [rule for rule in cluster_rules if {"secrets", "configmaps"} & set(rule["resources"])]
    readers = {key[2] for key, granted in rules.items()
               if any("secrets" in rule["resources"] and "get" in rule["verbs"] for rule in granted)
               and key[1].startswith("trustgate-controller")}
    assert readers == {"keys", NAMESPACE}
    bindings = [d for d in documents if d["kind"] == "RoleBinding" and d["metadata"]["namespace"] == "keys"]
    assert [b["subjects"] for b in bindings] == [[{"kind": "ServiceAccount", "name": "trustgate-controller",
                                                   "namespace": NAMESPACE}]]


def test_pod_pull_secrets_value_sets_the_flag_and_the_read_access() -> None:
    def pull_rules(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [rule for rule in _rules(documents)[("ClusterRole", "trustgate-webhook", None)]
                if {"secrets", "serviceaccounts"} & set(rule["resources"])]

    enabled = render()
    assert not build_parser().parse_args(container_args(enabled, "trustgate-webhook")).no_pod_pull_secrets
    assert pull_rules(enabled) == [{"apiGroups": [""], "resources": ["secrets", "serviceaccounts"], "verbs": ["get"]}]
    disabled = render("--set", "webhook.podPullSecrets=false")
    assert build_parser().parse_args(container_args(disabled, "trustgate-webhook")).no_pod_pull_secrets
    assert pull_rules(disabled) == []


def test_chart_readme_explains_every_permission_granted() -> None:
    """Each (resource, verb) of every role appears in the README's permission table, and nothing more."""
    table = (CHART / "README.md").read_text().split("## Permissions", 1)[1].split("\n## ", 1)[0]
    documented: set[tuple[str, str]] = set()
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if len(cells) == 5 and cells[2].startswith("`"):
            resources = re.findall(r"`([^`]+)`", cells[2])
            documented |= {(resource, verb.strip()) for resource in resources for verb in cells[3].split(",")}
    granted: set[tuple[str, str]] = set()
    for value_set in ((), ("--set", "controller.keySourceNamespaces={keys}")):
        for rules in _rules(render(*value_set)).values():
            granted |= {(resource, verb) for rule in rules for resource in rule["resources"] for verb in rule["verbs"]}
    assert granted == documented


def test_grafana_dashboard_configmap_carries_the_documented_dashboard() -> None:
    documents = render(*VALUE_SETS["cert-manager"])
    dashboard = find(documents, "ConfigMap", "trustgate-dashboard")
    assert dashboard["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert dashboard["metadata"]["labels"]["team"] == "platform"
    documented = (infra.REPO_ROOT / "docs" / "grafana" / "trustgate.json").read_text()
    assert dashboard["data"]["trustgate.json"] == documented.rstrip("\n")
    elsewhere = render("--set", "grafanaDashboard.enabled=true", "--set", "grafanaDashboard.namespace=monitoring")
    assert find(elsewhere, "ConfigMap", "trustgate-dashboard")["metadata"]["namespace"] == "monitoring"
    assert not [d for d in render() if d["kind"] == "ConfigMap" and d["metadata"]["name"] == "trustgate-dashboard"]
