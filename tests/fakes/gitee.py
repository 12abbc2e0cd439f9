"""A fake Gitee API v5: FakeGitHub with Gitee's manners (hosts.md §7).

- the token is the `access_token` field, in the query or in a form or JSON body: unknown or
  missing → 401 "401 Unauthorized: Access token does not exist", expired → "... is expired";
- POST creates and answers 400 "A file with this name already exists" (or the server's
  `taken_message`, e.g. 文件已经存在) for a taken path; PUT updates and needs the current `sha`;
- GET of a path that holds nothing answers 200 with an empty list.
"""

from __future__ import annotations

import json
import time
import urllib.parse
from typing import Any

from fakehost import FakeHandler
from fakes.github import FakeGitHub, GitHubServer

TOKEN = "giteeFakeToken0123456789abcdef"
EXPIRED_TOKEN = "giteeExpiredToken0123456789ab"
REPO = "octo/pics"
BRANCH = "master"


class GiteeServer(GitHubServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.tokens = {TOKEN: None, EXPIRED_TOKEN: time.time() - 3600}
        self.repo, self.branch = REPO, BRANCH
        self.taken_message = "A file with this name already exists"


class FakeGitee(FakeGitHub):
    server: GiteeServer
    prefix = "/api/v5"

    def token(self, query: dict[str, str], fields: dict[str, Any]) -> str | None:
        token = fields.get("access_token")
        return token if isinstance(token, str) else None

    def fields(self, query: dict[str, str]) -> dict[str, Any]:
        """Query and body together, as Gitee's API reads them."""
        raw = self.body()
        if self.headers.get("Content-Type", "").startswith("application/json"):
            body = json.loads(raw or b"{}")
        else:
            body = dict(urllib.parse.parse_qsl(raw.decode()))
        return {**query, **body}

    def error(self, status: int, message: str) -> None:
        self.json(status, {"message": message})

    def unauthorized(self, expired: bool) -> None:
        self.error(401, "401 Unauthorized: Access token " + ("is expired" if expired else "does not exist"))

    def missing_file(self) -> None:
        self.json(200, [])

    def taken(self) -> None:
        self.error(400, self.server.taken_message)

    def put_file(self, path: str, fields: dict[str, Any]) -> None:
        self.write(path, fields, update=True)
