"""Leader election with a coordination.k8s.io Lease, so one controller replica acts and the others wait.

The algorithm is client-go's: the holder renews `renewTime` every RENEW seconds; a candidate takes the Lease
over only after it has seen the same record unchanged for `leaseDurationSeconds` by its *own* clock, so
clock skew between nodes does not matter. Every write is guarded by resourceVersion, so two candidates
cannot both win. A leader that cannot renew within the lease duration steps down by itself.
"""

from __future__ import annotations

import datetime
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

LEASE_NAME = "trustgate-controller"
LEASE_DURATION_SECONDS = 15
RENEW_SECONDS = 5


def _micro_time(moment: datetime.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class LeaseElection:
    namespace: str
    identity: str
    api: client.ApiClient
    lease_name: str = LEASE_NAME
    duration: int = LEASE_DURATION_SECONDS
    _observed: tuple[Any, ...] | None = field(default=None, init=False)
    _observed_at: float = field(default=0.0, init=False)
    _renewed_at: float | None = field(default=None, init=False)

    @property
    def is_leader(self) -> bool:
        # Step down before a standby may take over (it waits the full duration after the last renewal).
        return self._renewed_at is not None and time.monotonic() - self._renewed_at < self.duration * 2 / 3

    def try_acquire_or_renew(self) -> bool:
        """One round of the election; returns whether this replica leads afterwards."""
        coordination = client.CoordinationV1Api(self.api)
        now = datetime.datetime.now(datetime.UTC)
        try:
            lease = coordination.read_namespaced_lease(self.lease_name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            return self._write(coordination, None, 0, now)
        spec = lease.spec
        record = (spec.holder_identity, spec.renew_time, spec.lease_transitions)
        if record != self._observed:
            self._observed, self._observed_at = record, time.monotonic()
        held_by_other = spec.holder_identity not in (None, "", self.identity)
        expired = time.monotonic() - self._observed_at >= (spec.lease_duration_seconds or self.duration)
        if held_by_other and not expired:
            self._renewed_at = None
            return False
        transitions = (spec.lease_transitions or 0) + (1 if spec.holder_identity != self.identity else 0)
        return self._write(coordination, lease, transitions, now)

    def _write(self, coordination: client.CoordinationV1Api, lease: Any, transitions: int,
               now: datetime.datetime) -> bool:
        acquire = (lease.spec.acquire_time if lease is not None and lease.spec.holder_identity == self.identity
                   else now)
        metadata: dict[str, Any] = {"name": self.lease_name, "namespace": self.namespace}
        body = {
            "apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": metadata,
            "spec": {"holderIdentity": self.identity, "leaseDurationSeconds": self.duration,
                     "acquireTime": _micro_time(acquire), "renewTime": _micro_time(now),
                     "leaseTransitions": transitions},
        }
        try:
            if lease is None:
                coordination.create_namespaced_lease(self.namespace, body)
            else:
                metadata["resourceVersion"] = lease.metadata.resource_version
                coordination.replace_namespaced_lease(self.lease_name, self.namespace, body)
        except ApiException as exc:
            if exc.status in (409, 422):  # another candidate wrote first
                self._renewed_at = None
                return False
            raise
        if self._renewed_at is None:
            log.info("%s is now the leader (Lease %s/%s)", self.identity, self.namespace, self.lease_name)
        self._renewed_at = time.monotonic()
        return True

    def release(self) -> None:
        """Hand the Lease back on a clean shutdown, so a standby replica takes over at once."""
        if not self.is_leader:
            return
        coordination = client.CoordinationV1Api(self.api)
        try:
            lease = coordination.read_namespaced_lease(self.lease_name, self.namespace)
            if lease.spec.holder_identity == self.identity:
                coordination.patch_namespaced_lease(self.lease_name, self.namespace, {
                    "metadata": {"resourceVersion": lease.metadata.resource_version},
                    "spec": {"holderIdentity": None, "leaseDurationSeconds": 1}})
        except ApiException as exc:
            log.warning("cannot release Lease %s/%s: %s", self.namespace, self.lease_name, exc.reason)
        self._renewed_at = None
