"""`trustgate controller`: thin Kopf handlers around the level-triggered reconciliation.

Kopf watches the objects; every relevant event only asks for a reconciliation. One background loop holds
the leader Lease and, while it leads, runs the reconciliation in a worker thread when asked and every
RESYNC_SECONDS (so keys that approach expiry and certificates due for renewal are noticed without events).
Standby replicas watch too, but write nothing. Only event handlers are used: Kopf adds no finalizers or
annotations to the watched objects.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import kopf
import urllib3

from controller.kube import Cluster
from controller.leader import RENEW_SECONDS, LeaseElection
from controller.reconcile import Controller, ControllerSettings
from webhook.cluster import load_client_configuration
from webhook.policy.models import GROUP, VERSION
from webhook.verifiers.base import discover_verifiers

log = logging.getLogger(__name__)

RESYNC_SECONDS = 300.0
# Changes that arrive together (kubectl apply -f dir/) are handled in one pass.
DEBOUNCE_SECONDS = 0.5
RETRY_SECONDS = 5.0
# A standby reads the Lease this often: it notices the last renewal of a leader that died, and the moment
# that renewal is a Lease duration old, within this much (one read a second, only while standing by).
STANDBY_ROUND_SECONDS = 1.0

registry = kopf.OperatorRegistry()


class RetryForever:
    """Kopf's delays between attempts of a failed API request: 1, 2 and 4 s, then every 5 s without end (a
    returning API server is noticed within 5 s).

    With Kopf's default (eight retries, about a minute) a watch whose API server stays away longer gives up, and a
    watcher that gives up stops the whole controller. An iterable without a length makes Kopf retry as long as
    it yields; a new iterator is made for each request."""

    def __iter__(self) -> Iterator[float]:
        return itertools.chain((1.0, 2.0, 4.0), itertools.repeat(5.0))


@dataclass
class Runtime:
    """What the handlers share, kept in Kopf's memo."""

    controller: Controller
    election: LeaseElection
    wanted: asyncio.Event = field(default_factory=asyncio.Event)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def request(self) -> None:
        self.wanted.set()


def _runtime(memo: Any) -> Runtime:
    runtime: Runtime = memo.runtime
    return runtime


@kopf.on.login(registry=registry)
def login(**kwargs: Any) -> Any:
    """The same credentials as the controller's own API client: in-cluster, or KUBECONFIG."""
    return kopf.login_via_client(**kwargs)


@kopf.on.startup(registry=registry)
async def configure(settings: kopf.OperatorSettings, memo: Any, **_: Any) -> None:
    settings.peering.standalone = True  # the Lease decides who acts
    settings.posting.enabled = False  # Events are the controller's own, posted only by the leader
    settings.watching.server_timeout = 300
    settings.networking.error_backoffs = RetryForever()  # an API server outage is waited out, however long
    runtime = _runtime(memo)
    if runtime.controller.settings.key_source_namespaces:
        # Watch exactly the namespaces named: listing all namespaces would need a permission not granted.
        settings.scanning.disabled = True
    # Every watched event only requests a pass; Kopf's per-event "handler succeeded" lines are noise.
    logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    runtime.tasks.append(asyncio.create_task(_elect(runtime)))
    runtime.tasks.append(asyncio.create_task(_reconcile_loop(runtime)))


@kopf.on.cleanup(registry=registry)
async def stop(memo: Any, **_: Any) -> None:
    runtime = _runtime(memo)
    for task in runtime.tasks:
        task.cancel()
    for task in runtime.tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task
    await asyncio.to_thread(runtime.election.release)


@kopf.on.event(GROUP, VERSION, "truststores", registry=registry)
@kopf.on.event(GROUP, VERSION, "trustpolicies", registry=registry)
async def trust_object_changed(memo: Any, **_: Any) -> None:
    _runtime(memo).request()


def _watched(kind: str) -> Any:
    def when(name: str, namespace: str | None, memo: Any, **_: Any) -> bool:
        return _runtime(memo).controller.watches(kind, namespace, name)

    return when


@kopf.on.event("v1", "secrets", registry=registry, when=_watched("Secret"))
@kopf.on.event("v1", "configmaps", registry=registry, when=_watched("ConfigMap"))
async def key_source_changed(memo: Any, **_: Any) -> None:
    _runtime(memo).request()


def _our_configuration(name: str, memo: Any, **_: Any) -> bool:
    return name == _runtime(memo).controller.settings.webhook_configuration


@kopf.on.event("admissionregistration.k8s.io", "v1", "validatingwebhookconfigurations", registry=registry,
               when=_our_configuration)
@kopf.on.event("admissionregistration.k8s.io", "v1", "mutatingwebhookconfigurations", registry=registry,
               when=_our_configuration)
async def webhook_configuration_changed(memo: Any, **_: Any) -> None:
    _runtime(memo).request()


async def _elect(runtime: Runtime) -> None:
    while True:
        was_leader = runtime.election.is_leader
        try:
            leads = await asyncio.to_thread(runtime.election.try_acquire_or_renew)
        except Exception as exc:
            log.warning("leader election round failed: %s", exc)
            leads = runtime.election.is_leader
        if leads and not was_leader:
            runtime.request()
        elif was_leader and not leads:
            log.warning("lost the leader Lease; standing by")
        await asyncio.sleep(RENEW_SECONDS if leads else STANDBY_ROUND_SECONDS)


async def _reconcile_loop(runtime: Runtime) -> None:
    while True:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(runtime.wanted.wait(), RESYNC_SECONDS)
        await asyncio.sleep(DEBOUNCE_SECONDS)
        runtime.wanted.clear()
        if not runtime.election.is_leader:
            continue
        try:
            await asyncio.to_thread(runtime.controller.reconcile)
        except urllib3.exceptions.HTTPError as exc:
            # An API server that is away (restarting, partitioned) is an expected condition, not a defect.
            log.warning("reconciliation failed, the API server cannot be reached (%s); retrying in %gs",
                        exc, RETRY_SECONDS)
            await _retry_later(runtime)
        except Exception:
            log.exception("reconciliation failed; retrying in %gs", RETRY_SECONDS)
            await _retry_later(runtime)


async def _retry_later(runtime: Runtime) -> None:
    await asyncio.sleep(RETRY_SECONDS)
    runtime.request()


def run(settings: ControllerSettings, liveness_endpoint: str | None = None) -> None:
    """Run the controller until it is stopped (SIGINT/SIGTERM)."""
    load_client_configuration()
    cluster = Cluster(settings.namespace)
    identity = f"{os.environ.get('POD_NAME') or socket.gethostname()}-{uuid.uuid4().hex[:8]}"
    runtime = Runtime(Controller(cluster, settings, discover_verifiers()),
                      LeaseElection(settings.namespace, identity, cluster.api))
    # Secrets and ConfigMaps are watched in every namespace, or only where key material may come from
    # (and the controller's own namespace, for the bundle and certificate); cluster-scoped objects either way.
    namespaces = [*settings.key_source_namespaces, settings.namespace] if settings.key_source_namespaces else []
    kopf.run(registry=registry, clusterwide=not namespaces, namespaces=namespaces, standalone=True,
             liveness_endpoint=liveness_endpoint, memo=kopf.Memo(runtime=runtime))
