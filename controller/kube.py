"""The controller's Kubernetes API calls, in one place: reads, status patches, Secrets, Events, caBundles.

Everything here is synchronous (the official client); the controller calls it from a worker thread.
"""

from __future__ import annotations

import base64
import datetime
import logging
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from webhook.policy.models import GROUP, VERSION

log = logging.getLogger(__name__)

COMPONENT = "trustgate-controller"
# Events about cluster-scoped objects live in `default`, where `kubectl describe` looks for them.
CLUSTER_EVENT_NAMESPACE = "default"
WEBHOOK_CONFIGURATION_KINDS = ("ValidatingWebhookConfiguration", "MutatingWebhookConfiguration")


@dataclass(frozen=True, slots=True)
class StoredSecret:
    data: dict[str, bytes]
    annotations: dict[str, str]
    resource_version: str | None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Cluster:
    def __init__(self, namespace: str, api: client.ApiClient | None = None) -> None:
        self.namespace = namespace
        self.api = api or client.ApiClient()
        self.core = client.CoreV1Api(self.api)
        self.custom = client.CustomObjectsApi(self.api)
        self.admission = client.AdmissionregistrationV1Api(self.api)

    # --- trustgate resources -------------------------------------------------------------------------

    def list_resources(self, plural: str) -> list[dict[str, Any]]:
        listing = self.custom.list_cluster_custom_object(GROUP, VERSION, plural)
        return list(listing.get("items", []))

    def patch_status(self, plural: str, name: str, status: Mapping[str, Any]) -> None:
        try:
            self.custom.patch_cluster_custom_object_status(GROUP, VERSION, plural, name, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile: nothing to report on
                raise

    # --- Secrets and ConfigMaps ----------------------------------------------------------------------

    def read_data(self, kind: str, namespace: str, name: str) -> dict[str, str] | None:
        """The decoded data of a Secret or ConfigMap (values that are not UTF-8 are left out)."""
        try:
            if kind == "Secret":
                secret = self.core.read_namespaced_secret(name, namespace)
                decoded = {key: base64.b64decode(value) for key, value in (secret.data or {}).items()}
                return {key: value.decode() for key, value in decoded.items() if _is_utf8(value)}
            config_map = self.core.read_namespaced_config_map(name, namespace)
            return dict(config_map.data or {})
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise

    def read_secret(self, name: str) -> StoredSecret | None:
        try:
            secret = self.core.read_namespaced_secret(name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return None
            raise
        return StoredSecret({key: base64.b64decode(value) for key, value in (secret.data or {}).items()},
                            dict(secret.metadata.annotations or {}), secret.metadata.resource_version)

    def write_secret(self, name: str, data: Mapping[str, bytes], annotations: Mapping[str, str],
                     previous: StoredSecret | None, secret_type: str = "Opaque") -> None:
        """Create the Secret, or replace it if unchanged since `previous` was read (409 otherwise)."""
        metadata: dict[str, Any] = {"name": name, "namespace": self.namespace, "annotations": dict(annotations),
                                    "labels": {"app.kubernetes.io/managed-by": COMPONENT}}
        body = {"apiVersion": "v1", "kind": "Secret", "type": secret_type, "metadata": metadata,
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()}}
        if previous is None:
            self.core.create_namespaced_secret(self.namespace, body)
        else:
            metadata["resourceVersion"] = previous.resource_version
            self.core.replace_namespaced_secret(name, self.namespace, body)

    # --- webhook configurations ----------------------------------------------------------------------

    def set_ca_bundle(self, configuration: str, ca_bundle: bytes) -> list[str]:
        """Put `ca_bundle` into every webhook of the named configurations that exist; say which changed."""
        encoded = base64.b64encode(ca_bundle).decode()
        changed: list[str] = []
        for kind in WEBHOOK_CONFIGURATION_KINDS:
            read, patch = ((self.admission.read_validating_webhook_configuration,
                            self.admission.patch_validating_webhook_configuration)
                           if kind.startswith("Validating") else
                           (self.admission.read_mutating_webhook_configuration,
                            self.admission.patch_mutating_webhook_configuration))
            try:
                current = self.api.sanitize_for_serialization(read(configuration))
            except ApiException as exc:
                if exc.status == 404:
                    continue
                raise
            webhooks = current.get("webhooks") or []
            if all(hook.get("clientConfig", {}).get("caBundle") == encoded for hook in webhooks):
                continue
            for hook in webhooks:
                hook.setdefault("clientConfig", {})["caBundle"] = encoded
            # A JSON merge patch would replace the list anyway; send it whole, guarded by resourceVersion.
            patch(configuration, {"metadata": {"resourceVersion": current["metadata"]["resourceVersion"]},
                                  "webhooks": webhooks})
            changed.append(kind)
        return changed

    # --- Events --------------------------------------------------------------------------------------

    def post_event(self, involved: Mapping[str, Any], event_type: str, reason: str, message: str) -> None:
        metadata = involved.get("metadata", {})
        namespace = metadata.get("namespace") or CLUSTER_EVENT_NAMESPACE
        now = _now()
        body = {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"name": f"{metadata.get('name', 'trustgate')}.{uuid.uuid4().hex[:16]}",
                         "namespace": namespace},
            "involvedObject": {"apiVersion": involved.get("apiVersion"), "kind": involved.get("kind"),
                               "name": metadata.get("name"), "uid": metadata.get("uid"),
                               "namespace": metadata.get("namespace")},
            "type": event_type, "reason": reason, "message": message[:1024],
            "source": {"component": COMPONENT}, "reportingComponent": COMPONENT,
            "firstTimestamp": now, "lastTimestamp": now, "count": 1,
        }
        try:
            self.core.create_namespaced_event(namespace, body)
        except ApiException as exc:  # an Event is advice; never let it stop a reconciliation
            log.warning("cannot post Event %s for %s: %s", reason, metadata.get("name"), exc.reason)


def _is_utf8(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True
