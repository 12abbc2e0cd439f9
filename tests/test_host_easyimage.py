"""The easyimage host: pp-upload against a fake EasyImage 2.0 (tests/fakes/easyimage.py) that checks the
token and answers every refusal with HTTP 200 and "result": "failed", as EasyImage does."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.easyimage import EXPIRED_TOKEN, TOKEN, EasyImageServer, FakeEasyImage
from picpipe.errors import PicpipeError
from picpipe.hosts.easyimage import EasyImageHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeEasyImage, EasyImageServer) as running:
        yield running


@pytest.fixture
def easy(server):
    for part in (server.objects, server.hashes, server.requests, server.faults):
        part.clear()
    server.api_open = server.user_delete = server.recycle = True
    server.max_size = 5 * 1024 * 1024
    return server


@pytest.fixture
def host(easy):
    with host_maker(EasyImageHost, name="ei", type="easyimage", url=easy.url, token=TOKEN, retries=2) as make:
        yield make


def profile(server: EasyImageServer, **extra: str) -> dict[str, str]:
    return profile_env("ei", **{"type": "easyimage", "url": server.url, "token": TOKEN, "retries": 0, **extra})


def test_upload_is_a_new_file_each_time_and_delete(run, tmp_path, easy):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(easy)
    first = run("pp-upload", "--host", "ei", "--no-dedupe", "--path", "x/{name}{ext}", str(a), str(b), str(a),
                extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, (a, b, a)):
        assert record["key"].startswith(easy.url + "/app/del.php?hash=") and "reused" not in record
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
    assert len(easy.objects) == 3  # EasyImage does not dedupe: the ledger does (here turned off)

    deleted = run("pp-upload", "--host", "ei", "--delete", input=first.stdout * 2, extra_env=env)
    assert deleted.returncode == 0, deleted.stderr  # the second time: "文件不存在", already gone
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout)) and not easy.objects
    assert requests.get(records[0]["url"], timeout=5).status_code == 404


def test_wrong_token_with_http_200_is_an_error_record_and_never_printed(run, tmp_path, easy):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "0123456789abcdef0123456789abcdef"
    result = run("pp-upload", "--host", "ei", "--no-dedupe", str(a), extra_env=profile(easy, token=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["code"] == "202" and error["status"] == 200
    assert "Token Error" in error["message"] and "API设置" in error["hint"]
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr
    assert not easy.objects


@pytest.mark.parametrize("setup, token, kind, code, said", [
    ({}, EXPIRED_TOKEN, "auth", "203", "expired"),
    ({"api_open": False}, TOKEN, "auth", "201", "turned API uploads off"),
    ({"max_size": 10}, TOKEN, "rejected", "400", "size, width/height"),
])
def test_refusals_are_error_records_with_hints(host, easy, setup, token, kind, code, said):
    for name, value in setup.items():
        setattr(easy, name, value)
    with pytest.raises(PicpipeError) as caught:
        host(token=token).put("a.png", b"a" * 100, "image/png")
    assert (caught.value.type, caught.value.extra["code"]) == (kind, code) and said in (caught.value.hint or "")


def test_the_fake_answers_failures_with_http_200(easy):
    api = easy.url + "/api/index.php"
    missing = requests.post(api, data={"token": TOKEN}, timeout=5)
    assert missing.status_code == 200 and missing.json() == {"result": "failed", "code": 204,
                                                             "message": "没有选择上传的文件"}
    wrong = requests.post(api, data={"token": "x"}, files={"image": ("a.png", b"a")}, timeout=5)
    assert wrong.status_code == 200 and wrong.json()["code"] == 202


def test_an_upload_is_repeated_only_when_easyimage_did_not_act(host, easy):
    easy.faults.append(Fault(502))  # it may have stored the file: not sent again
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "server_error" and easy.count("POST") == 1

    easy.faults.append(Fault(429, headers={"Retry-After": "0"}))  # it did not act: sent again
    stored = host().put("a.png", b"a", "image/png")
    assert easy.count("POST") == 3 and list(easy.objects.values()) == [b"a"]

    easy.faults.append(Fault(503))  # a deletion is repeated: the same link again does no harm
    host().delete(stored.key)
    assert not easy.objects


def test_no_deletion_link_means_delete_says_so(run, tmp_path, easy):
    easy.user_delete = False
    a = image(tmp_path / "a.png", (1, 2, 3))
    env = profile(easy)
    first = run("pp-upload", "--host", "ei", "--no-dedupe", str(a), extra_env=env)
    [record] = parse_jsonl(first.stdout)
    assert record["key"] == record["url"]
    deleted = run("pp-upload", "--host", "ei", "--delete", input=first.stdout, extra_env=env)
    assert deleted.returncode == 1
    error = parse_jsonl(deleted.stdout)[0]["error"]
    assert error["type"] == "not_supported" and "admin" in error["hint"] and len(easy.objects) == 1


def test_a_deletion_link_to_another_site_is_refused(host, easy):
    with pytest.raises(PicpipeError) as caught:
        host().delete("https://elsewhere.example/app/del.php?hash=abc")
    assert caught.value.type == "bad_key" and not easy.requests


def test_the_own_site_is_the_scheme_host_and_port_without_case(host, easy):
    """Host.on_own_site, which EasyImage and Chevereto ask before a deletion link is sent."""
    own = host(url="http://Img.Example.com:8080", endpoint=easy.url + "/api/index.php")
    assert own.on_own_site("HTTP://img.example.COM:8080/app/del.php?hash=a", own.site, own.api)
    assert own.on_own_site(easy.url + "/app/del.php?hash=a", own.site, own.api)  # the API's host
    assert not own.on_own_site("https://img.example.com:8080/x", own.site)  # another scheme
    assert not own.on_own_site("http://img.example.com/x", own.site)  # another port
    assert not own.on_own_site("http://user@img.example.com:8080/x", own.site)  # userinfo: another netloc
    assert not own.on_own_site("http://img.example.com:8080/x", None)
    assert own.foreign_link("https://elsewhere.example/x").type == "bad_key"


def test_a_base_url_puts_the_link_behind_a_cdn(host, easy):
    stored = host(base_url="https://img.example.com").put("a.png", b"a", "image/png")
    path = next(iter(easy.objects))
    assert stored.url == f"https://img.example.com/i/{path}"
    host().delete(stored.key)  # the deletion link still goes to the site
    assert json.dumps(easy.objects) == "{}"
