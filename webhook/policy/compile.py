"""Compiling validated resources into an immutable `PolicySet` with a generation number.

Compilation loads all trust material (so a bad key is a configuration error, not a denial at admission
time), resolves every TrustStore and key reference, and finds the verifier for each authority type.

A new generation compiled with the previous one reuses every compiled TrustStore whose resource is unchanged,
and every compiled policy whose resource and TrustStores are unchanged. Each compiled store and policy counts
the generations holding it, and only the last one to be closed releases its trust material (gpg homes).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal

from webhook.config import LoadedResources
from webhook.policy.matching import GlobIndex, ImageGlob
from webhook.policy.models import LabelSelector, TrustPolicy, TrustStore, parse_duration
from webhook.trust import CompiledTrustStore, SharedUse, compile_trust_store
from webhook.validation import ConfigError
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, discover_verifiers

Mode = Literal["enforce", "warn", "audit"]

_generations = itertools.count(1)
# TrustStores compiled at once: their gpg processes mostly wait on process start and disk.
STORE_COMPILERS = 4


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
    # What it was compiled from, and the compiled TrustStores its authorities looked up (None for a name that
    # was looked up and not found): the next generation reuses the policy only if all of them are the same.
    source: TrustPolicy | None = field(default=None, repr=False, compare=False)
    trust_stores_used: Mapping[str, CompiledTrustStore | None] = field(default_factory=dict, repr=False,
                                                                       compare=False)
    use: SharedUse = field(default_factory=SharedUse, repr=False, compare=False)

    def release(self) -> None:
        """Let go of the policy for one generation; the last to let go closes its authorities."""
        if self.use.release():
            for rules in self.authorities:
                rules.verifier.close()

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
    index: GlobIndex = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", GlobIndex([policy.globs for policy in self.policies]))

    def matching(self, repository: str, namespace_labels: Mapping[str, str] | None = None) -> list[CompiledPolicy]:
        """The policies covering `repository`, in configuration order; only the globs that can match it (by its
        registry and leading path) are tried."""
        return [self.policies[position] for position in self.index.matching(repository)
                if self.policies[position].applies_to_namespace(namespace_labels)]

    def close(self) -> None:
        """Release this generation's hold on its policies and TrustStores (a later generation may share them)."""
        for policy in self.policies:
            policy.release()
        for store in self.trust_stores.values():
            store.release()


def compile_policy_set(resources: LoadedResources,
                       verifiers: Mapping[str, VerifierPlugin] | None = None,
                       generation: int | None = None, previous: PolicySet | None = None) -> PolicySet:
    """Compile everything or nothing: on any fault, the trust material compiled so far is released.

    `generation` is the policy bundle's generation when the resources come from one; otherwise a number
    counting the compilations of this process. With `previous`, what is unchanged since it is reused.
    """
    verifiers = dict(verifiers) if verifiers is not None else discover_verifiers()
    old_stores = previous.trust_stores if previous is not None else {}
    old_policies = {policy.name: policy for policy in previous.policies} if previous is not None else {}
    stores: dict[str, CompiledTrustStore] = {}
    policies: list[CompiledPolicy] = []
    try:
        reused_stores = {store.metadata.name: old_stores[store.metadata.name] for _, store in resources.stores
                         if store.metadata.name in old_stores and old_stores[store.metadata.name].source == store
                         and old_stores[store.metadata.name].use.acquire()}
        changed = [store for _, store in resources.stores if store.metadata.name not in reused_stores]
        # gpg inspects one key per process: TrustStores (each in its own home) are compiled side by side.
        with ThreadPoolExecutor(STORE_COMPILERS) as pool:
            outcomes = dict(zip([store.metadata.name for store in changed],
                                pool.map(_compiled_or_fault, changed), strict=True))
        fault: Exception | None = None
        for origin, store in resources.stores:
            outcome = reused_stores.get(store.metadata.name) or outcomes[store.metadata.name]
            if isinstance(outcome, Exception):
                located = origin.error(outcome.path, outcome.message) if isinstance(outcome, ConfigError) else outcome
                fault = fault or located
                continue
            if store.metadata.name not in reused_stores:
                outcome.use.acquire()
            stores[store.metadata.name] = outcome
        if fault is not None:
            raise fault
        for origin, policy in resources.policies:
            old = old_policies.get(policy.metadata.name)
            if (old is not None and old.source == policy
                    and all(stores.get(name) is used for name, used in old.trust_stores_used.items())
                    and old.use.acquire()):
                policies.append(old)
                continue
            try:
                compiled_policy = compile_policy(policy, stores, verifiers)
            except ConfigError as exc:
                raise origin.error(exc.path, exc.message) from None
            compiled_policy.use.acquire()
            policies.append(compiled_policy)
    except BaseException:
        for compiled_policy in policies:
            compiled_policy.release()
        for compiled_store in stores.values():
            compiled_store.release()
        raise
    revoked = frozenset(key for _, store in resources.stores for key in store.spec.revokedKeys or ())
    return PolicySet(generation if generation is not None else next(_generations), tuple(policies), stores, revoked)


def _compiled_or_fault(store: TrustStore) -> CompiledTrustStore | Exception:
    """The compiled store, or what stopped it: every store compiled is collected (and released) even when
    another one fails."""
    try:
        return compile_trust_store(store)
    except Exception as exc:
        return exc


class _RecordedLookups(Mapping[str, CompiledTrustStore]):
    """The compiled TrustStores, recording each name an authority looks up and what it found."""

    def __init__(self, stores: Mapping[str, CompiledTrustStore]) -> None:
        self._stores = stores
        self.used: dict[str, CompiledTrustStore | None] = {}

    def __getitem__(self, name: str) -> CompiledTrustStore:
        self.used[name] = self._stores.get(name)
        return self._stores[name]

    def __iter__(self) -> Iterator[str]:
        # An authority that walks every store depends on all of them.
        self.used.update(self._stores)
        return iter(self._stores)

    def __len__(self) -> int:
        return len(self._stores)


def compile_policy(policy: TrustPolicy, stores: Mapping[str, CompiledTrustStore],
                   verifiers: Mapping[str, VerifierPlugin]) -> CompiledPolicy:
    """Compile one TrustPolicy against compiled TrustStores; raise ConfigError at the first fault."""
    rules: list[AuthorityRules] = []
    lookups = _RecordedLookups(stores)
    try:
        for index, authority in enumerate(policy.spec.authorities):
            verifier = _compile_authority(authority.name, authority.verifier_entries(), lookups, verifiers,
                                          f"spec.authorities[{index}]")
            max_age = authority.maxSignatureAge
            rules.append(AuthorityRules(verifier, authority.minSignatures,
                                        parse_duration(max_age) if max_age else None))
    except BaseException:
        for rule in rules:
            rule.verifier.close()
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
        source=policy,
        trust_stores_used=lookups.used,
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

