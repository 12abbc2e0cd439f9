"""The github host: pp-upload against a fake GitHub contents API that checks tokens, answers 422
for taken paths and 409 for racing commits; git blob shas against git's documented vector (there
is no official SDK to compare with: the token is sent as it is, nothing is signed)."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time

import pytest
import requests

from conftest import parse_jsonl
from fakehost import Fault, host_maker, profile_env, serving
from fakes.github import EXPIRED_TOKEN, TOKEN, FakeGitHub, GitHubServer, blob_sha
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts.github import GitHubHost, git_blob_sha
from test_upload import image

RAW = "https://raw.githubusercontent.com/octo/pics/main/"


@pytest.fixture(scope="module")
def server():
    with serving(FakeGitHub, GitHubServer) as running:
        yield running


@pytest.fixture
def github(server):
    """The module's fake, emptied for each test (one server: its shutdown costs half a second)."""
    for part in (server.objects, server.commits, server.requests, server.faults):
        part.clear()
    server.races, server.hold = 0, 0.02
    return server


@pytest.fixture
def host(github):
    """Build GitHubHost objects on the fake, in this process (for what needs no command line)."""
    with host_maker(GitHubHost, name="gh", type="github", repo="octo/pics", token=TOKEN, endpoint=github.url,
                    retries=1) as make:
        yield make


def profile(server: GitHubServer, **extra: str) -> dict[str, str]:
    return profile_env("gh", **{"type": "github", "endpoint": server.url, "repo": "octo/pics", "token": TOKEN,
                                "retries": 1, **extra})


def test_git_blob_sha_matches_git():
    """git-scm.com/book/en/v2/Git-Internals-Git-Objects: `test content\\n` → d670460b…"""
    assert git_blob_sha(b"test content\n") == "d670460b4b4aece5915caf5c68d12f560a9fe3e4"
    assert git_blob_sha(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    assert blob_sha(b"test content\n") == git_blob_sha(b"test content\n")  # the fake agrees
    if shutil.which("git"):
        data = bytes(range(256)) * 3
        out = subprocess.run(["git", "hash-object", "--stdin"], input=data, capture_output=True, check=True)
        assert out.stdout.decode().strip() == git_blob_sha(data)


def test_upload_reuse_conflict_overwrite_delete(run, tmp_path, github):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    env = profile(github)
    args = ("--host", "gh", "--no-dedupe", "--path", "blog/{name} 图{ext}")

    first = run("pp-upload", *args, str(a), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    assert record["key"] == "blog/logo 图.png" and "reused" not in record
    assert record["url"] == RAW + "blog/logo%20%E5%9B%BE.png"
    assert github.objects["blog/logo 图.png"] == a.read_bytes() and len(github.commits) == 1

    both = run("pp-upload", *args, str(a), str(b), extra_env=env)  # the same image, then another one
    assert both.returncode == 1
    reused, clash = parse_jsonl(both.stdout)
    assert reused["reused"] is True and reused["url"] == record["url"]
    assert clash["error"]["type"] == "conflict" and "--overwrite" in clash["error"]["hint"] and "url" not in clash
    assert github.objects["blog/logo 图.png"] == a.read_bytes()
    assert len(github.commits) == 1  # compared by blob sha: nothing downloaded, nothing committed

    replaced = run("pp-upload", *args, "--overwrite", str(b), extra_env=env)
    assert replaced.returncode == 0, replaced.stderr
    assert github.objects["blog/logo 图.png"] == b.read_bytes() and len(github.commits) == 2

    twice = run("pp-upload", "--host", "gh", "--delete", input=replaced.stdout * 2, extra_env=env)
    assert twice.returncode == 0, twice.stderr
    assert all(r["deleted_at"] for r in parse_jsonl(twice.stdout))  # the second found it gone: deleted
    assert "blog/logo 图.png" not in github.objects and len(github.commits) == 3


def test_overwrite_with_the_same_bytes_makes_no_commit(host, github):
    gh = host()
    gh.put("a.png", b"one", "image/png")
    assert gh.put("a.png", b"one", "image/png", overwrite=True).reused
    assert not gh.put("a.png", b"two", "image/png", overwrite=True).reused
    assert github.objects["a.png"] == b"two" and len(github.commits) == 2


def test_jsdelivr_urls_name_the_commit_and_base_url_wins(host, github):
    gh = host(cdn="jsdelivr")
    first = gh.put("img/a.png", b"a", "image/png")
    commit = github.commits[-1][0]
    assert first.url == f"https://cdn.jsdelivr.net/gh/octo/pics@{commit}/img/a.png"
    gh.put("img/b.png", b"b", "image/png")
    again = gh.put("img/a.png", b"a", "image/png")  # reused: the commit that last wrote img/a.png
    assert again.reused and again.url == first.url
    assert host(cdn="jsdelivr", base_url="https://img.example.com/").url("img/a.png") == \
        "https://img.example.com/img/a.png"
    assert host(branch="gh-pages").url("a b.png") == "https://raw.githubusercontent.com/octo/pics/gh-pages/a%20b.png"
    with pytest.raises(UsageError, match="cdn"):
        host(cdn="fastly")
    with pytest.raises(UsageError, match="owner/name"):
        host(repo="just-a-name")


def test_wrong_token_is_an_error_record_with_a_hint_and_never_printed(run, tmp_path, github):
    a = image(tmp_path / "a.png", (9, 9, 9))
    wrong = "ghp_wrongWrongWrong0123456789"
    result = run("pp-upload", "--host", "gh", "--no-dedupe", str(a), extra_env=profile(github, token=wrong))
    assert result.returncode == 1
    [record] = parse_jsonl(result.stdout)
    error = record["error"]
    assert error["type"] == "auth" and error["status"] == 401 and "Bad credentials" in error["message"]
    assert "token" in error["hint"] and error["request_id"] == "FAKE:1"
    assert wrong not in result.stdout + result.stderr and TOKEN not in result.stdout + result.stderr


def test_a_repository_out_of_reach_is_not_found_even_for_delete(host):
    """GitHub answers 404 for a file and for a repository the token cannot see: delete tells them apart."""
    for act in (lambda gh: gh.put("x.png", b"x", "image/png"), lambda gh: gh.delete("x.png")):
        with pytest.raises(PicpipeError) as caught:
            act(host(repo="octo/private"))
        assert caught.value.type == "not_found" and "Contents" in (caught.value.hint or "")


def test_the_fake_rejects_expired_and_missing_tokens(host, github):
    repo = f"{github.url}/repos/octo/pics"
    assert requests.get(repo, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code == 200
    for headers in ({"Authorization": f"Bearer {EXPIRED_TOKEN}"}, {}, {"Authorization": "Bearer " + TOKEN[:-1]}):
        answer = requests.get(repo, headers=headers, timeout=5)
        assert answer.status_code == 401 and answer.json()["message"] == "Bad credentials"
    with pytest.raises(PicpipeError) as caught:
        host(token=EXPIRED_TOKEN).put("a.png", b"a", "image/png")
    assert caught.value.type == "auth" and caught.value.extra["status"] == 401


def test_the_fake_refuses_parallel_commits(github):
    github.hold = 0.3
    answers: list[int] = []

    def put(name: str) -> None:
        body = {"message": "m", "content": "eA==", "branch": "main"}
        answers.append(requests.put(f"{github.url}/repos/octo/pics/contents/{name}", data=json.dumps(body),
                                    headers={"Authorization": f"Bearer {TOKEN}"}, timeout=5).status_code)

    threads = [threading.Thread(target=put, args=(n,)) for n in ("a", "b")]
    for t in threads:
        t.start()
        time.sleep(0.05)
    for t in threads:
        t.join()
    assert sorted(answers) == [201, 409] and github.races == 1


def test_parallel_uploads_commit_one_at_a_time(host, github):
    gh = host()
    threads = [threading.Thread(target=gh.put, args=(f"{i}.png", bytes([i]), "image/png")) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert github.races == 0 and len(github.objects) == 6 and len(github.commits) == 6


def test_a_race_lost_is_retried(host, github):
    github.faults.append(Fault(409, body=b'{"message": "refs/heads/main is at a newer commit than expected"}'))
    assert not host().put("a.png", b"a", "image/png").reused
    assert github.objects["a.png"] == b"a" and [m for m, _ in github.requests].count("PUT") == 2


def test_a_retried_write_never_makes_a_second_commit(host, github):
    """The first PUT lands after the client gave up; the retry finds it (422, same blob: reused)."""
    github.faults.append(Fault.slow(0.6))
    host(timeout="0.3", retries="3").put("a.png", b"a", "image/png")
    time.sleep(0.5)  # let the slow request finish
    assert [m for m, _ in github.requests].count("PUT") >= 2  # it was sent again
    assert github.objects["a.png"] == b"a" and len(github.commits) == 1


def test_rate_limits_say_when_to_come_back(host, github):
    reset = int(time.time()) + 1800
    github.faults.append(Fault(403, headers={"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(reset)},
                               body=b'{"message": "API rate limit exceeded for user ID 1."}'))
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "rate_limited" and "rate limit exceeded" in caught.value.message
    assert time.strftime("%H:%M", time.gmtime(reset)) in (caught.value.hint or "")
    github.faults.append(Fault(403, headers={"Retry-After": "60"},
                               body=b'{"message": "You have exceeded a secondary rate limit."}'))
    with pytest.raises(PicpipeError) as caught:
        host().put("a.png", b"a", "image/png")
    assert caught.value.type == "rate_limited" and "60 s" in (caught.value.hint or "")
