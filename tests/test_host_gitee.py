"""The gitee host: pp-upload against a fake Gitee API v5 (tokens as `access_token` fields, POST to
create, "already exists" for a taken path). The blob-sha logic is GitHubHost's, tested there."""

from __future__ import annotations

import pytest
import requests

from conftest import parse_jsonl
from fakehost import host_maker, profile_env, serving
from fakes.gitee import EXPIRED_TOKEN, TOKEN, FakeGitee, GiteeServer
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.gitee import GiteeHost
from picpipe.redact import redact_text
from test_upload import image

RAW = "https://gitee.com/octo/pics/raw/master/"


@pytest.fixture(scope="module")
def server():
    with serving(FakeGitee, GiteeServer) as running:
        yield running


@pytest.fixture
def gitee(server):
    for part in (server.objects, server.commits, server.requests, server.faults):
        part.clear()
    server.taken_message = "A file with this name already exists"
    return server


@pytest.fixture
def host(gitee):
    with host_maker(GiteeHost, name="ge", type="gitee", repo="octo/pics", token=TOKEN, endpoint=gitee.url + "/api/v5",
                    retries=1) as make:
        yield make


def profile(server: GiteeServer, **extra: str) -> dict[str, str]:
    return profile_env("ge", **{"type": "gitee", "endpoint": server.url + "/api/v5", "repo": "octo/pics",
                                "token": TOKEN, "retries": 1, **extra})


def test_upload_reuse_conflict_overwrite_delete(run, tmp_path, gitee):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(gitee)
    args = ("--host", "ge", "--no-dedupe", "--path", "x/{name}{ext}")

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    assert record["key"] == "x/logo.png" and record["url"] == RAW + "x/logo.png"
    assert gitee.objects["x/logo.png"] == a.read_bytes()
    assert first.stderr.count("Gitee blocks images embedded from other sites") == 1

    both = run("pp-upload", *args, str(a), str(b), extra_env=env)
    assert both.returncode == 1
    reused, clash = parse_jsonl(both.stdout)
    assert reused["reused"] is True and reused["url"] == record["url"]
    assert clash["error"]["type"] == "conflict" and gitee.objects["x/logo.png"] == a.read_bytes()
    assert both.stderr.count("Gitee blocks") == 1  # once per run

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert gitee.objects["x/logo.png"] == b.read_bytes() and len(gitee.commits) == 2

    twice = run("pp-upload", "--host", "ge", "--delete", input=replaced.stdout * 2, extra_env=env)
    assert twice.returncode == 0, twice.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(twice.stdout)) and not gitee.objects
    assert "Gitee blocks" not in twice.stderr

    writes = [(m, p) for m, p in gitee.requests if m in ("POST", "PUT")]
    assert {m for m, _ in writes} == {"POST", "PUT"} and not any("access_token" in p for _, p in writes)


def test_the_chinese_already_exists_message_is_understood_too(host, gitee):
    gitee.taken_message = "文件已经存在"
    ge = host()
    ge.put("a.png", b"a", "image/png")
    assert ge.put("a.png", b"a", "image/png").reused
    with pytest.raises(PicpipeError) as caught:
        ge.put("a.png", b"b", "image/png")
    assert caught.value.type == "conflict" and gitee.objects["a.png"] == b"a"


def test_wrong_token_is_an_error_record_and_never_printed(run, tmp_path, gitee):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "giteeWrongWrong0123456789"
    result = run("pp-upload", "--host", "ge", "--no-dedupe", str(a), extra_env=profile(gitee, token=wrong))
    assert result.returncode == 1
    error = parse_jsonl(result.stdout)[0]["error"]
    assert error["type"] == "auth" and "Access token does not exist" in error["message"]
    assert "personal access token" in error["hint"]
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_the_fake_rejects_expired_and_missing_tokens(gitee):
    repo = f"{gitee.url}/api/v5/repos/octo/pics"
    assert requests.get(repo, params={"access_token": TOKEN}, timeout=5).status_code == 200
    expired = requests.get(repo, params={"access_token": EXPIRED_TOKEN}, timeout=5)
    assert expired.status_code == 401 and expired.json()["message"] == "401 Unauthorized: Access token is expired"
    assert requests.post(repo + "/contents/a.png", data={"content": "eA==", "message": "m"}, timeout=5
                         ).status_code == 401
    assert requests.get(repo + "/contents/none.png", params={"access_token": TOKEN}, timeout=5).json() == []


def test_settings_and_the_token_in_a_query_is_masked(host):
    assert host(branch="pages").url("a b.png") == "https://gitee.com/octo/pics/raw/pages/a%20b.png"
    assert host(base_url="https://img.example.com").url("a.png") == "https://img.example.com/a.png"
    with pytest.raises(UsageError, match="cdn"):
        host(cdn="jsdelivr")
    # GET and DELETE take the token only in the query: any URL that reaches a message is masked.
    assert TOKEN not in redact_text(f"GET https://gitee.com/api/v5/repos/o/r/contents/a.png?access_token={TOKEN}")
