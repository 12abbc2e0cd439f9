"""pp-upload: keys, the local host, never overwriting, dedupe through the ledger, delete."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from picpipe.errors import PicpipeError
from picpipe.keys import make_key, sanitize


def image(path: Path, colour: tuple[int, int, int]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (40, 30), colour).save(path)
    return path


@pytest.mark.parametrize("key, safe", [
    ("../../etc/passwd", "etc/passwd"),
    ("/abs/a.png", "abs/a.png"),
    ("a\\..\\..\\b.png", "a/b.png"),
    ("x/./y//z.png", "x/y/z.png"),
    ("bad\x00name\n.png", "badname.png"),
    (" ../ a .png", "a .png"),
])
def test_keys_never_leave_their_folder(key, safe):
    assert sanitize(key) == safe


def test_a_key_with_nothing_left_is_an_error():
    with pytest.raises(PicpipeError):
        sanitize("../..//./")


def test_key_placeholders():
    data = b"picture bytes"
    digest = hashlib.sha256(data).hexdigest()
    key = make_key("{year}-{month}-{day}/{name}-{sha256:8}-{md5:6}{ext}", "shots/截图 1.PNG", data, now=0)
    assert key == f"1970-01-01/截图 1-{digest[:8]}-{hashlib.md5(data).hexdigest()[:6]}.png"
    # {timestamp} counts milliseconds, as PicList's does; {timestampS} seconds
    assert make_key("{timestamp}{ext}", "a.jpg", data, now=1700000000.5) == "1700000000500.jpg"
    assert make_key("{timestampS}{ext}", "a.jpg", data, now=1700000000.5) == "1700000000.jpg"
    assert make_key("{name}/{uuid}", "../../a.jpg", data) .startswith("a/")  # a file name cannot climb either


def test_unknown_placeholder_is_a_usage_error(run, tmp_path):
    src = image(tmp_path / "a.png", (200, 0, 0))
    result = run("pp-upload", "--host", "local", "--path", "{nmae}{ext}", str(src))
    assert result.returncode == 2 and result.stdout == ""
    assert "{nmae}" in result.stderr and "{name}" in result.stderr


def test_local_upload_reuse_and_urls(run, tmp_path):
    a, b = image(tmp_path / "a.png", (200, 0, 0)), image(tmp_path / "我的 图.png", (0, 200, 0))
    host = tmp_path / "site"
    args = ("--host", "local", "--base-url", "https://img.example.com/", "--no-dedupe")
    result = run("pp-upload", *args, extra_env={"PICPIPE_LOCAL_DIR": str(host)}, input=f"{a}\n{b}\n")
    assert result.returncode == 0, result.stderr
    first, second = parse_jsonl(result.stdout)
    for record, src in ((first, a), (second, b)):
        digest = hashlib.sha256(src.read_bytes()).hexdigest()
        assert record["host"] == "local" and record["sha256"] == digest and record["uploaded_at"]
        assert record["key"].endswith(f"/{digest[:12]}.png")
        assert (host / record["key"]).read_bytes() == src.read_bytes()
        assert record["url"] == "https://img.example.com/" + record["key"]
    again = run("pp-upload", *args, extra_env={"PICPIPE_LOCAL_DIR": str(host)}, input=f"{a}\n")
    assert again.returncode == 0 and parse_jsonl(again.stdout)[0]["reused"] is True

    named = run("pp-upload", *args, "--path", "{name}{ext}", extra_env={"PICPIPE_LOCAL_DIR": str(host)},
                input=f"{b}\n")
    assert parse_jsonl(named.stdout)[0]["url"] == "https://img.example.com/%E6%88%91%E7%9A%84%20%E5%9B%BE.png"


def test_a_different_image_under_the_same_key_is_never_overwritten(run, tmp_path):
    first = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    second = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    host = tmp_path / "site"
    args = ("--host", "local", "--path", "img/{name}{ext}", "--no-dedupe")
    env = {"PICPIPE_LOCAL_DIR": str(host)}
    assert run("pp-upload", *args, str(first), extra_env=env).returncode == 0
    result = run("pp-upload", *args, str(second), extra_env=env)
    assert result.returncode == 1
    [record] = parse_jsonl(result.stdout)
    assert record["error"]["type"] == "conflict" and "--overwrite" in record["error"]["hint"]
    assert "url" not in record
    assert (host / "img/logo.png").read_bytes() == first.read_bytes()
    assert not [p for p in (host / "img").iterdir() if p.name.startswith(".")]  # no temp file left
    replaced = run("pp-upload", *args, "--overwrite", str(second), extra_env=env)
    assert replaced.returncode == 0 and (host / "img/logo.png").read_bytes() == second.read_bytes()


def test_dedupe_through_the_ledger_touches_no_host(run, tmp_path):
    src = image(tmp_path / "a.png", (10, 20, 30))
    host, ledger = tmp_path / "site", tmp_path / "ledger.jsonl"
    env = {"PICPIPE_LOCAL_DIR": str(host), "PICPIPE_LEDGER": str(ledger)}
    uploaded = run("pp-upload", "--host", "local", str(src), extra_env=env)
    assert run("pp-mark", input=uploaded.stdout, extra_env=env).returncode == 0
    first = parse_jsonl(uploaded.stdout)[0]
    (host / first["key"]).unlink()  # if pp-upload went to the host, the file would be back
    again = run("pp-upload", "--host", "local", str(src), extra_env=env)
    [record] = parse_jsonl(again.stdout)
    assert record["deduped"] is True and record["url"] == first["url"] and record["key"] == first["key"]
    assert not (host / first["key"]).exists()
    forced = run("pp-upload", "--host", "local", "--no-dedupe", str(src), extra_env=env)
    assert "deduped" not in parse_jsonl(forced.stdout)[0] and (host / first["key"]).exists()


def test_delete_leaves_a_tombstone_and_refuses_other_hosts(run, tmp_path):
    src = image(tmp_path / "a.png", (1, 2, 3))
    host, ledger = tmp_path / "site", tmp_path / "ledger.jsonl"
    env = {"PICPIPE_LOCAL_DIR": str(host), "PICPIPE_LEDGER": str(ledger)}
    uploaded = run("pp-upload", "--host", "local", str(src), extra_env=env)
    run("pp-mark", input=uploaded.stdout, extra_env=env)
    record = parse_jsonl(uploaded.stdout)[0]
    other = {**record, "host": "elsewhere", "path": str(src)}
    result = run("pp-upload", "--host", "local", "--delete", input=jsonl([record, other]), extra_env=env)
    assert result.returncode == 1
    gone, refused = parse_jsonl(result.stdout)
    assert gone["deleted_at"] and not (host / record["key"]).exists()
    assert refused["error"]["type"] == "not_on_host"
    run("pp-mark", input=json.dumps(gone) + "\n", extra_env=env)
    found = run("pp-mark", "find", extra_env=env)
    assert parse_jsonl(found.stdout) == []  # the tombstone hides it
    again = run("pp-upload", "--host", "local", str(src), extra_env=env)
    assert "deduped" not in parse_jsonl(again.stdout)[0]  # deleted bytes are uploaded afresh


def test_bad_inputs_are_error_records_and_the_rest_go_on(run, tmp_path):
    good = image(tmp_path / "ok.png", (9, 9, 9))
    result = run("pp-upload", "--host", "local", input=f"{good}\n{tmp_path / 'missing.png'}\n{{\"path\": 3}}\n")
    assert result.returncode == 1
    ok, missing, no_path = parse_jsonl(result.stdout)
    assert ok["url"].startswith("file://") and missing["error"]["type"] == "not_found"
    assert no_path["error"]["type"] == "bad_field"  # a path that is no string stops at its line
    assert "line 2" in result.stderr and "Traceback" not in result.stderr


def test_an_unknown_or_unbuilt_host_is_a_usage_error(run, tmp_path):
    src = image(tmp_path / "a.png", (1, 1, 1))
    unknown = run("pp-upload", "--host", "nowhere", str(src))
    assert unknown.returncode == 2 and "no profile named 'nowhere'" in unknown.stderr


def test_help_names_every_host_type(run):
    from picpipe.config import host_types

    said = " ".join(run("pp-upload", "--help").stdout.split())  # argparse wraps lines anywhere
    listed = re.search(r"types: ([^.]*)\.", said)
    assert listed and tuple(listed[1].split()) == host_types() and "sftp" in host_types()


def test_delete_refuses_keys_that_climb_out(run, tmp_path):
    outside = tmp_path / "precious.png"
    outside.write_bytes(b"keep me")
    host = tmp_path / "site"
    host.mkdir()
    records = [{"host": "local", "key": key, "url": "x"} for key in ("../precious.png", "a/../../precious.png",
                                                                      "/etc/passwd")]
    result = run("pp-upload", "--host", "local", "--delete", input=jsonl(records),
                 extra_env={"PICPIPE_LOCAL_DIR": str(host)})
    assert result.returncode == 1
    assert [r["error"]["type"] for r in parse_jsonl(result.stdout)] == ["bad_key"] * 3
    assert outside.read_bytes() == b"keep me"


def test_the_same_image_twice_in_one_run_is_sent_once(run, tmp_path):
    src = image(tmp_path / "a.png", (7, 7, 7))
    host = tmp_path / "site"
    result = run("pp-upload", "--host", "local", "-j", "4", input=f"{src}\n" * 6,
                 extra_env={"PICPIPE_LOCAL_DIR": str(host)})
    assert result.returncode == 0, result.stderr
    records = parse_jsonl(result.stdout)
    assert sum(1 for r in records if r.get("deduped")) == 5 and len({r["url"] for r in records}) == 1


def test_an_upload_of_a_record_that_had_a_url_says_which_url_it_replaces(run, tmp_path):
    src = image(tmp_path / "a.png", (1, 200, 3))
    env = {"PICPIPE_LOCAL_DIR": str(tmp_path / "host"), "PICPIPE_LOCAL_BASE_URL": "https://new.example/"}
    moved = {"path": str(src), "url": "https://dead.example/a.png"}
    records = parse_jsonl(run("pp-upload", "--host", "local", "--ledger", str(tmp_path / "l.jsonl"),
                              input=jsonl([moved, {"path": str(src)}]), extra_env=env).stdout)
    assert records[0]["replaces"] == "https://dead.example/a.png" and records[0]["url"].startswith("https://new.")
    assert "replaces" not in records[1]  # a first upload replaces nothing (and is deduped in-run)
