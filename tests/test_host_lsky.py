"""The lsky host: pp-upload against a fake Lsky Pro (2.x and 1.x APIs, tests/fakes/lsky.py) that checks
the token, stores the same bytes once per strategy, and answers refusals in Lsky's own shapes."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.lsky import TOKEN, V1_TOKEN, FakeLsky, LskyServer
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.lsky import LskyHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeLsky, LskyServer) as running:
        yield running


@pytest.fixture
def lsky(server):
    for part in (server.objects, server.images, server.entries, server.requests, server.faults, server.forms):
        part.clear()
    server.max_rows = 100
    return server


@pytest.fixture
def host(lsky):
    with host_maker(LskyHost, name="ls", type="lsky", url=lsky.url, token=TOKEN, retries=0) as make:
        yield make


def profile(server: LskyServer, **extra: str) -> dict[str, str]:
    return profile_env("ls", **{"type": "lsky", "url": server.url, "token": TOKEN, "retries": 0, **extra})


def test_upload_and_delete_with_lsky_2(run, tmp_path, lsky):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(lsky, strategy_id="2", permission="public")
    args = ("--host", "ls", "--no-dedupe", "-j", "1", "--path", "x/{name}{ext}")  # the template does not apply

    first = run("pp-upload", *args, str(a), str(b), str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, (a, b, a)):
        assert record["key"] in lsky.images and "reused" not in record  # the key is Lsky's image key
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
    assert records[0]["url"] == records[2]["url"] and records[0]["key"] != records[2]["key"]  # stored once
    assert len(lsky.objects) == 2 and lsky.forms[0] == {"strategy_id": "2", "permission": "1"}

    deleted = run("pp-upload", "--host", "ls", "--delete", input=first.stdout, extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout)) and not lsky.images and not lsky.objects
    again = run("pp-upload", "--host", "ls", "--delete", input=first.stdout, extra_env=env)
    assert again.returncode == 0, again.stderr  # Lsky answers success for keys already gone


def test_wrong_token_is_an_error_record_and_never_printed(run, tmp_path, lsky):
    a = image(tmp_path / "a.png", (9, 9, 9))
    for version, wrong in (("2", "1|lskyWrongWrong0123456789"), ("1", "lskyV1WrongWrong0123456")):
        result = run("pp-upload", "--host", "ls", "--no-dedupe", str(a),
                     extra_env=profile(lsky, token=wrong, version=version))
        assert result.returncode == 1
        error = parse_jsonl(result.stdout)[0]["error"]
        assert error["type"] == "auth" and error["status"] == 401, error
        assert ("Authentication failed." if version == "2" else "认证失败") in error["message"]
        assert "token" in error["hint"] and "/api/v1/tokens" in error["hint"]
        assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
    assert not lsky.objects


def test_the_fake_wants_bearer_and_json(lsky):
    upload = lsky.url + "/api/v1/upload"
    files = {"file": ("a.png", b"a")}
    ok = requests.post(upload, headers={"Authorization": f"Bearer {TOKEN}", "Accept": "application/json"},
                       files=files, timeout=5)
    assert ok.status_code == 200 and ok.json()["status"] is True and ok.json()["data"]["links"]["url"]
    bare = requests.post(upload, headers={"Authorization": TOKEN, "Accept": "application/json"}, files=files,
                         timeout=5)
    assert bare.status_code == 401 and bare.json() == {"status": False, "message": "Authentication failed.",
                                                       "data": {}}
    html = requests.post(upload, headers={"Authorization": "Bearer nope"}, files=files, timeout=5,
                         allow_redirects=False)
    assert html.status_code == 302  # no Accept: application/json: Laravel sends a browser to /login
    guest = requests.post(upload, headers={"Accept": "application/json"}, files=files, timeout=5)
    assert guest.status_code == 200 and guest.json()["status"] is False


def test_piclist_style_bearer_token_is_accepted(host, lsky):
    stored = host(token=f"Bearer {TOKEN}").put("a.png", b"a", "image/png")
    assert stored.key in lsky.images


def test_a_refusal_with_http_200_is_an_error(host, lsky):
    with pytest.raises(PicpipeError) as caught:
        host(strategy_id="9").put("a.png", b"a", "image/png")
    assert caught.value.type == "rejected" and "选定的策略不存在" in caught.value.message
    assert "strategy_id" in (caught.value.hint or "")


def test_an_upload_is_retried_after_a_5xx_and_stored_once(host, lsky):
    lsky.faults.append(Fault(503))
    stored = host(retries="2").put("a.png", b"a", "image/png")
    assert lsky.count("POST") == 2 and lsky.objects == {lsky.images[stored.key]["pathname"]: b"a"}

    # As if Lsky stored it and then a proxy failed: the retry gets the same file at the same URL.
    first = host().put("b.png", b"b", "image/png")
    lsky.faults.append(Fault(502))
    second = host(retries="1").put("b.png", b"b", "image/png")
    assert second.url == first.url and len(lsky.objects) == 2


def test_lsky_1_upload_and_delete_through_the_list(run, tmp_path, lsky):
    lsky.max_rows = 2  # the entries are found on later pages of the list
    pictures = [image(tmp_path / f"{n}.png", (n * 40, 0, 0)) for n in range(5)]
    env = profile(lsky, version="1", token=V1_TOKEN)
    first = run("pp-upload", "--host", "ls", "--no-dedupe", "-j", "1", *map(str, pictures), str(pictures[4]),
                extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, [*pictures, pictures[4]]):
        assert record["key"] == record["url"]  # 1.x names no image id
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
    assert len(lsky.entries) == 6 and len(lsky.objects) == 5

    deleted = run("pp-upload", "--host", "ls", "--delete", input=json.dumps(records[4]) + "\n", extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert parse_jsonl(deleted.stdout)[0]["deleted_at"]
    assert len(lsky.entries) == 4 and records[4]["url"] not in {e["url"] for e in lsky.entries.values()}
    assert requests.get(records[4]["url"], timeout=5).status_code == 404
    gone = run("pp-upload", "--host", "ls", "--delete", input=json.dumps(records[4]) + "\n", extra_env=env)
    assert gone.returncode == 0, gone.stderr  # no entry at that URL any more: nothing left to delete


def test_lsky_1_refusals_are_not_retried(host, lsky):
    lsky.faults.append(Fault(500, body=json.dumps({"code": 500, "msg": "上传失败，请检查策略配置是否正确！",
                                                   "data": [], "time": 0}, ensure_ascii=False).encode()))
    with pytest.raises(PicpipeError) as caught:
        host(version="1", token=V1_TOKEN, retries="3").put("a.png", b"a", "image/png")
    assert caught.value.type == "rejected" and "策略配置" in caught.value.message and lsky.count("POST") == 1


def test_profile_mistakes_are_usage_errors(lsky):
    for extra in ({"version": "3"}, {"version": "1", "strategy_id": "1"}, {"permission": "everyone"}):
        with pytest.raises(UsageError):
            LskyHost({"name": "ls", "type": "lsky", "url": lsky.url, "token": TOKEN, **extra})
    with pytest.raises(UsageError):
        LskyHost({"name": "ls", "type": "lsky", "token": TOKEN})  # no url
