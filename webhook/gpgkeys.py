"""OpenPGP public keys as trust material: each TrustStore key parsed and checked by gpg, and the private,
throw-away GNUPGHOMEs that hold trusted keys for verification.

This sits with the trust material, below the verifiers: a TrustStore is compiled (and its keys inspected)
without any verifier, and the GPG verifier verifies in the homes made here.
"""

from __future__ import annotations

import copy
import logging
import shutil
import threading
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import gnupg

from webhook.scratch import ScratchRoot

# The plaintext of a signature is a small JSON document; a compressed packet must not expand without bound.
MAX_PLAINTEXT_BYTES = 64 * 1024
# Every GNUPGHOME of this process lives under one directory that a later process removes if this one is killed.
HOMES = ScratchRoot("tg-gpg-")



def _not_exit_status(record: logging.LogRecord) -> bool:
    """python-gnupg warns of every non-zero gpg exit; trustgate reads gpg's status lines itself and states the
    outcome (the exit status included) in its own reason, so that warning is noise on every refused signature.
    Its other records (a gpg that cannot run, unreadable output) still pass."""
    return not record.getMessage().startswith("gpg returned a non-zero error code")


logging.getLogger("gnupg").addFilter(_not_exit_status)

_PUBLIC_KEY_HEADER = "-----BEGIN PGP PUBLIC KEY BLOCK-----"
_PUBLIC_KEY_FOOTER = "-----END PGP PUBLIC KEY BLOCK-----"
_ALGORITHMS = {"1": "RSA", "2": "RSA", "3": "RSA", "16": "ElGamal", "17": "DSA", "18": "ECDH",
               "19": "ECDSA", "22": "EdDSA"}


class GpgKeyError(ValueError):
    """Armored text that is not exactly one usable OpenPGP public key."""


@dataclass(frozen=True, slots=True)
class GpgKey:
    """A trusted OpenPGP key as gpg sees it: the primary fingerprint counts, subkeys sign on its behalf."""

    armored: str
    fingerprint: str
    subkey_fingerprints: tuple[str, ...]
    algorithm: str
    expires: datetime | None
    revoked: bool
    user_ids: tuple[str, ...]
    # Expiry of each subkey, in the order of subkey_fingerprints.
    subkey_expires: tuple[datetime | None, ...] = ()

    @property
    def key_id(self) -> str:
        return self.fingerprint[-16:]


_GPG_OPTIONS = (
    "--no-options", "--no-autostart", "--trust-model", "always", "--no-auto-check-trustdb",
    "--no-auto-key-retrieve", "--no-auto-key-locate", "--max-output", str(MAX_PLAINTEXT_BYTES),
)
_first_gpg: gnupg.GPG | None = None
_first_gpg_lock = threading.Lock()


def _gpg_in(home: str) -> gnupg.GPG:
    """A python-gnupg handle on `home`.

    Making a handle runs gpg once to learn its version. Every home of this process runs the same gpg binary, so
    that is asked once per process, not once per TrustStore: with hundreds of TrustStores, gpg processes are what
    loading a configuration costs.
    """
    global _first_gpg
    with _first_gpg_lock:
        if _first_gpg is None:
            _first_gpg = gnupg.GPG(gnupghome=home, options=list(_GPG_OPTIONS))
            _first_gpg.encoding = "utf-8"
        handle = copy.copy(_first_gpg)
    handle.gnupghome = home
    return handle


class GnupgHome:
    """A private, throw-away GNUPGHOME holding only the given public keys.

    Public keys are all it ever holds, so gpg runs without its agent (`--no-autostart`): no daemon is started
    that could outlive trustgate, and closing the home is only removing its directory.
    """

    def __init__(self, armored_keys: Iterable[str]) -> None:
        self.path = HOMES.directory()
        self._closed = False
        self._lock = threading.Lock()
        try:
            self.gpg = _gpg_in(self.path)
            self.import_results = [self.gpg.import_keys(armored) for armored in armored_keys]
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
        shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> GnupgHome:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _epoch(value: str) -> datetime | None:
    return datetime.fromtimestamp(int(value), UTC) if value else None


def _checked_armor(armored: str) -> str:
    text = armored.strip()
    if "PRIVATE KEY BLOCK" in text:
        raise GpgKeyError("contains secret key material; a TrustStore holds public keys only")
    if not text.startswith(_PUBLIC_KEY_HEADER) or not text.endswith(_PUBLIC_KEY_FOOTER):
        raise GpgKeyError(f"not an ASCII-armored OpenPGP public key block ({_PUBLIC_KEY_HEADER} ... END)")
    return text


class GpgKeyring:
    """The OpenPGP keys of one TrustStore in one GNUPGHOME: each key is checked as it is imported, and the home
    they were checked in is the one every authority naming the TrustStore verifies with.

    Which of the keys an authority trusts is decided from gpg's status lines (the trusted-fingerprint map of
    `interpret_gpg_status`), never from which keys the home holds.
    """

    def __init__(self) -> None:
        self.home = GnupgHome(())
        self._armored: dict[str, str] = {}  # primary fingerprint -> the armored block it was imported from

    def add(self, armored: str) -> str:
        """Import one armored public key block; its primary fingerprint, or GpgKeyError saying what is wrong."""
        text = _checked_armor(armored)
        imported = self.home.gpg.import_keys(text)
        fingerprints = set(imported.fingerprints)
        if not fingerprints:
            raise GpgKeyError("gpg found no public key in the block (damaged armor or unsupported key)")
        # Without an agent gpg stores no secret key, so what it read is counted from its import status.
        if imported.sec_read:
            raise GpgKeyError("contains secret key material; a TrustStore holds public keys only")
        if len(fingerprints) != 1:
            raise GpgKeyError(f"holds {len(fingerprints)} primary keys; give each key its own entry")
        fingerprint: str = fingerprints.pop()
        self._armored.setdefault(fingerprint, text)
        return fingerprint

    def keys(self) -> dict[str, GpgKey]:
        """Every key added, by primary fingerprint, as gpg lists it (one listing for the whole keyring)."""
        listed = {key["fingerprint"]: key for key in self.home.gpg.list_keys()}
        return {fingerprint: _gpg_key(text, listed[fingerprint]) for fingerprint, text in self._armored.items()}

    def close(self) -> None:
        self.home.close()


def _gpg_key(text: str, key: dict[str, Any]) -> GpgKey:
    return GpgKey(
        armored=text,
        fingerprint=key["fingerprint"],
        subkey_fingerprints=tuple(sub[2] for sub in key.get("subkeys", [])),
        algorithm=f"{_ALGORITHMS.get(key['algo'], 'algorithm ' + key['algo'])}"
        f"{key['length'] if key['algo'] in ('1', '2', '3', '17') else '/' + key.get('curve', '')}",
        expires=_epoch(key.get("expires", "")),
        revoked=key.get("trust") == "r",
        user_ids=tuple(key.get("uids", [])),
        subkey_expires=tuple(_epoch(key.get("subkey_info", {}).get(sub[0], {}).get("expires", ""))
                             for sub in key.get("subkeys", [])),
    )


def inspect_gpg_key(armored: str) -> GpgKey:
    """Parse one ASCII-armored public key block on its own; raise GpgKeyError saying what is wrong."""
    keyring = GpgKeyring()
    try:
        fingerprint = keyring.add(armored)
        return keyring.keys()[fingerprint]
    finally:
        keyring.close()
