"""Trust material compiled once per TrustStore and shared: one gpg home per store whatever the number of
authorities naming it, an authority's `keys:` selection enforced inside the shared home, and bundle swaps that
reuse what did not change and release only what no generation holds any more."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import gnupg
import pytest

from tests.helpers import record_store_compiles, resolved, resources, trust_policy, trust_store
from webhook import gpgkeys
from webhook.artifacts import SignatureMaterial
from webhook.policy import compile as policy_compile
from webhook.policy.compile import PolicySet, compile_policy_set
from webhook.verifiers.gpg import GpgAuthorityVerifier

REFERENCE = "registry.example/apps/web:v1"
MANIFEST = b'{"schemaVersion": 2, "layers": []}'


@pytest.fixture(scope="module")
def signers() -> Iterator[tuple[dict[str, str], dict[str, bytes]]]:
    """Two fresh keys, armored, and a simple-signing signature of REFERENCE's manifest by each."""
    digest = "sha256:" + hashlib.sha256(MANIFEST).hexdigest()
    payload = json.dumps({"critical": {"identity": {"docker-reference": REFERENCE},
                                       "image": {"docker-manifest-digest": digest},
                                       "type": "atomic container signature"}, "optional": {}}).encode()
    with tempfile.TemporaryDirectory(prefix="tg-t-") as home:
        base = ["gpg", "--homedir", home, "--batch", "--pinentry-mode", "loopback", "--passphrase", ""]
        try:
            armored, signatures = {}, {}
            for name in ("alpha", "beta"):
                subprocess.run([*base, "--quick-gen-key", f"{name} <{name}@example.com>", "ed25519", "sign", "1y"],
                               check=True, capture_output=True)
                armored[name] = subprocess.run([*base, "--armor", "--export", f"{name}@example.com"], check=True,
                                               capture_output=True, text=True).stdout
                signatures[name] = subprocess.run([*base, "--local-user", f"{name}@example.com", "--sign"],
                                                  input=payload, check=True, capture_output=True).stdout
        finally:
            subprocess.run(["gpgconf", "--homedir", home, "--kill", "all"], capture_output=True, check=False)
        yield armored, signatures


def _store(armored: dict[str, str], name: str = "team") -> dict[str, Any]:
    return trust_store(name, {f"k-{key}": text for key, text in armored.items()})


def _policy(name: str, store: str = "team", keys: list[str] | None = None,
            images: tuple[str, ...] = ("registry.example/apps/**",)) -> dict[str, Any]:
    gpg: dict[str, Any] = {"trustStore": store, **({"keys": keys} if keys is not None else {})}
    return trust_policy(name, list(images), [{"name": "release", "gpg": gpg}])


def _verifier(policies: PolicySet, name: str) -> GpgAuthorityVerifier:
    verifier = next(policy for policy in policies.policies if policy.name == name).authorities[0].verifier
    assert isinstance(verifier, GpgAuthorityVerifier)
    return verifier


def _signature_check(verifier: GpgAuthorityVerifier, signature: bytes) -> tuple[bool, str]:
    result = verifier.verify_signature(resolved(REFERENCE, MANIFEST), SignatureMaterial("signature-1", signature))
    return result.passed, result.message


class CountingHome(gpgkeys.GnupgHome):
    made: ClassVar[list[Path]] = []

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        CountingHome.made.append(Path(self.path))


@pytest.fixture
def homes(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    CountingHome.made = []
    monkeypatch.setattr(gpgkeys, "GnupgHome", CountingHome)
    return CountingHome.made


def test_authorities_naming_one_trust_store_share_its_one_home(signers: Any, homes: list[Path]) -> None:
    armored, _ = signers
    policies = compile_policy_set(resources(_store(armored), _policy("all"), _policy("alpha-only", keys=["k-alpha"]),
                                            _policy("beta-only", keys=["k-beta"])))
    try:
        assert len(homes) == 1, "each TrustStore's keys are inspected and kept in one gpg home"
        shared = policies.trust_stores["team"].gpg_home
        assert shared is not None and Path(shared.path) == homes[0]
        assert {id(_verifier(policies, name).home) for name in ("all", "alpha-only", "beta-only")} == {id(shared)}
    finally:
        policies.close()
    assert not homes[0].exists()


def test_a_store_key_the_authority_does_not_select_is_refused_in_the_shared_home(signers: Any) -> None:
    armored, signatures = signers
    policies = compile_policy_set(resources(_store(armored), _policy("alpha-only", keys=["k-alpha"]),
                                            _policy("all")))
    try:
        selective, everything = _verifier(policies, "alpha-only"), _verifier(policies, "all")
        assert _signature_check(selective, signatures["alpha"])[0]
        passed, message = _signature_check(selective, signatures["beta"])
        assert not passed
        beta = gpgkeys.inspect_gpg_key(armored["beta"]).fingerprint
        assert f"signed by key {beta} (k-beta in TrustStore team), which this authority's keys do not select" \
            in message
        assert _signature_check(everything, signatures["beta"])[0]
    finally:
        policies.close()


def test_a_swap_reuses_unchanged_stores_and_policies(signers: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    armored, _ = signers
    first = compile_policy_set(resources(_store({"alpha": armored["alpha"]}, "one"),
                                         _store({"beta": armored["beta"]}, "two"),
                                         _policy("p-one", "one"), _policy("p-two", "two")))
    compiled_stores = record_store_compiles(monkeypatch, policy_compile)
    second = compile_policy_set(resources(_store({"alpha": armored["alpha"]}, "one"),
                                          _store({"beta": armored["beta"]}, "two"), _policy("p-one", "one"),
                                          _policy("p-two", "two", images=("registry.example/other/**",))),
                                previous=first)
    third = compile_policy_set(resources(_store({"alpha": armored["alpha"]}, "one"), _store(armored, "two"),
                                         _policy("p-one", "one"),
                                         _policy("p-two", "two", images=("registry.example/other/**",))),
                               previous=second)
    try:
        assert compiled_stores == ["two"], "only the TrustStore that changed (in the third generation) is compiled"
        assert second.trust_stores["one"] is first.trust_stores["one"] is third.trust_stores["one"]
        assert second.trust_stores["two"] is first.trust_stores["two"] is not third.trust_stores["two"]
        assert second.policies[0] is first.policies[0] is third.policies[0]
        assert second.policies[1] is not first.policies[1], "a changed policy is compiled anew"
        assert third.policies[1] is not second.policies[1], "a policy whose TrustStore changed is compiled anew"
    finally:
        for policies in (first, second, third):
            policies.close()


def test_closing_a_retired_generation_keeps_the_homes_the_new_one_uses(signers: Any) -> None:
    armored, signatures = signers
    documents = (_store({"alpha": armored["alpha"]}, "kept"), _store({"beta": armored["beta"]}, "replaced"),
                 _policy("p-kept", "kept"), _policy("p-replaced", "replaced"))
    retired = compile_policy_set(resources(*documents))
    serving = compile_policy_set(resources(*documents[:1], _store(armored, "replaced"), *documents[2:]),
                                 previous=retired)
    kept = retired.trust_stores["kept"].gpg_home
    replaced = retired.trust_stores["replaced"].gpg_home
    assert kept is not None and replaced is not None
    retired.close()
    try:
        assert Path(kept.path).is_dir(), "the new generation still verifies with this home"
        assert not Path(replaced.path).exists(), "a home no generation holds any more is removed"
        assert _signature_check(_verifier(serving, "p-kept"), signatures["alpha"])[0]
    finally:
        serving.close()
    assert not Path(kept.path).exists()


def test_a_failed_compile_releases_only_what_it_made(signers: Any) -> None:
    armored, signatures = signers
    serving = compile_policy_set(resources(_store({"alpha": armored["alpha"]}, "kept"), _policy("p-kept", "kept")))
    kept = serving.trust_stores["kept"].gpg_home
    assert kept is not None
    with pytest.raises(Exception, match="TrustStore 'missing' not found"):
        compile_policy_set(resources(_store({"alpha": armored["alpha"]}, "kept"), _store(armored, "new"),
                                     _policy("p-kept", "kept"), _policy("broken", "missing")), previous=serving)
    try:
        assert Path(kept.path).is_dir()
        assert _signature_check(_verifier(serving, "p-kept"), signatures["alpha"])[0]
    finally:
        serving.close()


def test_compiling_a_store_runs_gpg_once_per_key_and_once_to_list_them(signers: Any,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """gpg processes are what a large configuration costs to load: gpg's version is asked once per process, not
    once per TrustStore home."""
    armored, signatures = signers
    commands: list[list[str]] = []
    real_open = gnupg.GPG._open_subprocess

    def counting(self: Any, args: list[str], *rest: Any, **options: Any) -> Any:
        commands.append(list(args))
        return real_open(self, args, *rest, **options)

    monkeypatch.setattr(gnupg.GPG, "_open_subprocess", counting)
    monkeypatch.setattr(gpgkeys, "_first_gpg", None)
    policies = compile_policy_set(resources(*(_store(armored, f"store-{index}") for index in range(3)),
                                            *(_policy(f"p-{index}", f"store-{index}") for index in range(3))))
    try:
        assert sum("--list-config" in command for command in commands) == 1
        assert sum("--import" in command for command in commands) == 3 * len(armored)
        assert sum("--list-keys" in command for command in commands) == 3
        assert len(commands) == 1 + 3 * len(armored) + 3
        # Each store verifies in its own home, with the version learnt from the first.
        homes = {policies.trust_stores[f"store-{index}"].gpg_home for index in range(3)}
        assert len({home.gpg.gnupghome for home in homes if home is not None}) == 3
        assert _signature_check(_verifier(policies, "p-2"), signatures["beta"])[0]
    finally:
        policies.close()
