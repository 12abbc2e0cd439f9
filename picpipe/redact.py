"""The one place that keeps secrets out of stdout, stderr, records and the ledger.

Configuration loading registers every secret value it sees (`register`). All three sinks
(the record writer, the stderr reporter, the ledger writer) pass their text through
`redact_text`, so a secret that slipped into an exception message, a URL or a record field
is replaced by `***` whatever failed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from functools import lru_cache
from typing import Any

MASK = "***"

#: Setting names whose values are secrets (DESIGN §3), also used to drop fields on import.
SECRET_KEYS = frozenset(
    {
        "password",
        "passwd",
        "secret",
        "secret_key",
        "secret_id",
        "secretid",
        "secretkey",
        "access_key",
        "access_key_id",
        "access_key_secret",
        "accesskey",
        "accesskeyid",
        "accesskeysecret",
        "token",
        "access_token",
        "client_id",
        "client_secret",
        "api_key",
        "apikey",
        "authorization",
        "private_key",
        "passphrase",
        "key_passphrase",
    }
)

#: Shorter values are not registered: masking "abc" in every message would garble it.
MIN_SECRET_LENGTH = 4
#: Inside record values a secret is masked as a substring only from this length on; a shorter
#: one ("2026", "photo") only where a whole value equals it, so URLs and dates stay intact.
MIN_SUBSTRING_LENGTH = 8

_secrets: set[str] = set()
_pattern: re.Pattern[str] | None = None  # every secret: for messages
_data_pattern: re.Pattern[str] | None = None  # long secrets: for record values

#: scheme://user:PASSWORD@
_USERINFO = re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://[^/\s:@]*:)([^/\s@]+)@")
# Credentials that have a recognisable shape even when nobody registered them.
_SHAPES: list[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]]] = [
    (_USERINFO, r"\1" + MASK + "@"),
    (
        re.compile(r"(?i)\b(authorization|x-picgo-secret|x-api-key)(\"?\s*[:=]\s*\"?)(?:(bearer|basic|token|digest)\s+)?[^\s\"',;]+"),
        lambda m: f"{m[1]}{m[2]}{m[3] + ' ' if m[3] else ''}{MASK}",
    ),
    (
        re.compile(
            r"(?i)([?&](?:access_token|token|key|secret|password|signature|x-amz-signature|x-amz-credential"
            r"|x-oss-signature|q-signature|sign)=)[^&#\s\"']+"
        ),
        r"\1" + MASK,
    ),
]


def _alternation(values: set[str]) -> re.Pattern[str] | None:
    # Longest first, so a secret that contains another is masked whole.
    return re.compile("|".join(re.escape(v) for v in sorted(values, key=len, reverse=True))) if values else None


def register(value: object) -> None:
    """Remember a secret value so that every sink masks it from now on."""
    global _pattern, _data_pattern
    if isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH and value not in _secrets:
        _secrets.add(value)
        _pattern = _alternation(_secrets)
        _data_pattern = _alternation({v for v in _secrets if len(v) >= MIN_SUBSTRING_LENGTH})


@lru_cache(maxsize=4096)  # field names repeat in every record of a stream
def is_secret_key(name: str) -> bool:
    """True for setting or field names that hold credentials (`secret_key`, `Password`, ...)."""
    return name.lower().replace("-", "_") in SECRET_KEYS


def _mask_userinfo(match: re.Match[str]) -> str:
    return match[1] + (MASK if match[2] in _secrets else match[2]) + "@"


def mask_registered(text: str) -> str:
    """Mask every registered secret in a message."""
    return _pattern.sub(MASK, text) if _pattern is not None else text


def mask_data(value: Any) -> Any:
    """A record (or any JSON value) with registered secrets masked in its strings.

    Works on values, before JSON escaping, so a secret holding `"` or `\\` is found too.
    """
    if _pattern is None:
        return value
    if isinstance(value, str):
        if value in _secrets:
            return MASK
        if "@" in value:  # https://user:password@host: a short password is masked there too
            value = _USERINFO.sub(_mask_userinfo, value)
        return _data_pattern.sub(MASK, value) if _data_pattern is not None else value
    if isinstance(value, dict):
        return {mask_data(k): mask_data(v) for k, v in value.items()}
    if isinstance(value, list):
        return [mask_data(v) for v in value]
    return value


def redact_text(text: str) -> str:
    """Mask registered secrets and credential-shaped substrings: for messages meant for people."""
    text = mask_registered(text)
    for shape, replacement in _SHAPES:
        text = shape.sub(replacement, text)
    return text


def drop_secret_fields(obj: Any) -> Any:
    """A copy of `obj` without fields named like credentials, at any depth (for imports)."""
    if isinstance(obj, dict):
        return {k: drop_secret_fields(v) for k, v in obj.items() if not (isinstance(k, str) and is_secret_key(k))}
    if isinstance(obj, list):
        return [drop_secret_fields(v) for v in obj]
    return obj
