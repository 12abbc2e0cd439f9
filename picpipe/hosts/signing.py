"""Signing pieces that several hosts share: HMACs, encodings, dates, and the V4 scheme.

AWS SigV4 (s3) and Aliyun OSS V4 are the same algorithm with other names (the prefix of the
secret, the scope's terminator, the algorithm word), so `V4` holds those names and one
function signs for both. Every function is pure: a test feeds it the providers' vectors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import formatdate


def hmac_sha1(key: bytes | str, message: bytes | str) -> bytes:
    return hmac.new(_bytes(key), _bytes(message), hashlib.sha1).digest()


def hmac_sha256(key: bytes | str, message: bytes | str) -> bytes:
    return hmac.new(_bytes(key), _bytes(message), hashlib.sha256).digest()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def urlsafe_b64(data: bytes) -> str:
    """URL-safe Base64 with its padding kept (Qiniu's tokens)."""
    return base64.urlsafe_b64encode(data).decode("ascii")


def uri_encode(text: str, safe: str = "/") -> str:
    """Percent-encode all but A-Z a-z 0-9 - _ . ~ (and `safe`): the RFC 3986 unreserved set
    that AWS, OSS and COS signatures are defined with."""
    return urllib.parse.quote(text, safe="-_.~" + safe)


def http_date(when: datetime | None = None) -> str:
    """`Thu, 17 Nov 2005 18:49:58 GMT`, the Date header several signatures cover."""
    return formatdate((when or datetime.now(UTC)).timestamp(), usegmt=True)


def sha256_hex(data: bytes | str) -> str:
    return hashlib.sha256(_bytes(data)).hexdigest()


def _bytes(value: bytes | str) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else value


@dataclass(frozen=True)
class V4:
    """The names that make the V4 scheme AWS's or Aliyun's."""

    algorithm: str  # AWS4-HMAC-SHA256 | OSS4-HMAC-SHA256
    key_prefix: str  # AWS4 | aliyun_v4
    terminator: str  # aws4_request | aliyun_v4_request
    service: str  # s3 | oss

    def scope(self, when: datetime, region: str) -> str:
        return f"{when:%Y%m%d}/{region}/{self.service}/{self.terminator}"

    def signature(self, secret: str, when: datetime, region: str, canonical_request: str) -> str:
        """hex(HMAC-SHA256(signing key, string to sign)) for a canonical request."""
        string_to_sign = "\n".join([self.algorithm, f"{when:%Y%m%dT%H%M%SZ}", self.scope(when, region),
                                    sha256_hex(canonical_request)])
        key = _bytes(self.key_prefix + secret)
        for part in (f"{when:%Y%m%d}", region, self.service, self.terminator):
            key = hmac_sha256(key, part)
        return hmac.new(key, string_to_sign.encode(), hashlib.sha256).hexdigest()


AWS_V4 = V4("AWS4-HMAC-SHA256", "AWS4", "aws4_request", "s3")
OSS_V4 = V4("OSS4-HMAC-SHA256", "aliyun_v4", "aliyun_v4_request", "oss")


def canonical_request(method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str],
                      signed_line: str, payload: str) -> str:
    """METHOD, encoded path, sorted query, `name:value` headers (lower-case, sorted, trimmed), the
    signed-headers line (AWS: the names; OSS: its AdditionalHeaders, often empty), payload hash."""
    query_line = "&".join(f"{uri_encode(k, '')}={uri_encode(v, '')}" for k, v in sorted(query.items()))
    header_lines = "".join(f"{k.lower()}:{' '.join(str(v).split())}\n"
                           for k, v in sorted(headers.items(), key=lambda kv: kv[0].lower()))
    return "\n".join([method.upper(), path, query_line, header_lines, signed_line, payload])


def utc_now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def host_header(url: str) -> str:
    """The Host header as urllib3 sends it for `url` (host[:port], the port left out only when it is
    the scheme's default), for signatures that cover Host: set it explicitly and sign this value."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"  # an IPv6 literal
    default = {"http": 80, "https": 443}.get(parts.scheme)
    return host if parts.port in (None, default) else f"{host}:{parts.port}"
