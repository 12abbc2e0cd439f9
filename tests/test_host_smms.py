"""The smms host: pp-upload against a fake SM.MS API v2 that checks the token, dedupes by content
(image_repeated) and limits floods. SM.MS has no SDK and no signature: the token is sent as is."""

from __future__ import annotations

import json

import pytest
import requests

from conftest import jsonl, parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.smms import RESET_TOKEN, TOKEN, FakeSmms, SmmsServer
from picpipe.errors import PicpipeError
from picpipe.hosts.smms import SmmsHost
from test_upload import image


@pytest.fixture(scope="module")
def server():
    with serving(FakeSmms, SmmsServer) as running:
        yield running


@pytest.fixture
def smms(server):
    for part in (server.objects, server.images, server.uploads, server.requests, server.faults):
        part.clear()
    server.flood_limit = 20
    return server


@pytest.fixture
def host(smms):
    with host_maker(SmmsHost, name="sm", type="smms", token=TOKEN, endpoint=smms.url + "/api/v2", retries=0) as make:
        yield make


def profile(server: SmmsServer, **extra: str) -> dict[str, str]:
    return profile_env("sm", **{"type": "smms", "endpoint": server.url + "/api/v2", "token": TOKEN, "retries": 0,
                                **extra})


def test_upload_reuse_and_delete(run, tmp_path, smms):
    a, b, c = (image(tmp_path / f"{n}" / "logo.png", colour) for n, colour in
               (("a", (200, 0, 0)), ("b", (0, 200, 0)), ("c", (0, 0, 200))))
    env = profile(smms)
    args = ("--host", "sm", "--no-dedupe", "--path", "x/{name}{ext}")  # the template does not apply

    first = run("pp-upload", *args, "-j", "1", str(a), str(b), str(c), extra_env=env)  # a is the oldest
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for record, src in zip(records, (a, b, c)):
        assert record["key"] in smms.images and "reused" not in record  # the key is the delete hash
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
    assert len({r["url"] for r in records}) == 3  # same --path, different images: no conflict on SM.MS

    again = run("pp-upload", *args, str(a), extra_env=env)
    [reused] = parse_jsonl(again.stdout)
    assert again.returncode == 0 and reused["reused"] is True and reused["url"] == records[0]["url"]
    assert reused["key"] == reused["url"] and len(smms.images) == 3  # image_repeated names no hash

    # The reused record's key is its URL: delete finds the hash in the history (a is on its last page).
    deleted = run("pp-upload", "--host", "sm", "--delete", "-j", "1", input=jsonl([reused, records[0]]),
                  extra_env=env)
    assert deleted.returncode == 0, deleted.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(deleted.stdout))  # the second: "File already deleted."
    assert records[0]["key"] not in smms.images and len(smms.images) == 2
    assert requests.get(records[0]["url"], timeout=5).status_code == 404
    assert [p for m, p in smms.requests if "upload_history" in p][-1].endswith("page=2")


def test_wrong_token_is_an_error_record_and_never_printed(run, tmp_path, smms):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "smmsWrongWrong0123456789"
    result = run("pp-upload", "--host", "sm", "--no-dedupe", str(a), extra_env=profile(smms, token=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and error["code"] == "unauthorized" and "Unauthorized" in error["message"]
    assert "sm.ms/home/apitoken" in error["hint"]
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_the_fake_rejects_reset_and_missing_tokens(smms):
    history = smms.url + "/api/v2/upload_history"
    assert requests.get(history, headers={"Authorization": TOKEN}, timeout=5).json()["success"] is True
    for headers in ({"Authorization": RESET_TOKEN}, {}, {"Authorization": f"Bearer {TOKEN}"}):
        answer = requests.get(history, headers=headers, timeout=5)
        assert answer.status_code == 401 and answer.json()["code"] == "unauthorized"


def test_an_error_with_http_200_is_still_an_error(host, smms):
    body = {"success": False, "code": "unauthorized", "message": "Unauthorized.", "data": []}
    smms.faults.append(Fault(200, body=json.dumps(body).encode()))
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "auth" and caught.value.extra["code"] == "unauthorized"


def test_flood_limit_is_rate_limited(host, smms):
    smms.flood_limit = 1
    sm = host()
    sm.put("a.png", b"a", "image/png")
    with pytest.raises(PicpipeError) as caught:
        sm.put("b.png", b"b", "image/png")
    assert caught.value.type == "rate_limited" and "Flood detected" in caught.value.message
    assert "20 uploads an hour" in (caught.value.hint or "")


def test_the_s_ee_compatible_answer_is_accepted(host, smms):
    body = {"success": True, "code": 200, "message": "Upload success.",
            "data": {"url": "https://s.ee/i/abc.png", "hash": "h123", "delete": "https://s.ee/delete/h123"}}
    smms.faults.append(Fault(200, body=json.dumps(body).encode()))
    stored = host().put("a.png", b"a", "image/png")
    assert (stored.key, stored.url, stored.reused) == ("h123", "https://s.ee/i/abc.png", False)
