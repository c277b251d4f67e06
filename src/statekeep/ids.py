"""Identifiers and names: generation and validation.

Ids are generated time-ordered (48-bit millisecond clock + 80 random bits,
Crockford base32, like ULID) so that new rows land at the right end of the
primary-key B-tree and ids sort by creation time. Callers may supply their own
ids; those are checked against a strict pattern because ids travel into file
names, URLs, Redis keys and log lines.

Keys (context keys, preference keys) are data, not identifiers: any printable
text is allowed, including quotes and SQL fragments, because every statement is
parameterised. NUL and other control characters are refused because several
consumers (terminals, C libraries, log shippers) mishandle them.
"""

from __future__ import annotations

import os
import random
import re
import time

from statekeep.errors import InvalidIdError, ValidationError

__all__ = [
    "MAX_ID_LENGTH",
    "MAX_KEY_LENGTH",
    "new_id",
    "validate_id",
    "validate_key",
    "validate_name",
]

MAX_ID_LENGTH = 128
MAX_KEY_LENGTH = 512
MAX_NAME_LENGTH = 64

_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@+-]{0,127}")
_NAME_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.:-]{0,63}")
# Every control character (C0, DEL, C1), tab and line breaks included: a key
# is a one-line label, and a newline in one is a log-injection route.
_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Lone surrogates cannot be encoded as UTF-8: no database or wire format takes them.
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


# A private generator seeded from the OS: an application calling random.seed()
# (common for reproducible agents, and done by test frameworks) must not make
# ids repeat, and a forked child must not replay its parent's sequence.
_rng = random.Random()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_rng.seed)


def new_id(prefix: str) -> str:
    """Return a fresh time-ordered id such as ``ses_019ab1c2d3e4...`` (32 hex digits)."""
    return f"{prefix}_{int(time.time() * 1000) << 80 | _rng.getrandbits(80):032x}"


def validate_id(value: object, field: str) -> str:
    """Return ``value`` if it is a well-formed id, else raise InvalidIdError."""
    if not isinstance(value, str):
        raise InvalidIdError(
            f"{field} must be a string, not {type(value).__name__}", field=field
        )
    if not _ID_RE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidIdError(
            f"{field} {shown!r} is not a valid id: use 1-{MAX_ID_LENGTH} characters "
            "from letters, digits and . _ : @ + -, starting with a letter or digit",
            field=field,
        )
    return value


def validate_name(value: object, field: str) -> str:
    """Validate a type name (context_type, task type, decision_type, ...)."""
    if not isinstance(value, str):
        raise InvalidIdError(
            f"{field} must be a string, not {type(value).__name__}", field=field
        )
    if not _NAME_RE.fullmatch(value):
        shown = value if len(value) <= 40 else value[:40] + "..."
        raise InvalidIdError(
            f"{field} {shown!r} is not a valid name: use 1-{MAX_NAME_LENGTH} characters "
            "from letters, digits and _ . : -, starting with a letter",
            field=field,
        )
    return value


def validate_key(value: object, field: str) -> str:
    """Validate a free-text key: non-empty, bounded, no control characters."""
    if not isinstance(value, str):
        raise InvalidIdError(
            f"{field} must be a string, not {type(value).__name__}", field=field
        )
    if not value:
        raise InvalidIdError(f"{field} must not be empty", field=field)
    if len(value) > MAX_KEY_LENGTH:
        raise InvalidIdError(
            f"{field} is {len(value)} characters long; the limit is {MAX_KEY_LENGTH}",
            field=field,
        )
    if _CONTROL_RE.search(value):
        raise InvalidIdError(
            f"{field} contains a control character (NUL, newline, tab, escape, ...)", field=field
        )
    if _SURROGATE_RE.search(value):
        raise InvalidIdError(f"{field} contains a lone surrogate, which is not text",
                             field=field)
    return value


def validate_text(value: object, field: str, *, max_length: int = 65536) -> str | None:
    """Validate optional free text such as a description."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(
            f"{field} must be a string or None, not {type(value).__name__}", field=field
        )
    if len(value) > max_length:
        raise ValidationError(
            f"{field} is {len(value)} characters long; the limit is {max_length}",
            field=field,
        )
    if "\x00" in value:
        raise ValidationError(f"{field} contains a NUL character", field=field)
    if _SURROGATE_RE.search(value):
        raise ValidationError(f"{field} contains a lone surrogate, which is not text",
                              field=field)
    return value
