"""One image on several hosts: `pp-upload --host a --host b`, `mirrors`, the ledger, pp-link --host."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from picpipe import mirrors


@pytest.fixture
def hosts(tmp_path: Path) -> dict[str, str]:
    """Two local host profiles, a and b, by environment; their folders under tmp_path."""
    return {"PICPIPE_A_TYPE": "local", "PICPIPE_A_DIR": str(tmp_path / "a"), "PICPIPE_A_BASE_URL": "https://a.example/",
            "PICPIPE_B_TYPE": "local", "PICPIPE_B_DIR": str(tmp_path / "b"), "PICPIPE_B_BASE_URL": "https://b.example/"}


@pytest.fixture
def image(tmp_path: Path) -> Path:
    path = tmp_path / "shot.png"
    Image.new("RGB", (40, 30), (10, 120, 200)).save(path)
    return path


def files(folder: Path) -> list[str]:
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_one_image_on_two_hosts_the_ledger_keeps_both_and_a_rerun_sends_nothing(run, tmp_path, hosts, image):
    ledger = str(tmp_path / "ledger.jsonl")
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    assert up.returncode == 0, up.stderr
    [record] = parse_jsonl(up.stdout)
    assert record["host"] == "a" and record["url"].startswith("https://a.example/")
    [mirror] = record["mirrors"]
    assert mirror["host"] == "b" and mirror["url"].startswith("https://b.example/") and mirror["key"] == record["key"]
    assert files(tmp_path / "a") == files(tmp_path / "b") == [record["key"]]
    assert (tmp_path / "b" / mirror["key"]).read_bytes() == image.read_bytes()

    mark = run("pp-mark", "--ledger", ledger, input=up.stdout)
    assert mark.returncode == 0 and parse_jsonl(mark.stdout) == [record]  # a tee: the record as it came
    lines = [json.loads(line) for line in Path(ledger).read_text().splitlines()]
    assert [(line["host"], line["url"]) for line in lines] == [("a", record["url"]), ("b", mirror["url"])]
    assert all("mirrors" not in line and line["sha256"] == record["sha256"] for line in lines)
    found = parse_jsonl(run("pp-mark", "find", "--ledger", ledger, "--host", "b").stdout)
    assert [s["url"] for s in found] == [mirror["url"]]

    again = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    [second] = parse_jsonl(again.stdout)
    assert second["deduped"] is True and second["mirrors"][0]["deduped"] is True
    assert second["url"] == record["url"] and second["mirrors"][0]["url"] == mirror["url"]
    run("pp-mark", "--ledger", ledger, input=again.stdout)
    assert len(Path(ledger).read_text().splitlines()) == 2  # nothing new to say


def test_pp_link_picks_a_host_and_says_when_the_image_has_no_copy_there(run, tmp_path, hosts, image):
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", str(tmp_path / "l.jsonl"), str(image),
             extra_env=hosts)
    [record] = parse_jsonl(up.stdout)
    assert run("pp-link", "--url", input=up.stdout).stdout.strip() == record["url"]
    assert run("pp-link", "--url", "--host", "b", input=up.stdout).stdout.strip() == record["mirrors"][0]["url"]
    assert run("pp-link", "--url", "--host", "a", input=up.stdout).stdout.strip() == record["url"]
    missing = run("pp-link", "--md", "--host", "c", input=up.stdout)
    assert missing.returncode == 1 and missing.stdout == ""
    assert "no copy on c (it is on a, b)" in missing.stderr and "Traceback" not in missing.stderr


def test_pp_link_host_on_pp_mark_find_says_which_copy_a_line_is(run, tmp_path, hosts, image):
    """pp-mark find gives one record per copy: the line of a's copy is not "an image with no copy on
    b" (it has one, on the next line); the error says what the line is and how to list b's copies."""
    ledger = str(tmp_path / "l.jsonl")
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    run("pp-mark", "--ledger", ledger, input=up.stdout)
    found = run("pp-mark", "find", "--ledger", ledger).stdout
    linked = run("pp-link", "--url", "--host", "b", input=found)
    assert linked.stdout.strip() == parse_jsonl(up.stdout)[0]["mirrors"][0]["url"]
    assert "the record is the image's copy on a, not one on b" in linked.stderr
    assert "pp-mark find --host b" in linked.stderr and "no copy on b" not in linked.stderr


def test_a_failing_mirror_is_an_error_the_copies_made_are_kept_and_a_rerun_completes(run, tmp_path, hosts, image):
    ledger = str(tmp_path / "ledger.jsonl")
    (tmp_path / "b").write_text("a file where b's folder should be")
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    assert up.returncode == 1
    [record] = parse_jsonl(up.stdout)
    assert record["url"].startswith("https://a.example/") and record["mirrors"] == []
    assert record["error"]["stage"] == "upload" and record["error"]["message"].startswith("mirror b: ")
    assert "mirror b" in up.stderr and "Traceback" not in up.stderr
    run("pp-mark", "--ledger", ledger, input=up.stdout)
    assert [json.loads(line)["host"] for line in Path(ledger).read_text().splitlines()] == ["a"]

    (tmp_path / "b").unlink()
    again = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    assert again.returncode == 0, again.stderr
    [second] = parse_jsonl(again.stdout)
    assert second["deduped"] is True and "deduped" not in second["mirrors"][0]  # a: known; b: sent now
    assert files(tmp_path / "b") == [second["mirrors"][0]["key"]]


def test_a_failing_first_host_sends_nothing_to_the_mirrors(run, tmp_path, hosts, image):
    (tmp_path / "a").write_text("not a folder")
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", str(tmp_path / "l.jsonl"), str(image),
             extra_env=hosts)
    assert up.returncode == 1
    [record] = parse_jsonl(up.stdout)
    assert "url" not in record and "mirrors" not in record and record["error"]["stage"] == "upload"
    assert files(tmp_path / "b") == []


def test_delete_removes_every_copy_on_the_given_hosts_and_the_ledger_keeps_the_tombstones(run, tmp_path, hosts,
                                                                                           image):
    ledger = str(tmp_path / "ledger.jsonl")
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    run("pp-mark", "--ledger", ledger, input=up.stdout)
    gone = run("pp-upload", "--host", "a", "--host", "b", "--delete", "--ledger", ledger, input=up.stdout,
               extra_env=hosts)
    assert gone.returncode == 0, gone.stderr
    [record] = parse_jsonl(gone.stdout)
    assert record["deleted_at"] and record["mirrors"][0]["deleted_at"] == record["deleted_at"]
    assert files(tmp_path / "a") == files(tmp_path / "b") == []
    run("pp-mark", "--ledger", ledger, input=gone.stdout)
    assert parse_jsonl(run("pp-mark", "find", "--ledger", ledger).stdout) == []
    tombstones = parse_jsonl(run("pp-mark", "find", "--deleted", "--ledger", ledger).stdout)
    assert {s["host"] for s in tombstones} == {"a", "b"}
    # Only b's copy: the record's own copy on a stays.
    up = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger, str(image), extra_env=hosts)
    only_b = run("pp-upload", "--host", "b", "--delete", "--ledger", ledger, input=up.stdout, extra_env=hosts)
    [record] = parse_jsonl(only_b.stdout)
    assert "deleted_at" not in record and record["mirrors"][0]["deleted_at"]
    assert files(tmp_path / "b") == [] and len(files(tmp_path / "a")) == 1


def test_one_base_url_for_several_hosts_is_a_usage_error(run, tmp_path, hosts, image):
    result = run("pp-upload", "--host", "a", "--host", "b", "--base-url", "https://x.example/", str(image),
                 extra_env=hosts)
    assert result.returncode == 2 and "for one --host" in result.stderr and result.stdout == ""


def test_malformed_mirrors_are_a_bad_field_not_a_crash(run, tmp_path):
    bad = [{"url": "https://a.example/x.png", "host": "a", "mirrors": "b"},
           {"url": "https://a.example/y.png", "host": "a", "mirrors": [{"host": "b", "url": 5}]}]
    for command in (("pp-link", "--md"), ("pp-mark", "--ledger", str(tmp_path / "l.jsonl"))):
        result = run(*command, input=jsonl(bad))
        assert result.returncode == 1 and "mirrors is" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "l.jsonl").exists() or os.path.getsize(tmp_path / "l.jsonl") == 0


def test_copies_and_on_host():
    record = {"sha256": "0" * 64, "size": 5, "host": "a", "key": "k", "url": "https://a/k", "replaces": "https://old/k",
              "mirrors": [{"host": "b", "key": "k", "url": "https://b/k", "deduped": True}, {"host": "c", "key": "k"}]}
    own, b = mirrors.copies(record)
    assert own == {k: v for k, v in record.items() if k != "mirrors"}
    assert b == {"sha256": "0" * 64, "size": 5, "host": "b", "key": "k", "url": "https://b/k", "deduped": True}
    assert mirrors.on_host(record, "b") == b and mirrors.on_host(record, "a") == own
    assert mirrors.on_host(record, "c") is None  # no URL there: no copy to link to


def test_an_image_uploaded_again_from_its_tombstone_is_live_again(run, tmp_path, hosts, image):
    """pp-mark find --deleted | pp-upload: the new copies are not marked deleted, nor reused or
    deduped as the old record said, and the ledger finds them live."""
    ledger = str(tmp_path / "ledger.jsonl")
    up = run("pp-upload", "--host", "a", "--ledger", ledger, str(image), extra_env=hosts)
    run("pp-mark", "--ledger", ledger, input=up.stdout)
    gone = run("pp-upload", "--host", "a", "--delete", "--ledger", ledger, input=up.stdout, extra_env=hosts)
    run("pp-mark", "--ledger", ledger, input=gone.stdout)
    [tombstone] = parse_jsonl(run("pp-mark", "find", "--deleted", "--ledger", ledger).stdout)
    assert tombstone["deleted_at"] and files(tmp_path / "a") == []

    again = run("pp-upload", "--host", "a", "--host", "b", "--ledger", ledger,
                input=jsonl([{**tombstone, "reused": True, "deduped": True}]), extra_env=hosts)
    assert again.returncode == 0, again.stderr
    [record] = parse_jsonl(again.stdout)
    assert not {"deleted_at", "reused", "deduped"} & set(record) and record["host"] == "a"
    assert len(files(tmp_path / "a")) == 1 and "deleted_at" not in record["mirrors"][0]
    run("pp-mark", "--ledger", ledger, input=again.stdout)
    live = parse_jsonl(run("pp-mark", "find", "--ledger", ledger).stdout)
    assert {s["host"] for s in live} == {"a", "b"} and not any("deleted_at" in s for s in live)
