"""Which registries the webhook may contact: those some TrustPolicy's `images` could cover, and those an
authority names for its signatures (a cosign signatures repository). Every other registry is never contacted,
whatever a pod spec, a registry redirect or a referrer says.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from webhook.policy.compile import PolicySet
from webhook.policy.matching import normalize_pattern


def _segment_regex(segment: str) -> str:
    return "".join("[^/]*" if part == "*" else re.escape(part) for part in re.split(r"(\*)", segment))


def domain_pattern(pattern: str) -> re.Pattern[str]:
    """The registries an image glob can match: its first segment, or, when `**` can cross into the path from
    there, every registry starting like the part before the `**`."""
    normalized = normalize_pattern(pattern)
    first = normalized.split("/", 1)[0]
    if "**" in first:
        return re.compile(_segment_regex(first.split("**", 1)[0]) + ".*")
    return re.compile(_segment_regex(first))


@dataclass(frozen=True)
class RegistryScope:
    patterns: tuple[re.Pattern[str], ...]
    registries: frozenset[str]

    @classmethod
    def of(cls, policies: PolicySet) -> RegistryScope:
        patterns = tuple(dict.fromkeys(domain_pattern(glob.pattern) for policy in policies.policies
                                       for glob in policy.globs))
        named = frozenset(registry for policy in policies.policies for rules in policy.authorities
                          for registry in rules.verifier.registries())
        return cls(patterns, named)

    def __call__(self, registry: str) -> bool:
        return registry in self.registries or any(pattern.fullmatch(registry) for pattern in self.patterns)
