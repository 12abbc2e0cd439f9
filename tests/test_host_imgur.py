"""The imgur host: pp-upload against a fake Imgur API 3 that checks the Client-ID and counts
upload credits. Uploads are not idempotent there (a new image each time): only a request that
Imgur certainly did not act on may be sent again."""

from __future__ import annotations

import json
import time

import pytest
import requests

from conftest import parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.imgur import CLIENT_ID, REVOKED_CLIENT_ID, FakeImgur, ImgurServer
from picpipe.errors import PicpipeError
from picpipe.hosts.imgur import ImgurHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeImgur, ImgurServer) as running:
        yield running


@pytest.fixture
def imgur(server):
    for part in (server.objects, server.deletehashes, server.requests, server.faults):
        part.clear()
    server.client_remaining, server.user_remaining = 12500, 2000
    return server


@pytest.fixture
def host(imgur):
    with host_maker(ImgurHost, name="im", type="imgur", client_id=CLIENT_ID, endpoint=imgur.url + "/3",
                    retries=2) as make:
        yield make


def profile(server: ImgurServer, **extra: str) -> dict[str, str]:
    return profile_env("im", **{"type": "imgur", "endpoint": server.url + "/3", "client_id": CLIENT_ID, "retries": 0,
                                **extra})


def test_upload_is_a_new_image_each_time_and_delete(run, tmp_path, imgur):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(imgur)
    args = ("--host", "im", "--no-dedupe", "--path", "x/{name}{ext}")  # the template does not apply

    first = run("pp-upload", *args, str(a), str(b), str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, (a, b, a)):
        image_id = imgur.deletehashes[record["key"]]  # the key is the deletehash
        assert record["url"] == f"https://i.imgur.com/{image_id}.png" and "reused" not in record
        assert imgur.objects[image_id] == src.read_bytes()
    assert len(imgur.objects) == 3  # no key to clash over, no dedupe by Imgur: three images

    deleted = run("pp-upload", "--host", "im", "--delete", input=first.stdout * 2, extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout)) and not imgur.objects  # 404 = gone


def test_wrong_client_id_is_an_error_record_and_never_printed(run, tmp_path, imgur):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "imgurWrongClient012345"
    result = run("pp-upload", "--host", "im", "--no-dedupe", str(a), extra_env=profile(imgur, client_id=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["status"] == 403 and "Invalid client_id" in error["message"]
    assert "client_id" in error["hint"]
    assert wrong not in result.stdout + result.stderr and CLIENT_ID not in result.stdout + result.stderr


def test_the_fake_rejects_revoked_and_missing_client_ids(imgur):
    url = imgur.url + "/3/image"
    ok = requests.post(url, headers={"Authorization": f"Client-ID {CLIENT_ID}"}, files={"image": ("a.png", b"x")},
                       data={"type": "file"}, timeout=5)
    assert ok.status_code == 200 and ok.json()["data"]["deletehash"]
    revoked = requests.post(url, headers={"Authorization": f"Client-ID {REVOKED_CLIENT_ID}"}, timeout=5)
    assert revoked.status_code == 403 and revoked.json() == {
        "data": {"error": "Invalid client_id", "request": "/3/image", "method": "POST"}, "success": False,
        "status": 403}
    assert requests.post(url, timeout=5).status_code == 401


def test_an_upload_is_repeated_only_when_imgur_did_not_act(host, imgur):
    imgur.faults.append(Fault(500))  # it may have stored the image: not sent again
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "server_error" and imgur.count("POST") == 1

    imgur.faults.append(Fault(503))  # a proxy may say 503 after Imgur stored it: not sent again either
    with pytest.raises(PicpipeError):
        host().put("a.png", b"a", "image/png")
    assert imgur.count("POST") == 2

    imgur.faults.append(Fault(429, headers={"Retry-After": "0"}))  # it did not act: sent again
    stored = host().put("a.png", b"a", "image/png")
    assert imgur.count("POST") == 4 and imgur.objects[imgur.deletehashes[stored.key]] == b"a"


def test_a_used_up_allowance_says_when_it_comes_back(host, imgur):
    imgur.user_remaining = 5
    with pytest.raises(PicpipeError) as caught:
        host(retries="0").put("a.png", b"a", "image/png")
    assert caught.value.type == "rate_limited" and caught.value.extra["status"] == 429
    assert time.strftime("%H:%M", time.gmtime(imgur.user_reset)) in (caught.value.hint or "")
    imgur.user_remaining, imgur.client_remaining = 2000, 0
    with pytest.raises(PicpipeError) as caught:
        host(retries="0").put("a.png", b"a", "image/png")
    assert "application's daily" in (caught.value.hint or "")


def test_imgur_error_objects_are_read(host, imgur):
    body = {"data": {"error": {"code": 1003, "message": "File type invalid (1)", "type": "ImgurException"}},
            "success": False, "status": 400}
    imgur.faults.append(Fault(400, body=json.dumps(body).encode()))
    with pytest.raises(PicpipeError) as caught:
        host().put("a.txt", b"a", "text/plain")
    assert caught.value.extra["code"] == "1003" and "File type invalid" in caught.value.message


def test_a_base_url_puts_the_link_behind_a_cdn(host, imgur):
    stored = host(base_url="https://img.example.com/i/").put("a.png", b"a", "image/png")
    image_id = imgur.deletehashes[stored.key]
    assert stored.url == f"https://img.example.com/i/{image_id}.png"
