"""Node-side registry mirrors: where the nodes really pull an image a pod names by its upstream reference.

Air-gapped clusters keep copies of upstream images in a private registry and configure the container runtime
to pull, say, `docker.io/library/nginx:1.27` from `mirror.internal/library/nginx:1.27` (containerd
`hosts.toml`, CRI-O `registries.conf` mirrors). trustgate reads manifests and signatures from the same mirrors,
while policies and identity rules keep judging the name the pod uses.

Order follows containerd's `hosts.toml`: the mirrors of an upstream are tried in the order given, a mirror that
fails or does not have what is asked for hands over to the next one; the upstream itself is tried last only
when explicitly allowed (containerd's default of falling back to the upstream would make an air-gapped webhook
wait on, or leak requests to, a registry it must never reach).
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit

from webhook.references import (
    DEFAULT_DOMAIN,
    LEGACY_DEFAULT_DOMAIN,
    ImageReference,
    InvalidReferenceError,
    is_repository_prefix,
    parse_reference,
)


class MirrorConfigError(ValueError):
    """A mirror setting that cannot be used; the message says which value and why, `setting` which list it
    came from (mirrors, fallback or lookasides)."""

    def __init__(self, message: str, setting: str = "mirrors") -> None:
        super().__init__(message)
        self.setting = setting


def _prefix(text: str, what: str) -> str:
    value = text.strip().rstrip("/")
    domain, slash, path = value.partition("/")
    if domain == LEGACY_DEFAULT_DOMAIN:
        value = DEFAULT_DOMAIN + slash + path
    if not is_repository_prefix(value):
        raise MirrorConfigError(f"{what} {text!r} is not a registry host[:port] with an optional /path prefix "
                                "(fully expanded, e.g. docker.io or docker.io/library)")
    return value


def _covers(prefix: str, repository: str) -> bool:
    return repository == prefix or repository.startswith(prefix + "/")


@dataclass(frozen=True, slots=True)
class RegistryMirror:
    """Images under `upstream` (a registry host, or host and path prefix) are pulled from under `mirror`."""

    upstream: str
    mirror: str

    @classmethod
    def parse(cls, text: str) -> RegistryMirror:
        """`UPSTREAM=MIRROR`, e.g. `docker.io=mirror.internal:5000/dockerhub`."""
        upstream, sep, mirror = text.partition("=")
        if not sep:
            raise MirrorConfigError(f"{text!r}: expected UPSTREAM=MIRROR, e.g. docker.io=mirror.internal:5000")
        parsed = cls(_prefix(upstream, "upstream"), _prefix(mirror, "mirror"))
        if _covers(parsed.upstream, parsed.mirror) or _covers(parsed.mirror, parsed.upstream):
            raise MirrorConfigError(f"{text!r}: the mirror {parsed.mirror} overlaps its upstream {parsed.upstream}")
        return parsed


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One place to fetch an image's repository from: the reference rewritten under a mirror, or the upstream."""

    reference: ImageReference
    mirror_of: str | None = None  # the upstream registry host, when this is a mirror
    lookaside: str | None = None  # this mirror's lookaside signature server, when one is configured

    def describe(self) -> str:
        """The registry that answers, naming the upstream it stands in for (for deny messages)."""
        domain = self.reference.domain
        return f"{domain} (mirror of {self.mirror_of})" if self.mirror_of else domain


@dataclass(frozen=True)
class RegistryMirrors:
    mirrors: tuple[RegistryMirror, ...] = ()
    # Upstreams tried after all their mirrors failed (containerd's `server`); none by default.
    fallback: frozenset[str] = frozenset()
    # (mirror, base URL): the lookaside signature server holding GPG signatures of images pulled from a mirror.
    lookasides: tuple[tuple[str, str], ...] = ()

    @classmethod
    def build(cls, mirrors: list[str], fallback: list[str], lookasides: list[str]) -> RegistryMirrors:
        """From `UPSTREAM=MIRROR`, `UPSTREAM` and `MIRROR=URL` values; MirrorConfigError names the bad one."""
        parsed = tuple(RegistryMirror.parse(text) for text in mirrors)
        if len(set(parsed)) != len(parsed):
            raise MirrorConfigError("the same UPSTREAM=MIRROR is given twice")
        upstreams = {mirror.upstream for mirror in parsed}
        fallbacks: set[str] = set()
        for text in fallback:
            try:
                upstream = _prefix(text, "upstream")
            except MirrorConfigError as exc:
                raise MirrorConfigError(str(exc), "fallback") from None
            if upstream not in upstreams:
                raise MirrorConfigError(f"{text!r} has no mirror to fall back from", "fallback")
            fallbacks.add(upstream)
        try:
            pairs = _lookasides(lookasides, {mirror.mirror for mirror in parsed})
        except MirrorConfigError as exc:
            raise MirrorConfigError(str(exc), "lookasides") from None
        return cls(parsed, frozenset(fallbacks), tuple(pairs))

    def endpoints(self, reference: ImageReference) -> tuple[Endpoint, ...]:
        """Where to fetch `reference` from, in order: the mirrors of the longest upstream prefix covering it
        (then the upstream, if allowed), or the reference itself when no mirror covers it."""
        covering = [mirror for mirror in self.mirrors if _covers(mirror.upstream, reference.repository)]
        if not covering:
            return (Endpoint(reference),)
        upstream = max((mirror.upstream for mirror in covering), key=len)
        lookasides = dict(self.lookasides)
        endpoints = [Endpoint(_rewrite(reference, mirror), reference.domain, lookasides.get(mirror.mirror))
                     for mirror in covering if mirror.upstream == upstream]
        if upstream in self.fallback:
            endpoints.append(Endpoint(reference))
        return tuple(endpoints)


def _rewrite(reference: ImageReference, mirror: RegistryMirror) -> ImageReference:
    name = mirror.mirror + reference.repository[len(mirror.upstream):]
    if "/" not in name:
        raise MirrorConfigError(f"{reference.repository} maps to the bare host {mirror.mirror}, not a repository")
    try:
        rewritten = parse_reference(name)
    except InvalidReferenceError as exc:
        raise MirrorConfigError(f"{reference.repository} maps to no valid repository under mirror "
                                f"{mirror.mirror}: {exc}") from None
    return ImageReference(rewritten.domain, rewritten.path, reference.tag, reference.digest)


def _lookasides(values: list[str], mirrors: set[str]) -> list[tuple[str, str]]:
    pairs: list[tuple[str, str]] = []
    for text in values:
        mirror_text, sep, url = text.partition("=")
        if not sep:
            raise MirrorConfigError(f"{text!r}: expected MIRROR=URL")
        mirror = _prefix(mirror_text, "mirror")
        if mirror not in mirrors:
            raise MirrorConfigError(f"{text!r}: {mirror} is not one of the mirrors given")
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment \
                or parts.username or parts.password:
            raise MirrorConfigError(f"{text!r}: {url!r} is not an http:// or https:// URL without credentials, "
                                    "query or fragment")
        pairs.append((mirror, url.rstrip("/")))
    if len({mirror for mirror, _ in pairs}) != len(pairs):
        raise MirrorConfigError("a mirror is given more than one lookaside")
    return pairs
