"""`trustgate verify | explain | serve | controller | --version`: thin faces over the same pipeline.

Exit codes of `verify` and `explain`: 0 every image admitted, 1 any image denied, 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import version
from pathlib import Path
from typing import Any

from webhook.admission import MAX_CONTAINERS_PER_POD
from webhook.config import ConfigFileError, load_resources
from webhook.logs import LOG_FORMATS, configure
from webhook.pipeline import ImageVerdict, Pipeline, VerifySettings
from webhook.policy.compile import PolicySet, compile_policy_set
from webhook.policy.scope import RegistryScope
from webhook.registry.auth import CredentialsError, load_docker_config
from webhook.registry.client import RegistryClient, RegistrySettings
from webhook.registry.mirrors import MirrorConfigError, RegistryMirrors
from webhook.registry.network import parse_cidr
from webhook.tls import MODERN_CIPHERS

log = logging.getLogger("trustgate")

EXIT_ADMITTED = 0
EXIT_DENIED = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A command-line or configuration fault: exit 2 with the message."""


def _registry_flags(parser: argparse.ArgumentParser, policies: argparse._ActionsContainer | None = None) -> None:
    (policies or parser).add_argument(
        "--config", required=policies is None, type=Path, metavar="DIR",
        help="directory of TrustStore/TrustPolicy manifests (multi-document YAML allowed)")
    parser.add_argument("--registry-ca", metavar="FILE", help="PEM bundle of extra CAs trusted for registries")
    parser.add_argument("--registry-auth", metavar="DOCKERCONFIGJSON",
                        help="registry credentials in dockerconfigjson format")
    parser.add_argument("--insecure-registry", action="append", default=[], metavar="HOST:PORT",
                        help="allow plain HTTP to this registry (repeatable); certificates are never unchecked")
    parser.add_argument("--no-match", choices=("deny", "warn", "allow"), default="deny",
                        help="verdict for an image no TrustPolicy matches (default: deny)")
    parser.add_argument("--deadline", type=float, default=VerifySettings.deadline_seconds, metavar="SECONDS",
                        help="per-image verification deadline; past it the image is denied (default: %(default)g)")
    parser.add_argument("--allow-registry-cidr", action="append", default=[], metavar="CIDR",
                        help="let registries resolve to these addresses although they are loopback, link-local "
                             "or cloud metadata (repeatable)")
    parser.add_argument("--registry-delegate", action="append", default=[], metavar="REGISTRY=HOST",
                        help="HOST serves REGISTRY's blobs (redirects, followed without credentials) or tokens "
                             "(repeatable)")
    parser.add_argument("--registry-mirror", action="append", default=[], metavar="UPSTREAM=MIRROR",
                        help="the nodes pull images under UPSTREAM (a registry host, or host/path prefix) from "
                             "MIRROR (host or host/path): read them there, never from UPSTREAM (repeatable; "
                             "mirrors of one upstream are tried in the order given)")
    parser.add_argument("--registry-mirror-fallback", action="append", default=[], metavar="UPSTREAM",
                        help="after all mirrors of UPSTREAM failed, try UPSTREAM itself (repeatable; off by default)")
    parser.add_argument("--registry-mirror-lookaside", action="append", default=[], metavar="MIRROR=URL",
                        help="GPG signatures of images read from MIRROR are on this lookaside server, under the "
                             "mirror's repository path (repeatable)")
    parser.add_argument("--max-index-children", type=int, default=RegistrySettings.max_index_children,
                        metavar="N", help="entries an image index may list (default: %(default)s)")
    parser.add_argument("--max-signatures-per-source", type=int, metavar="N",
                        help="signatures read from each signature source per image (default: 16, 32 for "
                             "cosign .sig tags)")
    parser.add_argument("--max-signatures-per-image", type=int, default=VerifySettings.max_signatures_per_image,
                        metavar="N", help="signatures each authority examines for one image, over all its "
                                          "sources (default: %(default)s)")
    parser.add_argument("--tag-cache-seconds", type=float, default=VerifySettings.tag_cache_seconds,
                        metavar="SECONDS", help="how long a tag keeps resolving to the digest it last had; 0 asks "
                                                "the registry every time (default: %(default)g)")
    parser.add_argument("--verdict-cache-seconds", type=float, default=VerifySettings.verdict_cache_seconds,
                        metavar="SECONDS", help="how long a passing verdict is reused within one policy "
                                                "generation (default: %(default)g)")
    _log_flags(parser)


def _log_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    parser.add_argument("--log-format", default="text", choices=LOG_FORMATS,
                        help="text for people, json for one JSON object per line (default: text)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="trustgate", description="Admit container images only when signed by keys you trust.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {version('trustgate')}")
    commands = parser.add_subparsers(dest="command", required=True)

    verify = commands.add_parser("verify", help="verify images against a configuration directory")
    _registry_flags(verify)
    verify.add_argument("--output", choices=("text", "json"), default="text")
    verify.add_argument("images", nargs="+", metavar="IMAGE")

    explain = commands.add_parser(
        "explain", help="verify images and show every policy, authority and signature considered")
    _registry_flags(explain)
    explain.add_argument("images", nargs="+", metavar="IMAGE")
    explain.set_defaults(output="text")

    serve = commands.add_parser("serve", help="serve the admission webhook over HTTPS")
    policy_source = serve.add_mutually_exclusive_group(required=True)
    policy_source.add_argument(
        "--namespace", metavar="NS",
        help="in-cluster mode: follow the policy bundle (and, without --tls-cert, the serving certificate) "
             "that `trustgate controller --namespace NS` publishes")
    _registry_flags(serve, policy_source)
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--port", type=int, default=8443)
    serve.add_argument("--tls-cert", metavar="FILE", help="serving certificate (PEM)")
    serve.add_argument("--tls-key", metavar="FILE", help="serving key (PEM)")
    serve.add_argument("--shutdown-delay", type=float, default=0.0, metavar="SECONDS",
                       help="after SIGTERM, keep answering this long while /readyz reports not ready, so that "
                            "endpoints stop sending first; then drain and exit (default: %(default)g)")
    serve.add_argument("--no-pod-pull-secrets", action="store_true",
                       help="in-cluster mode: do not read a pod's imagePullSecrets (or its ServiceAccount's) to "
                            "authenticate to its registries; only --registry-auth is used")
    serve.add_argument("--max-containers-per-pod", type=int, default=MAX_CONTAINERS_PER_POD, metavar="N",
                       help="a pod naming more images (containers and image volumes) is denied unverified "
                            "(default: %(default)s)")

    controller = commands.add_parser(
        "controller", help="run the controller: TrustStore/TrustPolicy status, policy bundle, webhook TLS")
    controller.add_argument("--namespace", default="trustgate-system", metavar="NS",
                            help="namespace of the policy bundle, certificates and leader Lease "
                                 "(default: trustgate-system)")
    controller.add_argument("--webhook-configuration", default="trustgate", metavar="NAME",
                            help="Validating/MutatingWebhookConfiguration whose caBundle is kept current "
                                 "(default: trustgate)")
    controller.add_argument("--webhook-service", default="trustgate-webhook", metavar="NAME",
                            help="Service of the webhook, named in the serving certificate "
                                 "(default: trustgate-webhook)")
    controller.add_argument("--webhook-host", action="append", default=[], metavar="HOST",
                            help="extra DNS name or IP address for the serving certificate (repeatable)")
    controller.add_argument("--webhook-certificates", choices=("managed", "external"), default="managed",
                            help="managed: the controller issues and rotates the serving certificate and fills "
                                 "the caBundle; external: another issuer (cert-manager) does (default: managed)")
    controller.add_argument("--key-source-namespace", action="append", default=[], metavar="NS",
                            help="read TrustStore key material (valueFrom) only from this namespace "
                                 "(repeatable; default: any namespace)")
    controller.add_argument("--liveness", metavar="URL",
                            help="serve a liveness probe, e.g. http://0.0.0.0:8080/healthz")
    _log_flags(controller)
    return parser


def _settings(args: argparse.Namespace) -> tuple[RegistrySettings, VerifySettings]:
    for flag, value in (("--registry-ca", args.registry_ca), ("--registry-auth", args.registry_auth)):
        if value is not None and not Path(value).is_file():
            raise UsageError(f"{flag} {value}: no such file")
    if args.registry_auth:
        try:
            load_docker_config(args.registry_auth)
        except CredentialsError as exc:
            raise UsageError(f"--registry-auth {exc}") from None
    for registry in args.insecure_registry:
        if "/" in registry or "://" in registry:
            raise UsageError(f"--insecure-registry {registry!r}: expected HOST:PORT")
    if args.deadline <= 0:
        raise UsageError("--deadline must be positive")
    try:
        cidrs = tuple(parse_cidr(cidr) for cidr in args.allow_registry_cidr)
    except ValueError as exc:
        raise UsageError(f"--allow-registry-cidr: {exc}") from None
    delegates = [delegate.partition("=") for delegate in args.registry_delegate]
    if any(not registry or not sep or not host or "/" in host for registry, sep, host in delegates):
        raise UsageError("--registry-delegate expects REGISTRY=HOST[:PORT]")
    try:
        mirrors = RegistryMirrors.build(args.registry_mirror, args.registry_mirror_fallback,
                                        args.registry_mirror_lookaside)
    except MirrorConfigError as exc:
        flags = {"fallback": "--registry-mirror-fallback", "lookasides": "--registry-mirror-lookaside"}
        raise UsageError(f"{flags.get(exc.setting, '--registry-mirror')} {exc}") from None
    for flag, value in (("--max-index-children", args.max_index_children),
                        ("--max-signatures-per-source", args.max_signatures_per_source),
                        ("--max-signatures-per-image", args.max_signatures_per_image),
                        ("--max-containers-per-pod", getattr(args, "max_containers_per_pod", None))):
        if value is not None and value < 1:
            raise UsageError(f"{flag} must be at least 1")
    if args.tag_cache_seconds < 0 or args.verdict_cache_seconds < 0:
        raise UsageError("cache lifetimes must not be negative")
    registry = RegistrySettings(
        ca_file=args.registry_ca,
        docker_config=args.registry_auth,
        insecure_registries=frozenset(args.insecure_registry),
        timeout_seconds=min(8.0, args.deadline),
        max_index_children=args.max_index_children,
        max_signatures_per_source=args.max_signatures_per_source,
        allowed_cidrs=cidrs,
        delegates=frozenset((registry, host) for registry, _, host in delegates),
        mirrors=mirrors,
    )
    return registry, VerifySettings(no_match=args.no_match, deadline_seconds=args.deadline,
                                    tag_cache_seconds=args.tag_cache_seconds,
                                    verdict_cache_seconds=args.verdict_cache_seconds,
                                    max_signatures_per_image=args.max_signatures_per_image)


def _load_policies(directory: Path) -> PolicySet:
    try:
        return compile_policy_set(load_resources(directory))
    except ConfigFileError as exc:
        raise UsageError(str(exc)) from None


def _print_text(verdicts: Sequence[ImageVerdict], *, full: bool) -> None:
    """The verdict of each image with its reasons; with `full`, every node of the explanation tree."""
    for verdict in verdicts:
        status = "ADMITTED" if verdict.allowed else "DENIED"
        digest = f" ({verdict.digest})" if verdict.digest else ""
        print(f"{status} {verdict.image}{digest}")
        if full:
            for depth, node in verdict.result.walk():
                print(f"{'  ' * (depth + 1)}[{'pass' if node.passed else 'FAIL'}] {node.subject}: {node.message} "
                      f"({node.public_code})")
        else:
            for line in verdict.result.explain()[1:]:
                print(f"  {line}")
            for reason in verdict.reasons:
                print(f"  {'denied' if not verdict.allowed else 'failed'}: {reason}")
        for warning in verdict.warnings:
            print(f"  warning: {warning}")
    if not full and not all(verdict.allowed for verdict in verdicts):
        print("Codes are explained in docs/errors.md; `trustgate explain IMAGE` shows every policy, authority "
              "and signature considered.")


async def _verify(images: Sequence[str], policies: PolicySet, registry_settings: RegistrySettings,
                  settings: VerifySettings) -> list[ImageVerdict]:
    registry = RegistryClient(registry_settings, scope=RegistryScope.of(policies))
    try:
        return await Pipeline(policies, registry, settings).verify_images(images)
    finally:
        await registry.aclose()


def run_verify(args: argparse.Namespace) -> int:
    registry_settings, settings = _settings(args)
    policies = _load_policies(args.config)
    try:
        verdicts = asyncio.run(_verify(args.images, policies, registry_settings, settings))
    finally:
        policies.close()
    allowed = all(verdict.allowed for verdict in verdicts)
    if args.output == "json":
        json.dump({"allowed": allowed, "images": [verdict.to_dict() for verdict in verdicts]}, sys.stdout,
                  indent=2)
        sys.stdout.write("\n")
    else:
        _print_text(verdicts, full=args.command == "explain")
    return EXIT_ADMITTED if allowed else EXIT_DENIED


def server_options(host: str, port: int, cert: Path, key: Path) -> dict[str, Any]:
    """How `serve` runs uvicorn (also what the benchmark's floor endpoint runs with, so they compare)."""
    # uvloop and httptools: uvicorn's own production setup, and what registry round trips cost least on.
    return {"host": host, "port": port, "ssl_certfile": str(cert), "ssl_keyfile": str(key),
            "ssl_ciphers": MODERN_CIPHERS, "log_config": None, "access_log": False,
            "timeout_graceful_shutdown": 10, "loop": "uvloop", "http": "httptools"}


def run_serve(args: argparse.Namespace) -> int:
    registry_settings, settings = _settings(args)
    if (args.tls_cert is None) != (args.tls_key is None):
        raise UsageError("--tls-cert and --tls-key go together")
    if args.shutdown_delay < 0:
        raise UsageError("--shutdown-delay must not be negative")
    if args.namespace is not None:
        return _serve_in_cluster(args, registry_settings, settings)
    if args.no_pod_pull_secrets:
        raise UsageError("--no-pod-pull-secrets applies to the in-cluster mode (--namespace) only")
    return _serve_directory(args, registry_settings, settings)


def _serve_directory(args: argparse.Namespace, registry_settings: RegistrySettings,
                     settings: VerifySettings) -> int:
    import uvicorn

    from webhook.app import Drain, WebhookConfig, create_app
    from webhook.serving import serve
    from webhook.tls import write_self_signed

    policies = _load_policies(args.config)
    try:
        if args.tls_cert is None:
            cert, key = write_self_signed([args.host, "localhost"])
            log.warning("no --tls-cert given: serving a self-signed certificate written to %s", cert)
        else:
            cert, key = Path(args.tls_cert), Path(args.tls_key)
        drain = Drain()
        app = create_app(WebhookConfig(policies, registry_settings, settings,
                                       max_containers_per_pod=args.max_containers_per_pod, drain=drain,
                                       serving_certificate=cert))
        return serve(uvicorn.Config(app, **server_options(args.host, args.port, cert, key)), drain,
                     args.shutdown_delay)
    finally:
        policies.close()


def _serve_in_cluster(args: argparse.Namespace, registry_settings: RegistrySettings,
                      settings: VerifySettings) -> int:
    import uvicorn

    from webhook.app import Drain, InLoop, WebhookConfig, create_app
    from webhook.cluster import ClusterSource, PodPullCredentials
    from webhook.events import recorder_for_cluster
    from webhook.serving import serve

    source = ClusterSource(args.namespace)
    tls_from_cluster = args.tls_cert is None
    cert, key = source.wait_for_tls() if tls_from_cluster else (Path(args.tls_cert), Path(args.tls_key))

    def reload_tls(cert: Path, key: Path) -> None:
        assert server_config.ssl is not None  # loaded below, before serving starts
        server_config.ssl.load_cert_chain(str(cert), str(key))

    def follow(in_loop: InLoop, install: Callable[[PolicySet], None]) -> Callable[[], None]:
        return source.follow(in_loop, install, reload_tls if tls_from_cluster else None)

    drain = Drain()
    pull_credentials = None if args.no_pod_pull_secrets else PodPullCredentials(source.core)
    events = recorder_for_cluster()
    app = create_app(WebhookConfig(None, registry_settings, settings, follow=follow,
                                   namespace_labels=source.namespace_labels, pull_credentials=pull_credentials,
                                   max_containers_per_pod=args.max_containers_per_pod, drain=drain,
                                   serving_certificate=cert, findings=events.report))
    server_config = uvicorn.Config(app, **server_options(args.host, args.port, cert, key))
    server_config.load()
    events.start()
    try:
        return serve(server_config, drain, args.shutdown_delay)
    finally:
        events.stop()


def run_controller(args: argparse.Namespace) -> int:
    from controller.handlers import run
    from controller.reconcile import ControllerSettings

    run(ControllerSettings(namespace=args.namespace, webhook_configuration=args.webhook_configuration,
                           webhook_service=args.webhook_service, webhook_hosts=tuple(args.webhook_host),
                           manage_certificates=args.webhook_certificates == "managed",
                           key_source_namespaces=tuple(args.key_source_namespace)),
        liveness_endpoint=args.liveness)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(args.log_level, args.log_format)
    try:
        commands = {"controller": run_controller, "serve": run_serve}
        return commands.get(args.command, run_verify)(args)
    except UsageError as exc:
        print(f"trustgate: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
