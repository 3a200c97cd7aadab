"""Identity rules against containers/image's own tables (tests/conformance/simple-signing/_shared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from webhook.policy.models import SignedIdentity
from webhook.references import InvalidReferenceError, parse_reference
from webhook.simple_signing import identity_matches

TABLE = json.loads((Path(__file__).parents[1] / "conformance/simple-signing/_shared/identity-matching.json")
                   .read_text())


def _rows() -> list[Any]:
    rows = []
    for rule in ("matchExact", "matchRepository", "matchRepoDigestOrExact"):
        rows += [pytest.param({"type": rule}, row, id=f"{rule}:{row['image']}~{row['signed']}") for row in TABLE[rule]]
    for row in TABLE["remapIdentity(prefix, signedPrefix) then matchRepoDigestOrExact"]:
        rule = {"type": "remapIdentity", "prefix": row["prefix"], "signedPrefix": row["signedPrefix"]}
        rows.append(pytest.param(rule, row, id=f"remap:{row['prefix']}:{row['image']}~{row['signed']}"))
    return rows


def _pinned_tag_deviation(rule: dict[str, str], row: dict[str, Any]) -> bool:
    """trustgate's one deliberate deviation from the table: `name:tag@digest` is the image `name:tag` pinned to
    `digest`, so a signature for `name:tag` vouches for it (the digest is checked against the signed manifest
    digest separately). containers/image compares the whole string and refuses."""
    image, signed = parse_reference(row["image"]), row["signed"]
    return (rule["type"] in ("matchExact", "matchRepoDigestOrExact") and image.tag is not None
            and image.digest is not None and signed == row["image"].partition("@")[0])


@pytest.mark.parametrize(("rule", "row"), _rows())
def test_identity_table(rule: dict[str, str], row: dict[str, Any]) -> None:
    try:
        identity = SignedIdentity.model_validate(rule)
    except ValidationError:
        # trustgate refuses prefixes that could never match (e.g. "busybox") as a configuration error.
        assert row["match"] is False
        return
    try:
        intended = parse_reference(row["image"])
    except InvalidReferenceError:
        assert row["match"] is False
        return
    expected = True if _pinned_tag_deviation(rule, row) else row["match"]
    assert identity_matches(identity, intended, row["signed"]) is expected


def test_pinned_tag_still_needs_the_same_tag_and_repository() -> None:
    pinned = parse_reference("registry.example.com/app:v1@sha256:" + "0" * 64)
    for rule_type in ("matchExact", "matchRepoDigestOrExact"):
        rule = SignedIdentity(type=rule_type)  # type: ignore[arg-type]
        assert identity_matches(rule, pinned, "registry.example.com/app:v1")
        assert identity_matches(rule, pinned, str(pinned))
        assert not identity_matches(rule, pinned, "registry.example.com/app:v2")
        assert not identity_matches(rule, pinned, "registry.example.com/other:v1")
        assert not identity_matches(rule, pinned, "registry.example.com/app")


@pytest.mark.parametrize("row", TABLE["remapIdentity prefix matching (does the image reference fall under prefix?)"])
def test_remap_prefix_coverage(row: dict[str, Any]) -> None:
    signed_prefix = "rewritten.example.com/x"
    rule = SignedIdentity(type="remapIdentity", prefix=row["prefix"], signedPrefix=signed_prefix)
    ref = parse_reference(row["ref"]).with_default_tag()
    rewritten = signed_prefix + str(ref)[len(row["prefix"]):]
    assert identity_matches(rule, ref, rewritten) is row["match"]


def test_exact_rules() -> None:
    ref = parse_reference("registry.example.com/app:v1")
    exact = SignedIdentity(type="exactReference", dockerReference="registry.example.com/signed:v1")
    assert identity_matches(exact, ref, "registry.example.com/signed:v1")
    assert not identity_matches(exact, ref, "registry.example.com/app:v1")
    repo = SignedIdentity(type="exactRepository", dockerRepository="registry.example.com/signed")
    assert identity_matches(repo, ref, "registry.example.com/signed:any")
    assert not identity_matches(repo, ref, "registry.example.com/app:v1")


@pytest.mark.parametrize("rule", [
    {"type": "exactReference"},
    {"type": "exactReference", "dockerReference": "registry.example.com/app"},
    {"type": "exactRepository", "dockerRepository": "registry.example.com/app:v1"},
    {"type": "matchExact", "dockerReference": "x.com/a:b"},
    {"type": "remapIdentity", "prefix": "busybox", "signedPrefix": "example.com"},
    {"type": "remapIdentity", "prefix": "example.com"},
    {"type": "matchEverything"},
])
def test_invalid_rules_are_refused(rule: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        SignedIdentity.model_validate(rule)
