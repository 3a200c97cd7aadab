"""Anchored image globs over normalized repositories.

`*` matches within one path segment, `**` across segments, and everything else literally: a pattern always
covers the whole repository name, so `attacker.com/x.trusted.example.com/app` never matches
`trusted.example.com/**`. Patterns whose first segment is a plain name are normalized like references
(`nginx` -> `docker.io/library/nginx`).
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Iterator, Sequence
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


@dataclass(frozen=True)
class ImageGlob:
    pattern: str

    @classmethod
    def compile(cls, pattern: str) -> ImageGlob:
        normalize_pattern(pattern)  # a pattern that is no image name fails here, when the policy is compiled
        return cls(pattern)

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        # Built on first use: with the index, most globs of a large configuration are never tried, and
        # compiling a regular expression costs more than all the rest of a policy's compilation.
        return glob_to_regex(self.pattern)

    def matches(self, repository: str) -> bool:
        return self.regex.fullmatch(repository) is not None


class _Node:
    __slots__ = ("children", "globs")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.globs: list[tuple[int, ImageGlob]] = []


def literal_segments(glob: ImageGlob) -> list[str]:
    """The leading path segments of a glob that hold no wildcard: every repository it matches starts with
    exactly these segments (a pattern always covers the whole name, and `*` never crosses a `/`)."""
    segments = normalize_pattern(glob.pattern).split("/")
    return list(itertools.takewhile(lambda segment: "*" not in segment, segments))


class GlobIndex:
    """Which owners (policies, by position) have a glob matching a repository, without trying every glob.

    Globs are filed in a trie under their literal leading segments (registry, then path); a repository only
    tries the globs filed along its own leading segments, plus those whose registry segment has a wildcard.
    Each candidate is then matched exactly as `ImageGlob.matches` does, so the answer is that of trying every
    glob in turn.
    """

    def __init__(self, owners: Sequence[Sequence[ImageGlob]]) -> None:
        self._root = _Node()
        for owner, globs in enumerate(owners):
            for glob in globs:
                node = self._root
                for segment in literal_segments(glob):
                    node = node.children.setdefault(segment, _Node())
                node.globs.append((owner, glob))

    def _candidates(self, repository: str) -> Iterator[tuple[int, ImageGlob]]:
        node = self._root
        yield from node.globs
        for segment in repository.split("/"):
            child = node.children.get(segment)
            if child is None:
                return
            node = child
            yield from node.globs

    def matching(self, repository: str) -> list[int]:
        """The owners with at least one glob matching `repository`, in ascending order."""
        found: set[int] = set()
        for owner, glob in self._candidates(repository):
            if owner not in found and glob.matches(repository):
                found.add(owner)
        return sorted(found)
