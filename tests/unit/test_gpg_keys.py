"""TrustStore gpg entries are inspected by real gpg, which runs without an agent and so stores no secret key."""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections.abc import Iterator

import pytest

from webhook.gpgkeys import GpgKeyError, inspect_gpg_key


@pytest.fixture(scope="module")
def exported() -> Iterator[tuple[str, str]]:
    """(public, secret) armored blocks of one fresh key, made by real gpg."""
    with tempfile.TemporaryDirectory(prefix="tg-t-") as home:
        base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        try:
            subprocess.run([*base, "--quick-gen-key", "Test <test@example.com>", "ed25519", "sign", "1y"],
                           check=True, capture_output=True)
            public, secret = (subprocess.run([*base, "--armor", export], check=True, capture_output=True,
                                             text=True).stdout for export in ("--export", "--export-secret-keys"))
        finally:
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
        yield public, secret


def test_a_public_key_is_inspected(exported: tuple[str, str]) -> None:
    key = inspect_gpg_key(exported[0])
    assert len(key.fingerprint) == 40 and key.algorithm == "EdDSA/ed25519"


def test_a_secret_key_is_refused(exported: tuple[str, str]) -> None:
    with pytest.raises(GpgKeyError, match="secret key material"):
        inspect_gpg_key(exported[1])


def test_a_secret_key_under_a_public_key_header_is_refused(exported: tuple[str, str]) -> None:
    """The armor header is not covered by its checksum: only what gpg read tells a secret key apart."""
    disguised = exported[1].replace("PRIVATE KEY BLOCK", "PUBLIC KEY BLOCK")
    with pytest.raises(GpgKeyError, match="secret key material"):
        inspect_gpg_key(disguised)


def test_only_gpgs_exit_status_warning_is_quieted(caplog: pytest.LogCaptureFixture) -> None:
    """trustgate states gpg's exit in its own reason; python-gnupg's other records still reach the log."""
    logger = logging.getLogger("gnupg")
    with caplog.at_level(logging.WARNING, logger="gnupg"):
        logger.warning("gpg returned a non-zero error code: %d", 2)
        logger.error("could not run gpg")
    assert [record.getMessage() for record in caplog.records] == ["could not run gpg"]
