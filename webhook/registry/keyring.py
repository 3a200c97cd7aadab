"""A pod's own pull credentials, matched to images as the kubelet matches them.

The kubelet's credential keyring (pkg/credentialprovider) keys each entry of a pull Secret by host and path
(`https://` and a `/v1/` or `/v2/` prefix of the path dropped); an entry applies to an image when the hosts
have as many dot-separated parts, each part matches as a glob (`*.example.com`), the ports are equal and
the entry's path is a prefix of the image's. All matching entries are candidates, the most specific key
first (keys in reverse order), entries under one key in the order their Secrets were given. trustgate adds
one normalization: Docker Hub's names (`index.docker.io`, `registry-1.docker.io`) are `docker.io`, the
registry of images without a host.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from urllib.parse import urlsplit

from webhook.references import DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN
from webhook.registry.auth import Credentials, CredentialsError, docker_config_entries, keyed_digest

# Secret type -> (data key, whether it holds the legacy dockercfg format)
PULL_SECRET_TYPES = {
    "kubernetes.io/dockerconfigjson": (".dockerconfigjson", False),
    "kubernetes.io/dockercfg": (".dockercfg", True),
}
DOCKER_HUB_HOSTS = (LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io")


def pull_secret_entries(secret_type: str, data: Mapping[str, bytes], source: str) -> list[tuple[str, Credentials]]:
    """The credentials of one pull Secret (its type and decoded data); CredentialsError when unusable."""
    if secret_type not in PULL_SECRET_TYPES:
        raise CredentialsError(f"{source}: type {secret_type or '(none)'} is not a pull secret type "
                               f"({', '.join(PULL_SECRET_TYPES)})")
    data_key, legacy = PULL_SECRET_TYPES[secret_type]
    raw = data.get(data_key)
    if raw is None:
        raise CredentialsError(f"{source}: no {data_key} key")
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        raise CredentialsError(f"{source}: {data_key} is not UTF-8") from None
    return docker_config_entries(text, f"{source} {data_key}", legacy=legacy)


@dataclass(frozen=True, slots=True)
class _Key:
    host: str  # lowercased, Docker Hub's names normalized
    port: str
    path: str  # "" for the whole host, else "/team" (a string prefix of "/team/app", as the kubelet compares)

    @classmethod
    def of_server(cls, server: str) -> _Key:
        url = server if server.startswith(("https://", "http://")) else f"https://{server}"
        parts = urlsplit(url)
        path = parts.path
        if path.startswith(("/v1/", "/v2/")):
            path = path[3:]
        return cls.of(parts.netloc, "" if path in ("", "/") else path)

    @classmethod
    def of(cls, netloc: str, path: str) -> _Key:
        netloc = netloc.lower()
        host, port = (netloc, "") if netloc.endswith("]") or ":" not in netloc else netloc.rsplit(":", 1)
        if host in DOCKER_HUB_HOSTS:
            host = DEFAULT_DOMAIN
        return cls(host, port, path)

    def matches(self, target: _Key) -> bool:
        glob_parts, target_parts = self.host.split("."), target.host.split(".")
        return (self.port == target.port and len(glob_parts) == len(target_parts)
                and target.path.startswith(self.path)
                and all(part == glob or fnmatchcase(part, glob)  # equal first: `[::1]` is no character class
                        for glob, part in zip(glob_parts, target_parts, strict=True)))

    def __str__(self) -> str:
        return f"{self.host}{':' + self.port if self.port else ''}{self.path}"


@dataclass(frozen=True)
class PullCredentials:
    """The credentials of a pod's pull Secrets, in the order the Secrets were given; `identity` tells credential
    sets apart (cache keys) without revealing them."""

    entries: tuple[tuple[_Key, Credentials], ...] = ()
    identity: str = field(init=False)
    _order: tuple[_Key, ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        fingerprints = [(str(key), credentials.fingerprint()) for key, credentials in self.entries]
        object.__setattr__(self, "identity", keyed_digest(json.dumps(fingerprints).encode()) if self.entries else "")
        object.__setattr__(self, "_order", tuple(sorted({key for key, _ in self.entries}, key=str, reverse=True)))

    @classmethod
    def of(cls, entries: Iterable[tuple[str, Credentials]]) -> PullCredentials:
        """From (server as a Secret names it, credentials) pairs."""
        return cls(tuple((_Key.of_server(server), credentials) for server, credentials in entries))

    def lookup(self, registry: str, repository_path: str) -> list[Credentials]:
        """The candidates for an image of `registry` (host[:port]) and `repository_path`, to try in order."""
        target = _Key.of(registry, f"/{repository_path}")
        found: list[Credentials] = []
        for key in self._order:
            if key.matches(target):
                found.extend(credentials for entry_key, credentials in self.entries if entry_key == key)
        return list(dict.fromkeys(found))

    def __bool__(self) -> bool:
        return bool(self.entries)


NO_PULL_CREDENTIALS = PullCredentials()
