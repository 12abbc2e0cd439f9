"""A GitHub repository as an image host, through the Contents API (one commit per image).

A PUT without `sha` only creates: GitHub answers 422 when the path is taken. The existing file's
`sha` is its git blob id, so comparing it with the blob id of our bytes tells the same image
(reused) from a different one (conflict) without downloading anything. PicGo returns the
existing URL unchecked there. Every write is a commit on the branch, and GitHub answers 409 to
commits that race: this host sends its writes one at a time and retries a 409 a few times.

URLs: `raw` (default) https://raw.githubusercontent.com/OWNER/REPO/BRANCH/KEY, or `jsdelivr`
https://cdn.jsdelivr.net/gh/OWNER/REPO@COMMIT/KEY (a commit, not the branch: jsDelivr caches
branches for 12 hours); a base_url wins over both (GitHub Enterprise, Gitea, a custom domain).
The API's own download_url is not used: for a private repository it carries a token.
"""

from __future__ import annotations

import hashlib
import threading
import time
import urllib.parse
from collections.abc import Collection, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import HttpHost, Stored, conflict
from picpipe.hosts.signing import b64
from picpipe.net import backoff

if TYPE_CHECKING:
    import requests

#: Further tries of a write that another commit overtook (409), each after a fresh look at the file.
RACE_RETRIES = 3
#: Every status a write may answer that this module reads itself; the rest become error records.
_ANY_ANSWER = range(200, 500)


def git_blob_sha(data: bytes) -> str:
    """The id git gives a file's bytes: hex(SHA1("blob <length>\\0" + bytes))."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data, usedforsecurity=False).hexdigest()


class GitHubHost(HttpHost):
    keys = ("repo", "branch", "token", "cdn")

    default_api: ClassVar[str] = "https://api.github.com"
    default_branch: ClassVar[str] = "main"
    cdns: ClassVar[tuple[str, ...]] = ("raw", "jsdelivr")
    hints: ClassVar[dict[str | int, str]] = {
        401: "GitHub refused the token (wrong, expired or revoked): create a new one and set the profile's token",
        403: "the token may not write here: a classic token needs the repo (or public_repo) scope, a fine-grained "
             "one Contents: read and write on this repository",
        404: "the repository does not exist or the token cannot see it: check repo = \"owner/name\" and the token's "
             "access (classic: repo scope; fine-grained: this repository with Contents: read and write)",
        409: "other commits reached the branch at the same time (another pp-upload, a push): re-run; what is there "
             "already is not sent again",
        422: "GitHub rejected the file: its message above says why (a folder at that path, an unknown branch?)",
    }
    request_id_headers = ("x-github-request-id",)

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        repo = self.setting("repo").strip().strip("/").removesuffix(".git")
        owner, _, name = repo.partition("/")
        if not owner or not name or "/" in name:
            raise UsageError(f"profile {self.name!r}: repo {repo!r} is not \"owner/name\"",
                             f"set repo in [profiles.{self.name}], e.g. repo = \"octocat/images\"")
        self.branch = str(profile.get("branch") or self.default_branch)
        self.token = self.setting("token")
        self.cdn = str(profile.get("cdn") or "raw")
        if self.cdn not in self.cdns:
            raise UsageError(f"profile {self.name!r}: cdn {self.cdn!r} is not one of {', '.join(self.cdns)}",
                             "leave cdn out for the raw URL, or set base_url for any other prefix")
        self.slug = _quote(f"{owner}/{name}")
        self.repo_url = f"{self.endpoint(self.default_api)}/repos/{self.slug}"
        self.lock = threading.Lock()  # writes are commits on one branch: one at a time

    # -- what GitHub and Gitee do differently ---------------------------------------------------

    def api(self, method: str, url: str, fields: Mapping[str, str] | None = None,
            ok: Collection[int] = (200, 201, 204)) -> requests.Response:
        """One authenticated API call: Bearer token; fields in the query of a GET, else a JSON body."""
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/vnd.github+json",
                   "X-GitHub-Api-Version": "2022-11-28"}
        if method == "GET":
            return self.request(method, url, ok=ok, headers=headers, params=fields)
        return self.request(method, url, ok=ok, headers=headers, json=fields)

    def write_method(self, sha: str | None) -> str:
        return "PUT"

    def taken(self, response: requests.Response) -> bool:
        """The answer to a create says that the path already holds a file."""
        return response.status_code == 422 and "sha" in self.parse_error(response)[1]

    def raw_url(self, path: str) -> str:
        return f"https://raw.githubusercontent.com/{self.slug}/{path}"

    # -- the Host interface --------------------------------------------------------------------

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        blob = git_blob_sha(data)
        with self.lock:
            sha = self.current_sha(key) if overwrite else None
            attempt = 0
            while True:
                if sha == blob:  # these very bytes are there: no commit at all
                    return Stored(key, self.url(key), reused=True)
                fields = {"message": f"Upload {key} with picpipe", "content": b64(data), "branch": self.branch}
                if sha is not None:
                    fields["sha"] = sha
                response = self.api(self.write_method(sha), self.contents_url(key), fields, ok=_ANY_ANSWER)
                if response.status_code in (200, 201):
                    return Stored(key, self.link(key, _commit_sha(response)))
                if attempt < RACE_RETRIES and self.taken(response):
                    sha = self.current_sha(key)
                    if sha != blob and not overwrite:
                        raise conflict(self.name, key)
                elif attempt < RACE_RETRIES and response.status_code == 409:
                    time.sleep(backoff(attempt))
                    sha = self.current_sha(key) if sha is not None else None
                else:
                    raise self.failure(response)
                attempt += 1

    def delete(self, key: str) -> None:
        with self.lock:
            attempt = 0
            while True:
                sha = self.current_sha(key)
                if sha is None:
                    self.api("GET", self.repo_url)  # gone, unless the repository itself is out of reach
                    return
                fields = {"message": f"Delete {key} with picpipe", "sha": sha, "branch": self.branch}
                response = self.api("DELETE", self.contents_url(key), fields, ok=_ANY_ANSWER)
                if response.status_code in (200, 204, 404):
                    return
                if response.status_code != 409 or attempt == RACE_RETRIES:
                    raise self.failure(response)
                time.sleep(backoff(attempt))
                attempt += 1

    def url(self, key: str) -> str:
        return self.link(key, None)

    # -- helpers -------------------------------------------------------------------------------

    def contents_url(self, key: str) -> str:
        return f"{self.repo_url}/contents/{_quote(key)}"

    def current_sha(self, key: str) -> str | None:
        """The blob sha of the file at `key` on the branch; None when there is none."""
        response = self.api("GET", self.contents_url(key), {"ref": self.branch}, ok=(200, 404))
        body = _json(response) if response.status_code == 200 else None
        return str(body["sha"]) if isinstance(body, dict) and body.get("sha") else None  # a folder is a list

    def link(self, key: str, commit: str | None) -> str:
        """The public URL of `key`; jsDelivr's names the commit that wrote it (looked up when not known)."""
        if self.profile.get("base_url"):
            return super().url(key)
        if self.cdn == "jsdelivr":
            commit = commit or self.last_commit(key)
            return f"https://cdn.jsdelivr.net/gh/{self.slug}@{commit}/{_quote(key)}"
        return self.raw_url(f"{_quote(self.branch)}/{_quote(key)}")

    def last_commit(self, key: str) -> str:
        commits = self.api("GET", f"{self.repo_url}/commits", {"path": key, "sha": self.branch, "per_page": "1"})
        found = _json(commits)
        if not isinstance(found, list) or not found or not isinstance(found[0], dict) or "sha" not in found[0]:
            raise PicpipeError("not_found", f"{self.name}: no commit on {self.branch} touches {key}",
                               "check the branch, or leave cdn out to link the raw file")
        return str(found[0]["sha"])

    def failure(self, response: requests.Response) -> PicpipeError:
        """Rate limits (403 or 429 with X-RateLimit-Remaining: 0 or Retry-After) say when to come back."""
        error = super().failure(response)
        headers = response.headers
        if response.status_code in (403, 429) and (headers.get("x-ratelimit-remaining") == "0"
                                                   or "retry-after" in headers):
            error.type = "rate_limited"
            reset = headers.get("x-ratelimit-reset", "")
            if headers.get("x-ratelimit-remaining") == "0" and reset.isdigit():
                when = datetime.fromtimestamp(int(reset), UTC)
                error.hint = f"the hourly API allowance is used up until {when:%H:%M} UTC: re-run then"
            else:
                error.hint = (f"GitHub's secondary rate limit (about 80 commits a minute, 500 an hour): wait "
                              f"{headers.get('retry-after', 60)} s and re-run; what is there is not sent again")
        return error


def _quote(text: str) -> str:
    return urllib.parse.quote(text, safe="/")


def _commit_sha(response: requests.Response) -> str | None:
    body = _json(response)
    commit = body.get("commit") if isinstance(body, dict) else None
    return str(commit["sha"]) if isinstance(commit, dict) and commit.get("sha") else None


def _json(response: requests.Response) -> Any:
    """The decoded JSON answer; None when it is not JSON (a proxy's page)."""
    try:
        return response.json()
    except ValueError:
        return None


HOST = GitHubHost
