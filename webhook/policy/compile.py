"""Compiling validated resources into an immutable `PolicySet` with a generation number.

Compilation loads all trust material (so a bad key is a configuration error, not a denial at admission
time), resolves every TrustStore and key reference, and finds the verifier for each authority type.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from webhook.config import LoadedResources
from webhook.policy.matching import ImageGlob
from webhook.policy.models import TrustPolicy
from webhook.trust import CompiledTrustStore, compile_trust_store
from webhook.verifiers.base import CompiledAuthority, ConfigError, VerifierPlugin, discover_verifiers

Mode = Literal["enforce", "warn", "audit"]

_generations = itertools.count(1)


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    globs: tuple[ImageGlob, ...]
    mode: Mode
    threshold: int
    authorities: tuple[CompiledAuthority, ...]
    # Set for a TrustPolicy that exists but cannot be enforced (e.g. its TrustStore is not Ready): it still
    # matches its images and fails them with this reason, so a broken dependency never turns into no-match.
    unavailable: str | None = None

    def matches(self, repository: str) -> bool:
        return any(glob.matches(repository) for glob in self.globs)


@dataclass(frozen=True)
class PolicySet:
    generation: int
    policies: tuple[CompiledPolicy, ...]
    trust_stores: Mapping[str, CompiledTrustStore]

    def matching(self, repository: str) -> list[CompiledPolicy]:
        return [policy for policy in self.policies if policy.matches(repository)]

    def close(self) -> None:
        for policy in self.policies:
            for authority in policy.authorities:
                authority.close()


def compile_policy_set(resources: LoadedResources,
                       verifiers: Mapping[str, VerifierPlugin] | None = None,
                       generation: int | None = None) -> PolicySet:
    """Compile everything or nothing: on any fault, the trust material compiled so far is released.

    `generation` is the policy bundle's generation when the resources come from one; otherwise a number
    counting the compilations of this process.
    """
    verifiers = dict(verifiers) if verifiers is not None else discover_verifiers()
    stores: dict[str, CompiledTrustStore] = {}
    for origin, store in resources.stores:
        try:
            stores[store.metadata.name] = compile_trust_store(store)
        except ConfigError as exc:
            raise origin.error(exc.path, exc.message) from None

    policies: list[CompiledPolicy] = []
    try:
        for origin, policy in resources.policies:
            try:
                policies.append(compile_policy(policy, stores, verifiers))
            except ConfigError as exc:
                raise origin.error(exc.path, exc.message) from None
    except BaseException:
        _close(authority for policy in policies for authority in policy.authorities)
        raise
    return PolicySet(generation if generation is not None else next(_generations), tuple(policies), stores)


def compile_policy(policy: TrustPolicy, stores: Mapping[str, CompiledTrustStore],
                   verifiers: Mapping[str, VerifierPlugin]) -> CompiledPolicy:
    """Compile one TrustPolicy against compiled TrustStores; raise ConfigError at the first fault."""
    authorities: list[CompiledAuthority] = []
    try:
        for index, authority in enumerate(policy.spec.authorities):
            authorities.append(_compile_authority(authority.name, authority.verifier_entries(), stores, verifiers,
                                                  f"spec.authorities[{index}]"))
    except BaseException:
        _close(authorities)
        raise
    return CompiledPolicy(
        name=policy.metadata.name,
        globs=tuple(ImageGlob.compile(pattern) for pattern in policy.spec.images),
        mode=policy.spec.mode,
        threshold=policy.spec.threshold or len(policy.spec.authorities),
        authorities=tuple(authorities),
    )


def _compile_authority(name: str, entries: Mapping[str, object], stores: Mapping[str, CompiledTrustStore],
                       verifiers: Mapping[str, VerifierPlugin], path: str) -> CompiledAuthority:
    if len(entries) != 1:
        known = ", ".join(sorted(verifiers))
        found = ", ".join(sorted(entries)) or "none"
        raise ConfigError(path, f"exactly one verifier type is required ({known}); found {found}")
    ((type_name, spec),) = entries.items()
    plugin = verifiers.get(type_name)
    if plugin is None:
        raise ConfigError(f"{path}.{type_name}",
                          f"unknown verifier type {type_name!r} (known: {', '.join(sorted(verifiers))})")
    return plugin.compile(name, spec, stores, f"{path}.{type_name}")


def _close(authorities: Iterable[CompiledAuthority]) -> None:
    for authority in authorities:
        authority.close()
