"""A fake AList / OpenList server, after their source (OpenListTeam/OpenList server/, alist-org/alist
server/ as of v3.x):

- every API answer is HTTP 200 with JSON {"code", "message", "data"}; errors carry their code
  inside (common.ErrorResp / ErrorStrResp in server/common/common.go);
- `Authorization` is the admin token itself (Settings → Other → Token) or a login JWT (HS256,
  claims username, pwd_ts, exp); none → 401 "Guest user is disabled, login please"; a wrong one →
  401 "that's not even a token" (AList 3.x) or "token is invalidated" (OpenList 4: login tokens
  live in memory and die with a restart), an expired one → 401 "token is expired"
  (middlewares/auth.go, common/auth.go ParseToken);
- POST /api/auth/login {username, password, otp_code}: data.token; a wrong user or password → 400
  "password is incorrect" / "failed find user: record not found" (AList 3.x) or 401 "Invalid
  username or password" (OpenList); a user with 2FA and no code → 402 "Invalid 2FA code"; five
  failures → 429 (handles/auth.go loginHash);
- PUT /api/fs/put: `File-Path` percent-decoded (url.PathUnescape), joined to the user's base path
  (a '..' that cleaning removes → 403 "using relative path is not allowed"), write permission
  checked first (middlewares/fsup.go → 403 "permission denied"); `Overwrite: false` and a file
  there → 403 "file exists", honoured from v3.42.0 only (alist-org/alist#7809: older servers
  replace the file); outside every mounted storage → 500 "failed get storage: storage not
  found; rawPath: ..." (handles/fsup.go FsStream, fs/put.go); missing folders are made;
- POST /api/fs/get {path}: size, is_dir, sign (only with sign_all or a password: common/sign.go),
  hash_info (what the storage reports: nothing for the local driver), raw_url; a missing file →
  500 "object not found" (AList 3.x) or "failed to get obj: object not found" (OpenList; op/fs.go Get);
- POST /api/fs/remove {dir, names}: a missing file counts as removed (op/fs.go Remove);
- GET /api/public/settings: data.version, read without a token;
- GET /d/<path>?sign=: the file; with sign_all the sign must be base64url(HMAC-SHA256(admin token,
  "<path>:0")) + ":0" (pkg/sign/hmac.go), else 401 with an HTML page.

    with serving(FakeAList, AListServer) as server:  # url: server.url; files in server.objects[path]
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import posixpath
import time
import urllib.parse
from dataclasses import dataclass
from typing import Any

from fakehost import FakeHandler, FakeServer

TOKEN = "alist-0f8e7d6c-5b4a-4392-8170-6f5e4d3c2b1aFakeAdminToken0123456789abcdefghijklmnopqrstuvwxyzABCDEFGH"
USER, PASSWORD = "blogger", "fake-Pa55word-blogger"
READER, READER_PASSWORD = "reader", "fake-Pa55word-reader"  # may read, not write or remove
GUARDED, GUARDED_PASSWORD = "guarded", "fake-Pa55word-guarded"  # has 2FA
JWT_SECRET = b"fake-jwt-secret"
MAX_LOGIN_FAILURES = 5


@dataclass
class User:
    password: str
    write: bool = True
    remove: bool = True
    otp: bool = False
    pwd_ts: int = 1


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def clean(path: str) -> str:
    """utils.FixAndCleanPath: absolute, cleaned like Go's path.Clean."""
    cleaned = posixpath.normpath("/" + path.replace("\\", "/"))
    return "/" + cleaned.lstrip("/")


def sign(path: str) -> str:
    """sign.NotExpired(path) with the admin token as the key (pkg/sign/hmac.go)."""
    mac = hmac.new(TOKEN.encode(), f"{path}:0".encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(mac).decode() + ":0"


class AListServer(FakeServer):
    def __init__(self, handler: type[FakeHandler]) -> None:
        super().__init__(handler)
        self.reset()

    def reset(self) -> None:
        """Back to a fresh OpenList-compatible AList 3.45 with one local storage at /local."""
        for part in (self.objects, self.requests, self.faults):
            part.clear()
        self.version = "v3.45.0"
        self.sign_all = True
        self.hashes = False  # report hash_info md5 (cloud drives do; the local driver does not)
        self.mounts = ["/local"]
        self.users = {"admin": User(TOKEN + "-unused"), USER: User(PASSWORD),
                      READER: User(READER_PASSWORD, write=False, remove=False),
                      GUARDED: User(GUARDED_PASSWORD, otp=True)}
        self.issued: set[str] = set()  # OpenList's validTokenCache
        self.logins = 0
        self.failures = 0
        self.clock = 0.0  # seconds the server's clock is ahead: tokens issued before it expire
        self.puts: list[dict[str, str]] = []  # the headers of every PUT /api/fs/put

    @property
    def openlist(self) -> bool:
        return not self.version.startswith("v3.")

    @property
    def honours_overwrite(self) -> bool:
        major, minor = (int(n) for n in self.version.lstrip("v").split(".")[:2])
        return (major, minor) >= (3, 42)

    def restart(self) -> None:
        """OpenList forgets its login tokens when it restarts."""
        with self.lock:
            self.issued.clear()


class FakeAList(FakeHandler):
    server: AListServer

    def answer(self, code: int, message: str = "success", data: Any = None) -> None:
        self.reply(200, json.dumps({"code": code, "message": message, "data": data}))

    def handle_request(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        if path.startswith("/d/") and self.command in ("GET", "HEAD"):
            return self.download(clean(path[2:]), dict(urllib.parse.parse_qsl(url.query)).get("sign", ""))
        if path == "/api/public/settings":
            return self.answer(200, data={"version": self.server.version, "site_title": "AList", "sign_all": ""})
        if path == "/api/auth/login" and self.command == "POST":
            return self.login()
        routes = {("PUT", "/api/fs/put"): self.put, ("POST", "/api/fs/get"): self.get,
                  ("POST", "/api/fs/remove"): self.remove}
        route = routes.get((self.command, path))
        if route is None:
            return self.reply(404, "404 page not found", content_type="text/plain")
        user = self.authenticate()
        if user is not None:
            route(user)

    # -- auth ----------------------------------------------------------------------------------

    def authenticate(self) -> User | None:
        """middlewares.Auth: the admin token, else a login token; errors answered here."""
        token = self.headers.get("Authorization", "")
        if hmac.compare_digest(token.encode(), TOKEN.encode()):
            return self.server.users["admin"]
        if not token:
            self.answer(401, "Guest user is disabled, login please")
            return None
        problem, claims = self.parse_token(token)
        if problem:
            self.answer(401, problem)
            return None
        user = self.server.users.get(claims["username"])
        if user is None:
            self.answer(401, "failed find user: record not found")
            return None
        if claims.get("pwd_ts") != user.pwd_ts:
            self.answer(401, "Password has been changed, login please")
            return None
        return user

    def parse_token(self, token: str) -> tuple[str, dict[str, Any]]:
        """common.ParseToken: (problem, claims); OpenList checks its token cache first."""
        if self.server.openlist and token not in self.server.issued:
            return "token is invalidated", {}
        parts = token.split(".")
        if len(parts) != 3:
            return "that's not even a token", {}
        expected = b64url(hmac.new(JWT_SECRET, f"{parts[0]}.{parts[1]}".encode(), hashlib.sha256).digest())
        if not hmac.compare_digest(expected, parts[2]):
            return "couldn't handle this token", {}
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
        if claims["exp"] < time.time() + self.server.clock:
            return "token is expired", {}
        return "", claims

    def login(self) -> None:
        try:
            request = json.loads(self.body() or b"{}")
        except ValueError:
            return self.answer(400, "invalid character in JSON")
        if not isinstance(request, dict) or not request.get("username"):
            return self.answer(400, "Key: 'LoginReq.Username' Error:Field validation for 'Username' failed on "
                                    "the 'required' tag")
        srv = self.server
        if srv.failures >= MAX_LOGIN_FAILURES:
            return self.answer(429, "Too many unsuccessful sign-in attempts have been made using an incorrect "
                                    "username or password, Try again later.")
        user = srv.users.get(request["username"])
        if user is None or request.get("password") != user.password:
            srv.failures += 1
            if srv.openlist:
                return self.answer(401, "Invalid username or password")
            return self.answer(400, "failed find user: record not found" if user is None else "password is incorrect")
        if user.otp and not request.get("otp_code"):
            srv.failures += 1
            return self.answer(402, "Invalid 2FA code")
        now = int(time.time() + srv.clock)
        header = b64url(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
        claims = b64url(json.dumps({"username": request["username"], "pwd_ts": user.pwd_ts,
                                    "exp": now + 48 * 3600, "iat": now, "nbf": now}).encode())
        token = f"{header}.{claims}." + b64url(hmac.new(JWT_SECRET, f"{header}.{claims}".encode(),
                                                       hashlib.sha256).digest())
        with srv.lock:
            srv.issued.add(token)
            srv.logins += 1
            srv.failures = 0
        self.answer(200, data={"token": token})

    # -- fs ------------------------------------------------------------------------------------

    def join(self, path: str) -> str | None:
        """utils.JoinBasePath with base path /: a '..' that cleaning removes is refused (answered here)."""
        cleaned = clean(path)
        if ".." in path and ".." not in cleaned:
            self.answer(403, "using relative path is not allowed")
            return None
        return cleaned

    def storage(self, path: str) -> str | None:
        return next((m for m in self.server.mounts if path == m or path.startswith(m + "/")), None)

    def missing(self) -> str:
        """AList 3.x lists the folder when the driver's Get fails (op/fs.go); OpenList wraps the driver's error."""
        return "failed to get obj: object not found" if self.server.openlist else "object not found"

    def put(self, user: User) -> None:
        srv = self.server
        with srv.lock:
            srv.puts.append(dict(self.headers.items()))
        data = self.body()
        path = self.join(urllib.parse.unquote(self.headers.get("File-Path", "")))
        if path is None:
            return
        if not user.write:
            return self.answer(403, "permission denied")
        if self.headers.get("Content-Length") is None:
            return self.answer(400, 'strconv.ParseInt: parsing "": invalid syntax')
        overwrite = self.headers.get("Overwrite") != "false" or not srv.honours_overwrite
        with srv.lock:
            if not overwrite and path in srv.objects:
                return self.answer(403, "file exists")
            if self.storage(path) is None:
                return self.answer(500, f"failed get storage: storage not found; rawPath: {posixpath.dirname(path)}/")
            srv.objects[path] = data
            srv.meta[path] = {"type": self.headers.get("Content-Type", "")}
        self.answer(200)

    def get(self, user: User) -> None:
        request = json.loads(self.body() or b"{}")
        path = self.join(str(request.get("path") or "/"))
        if path is None:
            return
        if self.storage(path) is None:
            return self.answer(500, f"failed get storage: storage not found; rawPath: {path}")
        srv = self.server
        with srv.lock:
            data = srv.objects.get(path)
            folder = data is None and (path in srv.mounts or any(p.startswith(path + "/") for p in srv.objects))
        if data is None and not folder:
            return self.answer(500, self.missing())
        size = 0 if folder else len(data or b"")
        hashes = {"md5": hashlib.md5(data or b"").hexdigest()} if srv.hashes and not folder else {}
        self.answer(200, data={
            "name": posixpath.basename(path), "size": size, "is_dir": folder,
            "modified": "2026-01-01T00:00:00Z", "created": "2026-01-01T00:00:00Z",
            "sign": sign(path) if srv.sign_all and not folder else "", "thumb": "", "type": 5,
            "hashinfo": json.dumps(hashes) if hashes else "null", "hash_info": hashes or None,
            "raw_url": f"{srv.url}/p{urllib.parse.quote(path)}" + (f"?sign={sign(path)}" if srv.sign_all else ""),
            "readme": "", "header": "", "provider": "Local", "related": None})

    def remove(self, user: User) -> None:
        request = json.loads(self.body() or b"{}")
        names = request.get("names") or []
        if not names:
            return self.answer(400, "Empty file names")
        if not user.remove:
            return self.answer(403, "permission denied")
        folder = self.join(str(request.get("dir") or "/"))
        if folder is None:
            return
        base = folder.rstrip("/") + "/"
        with self.server.lock:
            for name in names:
                full = clean(base + str(name))
                if full.startswith(base):  # a name climbing out of dir is skipped
                    self.server.objects.pop(full, None)
        self.answer(200)

    def download(self, path: str, given: str) -> None:
        if self.server.sign_all and not hmac.compare_digest(given.encode(), sign(path).encode()):
            return self.reply(401, "<!DOCTYPE html><html><body><h1>401 Unauthorized</h1><p>sign mismatch</p>"
                                   "</body></html>", content_type="text/html; charset=utf-8")
        data = self.server.objects.get(path)
        if data is None:
            return self.reply(500, "<!DOCTYPE html><html><body><h1>500 Internal Server Error</h1>"
                                   "<p>failed to get obj: object not found</p></body></html>",
                              content_type="text/html; charset=utf-8")
        self.reply(200, data, content_type=self.server.meta.get(path, {}).get("type") or "application/octet-stream")
