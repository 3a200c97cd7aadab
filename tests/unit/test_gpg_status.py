"""The decision taken from gpg's machine-readable status lines; every refusal has its case here."""

from __future__ import annotations

import pytest

from webhook.verifiers.gpg import interpret_gpg_status

PRIMARY = "A" * 40
SUBKEY = "B" * 40
UNTRUSTED = "C" * 40
TRUSTED = {PRIMARY: "release"}


def status(*lines: str) -> str:
    return "".join(f"[GNUPG:] {line}\n" for line in lines) + "gpg: some human text\n"


def good(signing_key: str, primary: str) -> str:
    return status("NEWSIG", f"GOODSIG {signing_key[-16:]} Release <r@x>",
                  f"VALIDSIG {signing_key} 2026-12-01 1764547200 0 4 0 22 10 00 {primary}",
                  "TRUST_UNDEFINED 0 pgp")


def test_good_signature_by_a_trusted_primary_key_passes() -> None:
    verdict = interpret_gpg_status(good(PRIMARY, PRIMARY), 0, b"payload", TRUSTED, "store")
    assert verdict.good and verdict.signer == PRIMARY and verdict.plaintext == b"payload"


def test_good_signature_by_a_subkey_counts_for_its_primary() -> None:
    verdict = interpret_gpg_status(good(SUBKEY, PRIMARY), 0, b"payload", TRUSTED, "store")
    assert verdict.good and verdict.signer == PRIMARY


def test_subkey_of_an_untrusted_primary_is_refused() -> None:
    # The signing subkey's own fingerprint is irrelevant: trust is anchored on the primary key only.
    verdict = interpret_gpg_status(good(PRIMARY, UNTRUSTED), 0, b"payload", TRUSTED, "store")
    assert not verdict.good and f"signed by key {UNTRUSTED}, not in TrustStore store" in verdict.message


@pytest.mark.parametrize(("stderr", "returncode", "expected"), [
    (status("ENC_TO 0123456789ABCDEF 1 0", "BEGIN_DECRYPTION"), 2, "encrypted message"),
    (status("PLAINTEXT 62 0"), 0, "not an OpenPGP signed message"),
    (good(PRIMARY, PRIMARY) + status("NEWSIG", f"GOODSIG {PRIMARY[-16:]} x"), 0, "exactly one is accepted"),
    (status("NEWSIG", f"BADSIG {PRIMARY[-16:]} Release <r@x>"), 1, "does not match its content"),
    (status("NEWSIG", f"ERRSIG {UNTRUSTED[-16:]} 22 10 00 1764547200 9 {UNTRUSTED}"), 2,
     f"signed by key {UNTRUSTED}, not in TrustStore store"),
    (status("NEWSIG", f"ERRSIG {PRIMARY[-16:]} 99 10 00 1764547200 4 -"), 2, "cannot be checked"),
    (status("NEWSIG", f"REVKEYSIG {PRIMARY[-16:]} Release <r@x>"), 1, "has been revoked"),
    (status("NEWSIG", f"EXPKEYSIG {PRIMARY[-16:]} Release <r@x>"), 1, "has expired"),
    (status("NEWSIG", "EXPSIG 0123 x"), 1, "signature has expired"),
    (status("NEWSIG", f"GOODSIG {PRIMARY[-16:]} Release <r@x>"), 0, "did not report a good and valid"),
    (good(PRIMARY, PRIMARY), 2, "did not report a good and valid"),
])
def test_refusals(stderr: str, returncode: int, expected: str) -> None:
    verdict = interpret_gpg_status(stderr, returncode, b"payload", TRUSTED, "store")
    assert not verdict.good
    assert expected in verdict.message


def test_human_readable_lines_cannot_forge_status() -> None:
    forged = "gpg: [GNUPG:] NEWSIG\ngpg: [GNUPG:] GOODSIG x\n" + status("NEWSIG", f"BADSIG {PRIMARY[-16:]} x")
    assert not interpret_gpg_status(forged, 1, b"", TRUSTED, "store").good


def test_a_store_key_outside_the_authoritys_selection_is_refused_by_name() -> None:
    # The TrustStore's gpg home holds every key of the store; the authority trusts only the keys it selects.
    verdict = interpret_gpg_status(good(UNTRUSTED, UNTRUSTED), 0, b"payload", TRUSTED, "store", {UNTRUSTED: "other"})
    assert not verdict.good
    assert verdict.message == (f"signed by key {UNTRUSTED} (other in TrustStore store), which this authority's keys "
                               "do not select")
