"""The chevereto and imgbb hosts: pp-upload against a fake Chevereto API V1 and ImgBB
(tests/fakes/chevereto.py) that check the API key the way each reads it (header or field)."""

from __future__ import annotations

import pytest
import requests

from conftest import parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.chevereto import API_KEY, IMGBB_KEY, CheveretoServer, FakeChevereto
from picpipe.errors import PicpipeError
from picpipe.hosts.chevereto import CheveretoHost
from picpipe.hosts.imgbb import ImgbbHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeChevereto, CheveretoServer) as running:
        yield running


@pytest.fixture
def chv(server):
    for part in (server.objects, server.images, server.requests, server.faults, server.key_via):
        part.clear()
    server.version, server.duplicates, server.moderate = "4", True, False
    return server


@pytest.fixture
def host(chv):
    with host_maker(CheveretoHost, name="cv", type="chevereto", url=chv.url, api_key=API_KEY, retries=2) as make:
        yield make


def profile(server: CheveretoServer, **extra: str) -> dict[str, str]:
    return profile_env("cv", **{"type": "chevereto", "url": server.url, "api_key": API_KEY, "retries": 0, **extra})


def imgbb_profile(server: CheveretoServer, **extra: str) -> dict[str, str]:
    return profile_env("bb", **{"type": "imgbb", "endpoint": server.url + "/1/upload", "api_key": IMGBB_KEY,
                                "retries": 0, **extra})


def test_upload_and_delete_on_chevereto_4(run, tmp_path, chv):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(chv, album_id="Xy1")
    first = run("pp-upload", "--host", "cv", "--no-dedupe", "--path", "x/{name}{ext}", str(a), str(b),
                extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, (a, b)):
        assert record["key"].startswith(chv.url + "/image/") and "/delete/" in record["key"]
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
    assert chv.key_via == ["header", "header"]  # V4: X-API-Key

    deleted = run("pp-upload", "--host", "cv", "--delete", input=first.stdout * 2, extra_env=env)
    assert deleted.returncode == 0, deleted.stderr  # the second time: 404, gone already
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout)) and not chv.images and not chv.objects


def test_chevereto_3_takes_the_key_as_a_field(host, chv):
    chv.version = "3"
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")  # a V3 site reads no header
    assert caught.value.type == "auth" and "No key provided" in caught.value.message
    assert 'version = "3"' in (caught.value.hint or "")
    stored = host(version="3").put("a.png", b"a", "image/png")
    assert chv.key_via == ["field"] and stored.key.startswith(chv.url)


def test_wrong_key_is_an_error_record_and_never_printed(run, tmp_path, chv):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "chv_Wrong_0123456789abcdefABCDEF01234567"
    result = run("pp-upload", "--host", "cv", "--no-dedupe", str(a), extra_env=profile(chv, api_key=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["code"] == "100" and error["status"] == 400
    assert "Invalid API key." in error["message"] and "api_key" in error["hint"]
    assert wrong not in result.stdout + result.stderr and API_KEY not in result.stdout + result.stderr


def test_duplicate_protection_is_a_conflict(host, chv):
    chv.duplicates = False
    host().put("a.png", b"a", "image/png")
    with pytest.raises(PicpipeError) as caught:
        host().put("b.png", b"a", "image/png")
    assert caught.value.type == "conflict" and "Duplicated upload" in caught.value.message
    assert "pp-mark find" in (caught.value.hint or "") and len(chv.images) == 1


def test_an_upload_is_repeated_only_when_chevereto_did_not_act(host, chv):
    chv.faults.append(Fault(500))  # it may have stored the image: not sent again
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "server_error" and chv.count("POST") == 1

    chv.faults.append(Fault(429, headers={"Retry-After": "0"}))  # it did not act: sent again
    stored = host().put("a.png", b"a", "image/png")
    assert chv.count("POST") == 3 and len(chv.images) == 1

    chv.faults.append(Fault(503))  # the deletion link is asked for again
    host().delete(stored.key)
    assert not chv.images


def test_an_image_awaiting_moderation_is_an_error(host, chv):
    chv.moderate = True
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "pending" and "/delete/" in (caught.value.hint or "")


def test_a_deletion_link_elsewhere_is_refused(host, chv):
    for key in ("https://elsewhere.example/image/ab/delete/cd", chv.url + "/image/ab"):
        with pytest.raises(PicpipeError) as caught:
            host().delete(key)
        assert caught.value.type == "bad_key"
    assert not chv.requests


def test_a_profile_with_only_an_endpoint_deletes_on_the_api_site(host, chv):
    # No url: the site is the endpoint's host, as EasyImage's is (the links were refused as foreign).
    only_endpoint = host(url="", endpoint=chv.url + "/api/1/upload")
    stored = only_endpoint.put("a.png", b"a", "image/png")
    only_endpoint.delete(stored.key)
    assert not chv.images
    with pytest.raises(PicpipeError) as caught:
        only_endpoint.delete("https://elsewhere.example/image/ab/delete/cd")
    assert caught.value.type == "bad_key"


def test_imgbb_upload_and_no_api_delete(run, tmp_path, chv):
    a = image(tmp_path / "a.png", (1, 2, 3))
    env = imgbb_profile(chv)
    first = run("pp-upload", "--host", "bb", "--no-dedupe", str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    assert requests.get(record["url"], timeout=5).content == a.read_bytes()
    assert record["key"].startswith(chv.url + "/") and "/delete/" not in record["key"]  # data.delete_url

    deleted = run("pp-upload", "--host", "bb", "--delete", input=first.stdout, extra_env=env)
    assert deleted.returncode == 1
    error = parse_jsonl(deleted.stdout)[0]["error"]
    assert error["type"] == "not_supported" and record["key"] in error["message"] and len(chv.images) == 1


def test_imgbb_wrong_key(run, tmp_path, chv):
    a = image(tmp_path / "a.png", (1, 2, 3))
    wrong = "ffffffffffffffffffffffffffffffff"
    result = run("pp-upload", "--host", "bb", "--no-dedupe", str(a), extra_env=imgbb_profile(chv, api_key=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and "Invalid API v1 key." in error["message"] and "api.imgbb.com" in error["hint"]
    assert wrong not in result.stdout + result.stderr and IMGBB_KEY not in result.stdout + result.stderr


def test_imgbb_needs_no_url_and_sends_the_key_in_the_body(chv):
    bb = ImgbbHost({"name": "bb", "type": "imgbb", "api_key": IMGBB_KEY, "endpoint": chv.url + "/1/upload"})
    try:
        bb.put("a.png", b"a", "image/png")
    finally:
        bb.close()
    assert chv.requests[-1] == ("POST", "/1/upload")  # the key is not in the URL
    assert ImgbbHost({"name": "bb", "type": "imgbb", "api_key": IMGBB_KEY}).api == "https://api.imgbb.com/1/upload"
