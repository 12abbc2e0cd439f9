"""The alist host: pp-upload against a fake AList/OpenList (tests/fakes/alist.py, after their source)
that checks the admin token and login tokens, answers errors as HTTP 200 with a code inside, refuses
`Overwrite: false` on a taken name from v3.42.0 on (and ignores it before, as old AList does), and
signs its download links."""

from __future__ import annotations

import json
import urllib.parse

import pytest
import requests

from conftest import jsonl, parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.alist import (
    GUARDED,
    GUARDED_PASSWORD,
    PASSWORD,
    READER,
    READER_PASSWORD,
    TOKEN,
    USER,
    AListServer,
    FakeAList,
    sign,
)
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.alist import AListHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeAList, AListServer) as running:
        yield running


@pytest.fixture
def alist(server):
    """The module's fake, fresh for each test (one server: its shutdown costs half a second)."""
    server.reset()
    return server


@pytest.fixture
def host(alist):
    """AListHost objects on the fake, in this process (for what needs no command line)."""
    def alist_host(values: dict) -> AListHost:
        if "user" not in values and "token" not in values:
            values["token"] = TOKEN
        return AListHost({k: v for k, v in values.items() if v is not None})

    with host_maker(alist_host, name="al", type="alist", url=alist.url, dir="/local/img", retries=0) as make:
        yield make


def profile(server: AListServer, **extra: str) -> dict[str, str]:
    token = {} if "user" in extra else {"token": TOKEN}
    return profile_env("al", **{"type": "alist", "url": server.url, "dir": "/local/img", "retries": 0, **token,
                                **extra})


def link(server: AListServer, path: str) -> str:
    return f"{server.url}/d{urllib.parse.quote(path)}?sign={sign(path)}"


def test_upload_reuse_conflict_overwrite_delete_with_the_token(run, tmp_path, alist):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(alist)
    args = ("--host", "al", "--no-dedupe", "--path", "blog/{name} 图{ext}")
    path = "/local/img/blog/logo 图.png"

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    assert record["key"] == "blog/logo 图.png" and "reused" not in record
    assert record["url"] == link(alist, path)  # AList's own link, signed (sign_all is on by default)
    assert alist.objects[path] == a.read_bytes()
    assert requests.get(record["url"], timeout=5).content == a.read_bytes()  # the link works
    put = alist.puts[-1]
    assert put["File-Path"] == "/local/img/blog/logo%20%E5%9B%BE.png" and put["File-Path"].isascii()
    assert put["Overwrite"] == "false" and put["As-Task"] == "false" and put["Authorization"] == TOKEN
    assert put["Content-Type"] == "image/png" and put["Content-Length"] == str(len(a.read_bytes()))

    both = run("pp-upload", *args, str(a), str(b), extra_env=env)  # the same image, then another one
    assert both.returncode == 1
    reused, clash = parse_jsonl(both.stdout)
    assert reused["reused"] is True and reused["url"] == record["url"]
    assert clash["error"]["type"] == "conflict" and "--overwrite" in clash["error"]["hint"] and "url" not in clash
    assert alist.objects[path] == a.read_bytes()  # nothing replaced

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert alist.objects[path] == b.read_bytes() and alist.puts[-1]["Overwrite"] == "true"

    twice = run("pp-upload", "--host", "al", "--delete", input=replaced.stdout * 2, extra_env=env)
    assert twice.returncode == 0, twice.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(twice.stdout))  # the second found it gone: deleted
    assert path not in alist.objects
    assert TOKEN not in first.stdout + first.stderr + both.stdout + both.stderr + twice.stdout + twice.stderr


def test_user_and_password_log_in_once_per_run(run, tmp_path, alist):
    files = [str(image(tmp_path / f"{i}.png", (i * 40, 10, 10))) for i in range(4)]
    result = run("pp-upload", "--host", "al", "--no-dedupe", "-j", "4", *files,
                 extra_env=profile(alist, user=USER, password=PASSWORD))
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert len(records) == 4 and alist.logins == 1
    for record in records:
        assert requests.get(record["url"], timeout=5).status_code == 200
    login_token = alist.puts[-1]["Authorization"]
    assert login_token in alist.issued and login_token != TOKEN
    assert PASSWORD not in result.stdout + result.stderr and login_token not in result.stdout + result.stderr


def test_an_expired_or_forgotten_login_token_logs_in_again_once(host, alist):
    al = host(user=USER, password=PASSWORD, token=None)
    al.put("a.png", b"a", "image/png")
    alist.clock = 49 * 3600  # past the 48 hours a login token lives
    assert not al.put("b.png", b"b", "image/png").reused
    alist.clock = 0
    alist.version = "v4.1.0"  # OpenList forgets its login tokens when it restarts
    alist.restart()
    assert not al.put("c.png", b"c", "image/png").reused
    assert alist.logins == 3 and set(alist.objects) == {"/local/img/a.png", "/local/img/b.png", "/local/img/c.png"}


def test_a_static_token_refused_is_not_retried(host, alist):
    with pytest.raises(PicpipeError) as caught:
        host(token="alist-not-the-token").put("a.png", b"a", "image/png")
    assert caught.value.type == "auth" and "that's not even a token" in caught.value.message
    assert "Settings → Other → Token" in (caught.value.hint or "") and alist.logins == 0
    assert [p for m, p in alist.requests if p == "/api/fs/put"] == ["/api/fs/put"]


@pytest.mark.parametrize("version", ["v3.45.0", "v4.1.0"])
def test_wrong_token_or_password_is_an_error_record_with_a_hint_and_never_printed(run, tmp_path, alist, version):
    alist.version = version
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "alist-WrongWrongWrong-0123456789"
    result = run("pp-upload", "--host", "al", "--no-dedupe", str(a), extra_env=profile(alist, token=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    said = "that's not even a token" if version.startswith("v3") else "token is invalidated"
    assert error["type"] == "auth" and error["code"] == 401 and error["status"] == 200 and said in error["message"]
    assert "Token" in error["hint"]
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr

    bad = "fake-Pa55word-WRONG"
    result = run("pp-upload", "--host", "al", "--no-dedupe", str(a), extra_env=profile(alist, user=USER, password=bad))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and "login as 'blogger'" in error["message"]
    assert ("password is incorrect" if version.startswith("v3") else "Invalid username or password") in error["message"]
    assert "user and password" in error["hint"]
    assert bad not in result.stdout + result.stderr and not alist.objects


def test_two_factor_users_and_lockouts_say_what_to_do(host, alist):
    with pytest.raises(PicpipeError) as caught:
        host(user=GUARDED, password=GUARDED_PASSWORD, token=None).put("a.png", b"a", "image/png")
    assert caught.value.type == "auth" and caught.value.extra["code"] == 402 and "2FA" in (caught.value.hint or "")
    alist.failures = 5
    with pytest.raises(PicpipeError) as caught:
        host(user=USER, password=PASSWORD, token=None).put("a.png", b"a", "image/png")
    assert caught.value.type == "rate_limited" and "5 minutes" in (caught.value.hint or "")


def test_errors_inside_http_200_become_error_records(run, tmp_path, host, alist):
    a = image(tmp_path / "a.png", (1, 2, 3))
    result = run("pp-upload", "--host", "al", "--no-dedupe", str(a), extra_env=profile(alist, dir="/nowhere"))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "not_found" and error["code"] == 500 and error["status"] == 200
    assert "storage not found" in error["message"] and "/nowhere" in error["hint"] and "Storages" in error["hint"]

    with pytest.raises(PicpipeError) as caught:  # a user without the write permission
        host(user=READER, password=READER_PASSWORD, token=None).put("a.png", b"a", "image/png")
    assert caught.value.type == "auth" and caught.value.extra["code"] == 403
    assert "permission denied" in caught.value.message and "Write" in (caught.value.hint or "")

    al = host()
    al.honours_overwrite()  # asked once per run, before the faults below
    alist.faults.append(Fault(200, body=json.dumps({"code": 500, "message": "failed put /local/img/: the cloud "
                                                    "drive's refresh token is invalid", "data": None}).encode()))
    with pytest.raises(PicpipeError) as caught:
        al.put("b.png", b"b", "image/png")
    assert caught.value.type == "server_error" and "refresh token is invalid" in caught.value.message
    assert "/local/img/b.png" not in alist.objects

    alist.faults.append(Fault(200, body=b"<html>captive portal</html>"))
    with pytest.raises(PicpipeError) as caught:
        al.put("c.png", b"c", "image/png")
    assert caught.value.type == "bad_answer"


def test_base_url_makes_the_url_without_a_request(host, alist):
    al = host(base_url="https://img.example.com/pics/")
    stored = al.put("2026/a b.png", b"a", "image/png")
    assert stored.url == "https://img.example.com/pics/2026/a%20b.png"
    assert [p for _, p in alist.requests] == ["/api/public/settings", "/api/fs/put"]  # once per run, one per image
    again = al.put("2026/a b.png", b"a", "image/png")
    assert again.reused and again.url == stored.url  # read back through AList's own signed link


def test_links_are_unsigned_when_signing_is_off(host, alist):
    alist.sign_all = False
    stored = host().put("a.png", b"a", "image/png")
    assert stored.url == f"{alist.url}/d/local/img/a.png"
    assert [p for _, p in alist.requests] == ["/api/public/settings", "/api/fs/put", "/api/fs/get"]
    assert requests.get(stored.url, timeout=5).content == b"a"


def test_old_alist_ignores_overwrite_false_so_names_are_looked_up_first(host, alist):
    """Before v3.42.0 AList replaces a file whatever Overwrite says: picpipe must look first."""
    alist.version = "v3.41.0"
    al = host()
    al.put("a.png", b"one", "image/png")
    with pytest.raises(PicpipeError) as caught:
        al.put("a.png", b"two", "image/png")
    assert caught.value.type == "conflict" and alist.objects["/local/img/a.png"] == b"one"
    assert al.put("a.png", b"one", "image/png").reused
    assert len(alist.puts) == 1  # the taken name was never written again
    assert not al.put("a.png", b"two", "image/png", overwrite=True).reused
    assert alist.objects["/local/img/a.png"] == b"two"
    assert [p for _, p in alist.requests].count("/api/public/settings") == 1  # asked once per run


def test_a_new_alist_is_trusted_with_overwrite_false(host, alist):
    al = host()
    al.put("a.png", b"one", "image/png")
    with pytest.raises(PicpipeError) as caught:
        al.put("a.png", b"second", "image/png")
    assert caught.value.type == "conflict" and alist.objects["/local/img/a.png"] == b"one"
    paths = [p for _, p in alist.requests]
    assert paths.count("/api/fs/put") == 2  # no look-up before writing: AList refused with "file exists"
    assert not [p for p in paths if p.startswith("/d/")]  # another size: told apart without a download


def test_hashes_from_the_storage_spare_the_download(host, alist):
    alist.hashes = True
    al = host()
    al.put("a.png", b"one", "image/png")
    assert al.put("a.png", b"one", "image/png").reused
    with pytest.raises(PicpipeError) as caught:
        al.put("a.png", b"owt", "image/png")  # same size, other bytes: md5 tells
    assert caught.value.type == "conflict"
    assert not [p for _, p in alist.requests if p.startswith("/d/")]
    alist.hashes = False
    assert al.put("a.png", b"one", "image/png").reused  # no hash: read back and compared
    assert [p for _, p in alist.requests if p.startswith("/d/")]


def test_keys_and_dir_cannot_climb_out(run, host, alist):
    al = host()
    for key in ("../escape.png", "a/../../escape.png", "/abs.png", "a//b.png"):
        with pytest.raises(PicpipeError) as caught:
            al.put(key, b"x", "image/png")
        assert caught.value.type == "bad_key"
        with pytest.raises(PicpipeError):
            al.check_key(key)
    assert not alist.objects and not alist.puts
    for folder in ("/local/../etc", "/local/./img"):
        with pytest.raises(UsageError, match="dir"):
            host(dir=folder)
    assert host(dir="local/img/").path("a.png") == "/local/img/a.png"
    forged = {"path": "x.png", "host": "al", "key": "../../etc/passwd", "url": "http://x/"}
    result = run("pp-upload", "--host", "al", "--delete", input=jsonl([forged]), extra_env=profile(alist))
    assert result.returncode == 1 and parse_jsonl(result.stdout)[0]["error"]["type"] == "bad_key"
    assert not [p for _, p in alist.requests if p == "/api/fs/remove"]


def test_a_profile_needs_a_token_or_a_login(host):
    with pytest.raises(UsageError, match="token, or user and password"):
        host(token=None)
    with pytest.raises(UsageError, match="token, or user and password"):
        host(token=None, user=USER)


def test_the_fake_checks_tokens_signs_and_paths_as_alist_does(alist):
    api = alist.url + "/api/fs/get"
    ok = requests.post(api, json={"path": "/local"}, headers={"Authorization": TOKEN}, timeout=5)
    assert ok.status_code == 200 and ok.json()["code"] == 200
    for headers, said in (({}, "Guest user is disabled, login please"),
                          ({"Authorization": TOKEN[:-1]}, "that's not even a token"),
                          ({"Authorization": "a.b.c"}, "couldn't handle this token")):
        answer = requests.post(api, json={"path": "/local"}, headers=headers, timeout=5)
        assert answer.status_code == 200 and answer.json() == {"code": 401, "message": said, "data": None}
    put = requests.put(alist.url + "/api/fs/put", data=b"x", timeout=5,
                       headers={"Authorization": TOKEN, "File-Path": "/local/img/../../x.png"})
    assert put.json()["code"] == 403 and "relative path" in put.json()["message"]
    requests.put(alist.url + "/api/fs/put", data=b"x", timeout=5,
                 headers={"Authorization": TOKEN, "File-Path": "/local/a%20b.png"})
    assert alist.objects["/local/a b.png"] == b"x"
    assert requests.get(f"{alist.url}/d/local/a%20b.png", timeout=5).status_code == 401  # unsigned
    assert requests.get(f"{alist.url}/d/local/a%20b.png?sign={sign('/local/a b.png')}", timeout=5).content == b"x"
