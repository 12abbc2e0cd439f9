"""The `custom` host: an upload API described in the profile, for the hosts picpipe has no module for.

The profile says how to send the image (`method`, `url`, `headers`, `query`, `body`, `field`, `form`)
and where the answer puts its link (`image_url`): a dot path such as PicList's `data.links.url`, or
ShareX's syntax (`{json:files[0].url}`, `{regex:href="(.+?)"|1}`, `{header:Location}`, `{response}`).
`deletion_url` (same syntax) is worked out from the answer and kept as the record's key, so that
`pp-upload --delete` can call it; `success` and `error` turn an HTTP 200 that says "failed" into an
error record. Nothing in a profile is run as code: a path is names and indexes, a condition is one
comparison, a template is the few functions listed in FUNCTIONS.

    [profiles.lsky]
    type = "custom"
    url = "https://img.example.com/api/v1/upload"
    headers = { Authorization = "Bearer {env:LSKY_TOKEN}", Accept = "application/json" }
    field = "file"
    form = { strategy_id = "1" }
    image_url = "data.links.url"
    success = "status == true"
    error = "message"
    deletion_url = "https://img.example.com/api/v1/images/{json:data.key}"
    delete_method = "DELETE"

`python -m picpipe.hosts.custom import my.sxcu --name NAME` turns a ShareX custom uploader into such
a profile (printed as TOML), with its credentials replaced by `env:` references.
"""

from __future__ import annotations

import base64
import json
import os
import posixpath
import re
import secrets
import sys
import urllib.parse
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe import console, redact
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored, conflict, origin

if TYPE_CHECKING:
    import requests

METHODS = ("POST", "PUT")
DELETE_METHODS = ("GET", "POST", "DELETE")
BODIES = ("multipart", "form", "json", "raw")
#: Functions of the template syntax (ShareX's names), and how many arguments each takes.
NAMING: dict[str, tuple[int, int]] = {
    "key": (0, 0), "name": (0, 0), "filename": (0, 0), "mime": (0, 0), "base64": (1, 1), "random": (1, 99),
}
#: In url, headers, query and form: `{env:NAME}` too, read when the profile is (Resolver.fill).
REQUEST_FUNCTIONS: dict[str, tuple[int, int]] = {**NAMING, "env": (1, 1)}
FUNCTIONS: dict[str, tuple[int, int]] = {
    **NAMING, "response": (0, 0), "responseurl": (0, 0), "header": (1, 1), "json": (1, 2),
    "regex": (1, 3),
}
#: ShareX functions that ask the person at the screen or read what picpipe never sends.
INTERACTIVE = ("prompt", "select", "inputbox", "outputbox", "input", "output", "xml")
#: Characters of the answer shown in an error, at most.
SHOWN = 300
#: Redirects of a GET (a deletion link, the look at a taken name) followed at most, and their statuses.
MAX_REDIRECTS = 5
REDIRECTS = (301, 302, 303, 307, 308)
#: Header, form and query names whose values are credentials (besides redact.is_secret_key).
_SECRET_NAME = re.compile(r"(?i)auth|token|key|secret|pass|cookie|sign|session|credential")
#: Headers an imported .sxcu may keep in the file: they carry no credential.
PLAIN_HEADERS = {"accept", "accept-language", "content-type", "user-agent", "referer", "origin", "cache-control",
                 "x-requested-with"}


class Missing(Exception):
    """A path or template found nothing in the answer; the text names what was looked for."""


@dataclass(frozen=True)
class Call:
    """`{name:arg|arg}` in a template."""

    name: str
    args: tuple[Template, ...] = ()


Template = tuple["str | Call", ...]


def parse_template(text: str, where: str, allowed: Mapping[str, tuple[int, int]] = FUNCTIONS) -> Template:
    """ShareX's syntax: `{function}` or `{function:arg|arg}`, nested, `\\` escaping the next character;
    a mistake (an unknown function, a brace left open) is a UsageError naming `where`."""
    parts, _ = _sequence(text, 0, False, where)
    template = tuple(parts)
    _check_calls(template, where, allowed)
    return template


def _sequence(text: str, i: int, inside: bool, where: str) -> tuple[list[str | Call], int]:
    """Parts up to the end, or up to the `}` or `|` that ends an argument when `inside` a call."""
    parts: list[str | Call] = []
    literal: list[str] = []
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            literal.append(text[i + 1])
            i += 2
            continue
        if inside and char in "}|":
            break
        if char == "{":
            if literal:
                parts.append("".join(literal))
                literal = []
            call, i = _call(text, i + 1, where)
            parts.append(call)
            continue
        literal.append(char)
        i += 1
    if literal:
        parts.append("".join(literal))
    return parts, i


def _call(text: str, i: int, where: str) -> tuple[Call, int]:
    """The call whose `{` is just before `i`, and the index after its `}`."""
    colon = i
    while colon < len(text) and text[colon] not in ":}{":
        colon += 1
    name = text[i:colon].strip().lower()
    args: list[Template] = []
    if colon < len(text) and text[colon] == ":":
        at = colon
        while True:
            arg, at = _sequence(text, at + 1, True, where)
            args.append(tuple(arg))
            if at >= len(text) or text[at] == "}":
                break
        colon = at
    if colon >= len(text) or text[colon] != "}":
        raise UsageError(f"{where}: {{{name} is not closed with }}",
                         "a template calls {function} or {function:argument|argument}; write \\{ for a literal {")
    return Call(name, tuple(args)), colon + 1


def _check_calls(template: Template, where: str, allowed: Mapping[str, tuple[int, int]]) -> None:
    for part in template:
        if isinstance(part, str):
            continue
        if part.name not in allowed:
            why = " (it asks the person at the screen, or reads what picpipe never sends)" \
                if part.name in INTERACTIVE else ""
            raise UsageError(f"{where}: {{{part.name}}} is not a function picpipe knows{why}",
                             f"use {', '.join('{' + n + '}' for n in allowed)}; write \\{{ for a literal {{")
        low, high = allowed[part.name]
        if not low <= len(part.args) <= high:
            raise UsageError(f"{where}: {{{part.name}}} takes {low}" + (f" to {high}" if high > low else "")
                             + f" argument{'s' if high != 1 else ''}, not {len(part.args)}",
                             "arguments follow a ':' and are separated by '|', e.g. {regex:href=\"(.+?)\"|1}")
        for arg in part.args:
            _check_calls(arg, where, allowed)
        pattern = part.args[0] if part.name == "regex" and len(part.args) < 3 else None
        if pattern is not None and all(isinstance(p, str) for p in pattern):  # a mistake in it is said now
            _regex("".join(str(p) for p in pattern), where)


def _regex(pattern: str, where: str) -> re.Pattern[str]:
    """ShareX's .NET pattern as Python's: named groups `(?<name>` become `(?P<name>`."""
    try:
        return re.compile(re.sub(r"\(\?<(?![=!])", "(?P<", pattern))
    except re.error as exc:
        raise UsageError(f"{where}: the regular expression {pattern!r} is not valid: {exc}",
                         "ShareX's .NET patterns mostly work; write \\{ and \\| inside a template") from None


# A dot path: `data.links.url`, `files[0].url`, `data.0.url`, `['a.b']`, with or without a leading `$.`.
_STEP = re.compile(r"""\.?([^.\[\]'"]+)|\[(-?\d+)\]|\[\s*'([^']*)'\s*\]|\[\s*"([^"]*)"\s*\]""")


def parse_path(text: str, where: str) -> tuple[str | int, ...]:
    """The steps of a dot path; wildcards, filters and other JSONPath are refused."""
    rest = text.strip()
    rest = rest[1:] if rest.startswith("$") else rest
    rest = rest[1:] if rest.startswith(".") else rest
    steps: list[str | int] = []
    at = 0
    while at < len(rest):
        match = _STEP.match(rest, at)
        if match is None or match.end() == at or "*" in match[0]:
            raise UsageError(f"{where}: {text!r} is not a path picpipe can follow",
                             "write names and indexes: data.url, data.links.url, files[0].url, data.0.url")
        name, index, single, double = match.groups()
        steps.append(int(index) if index is not None else next(s for s in (name, single, double) if s is not None))
        at = match.end()
    if not steps:
        raise UsageError(f"{where}: the path is empty", "write e.g. data.url")
    return tuple(steps)


def follow(value: Any, steps: tuple[str | int, ...], shown: str) -> Any:
    """The value at the path; Missing naming `shown` when there is none."""
    for step in steps:
        if isinstance(value, list) and (isinstance(step, int) or re.fullmatch(r"-?\d+", step)):
            index = int(step)
            if not -len(value) <= index < len(value):
                raise Missing(shown)
            value = value[index]
        elif isinstance(value, dict) and str(step) in value:
            value = value[str(step)]
        else:
            raise Missing(shown)
    if value is None:
        raise Missing(shown)
    return value


def as_text(value: Any) -> str:
    """A JSON value as the text a template puts in: JSON's spelling for true, false and numbers."""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class Answer:
    """What templates read: the upload (key, name, mime) and, after it, the host's answer."""

    def __init__(self, key: str, mime: str, response: requests.Response | None = None) -> None:
        self.key, self.name, self.mime, self.response = key, posixpath.basename(key), mime, response
        self._json: Any = None
        self._parsed = False

    @property
    def text(self) -> str:
        return self.response.text if self.response is not None else ""

    def json(self) -> Any:
        """The answer as JSON; Missing when it is not JSON."""
        if not self._parsed:
            self._parsed = True
            try:
                self._json = json.loads(self.text)
            except ValueError:
                self._json = None
        if self._json is None:
            raise Missing("a JSON answer")
        return self._json


def render(template: Template, answer: Answer) -> str:
    return "".join(part if isinstance(part, str) else _evaluate(part, answer) for part in template)


def _evaluate(call: Call, answer: Answer) -> str:
    args = [render(arg, answer) for arg in call.args]
    name = call.name
    if name == "key":
        return answer.key
    if name in ("name", "filename"):
        return answer.name
    if name == "mime":
        return answer.mime
    if name == "base64":
        return base64.b64encode(args[0].encode()).decode()
    if name == "random":
        return secrets.choice(args)
    response = answer.response
    if name == "response":
        return answer.text
    if name == "responseurl":
        return response.url if response is not None else ""
    if name == "header":
        value = response.headers.get(args[0]) if response is not None else None
        if not value:
            raise Missing(f"{{header:{args[0]}}}")
        return str(value)
    if name == "json":
        shown = f"{{json:{args[-1]}}}"
        try:
            document = json.loads(args[0]) if len(args) > 1 else answer.json()
        except ValueError:
            raise Missing(shown) from None
        return as_text(follow(document, parse_path(args[-1], shown), shown))
    # regex: {regex:pattern}, {regex:pattern|group}, {regex:input|pattern|group}
    text, pattern, group = (args if len(args) == 3 else [answer.text, args[0], args[1] if len(args) > 1 else ""])
    shown = f"{{regex:{pattern}{'|' + group if group else ''}}}"
    match = _regex(pattern, shown).search(text)
    if match is None:
        raise Missing(shown)
    try:
        found = match.group(int(group) if group.isdigit() else group) if group else match.group(0)
    except IndexError:  # no such group
        raise Missing(shown) from None
    if found is None:
        raise Missing(shown)
    return found


class Condition:
    """`success`: a path that must be truthy, or `PATH == VALUE` / `PATH != VALUE`, VALUE a JSON literal
    (true, 200, "ok") or a bare word. One comparison, never code."""

    def __init__(self, text: str, where: str) -> None:
        self.text = text
        match = re.fullmatch(r"\s*(.+?)\s*(==|!=)\s*(.+?)\s*", text)
        self.operator = match[2] if match else None
        self.path = parse_path(match[1] if match else text, where)
        literal = match[3] if match else ""
        try:
            self.value: Any = json.loads(literal)
        except ValueError:
            self.value = literal.strip("'")

    def holds(self, answer: Answer) -> bool:
        try:
            value = follow(answer.json(), self.path, self.text)
        except Missing:
            value = None
        if self.operator is None:
            return bool(value)
        same = value is not None and (value == self.value and type(value) is type(self.value)
                                      or as_text(value) == as_text(self.value))
        return same if self.operator == "==" else not same


class Resolver:
    """A profile's tables (headers, form, query): `env:NAME` values and `{env:NAME}` in templates read
    from the environment now, every credential among them registered with the redactor."""

    def __init__(self, profile: str, environ: Mapping[str, str] = os.environ) -> None:
        self.profile, self.environ = profile, environ

    def variable(self, name: str, said: str) -> str:
        """The environment variable `name`, which `said` (a key, and what is written there) reads."""
        from picpipe.config import read_env

        value = read_env(name, f"[profiles.{self.profile}] {said}", self.environ)
        redact.register(value)  # a value kept out of the file is a secret by intent
        return value

    def value(self, value: Any, where: str, secret: bool, allowed: Mapping[str, tuple[int, int]]) -> Template:
        if isinstance(value, bool):
            value = "true" if value else "false"
        elif isinstance(value, (int, float)):
            value = str(value)
        if not isinstance(value, str):
            raise UsageError(f"[profiles.{self.profile}] {where} is not a string",
                             f'write it as {where.rpartition(".")[2]} = "..." in the table')
        if value.startswith("env:"):
            template: Template = (self.variable(value[4:], f"{where} = \"{value}\""),)
        else:
            template = self.fill(parse_template(value, f"[profiles.{self.profile}] {where}", allowed), where)
        if secret and len(template) == 1 and isinstance(template[0], str):  # a credential written in the file
            redact.register(template[0])
            redact.register(template[0].partition(" ")[2])  # "Bearer TOKEN": the token alone too
        return template

    def fill(self, template: Template, where: str) -> Template:
        """`{env:NAME}` replaced by the value (as a literal: never parsed as syntax), so that no template
        reads the environment later."""
        out: list[str | Call] = []
        for part in template:
            if isinstance(part, Call) and part.name == "env":
                name = "".join(p for p in part.args[0] if isinstance(p, str))
                out.append(self.variable(name, f"{where} has {{env:{name}}}"))
            elif isinstance(part, Call):
                out.append(Call(part.name, tuple(self.fill(arg, where) for arg in part.args)))
            else:
                out.append(part)
        return tuple(out)

    def table(self, value: Any, key: str, allowed: Mapping[str, tuple[int, int]]) -> dict[str, Template]:
        """A TOML table, or the JSON object text of PICPIPE_<PROFILE>_<KEY>."""
        if value in (None, ""):
            return {}
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict):
            raise UsageError(f"[profiles.{self.profile}] {key} must be a table",
                             f'write {key} = {{ Name = "value" }}, or a JSON object in the environment variable')
        return {str(name): self.value(item, f"{key}.{name}", secret_name(str(name)), allowed)
                for name, item in value.items()}


def secret_name(name: str) -> bool:
    """A header, form field or query parameter that carries a credential, by its name."""
    return redact.is_secret_key(name) or bool(_SECRET_NAME.search(name))


class CustomHost(HttpHost):
    """An HTTP upload API described by its profile (module docstring)."""

    keys = ("url", "method", "headers", "query", "body", "field", "form", "image_url", "deletion_url",
            "delete_method", "success", "error")
    #: Tables in the file; a JSON object in PICPIPE_<PROFILE>_HEADERS and the like.
    key_types: ClassVar[dict[str, tuple[tuple[type, ...], str]]] = {
        "headers": ((dict, str), 'a table such as { Authorization = "env:MY_TOKEN" }'),
        "form": ((dict, str), 'a table such as { strategy_id = "1" }'),
        "query": ((dict, str), 'a table such as { format = "json" }')}

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        name = self.name
        where = f"[profiles.{name}]"
        resolver = Resolver(name)
        self.method = str(profile.get("method") or "POST").upper()
        if self.method not in METHODS:
            raise UsageError(f"{where} method = {profile.get('method')!r}: picpipe uploads with POST or PUT",
                             'write method = "POST" (a form upload) or "PUT" (the bytes to a URL naming the file)')
        self.body = str(profile.get("body") or ("multipart" if self.method == "POST" else "raw")).lower()
        if self.body not in BODIES:
            raise UsageError(f"{where} body = {profile.get('body')!r} is no body kind",
                             f"use one of: {', '.join(BODIES)}")
        self.field = str(profile.get("field") or "file")
        url = self.setting("url")
        self.upload_url = resolver.value(url, "url", False, REQUEST_FUNCTIONS)
        self.names_key = any(isinstance(p, Call) and p.name in ("key", "name", "filename") for p in self.upload_url)
        sample = render(self.upload_url, Answer("k/sample.png", "image/png"))
        if not re.match(r"(?i)https?://[^/?#\s]+", sample):
            raise UsageError(f"{where} url = {url!r} is not an http(s) URL",
                             'write url = "https://host/api/upload" (with {key} or {name} where a PUT names the file)')
        self.upload_origin = origin(sample)
        self.headers = resolver.table(profile.get("headers"), "headers", REQUEST_FUNCTIONS)
        self.query = resolver.table(profile.get("query"), "query", REQUEST_FUNCTIONS)
        self.form = resolver.table(profile.get("form"), "form", REQUEST_FUNCTIONS)
        if self.form and self.body == "raw":
            raise UsageError(f"{where} has form fields, but body = \"raw\" sends the bytes alone",
                             'remove form, or use body = "multipart", "form" or "json"')
        self.image_url = self.response_template(profile.get("image_url"), "image_url")
        self.deletion_url = self.response_template(profile.get("deletion_url"), "deletion_url")
        self.error = self.response_template(profile.get("error"), "error")
        self.delete_method = str(profile.get("delete_method") or "GET").upper()
        if self.delete_method not in DELETE_METHODS:
            raise UsageError(f"{where} delete_method = {profile.get('delete_method')!r}",
                             f"use one of: {', '.join(DELETE_METHODS)}")
        success = profile.get("success")
        self.success = Condition(str(success), f"{where} success") if success not in (None, "") else None

    def response_template(self, value: Any, key: str) -> Template | None:
        """A dot path (no braces) is `{json:PATH}`; anything else is a template."""
        if value in (None, ""):
            return None
        text, where = str(value), f"[profiles.{self.name}] {key}"
        if "{" not in text and "\\" not in text:
            parse_path(text, where)
            return (Call("json", ((text,),)),)
        return parse_template(text, where)

    def request_headers(self, answer: Answer) -> dict[str, str]:
        return {name: render(value, answer) for name, value in self.headers.items()}

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        """One request as described; a URL naming the file is sent with If-None-Match: * (a server that
        honours it answers 412 rather than overwrite, and the bytes there are compared)."""
        answer = Answer(key, mime)
        url = self.request_url(answer)
        headers = self.request_headers(answer)
        fields = {name: render(value, answer) for name, value in self.form.items()}
        params = {name: render(value, answer) for name, value in self.query.items()} or None
        sent: dict[str, Any] = {}
        if self.body == "multipart":
            sent = {"data": fields, "files": {self.field: (answer.name, data, mime)}}
        elif self.body == "form":
            sent = {"data": {**fields, self.field: base64.b64encode(data).decode()}}
        elif self.body == "json":
            sent = {"json": {**fields, self.field: base64.b64encode(data).decode()}}
        else:
            if not any(h.lower() == "content-type" for h in headers):
                headers["Content-Type"] = mime
            sent = {"data": data}
        conditional = self.method == "PUT" and self.names_key and not overwrite
        if conditional:
            headers["If-None-Match"] = "*"
        response = self.request(self.method, url, ok=range(200, 300) if not conditional else (*range(200, 300), 412),
                                idempotent=self.method == "PUT", headers=headers, params=params, **sent)
        if response.status_code == 412:
            return self.already_there(key, self.holds(url, headers, data))
        answer.response = response
        if self.success is not None and not self.success.holds(answer):
            raise self.refused(response, answer)
        link = self.link(answer)
        return Stored(self.deletion_key(answer, link), link)

    def request_url(self, answer: Answer) -> str:
        return render(self.upload_url, for_url(answer))

    def holds(self, url: str, headers: Mapping[str, str], data: bytes) -> bool:
        """Whether the object at `url` (the one a 412 kept) is these very bytes."""
        keep = {k: v for k, v in headers.items() if k.lower() not in ("if-none-match", "content-type")}
        response = self.ask("GET", url, keep, ok=(200, 404))
        return response.status_code == 200 and response.content == data

    def ask(self, method: str, url: str, headers: Mapping[str, str], ok: Collection[int]) -> requests.Response:
        """A request with the profile's headers, which go to the upload URL's server only: its
        redirects are followed here, since requests would carry every header but Authorization on
        to another server (an X-API-Key to wherever the host redirects)."""
        for _ in range(MAX_REDIRECTS + 1):
            sent = dict(headers) if origin(url) == self.upload_origin else {}
            response = self.request(method, url, ok=(*ok, *REDIRECTS), headers=sent, redirects=False)
            location = response.headers.get("Location")
            if response.status_code not in REDIRECTS or not location or method != "GET":
                break
            url = urllib.parse.urljoin(url, location)
        if response.status_code not in ok:
            raise self.failure(response)
        return response

    def already_there(self, key: str, same: bool) -> Stored:
        if not same:
            raise conflict(self.name, key)
        answer = Answer(key, "")
        link = self.url_of(key)
        return Stored(self.deletion_key(answer, link), link, reused=True)

    def url_of(self, key: str) -> str:
        """The link of a key the answer did not give: base_url + key, else the upload URL itself."""
        return self.url(key) if self.profile.get("base_url") else self.request_url(Answer(key, ""))

    def link(self, answer: Answer) -> str:
        """The image's public URL: from the answer (image_url); else base_url + key, or the URL a PUT
        named the file with; else the answer's text (ShareX's default)."""
        if self.image_url is None and (self.profile.get("base_url") or self.names_key):
            return self.url_of(answer.key)
        template = self.image_url or (Call("response"),)
        try:
            found = render(template, for_url(answer)).strip()
        except Missing as missing:
            raise self.no_link(answer, f"has nothing at {missing} ({self.described()})") from None
        if found.startswith("/") and not found.startswith("//") and answer.response is not None:
            found = urllib.parse.urljoin(answer.response.url, found)
        if not re.match(r"(?i)https?://[^/?#\s]+\S*$", found):
            raise self.no_link(answer, f"gives {found[:80]!r} at {self.described()}, which is no http(s) URL")
        return self.served_at(found) if self.image_url is not None else found

    def described(self) -> str:
        raw = self.profile.get("image_url")
        return f"image_url = {str(raw)!r}" if raw else "{response} (no image_url set)"

    def no_link(self, answer: Answer, what: str) -> PicpipeError:
        status = answer.response.status_code if answer.response is not None else 0
        return PicpipeError("bad_answer", f"{self.name}: the host's answer (HTTP {status}) {what}: "
                            f"{excerpt(answer.text)}",
                            f"set image_url in [profiles.{self.name}] to where the answer holds the link: a path "
                            "such as data.url or files[0].url, or {json:...}, {regex:...|1}, {header:Location}",
                            status=status)

    def deletion_key(self, answer: Answer, link: str) -> str:
        """The record's key: the deletion URL when the profile has one, else the key or the link."""
        fallback = answer.key if self.names_key else link
        if self.deletion_url is None:
            return fallback
        try:
            found = render(self.deletion_url, for_url(answer)).strip()
        except Missing as missing:
            console.warn(f"{self.name}: the answer has nothing at {missing} for deletion_url: --delete cannot "
                         "remove this image")
            return fallback
        if found.startswith("/") and answer.response is not None:
            found = urllib.parse.urljoin(answer.response.url, found)
        return found

    def refused(self, response: requests.Response, answer: Answer) -> PicpipeError:
        """An answer with a success status that says it failed (`success` does not hold)."""
        error = self.failure(response)
        said = self.success.text if self.success else ""
        error.type, error.hint = "rejected", (f"the host answered, but `success = \"{said}\"` does not hold: its "
                                              "message says why")
        return error

    def parse_error(self, response: requests.Response) -> tuple[str | None, str]:
        """The profile's `error` first (a path or template); then the usual code and message fields."""
        code, message = super().parse_error(response)
        if self.error is not None:
            try:
                message = render(self.error, Answer("", "", response)) or message
            except Missing:
                pass
        if message == response.reason or not message:
            message = f"{message or 'no message'}: {excerpt(response.text)}"
        return code, message

    def failure(self, response: requests.Response) -> PicpipeError:
        error = super().failure(response)
        if error.type == "auth":
            error.hint = (f"the host refused the credentials: check headers and query in [profiles.{self.name}] "
                          "and that the environment variables they read (env:NAME) hold the current token")
        return error

    def check_key(self, key: str) -> None:
        """A key --delete can use is the deletion URL the upload's answer gave."""
        if self.deletion_url is None:
            raise PicpipeError("unsupported", f"profile {self.name!r} has no deletion_url: picpipe does not know how "
                               "to delete from this host", f"add deletion_url (and delete_method) to [profiles."
                               f"{self.name}]; records uploaded before keep no deletion URL")
        parts = urllib.parse.urlsplit(key)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            raise PicpipeError("bad_key", f"refusing {key!r}: it is not a deletion URL pp-upload recorded",
                               "give records as pp-upload or pp-mark find wrote them")

    def delete(self, key: str) -> None:
        """The recorded deletion URL, with the profile's headers only when it is on the upload URL's
        server (a record from elsewhere, or a redirect, must not carry the credentials away)."""
        self.ask(self.delete_method, key, self.request_headers(Answer("", "")), ok=(200, 201, 202, 204, 404, 410))


def for_url(answer: Answer) -> Answer:
    """The same answer with {key} and {name} percent-encoded, for templates that make URLs."""
    quoted = Answer(urllib.parse.quote(answer.key, safe="/"), answer.mime, answer.response)
    quoted.name = urllib.parse.quote(answer.name, safe="")
    quoted._json, quoted._parsed = answer._json, answer._parsed
    return quoted


def excerpt(text: str) -> str:
    """The start of an answer, on one line, secrets masked: for an error message."""
    flat = " ".join(text.split())
    return repr(redact.redact_text(flat[:SHOWN] + ("..." if len(flat) > SHOWN else ""))) if flat else "(empty)"


HOST = CustomHost


# --- ShareX .sxcu import ------------------------------------------------------------------------

#: ShareX versions up to this one wrote the old syntax: `$json:data.url$` (CustomUploaderItem.cs).
OLD_SYNTAX = (13, 7, 1)
SXCU_BODIES = {"multipartformdata": "multipart", "binary": "raw"}


def _version(text: Any) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", str(text or ""))[:3])


def _escape(text: str) -> str:
    """Literal text in the new syntax."""
    return re.sub(r"([\\{}|])", r"\\\1", text)


def migrate(text: str, regexes: list[str]) -> str:
    """ShareX's old `$function:arg$` syntax (`\\` escaping) as the new `{function:arg}` one; `$regex:N|G$`
    names the N-th pattern of RegexList, which goes into the call."""
    out: list[str] = []
    inside, syntax, i = False, "", 0
    while i < len(text):
        char = text[i]
        if char == "\\" and i + 1 < len(text):
            if inside:
                syntax += _escape(text[i + 1])
            else:
                out.append(_escape(text[i + 1]))
            i += 2
            continue
        if char == "$":
            if inside:
                out.append("{" + _old_call(syntax, regexes) + "}")
                syntax = ""
            inside = not inside
        elif inside:
            syntax += char if char not in "{}" else "\\" + char
        else:
            out.append(_escape(char))
        i += 1
    return "".join(out)


def _old_call(syntax: str, regexes: list[str]) -> str:
    match = re.fullmatch(r"(?i)regex:(\d+)(?:[|,](.*))?", syntax)
    if match is None:
        return syntax
    number = int(match[1])
    if not 1 <= number <= len(regexes):
        raise UsageError(f"$regex:{number}$ names no pattern of RegexList (it has {len(regexes)})",
                         "the .sxcu file is damaged: check its RegexList")
    return f"regex:{_escape(regexes[number - 1])}" + (f"|{match[2]}" if match[2] else "")


def toml_string(text: str) -> str:
    """A literal string ('...') where backslashes or quotes would need escaping, else a basic one."""
    if re.search(r'[\\"]', text) and not re.search(r"['\x00-\x1f\x7f]", text):
        return f"'{text}'"
    return json.dumps(text, ensure_ascii=False)  # JSON's escapes are TOML's basic-string escapes


def toml_key(text: str) -> str:
    return text if re.fullmatch(r"[A-Za-z0-9_-]+", text) else toml_string(text)


@dataclass
class Imported:
    """A profile made from a .sxcu: its TOML, and the environment variables it reads (name, what)."""

    name: str
    toml: str
    variables: list[tuple[str, str]]


def import_sxcu(path: Path, name: str | None = None) -> Imported:
    """A ShareX custom uploader (.sxcu, ShareX 12-17) as a `custom` profile. Header values, and form and
    query values named like credentials, become `env:PICPIPE_<NAME>_<TABLE>_<FIELD>` references: their
    values are never printed."""
    from picpipe.config import RESERVED_NAMES, env_name

    try:
        item = json.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path} is not a ShareX custom uploader (not JSON: {exc})",
                         "export it from ShareX: Destinations → Custom uploader settings → Export") from None
    if not isinstance(item, dict) or not (item.get("RequestURL") or item.get("RequestUrl")):
        raise UsageError(f"{path} is not a ShareX custom uploader (it has no RequestURL)",
                         "export it from ShareX: Destinations → Custom uploader settings → Export")
    kinds = str(item.get("DestinationType") or "ImageUploader")
    if not re.search(r"ImageUploader|FileUploader", kinds):
        raise UsageError(f"{path} is a {kinds} uploader, not an image or file uploader",
                         "picpipe uploads images: export the uploader of your image host")
    profile = name or re.sub(r"[^A-Za-z0-9_-]+", "-", str(item.get("Name") or path.stem)).strip("-").lower() \
        or "sharex"
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_-]*", profile) or profile in RESERVED_NAMES:
        raise UsageError(f"{profile!r} cannot be a profile name", "pass --name NAME (letters, digits, '-', '_')")
    version = _version(item.get("Version"))
    old = not version or version <= OLD_SYNTAX
    regexes = [str(r) for r in item.get("RegexList") or []]

    def syntax(value: Any) -> str:
        text = str(value or "")
        return migrate(text, regexes) if old else text

    method = str(item.get("RequestMethod") or item.get("RequestType") or "POST").upper()
    if method not in METHODS:
        raise UsageError(f"{path} sends {method}: picpipe uploads with POST or PUT", None)
    body_name = str(item.get("Body") or ("MultipartFormData" if item.get("FileFormName") or method == "POST"
                                         else "Binary"))
    body = SXCU_BODIES.get(body_name.lower())
    if body is None:
        raise UsageError(f"{path} sends its Body as {body_name}, which carries no file",
                         "image uploaders send MultipartFormData or Binary: export the image uploader")
    url = str(item.get("RequestURL") or item.get("RequestUrl"))
    query = {str(k): str(v) for k, v in (item.get("Parameters") or {}).items()}
    split = urllib.parse.urlsplit(url)
    if split.query:  # ShareX moves these into Parameters too (CheckRequestURL)
        for key, value in urllib.parse.parse_qsl(split.query, keep_blank_values=True):
            query.setdefault(key, value)
        url = urllib.parse.urlunsplit(split._replace(query=""))
    variables: list[tuple[str, str]] = []
    dropped: list[str] = []

    def table(values: Mapping[str, Any], kind: str, secret: Callable[[str], bool]) -> dict[str, str]:
        out = {}
        for key, value in values.items():
            if syntax(value).strip().lower() in ("{input}", "%input"):  # text uploaders' input: empty for a file
                dropped.append(f"{kind} {key}")
            elif secret(key):
                variable = env_name(profile, kind, re.sub(r"[^A-Za-z0-9]+", "_", key).strip("_"))
                label = {"header": "header", "query": "query parameter", "form": "form field"}[kind]
                variables.append((variable, f"the {label} {key!r} of {path.name}"))
                redact.register(str(value))
                out[key] = f"env:{variable}"
            else:
                out[key] = syntax(value)
        return out

    tables = {
        "headers": table(item.get("Headers") or {}, "header", lambda k: k.lower() not in PLAIN_HEADERS),
        "query": table(query, "query", secret_name),
        "form": table(item.get("Arguments") or {} if body == "multipart" else {}, "form", secret_name),
    }
    response_type = str(item.get("ResponseType") or "Text").lower()
    image_url = syntax(item.get("URL")) or {"redirectionurl": "{responseurl}",
                                            "locationheader": "{header:Location}"}.get(response_type, "{response}")
    settings: dict[str, str] = {"type": "custom", "method": method, "url": syntax(url), "body": body}
    if body == "multipart":
        settings["field"] = str(item.get("FileFormName") or "file")
    settings["image_url"] = image_url
    if item.get("DeletionURL"):
        settings["deletion_url"] = syntax(item["DeletionURL"])
    if item.get("ErrorMessage"):
        settings["error"] = syntax(item["ErrorMessage"])
    where = f"{path.name}"
    for key in ("url", "image_url", "deletion_url", "error"):  # what picpipe cannot run is said now
        if key in settings:
            parse_template(settings[key], f"{where}: {key}", REQUEST_FUNCTIONS if key == "url" else FUNCTIONS)
    for kind, values in tables.items():
        for key, value in values.items():
            if not value.startswith("env:"):
                parse_template(value, f"{where}: {kind}.{key}", REQUEST_FUNCTIONS)
    lines = [f"# Imported from {path.name} (ShareX {item.get('Version') or 'before 13'} custom uploader"
             f" {str(item.get('Name') or '')!r}) by python -m picpipe.hosts.custom import"]
    if variables:
        lines.append("# Set before use (the values are in the .sxcu file, and not printed here):")
        lines += [f"#   export {variable}='...'   # {what}" for variable, what in variables]
    if dropped:
        lines.append(f"# Not sent: {', '.join(dropped)} = {{input}} (ShareX sends it empty with a file)")
    if item.get("ThumbnailURL"):
        lines.append("# ThumbnailURL is not used: picpipe keeps one URL per image")
    if item.get("DeletionURL"):
        lines.append("# ShareX opens DeletionURL in a browser; pp-upload --delete sends it a GET")
    lines.append(f"[profiles.{profile}]")
    lines += [f"{toml_key(k)} = {toml_string(v)}" for k, v in settings.items()]
    for kind, values in tables.items():
        if values:
            lines += ["", f"[profiles.{profile}.{kind}]"]
            lines += [f"{toml_key(k)} = {toml_string(v)}" for k, v in values.items()]
    return Imported(profile, "\n".join(lines) + "\n", variables)


def main(argv: list[str] | None = None) -> int:
    """`python -m picpipe.hosts.custom import FILE.sxcu [--name NAME]`: the profile as TOML on stdout."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m picpipe.hosts.custom",
                                     description="Turn a ShareX custom uploader (.sxcu) into a picpipe profile: "
                                                 "the TOML goes to stdout, to append to config.toml.")
    commands = parser.add_subparsers(dest="command", required=True)
    importing = commands.add_parser("import", help="print the profile of a .sxcu file")
    importing.add_argument("file", type=Path)
    importing.add_argument("--name", help="the profile's name (default: the uploader's Name)")
    args = parser.parse_args(argv)
    console.prog = "picpipe.hosts.custom"
    try:
        imported = import_sxcu(args.file, args.name)
    except UsageError as exc:
        console.error(exc.message, exc.hint)
        return 2
    sys.stdout.write(imported.toml)
    for variable, what in imported.variables:
        console.say(f"set {variable} to {what} (its value there) before pp-upload --host {imported.name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
