"""In-cluster mode of `trustgate serve --namespace NS`: policies from the controller's bundle, TLS from its Secret.

Each Secret is followed by a thread (list, then watch from that resourceVersion; relist after every watch
timeout or error), so a webhook replica sees a new bundle within moments and no restart is needed:

- bundle: parsed, checked (digest) and compiled off the event loop, then installed atomically. A bundle that
  does not parse or compile is logged and ignored; the last good policies stay in force. A deleted bundle
  also leaves the last good policies in place. Until the first good bundle, `/readyz` is false and every
  review is denied.
- TLS: the serving certificate the controller issues; written to a private directory and loaded into the
  live TLS context, so a rotated certificate is used for new connections without a restart.
"""

from __future__ import annotations

import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from webhook.app import InLoop
from webhook.bundle import BUNDLE_KEY, BUNDLE_SECRET, BundleError, compile_bundle, decode_bundle
from webhook.metrics import POLICY_LOAD_ERRORS
from webhook.policy.compile import PolicySet
from webhook.tls import TLS_FILES
from webhook.verifiers.base import VerifierPlugin, discover_verifiers

log = logging.getLogger(__name__)

TLS_SECRET = "trustgate-webhook-tls"
WATCH_TIMEOUT_SECONDS = 240
RETRY_SECONDS = 2.0

SecretData = Mapping[str, bytes]


def load_client_configuration() -> None:
    """In a pod, its service account; elsewhere the kubeconfig named by KUBECONFIG (or ~/.kube/config)."""
    from kubernetes import config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        config.load_kube_config()


def _decoded(secret: Any) -> dict[str, bytes]:
    return {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}


class ObjectWatcher:
    """Lists objects, then watches from that list's resourceVersion; lists again after every watch timeout or
    error, so nothing is missed for long. `on_list` gets the full listing, `on_event` each change after it."""

    def __init__(self, what: str, list_objects: Callable[..., Any], on_list: Callable[[list[Any]], None],
                 on_event: Callable[[str, Any], None], **list_arguments: Any) -> None:
        self.what, self.list_objects, self.list_arguments = what, list_objects, list_arguments
        self.on_list, self.on_event = on_list, on_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"watch {what}", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listing = self.list_objects(**self.list_arguments)
                self.on_list(listing.items)
                stream = watch.Watch().stream(
                    self.list_objects, resource_version=listing.metadata.resource_version,
                    timeout_seconds=WATCH_TIMEOUT_SECONDS, **self.list_arguments)
                for event in stream:
                    if self._stop.is_set():
                        return
                    if event["type"] not in ("ADDED", "MODIFIED", "DELETED"):
                        break  # ERROR (e.g. 410 Gone): start again from a fresh list
                    self.on_event(event["type"], event["object"])
            except ApiException as exc:
                log.warning("watching %s: %s %s", self.what, exc.status, exc.reason)
                self._stop.wait(RETRY_SECONDS)
            except Exception as exc:
                log.warning("watching %s: %s", self.what, exc)
                self._stop.wait(RETRY_SECONDS)


def follow_secret(core: client.CoreV1Api, namespace: str, name: str,
                  changed: Callable[[SecretData | None], None]) -> ObjectWatcher:
    """Calls `changed(data)` with a Secret's data at start and after every change (None: it does not exist)."""
    return ObjectWatcher(
        f"Secret {namespace}/{name}", core.list_namespaced_secret,
        on_list=lambda items: changed(_decoded(items[0]) if items else None),
        on_event=lambda kind, secret: changed(None if kind == "DELETED" else _decoded(secret)),
        namespace=namespace, field_selector=f"metadata.name={name}")


class NamespaceLabels:
    """The labels of every namespace, kept current by a watch, for TrustPolicy namespaceSelectors.

    Until the first listing arrives (or for a namespace it has not seen yet) the labels are unknown, and an
    unknown namespace is never exempted by a selector.
    """

    def __init__(self, core: client.CoreV1Api) -> None:
        self._labels: dict[str, dict[str, str]] = {}
        self.watcher = ObjectWatcher("Namespaces", core.list_namespace, self._listed, self._changed)

    def _listed(self, namespaces: list[Any]) -> None:
        self._labels = {namespace.metadata.name: dict(namespace.metadata.labels or {}) for namespace in namespaces}

    def _changed(self, kind: str, namespace: Any) -> None:
        labels = dict(self._labels)  # replaced whole: readers on the event loop never see a half update
        if kind == "DELETED":
            labels.pop(namespace.metadata.name, None)
        else:
            labels[namespace.metadata.name] = dict(namespace.metadata.labels or {})
        self._labels = labels

    async def __call__(self, namespace: str) -> Mapping[str, str] | None:
        return self._labels.get(namespace)


class BundleLoader:
    """Turns bundle Secret contents into installed PolicySets, keeping the last good one."""

    def __init__(self, install: Callable[[PolicySet], None],
                 verifiers: Mapping[str, VerifierPlugin] | None = None) -> None:
        self.install = install
        self.verifiers = verifiers
        self.loaded: tuple[int, str] | None = None  # (generation, digest)

    def changed(self, data: SecretData | None) -> None:
        if data is None:
            log.error("policy bundle Secret %s is missing; %s", BUNDLE_SECRET, self._keeping())
            return
        try:
            raw = data.get(BUNDLE_KEY)
            if raw is None:
                raise BundleError(f"the Secret has no {BUNDLE_KEY}")
            bundle = decode_bundle(raw)
            if self.loaded == (bundle.generation, bundle.digest):
                return
            policies = compile_bundle(bundle, self.verifiers)
        except BundleError as exc:
            log.error("policy bundle rejected: %s; %s", exc, self._keeping())
            POLICY_LOAD_ERRORS.inc()
            return
        if self.loaded is not None and bundle.generation <= self.loaded[0]:
            log.warning("policy bundle generation went back from %d to %d (was the bundle recreated?)",
                        self.loaded[0], bundle.generation)
        self.loaded = (bundle.generation, bundle.digest)
        log.info("loaded policy bundle generation %d (%s): %d TrustPolicies", bundle.generation, bundle.digest,
                 len(policies.policies))
        self.install(policies)

    def _keeping(self) -> str:
        if self.loaded is None:
            return "no policy is loaded yet, every review is denied"
        return f"keeping generation {self.loaded[0]}"


class TlsFiles:
    """The serving certificate and key from the controller's TLS Secret, as files in a private directory."""

    def __init__(self) -> None:
        self.directory = Path(TLS_FILES.directory())
        self.cert = self.directory / "tls.crt"
        self.key = self.directory / "tls.key"
        self.written: tuple[bytes, bytes] | None = None

    def write(self, data: SecretData | None) -> bool:
        """Write a new pair; False when there is none or it did not change."""
        if data is None or "tls.crt" not in data or "tls.key" not in data:
            return False
        pair = (data["tls.crt"], data["tls.key"])
        if pair == self.written:
            return False
        for path, content in ((self.key, pair[1]), (self.cert, pair[0])):
            temporary = path.with_suffix(".new")
            descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(content)
            temporary.replace(path)
        self.written = pair
        return True


class ClusterSource:
    """Policies and (optionally) the serving certificate of one trustgate installation."""

    def __init__(self, namespace: str) -> None:
        load_client_configuration()
        self.namespace = namespace
        self.core = client.CoreV1Api()
        self.tls = TlsFiles()
        self.namespace_labels = NamespaceLabels(self.core)

    def wait_for_tls(self) -> tuple[Path, Path]:
        """Block until the controller has issued the serving certificate; return (cert, key) paths."""
        waiting_for = ""
        while True:
            try:
                secret = self.core.read_namespaced_secret(TLS_SECRET, self.namespace)
                if self.tls.write(_decoded(secret)):
                    return self.tls.cert, self.tls.key
                missing = f"Secret {self.namespace}/{TLS_SECRET} from trustgate controller"
            except ApiException as exc:
                # Also a refusal: an API server that has just started refuses until its RBAC caches are filled.
                missing = (f"Secret {self.namespace}/{TLS_SECRET} from trustgate controller" if exc.status == 404
                           else f"the API server ({exc.status} {exc.reason})")
            except urllib3.exceptions.HTTPError as exc:  # unreachable: a replica started during an outage waits
                missing = f"the API server ({exc.__class__.__name__})"
            if missing != waiting_for:
                log.warning("waiting for %s", missing)
                waiting_for = missing
            time.sleep(RETRY_SECONDS)

    def follow(self, in_loop: InLoop, install: Callable[[PolicySet], None],
               reload_tls: Callable[[Path, Path], None] | None) -> Callable[[], None]:
        """Start following the bundle (and the TLS Secret when `reload_tls` is given); return a stopper."""
        verifiers = discover_verifiers()
        loader = BundleLoader(lambda policies: in_loop(lambda: install(policies)), verifiers)
        followers = [follow_secret(self.core, self.namespace, BUNDLE_SECRET, loader.changed),
                     self.namespace_labels.watcher]
        if reload_tls is not None:
            def tls_changed(data: SecretData | None) -> None:
                if self.tls.write(data):
                    log.info("serving certificate from Secret %s changed; reloading it", TLS_SECRET)
                    in_loop(lambda: reload_tls(self.tls.cert, self.tls.key))

            followers.append(follow_secret(self.core, self.namespace, TLS_SECRET, tls_changed))
        for follower in followers:
            follower.start()

        def stop() -> None:
            for follower in followers:
                follower.stop()

        return stop
