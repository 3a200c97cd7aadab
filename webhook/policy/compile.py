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
from webhook.policy.models import LabelSelector, TrustPolicy, parse_duration
from webhook.trust import CompiledTrustStore, compile_trust_store
from webhook.validation import ConfigError
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, discover_verifiers

Mode = Literal["enforce", "warn", "audit"]

_generations = itertools.count(1)


@dataclass(frozen=True)
class AuthorityRules:
    """A compiled authority with the rules every verifier type shares."""

    verifier: CompiledAuthority
    min_signatures: int = 1
    max_signature_age_seconds: int | None = None

    @property
    def name(self) -> str:
        return self.verifier.name


@dataclass(frozen=True)
class CompiledPolicy:
    name: str
    globs: tuple[ImageGlob, ...]
    mode: Mode
    threshold: int
    authorities: tuple[AuthorityRules, ...]
    require_digest: bool = False
    mutate_digest: bool = True
    namespace_selector: LabelSelector | None = None
    denied_digests: frozenset[str] = frozenset()
    # Set for a TrustPolicy that exists but cannot be enforced (e.g. its TrustStore is not Ready): it still
    # matches its images and fails them with this reason, so a broken dependency never turns into no-match.
    unavailable: str | None = None

    def matches(self, repository: str) -> bool:
        return any(glob.matches(repository) for glob in self.globs)

    def applies_to_namespace(self, labels: Mapping[str, str] | None) -> bool:
        """Unknown namespace labels (None) never exempt an image from a policy."""
        if self.namespace_selector is None or labels is None:
            return True
        return self.namespace_selector.matches(dict(labels))


@dataclass(frozen=True)
class PolicySet:
    generation: int
    policies: tuple[CompiledPolicy, ...]
    trust_stores: Mapping[str, CompiledTrustStore]
    # Revocation is global: a key revoked in any TrustStore is compromised wherever else it is trusted.
    revoked_keys: frozenset[str] = frozenset()

    def matching(self, repository: str, namespace_labels: Mapping[str, str] | None = None) -> list[CompiledPolicy]:
        return [policy for policy in self.policies
                if policy.matches(repository) and policy.applies_to_namespace(namespace_labels)]

    def close(self) -> None:
        for policy in self.policies:
            for authority in policy.authorities:
                authority.verifier.close()


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
        _close(rules.verifier for policy in policies for rules in policy.authorities)
        raise
    revoked = frozenset(key for _, store in resources.stores for key in store.spec.revokedKeys or ())
    return PolicySet(generation if generation is not None else next(_generations), tuple(policies), stores, revoked)


def compile_policy(policy: TrustPolicy, stores: Mapping[str, CompiledTrustStore],
                   verifiers: Mapping[str, VerifierPlugin]) -> CompiledPolicy:
    """Compile one TrustPolicy against compiled TrustStores; raise ConfigError at the first fault."""
    rules: list[AuthorityRules] = []
    try:
        for index, authority in enumerate(policy.spec.authorities):
            verifier = _compile_authority(authority.name, authority.verifier_entries(), stores, verifiers,
                                          f"spec.authorities[{index}]")
            max_age = authority.maxSignatureAge
            rules.append(AuthorityRules(verifier, authority.minSignatures,
                                        parse_duration(max_age) if max_age else None))
    except BaseException:
        _close(rule.verifier for rule in rules)
        raise
    spec = policy.spec
    return CompiledPolicy(
        name=policy.metadata.name,
        globs=tuple(ImageGlob.compile(pattern) for pattern in spec.images),
        mode=spec.mode,
        threshold=spec.threshold or len(spec.authorities),
        authorities=tuple(rules),
        require_digest=spec.requireDigest,
        mutate_digest=spec.mutateDigest,
        namespace_selector=spec.namespaceSelector,
        denied_digests=frozenset(spec.deniedDigests or ()),
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
