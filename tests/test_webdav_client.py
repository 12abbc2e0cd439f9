"""picpipe.webdav.WebDav against every real server the tests can start: WsgiDAV (Basic, Digest),
rclone serve webdav, Apache mod_dav (Basic, Digest) and a Nutstore-like WsgiDAV. The same
tests run on each; the request counts are asserted where the server keeps a log (the WsgiDAV
ones), and on those no test may ever send HEAD or GET to a folder (Nutstore answers 403)."""

from __future__ import annotations

import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import picpipe.webdav
from davservers import PASSWORD, USER, Dav, apache_dav, nutstore_like, rclone_webdav, wsgidav
from picpipe.errors import PicpipeError, UsageError
from picpipe.webdav import WebDav

SERVERS = ["wsgidav-basic", "wsgidav-digest", "rclone", "apache-basic", "apache-digest", "nutstore-like"]
#: The servers that log what they receive and take faults on cue (tests/davservers.py).
LOGGED = ["wsgidav-basic", "wsgidav-digest", "nutstore-like"]


@dataclass
class Server:
    name: str
    dav: Dav
    folder: Path  # the profile's collection, on the server's disk

    def client(self, path: str = "work/", **settings: Any) -> WebDav:
        """A fresh client (one run of a command) for the collection at `path` below the server's url."""
        profile: dict[str, Any] = {"name": "t", "type": "webdav", "url": self.dav.url + path, "user": USER,
                                   "password": PASSWORD}
        if self.name == "nutstore-like":
            profile.update(vendor="nutstore", pace=100_000)
        return WebDav({**profile, **settings}, "test")

    @property
    def logged(self) -> bool:
        return self.name in LOGGED

    def sent(self, since: int = 0) -> list[str]:
        """The methods the server received after the first `since` requests."""
        return [method for method, _ in self.dav.requests[since:]]


def assert_no_folder_reads(dav: Dav) -> None:
    assert dav.root is not None
    prefix = urllib.parse.urlsplit(dav.url).path
    for method, path in dav.requests:
        if method in ("GET", "HEAD"):
            assert not path.endswith("/") and not (dav.root / path[len(prefix):]).is_dir(), (method, path)


@pytest.fixture(params=SERVERS)
def server(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Server]:
    """A fresh server whose disk already holds the collection `work/`."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # the Nutstore pacer's state
    # Nutstore's 0.4 s between requests would make these tests slow; tests/test_pace.py covers it.
    monkeypatch.setattr(picpipe.webdav, "NUTSTORE_GAP", 0.0)
    root = tmp_path / "dav"
    (root / "work").mkdir(parents=True)
    kind, _, auth = request.param.partition("-")
    if kind == "rclone":
        serving = rclone_webdav(root)
    elif kind == "apache":
        serving = apache_dav(root, auth)
    elif kind == "nutstore":
        serving = nutstore_like(root)
    else:
        serving = wsgidav(root, auth)
    with serving as dav:
        yield Server(request.param, dav, root / "work")
        if request.param in LOGGED:
            assert_no_folder_reads(dav)


def test_put_sends_one_request_and_makes_missing_folders_top_down(server: Server) -> None:
    client = server.client()
    assert client.propfind("", 1) is not None  # what a run does first; Digest gets its nonce here
    before = len(server.dav.requests)
    client.put("a.png", b"first")
    assert (server.folder / "a.png").read_bytes() == b"first"
    if server.logged:
        assert server.sent(before) == ["PUT"]

    before = len(server.dav.requests)
    client.put("2026/05/new/b.png", b"second")
    assert (server.folder / "2026/05/new/b.png").read_bytes() == b"second"
    base = urllib.parse.urlsplit(client.root).path
    if server.logged:  # the PUT finds no parent (409, rclone 404), nor does MKCOL of it: then level by level
        assert server.dav.requests[before:] == [
            ("PUT", f"{base}2026/05/new/b.png"),
            *[("MKCOL", f"{base}{level}/") for level in ("2026/05/new", "2026", "2026/05", "2026/05/new")],
            ("PUT", f"{base}2026/05/new/b.png"),
        ]

    before = len(server.dav.requests)
    client.put("2026/05/new/c.png", b"third")
    assert (server.folder / "2026/05/new/c.png").read_bytes() == b"third"
    if server.logged:
        assert server.sent(before) == ["PUT"]

    before = len(server.dav.requests)
    client.put("2026/06/d.png", b"fourth")  # a new month in a known year: one MKCOL
    assert (server.folder / "2026/06/d.png").read_bytes() == b"fourth"
    if server.logged:
        assert server.dav.requests[before:] == [("PUT", f"{base}2026/06/d.png"), ("MKCOL", f"{base}2026/06/"),
                                                ("PUT", f"{base}2026/06/d.png")]


def test_names_with_spaces_reserved_characters_and_cjk_survive(server: Server) -> None:
    client = server.client()
    folder = "相册 #1%20?"
    names = ["a b.png", "hash#tag.png", "100%.png", "why?.png", "截图 2026.png"]
    for i, name in enumerate(names):
        client.put(f"{folder}/{name}", bytes([i]) * 10)
    assert sorted(p.name for p in (server.folder / folder).iterdir()) == sorted(names)
    for i, name in enumerate(names):
        assert (server.folder / folder / name).read_bytes() == bytes([i]) * 10
        assert client.get(f"{folder}/{name}") == bytes([i]) * 10
    entries = client.propfind(folder, 1)
    assert entries is not None
    assert entries[0].path == folder and entries[0].folder
    assert sorted(e.name for e in entries[1:]) == sorted(names)


def test_a_collection_url_typed_with_spaces_and_cjk_works(server: Server) -> None:
    """Users type `https://dav.jianguoyun.com/dav/我的 图床/`, not its percent-encoding.
    (No '?' in the MOVE target: WsgiDAV 4.4 cuts a Destination at an encoded '?'.)"""
    client = server.client("我的 图床/")
    client.put("a b#1 图.tmp", b"ledger")
    client.move("a b#1 图.tmp", "终 #2 图.jsonl")
    assert [p.name for p in (server.folder.parent / "我的 图床").iterdir()] == ["终 #2 图.jsonl"]
    assert [e.name for e in client.propfind("", 1) or []] == ["", "终 #2 图.jsonl"]


def test_propfind_tells_folders_sizes_and_missing_paths(server: Server) -> None:
    client = server.client()
    client.put("album/one.png", b"x" * 1234)
    client.put("album/sub/two.png", b"y" * 5)

    [album] = client.propfind("album", 0) or []
    assert album.path == "album" and album.folder
    [one] = client.propfind("album/one.png", 0) or []
    assert one.name == "one.png" and not one.folder and one.size == 1234

    listing = client.propfind("album", 1)
    assert listing is not None and listing[0].path == "album"
    members = {e.path: e for e in listing[1:]}
    assert set(members) == {"album/one.png", "album/sub"}  # Depth 1: not the file inside sub/
    assert members["album/sub"].folder and not members["album/one.png"].folder
    assert members["album/one.png"].size == 1234

    root = client.propfind("", 1)
    assert root is not None and root[0].path == "" and root[0].folder
    assert client.propfind("nothing-here", 0) is None
    assert client.propfind("nothing-here", 1) is None
    assert client.propfind("album/nothing.png", 0) is None


def test_get_delete_and_move(server: Server) -> None:
    client = server.client()
    client.put("ledger/ledger.jsonl.tmp", b"version 1\n")
    client.move("ledger/ledger.jsonl.tmp", "ledger/ledger.jsonl")
    assert sorted(p.name for p in (server.folder / "ledger").iterdir()) == ["ledger.jsonl"]
    assert client.get("ledger/ledger.jsonl") == b"version 1\n"

    client.put("ledger/ledger.jsonl.tmp", b"version 2\n")
    with pytest.raises(PicpipeError):  # Overwrite: F on an existing target: 412
        client.move("ledger/ledger.jsonl.tmp", "ledger/ledger.jsonl", overwrite=False)
    assert (server.folder / "ledger/ledger.jsonl").read_bytes() == b"version 1\n"
    client.move("ledger/ledger.jsonl.tmp", "ledger/ledger.jsonl")
    assert sorted(p.name for p in (server.folder / "ledger").iterdir()) == ["ledger.jsonl"]
    assert client.get("ledger/ledger.jsonl") == b"version 2\n"

    with pytest.raises(PicpipeError) as missing:
        client.get("ledger/gone.jsonl")
    assert missing.value.extra["status"] == 404

    assert client.delete("ledger/ledger.jsonl") is True
    assert not (server.folder / "ledger/ledger.jsonl").exists()
    assert client.delete("ledger/ledger.jsonl") is False


def test_options_names_the_dav_classes(server: Server) -> None:
    classes = [c.strip() for c in server.client().options().headers["DAV"].split(",")]
    assert "1" in classes and "2" in classes


def test_a_wrong_password_is_an_auth_error_with_the_app_password_hint(server: Server) -> None:
    wrong = "the-login-password-not-the-app-one"
    client = server.client(password=wrong)
    with pytest.raises(PicpipeError) as caught:
        client.propfind("", 0)
    error = caught.value
    assert error.type == "auth" and error.extra["status"] == 401
    assert error.hint is not None and "app password" in error.hint
    assert wrong not in f"{error.message} {error.hint} {error.to_dict('backup')}"
    assert not (server.folder / "x.png").exists()


def test_a_stopped_server_is_connection_refused_quickly(server: Server) -> None:
    client = server.client(retries=1, timeout=2)
    client.put("a.png", b"a")  # a kept-alive connection is in the pool now
    server.dav.stop()
    started = time.monotonic()
    with pytest.raises(PicpipeError) as caught:
        client.put("b.png", b"b")
    assert caught.value.type == "connection_refused"
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("server", ["wsgidav-basic", "nutstore-like"], indirect=True)
def test_server_errors_are_retried_into_one_file(server: Server) -> None:
    client = server.client()
    client.put("a.png", b"warm")
    server.dav.fail_next(500)
    server.dav.fail_next(503)  # a 503 that is not Nutstore's block passes too
    before = len(server.dav.requests)
    client.put("b.png", b"after two failures")
    assert server.sent(before) == ["PUT", "PUT", "PUT"]
    assert sorted(p.name for p in server.folder.iterdir()) == ["a.png", "b.png"]
    assert (server.folder / "b.png").read_bytes() == b"after two failures"


@pytest.mark.parametrize("server", ["wsgidav-basic", "nutstore-like"], indirect=True)
def test_a_connection_reset_mid_put_is_retried(server: Server) -> None:
    client = server.client()
    client.put("a.png", b"warm")
    data = bytes(range(256)) * 2000
    server.dav.fail_next("reset")
    before = len(server.dav.requests)
    client.put("big.png", data)
    assert server.sent(before) == ["PUT", "PUT"]
    assert (server.folder / "big.png").read_bytes() == data


@pytest.mark.parametrize("server", ["nutstore-like"], indirect=True)
def test_nutstore_keeps_no_files_in_dav_root_and_refuses_large_files(server: Server, tmp_path: Path) -> None:
    with pytest.raises(UsageError) as caught:
        server.client("")  # url at /dav/ itself: refused before anything is sent
    assert "directly in /dav/" in caught.value.message
    assert caught.value.hint is not None and "dav.jianguoyun.com/dav/picpipe/" in caught.value.hint
    assert server.dav.requests == []

    with nutstore_like(tmp_path / "dav", max_size=1000) as small:
        client = Server(server.name, small, server.folder).client()
        with pytest.raises(PicpipeError) as large:
            client.put("big.png", b"x" * 1001)
    assert large.value.type == "too_large" and large.value.extra["status"] == 413
    assert "500 MB" in (large.value.hint or "")


@pytest.mark.parametrize("server", ["nutstore-like"], indirect=True)
def test_nutstore_block_stops_the_run_without_another_request(server: Server) -> None:
    client = server.client()
    client.put("a.png", b"a")
    server.dav.limit = server.dav.served  # the account's budget is spent
    before = len(server.dav.requests)
    with pytest.raises(PicpipeError) as caught:
        client.put("b.png", b"b")
    blocked = caught.value
    assert blocked.type == "rate_limited" and blocked.extra["code"] == "BlockedTemporarily"
    assert blocked.extra["resume_after"] in (blocked.hint or "")
    assert server.sent(before) == ["PUT"]  # a block is not retried

    for call in (lambda: client.put("c.png", b"c"), lambda: client.propfind("", 1), lambda: client.get("a.png")):
        with pytest.raises(PicpipeError) as again:
            call()
        assert again.value.type == "rate_limited"
    assert len(server.dav.requests) == before + 1  # nothing more was sent

    server.dav.limit = None  # 30 minutes later, the next run goes through
    server.client().put("b.png", b"b")
    assert sorted(p.name for p in server.folder.iterdir()) == ["a.png", "b.png"]
