from __future__ import annotations

import pytest

from webhook.policy.matching import ImageGlob
from webhook.results import Result, all_of, any_of, at_least


@pytest.mark.parametrize(("pattern", "repository", "matches"), [
    ("registry.example.com/team/**", "registry.example.com/team/app", True),
    ("registry.example.com/team/**", "registry.example.com/team/a/b/c", True),
    ("registry.example.com/team/**", "registry.example.com/team", False),
    ("registry.example.com/team/**", "registry.example.com/teamx/app", False),
    ("trusted.example.com/**", "attacker.com/x.trusted.example.com/app", False),
    ("trusted.example.com/**", "trusted.example.com.attacker.com/app", False),
    ("registry.example.com/*/app", "registry.example.com/team/app", True),
    ("registry.example.com/*/app", "registry.example.com/a/b/app", False),
    ("registry.example.com/team/*", "registry.example.com/team/a/b", False),
    ("*.example.com/app", "eu.example.com/app", True),
    ("*.example.com/app", "a/b.example.com/app", False),
    ("127.0.0.1:5000/acc/**", "127.0.0.1:5000/acc/app", True),
    ("127.0.0.1:5000/acc/**", "127.0.0.1:5001/acc/app", False),
    ("nginx", "docker.io/library/nginx", True),
    ("nginx", "docker.io/library/nginx2", False),
    ("team/*", "docker.io/team/app", True),
    ("**", "anything.example.com/at/all", True),
    ("registry.example.com/app", "registry.example.com/app", True),
    ("registry.example.com/a.p", "registry.example.com/axp", False),
])
def test_globs_are_anchored(pattern: str, repository: str, matches: bool) -> None:
    assert ImageGlob.compile(pattern).matches(repository) is matches


def test_empty_all_of_is_refused() -> None:
    result = all_of("policy p", [], what="authorities")
    assert not result.passed
    assert result.code == "empty"


def test_at_least_counts_and_keeps_every_reason() -> None:
    ok = Result.ok("a", "ok", "fine")
    bad = Result.fail("b", "bad", "broken")
    assert at_least("p", 1, [ok, bad], what="authorities").passed
    failed = at_least("p", 2, [ok, bad], what="authorities")
    assert not failed.passed
    assert failed.failure_reasons() == ["[TG-UNLISTED] p: b: broken"]
    assert not at_least("p", 0, [ok], what="authorities").passed
    assert any_of("x", [bad, ok], what="signatures").passed
    assert [line.strip() for line in failed.explain()][1:] == ["a: fine", "b: broken"]
