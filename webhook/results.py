"""Typed results that carry their reasons, and the combinators that build verdict trees from them.

Every check in trustgate returns a `Result`: passed or not, a stable machine-readable `code`, a sentence for
people, and the child results it was decided from. The deny message, `--output json` and the logs are all
renderings of the same tree, so they can never disagree. Each reason names the public code (webhook/codes.py)
a user looks up in docs/errors.md.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from webhook.codes import public_code


@dataclass(frozen=True, slots=True)
class Result:
    subject: str
    passed: bool
    code: str
    message: str
    children: tuple[Result, ...] = ()
    # Distinct signer identity (key fingerprint, certificate) behind a passing signature result: the unit a
    # quorum counts.
    signer: str | None = None
    details: dict[str, str] = field(default_factory=dict)
    # Every identifier a TrustStore's revokedKeys may name for this signer (e.g. primary and signing subkey
    # fingerprints); the signer alone when empty.
    signer_ids: tuple[str, ...] = ()
    # When the signature says it was made (seconds since the epoch), from signed data only.
    signed_at: int | None = None

    @classmethod
    def ok(cls, subject: str, code: str, message: str, **kwargs: object) -> Result:
        return cls(subject, True, code, message, **kwargs)  # type: ignore[arg-type]

    @classmethod
    def fail(cls, subject: str, code: str, message: str, **kwargs: object) -> Result:
        return cls(subject, False, code, message, **kwargs)  # type: ignore[arg-type]

    @property
    def public_code(self) -> str:
        return public_code(self.code)

    def walk(self, depth: int = 0) -> Iterator[tuple[int, Result]]:
        yield depth, self
        for child in self.children:
            yield from child.walk(depth + 1)

    def explain(self) -> list[str]:
        """Indented lines, one per node: the full explanation."""
        return [f"{'  ' * depth}{node.subject}: {node.message}" for depth, node in self.walk()]

    def failure_reasons(self, *, include_subject: bool = True) -> list[str]:
        """The leaves of every failing branch, each prefixed with its public code and the path of subjects that
        led to it."""
        if self.passed:
            return []
        if include_subject:
            return [f"[{leaf.public_code}] {': '.join(path)}: {leaf.message}" for path, leaf in _failing_leaves(self)]
        if not self.children:
            return [f"[{self.public_code}] {self.message}"]
        return [reason for child in self.children for reason in child.failure_reasons()]

    def failure_codes(self) -> list[str]:
        """The public codes of the leaves of every failing branch, each once, in tree order."""
        if self.passed:
            return []
        return list(dict.fromkeys(leaf.public_code for _, leaf in _failing_leaves(self)))

    def to_dict(self) -> dict[str, object]:
        data: dict[str, object] = {
            "subject": self.subject,
            "passed": self.passed,
            "code": self.code,
            "publicCode": self.public_code,
            "message": self.message,
        }
        if self.signer is not None:
            data["signer"] = self.signer
        if self.details:
            data["details"] = dict(self.details)
        if self.children:
            data["children"] = [child.to_dict() for child in self.children]
        return data


def _failing_leaves(node: Result, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Result]]:
    """Each leaf of a failing branch, with the subjects that lead to it (its own last)."""
    here = (*path, node.subject)
    failing_children = [child for child in node.children if not child.passed]
    if not failing_children:
        yield here, node
        return
    for child in failing_children:
        yield from _failing_leaves(child, here)


def at_least(subject: str, required: int, children: Sequence[Result], *, what: str) -> Result:
    """Pass when at least `required` children pass. Zero children or `required < 1` never pass."""
    children = tuple(children)
    if not children:
        return Result.fail(subject, "empty", f"no {what} to evaluate, refusing to pass vacuously")
    if required < 1:
        return Result.fail(subject, "invalid_threshold", f"threshold {required} is below 1")
    passed = sum(1 for child in children if child.passed)
    if passed >= required:
        return Result.ok(subject, "satisfied", f"{passed} of {len(children)} {what} passed, {required} required",
                         children=children)
    return Result.fail(subject, "unsatisfied", f"{passed} of {len(children)} {what} passed, {required} required",
                       children=children)


def all_of(subject: str, children: Sequence[Result], *, what: str) -> Result:
    """Pass when every child passes; an empty set is a failure, never a vacuous success."""
    return at_least(subject, len(children), children, what=what)


def any_of(subject: str, children: Sequence[Result], *, what: str) -> Result:
    return at_least(subject, 1, children, what=what)
