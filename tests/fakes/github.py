"""A fake GitHub REST API: the contents endpoints, commit listing and repository lookup.

Written from docs.github.com/en/rest/repos/contents (hosts.md §6), not from picpipe's code:
- `Authorization: Bearer <token>` (or `token <token>`) against the server's tokens, each with an
  optional expiry: unknown, missing or expired → 401 {"message": "Bad credentials"};
- a repository the token cannot see → 404 {"message": "Not Found"};
- PUT without `sha` on an existing file → 422 `"sha" wasn't supplied`; a `sha` that is not the
  file's → 409; a write that starts while another one is committing → 409 (GitHub's warning
  against parallel writes to one branch);
- blob shas computed as git does (SHA1 of "blob <length>\\0" + bytes), commit shas made up.

    with serving(FakeGitHub, GitHubServer) as server:
        server.objects["path/in/repo.png"], server.commits, server.races ...
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import threading
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from fakehost import FakeHandler, FakeServer

TOKEN = "ghp_fakeToken0123456789abcdefABCDEF"
EXPIRED_TOKEN = "github_pat_expired0123456789abcdef"
REPO = "octo/pics"
BRANCH = "main"


def blob_sha(data: bytes) -> str:
    """git's object id of a file: https://git-scm.com/book/en/v2/Git-Internals-Git-Objects."""
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


class GitHubServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.tokens: dict[str, float | None] = {TOKEN: None, EXPIRED_TOKEN: time.time() - 3600}  # token → expiry
        self.repo, self.branch = REPO, BRANCH
        self.commits: list[tuple[str, str]] = []  # (commit sha, path), oldest first
        self.writing = 0
        self.races = 0  # writes refused because another one was committing
        self.hold = 0.02  # seconds a commit takes: long enough for parallel writes to overlap


class FakeGitHub(FakeHandler):
    server: GitHubServer
    prefix = ""  # the API's path below the endpoint (Gitee: /api/v5)

    # -- what Gitee's fake does differently ---------------------------------------------------

    def token(self, query: dict[str, str], fields: dict[str, Any]) -> str | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        return value if scheme.lower() in ("bearer", "token") and value else None

    def fields(self, query: dict[str, str]) -> dict[str, Any]:
        """The request's parameters: the query of a GET, else the JSON body."""
        if self.command == "GET":
            return dict(query)
        try:
            body = json.loads(self.body() or b"{}")
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}

    def error(self, status: int, message: str) -> None:
        self.json(status, {"message": message, "documentation_url": "https://docs.github.com/rest",
                           "status": str(status)})

    def unauthorized(self, expired: bool) -> None:
        self.error(401, "Bad credentials")

    def missing_file(self) -> None:
        self.error(404, "Not Found")

    def taken(self) -> None:
        self.error(422, "Invalid request.\n\n\"sha\" wasn't supplied.")

    def put_file(self, path: str, fields: dict[str, Any]) -> None:
        """PUT: creates, or updates when `sha` names the current file."""
        self.write(path, fields, update=bool(fields.get("sha")))

    # -- shared ----------------------------------------------------------------------------------

    def json(self, status: int, body: Any) -> None:
        headers = {"X-RateLimit-Limit": "5000", "X-RateLimit-Remaining": "4999",
                   "X-RateLimit-Reset": str(int(time.time()) + 3600), "X-GitHub-Request-Id": "FAKE:1"}
        self.reply(status, json.dumps(body, ensure_ascii=False), headers)

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query))
        fields = self.fields(query)
        token = self.token(query, fields)
        if token not in self.server.tokens:
            return self.unauthorized(False)
        expiry = self.server.tokens[token]
        if expiry is not None and expiry < time.time():
            return self.unauthorized(True)
        path = urllib.parse.unquote(url.path)
        if not path.startswith(self.prefix + "/repos/"):
            return self.error(404, "Not Found")
        owner, _, rest = path[len(self.prefix) + len("/repos/"):].partition("/")
        repo, _, rest = rest.partition("/")
        if f"{owner}/{repo}" != self.server.repo:
            return self.error(404, "Not Found")  # GitHub does not say whether it exists
        if rest == "" and self.command == "GET":
            return self.json(200, {"full_name": self.server.repo, "default_branch": self.server.branch})
        if rest == "commits" and self.command == "GET":
            return self.list_commits(fields)
        if not rest.startswith("contents/"):
            return self.error(404, "Not Found")
        file = rest[len("contents/"):]
        branch = fields.get("ref" if self.command == "GET" else "branch") or self.server.branch
        if branch != self.server.branch:
            return self.error(404, f"No commit found for the ref {branch}")
        if self.command == "GET":
            return self.get_file(file)
        if self.command == "PUT":
            return self.put_file(file, fields)
        if self.command == "POST":
            return self.write(file, fields, update=False)
        if self.command == "DELETE":
            return self.remove(file, fields)
        return self.error(404, "Not Found")

    def get_file(self, path: str) -> None:
        with self.server.lock:
            data = self.server.objects.get(path)
        if data is None:
            return self.missing_file()
        self.json(200, self.describe(path, data) | {"content": base64.encodebytes(data).decode(),
                                                    "encoding": "base64"})

    def describe(self, path: str, data: bytes) -> dict[str, Any]:
        owner_repo = self.server.repo
        return {"type": "file", "name": path.rsplit("/", 1)[-1], "path": path, "sha": blob_sha(data),
                "size": len(data),
                "download_url": f"{self.server.url}/raw/{owner_repo}/{self.server.branch}/{path}"}

    def write(self, path: str, fields: dict[str, Any], update: bool) -> None:
        if not fields.get("message") or not isinstance(fields.get("content"), str):
            return self.error(422, "Invalid request.\n\n\"message\" and \"content\" are required.")
        try:
            data = base64.b64decode(fields["content"], validate=True)
        except (binascii.Error, ValueError):
            return self.error(422, "content is not valid Base64")
        with self.committing() as commit:
            if commit is None:
                return
            existing = self.server.objects.get(path)
            if existing is not None and not update:
                return self.taken()
            if update and existing is None:
                return self.error(404, "Not Found")
            if existing is not None and fields.get("sha") != blob_sha(existing):
                return self.error(409, f"{path} does not match {fields.get('sha')}")
            self.server.objects[path] = data
            self.server.commits.append((commit, path))
        self.json(200 if existing is not None else 201,
                  {"content": self.describe(path, data), "commit": {"sha": commit, "message": fields["message"]}})

    def remove(self, path: str, fields: dict[str, Any]) -> None:
        if not fields.get("message") or not fields.get("sha"):
            return self.error(422, "Invalid request.\n\n\"message\" and \"sha\" are required.")
        with self.committing() as commit:
            if commit is None:
                return
            existing = self.server.objects.get(path)
            if existing is None:
                return self.error(404, "Not Found")
            if fields["sha"] != blob_sha(existing):
                return self.error(409, f"{path} does not match {fields['sha']}")
            del self.server.objects[path]
            self.server.commits.append((commit, path))
        self.json(200, {"content": None, "commit": {"sha": commit, "message": fields["message"]}})

    def list_commits(self, fields: dict[str, str]) -> None:
        if (fields.get("sha") or self.server.branch) != self.server.branch:
            return self.error(404, "Not Found")
        with self.server.lock:
            found = [c for c, p in reversed(self.server.commits) if p == fields.get("path", p)]
        limit = int(fields.get("per_page") or 30)
        self.json(200, [{"sha": c} for c in found[:limit]])

    @contextmanager
    def committing(self) -> Iterator[str | None]:
        """A commit on the branch: its new sha, or None (409 sent) while another one is in flight."""
        with self.server.lock:
            refused = self.server.writing > 0
            self.server.races += refused
            self.server.writing += not refused
        if refused:
            self.error(409, f"refs/heads/{self.server.branch} is at a newer commit than expected")
            yield None
            return
        try:
            time.sleep(self.server.hold)
            yield hashlib.sha1(f"{time.time_ns()}-{threading.get_ident()}".encode()).hexdigest()
        finally:
            with self.server.lock:
                self.server.writing -= 1
