"""Third-party verifier types arrive through the `trustgate.verifiers` entry-point group."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest

from tests.helpers import resources, trust_policy
from webhook.policy.compile import compile_policy_set
from webhook.verifiers.base import discover_verifiers

PLUGIN_MODULE = '''
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from webhook.results import Result
from webhook.validation import validate_spec
from webhook.verifiers.base import CompiledAuthority, VerifierPlugin


class AttestSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    team: str


class AttestAuthority(CompiledAuthority):
    verifier_type = "attest"

    def __init__(self, name: str, team: str) -> None:
        self.name, self.team = name, team

    def sources(self, image: Any) -> Sequence[Any]:
        return ()

    def verify_signature(self, image: Any, material: Any) -> Result:
        return Result.fail(material.label, "attest", "never")


class AttestVerifier(VerifierPlugin):
    type_name = "attest"
    spec_model = AttestSpec

    def compile(self, authority_name: str, spec: Any, trust_stores: Any, path: str) -> AttestAuthority:
        return AttestAuthority(authority_name, validate_spec(AttestSpec, spec, path).team)


class ImpostorGpg(AttestVerifier):
    type_name = "gpg"


class Misnamed(AttestVerifier):
    type_name = "something-else"
'''


def install_plugin(directory: Path, entry_points: str, monkeypatch: pytest.MonkeyPatch) -> None:
    (directory / "trustgate_attest.py").write_text(PLUGIN_MODULE)
    dist_info = directory / "trustgate_attest-1.0.dist-info"
    dist_info.mkdir()
    (dist_info / "METADATA").write_text("Metadata-Version: 2.1\nName: trustgate-attest\nVersion: 1.0\n")
    (dist_info / "entry_points.txt").write_text(textwrap.dedent(entry_points))
    monkeypatch.syspath_prepend(str(directory))


def test_entry_point_plugin_is_discovered_and_compiled(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "[trustgate.verifiers]\nattest = trustgate_attest:AttestVerifier\n", monkeypatch)
    verifiers = discover_verifiers()
    assert {"gpg", "attest"} <= set(verifiers)
    policy = trust_policy("app", ["example.com/**"], [{"name": "teams", "attest": {"team": "payments"}}])
    compiled = compile_policy_set(resources(policy), verifiers)
    (rules,) = compiled.policies[0].authorities
    authority = rules.verifier
    assert authority.verifier_type == "attest" and authority.name == "teams"


def test_plugin_configuration_errors_are_located(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    install_plugin(tmp_path, "[trustgate.verifiers]\nattest = trustgate_attest:AttestVerifier\n", monkeypatch)
    policy = trust_policy("app", ["example.com/**"], [{"name": "teams", "attest": {"team": "a", "tema": "b"}}])
    with pytest.raises(Exception, match=r"spec\.authorities\[0\]\.attest\.tema: unknown field"):
        compile_policy_set(resources(policy), discover_verifiers())


def test_a_plugin_cannot_replace_a_builtin_type(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                caplog: pytest.LogCaptureFixture) -> None:
    install_plugin(tmp_path, "[trustgate.verifiers]\ngpg = trustgate_attest:ImpostorGpg\n", monkeypatch)
    with caplog.at_level(logging.WARNING):
        verifiers = discover_verifiers()
    assert type(verifiers["gpg"]).__module__ == "webhook.verifiers.gpg"
    assert "is a built-in verifier type" in caplog.text


def test_broken_plugins_are_left_out_with_a_log_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    install_plugin(tmp_path, """\
        [trustgate.verifiers]
        missing = trustgate_attest:NoSuchClass
        misnamed = trustgate_attest:Misnamed
        notaplugin = trustgate_attest:AttestSpec
        """, monkeypatch)
    with caplog.at_level(logging.ERROR):
        verifiers = discover_verifiers()
    assert not {"missing", "misnamed", "notaplugin"} & set(verifiers)
    for name in ("missing", "misnamed", "notaplugin"):
        assert f"cannot load verifier plugin {name}=" in caplog.text
