"""Anchored image globs over normalized repositories.

`*` matches within one path segment, `**` across segments, and everything else literally: a pattern always
covers the whole repository name, so `attacker.com/x.trusted.example.com/app` never matches
`trusted.example.com/**`. Patterns whose first segment is a plain name are normalized like references
(`nginx` -> `docker.io/library/nginx`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from webhook.references import split_domain


def normalize_pattern(pattern: str) -> str:
    first_segment = pattern.split("/", 1)[0]
    if "*" in first_segment:
        return pattern
    domain, path = split_domain(pattern)
    return f"{domain}/{path}"


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    parts = re.split(r"(\*\*|\*)", normalize_pattern(pattern))
    translated = "".join(
        ".*" if part == "**" else "[^/]*" if part == "*" else re.escape(part) for part in parts
    )
    return re.compile(translated)


@dataclass(frozen=True, slots=True)
class ImageGlob:
    pattern: str
    regex: re.Pattern[str]

    @classmethod
    def compile(cls, pattern: str) -> ImageGlob:
        return cls(pattern, glob_to_regex(pattern))

    def matches(self, repository: str) -> bool:
        return self.regex.fullmatch(repository) is not None
