"""Registry credentials (dockerconfigjson) and `WWW-Authenticate` challenges."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import secrets
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from webhook.references import DEFAULT_DOMAIN, LEGACY_DEFAULT_DOMAIN

# Fingerprints of credentials are keyed with a secret of this process: they tell credential sets apart in cache
# keys without letting anyone who sees a key test guesses of a password against it.
_FINGERPRINT_KEY = secrets.token_bytes(32)


class CredentialsError(ValueError):
    """A dockerconfigjson file that cannot be used."""


@dataclass(frozen=True, slots=True)
class Credentials:
    username: str
    password: str = field(repr=False)

    def basic_header(self) -> str:
        token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
        return f"Basic {token}"

    def fingerprint(self) -> str:
        """Names these credentials in cache keys; equal for equal credentials, reveals nothing of them."""
        return keyed_digest(json.dumps([self.username, self.password]).encode())


def keyed_digest(data: bytes) -> str:
    return hashlib.blake2b(data, key=_FINGERPRINT_KEY, digest_size=16).hexdigest()


@dataclass(frozen=True, slots=True)
class Challenge:
    scheme: str
    params: dict[str, str]


def registry_key(server: str) -> str:
    """`https://index.docker.io/v1/` -> `docker.io`; `https://host:5000` -> `host:5000`."""
    host = urlsplit(server).netloc if "://" in server else server.split("/", 1)[0]
    return DEFAULT_DOMAIN if host in (LEGACY_DEFAULT_DOMAIN, "registry-1.docker.io") else host


def _auths(text: str, source: str, *, legacy: bool) -> dict[str, object]:
    """The server -> entry object of a dockerconfigjson (`{"auths": {...}}`) or legacy dockercfg (`{...}`)."""
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CredentialsError(f"{source}: not JSON: {exc.msg}") from None
    if legacy:
        if not isinstance(document, dict):
            raise CredentialsError(f"{source}: not a JSON object of registries")
        return document
    auths = document.get("auths") if isinstance(document, dict) else None
    if not isinstance(auths, dict):
        raise CredentialsError(f"{source}: no \"auths\" object (credential helpers are not supported)")
    return auths


def docker_config_entries(text: str, source: str, *, legacy: bool = False) -> list[tuple[str, Credentials]]:
    """(server as written, credentials) of each entry, in the file's order; any unusable entry refuses all.

    `legacy` reads the dockercfg format of `kubernetes.io/dockercfg` Secrets (no `auths` wrapper).
    """
    found: list[tuple[str, Credentials]] = []
    for server, entry in _auths(text, source, legacy=legacy).items():
        if not isinstance(entry, dict):
            raise CredentialsError(f"{source}: auths[{server!r}] is not an object")
        if isinstance(entry.get("auth"), str) and entry["auth"]:
            try:
                username, sep, password = base64.b64decode(entry["auth"], validate=True).decode().partition(":")
            except ValueError:
                raise CredentialsError(f"{source}: auths[{server!r}].auth is not base64 of user:password") from None
            if not sep:
                raise CredentialsError(f"{source}: auths[{server!r}].auth is not base64 of user:password")
        elif isinstance(entry.get("username"), str) and isinstance(entry.get("password"), str):
            username, password = entry["username"], entry["password"]
        else:
            raise CredentialsError(f"{source}: auths[{server!r}] has neither auth nor username/password")
        found.append((server, Credentials(username, password)))
    return found


def parse_docker_config(text: str, source: str) -> dict[str, Credentials]:
    """A `--registry-auth` file: credentials by registry host (any path in a server name is ignored)."""
    return {registry_key(server): credentials for server, credentials in docker_config_entries(text, source)}


def load_docker_config(path: str) -> dict[str, Credentials]:
    try:
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
    except OSError as exc:
        raise CredentialsError(f"{path}: {exc.strerror}") from None
    return parse_docker_config(text, path)


_CHALLENGE_RE = re.compile(r'\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))\s*,?')


def parse_challenges(headers: Iterable[str]) -> list[Challenge]:
    """Parse `WWW-Authenticate` values such as `Bearer realm="https://a/token",service="reg"`."""
    challenges = []
    for header in headers:
        scheme, _, rest = header.strip().partition(" ")
        params: dict[str, str] = {}
        for match in _CHALLENGE_RE.finditer(rest):
            value = match.group(2) if match.group(2) is not None else match.group(3)
            params[match.group(1).lower()] = re.sub(r"\\(.)", r"\1", value)
        challenges.append(Challenge(scheme.lower(), params))
    return challenges
