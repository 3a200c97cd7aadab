"""Configuration errors of a notation authority, as notation's own trust-policy validation treats them."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from tests.certificates import issue
from webhook.policy.models import NotationAuthority, TrustStore
from webhook.trust import compile_trust_store
from webhook.validation import ConfigError
from webhook.verifiers.notation import NotationVerifier

IDENTITY = "x509.subject: C=US, ST=WA, O=Acme Rockets, CN=release"


@pytest.mark.parametrize(("spec", "message"), [
    ({"verificationLevel": "skip", "trustStore": "roots"}, "skip must not have trustStore"),
    ({"trustStore": "roots"}, "both required"),
    ({"trustedIdentities": ["*"]}, "both required"),
    ({"trustStore": "roots", "trustedIdentities": ["*"], "verificationLevel": "lenient"}, "strict"),
    ({"trustStore": "roots", "trustedIdentities": ["*", IDENTITY]}, "wildcard"),
    ({"trustStore": "roots", "trustedIdentities": [IDENTITY, IDENTITY + ", L=Seattle"]}, "overlapping"),
    ({"trustStore": "roots", "trustedIdentities": ["x509.subject: CN=release, O=Acme"]}, "mandatory RDN"),
    ({"trustStore": "roots", "trustedIdentities": ["email: a@b.c"]}, "unsupported identity prefix"),
    ({"trustStore": "roots", "trustedIdentities": ["*"], "override": {"integrity": "log"}}, "unknown|Extra"),
    ({"trustStore": "roots", "trustedIdentities": ["*"], "override": {"authenticity": "skip"}}, "enforce"),
])
def test_invalid_authorities_are_refused(spec: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        NotationAuthority.model_validate(spec)


def _store(*entries: tuple[str, str]) -> Any:
    keys = [{"name": f"k{index}", "x509": {"role": role, "certificates": pem}}
            for index, (role, pem) in enumerate(entries)]
    document = {"apiVersion": "trustgate.dev/v1alpha1", "kind": "TrustStore", "metadata": {"name": "roots"},
                "spec": {"keys": keys}}
    return {"roots": compile_trust_store(TrustStore.model_validate(document))}


def test_store_checks_at_compile_time() -> None:
    root = issue("Acme Root CA", ca=True).pem
    spec = {"trustStore": "roots", "trustedIdentities": ["*"]}
    with pytest.raises(ConfigError, match="not found"):
        NotationVerifier().compile("acme", spec, {}, "a")
    with pytest.raises(ConfigError, match="role ca or signingAuthority"):
        NotationVerifier().compile("acme", spec, _store(("tsa", root)), "a")
    with pytest.raises(ConfigError, match="verifyTimestamp always needs"):
        NotationVerifier().compile("acme", {**spec, "verifyTimestamp": "always"}, _store(("ca", root)), "a")
    assert NotationVerifier().compile("acme", spec, _store(("ca", root)), "a").name == "acme"
