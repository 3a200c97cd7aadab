"""Notary Project trusted identities: `"*"` or `"x509.subject: <DN>"`, validated and matched as notation does.

A DN is written as in RFC 4514. It must name C, ST and O, and it matches a signing certificate whose subject
holds every attribute it names with the same value (the subject may have more). Two identities overlap, a
configuration error, when one's attributes are a subset of the other's.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from cryptography import x509

WILDCARD = "*"
X509_SUBJECT = "x509.subject"
MANDATORY_ATTRIBUTES = ("C", "ST", "O")
_HEX_PAIR = re.compile(r"[0-9A-Fa-f]{2}")


def parse_dn(text: str) -> dict[str, str]:
    """RFC 4514 `TYPE=value,...` into {TYPE: value}; escapes resolved, multi-valued RDNs flattened."""
    attributes: dict[str, str] = {}
    for part in _split_unescaped(text.strip(), {",", "+"}):
        kind, separator, raw_value = part.partition("=")
        kind = kind.strip().upper()
        if not separator or not kind:
            raise ValueError(f"distinguished name (DN) {text!r}: {part.strip()!r} is not TYPE=value")
        if kind in attributes:
            raise ValueError(f"distinguished name (DN) {text!r} names {kind} more than once")
        attributes[kind] = _unescape(raw_value.strip(), text)
    if not attributes:
        raise ValueError(f"distinguished name (DN) {text!r} is empty")
    return attributes


def _split_unescaped(text: str, separators: set[str]) -> list[str]:
    parts, current, index = [], "", 0
    while index < len(text):
        char = text[index]
        if char == "\\" and index + 1 < len(text):
            current += text[index:index + 2]
            index += 2
            continue
        if char in separators:
            parts.append(current)
            current = ""
        else:
            current += char
        index += 1
    parts.append(current)
    return parts


def _unescape(value: str, text: str) -> str:
    result, index = bytearray(), 0
    while index < len(value):
        char = value[index]
        if char != "\\":
            result += char.encode()
            index += 1
            continue
        pair = value[index + 1:index + 3]
        if _HEX_PAIR.fullmatch(pair):
            result.append(int(pair, 16))
            index += 3
        elif index + 1 < len(value):
            result += value[index + 1].encode()
            index += 2
        else:
            raise ValueError(f"distinguished name (DN) {text!r} ends with a lone backslash")
    try:
        return result.decode()
    except UnicodeDecodeError:
        raise ValueError(f"distinguished name (DN) {text!r} has escapes that are not UTF-8") from None


def subject_attributes(certificate: x509.Certificate) -> dict[str, str]:
    """The certificate subject as {TYPE: value} with RFC 4514 type names (dotted OIDs for the rest)."""
    found: dict[str, str] = {}
    for attribute in certificate.subject:
        value = attribute.value if isinstance(attribute.value, str) else attribute.value.hex()
        found[attribute.rfc4514_attribute_name.upper()] = value
    return found


def _subset(smaller: Mapping[str, str], larger: Mapping[str, str]) -> bool:
    return all(larger.get(kind) == value for kind, value in smaller.items())


def parse_identity(identity: str) -> dict[str, str] | None:
    """None for the wildcard, else the DN attributes; ValueError with notation's wording when malformed."""
    if identity.strip() == "":
        raise ValueError("has an empty trusted identity")
    if identity == WILDCARD:
        return None
    prefix, separator, value = identity.partition(":")
    if not separator:
        raise ValueError(f"has trusted identity {identity!r} missing separator")
    if prefix.strip() != X509_SUBJECT:
        raise ValueError(f"has trusted identity {identity!r} with unsupported identity prefix {prefix.strip()!r} "
                         f"(only {X509_SUBJECT} is supported)")
    attributes = parse_dn(value)
    for mandatory in MANDATORY_ATTRIBUTES:
        if mandatory not in attributes:
            raise ValueError(f"distinguished name (DN) {value!r} has no mandatory RDN attribute for {mandatory!r}")
    return attributes


def validate_trusted_identities(identities: Sequence[str]) -> list[dict[str, str]] | None:
    """Check a trustedIdentities list; None means any identity (`"*"`), else the DNs to match."""
    if not identities:
        raise ValueError("trustedIdentities must not be empty")
    if WILDCARD in identities and len(identities) > 1:
        raise ValueError("uses a wildcard trusted identity '*', a wildcard identity cannot be used in "
                         "conjunction with other values")
    parsed = [parse_identity(identity) for identity in identities]
    names = [attributes for attributes in parsed if attributes is not None]
    if len(names) != len(parsed):
        return None
    for index, first in enumerate(names):
        for second in names[index + 1:]:
            if _subset(first, second) or _subset(second, first):
                raise ValueError("has overlapping x509 trustedIdentities")
    return names


def identity_matches(trusted: Sequence[Mapping[str, str]] | None, certificate: x509.Certificate) -> bool:
    if trusted is None:
        return True
    subject = subject_attributes(certificate)
    return any(_subset(attributes, subject) for attributes in trusted)
