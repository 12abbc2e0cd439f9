"""A Gitee repository as an image host: API v5, GitHub's contents API with other manners.

What differs from GitHub (everything else, the blob-sha comparison included, is GitHubHost's):
the token travels as the `access_token` field, in the form body of writes so that it never sits
in a URL (the GET and DELETE of Gitee's API take it only in the query, where every message
picpipe prints masks it); a new file is a POST, an update a PUT; a taken path is an error whose
message says "A file with this name already exists" (or 文件已经存在); the default branch is
master; URLs are https://gitee.com/OWNER/REPO/raw/BRANCH/KEY.

Since about 2022 Gitee refuses images embedded from other sites and bans image-hosting
repositories (hosts.md §7): the links may work only on gitee.com, which this host warns about.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe import console
from picpipe.hosts import Stored
from picpipe.hosts.github import GitHubHost

if TYPE_CHECKING:
    import requests

_TAKEN = ("A file with this name already exists", "文件已经存在")


class GiteeHost(GitHubHost):
    default_api = "https://gitee.com/api/v5"
    default_branch = "master"
    cdns = ("raw",)
    hints: ClassVar[dict[str | int, str]] = {
        **GitHubHost.hints,  # 409 and 422 mean the same here
        401: "Gitee refused the access token (wrong, expired or revoked): create a personal access token with the "
             "projects scope at gitee.com/profile/personal_access_tokens",
        403: "the token may not write here: it needs the projects scope and push rights on the repository",
        404: "the repository does not exist or the token cannot see it: check repo = \"owner/name\" and the "
             "token's projects scope",
    }
    request_id_headers = ("x-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.warned = False

    def api(self, method: str, url: str, fields: Mapping[str, str] | None = None,
            ok: Collection[int] = (200, 201, 204)) -> requests.Response:
        """The token as a field: in the form body of a POST or PUT, in the query of a GET or DELETE."""
        params = {**(fields or {}), "access_token": self.token}
        if method in ("GET", "DELETE"):
            return self.request(method, url, ok=ok, params=params)
        return self.request(method, url, ok=ok, data=params)

    def write_method(self, sha: str | None) -> str:
        return "POST" if sha is None else "PUT"

    def taken(self, response: requests.Response) -> bool:
        message = self.parse_error(response)[1]
        return 400 <= response.status_code < 500 and any(text in message for text in _TAKEN)

    def raw_url(self, path: str) -> str:
        return f"https://gitee.com/{self.slug}/raw/{path}"

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        with self.lock:
            if not self.warned and not self.profile.get("base_url"):
                self.warned = True
                console.warn(f"{self.name}: Gitee blocks images embedded from other sites; these links may "
                             "show only on gitee.com (set base_url if you serve the repository elsewhere)")
        return super().put(key, data, mime, overwrite)


HOST = GiteeHost
