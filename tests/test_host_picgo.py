"""The picgo host: pp-upload through the real PicGo-Core server (npm picgo 3.1.0 with its S3 plugin,
on a moto bucket; tests/picgoserver.py), through pp-server speaking PicGo's protocol, and through a
fake PicList (tests/fakes/piclist.py: its ?key= and its /delete by gallery id)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests
from test_editors import Server, free_port

from conftest import ROOT, jsonl, parse_jsonl
from fakehost import profile_env, serving
from fakes.piclist import SERVER_KEY, FakePicList, PicListServer
from picgoserver import PicGo, keys, moto_bucket, needs_picgo, stored
from test_upload import image

SECRET = "picgo-Server-Secret-51f0a7"
PREFIX = "viapicgo/"


def profile(url: str, **extra: str) -> dict[str, str]:
    """A picgo profile `pg` from the environment, as a user without a config file writes it."""
    return profile_env("pg", **{"type": "picgo", "url": url, "retries": 1, **extra})


def clean_env(root: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICPIPE_", "PICGO_"))}
    env.update(XDG_CONFIG_HOME=str(root / "c"), XDG_DATA_HOME=str(root / "d"), XDG_CACHE_HOME=str(root / "cache"),
               PYTHONPATH=str(ROOT))
    return env


@pytest.fixture(scope="module")
def bucket() -> Iterator[tuple[str, object]]:
    yield from moto_bucket()


@pytest.fixture(scope="module")
def picgo(bucket, tmp_path_factory) -> Iterator[PicGo]:
    """PicGo-Core's server naming objects by time and the file name it was sent: a second upload of
    the same bytes would be a second object."""
    root = tmp_path_factory.mktemp("picgo")
    server = PicGo(root / "home", bucket[0], clean_env(root), upload_path=PREFIX + "{timestampMS}-{fullName}")
    yield server
    server.stop()


@needs_picgo
def test_upload_through_picgo_then_the_ledger_dedupes(run, tmp_path, picgo, bucket):
    client = bucket[1]
    src = image(tmp_path / "shot.png", (20, 140, 220))
    env = profile(picgo.url)
    before = keys(client, PREFIX)
    first = run("pp-upload", "--host", "pg", "--path", "blog/{sha256:16}{ext}", str(src), extra_env=env)
    assert first.returncode == 0, first.stderr
    [record] = parse_jsonl(first.stdout)
    assert record["host"] == "pg" and record["key"] == record["url"] and "reused" not in record
    assert stored(client, record["url"]) == src.read_bytes()
    [made] = sorted(set(keys(client, PREFIX)) - set(before))
    assert made.endswith("-" + record["sha256"][:16] + ".png")  # the name sent: the key's base name
    assert record["url"].endswith(made)

    assert run("pp-mark", input=first.stdout).returncode == 0  # into the ledger
    again = run("pp-upload", "--host", "pg", str(src), extra_env=env)
    [second] = parse_jsonl(again.stdout)
    assert again.returncode == 0 and second["deduped"] is True and second["url"] == record["url"]
    assert len(keys(client, PREFIX)) == len(before) + 1  # nothing was sent to PicGo
    forced = run("pp-upload", "--host", "pg", "--no-dedupe", str(src), extra_env=env)
    assert forced.returncode == 0 and len(keys(client, PREFIX)) == len(before) + 2  # the count would tell

    # PicGo-Core has no /delete: the record says so and stays.
    gone = run("pp-upload", "--host", "pg", "--delete", input=jsonl([record]), extra_env=env)
    [kept] = parse_jsonl(gone.stdout)
    assert gone.returncode == 1 and kept["error"]["type"] == "not_supported" and "deleted_at" not in kept
    assert "Traceback" not in gone.stderr and stored(client, record["url"]) == src.read_bytes()


@needs_picgo
def test_uploader_and_config_name_errors_are_picgos(run, tmp_path, picgo, bucket):
    src = image(tmp_path / "u.png", (200, 40, 40))
    chosen = run("pp-upload", "--host", "pg", str(src), extra_env=profile(picgo.url, uploader="aws-s3"))
    assert chosen.returncode == 0 and stored(bucket[1], parse_jsonl(chosen.stdout)[0]["url"]) == src.read_bytes()
    for extra, code, said in (({"uploader": "nope"}, "UNKNOWN_UPLOADER", 'Uploader "nope" is not registered. '
                                                                         "Available uploaders: ["),
                              ({"uploader": "aws-s3", "config_name": "nowhere"}, "UPLOAD_CONFIG_NOT_FOUND",
                               'No upload configuration matched configName="nowhere"')):
        done = run("pp-upload", "--host", "pg", "--no-dedupe", str(src), extra_env=profile(picgo.url, **extra))
        [record] = parse_jsonl(done.stdout)
        error = record["error"]
        assert done.returncode == 1 and "Traceback" not in done.stderr and "url" not in record
        assert (error["type"], error["code"], error["status"]) == ("rejected", code, 400)
        assert said in error["message"] and error["hint"]
    twice = run("pp-upload", "--host", "pg", str(src), extra_env=profile(picgo.url, uploader="a", picbed="b"))
    assert twice.returncode == 2 and "picbed is PicList's word" in twice.stderr


def test_picgo_not_running_is_an_error_record_with_a_hint(run, tmp_path):
    src = image(tmp_path / "d.png", (1, 1, 1))
    url = f"http://127.0.0.1:{free_port()}/upload"  # as Typora's setting reads: /upload is dropped
    done = run("pp-upload", "--host", "pg", str(src), extra_env=profile(url, secret=SECRET))
    [record] = parse_jsonl(done.stdout)
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert record["error"]["type"] == "connection_refused" and "PicGo-Server" in record["error"]["hint"]
    assert SECRET not in done.stdout + done.stderr  # the request's ?key= is masked in any message


@needs_picgo
def test_picgo_server_secret_is_sent_and_never_shown(run, tmp_path, bucket):
    server = PicGo(tmp_path / "home", bucket[0], clean_env(tmp_path), secret=SECRET)
    try:
        src = image(tmp_path / "s.png", (9, 99, 9))
        done = run("pp-upload", "--host", "pg", "--debug", str(src), extra_env=profile(server.url, secret=SECRET))
        assert done.returncode == 0, done.stderr
        assert stored(bucket[1], parse_jsonl(done.stdout)[0]["url"]) == src.read_bytes()
        wrong = "not-the-Secret-0000"
        refused = run("pp-upload", "--host", "pg", "--no-dedupe", str(src), extra_env=profile(server.url, secret=wrong))
        [record] = parse_jsonl(refused.stdout)
        assert refused.returncode == 1 and record["error"]["type"] == "auth" and record["error"]["status"] == 401
        assert "--secret" in record["error"]["hint"]
        for output in (done.stdout, done.stderr, refused.stdout, refused.stderr):
            assert SECRET not in output and wrong not in output
    finally:
        server.stop()


def test_piclist_key_gallery_id_and_delete(run, tmp_path):
    with serving(FakePicList, PicListServer) as piclist:
        src = image(tmp_path / "p.png", (90, 0, 90))
        env = profile(piclist.url, picbed="github", secret=SERVER_KEY)
        done = run("pp-upload", "--host", "pg", "--path", "{sha256:12}{ext}", str(src), extra_env=env)
        assert done.returncode == 0, done.stderr
        [record] = parse_jsonl(done.stdout)
        assert record["key"] in piclist.gallery  # PicList's gallery id: what its /delete finds
        assert piclist.gallery[record["key"]]["fileName"] == record["sha256"][:12] + ".png"
        assert requests.get(record["url"], timeout=5).content == src.read_bytes()
        assert piclist.asked[-1] == {"picbed": ["github"], "uploader": ["github"], "key": [SERVER_KEY]}
        assert SERVER_KEY not in done.stdout + done.stderr

        wrong = run("pp-upload", "--host", "pg", "--no-dedupe", str(src),
                    extra_env={**env, "PICPIPE_PG_SECRET": "wrong-Key-for-PicList"})
        [refused] = parse_jsonl(wrong.stdout)
        assert wrong.returncode == 1 and refused["error"]["type"] == "auth"  # HTTP 200, "success": false
        assert "server key is uncorrect" in refused["error"]["message"]
        assert "wrong-Key-for-PicList" not in wrong.stdout + wrong.stderr

        deleted = run("pp-upload", "--host", "pg", "--delete", input=jsonl([record]), extra_env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert parse_jsonl(deleted.stdout)[0]["deleted_at"] and record["key"] not in piclist.gallery
        again = run("pp-upload", "--host", "pg", "--delete", input=jsonl([record]), extra_env=env)
        assert again.returncode == 1 and "delete error" in parse_jsonl(again.stdout)[0]["error"]["message"]

        several = [image(tmp_path / f"{n}.png", (n, 0, 0)) for n in range(4)]
        batch = run("pp-upload", "--host", "pg", "-j", "4", *map(str, several), extra_env=env)
        assert batch.returncode == 0 and len(piclist.gallery) == 4
        assert piclist.most_at_once == 1  # one upload at a time, whatever -j says


def test_pp_server_as_the_picgo_server_upload_base_url_and_delete(run, tmp_path):
    shelf = tmp_path / "shelf"
    config = tmp_path / "server.toml"
    config.write_text(f"""\
ledger = "{tmp_path / 'server-ledger.jsonl'}"

[pipeline]
host = "shelf"
path = "{{sha256:16}}{{ext}}"

[profiles.shelf]
type = "local"
dir = "{shelf}"
base_url = "https://img.example.com/"

[profiles.other]
type = "local"
dir = "{tmp_path / 'other'}"
base_url = "https://other.example.com/"
""")
    (tmp_path / "tmp").mkdir()
    server = Server({**clean_env(tmp_path), "PICPIPE_CONFIG": str(config), "TMPDIR": str(tmp_path / "tmp")}, (),
                    free_port())
    try:
        server.wait_ready()
        src = image(tmp_path / "post" / "a.png", (5, 200, 5))
        env = profile(server.url, uploader="shelf")
        done = run("pp-upload", "--host", "pg", str(src), extra_env=env)
        assert done.returncode == 0, done.stderr
        [record] = parse_jsonl(done.stdout)
        name = record["sha256"][:16] + ".png"
        assert record["url"] == record["key"] == f"https://img.example.com/{name}"
        assert (shelf / name).read_bytes() == src.read_bytes()

        other = image(tmp_path / "post" / "b.png", (5, 5, 200))
        cdn = run("pp-upload", "--host", "pg", str(other),
                  extra_env=profile(server.url, uploader="other", base_url="https://cdn.example.net"))
        [moved] = parse_jsonl(cdn.stdout)
        assert moved["url"] == f"https://cdn.example.net/{moved['sha256'][:16]}.png"  # the origin rewritten
        assert moved["key"] == f"https://other.example.com/{moved['sha256'][:16]}.png"  # what pp-server knows

        deleted = run("pp-upload", "--host", "pg", "--delete", input=jsonl([record]), extra_env=env)
        assert deleted.returncode == 0, deleted.stderr
        assert parse_jsonl(deleted.stdout)[0]["deleted_at"] and not (shelf / name).exists()
        again = run("pp-upload", "--host", "pg", "--delete", input=jsonl([record]), extra_env=env)
        assert again.returncode == 0, again.stdout  # pp-server: deleted already, which counts as deleted
    finally:
        server.stop()
