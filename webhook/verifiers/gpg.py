"""GPG "simple signing" verifier: the containers/image atomic signatures that skopeo and podman write.

gpg runs through python-gnupg in the throw-away GNUPGHOME of the authority's TrustStore, which holds that
store's public keys and nothing else (every authority naming the store shares it); the user's GNUPGHOME and
keyrings are never read. gpg's verdict is taken from its machine-readable status lines (doc/DETAILS in
GnuPG), and only a single good, valid signature whose primary key is one of the authority's trusted keys (its
`keys:` selection) is accepted. The signed literal data is then parsed as a strict simple-signing payload,
its digest compared with the manifest and its identity checked by the authority's rule.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from webhook.artifacts import ImageTarget, ResolvedImage, SignatureMaterial
from webhook.gpgkeys import GnupgHome, GpgKey
from webhook.policy.models import GpgAuthority, SignedIdentity
from webhook.results import Result
from webhook.simple_signing import (
    ATOMIC_SIGNATURE_TYPE,
    InvalidPayloadError,
    describe_rule,
    identity_matches,
    manifest_matches_digest,
    parse_payload,
)
from webhook.sources.base import SignatureSource
from webhook.sources.extension import ExtensionSignatures
from webhook.sources.lookaside import LookasideSignatures
from webhook.trust import CompiledTrustStore
from webhook.validation import validate_spec
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin, find_trust_store, select_keys

# --- gpg status interpretation ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class GpgVerdict:
    """gpg's answer for one signed message, reduced to what the security decision needs."""

    good: bool
    message: str
    signer: str | None = None
    plaintext: bytes = b""
    signing_key: str | None = None
    created: int | None = None


def _status_lines(stderr: str) -> list[list[str]]:
    return [line[len("[GNUPG:] "):].split() for line in stderr.splitlines() if line.startswith("[GNUPG:] ")]


def interpret_gpg_status(stderr: str, returncode: int | None, plaintext: bytes,
                         trusted: Mapping[str, str], store_name: str,
                         unselected: Mapping[str, str] | None = None) -> GpgVerdict:
    """Decide from gpg's status lines. `trusted` maps trusted primary fingerprints to their entry names;
    `unselected` maps the store's other keys (those the authority's `keys:` leaves out) to theirs."""
    untrusted = f"not in TrustStore {store_name}"
    unselected = unselected or {}
    status = _status_lines(stderr)
    keywords = [fields[0] for fields in status if fields]

    def first(keyword: str) -> list[str]:
        return next(fields[1:] for fields in status if fields and fields[0] == keyword)

    if "BEGIN_DECRYPTION" in keywords or "ENC_TO" in keywords:
        return GpgVerdict(False, "an encrypted message, not a signature")
    signatures = keywords.count("NEWSIG")
    if signatures == 0:
        return GpgVerdict(False, "not an OpenPGP signed message")
    if signatures > 1:
        return GpgVerdict(False, f"carries {signatures} OpenPGP signatures, exactly one is accepted")
    if "BADSIG" in keywords:
        return GpgVerdict(False, f"signature by key {first('BADSIG')[0]} does not match its content (tampered)")
    if "ERRSIG" in keywords:
        fields = first("ERRSIG")
        key = fields[6] if len(fields) > 6 and fields[6] != "-" else fields[0]
        if len(fields) > 5 and fields[5] == "9":
            return GpgVerdict(False, f"signed by key {key}, {untrusted}")
        return GpgVerdict(False, f"signature by key {key} cannot be checked (gpg error code {fields[5:6]})")
    if "REVKEYSIG" in keywords:
        return GpgVerdict(False, f"signed by key {first('REVKEYSIG')[0]}, which has been revoked")
    if "EXPKEYSIG" in keywords:
        return GpgVerdict(False, f"signed by key {first('EXPKEYSIG')[0]}, which has expired")
    if "EXPSIG" in keywords:
        return GpgVerdict(False, "the signature has expired")
    if "GOODSIG" not in keywords or "VALIDSIG" not in keywords or returncode != 0:
        return GpgVerdict(False, f"gpg did not report a good and valid signature (exit {returncode})")
    validsig = first("VALIDSIG")
    primary = validsig[9] if len(validsig) > 9 else validsig[0]
    if primary in unselected:
        return GpgVerdict(False, f"signed by key {primary} ({unselected[primary]} in TrustStore {store_name}), "
                                 "which this authority's keys do not select")
    if primary not in trusted:
        return GpgVerdict(False, f"signed by key {primary}, {untrusted}")
    created = int(validsig[2]) if len(validsig) > 2 and validsig[2].isdigit() else None
    return GpgVerdict(True, f"good signature by key {primary} ({trusted[primary]})", primary, plaintext,
                      signing_key=validsig[0], created=created)


# --- the verifier -------------------------------------------------------------------------------------


@dataclass
class GpgAuthorityVerifier(CompiledAuthority):
    name: str
    spec: GpgAuthority
    store_name: str
    keys: dict[str, GpgKey]
    # The TrustStore's home, holding all its keys: it belongs to the compiled TrustStore, which removes it.
    home: GnupgHome = field(repr=False)
    # The store's GPG keys this authority does not select, for a denial that says so.
    unselected: dict[str, GpgKey] = field(default_factory=dict, repr=False)
    verifier_type: str = "gpg"

    def __post_init__(self) -> None:
        self._trusted = {key.fingerprint: key_name for key_name, key in self.keys.items()}
        self._unselected = {key.fingerprint: key_name for key_name, key in self.unselected.items()
                            if key.fingerprint not in self._trusted}

    @property
    def rule(self) -> SignedIdentity:
        return self.spec.signedIdentity

    def sources(self, image: ImageTarget) -> Sequence[SignatureSource]:
        found: list[SignatureSource] = [ExtensionSignatures()]
        if self.spec.lookaside is not None:
            found.append(LookasideSignatures(self.spec.lookaside))
        return found

    def verify_signature(self, image: ResolvedImage, material: SignatureMaterial) -> Result:
        result = self.home.gpg.decrypt(material.data)
        verdict = interpret_gpg_status(result.stderr or "", result.returncode, result.data, self._trusted,
                                       self.store_name, self._unselected)
        if not verdict.good:
            return Result.fail(material.label, "gpg.signature", verdict.message)
        return self.check_payload(image, material.label, verdict)

    def check_payload(self, image: ResolvedImage, label: str, verdict: GpgVerdict) -> Result:
        try:
            payload = parse_payload(verdict.plaintext, ATOMIC_SIGNATURE_TYPE)
        except InvalidPayloadError as exc:
            return Result.fail(label, "payload.invalid",
                               f"{verdict.message}, but the signed content is not a valid atomic signature: {exc}")
        if not manifest_matches_digest(image.manifest, payload.manifest_digest):
            return Result.fail(label, "payload.digest",
                               f"signed for manifest digest {payload.manifest_digest}, not {image.digest}")
        if not identity_matches(self.rule, image.reference, payload.docker_reference):
            return Result.fail(label, "payload.identity",
                               f"signed for {payload.docker_reference}, not accepted by "
                               f"{describe_rule(self.rule)} for {image.reference}")
        details = {"dockerReference": payload.docker_reference}
        if payload.timestamp is not None:
            details["timestamp"] = str(payload.timestamp)
        # The payload's own timestamp is what skopeo signs; the OpenPGP creation time is signed too.
        signed_at = payload.timestamp if payload.timestamp is not None else verdict.created
        signer_ids = tuple(dict.fromkeys(key for key in (verdict.signer, verdict.signing_key) if key))
        return Result.ok(label, "signature.valid", f"{verdict.message}, signed for {payload.docker_reference}",
                         signer=verdict.signer, details=details, signer_ids=signer_ids, signed_at=signed_at)


class GpgVerifier(VerifierPlugin):
    type_name = "gpg"
    spec_model = GpgAuthority

    def compile(self, authority_name: str, spec: Any, trust_stores: Mapping[str, CompiledTrustStore],
                path: str) -> CompiledAuthority:
        spec = validate_spec(GpgAuthority, spec, path)
        store = find_trust_store(trust_stores, spec.trustStore, path)
        available = {name: key for name, key in store.keys.items() if isinstance(key, GpgKey)}
        selected = select_keys(available, spec.keys, spec.trustStore, "gpg", path)
        assert store.gpg_home is not None  # a TrustStore with GPG entries is compiled with its home
        unselected = {name: key for name, key in available.items() if name not in selected}
        return GpgAuthorityVerifier(authority_name, spec, spec.trustStore, selected, store.gpg_home, unselected)

