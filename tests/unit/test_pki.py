"""X.509 path validation: a positive case and one negative case per check of `webhook.pki.verify_chain`."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.x509.oid import ExtendedKeyUsageOID

from tests.certificates import NOW, ca_chain, crl, issue
from webhook import pki
from webhook.pki import ChainError, Revocation, describe, revocation_status, sha256_fingerprint, verify_chain


def test_valid_chain_returns_leaf_to_root() -> None:
    root, intermediate, leaf = ca_chain()
    chain = verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW)
    assert chain == [leaf.certificate, intermediate.certificate, root.certificate]


def test_self_signed_leaf_in_roots_is_its_own_anchor() -> None:
    # What `notation cert generate-test` makes: no basicConstraints, codeSigning EKU, self-signed.
    leaf = issue("test", basic_constraints=False)
    assert verify_chain(leaf.certificate, [], [leaf.certificate], at=NOW) == [leaf.certificate]


def test_untrusted_root() -> None:
    _, intermediate, leaf = ca_chain()
    other_root, _, _ = ca_chain()
    with pytest.raises(ChainError, match="does not chain to a trusted root"):
        verify_chain(leaf.certificate, [intermediate.certificate], [other_root.certificate], at=NOW)


def test_no_roots_configured() -> None:
    _, intermediate, leaf = ca_chain()
    with pytest.raises(ChainError, match="no trusted root"):
        verify_chain(leaf.certificate, [intermediate.certificate], [], at=NOW)


def test_missing_intermediate() -> None:
    root, _, leaf = ca_chain()
    with pytest.raises(ChainError, match="does not chain to a trusted root"):
        verify_chain(leaf.certificate, [], [root.certificate], at=NOW)


def test_forged_issuer_name_is_not_a_chain() -> None:
    root, intermediate, _ = ca_chain()
    impostor = issue("Acme Signing CA", ca=True)  # same name as the intermediate, other key
    forged = issue("release", issuer=impostor)
    with pytest.raises(ChainError, match="does not chain to a trusted root"):
        verify_chain(forged.certificate, [intermediate.certificate], [root.certificate], at=NOW)


def test_leaf_expired_and_not_yet_valid() -> None:
    root, intermediate, leaf = ca_chain()
    with pytest.raises(ChainError, match="expired on"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW + timedelta(days=400))
    with pytest.raises(ChainError, match="not valid before"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW - timedelta(days=60))


def test_expired_intermediate() -> None:
    root = issue("Acme Root CA", ca=True)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True, not_after=NOW - timedelta(days=1))
    leaf = issue("release", issuer=intermediate)
    with pytest.raises(ChainError, match=r"'.*Acme Signing CA.*' expired on"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW)


def test_expired_root() -> None:
    root = issue("Acme Root CA", ca=True, not_after=NOW - timedelta(days=1))
    leaf = issue("release", issuer=root)
    with pytest.raises(ChainError, match=r"Acme Root CA.*expired on"):
        verify_chain(leaf.certificate, [], [root.certificate], at=NOW)


def test_missing_code_signing_eku() -> None:
    root = issue("Acme Root CA", ca=True)
    server = issue("web", issuer=root, extended_key_usage=[ExtendedKeyUsageOID.SERVER_AUTH])
    with pytest.raises(ChainError, match="does not include codeSigning"):
        verify_chain(server.certificate, [], [root.certificate], at=NOW)
    bare = issue("bare", issuer=root, extended_key_usage=None)
    with pytest.raises(ChainError, match="no extendedKeyUsage"):
        verify_chain(bare.certificate, [], [root.certificate], at=NOW)
    assert verify_chain(bare.certificate, [], [root.certificate], at=NOW, eku_optional=True)


def test_any_eku_is_refused() -> None:
    root = issue("Acme Root CA", ca=True)
    leaf = issue("release", issuer=root, extended_key_usage=[ExtendedKeyUsageOID.CODE_SIGNING,
                                                             ExtendedKeyUsageOID.ANY_EXTENDED_KEY_USAGE])
    with pytest.raises(ChainError, match="anyExtendedKeyUsage"):
        verify_chain(leaf.certificate, [], [root.certificate], at=NOW)


def test_other_purpose_checked_when_asked() -> None:
    root = issue("TSA Root", ca=True)
    tsa = issue("tsa", issuer=root, extended_key_usage=[ExtendedKeyUsageOID.TIME_STAMPING])
    assert verify_chain(tsa.certificate, [], [root.certificate], at=NOW,
                        extended_key_usage=ExtendedKeyUsageOID.TIME_STAMPING)
    with pytest.raises(ChainError, match="codeSigning"):
        verify_chain(tsa.certificate, [], [root.certificate], at=NOW)


def test_key_usage_without_digital_signature() -> None:
    root = issue("Acme Root CA", ca=True)
    usage = x509.KeyUsage(digital_signature=False, content_commitment=True, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=False,
                          encipher_only=False, decipher_only=False)
    leaf = issue("release", issuer=root, key_usage=usage)
    with pytest.raises(ChainError, match="lacks digitalSignature"):
        verify_chain(leaf.certificate, [], [root.certificate], at=NOW)
    no_usage = issue("release", issuer=root, key_usage=None)
    with pytest.raises(ChainError, match="no keyUsage"):
        verify_chain(no_usage.certificate, [], [root.certificate], at=NOW)


def test_ca_certificate_cannot_sign() -> None:
    root, intermediate, _ = ca_chain()
    with pytest.raises(ChainError, match="is a CA certificate"):
        verify_chain(intermediate.certificate, [], [root.certificate], at=NOW)


def test_issuer_that_is_not_a_ca() -> None:
    root = issue("Acme Root CA", ca=True)
    not_ca = issue("Team lead", issuer=root, ca=False, key_usage=None)
    leaf = issue("release", issuer=not_ca)
    with pytest.raises(ChainError, match=r"basicConstraints.cA must be asserted"):
        verify_chain(leaf.certificate, [not_ca.certificate], [root.certificate], at=NOW)


def test_issuer_without_basic_constraints() -> None:
    root = issue("Acme Root CA", ca=True)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True, basic_constraints=False)
    leaf = issue("release", issuer=intermediate)
    with pytest.raises(ChainError, match="no basicConstraints"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW)


def test_issuer_without_key_cert_sign() -> None:
    root = issue("Acme Root CA", ca=True)
    usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=False, crl_sign=True,
                          encipher_only=False, decipher_only=False)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True, key_usage=usage)
    leaf = issue("release", issuer=intermediate)
    with pytest.raises(ChainError, match="lacks keyCertSign"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW)


def test_path_length_constraint() -> None:
    root = issue("Acme Root CA", ca=True, path_length=0)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True)
    leaf = issue("release", issuer=intermediate)
    with pytest.raises(ChainError, match="path length"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW)


def test_revoked_leaf() -> None:
    root, intermediate, leaf = ca_chain()
    revocations = crl(intermediate, [leaf.certificate])
    with pytest.raises(ChainError, match=r"release.*was revoked"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW, crls=[revocations])


def test_revoked_intermediate() -> None:
    root, intermediate, leaf = ca_chain()
    with pytest.raises(ChainError, match=r"Acme Signing CA.*was revoked"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW,
                     crls=[crl(root, [intermediate.certificate])])


def test_crl_with_bad_signature_or_foreign_issuer_is_ignored() -> None:
    root, intermediate, leaf = ca_chain()
    impostor = issue("Acme Signing CA", ca=True)  # same name as the real issuer, different key
    forged = crl(impostor, [leaf.certificate])
    assert verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW, crls=[forged])


def test_revocation_status_states() -> None:
    root = issue("Acme Root CA", ca=True)
    intermediate = issue("Acme Signing CA", issuer=root, ca=True, crl_url="http://crl.example/root.crl")
    leaf = issue("release", issuer=intermediate)
    chain = [leaf.certificate, intermediate.certificate, root.certificate]

    states = [entry.state for entry in revocation_status(chain, [], NOW)]
    assert states == [Revocation.NOT_REVOCABLE, Revocation.UNKNOWN]

    current = [crl(root), crl(intermediate)]
    assert [e.state for e in revocation_status(chain, current, NOW)] == [Revocation.GOOD, Revocation.GOOD]

    stale = crl(root, last_update=NOW - timedelta(days=30), next_update=NOW - timedelta(days=20))
    entry = revocation_status(chain, [stale], NOW)[1]
    assert entry.state is Revocation.UNKNOWN
    assert "outdated CRL" in entry.message


def test_naive_time_is_refused() -> None:
    root, intermediate, leaf = ca_chain()
    with pytest.raises(ValueError, match="timezone-aware"):
        verify_chain(leaf.certificate, [intermediate.certificate], [root.certificate], at=NOW.replace(tzinfo=None))


def test_a_certificate_parsed_again_is_named_and_fingerprinted_once() -> None:
    # Each signature carries its own copy of the signing certificate; naming it is work done once per DER.
    der = issue("named once").certificate.public_bytes(serialization.Encoding.DER)
    first, again = x509.load_der_x509_certificate(der), x509.load_der_x509_certificate(der)
    assert first is not again
    names, fingerprints = pki._remembered_name.cache_info(), pki._remembered_sha256.cache_info()
    assert (describe(first), sha256_fingerprint(first)) == (describe(again), sha256_fingerprint(again))
    assert pki._remembered_name.cache_info().misses - names.misses == 1
    assert pki._remembered_sha256.cache_info().misses - fingerprints.misses == 1


def test_only_certificates_of_a_usual_size_are_remembered() -> None:
    # Signatures are attacker-supplied: what is remembered weighs at most NAMED_CERTIFICATES small certificates.
    heavy = issue("heavy", crl_url="http://crl.example/" + "x" * pki.NAMED_CERTIFICATE_BYTES).certificate
    assert len(heavy.public_bytes(serialization.Encoding.DER)) > pki.NAMED_CERTIFICATE_BYTES
    names, fingerprints = pki._remembered_name.cache_info(), pki._remembered_sha256.cache_info()
    assert describe(heavy) == "CN=heavy,O=Acme Rockets,ST=WA,C=US"
    assert sha256_fingerprint(heavy) == heavy.fingerprint(hashes.SHA256()).hex()
    assert pki._remembered_name.cache_info() == names
    assert pki._remembered_sha256.cache_info() == fingerprints
    for index in range(pki.NAMED_CERTIFICATES + 10):
        describe(issue(f"many {index}").certificate)
    assert pki._remembered_name.cache_info().currsize == pki.NAMED_CERTIFICATES


def test_a_certificate_with_the_same_subject_is_fingerprinted_as_itself() -> None:
    one, other = issue("same subject").certificate, issue("same subject").certificate
    assert describe(one) == describe(other)
    assert sha256_fingerprint(one) == one.fingerprint(hashes.SHA256()).hex()
    assert sha256_fingerprint(other) == other.fingerprint(hashes.SHA256()).hex() != sha256_fingerprint(one)
