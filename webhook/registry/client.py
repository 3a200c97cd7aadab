"""An async OCI distribution (v2) client: authentication, TLS, limits, and content addressing.

It knows the protocol and nothing of signatures. Every manifest and blob it returns has been hashed and
compared with the digest it was asked for; a digest a registry states in a header is never trusted.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from webhook import strictjson
from webhook.artifacts import ResolvedImage
from webhook.cache import ExpiringLRU
from webhook.metrics import REGISTRY_REQUEST_SECONDS, REGISTRY_REQUESTS, registry_label
from webhook.references import ImageReference, validate_digest
from webhook.registry.auth import Challenge, Credentials, load_docker_config, parse_challenges
from webhook.registry.keyring import NO_PULL_CREDENTIALS, PullCredentials
from webhook.registry.mirrors import Endpoint, MirrorConfigError, RegistryMirrors
from webhook.registry.network import (
    AddressPolicy,
    ForbiddenAddressError,
    GuardedResolver,
    IPNetwork,
    Resolver,
    guarded_socket,
    resolve,
)

log = logging.getLogger(__name__)

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
MANIFEST_MEDIA_TYPES = (OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST)
INDEX_MEDIA_TYPES = (OCI_INDEX, DOCKER_MANIFEST_LIST)

DOCKER_HUB_ENDPOINT = "registry-1.docker.io"
# Hosts Docker Hub sends clients to: its token service and its blob storage.
DOCKER_HUB_DELEGATES = frozenset({"auth.docker.io", "production.cloudflare.docker.com"})
REDIRECT_STATUSES = (301, 302, 303, 307, 308)


class RegistryError(Exception):
    """A registry, network or TLS fault, with a message a deployer can act on."""


class OutOfScopeError(RegistryError):
    """A registry that no TrustPolicy covers: never contacted."""


@dataclass(frozen=True)
class RegistrySettings:
    ca_file: str | None = None
    docker_config: str | None = None
    insecure_registries: frozenset[str] = frozenset()
    timeout_seconds: float = 8.0
    max_manifest_bytes: int = 4 * 1024 * 1024
    max_blob_bytes: int = 4 * 1024 * 1024
    max_redirects: int = 3
    # Entries an image index (or manifest list) may have; a larger one is refused, not read in part.
    max_index_children: int = 64
    # Signatures one source (lookaside, .sig tag, referrers, signature API) hands over per image; None keeps
    # each source's own cap (16, and 32 for cosign's .sig tag).
    max_signatures_per_source: int | None = None
    # Addresses a registry may resolve to although they are loopback, link-local or cloud metadata.
    allowed_cidrs: tuple[IPNetwork, ...] = ()
    # (registry, host): `host` may serve `registry`'s blobs (redirects, sent without the registry's
    # credentials) or tokens (its token realm). A registry's own hostname is always allowed.
    delegates: frozenset[tuple[str, str]] = frozenset()
    # Where the nodes pull images named by an upstream reference from (--registry-mirror).
    mirrors: RegistryMirrors = field(default_factory=RegistryMirrors)


@dataclass(frozen=True, slots=True)
class Manifest:
    data: bytes
    digest: str
    media_type: str
    document: Mapping[str, object] = field(repr=False)


# Connections open at once, per host and in all. Waiting for a pooled connection counts against the connect
# timeout, so the pool must take every request the pipeline lets through (64 units of work per registry, each
# sending up to 2 requests at once) to the registry and its lookaside together; the pipeline's own bounds, not
# the pool, decide what waits.
MAX_CONNECTIONS_PER_HOST = 256
MAX_CONNECTIONS = 512
# Registries whose /v2/ answer (how they authenticate) is kept; one forgotten is asked again when next used.
REGISTRY_STATE_ENTRIES = 1_024
REGISTRY_STATE_BYTES = 4 * 1024 * 1024
REGISTRY_STATE_SECONDS = 3_600.0
# Bearer tokens, one per (registry, credentials, repository); a token service answers at most 64 KiB.
TOKEN_CACHE_ENTRIES = 4_096
TOKEN_CACHE_BYTES = 8 * 1024 * 1024
# Kept at most this long (registries issue tokens for 5 minutes or more; an expired one costs one retry).
TOKEN_CACHE_SECONDS = 300.0


@dataclass
class _RegistryState:
    challenges: list[Challenge] | None = None
    supports_signatures: bool = False
    ping_lock: asyncio.Lock = field(default_factory=asyncio.Lock)


# (registry, fingerprint of the credentials the token was issued for ("" when anonymous), scope): a token one
# credential set obtained is never presented for another.
_TokenKey = tuple[str, str, str]


@dataclass
class _Pool:
    """The pooled HTTP session, shared by a client and the views of it bound to pull credentials."""

    http: aiohttp.ClientSession | None = None


def _ssl_context(ca_file: str | None) -> ssl.SSLContext:
    context = ssl.create_default_context()
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if ca_file:
        context.load_verify_locations(cafile=ca_file)
    return context


def _describe(exc: aiohttp.ClientError | TimeoutError, registry: str) -> str:
    cause: BaseException | None = exc
    while cause is not None:
        # aiohttp's TLS errors subclass ssl's without their attributes; ssl's own error is their cause.
        if isinstance(cause, ssl.SSLCertVerificationError) and not isinstance(cause, aiohttp.ClientError):
            return f"TLS certificate of {registry} not trusted: {cause.verify_message}"
        if isinstance(cause, ssl.SSLError) and not isinstance(cause, aiohttp.ClientError):
            return f"TLS error talking to {registry}: {cause.reason or cause}"
        cause = cause.__cause__ or cause.__context__
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts (ServerTimeoutError) are ones too
        return f"registry {registry} did not answer in time"
    if isinstance(exc, aiohttp.ClientConnectorError):  # refused, unreachable, or a name that does not resolve
        # The kind is named first: a connection closed during the TLS handshake is a ConnectionResetError that
        # carries text or none, depending on when the close arrived.
        error = exc.os_error
        return f"cannot connect to registry {registry}: {type(error).__name__}{f': {error}' if str(error) else ''}"
    if isinstance(exc, aiohttp.ClientResponseError):  # a status line or header aiohttp's parser refuses
        return f"{registry} broke off its answer (truncated or malformed HTTP): {exc.message}"
    if isinstance(exc, aiohttp.ServerDisconnectedError | aiohttp.ClientPayloadError):
        return f"{registry} broke off its answer (truncated or malformed HTTP): {exc}"
    return f"request to registry {registry} failed: {exc.__class__.__name__}: {exc}"


def _netloc(url: URL) -> str:
    """`host[:port]` of an absolute URL, with the port only when it is not the scheme's default."""
    return url.host_port_subcomponent or ""


def _hostname(netloc: str) -> str:
    return (urlsplit(f"//{netloc}").hostname or "").lower()


class RegistryClient:
    """`scope` says which registries may be contacted at all (None: any); see `webhook.policy.scope`."""

    def __init__(self, settings: RegistrySettings, scope: Callable[[str], bool] | None = None,
                 resolver: Resolver = resolve) -> None:
        self.settings = settings
        self.scope = scope
        self._credentials: dict[str, Credentials] = (
            load_docker_config(settings.docker_config) if settings.docker_config else {}
        )
        self._ssl_context = _ssl_context(settings.ca_file)
        self._resolver = resolver
        self._pool = _Pool()
        # Shared with the views of this client bound to pull credentials.
        self.registry_states: ExpiringLRU[str, _RegistryState] = ExpiringLRU(
            "registry_state", REGISTRY_STATE_ENTRIES, max_bytes=REGISTRY_STATE_BYTES)
        self.tokens: ExpiringLRU[_TokenKey, str] = ExpiringLRU("token", TOKEN_CACHE_ENTRIES,
                                                               max_bytes=TOKEN_CACHE_BYTES)
        self._pull = NO_PULL_CREDENTIALS

    def with_pull_credentials(self, pull: PullCredentials) -> RegistryClient:
        """A view of this client that also offers `pull` (a pod's own credentials) to the registries they name,
        before the configured ones; connections, scope and what registries announced stay shared."""
        view = copy.copy(self)
        view._pull = pull
        return view

    def _session(self) -> aiohttp.ClientSession:
        """The pooled HTTP session, made on first use: aiohttp binds it to the running event loop."""
        if self._pool.http is None:
            policy = AddressPolicy(self.settings.allowed_cidrs)
            connect_seconds = min(5.0, self.settings.timeout_seconds)
            connector = aiohttp.TCPConnector(
                ssl=self._ssl_context, limit=MAX_CONNECTIONS, limit_per_host=MAX_CONNECTIONS_PER_HOST,
                keepalive_timeout=5.0,
                resolver=GuardedResolver(policy, self._resolver, connect_seconds),
                socket_factory=guarded_socket(policy),
                use_dns_cache=False,  # a name is resolved (and checked) for each new connection, as DNS answers now
                happy_eyeballs_delay=None,  # one address at a time, in the resolver's order
            )
            self._pool.http = aiohttp.ClientSession(
                connector=connector,
                # `connect` bounds waiting for a pooled connection too; `sock_read` applies to each read.
                timeout=aiohttp.ClientTimeout(total=None, connect=self.settings.timeout_seconds,
                                              sock_connect=connect_seconds, sock_read=self.settings.timeout_seconds),
                # Bodies are hashed as sent: no decompression, and no encoding asked for.
                headers={"User-Agent": "trustgate", "Accept-Encoding": "identity"}, auto_decompress=False,
                cookie_jar=aiohttp.DummyCookieJar(),  # a cookie set by one registry never reaches another
                trust_env=False,  # no proxy or netrc from the environment: registries are reached directly
            )
        return self._pool.http

    async def aclose(self) -> None:
        if self._pool.http is not None:
            await self._pool.http.close()

    def base_url(self, registry: str) -> str:
        scheme = "http" if registry in self.settings.insecure_registries else "https"
        host = DOCKER_HUB_ENDPOINT if registry == "docker.io" else registry
        return f"{scheme}://{host}"

    # --- transport ----------------------------------------------------------------------------------

    def may_delegate(self, registry: str, netloc: str) -> bool:
        """May `registry` send trustgate to `netloc` (its own hostname, or a configured delegate)?"""
        host = _hostname(netloc)
        if host == _hostname(registry) or (registry == "docker.io" and host in DOCKER_HUB_DELEGATES):
            return True
        return any(name == registry and delegate.lower() in (host, netloc.lower())
                   for name, delegate in self.settings.delegates)

    def _redirect(self, url: URL, headers: Mapping[str, str], response: aiohttp.ClientResponse,
                  registry: str) -> tuple[URL, dict[str, str]]:
        """The URL and headers a redirect asks for, once its target is allowed; credentials only to the same origin."""
        location = response.headers.get("Location", "")
        try:
            # Credentials a registry writes into a URL are never sent: only trustgate's own are.
            target = url.join(URL(location)).with_user(None)
        except ValueError:
            target = URL()
        if not location or target.scheme not in ("http", "https") or not target.host:
            raise RegistryError(f"{registry} sent a redirect without a usable Location ({location[:200]!r})")
        netloc = _netloc(target)
        if target.scheme == "http" and url.scheme == "https":
            raise RegistryError(f"{registry} redirected from HTTPS to plain HTTP ({netloc}); refused")
        same_origin = (target.scheme, target.host, target.port) == (url.scheme, url.host, url.port)
        if not same_origin and not self.may_delegate(registry, netloc):
            raise RegistryError(f"{registry} redirected to {netloc}, which is not allowed to serve it "
                                f"(allow it with --registry-delegate {registry}={netloc})")
        return target, {key: value for key, value in headers.items()
                        if same_origin or key.lower() != "authorization"}

    async def _read(self, url: URL, headers: Mapping[str, str], registry: str,
                    limit: int) -> tuple[aiohttp.ClientResponse, bytes]:
        """Send a GET, following allowed redirects; the body is read up to `limit` bytes, whatever is declared."""
        session = self._session()
        label = registry_label(registry)
        try:
            for _ in range(self.settings.max_redirects + 1):
                started = time.perf_counter()
                status = "error"
                try:
                    # aiohttp follows no redirect: `_redirect` checks each target and drops credentials.
                    async with session.get(url, headers=headers, allow_redirects=False) as response:
                        status = str(response.status)
                        if response.status in REDIRECT_STATUSES:
                            url, headers = self._redirect(url, headers, response, registry)
                            continue
                        return response, await self._body(response, url, registry, limit)
                finally:
                    REGISTRY_REQUESTS.labels(label, status).inc()
                    REGISTRY_REQUEST_SECONDS.labels(label).observe(time.perf_counter() - started)
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise RegistryError(_describe(exc, registry)) from None
        except ForbiddenAddressError as exc:
            raise RegistryError(str(exc)) from None
        raise RegistryError(f"{registry} redirected more than {self.settings.max_redirects} times "
                            f"(last to {url.host}); refused")

    @staticmethod
    async def _body(response: aiohttp.ClientResponse, url: URL, registry: str, limit: int) -> bytes:
        """The whole body, refused as soon as it is declared or read to be over `limit` bytes."""
        declared = response.headers.get("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RegistryError(f"{registry} answered {declared} bytes for {url.path}, "
                                f"more than the {limit}-byte limit")
        body = bytearray()
        async for chunk in response.content.iter_any():
            body.extend(chunk)
            if len(body) > limit:
                raise RegistryError(f"{registry} sent more than the {limit}-byte limit for {url.path}")
        return bytes(body)

    def _check_scope(self, registry: str) -> None:
        if self.scope is not None and not self.scope(registry):
            raise OutOfScopeError(f"no TrustPolicy covers registry {registry}; it is never contacted")

    async def _ping(self, registry: str) -> _RegistryState:
        """The registry's /v2/ answer, asked once; its scope (or the upstream's, for a mirror) is checked first."""
        state = self.registry_states.get(registry)
        if state is None:
            state = _RegistryState()
            self.registry_states.put(registry, state, REGISTRY_STATE_SECONDS)
        async with state.ping_lock:
            if state.challenges is None:
                response, _ = await self._read(URL(f"{self.base_url(registry)}/v2/"), {}, registry, 64 * 1024)
                if response.status not in (200, 401):
                    raise RegistryError(f"{registry} does not speak the registry API: /v2/ answered "
                                        f"HTTP {response.status}")
                state.supports_signatures = response.headers.get("X-Registry-Supports-Signatures") == "1"
                state.challenges = (
                    parse_challenges(response.headers.getall("WWW-Authenticate", []))
                    if response.status == 401 else []
                )
        return state

    def _candidates(self, registry: str, repository_path: str) -> list[Credentials | None]:
        """The credentials to offer `registry`, in order: the pod's own that match the image (as the kubelet
        matches them), then the configured ones for the registry; nothing (anonymous) when there are none."""
        candidates: list[Credentials | None] = [*self._pull.lookup(registry, repository_path)]
        configured = self._credentials.get(registry)
        if configured is not None and configured not in candidates:
            candidates.append(configured)
        return candidates or [None]

    async def _authorization(self, registry: str, repository_path: str, state: _RegistryState,
                             credentials: Credentials | None) -> tuple[str, _TokenKey | None] | None:
        """(Authorization header, the key of the token it carries) for a request with `credentials`."""
        for challenge in state.challenges or []:
            if challenge.scheme == "basic":
                if credentials is None:
                    raise RegistryError(f"{registry} requires credentials and none are configured for it")
                return credentials.basic_header(), None
            if challenge.scheme == "bearer":
                scope = f"repository:{repository_path}:pull"
                key = (registry, credentials.fingerprint() if credentials else "", scope)
                token = self.tokens.get(key)
                if token is None:
                    token = await self._fetch_token(registry, challenge, scope, credentials)
                    self.tokens.put(key, token, TOKEN_CACHE_SECONDS)
                return f"Bearer {token}", key
        return None

    async def _fetch_token(self, registry: str, challenge: Challenge, scope: str,
                           credentials: Credentials | None) -> str:
        realm = challenge.params.get("realm", "")
        try:
            realm_url = URL(realm).with_user(None)
        except ValueError:
            realm_url = URL()
        if realm_url.scheme not in ("https", "http") or not realm_url.host:
            raise RegistryError(f"{registry} named an invalid token realm {realm!r}")
        if realm_url.scheme == "http" and registry not in self.settings.insecure_registries:
            raise RegistryError(f"{registry} named a plain-HTTP token realm {realm!r}; refusing to send "
                                "credentials without TLS")
        # The URL requested is the one checked: the same parser reads the host the delegation is decided on.
        netloc = _netloc(realm_url)
        if not self.may_delegate(registry, netloc):
            raise RegistryError(f"{registry} named the token service {netloc}, which is not allowed to "
                                f"serve it (allow it with --registry-delegate {registry}={netloc})")
        params = {"scope": scope}
        if "service" in challenge.params:
            params["service"] = challenge.params["service"]
        headers = {"Authorization": credentials.basic_header()} if credentials else {}
        response, body = await self._read(realm_url.update_query(params), headers, registry, 64 * 1024)
        if response.status != 200:
            raise RegistryError(f"token service of {registry} refused access (HTTP {response.status})")
        try:
            document = strictjson.loads(body)
            token = document.get("token") or document.get("access_token")
        except (strictjson.StrictJSONError, AttributeError):
            token = None
        if not isinstance(token, str) or not token:
            raise RegistryError(f"token service of {registry} returned no token")
        return token

    def endpoints(self, reference: ImageReference) -> tuple[Endpoint, ...]:
        """Where `reference` is fetched from, in order: its mirrors, else its own registry. The upstream's
        scope is what is checked: a mirror stands in for it, and is contacted only through a mirror rule."""
        self._check_scope(reference.domain)
        try:
            return self.settings.mirrors.endpoints(reference)
        except MirrorConfigError as exc:
            raise RegistryError(str(exc)) from None

    def describe(self, reference: ImageReference) -> str:
        """The registries that serve `reference`, for messages: `docker.io`, or its mirrors naming it."""
        return " or ".join(endpoint.describe() for endpoint in self.endpoints(reference))

    async def _get(self, reference: ImageReference, path: str, *, accept: str | None = None,
                   limit: int) -> tuple[aiohttp.ClientResponse, bytes, str]:
        """GET an API path of the reference's repository (`path` names it as `/<api>/<reference.path>/...`) from
        its registry or, in order, its mirrors: a mirror that fails or has no such thing hands over to the next
        one, as containerd does. The answer comes with the registry that gave it, for messages.

        Returns the first success; else a failure other than 404 from the first mirror with one; else 404."""
        endpoints = self.endpoints(reference)
        failure: RegistryError | tuple[aiohttp.ClientResponse, bytes, str] | None = None
        not_found: tuple[aiohttp.ClientResponse, bytes, str] | None = None
        for endpoint in endpoints:
            where = endpoint.describe()
            try:
                response, body = await self._get_from(endpoint.reference, _repath(path, reference, endpoint.reference),
                                                      accept=accept, limit=limit)
            except RegistryError as exc:
                if len(endpoints) == 1:
                    raise
                failure = failure or RegistryError(f"{exc} [{where}]")
                continue
            if response.status < 400:
                return response, body, where
            if response.status == 404:
                not_found = not_found or (response, body, where)
            else:
                failure = failure or (response, body, where)
        if isinstance(failure, RegistryError):
            raise failure
        answer = failure or not_found
        assert answer is not None  # at least one endpoint, and each one answered or failed
        return answer

    async def _get_from(self, reference: ImageReference, path: str, *, accept: str | None,
                        limit: int) -> tuple[aiohttp.ClientResponse, bytes]:
        """GET an API path of one registry, authenticating as it asks."""
        registry = reference.domain
        state = await self._ping(registry)
        *earlier, last = self._candidates(registry, reference.path)
        # Each candidate in turn until the registry accepts one, as the kubelet pulls; the last one's answer stands.
        for credentials in earlier:
            try:
                response, body = await self._get_as(reference, path, accept, limit, state, credentials)
            except RegistryError:
                continue  # e.g. its token service refused these credentials
            if response.status not in (401, 403):
                return response, body
        return await self._get_as(reference, path, accept, limit, state, last)

    async def _get_as(self, reference: ImageReference, path: str, accept: str | None, limit: int,
                      state: _RegistryState, credentials: Credentials | None) -> tuple[aiohttp.ClientResponse, bytes]:
        registry = reference.domain
        headers = {"Accept": accept} if accept else {}
        for attempt in range(2):
            authorization = await self._authorization(registry, reference.path, state, credentials)
            if authorization:
                headers["Authorization"] = authorization[0]
            response, body = await self._read(URL(f"{self.base_url(registry)}{path}"), headers, registry, limit)
            if response.status == 401 and attempt == 0 and authorization and authorization[1]:
                self.tokens.remove(authorization[1])  # an expired token: fetch a new one once
                continue
            return response, body
        return response, body

    @staticmethod
    def _fail(response: aiohttp.ClientResponse, registry: str, what: str) -> RegistryError:
        code = response.status
        if code == 401:
            return RegistryError(f"{registry} refused the credentials for {what} (HTTP 401)")
        if code == 403:
            return RegistryError(f"{registry} denied access to {what} (HTTP 403)")
        if code == 404:
            return RegistryError(f"{what} not found on {registry} (HTTP 404)")
        if code == 429:
            retry = response.headers.get("Retry-After", "")
            after = f", retry after {retry}" if retry else ""
            return RegistryError(f"{registry} is rate-limiting requests (HTTP 429{after})")
        return RegistryError(f"{registry} failed to serve {what} (HTTP {code})")

    # --- API ----------------------------------------------------------------------------------------

    async def get_manifest(self, reference: ImageReference, tag_or_digest: str) -> Manifest | None:
        """Fetch a manifest by tag or digest; None if the registry says it does not exist."""
        what = f"manifest {reference.repository}{'@' if ':' in tag_or_digest else ':'}{tag_or_digest}"
        response, body, where = await self._get(
            reference, f"/v2/{reference.path}/manifests/{tag_or_digest}",
            accept=", ".join(MANIFEST_MEDIA_TYPES), limit=self.settings.max_manifest_bytes,
        )
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._fail(response, where, what)
        if ":" in tag_or_digest:
            algorithm, _, expected = validate_digest(tag_or_digest).partition(":")
            if hashlib.new(algorithm, body).hexdigest() != expected:
                raise RegistryError(f"{where} served a {what} whose bytes do not hash to that digest")
            digest = tag_or_digest
        else:
            digest = f"sha256:{hashlib.sha256(body).hexdigest()}"
        media_type, document = _manifest_type(body, response.headers.get("Content-Type", ""), what)
        children = document.get("manifests")
        if media_type in INDEX_MEDIA_TYPES:
            if not isinstance(children, list):
                raise RegistryError(f"{what} is an index without a \"manifests\" list")
            if len(children) > self.settings.max_index_children:
                raise RegistryError(f"{what} lists {len(children)} manifests, more than the limit of "
                                    f"{self.settings.max_index_children}")
        return Manifest(body, digest, media_type, document)

    async def resolve(self, reference: ImageReference) -> ResolvedImage:
        """Resolve a reference to its manifest: by digest when it has one, else by tag."""
        target = reference.digest or reference.tag
        if target is None:
            raise RegistryError(f"{reference} has neither tag nor digest")
        manifest = await self.get_manifest(reference, target)
        if manifest is None:
            raise RegistryError(f"image {reference} not found on {self.describe(reference)}")
        return ResolvedImage(reference, manifest.digest, manifest.data, manifest.media_type)

    async def get_blob(self, reference: ImageReference, digest: str, limit: int | None = None) -> bytes:
        validate_digest(digest)
        response, body, where = await self._get(reference, f"/v2/{reference.path}/blobs/{digest}",
                                                limit=limit or self.settings.max_blob_bytes)
        if response.status != 200:
            raise self._fail(response, where, f"blob {digest} of {reference.repository}")
        algorithm, _, expected = digest.partition(":")
        if hashlib.new(algorithm, body).hexdigest() != expected:
            raise RegistryError(f"{where} served blob {digest} with bytes that do not match it")
        return body

    async def supports_signature_extension(self, reference: ImageReference) -> bool:
        """Does a registry serving `reference` (itself, or one of its mirrors) offer the signature API?"""
        for endpoint in self.endpoints(reference):
            if (await self._ping(endpoint.reference.domain)).supports_signatures:
                return True
        return False

    async def get_api(self, reference: ImageReference, path: str, limit: int) -> bytes | None:
        """GET another path of the repository's API (e.g. the signature extension); None on 404.

        `path` names the repository as `/<api prefix>/<reference.path>/...`, so it can be read from a mirror."""
        response, body, where = await self._get(reference, path, limit=limit)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._fail(response, where, path)
        return body

    async def fetch_url(self, url: str, limit: int) -> bytes | None:
        """GET a URL outside any registry API (a configured lookaside), without credentials; None on 404."""
        parts = urlsplit(url)
        host = f"{parts.hostname}:{parts.port}" if parts.port else parts.hostname or "(no host)"  # no userinfo
        response, body = await self._read(URL(url), {}, host, limit)
        if response.status == 404:
            return None
        if response.status != 200:
            raise self._fail(response, host, url)
        return body


def _repath(path: str, reference: ImageReference, endpoint: ImageReference) -> str:
    """`path` with the repository of `reference` replaced by that of `endpoint` (a mirror of it)."""
    if endpoint == reference:
        return path
    for api in ("/v2/", "/extensions/v2/"):
        if path.startswith(f"{api}{reference.path}/"):
            return f"{api}{endpoint.path}/{path[len(api) + len(reference.path) + 1:]}"
    raise RegistryError(f"{path} does not name repository {reference.path}; it cannot be read from a mirror")


def _manifest_type(body: bytes, content_type: str, what: str) -> tuple[str, Mapping[str, object]]:
    try:
        document = strictjson.loads(body)
    except strictjson.StrictJSONError as exc:
        raise RegistryError(f"{what} is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise RegistryError(f"{what} is not a JSON object")
    if document.get("schemaVersion") != 2:
        raise RegistryError(f"{what} has schemaVersion {document.get('schemaVersion')!r}; only schema 2 "
                            "manifests are supported (schema 1 cannot be verified safely)")
    declared = document.get("mediaType")
    header = content_type.split(";", 1)[0].strip()
    media_type = declared if isinstance(declared, str) else header
    if isinstance(declared, str) and header and header != declared and header in MANIFEST_MEDIA_TYPES:
        raise RegistryError(f"{what}: Content-Type {header} contradicts its mediaType {declared}")
    if media_type not in MANIFEST_MEDIA_TYPES:
        if "manifests" in document:
            media_type = OCI_INDEX
        elif "layers" in document:
            media_type = OCI_MANIFEST
        else:
            raise RegistryError(f"{what} has unsupported media type {media_type or '(none)'}")
    return media_type, document
