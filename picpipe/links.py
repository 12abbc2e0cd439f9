"""Link formats for pp-link: Markdown, HTML, URL, BBCode and PicGo-style templates.

    >>> format_link({"url": "https://cdn.example.com/a b.png", "source": "shots/a b.png"}, "md")
    '![a b](https://cdn.example.com/a%20b.png)'
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from picpipe.errors import PicpipeError
from picpipe.redact import mask_data

STYLES = ("md", "html", "url", "bbcode")

_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
# RFC 3986 characters that may stay as they are in each part; everything else is %-encoded.
# `(` `)` stay raw as browsers leave them, whether or not other characters needed encoding.
_SAFE_PATH = "/:@!$&'()*+,;=~-._"
_SAFE_QUERY = _SAFE_PATH + "?"


def _quote_keeping_escapes(text: str, safe: str) -> str:
    """Percent-encode `text`, leaving `%XX` escapes that are already there alone."""
    from urllib.parse import quote  # only for URLs that need it: most arrive encoded

    out, last = [], 0
    for match in _ESCAPE.finditer(text):
        out.append(quote(text[last:match.start()], safe=safe, errors="surrogateescape"))
        out.append(match.group(0))
        last = match.end()
    # surrogateescape: "\udcff", a raw byte that was no UTF-8, goes out as %FF again
    out.append(quote(text[last:], safe=safe, errors="surrogateescape"))
    return "".join(out)


# A URL made only of these (and well-formed %XX escapes) needs no encoding: the common case.
_ALREADY_ENCODED = re.compile(r"(?:[A-Za-z0-9\-._~:/?#\[\]@!$&'()*+,;=]|%[0-9A-Fa-f]{2})*")


def encode_url(url: str) -> str:
    """A URL with spaces and non-ASCII characters encoded (IDNA host, UTF-8 %-escapes), once."""
    url = url.strip()
    if _ALREADY_ENCODED.fullmatch(url):
        return url
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    netloc = parts.netloc
    if not netloc.isascii():
        userinfo, at, hostport = netloc.rpartition("@")
        host, colon, port = hostport.rpartition(":") if hostport.rpartition(":")[2].isdigit() else (hostport, "", "")
        import idna  # IDNA 2008 with UTS 46, as browsers: faß.de is xn--fa-hia.de, not fass.de

        try:
            host = idna.encode(host, uts46=True, transitional=False).decode("ascii")
        except (idna.IDNAError, UnicodeError):
            host = _quote_keeping_escapes(host, "[]")
        netloc = _quote_keeping_escapes(userinfo, ":") + at + host + colon + port
    return urlunsplit((
        parts.scheme,
        netloc,
        _quote_keeping_escapes(parts.path, _SAFE_PATH),
        _quote_keeping_escapes(parts.query, _SAFE_QUERY),
        _quote_keeping_escapes(parts.fragment, _SAFE_QUERY),
    ))


# -- one URL identity ---------------------------------------------------------------------------
#: RFC 3986 appendix B: splits any string, never fails.
_URI = re.compile(r"(?:([^:/?#]+):)?(?://([^/?#]*))?([^?#]*)(\?[^#]*)?")
_UNRESERVED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
_SUB_DELIMS = b"!$&'()*+,;="
#: Bytes written raw in an identity's path: an escape of one of them is decoded (`%28` is `(`).
_PATH_RAW = frozenset(_UNRESERVED + _SUB_DELIMS + b":@")
#: In a query only unreserved escapes are decoded: `%26` is no `&`, `%3D` no `=`, `%2B` no `+`.
_QUERY_DECODED = frozenset(_UNRESERVED)
_QUERY_RAW = frozenset(_UNRESERVED + _SUB_DELIMS + b":@/?")


def _changes(raw: frozenset[int], decoded: frozenset[int]) -> re.Pattern[bytes]:
    """What `_canonical_escapes` changes, and only that, so that an encoded URL costs one scan:
    an escape of a byte in `decoded`, an escape in lower case, a stray `%`, a byte not in `raw`."""
    hexes = b"|".join(b"%%%02X" % byte for byte in sorted(decoded))
    allowed = b"".join(b"\\x%02x" % byte for byte in sorted(raw))
    return re.compile(rb"(?i:" + hexes + rb")|%(?:[0-9a-fA-F][a-f]|[a-f][0-9A-F])|%(?![0-9A-Fa-f]{2})"
                      rb"|[^%" + allowed + rb"]")


_PATH_TOKEN = _changes(_PATH_RAW | {ord("/")}, _PATH_RAW)
_QUERY_TOKEN = _changes(_QUERY_RAW, _QUERY_DECODED)
_DEFAULT_PORTS = {"http": "80", "https": "443", "ws": "80", "wss": "443", "ftp": "21"}
#: Already its own identity: lower-case http(s) scheme and host, no port, escapes, fragment or
#: character a path or query would encode. Most URLs a ledger holds: no work for them.
_CANONICAL = re.compile(r"https?://[a-z0-9.\-]+/[A-Za-z0-9\-._~!$&'()*+,;=:@/]*(?:\?[A-Za-z0-9\-._~!$&'()*+,;=:@/?]*)?")


def _bytes(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")  # "\udcff", a raw byte that was no UTF-8, is 0xFF again
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def _canonical_escapes(text: str, changes: re.Pattern[bytes], decoded: frozenset[int]) -> str:
    """`text` with each escape of a byte in `decoded` written as that byte, every other escape
    in upper case, and each byte that is not allowed raw (non-ASCII UTF-8, space, a stray `%`)
    as its escape: one spelling for each sequence of bytes."""
    def one(match: re.Match[bytes]) -> bytes:
        token = match.group(0)
        if len(token) == 1:
            return b"%%%02X" % token[0]
        byte = int(token[1:], 16)
        return bytes((byte,)) if byte in decoded else b"%%%02X" % byte

    return changes.sub(one, _bytes(text)).decode("ascii")


def _canonical_host(host: str) -> str:
    """Lower case, an IDNA host as punycode (`faß.de` is `xn--fa-hia.de`), escapes decoded."""
    if host.startswith("["):  # an IP literal
        return host.lower()
    if "%" in host:
        from urllib.parse import unquote

        host = unquote(host, errors="surrogateescape")
    if host.isascii():
        return host.lower()
    import idna  # IDNA 2008 with UTS 46, as browsers and encode_url

    try:
        return idna.encode(host, uts46=True, transitional=False).decode("ascii")
    except (idna.IDNAError, UnicodeError):
        return _canonical_escapes(host.lower(), _QUERY_TOKEN, _QUERY_DECODED)


def url_identity(url: str) -> str:
    """The one string every spelling of a URL's resource maps to: how pp-rewrite, pp-mark (find
    --url, check) and pp-fetch tell that two URLs name the same image. Idempotent.

    RFC 3986 §6.2.2 and §6.2.3, plus one choice: scheme and host in lower case, the host as IDNA
    (punycode), a default port (`:443` for https) and an empty one dropped, an empty path `/`,
    the fragment dropped (never sent to the server). In the path every escape of an unreserved
    character, a sub-delimiter (``!$&'()*+,;=``), `:` or `@` is decoded, since servers in practice
    (S3, CDNs, nginx) decode them to the same file: `(1).png` and `%281%29.png` are one image.
    Except `%2F`, which stays apart from `/` (another path), and `%3F`, `%23`, `%25`, which raw
    would change the URL's structure. `+` in a path is a plus, not a space: `a+b` is not `a%20b`.
    Everything else (non-ASCII as UTF-8, spaces, `[` `]`) is percent-encoded with upper-case hex.
    The query keeps its characters: only unreserved escapes are decoded (`%26` is no `&`).
    Dot segments (`/a/../b.png`, `/./`, `%2E%2E`) are resolved as a browser resolves them.
    """
    url = url.strip()
    if _CANONICAL.fullmatch(url) and "/." not in url:
        return url
    match = _URI.match(url)
    assert match is not None  # every group is optional
    scheme, authority, path, query = match.groups()
    out = ""
    if scheme is not None:
        scheme = scheme.lower()
        out = scheme + ":"
    if authority is not None:
        userinfo, at, hostport = authority.rpartition("@")
        host, colon, port = hostport.rpartition(":")
        if not colon or "]" in port or not (port.isascii() and port.isdigit() or not port):
            host, port = hostport, ""
        port = str(int(port)) if port else ""
        if port == _DEFAULT_PORTS.get(scheme or ""):
            port = ""
        out += "//" + (_canonical_escapes(userinfo, _QUERY_TOKEN, _QUERY_DECODED) + at if at else "")
        out += _canonical_host(host) + (":" + port if port else "")
        if not path and scheme in ("http", "https"):
            path = "/"
    path = _canonical_escapes(path, _PATH_TOKEN, _PATH_RAW)
    out += _remove_dot_segments(path) if authority is not None and path.startswith("/") else path
    if query is not None:
        out += "?" + _canonical_escapes(query[1:], _QUERY_TOKEN, _QUERY_DECODED)
    return out


def _remove_dot_segments(path: str) -> str:
    """RFC 3986 §5.2.4 on an absolute path: `/a/b/../c/./d.png` → `/a/c/d.png`."""
    if "/." not in path:
        return path
    segments = path.split("/")[1:]
    out: list[str] = []
    for segment in segments:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    if segments[-1] in (".", ".."):
        out.append("")
    return "/" + "/".join(out)


class UrlSet:
    """URLs compared by `url_identity`: `url in urls` for any spelling of one of them."""

    def __init__(self, urls: Iterable[str] = ()) -> None:
        self.identities = {url_identity(url) for url in urls}

    def __contains__(self, url: object) -> bool:
        return isinstance(url, str) and url_identity(url) in self.identities

    def __len__(self) -> int:
        return len(self.identities)


#: A Windows drive or UNC path (`C:\x.png`, `C:/x.png`, `\\server\share\x.png`), as Typora on Windows
#: writes an image's place and as `file_url_path` reads such a file: URL on every system.
WINDOWS_PATH = re.compile(r"[A-Za-z]:[\\/]|\\\\[^\\/]")


def elsewhere(path: str) -> bool:
    """Whether `path` is a Windows drive or UNC path on a system that is not Windows, where it names
    no file. The one place where reading a document or a file: URL differs by OS: on Windows such
    a path resolves as Windows resolves it; elsewhere it is kept as written, and named as no file."""
    return os.name != "nt" and WINDOWS_PATH.match(path) is not None


def file_url_path(url: str, windows: bool | None = None) -> str:
    r"""The path a file: URL names (RFC 8089), the one reading of pp-mark check, pp-scan and the
    local host: file:///home/me/a.png is /home/me/a.png. file:///C:/a.png (or `C|`) is the drive
    path C:/a.png, and file://server/share/a.png the UNC path \\server\share\a.png, on every
    system, as Windows programs write them: elsewhere such a path names no file (`WINDOWS_PATH`
    matches it), never a POSIX path that happens to exist. On Windows (`windows`; None: this
    system, as `os.name` says when called) the separators are backslashes (C:\a.png)."""
    from urllib.parse import unquote, urlsplit

    parts = urlsplit(url)
    path = unquote(parts.path)
    if parts.netloc and parts.netloc.lower() != "localhost":
        path = "\\\\" + parts.netloc + path.replace("/", "\\")
    elif re.match(r"/[A-Za-z][:|]/", path):
        path = f"{path[1]}:{path[3:]}"
    windows = os.name == "nt" if windows is None else windows
    return path.replace("/", "\\") if windows else path


def parse_rewrite(rule: str) -> tuple[str, str]:
    """`OLD=NEW` → (OLD, NEW); split at the first `=` followed by a scheme or a `/`."""
    match = re.match(r"^(.+?)=((?:[a-zA-Z][a-zA-Z0-9+.-]*:|/).*)$", rule) or re.match(r"^(.+?)=(.*)$", rule)
    if not match or not match.group(1):
        raise ValueError(f"a rewrite rule is OLD=NEW, not {rule!r}")
    return match.group(1), match.group(2)


def rewrite_url(url: str, rules: Sequence[tuple[str, str]]) -> str:
    """Swap the first matching URL prefix (a CDN or domain change)."""
    for old, new in rules:
        if url.startswith(old):
            return new + url[len(old):]
    return url


def file_name(record: Mapping[str, Any]) -> str:
    """The image's file name: from `source`, else `path`, else `key`, else the URL's last segment."""
    for field in ("source", "path", "key"):
        value = record.get(field)
        if isinstance(value, str) and value.strip():
            return re.split(r"[\\/]", value.rstrip("/\\"))[-1]
    url = record.get("url")
    if isinstance(url, str):
        from urllib.parse import unquote, urlsplit

        return unquote(urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1])
    return ""


def split_name(name: str) -> tuple[str, str]:
    """("photo", ".png") for "photo.png"; a dot file or no extension gives ("name", "")."""
    stem, dot, ext = name.rpartition(".")
    return (stem, "." + ext) if dot and stem else (name, "")


def _md_alt(text: str) -> str:
    return re.sub(r"([\\\[\]])", r"\\\1", " ".join(text.split()))


def _url_of(record: Mapping[str, Any], rules: Sequence[tuple[str, str]]) -> str:
    url = record.get("url")
    if not isinstance(url, str) or not url.strip():
        raise PicpipeError("no_url", "the record has no url to link to",
                           "pipe the images through pp-upload first, or add a url field")
    try:
        return encode_url(rewrite_url(url.strip(), rules))
    except UnicodeError:
        raise PicpipeError("bad_url", "the url holds characters that are not text (lone surrogates)",
                           "fix the url field of the record") from None


def format_link(
    record: Mapping[str, Any],
    style: str = "md",
    template: Template | None = None,
    rewrite: Sequence[tuple[str, str]] = (),
) -> str:
    """The link text for one record; raises PicpipeError when the record lacks what it needs."""
    if template is not None:
        return template.render(record, rewrite)
    url = _url_of(record, rewrite)
    alt = split_name(file_name(record))[0]
    if style == "md":
        return f"![{_md_alt(alt)}]({url.replace('(', '%28').replace(')', '%29')})"
    if style == "html":
        from html import escape

        return f'<img src="{escape(url)}" alt="{escape(alt)}">'
    if style == "bbcode":
        return f"[img]{url}[/img]"
    if style == "url":
        return url
    raise ValueError(f"unknown link style {style!r}")


class Template:
    """PicGo's `$url`, `$fileName`, `$extName`, plus `{field}` / `{a.b.0}` for any record field.

    `{{` and `}}` are literal braces. The URL (as `$url` or `{url}`) is always the encoded,
    rewritten one.
    """

    _TOKEN = re.compile(r"\$(url|fileName|extName)|\{\{|\}\}|\{([^{}\s]+)\}")

    def __init__(self, text: str) -> None:
        self.text = text

    def render(self, record: Mapping[str, Any], rewrite: Sequence[tuple[str, str]] = ()) -> str:
        def substitute(match: re.Match[str]) -> str:
            token = match.group(0)
            if token in ("{{", "}}"):
                return token[0]
            name = match.group(1) or match.group(2)
            if name == "url":
                return _url_of(record, rewrite)
            if name == "fileName":
                return split_name(file_name(record))[0]
            if name == "extName":
                return split_name(file_name(record))[1]
            return _field(record, name)

        return self._TOKEN.sub(substitute, self.text)


def _field(record: Mapping[str, Any], dotted: str) -> str:
    value: Any = record
    for part in dotted.split("."):
        if isinstance(value, Mapping) and part in value:
            value = value[part]
        elif isinstance(value, list) and part.isdigit() and int(part) < len(value):
            value = value[int(part)]
        else:
            raise PicpipeError(
                "missing_field", f"the template asks for {{{dotted}}}, which this record does not have",
                "fields here: " + ", ".join(sorted(record)) + " (use {{ and }} for literal braces)",
            )
    if isinstance(value, (dict, list)):  # masked before escaping, or a secret with a quote slips by
        return json.dumps(mask_data(value), ensure_ascii=False, separators=(",", ":"))
    return "" if value is None else str(value)
