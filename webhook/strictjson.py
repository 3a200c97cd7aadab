"""JSON decoding for attacker-controlled bytes: duplicate keys, NaN/Infinity and deep nesting refused.

Two parsers that disagree on duplicate keys are a classic signature bypass (the verifier reads one value,
the consumer another), so a document with a repeated key is never given a meaning.
"""

from __future__ import annotations

import json
from typing import Any

DEFAULT_MAX_DEPTH = 32


class StrictJSONError(ValueError):
    """Bytes that are not strict JSON."""


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"JSON constant {name} is not allowed")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):  # a key came twice: name the first one repeated
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise StrictJSONError(f"duplicate JSON key {key!r}")
            seen.add(key)
    return obj


# One decoder for every call: `json.loads` with hooks builds a decoder and its scanner per call, which costs
# more than decoding a whole AdmissionReview. Decoding keeps no state between calls.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)


def _depth_within(value: Any, limit: int) -> bool:
    # Only containers go on the stack: most values of a large document (an AdmissionReview) are scalars.
    stack = [(value, 0)] if isinstance(value, dict | list) else []
    while stack:
        node, depth = stack.pop()
        if depth >= limit:
            return False
        children = node.values() if isinstance(node, dict) else node
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return True


def loads(data: bytes, max_depth: int = DEFAULT_MAX_DEPTH) -> Any:
    """Decode strict UTF-8 JSON, raising StrictJSONError with the first fault found."""
    try:
        text = data.decode("utf-8")
        if text.startswith("\ufeff"):  # as json.loads refuses it
            raise StrictJSONError("not JSON: a byte order mark precedes the document")
        value = _DECODER.decode(text)
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"not UTF-8: {exc.reason}") from None
    except RecursionError:
        raise StrictJSONError(f"JSON nested deeper than {max_depth} levels") from None
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"not JSON: {exc.msg} at offset {exc.pos}") from None
    # Nesting needs an opening bracket per level: a document with fewer than `max_depth` of them (most
    # AdmissionReviews and signature payloads) cannot be too deep, and is not walked.
    if data.count(b"[") + data.count(b"{") >= max_depth and not _depth_within(value, max_depth):
        raise StrictJSONError(f"JSON nested deeper than {max_depth} levels")
    return value
