"""Public error codes: every result code trustgate can produce has one, and docs/errors.md explains exactly those.

"Can produce" is derived from the source: every code argument of `Result.ok`, `Result.fail`, `Result(...)` and
`SignatureRejected(...)` in webhook/ and controller/, so a new check with an unmapped code fails here.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from webhook.codes import PUBLIC_CODES, UNLISTED, public_code
from webhook.results import Result

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "errors.md"
PUBLIC_FORM = re.compile(r"TG-[A-Z]+(-[A-Z]+)*")
# Calls that carry a result code, and the position of the code among their arguments.
CODE_ARGUMENT = {"ok": 1, "fail": 1, "Result": 2, "SignatureRejected": 0}
# Code arguments that only pass on a code produced (and scanned) elsewhere.
PASSED_ON = {"rejected.code"}


def _callee(call: ast.Call) -> str | None:
    func = call.func
    if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) and func.value.id == "Result":
        return func.attr
    if isinstance(func, ast.Name) and func.id in ("Result", "SignatureRejected"):
        return func.id
    return None


def _strings(node: ast.expr, assignments: dict[str, list[ast.expr]]) -> list[str]:
    """The string constants an expression can evaluate to; raises for a form this scan cannot follow."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return [node.value]
    if isinstance(node, ast.IfExp):
        return _strings(node.body, assignments) + _strings(node.orelse, assignments)
    if isinstance(node, ast.Name) and node.id in assignments:
        return [code for value in assignments[node.id] for code in _strings(value, assignments)]
    if ast.unparse(node) in PASSED_ON:
        return []
    raise AssertionError(f"cannot tell which codes {ast.unparse(node)!r} produces (line {node.lineno}); "
                         "pass a literal code")


def codes_in(source: str, filename: str) -> set[str]:
    tree = ast.parse(source, filename)
    assignments: dict[str, list[ast.expr]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign):
            for target in node.targets:
                if isinstance(target, ast.Name):
                    assignments.setdefault(target.id, []).append(node.value)
    found: set[str] = set()
    for node in ast.walk(tree):
        callee = _callee(node) if isinstance(node, ast.Call) else None
        if callee is None:
            continue
        assert isinstance(node, ast.Call)
        position = CODE_ARGUMENT[callee]
        keyword = next((kw.value for kw in node.keywords if kw.arg == "code"), None)
        argument = node.args[position] if len(node.args) > position else keyword
        assert argument is not None, f"{filename}:{node.lineno}: a result without a code"
        try:
            found.update(_strings(argument, assignments))
        except AssertionError as exc:
            raise AssertionError(f"{filename}: {exc}") from None
    return found


def produced_codes() -> set[str]:
    return {code for package in ("webhook", "controller") for path in sorted((ROOT / package).rglob("*.py"))
            for code in codes_in(path.read_text(), str(path.relative_to(ROOT)))}


def documented() -> dict[str, str]:
    """Each public code of the page (a `### TG-...` heading) and the text under it."""
    sections = re.split(r"^### ", PAGE.read_text(), flags=re.MULTILINE)[1:]
    return {section.split("\n", 1)[0].strip(): section.split("\n", 1)[1] for section in sections}


def test_every_result_code_in_the_code_base_has_a_public_code() -> None:
    produced = produced_codes()
    assert len(produced) > 30  # the scan sees the checks at all
    unmapped = sorted(produced - PUBLIC_CODES.keys())
    assert not unmapped, f"add these to webhook/codes.py PUBLIC_CODES and docs/errors.md: {unmapped}"


def test_the_table_maps_no_code_that_is_never_produced() -> None:
    webhook_answers = {code for code in PUBLIC_CODES if code.startswith("admission.")}
    assert sorted(PUBLIC_CODES.keys() - produced_codes() - webhook_answers) == []


def test_the_scan_sees_a_new_unmapped_code() -> None:
    source = 'def check():\n    return Result.fail("subject", "brand.new_check", "message")\n'
    assert codes_in(source, "new.py") == {"brand.new_check"}
    conditional = ('def check(enforced):\n    code = "a.x" if enforced else "a.y"\n'
                   '    return Result(s, False, code, m)\n')
    assert codes_in(conditional, "new.py") == {"a.x", "a.y"}


def test_the_scan_refuses_a_code_it_cannot_follow() -> None:
    source = 'def check(code):\n    return Result.fail("subject", compute(code), "message")\n'
    with pytest.raises(AssertionError, match="cannot tell"):
        codes_in(source, "new.py")


def test_the_page_lists_exactly_the_public_codes() -> None:
    page = documented()
    assert set(page) == {*PUBLIC_CODES.values(), UNLISTED}
    assert all(PUBLIC_FORM.fullmatch(code) for code in page)


def test_each_page_entry_names_its_internal_codes() -> None:
    page = documented()
    for internal, public in PUBLIC_CODES.items():
        assert f"`{internal}`" in page[public].split("\n", 1)[0], f"{public} must name internal code {internal}"


def test_published_codes_keep_their_meaning() -> None:
    """A published pairing never changes: these are the codes users were first told about."""
    assert {internal: PUBLIC_CODES[internal] for internal in (
        "signature.none", "payload.identity", "payload.digest", "registry", "deadline", "policy.no_match",
        "key.revoked", "gpg.signature")} == {
        "signature.none": "TG-SIG-NONE", "payload.identity": "TG-IDENTITY-MISMATCH",
        "payload.digest": "TG-DIGEST-MISMATCH", "registry": "TG-REGISTRY-UNREACHABLE", "deadline": "TG-DEADLINE",
        "policy.no_match": "TG-POLICY-NO-MATCH", "key.revoked": "TG-KEY-REVOKED", "gpg.signature": "TG-SIG-INVALID"}


def test_reasons_carry_the_public_code_beside_the_message() -> None:
    leaf = Result.fail("authority a (gpg)", "signature.none", "no signatures found")
    tree = Result.fail("image", "image.rejected", "0 of 1 passed", children=(
        Result.fail("policy p", "unsatisfied", "0 of 1 authorities passed", children=(leaf,)),))
    assert tree.failure_reasons(include_subject=False) == [
        "[TG-SIG-NONE] policy p: authority a (gpg): no signatures found"]
    assert tree.failure_codes() == ["TG-SIG-NONE"]
    assert tree.to_dict()["publicCode"] == "TG-IMAGE-REJECTED"
    assert public_code("plugin.own_code") == UNLISTED
