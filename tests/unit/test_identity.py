"""Identity rules against containers/image's own tables (tests/conformance/simple-signing/_shared)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from webhook.policy.models import NotationAuthority, SignedIdentity
from webhook.references import InvalidReferenceError, parse_reference
from webhook.simple_signing import identity_matches

TABLE = json.loads((Path(__file__).parents[1] / "conformance/simple-signing/_shared/identity-matching.json")
                   .read_text())


def _rows() -> list[Any]:
    rows = []
    for rule in ("matchExact", "matchRepository", "matchRepoDigestOrExact"):
        rows += [pytest.param({"type": rule}, row, id=f"{rule}:{row['image']}~{row['signed']}") for row in TABLE[rule]]
    for row in TABLE["remapIdentity(prefix, signedPrefix) then matchRepoDigestOrExact"]:
        remap = {"type": "remapIdentity", "prefix": row["prefix"], "signedPrefix": row["signedPrefix"]}
        rows.append(pytest.param(remap, row, id=f"remap:{row['prefix']}:{row['image']}~{row['signed']}"))
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
        rule = SignedIdentity(type=rule_type)
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


MIRROR, ORIGIN = "mirror.example.com/copies", "origin.example.com/team"
DIGEST = "sha256:" + "a" * 64

# (rule type, admitted image, signed docker-reference, accepted?) for rules with `remap: {MIRROR -> ORIGIN}`.
# GPG (skopeo) signs `repository:tag`; cosign signs the bare repository.
REMAP_TABLE = [
    # matchRepository: any tag or digest of the remapped repository; what cosign signatures need.
    ("matchRepository", f"{MIRROR}/app:v1", f"{ORIGIN}/app", True),
    ("matchRepository", f"{MIRROR}/app@{DIGEST}", f"{ORIGIN}/app", True),
    ("matchRepository", f"{MIRROR}/app:v1", f"{ORIGIN}/app:v9", True),
    ("matchRepository", f"{MIRROR}/app:v1", f"{ORIGIN}/other", False),
    ("matchRepository", f"{MIRROR}/app:v1", f"{MIRROR}/app", False),  # the copy's own name is not the origin's
    ("matchRepository", f"{MIRROR}-evil/app:v1", f"{MIRROR}-evil/app", True),  # outside the prefix: unchanged
    ("matchRepository", f"{MIRROR}-evil/app:v1", f"{ORIGIN}/app", False),
    # matchRepoDigestOrExact (what remapIdentity applies): a tag needs the same tag signed.
    ("matchRepoDigestOrExact", f"{MIRROR}/app:v1", f"{ORIGIN}/app:v1", True),
    ("matchRepoDigestOrExact", f"{MIRROR}/app:v1", f"{ORIGIN}/app:v2", False),
    ("matchRepoDigestOrExact", f"{MIRROR}/app:v1", f"{ORIGIN}/app", False),
    ("matchRepoDigestOrExact", f"{MIRROR}/app@{DIGEST}", f"{ORIGIN}/app:v1", True),
    ("matchRepoDigestOrExact", f"{MIRROR}/app@{DIGEST}", f"{ORIGIN}/app", False),
    # matchExact: the whole remapped reference.
    ("matchExact", f"{MIRROR}/app:v1", f"{ORIGIN}/app:v1", True),
    ("matchExact", f"{MIRROR}/app@{DIGEST}", f"{ORIGIN}/app:v1", False),
    ("matchExact", f"{MIRROR}/app:v1", f"{ORIGIN}/app", False),
]


@pytest.mark.parametrize(("rule_type", "image", "signed", "accepted"), REMAP_TABLE,
                         ids=[f"{row[0]}:{row[1]}~{row[2]}" for row in REMAP_TABLE])
def test_remap_before_each_rule(rule_type: str, image: str, signed: str, accepted: bool) -> None:
    rule = SignedIdentity.model_validate({"type": rule_type, "remap": {"prefix": MIRROR, "signedPrefix": ORIGIN}})
    assert identity_matches(rule, parse_reference(image), signed) is accepted


def test_remap_identity_keeps_its_containers_image_meaning() -> None:
    """remapIdentity is matchRepoDigestOrExact after the remap, as in containers-policy.json: a repository-only
    signed name (cosign's) does not vouch for a tag; `matchRepository` with `remap` is the rule for that."""
    rule = SignedIdentity(type="remapIdentity", prefix=MIRROR, signedPrefix=ORIGIN)
    assert identity_matches(rule, parse_reference(f"{MIRROR}/app:v1"), f"{ORIGIN}/app:v1")
    assert not identity_matches(rule, parse_reference(f"{MIRROR}/app:v1"), f"{ORIGIN}/app")


@pytest.mark.parametrize(("rule", "message"), [
    ({"type": "matchRepository", "remap": {"prefix": MIRROR, "signedPrefix": MIRROR}}, "onto itself"),
    ({"type": "matchRepository", "remap": {"prefix": "copies", "signedPrefix": ORIGIN}}, "remap.prefix"),
    ({"type": "matchRepository", "remap": {"prefix": MIRROR, "signedPrefix": "team/app:v1"}}, "remap.signedPrefix"),
    ({"type": "matchRepository", "remap": {"prefix": MIRROR}}, "signedPrefix"),
    ({"type": "exactRepository", "dockerRepository": f"{ORIGIN}/app",
      "remap": {"prefix": MIRROR, "signedPrefix": ORIGIN}}, "not allowed with type exactRepository"),
    ({"type": "exactReference", "dockerReference": f"{ORIGIN}/app:v1",
      "remap": {"prefix": MIRROR, "signedPrefix": ORIGIN}}, "not allowed with type exactReference"),
    ({"type": "remapIdentity", "prefix": MIRROR, "signedPrefix": ORIGIN,
      "remap": {"prefix": MIRROR, "signedPrefix": ORIGIN}}, "not allowed with type remapIdentity"),
])
def test_remaps_that_cannot_mean_anything_are_refused(rule: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SignedIdentity.model_validate(rule)


def test_notation_authorities_take_no_identity_rule() -> None:
    """Notation signs a digest and names no repository: a copy verifies as it is, and no rule can be given."""
    with pytest.raises(ValidationError, match="signedIdentity"):
        NotationAuthority.model_validate({"trustStore": "s", "trustedIdentities": ["*"],
                                          "signedIdentity": {"type": "matchRepository"}})
