"""Container image references, parsed and normalized the way container runtimes do.

The grammar is the one of the distribution project's `reference` package, which containerd, CRI-O,
podman and skopeo all share: `nginx` means `docker.io/library/nginx:latest`, a registry port belongs to
the domain, and a reference may carry a tag, a digest, or both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

DEFAULT_DOMAIN = "docker.io"
LEGACY_DEFAULT_DOMAIN = "index.docker.io"
OFFICIAL_REPO_PREFIX = "library/"
DEFAULT_TAG = "latest"
MAX_NAME_LENGTH = 255

_ALPHANUMERIC = r"[a-z0-9]+"
_SEPARATOR = r"(?:[._]|__|[-]+)"
_PATH_COMPONENT = rf"{_ALPHANUMERIC}(?:{_SEPARATOR}{_ALPHANUMERIC})*"
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_IPV6 = r"\[(?:[a-fA-F0-9:]+)\]"
_HOST = rf"(?:{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*|{_IPV6})"
_DOMAIN = rf"{_HOST}(?::[0-9]+)?"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"

_REFERENCE_RE = re.compile(
    rf"^(?P<name>(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*)"
    rf"(?::(?P<tag>{_TAG}))?(?:@(?P<digest>{_DIGEST}))?$"
)
_DOMAIN_RE = re.compile(rf"^{_DOMAIN}$")
_PATH_RE = re.compile(rf"^{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*$")
_HEX64_RE = re.compile(r"^[a-f0-9]{64}$")

# Digest algorithms accepted anywhere a digest names content: hex lengths as the OCI image spec fixes them.
DIGEST_HEX_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_DIGEST_RE = re.compile(r"^(?P<algorithm>sha256|sha384|sha512):(?P<hex>[a-f0-9]+)$")


class InvalidReferenceError(ValueError):
    """An image reference that cannot be parsed; the message quotes it."""


class InvalidDigestError(ValueError):
    """A digest string that is not `algorithm:hex` with a supported algorithm and exact length."""


def validate_digest(value: str) -> str:
    """Return `value` if it is a well-formed sha256/sha384/sha512 digest, else raise InvalidDigestError."""
    match = _DIGEST_RE.match(value)
    if match is None or len(match["hex"]) != DIGEST_HEX_LENGTHS[match["algorithm"]]:
        raise InvalidDigestError(f"invalid digest {value!r}: expected sha256:<64 hex>, sha384 or sha512")
    return value


@dataclass(frozen=True, slots=True)
class ImageReference:
    """A normalized reference: `domain/path[:tag][@digest]`."""

    domain: str
    path: str
    tag: str | None = None
    digest: str | None = None

    @property
    def repository(self) -> str:
        """The fully qualified repository name, `domain/path`, with no tag or digest."""
        return f"{self.domain}/{self.path}"

    @property
    def is_name_only(self) -> bool:
        return self.tag is None and self.digest is None

    def with_default_tag(self) -> ImageReference:
        """The reference a runtime pulls: a bare name means its `latest` tag."""
        if self.is_name_only:
            return ImageReference(self.domain, self.path, DEFAULT_TAG, None)
        return self

    def with_digest(self, digest: str) -> ImageReference:
        return ImageReference(self.domain, self.path, self.tag, digest)

    def without_tag(self) -> ImageReference:
        return ImageReference(self.domain, self.path, None, self.digest)

    def __str__(self) -> str:
        text = self.repository
        if self.tag is not None:
            text += f":{self.tag}"
        if self.digest is not None:
            text += f"@{self.digest}"
        return text


def split_domain(name: str) -> tuple[str, str]:
    """Split a name into (domain, path) with docker.io defaults, as the runtimes do."""
    slash = name.find("/")
    first = name[:slash] if slash != -1 else ""
    if slash == -1 or (not any(c in first for c in ".:") and first != "localhost" and first.lower() == first):
        domain, remainder = DEFAULT_DOMAIN, name
    else:
        domain, remainder = first, name[slash + 1 :]
    if domain == LEGACY_DEFAULT_DOMAIN:
        domain = DEFAULT_DOMAIN
    if domain == DEFAULT_DOMAIN and "/" not in remainder:
        remainder = OFFICIAL_REPO_PREFIX + remainder
    return domain, remainder


def parse_reference(text: str) -> ImageReference:
    """Parse and normalize `text`; raise InvalidReferenceError naming the reference on any fault."""
    if not isinstance(text, str) or not text:
        raise InvalidReferenceError(f"invalid image reference {text!r}: empty")
    match = _REFERENCE_RE.match(text)
    if match is None:
        lowered = text.lower()
        if lowered != text and _REFERENCE_RE.match(lowered) is not None:
            raise InvalidReferenceError(f"invalid image reference {text!r}: repository name must be lowercase")
        raise InvalidReferenceError(f"invalid image reference {text!r}: not [registry/]repository[:tag][@digest]")
    name = match["name"]
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidReferenceError(f"invalid image reference {text!r}: name longer than {MAX_NAME_LENGTH}")
    domain, path = split_domain(name)
    if not _DOMAIN_RE.match(domain) or not _PATH_RE.match(path):
        raise InvalidReferenceError(f"invalid image reference {text!r}: repository name must be lowercase")
    if domain == DEFAULT_DOMAIN and _HEX64_RE.match(path.removeprefix(OFFICIAL_REPO_PREFIX)):
        raise InvalidReferenceError(f"invalid image reference {text!r}: a 64-hex repository name is ambiguous")
    digest = match["digest"]
    if digest is not None:
        try:
            validate_digest(digest)
        except InvalidDigestError as exc:
            raise InvalidReferenceError(f"invalid image reference {text!r}: {exc}") from None
    return ImageReference(domain, path, match["tag"], digest)


def is_domain(text: str) -> bool:
    """True if `text` is a registry host with optional port."""
    return _DOMAIN_RE.match(text) is not None


def is_repository_prefix(text: str) -> bool:
    """True for a fully expanded `host[:port]` or `host[:port]/path` (no tag, digest or implied docker.io)."""
    domain, _, path = text.partition("/")
    explicit_host = any(c in domain for c in ".:") or domain == "localhost"
    return explicit_host and is_domain(domain) and (not path or _PATH_RE.match(path) is not None)
