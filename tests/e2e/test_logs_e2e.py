"""What trustgate writes to its logs: with `--log-format json` every line is one JSON object, each admission
decision one line with its fields, and never a credential or key material; the CLI's output carries no library
noise."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.e2e import infra
from tests.e2e.conftest import admission_review, gpg_config, trustgate, webhook_process

PASSWORD = "s3cret-log-pass-7f3a"


def _post(client: Any, path: str, review: dict[str, Any]) -> dict[str, Any]:
    response = client.post(path, json=review)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()["response"]
    return answer


def test_json_logs_carry_each_decision_and_no_secret(tmp_path: Path, lookaside: infra.Lookaside,
                                                     gpg: infra.GpgKeys) -> None:
    tls = infra.make_tls(tmp_path / "tls")
    secured = infra.start_registry(tmp_path / "secured", tls=tls, credentials=("deployer", PASSWORD))
    try:
        registries_d = lookaside.write_registries_d(tmp_path / "registries.d", secured)
        for repository, key in (("gpg/signed", "release-rsa"), ("gpg/unsigned", None), ("gpg/rogue", "rogue")):
            infra.push(infra.write_oci_layout(tmp_path / repository.replace("/", "-"), seed=repository), secured,
                       repository, "v1", registries_d=registries_d, gnupg_home=gpg.home,
                       sign_by=gpg.fingerprints[key] if key else None)
        config = gpg_config(tmp_path / "config", secured, lookaside, gpg)
        signed, unsigned, rogue = (f"{secured.host}/gpg/{name}:v1" for name in ("signed", "unsigned", "rogue"))
        elsewhere = f"{secured.host}/elsewhere/app:v1"
        output = tmp_path / "serve.log"
        with webhook_process(tmp_path, config, secured, "--log-format", "json", output=output) as webhook:
            client = webhook.client
            assert _post(client, "/validate", admission_review("admit-1", signed))["allowed"] is True
            assert _post(client, "/validate", admission_review("admit-2", signed))["allowed"] is True
            assert _post(client, "/mutate", admission_review("mutate-1", signed))["allowed"] is True
            denied = _post(client, "/validate", admission_review("deny-1", signed, unsigned, rogue))
            assert denied["allowed"] is False
            assert _post(client, "/validate", admission_review("nomatch-1", elsewhere))["allowed"] is False
            assert _post(client, "/validate", admission_review("dry-1", unsigned, dryRun=True))["allowed"] is False
            assert client.post("/validate", content=b"{not json").status_code == 400
        lines = [line for line in output.read_text().splitlines() if line.strip()]
    finally:
        secured.stop()

    entries = [json.loads(line) for line in lines]  # every line, not only decisions, is one JSON object
    for entry in entries:
        assert {"time", "level", "logger", "message"} <= entry.keys(), entry
    decisions = {entry["uid"]: entry for entry in entries if entry["message"] == "admission decision"}
    assert set(decisions) == {"admit-1", "admit-2", "mutate-1", "deny-1", "nomatch-1", "dry-1"}
    for entry in decisions.values():
        assert {"uid", "webhook", "operation", "kind", "namespace", "name", "dryRun", "policyGeneration",
                "verdict", "codes", "durationMs", "cached", "images"} <= entry.keys(), entry
        assert entry["namespace"] == "default" and entry["kind"] == "Pod" and entry["operation"] == "CREATE"
        assert isinstance(entry["durationMs"], float | int) and entry["durationMs"] >= 0

    first, second = decisions["admit-1"], decisions["admit-2"]
    assert first["verdict"] == "admitted" and first["codes"] == [] and first["webhook"] == "validate"
    [image] = first["images"]
    assert image["image"] == signed and image["digest"].startswith("sha256:")
    assert image["policies"] == ["release"] and image["authorities"] == ["release/release"]
    assert image["field"] == "spec.containers[0].image"
    assert first["cached"] is False and second["cached"] is True  # the second is answered from the cache
    assert decisions["mutate-1"]["webhook"] == "mutate"

    deny = decisions["deny-1"]
    assert deny["verdict"] == "denied"
    by_image = {image["image"]: image for image in deny["images"]}
    assert by_image[signed]["verdict"] == "admitted"
    assert by_image[unsigned]["codes"] == ["TG-SIG-NONE"]
    assert by_image[rogue]["codes"] == ["TG-SIG-INVALID"]
    assert set(deny["codes"]) == {*by_image[unsigned]["codes"], *by_image[rogue]["codes"]}
    assert decisions["nomatch-1"]["codes"] == ["TG-POLICY-NO-MATCH"]
    assert decisions["dry-1"]["dryRun"] is True

    text = "\n".join(lines)
    armored = gpg.armored("release-rsa")
    key_body = max(armored.splitlines(), key=len)  # a line of the key's base64 body
    assert PASSWORD not in text and "deployer:" not in text
    assert key_body not in text
    assert "gpg returned a non-zero error code" not in text


def test_cli_denials_say_why_and_carry_no_library_noise(tmp_path: Path, registry: infra.Registry,
                                                        lookaside: infra.Lookaside, registries_d: Path,
                                                        gpg: infra.GpgKeys) -> None:
    layout = infra.write_oci_layout(tmp_path / "layout", seed="cli-rogue")
    infra.push(layout, registry, "gpg/cli-rogue", "v1", registries_d=registries_d, gnupg_home=gpg.home,
               sign_by=gpg.fingerprints["rogue"])
    config = gpg_config(tmp_path / "config", registry, lookaside, gpg)
    rogue = f"{registry.host}/gpg/cli-rogue:v1"

    verify = trustgate("verify", "--config", str(config), *registry.trustgate_flags(config), rogue)
    assert verify.returncode == 1
    assert "[TG-SIG-INVALID]" in verify.stdout and "trustgate explain IMAGE" in verify.stdout, verify.stdout
    assert "gpg returned a non-zero error code" not in verify.stderr, verify.stderr

    # No TrustPolicy matches: the denial says so, and which --no-match setting decided.
    for command in ("verify", "explain"):
        run = trustgate(command, "--config", str(config), *registry.trustgate_flags(config), "--no-match", "deny",
                        "127.0.0.1:1/elsewhere/app:v1")
        assert run.returncode == 1
        assert "TG-POLICY-NO-MATCH" in run.stdout and "(no-match: deny)" in run.stdout, run.stdout

    explained = trustgate("explain", "--config", str(config), *registry.trustgate_flags(config),
                          "--log-format", "json", rogue)
    assert explained.returncode == 1 and "(TG-SIG-INVALID)" in explained.stdout, explained.stdout
    for line in explained.stderr.splitlines():
        json.loads(line)
