"""Strict JSON decoding of attacker-controlled bytes: each refusal, and what must still be accepted."""

from __future__ import annotations

import pytest

from webhook import strictjson
from webhook.strictjson import StrictJSONError


def nested(levels: int, inner: bytes = b"1") -> bytes:
    return b"[" * levels + inner + b"]" * levels


def test_nesting_up_to_the_limit_is_accepted_and_one_level_more_is_refused() -> None:
    assert strictjson.loads(nested(5), max_depth=5) == [[[[[1]]]]]
    with pytest.raises(StrictJSONError, match="nested deeper than 5 levels"):
        strictjson.loads(nested(6), max_depth=5)


def test_objects_count_as_levels_as_arrays_do() -> None:
    with pytest.raises(StrictJSONError, match="nested deeper than 3 levels"):
        strictjson.loads(b'{"a": [{"b": {"c": 1}}]}', max_depth=3)


def test_brackets_inside_strings_do_not_make_a_document_deep() -> None:
    document = b'{"a": "' + b"[{" * 50 + b'"}'
    assert strictjson.loads(document, max_depth=3) == {"a": "[{" * 50}


def test_nesting_deeper_than_the_interpreter_can_follow_is_refused_cleanly() -> None:
    with pytest.raises(StrictJSONError, match="nested deeper than"):
        strictjson.loads(nested(200_000))


def test_a_repeated_key_is_refused_at_any_depth_and_named() -> None:
    with pytest.raises(StrictJSONError, match="duplicate JSON key 'b'"):
        strictjson.loads(b'{"a": {"b": 1, "c": 2, "b": 3}}')


@pytest.mark.parametrize(("data", "message"), [
    (b'{"a": NaN}', "JSON constant NaN is not allowed"),
    (b"[Infinity]", "JSON constant Infinity is not allowed"),
    (b'{"a": "\xff"}', "not UTF-8"),
    (b'{"a": 1', "not JSON"),
    (b'\xef\xbb\xbf{"a": 1}', "not JSON: a byte order mark"),
])
def test_constants_bad_utf8_and_broken_json_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(StrictJSONError, match=message):
        strictjson.loads(data)


def test_refusals_hold_on_every_call_of_the_shared_decoder() -> None:
    assert strictjson.loads(b'{"a": 1, "b": [2]}') == {"a": 1, "b": [2]}
    for _ in range(2):
        with pytest.raises(StrictJSONError, match="duplicate JSON key 'a'"):
            strictjson.loads(b'{"a": 1, "a": 2}')
        with pytest.raises(StrictJSONError, match="JSON constant NaN"):
            strictjson.loads(b"[NaN]")
