"""In-cluster mode of `trustgate serve --namespace NS`: policies from the controller's bundle, TLS from its Secret.

Each Secret is followed by a thread (list, then watch from that resourceVersion; relist after every watch
timeout or error), so a webhook replica sees a new bundle within moments and no restart is needed:

- bundle: parsed, checked (digest) and compiled off the event loop, then installed atomically. A bundle that
  does not parse or compile is logged and ignored; the last good policies stay in force. A deleted bundle
  also leaves the last good policies in place. Until the first good bundle, `/readyz` is false and every
  review is denied.
- TLS: the serving certificate the controller issues; written to a private directory and loaded into the
  live TLS context, so a rotated certificate is used for new connections without a restart.

A pod's own pull credentials are read on demand instead (see `PodPullCredentials`): watching every Secret of
every namespace would need the right to list them all and keep all of them in memory.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import urllib3
from kubernetes import client, watch
from kubernetes.client.exceptions import ApiException

from webhook.admission import PullSecretRefs
from webhook.app import InLoop
from webhook.bundle import BUNDLE_KEY, BUNDLE_SECRET, BundleError, compile_bundle, decode_bundle
from webhook.cache import ENTRY_OVERHEAD_BYTES, ExpiringLRU, SingleFlight, estimated_bytes
from webhook.metrics import POLICY_LOAD_ERRORS
from webhook.policy.compile import PolicySet
from webhook.registry.auth import Credentials, CredentialsError
from webhook.registry.keyring import PullCredentials, pull_secret_entries
from webhook.tls import TLS_FILES
from webhook.verifiers.base import VerifierPlugin, discover_verifiers

log = logging.getLogger(__name__)

TLS_SECRET = "trustgate-webhook-tls"
WATCH_TIMEOUT_SECONDS = 240
RETRY_SECONDS = 2.0

SecretData = Mapping[str, bytes]
T = TypeVar("T")

# How long a pull Secret or ServiceAccount read for a pod is reused: a changed or deleted Secret counts after
# at most this long.
PULL_SECRET_CACHE_SECONDS = 30.0
PULL_SECRET_CACHE_ENTRIES = 2_000
# By estimate: a Secret's usable entries (registry, user, password) are small, but one Secret may hold many.
PULL_SECRET_CACHE_BYTES = 8 * 1024 * 1024
SERVICE_ACCOUNT_CACHE_BYTES = 4 * 1024 * 1024  # the pull Secret names of a ServiceAccount
# Pods reading a Secret or ServiceAccount at once share one read, up to this many reads of each kind in flight.
PULL_SECRET_FLIGHT_ENTRIES = 256
PULL_SECRET_FLIGHT_BYTES = 1024 * 1024
# One read of the API server for a review; what it cannot read in time is not used (the pod may be denied).
PULL_SECRET_READ_SECONDS = 3.0


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


# Namespaces whose labels are kept for namespaceSelectors; one past the bound counts as unknown, which no selector
# exempts (the safe side). Their labels weigh at most NAMESPACE_LABELS_BYTES in all, by estimate.
NAMESPACE_LABELS_ENTRIES = 10_000
NAMESPACE_LABELS_BYTES = 8 * 1024 * 1024


class NamespaceLabels:
    """The labels of every namespace, kept current by a watch, for TrustPolicy namespaceSelectors.

    Until the first listing arrives (or for a namespace it has not seen yet, or past its bounds) the labels are
    unknown, and an unknown namespace is never exempted by a selector.
    """

    def __init__(self, core: client.CoreV1Api) -> None:
        self._labels: dict[str, tuple[dict[str, str], int]] = {}  # name -> (labels, estimated weight)
        self._bytes = 0
        self.watcher = ObjectWatcher("Namespaces", core.list_namespace, self._listed, self._changed)

    def __len__(self) -> int:
        return len(self._labels)

    @property
    def bytes(self) -> int:
        return self._bytes

    def _listed(self, namespaces: list[Any]) -> None:
        self._install({}, 0, [(namespace.metadata.name, dict(namespace.metadata.labels or {}))
                              for namespace in namespaces])

    def _changed(self, kind: str, namespace: Any) -> None:
        labels = dict(self._labels)  # replaced whole: readers on the event loop never see a half update
        removed = labels.pop(namespace.metadata.name, None)
        weight = self._bytes - (removed[1] if removed is not None else 0)
        added = [] if kind == "DELETED" else [(namespace.metadata.name, dict(namespace.metadata.labels or {}))]
        self._install(labels, weight, added)

    def _install(self, labels: dict[str, tuple[dict[str, str], int]], weight: int,
                 added: list[tuple[str, dict[str, str]]]) -> None:
        left_out = []
        for name, namespace_labels in added:
            entry_weight = ENTRY_OVERHEAD_BYTES + estimated_bytes(name) + estimated_bytes(namespace_labels)
            if len(labels) >= NAMESPACE_LABELS_ENTRIES or weight + entry_weight > NAMESPACE_LABELS_BYTES:
                left_out.append(name)
                continue
            labels[name] = (namespace_labels, entry_weight)
            weight += entry_weight
        self._labels, self._bytes = labels, weight
        if left_out:
            log.warning("labels of %d namespaces (%s) not kept: past the %d namespaces or %d bytes kept; their pods "
                        "are exempted by no namespaceSelector", len(left_out), ", ".join(left_out[:5]),
                        NAMESPACE_LABELS_ENTRIES, NAMESPACE_LABELS_BYTES)

    async def __call__(self, namespace: str) -> Mapping[str, str] | None:
        known = self._labels.get(namespace)
        return None if known is None else known[0]


class PodPullCredentials:
    """The pull credentials the kubelet will use for a pod: its `imagePullSecrets`, or, when it names none, its
    ServiceAccount's (as the ServiceAccount admission plugin fills them in), read from the pod's namespace.

    Read on demand (`get` on the named objects only) and kept for PULL_SECRET_CACHE_SECONDS, so admitting pods
    in a namespace costs two reads per half minute. A missing or unusable Secret is skipped, as the kubelet
    skips it; one that cannot be read now (API error, timeout) is skipped for this review and asked for again
    next time. Either way the pod is verified without it, which can only deny, never admit, more.
    """

    def __init__(self, core: client.CoreV1Api) -> None:
        self.core = core
        self.secrets: ExpiringLRU[tuple[str, str], tuple[tuple[str, Credentials], ...]] = ExpiringLRU(
            "pull_secret", PULL_SECRET_CACHE_ENTRIES, max_bytes=PULL_SECRET_CACHE_BYTES)
        self.accounts: ExpiringLRU[tuple[str, str], tuple[str, ...]] = ExpiringLRU(
            "service_account", PULL_SECRET_CACHE_ENTRIES, max_bytes=SERVICE_ACCOUNT_CACHE_BYTES)
        # Each distinct set is made once (its identity is a keyed hash over every entry), keyed by its entries.
        self.credential_sets: ExpiringLRU[tuple[tuple[str, Credentials], ...], PullCredentials] = ExpiringLRU(
            "credential_set", PULL_SECRET_CACHE_ENTRIES, max_bytes=PULL_SECRET_CACHE_BYTES)
        self.reading_secrets: SingleFlight[tuple[str, str], tuple[tuple[str, Credentials], ...]] = SingleFlight(
            "pull_secret", PULL_SECRET_FLIGHT_ENTRIES, max_bytes=PULL_SECRET_FLIGHT_BYTES)
        self.reading_accounts: SingleFlight[tuple[str, str], tuple[str, ...]] = SingleFlight(
            "service_account", PULL_SECRET_FLIGHT_ENTRIES, max_bytes=PULL_SECRET_FLIGHT_BYTES)

    async def __call__(self, namespace: str, refs: PullSecretRefs) -> PullCredentials:
        names = refs.secrets or await self._account_secrets(namespace, refs.service_account)
        # One by one: a kept Secret is answered without suspending, and a pod rarely names more than one.
        found = [await self._secret(namespace, name) for name in names]
        combined = tuple(entry for entries in found for entry in entries)
        credentials = self.credential_sets.get(combined)
        if credentials is None:
            credentials = PullCredentials.of(combined)
            self.credential_sets.put(combined, credentials, PULL_SECRET_CACHE_SECONDS)
        return credentials

    async def _account_secrets(self, namespace: str, account: str) -> tuple[str, ...]:
        def names(account_object: Any) -> tuple[str, ...]:
            return tuple(reference.name for reference in account_object.image_pull_secrets or () if reference.name)

        return await self._kept(self.accounts, self.reading_accounts, f"ServiceAccount {namespace}/{account}",
                                self.core.read_namespaced_service_account, namespace, account, names, ())

    async def _secret(self, namespace: str, name: str) -> tuple[tuple[str, Credentials], ...]:
        what = f"pull secret {namespace}/{name}"

        def entries(secret: Any) -> tuple[tuple[str, Credentials], ...]:
            try:
                return tuple(pull_secret_entries(secret.type or "", _decoded(secret), what))
            except CredentialsError as exc:  # names the Secret and the entry, never a credential
                log.warning("%s not used: %s", what, exc)
                return ()

        return await self._kept(self.secrets, self.reading_secrets, what, self.core.read_namespaced_secret,
                                namespace, name, entries, ())

    async def _kept(self, cache: ExpiringLRU[tuple[str, str], T], reading: SingleFlight[tuple[str, str], T],
                    what: str, read: Callable[..., Any], namespace: str, name: str, convert: Callable[[Any], T],
                    none: T) -> T:
        """What `convert` makes of an object of the namespace, read once for concurrent callers and kept for
        PULL_SECRET_CACHE_SECONDS; `none` when it does not exist (kept too) or cannot be read now (not kept)."""
        key = (namespace, name)
        cached = cache.get(key)
        if cached is not None:
            return cached

        async def fetch() -> T:
            found = await self._read(what, read, name, namespace)
            if found is None:
                return none
            value = none if found[0] is None else convert(found[0])
            cache.put(key, value, PULL_SECRET_CACHE_SECONDS)
            return value

        return await reading.run(key, fetch)

    @staticmethod
    async def _read(what: str, read: Callable[..., Any], name: str, namespace: str) -> tuple[Any] | None:
        """(the object or None when it does not exist), or None when it cannot be read now."""
        try:
            return (await asyncio.to_thread(read, name, namespace, _request_timeout=PULL_SECRET_READ_SECONDS),)
        except ApiException as exc:
            if exc.status == 404:
                log.warning("%s does not exist; pods naming it are verified without it", what)
                return (None,)
            log.warning("cannot read %s (%s %s); verifying without it", what, exc.status, exc.reason)
        except Exception as exc:
            log.warning("cannot read %s (%s); verifying without it", what, exc.__class__.__name__)
        return None


class BundleLoader:
    """Turns bundle Secret contents into installed PolicySets, keeping the last good one."""

    def __init__(self, install: Callable[[PolicySet], None],
                 verifiers: Mapping[str, VerifierPlugin] | None = None) -> None:
        self.install = install
        self.verifiers = verifiers
        self.loaded: tuple[int, str] | None = None  # (generation, digest)
        self.compiled: PolicySet | None = None  # the last generation installed, whose unchanged parts are reused

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
            policies = compile_bundle(bundle, self.verifiers, self.compiled)
        except BundleError as exc:
            log.error("policy bundle rejected: %s; %s", exc, self._keeping())
            POLICY_LOAD_ERRORS.inc()
            return
        if self.loaded is not None and bundle.generation <= self.loaded[0]:
            log.warning("policy bundle generation went back from %d to %d (was the bundle recreated?)",
                        self.loaded[0], bundle.generation)
        self.loaded = (bundle.generation, bundle.digest)
        self.compiled = policies
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
        issued = f"Secret {self.namespace}/{TLS_SECRET} from trustgate controller"
        waiting_for = ""
        while True:
            try:
                secret = self.core.read_namespaced_secret(TLS_SECRET, self.namespace)
                if self.tls.write(_decoded(secret)):
                    return self.tls.cert, self.tls.key
                missing = issued
            except ApiException as exc:
                # Also a refusal: an API server that has just started refuses until its RBAC caches are filled.
                missing = issued if exc.status == 404 else f"the API server ({exc.status} {exc.reason})"
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
