"""One reconciliation: evaluate every TrustStore and TrustPolicy, write their status, publish the bundle,
keep the webhook certificate and caBundles current.

Level-triggered on purpose: any change (a TrustStore, a TrustPolicy, a referenced Secret or ConfigMap, the
bundle or certificate Secret, a webhook configuration) leads to the same full pass, so a TrustPolicy always
reflects the TrustStores it uses and the bundle always reflects all of them. Trust objects are few; a pass
is cheap, and status and Secrets are written only when their content changes.
"""

from __future__ import annotations

import datetime
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from controller.certs import TLS_SECRET, ca_bundle, plan_tls, service_hosts
from controller.evaluate import (
    KeyReference,
    Notice,
    PolicyEvaluation,
    StoreEvaluation,
    evaluate_policy,
    evaluate_store,
    ready_condition,
)
from controller.kube import Cluster
from webhook.bundle import (
    ANNOTATION_DIGEST,
    ANNOTATION_GENERATION,
    BUNDLE_KEY,
    BUNDLE_SECRET,
    BundleContent,
    UnavailablePolicy,
    unavailable_policy,
)
from webhook.trust import CompiledTrustStore
from webhook.verifiers.base import VerifierPlugin

log = logging.getLogger(__name__)

# A Warning Event is repeated at most this often while its cause persists.
EVENT_REPEAT = datetime.timedelta(hours=24)


@dataclass(frozen=True)
class ControllerSettings:
    namespace: str = "trustgate-system"
    webhook_configuration: str = "trustgate"
    webhook_service: str = "trustgate-webhook"
    # Extra names or addresses on the serving certificate, e.g. 127.0.0.1 for a webhook reached by URL.
    webhook_hosts: tuple[str, ...] = ()
    # False when another issuer (cert-manager) writes the serving certificate and fills the caBundle.
    manage_certificates: bool = True
    # Namespaces TrustStores may take key material from; empty: any namespace.
    key_source_namespaces: tuple[str, ...] = ()

    @property
    def serving_hosts(self) -> list[str]:
        return [*service_hosts(self.webhook_service, self.namespace), *self.webhook_hosts]


@dataclass
class Controller:
    cluster: Cluster
    settings: ControllerSettings
    verifiers: Mapping[str, VerifierPlugin]
    clock: Callable[[], datetime.datetime] = field(default=lambda: datetime.datetime.now(datetime.UTC))

    def __post_init__(self) -> None:
        self._references: frozenset[KeyReference] = frozenset()
        self._posted: dict[tuple[str, str, str], datetime.datetime] = {}
        self._lock = threading.Lock()
        # The TrustStores compiled by the last reconciliation, reused while their resolved content is the same.
        self._compiled_stores: dict[str, CompiledTrustStore] = {}

    def watches(self, kind: str, namespace: str | None, name: str) -> bool:
        """Whether a change of this Secret or ConfigMap must trigger a reconciliation."""
        if namespace == self.settings.namespace and kind == "Secret" and name in (BUNDLE_SECRET, TLS_SECRET):
            return True
        return any(ref.kind == kind and ref.namespace == namespace and ref.name == name
                   for ref in self._references)

    def reconcile(self) -> None:
        with self._lock:
            now = self.clock()
            stores = self._reconcile_stores(now)
            policies = self._reconcile_policies(stores, now)
            self._publish_bundle(stores, policies)
            if self.settings.manage_certificates:
                self._reconcile_tls(now)

    # --- TrustStores and TrustPolicies ---------------------------------------------------------------

    def _reconcile_stores(self, now: datetime.datetime) -> dict[str, StoreEvaluation]:
        evaluations: dict[str, StoreEvaluation] = {}
        for body in self.cluster.list_resources("truststores"):
            evaluation = evaluate_store(body, self.cluster.read_data, now,
                                        frozenset(self.settings.key_source_namespaces) or None, self._compiled_stores)
            evaluations[evaluation.name] = evaluation
            status: dict[str, Any] = {
                "keyCount": len(evaluation.keys) if evaluation.ready else None,
                "keys": [key.model_dump(exclude_none=True) for key in evaluation.keys] or None,
            }
            self._write_status("truststores", body, evaluation.ready, evaluation.reason, evaluation.message,
                               status, evaluation.notices, now)
        self._references = frozenset(ref for evaluation in evaluations.values() for ref in evaluation.references)
        self._compiled_stores = {name: evaluation.compiled for name, evaluation in evaluations.items()
                                 if evaluation.compiled is not None}
        return evaluations

    def _reconcile_policies(self, stores: Mapping[str, StoreEvaluation],
                            now: datetime.datetime) -> list[tuple[Mapping[str, Any], PolicyEvaluation]]:
        evaluated: list[tuple[Mapping[str, Any], PolicyEvaluation]] = []
        for body in self.cluster.list_resources("trustpolicies"):
            evaluation = evaluate_policy(body, stores, self.verifiers)
            evaluated.append((body, evaluation))
            self._write_status("trustpolicies", body, evaluation.ready, evaluation.reason, evaluation.message,
                               {"authorityCount": evaluation.authority_count}, (), now)
        return evaluated

    def _write_status(self, plural: str, body: Mapping[str, Any], ready: bool, reason: str, message: str,
                      fields: Mapping[str, Any], notices: Sequence[Notice], now: datetime.datetime) -> None:
        current = body.get("status") or {}
        generation = body.get("metadata", {}).get("generation")
        condition = ready_condition(ready, reason, message, generation, current.get("conditions"), now)
        status = {"observedGeneration": generation, "conditions": [condition], **fields}
        if any(current.get(key) != value for key, value in status.items()):
            # Explicit nulls remove fields that no longer apply (JSON merge patch).
            self.cluster.patch_status(plural, body["metadata"]["name"], status)
            log.info("%s %s: Ready=%s %s: %s", body.get("kind"), body["metadata"]["name"], condition["status"],
                     reason, message)
            previous: Mapping[str, Any] = next(
                (c for c in current.get("conditions") or [] if c.get("type") == "Ready"), {})
            if not ready and (previous.get("status") != "False" or previous.get("message") != message):
                self._event(body, reason, message, now, repeat=False)
        for notice in notices:
            self._event(body, notice.reason, notice.message, now, repeat=True)

    def _event(self, body: Mapping[str, Any], reason: str, message: str, now: datetime.datetime,
               *, repeat: bool) -> None:
        key = (str(body.get("metadata", {}).get("uid")), reason, message)
        last = self._posted.get(key)
        if repeat and last is not None and now - last < EVENT_REPEAT:
            return
        self._posted[key] = now
        self.cluster.post_event(body, "Warning", reason, message)

    # --- the bundle ----------------------------------------------------------------------------------

    def _publish_bundle(self, stores: Mapping[str, StoreEvaluation],
                        policies: Sequence[tuple[Mapping[str, Any], PolicyEvaluation]]) -> None:
        unavailable: list[UnavailablePolicy] = []
        for body, evaluation in policies:
            if evaluation.ready:
                continue
            entry = unavailable_policy(body, f"{evaluation.reason}: {evaluation.message}")
            if entry is None:
                log.warning("TrustPolicy %s has no usable image patterns; it is left out of the bundle",
                            evaluation.name)
            else:
                unavailable.append(entry)
        content = BundleContent(
            tuple(store.resolved for store in stores.values() if store.ready and store.resolved is not None),
            tuple(evaluation.policy for _, evaluation in policies
                  if evaluation.ready and evaluation.policy is not None),
            tuple(unavailable),
            frozenset(key for store in stores.values() for key in store.revoked_keys),
        )
        digest = content.digest
        previous = self.cluster.read_secret(BUNDLE_SECRET)
        last = previous.annotations.get(ANNOTATION_GENERATION, "0") if previous is not None else "0"
        last_generation = int(last) if last.isdigit() else 0
        # Compare the stored bytes, not only the annotation: a bundle edited by hand is put right.
        if previous is not None and previous.data.get(BUNDLE_KEY) == content.encode(last_generation):
            return
        generation = last_generation + 1
        self.cluster.write_secret(BUNDLE_SECRET, {BUNDLE_KEY: content.encode(generation)},
                                  {ANNOTATION_GENERATION: str(generation), ANNOTATION_DIGEST: digest}, previous)
        log.info("published policy bundle generation %d: %d TrustStores, %d TrustPolicies, %d unavailable",
                 generation, len(content.trust_stores), len(content.trust_policies),
                 len(content.unavailable_policies))

    # --- webhook TLS ---------------------------------------------------------------------------------

    def _reconcile_tls(self, now: datetime.datetime) -> None:
        previous = self.cluster.read_secret(TLS_SECRET)
        data = previous.data if previous is not None else {}
        plan = plan_tls(data, self.settings.serving_hosts, now)
        if plan is not None:
            # Trust first, then serve: the caBundle names the new CA before any certificate from it is used.
            self.cluster.set_ca_bundle(self.settings.webhook_configuration, ca_bundle(plan.data, now))
            self.cluster.write_secret(TLS_SECRET, plan.data, {}, previous, secret_type="Opaque")
            log.info("webhook TLS: %s", plan.reason)
            data = plan.data
        changed = self.cluster.set_ca_bundle(self.settings.webhook_configuration, ca_bundle(data, now))
        if changed:
            log.info("updated caBundle of %s %s", " and ".join(changed), self.settings.webhook_configuration)
