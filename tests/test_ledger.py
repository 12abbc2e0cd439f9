"""The ledger: atomic concurrent appends, torn lines, latest state, find, merge."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from conftest import command_path, jsonl, parse_jsonl
from picpipe.ledger import Ledger, canonical, identity, ledger_entry, matches, parse_line, resolve

IMG = {"sha256": "ab" * 32, "host": "qiniu", "key": "ab12.png"}


def test_four_writers_times_1000_records_leave_4000_whole_lines(env, tmp_path):
    ledger = tmp_path / "ledger.jsonl"
    procs = []
    for writer in range(4):
        # Lines of 6 kB: far beyond PIPE_BUF, so atomicity comes from the lock, not from luck.
        data = jsonl([{"url": f"https://x.example/{writer}/{i}.png", "w": writer, "i": i, "pad": "p" * 6000}
                      for i in range(1000)])
        proc = subprocess.Popen([command_path("pp-mark"), "--ledger", str(ledger)], stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
        procs.append((proc, data))
    for proc, data in procs:
        assert proc.stdin
        proc.stdin.write(data.encode())
        proc.stdin.close()
    for proc, _ in procs:
        assert proc.wait(timeout=120) == 0, proc.stderr.read() if proc.stderr else ""
    raw = ledger.read_bytes()
    assert raw.endswith(b"\n")
    lines = raw.decode().splitlines()
    assert len(lines) == 4000
    seen = {(r["w"], r["i"]) for r in map(json.loads, lines)}
    assert seen == {(w, i) for w in range(4) for i in range(1000)}


def test_tee_passes_records_unchanged_and_records_those_with_url_or_backups(run, tmp_path):
    records = [
        {"path": "a.png", "url": "https://x.example/a.png", "z": [1, {"y": 2}]},
        {"path": "b.png"},
        {"path": "c.png", "backups": [{"target": "nas", "location": "/nas/c.png"}]},
        {"path": "d.png", "url": "https://x.example/d.png", "link": "![d](...)",
         "error": {"stage": "backup", "type": "http_507", "message": "full"}},
    ]
    result = run("pp-mark", "--ledger", "l.jsonl", input=jsonl(records))
    assert parse_jsonl(result.stdout) == records
    assert result.returncode == 1  # the backup error travels on
    kept = parse_jsonl((tmp_path / "l.jsonl").read_text())
    assert [r["path"] for r in kept] == [str(tmp_path / n) for n in ("a.png", "c.png", "d.png")]
    assert all(r["marked_at"].endswith("Z") for r in kept)
    assert "error" not in kept[2] and "link" not in kept[2]  # one pass's outcome is not the image's state
    assert (tmp_path / "l.jsonl").stat().st_mode & 0o077 == 0


def test_default_ledger_location_follows_xdg_and_env(run, tmp_path):
    run("pp-mark", input=jsonl([{"url": "https://x.example/a.png"}]))
    assert (tmp_path / "data" / "picpipe" / "ledger.jsonl").exists()
    run("pp-mark", input=jsonl([{"url": "https://x.example/b.png"}]), extra_env={"PICPIPE_LEDGER": "mine.jsonl"})
    assert len((tmp_path / "mine.jsonl").read_text().splitlines()) == 1


def test_torn_and_corrupt_lines_are_reported_skipped_and_kept(run, tmp_path):
    ledger = tmp_path / "l.jsonl"
    good = json.dumps({"url": "https://x.example/good.png", "marked_at": "2024-01-01T00:00:00.000Z"})
    ledger.write_bytes(good.encode() + b'\nthis is not json\n[1,2]\n\xff\n{"url": "https://x.example/torn.png", "mar')
    before = ledger.read_bytes()
    torn = run("pp-mark", "--ledger", str(ledger), "find")
    assert "l.jsonl:5: skipped a bad line: incomplete line" in torn.stderr
    result = run("pp-mark", "--ledger", str(ledger), input=jsonl([{"url": "https://x.example/new.png"}]))
    assert result.returncode == 0
    after = ledger.read_bytes()
    assert after.startswith(before)  # nothing rewritten away
    assert after[len(before):len(before) + 1] == b"\n"  # the torn line is fenced off, the new line is whole
    found = run("pp-mark", "--ledger", str(ledger), "find")
    assert found.returncode == 0
    assert [r["url"] for r in parse_jsonl(found.stdout)] == ["https://x.example/good.png", "https://x.example/new.png"]
    for number, problem in ((2, "invalid JSON"), (3, "not a JSON object"), (4, "not valid UTF-8"), (5, "invalid JSON")):
        assert f"l.jsonl:{number}: skipped a bad line: {problem}" in found.stderr
    assert "Traceback" not in found.stderr


def test_latest_state_wins_and_backups_accumulate():
    lines = [
        {**IMG, "url": "https://x.example/v1.png", "marked_at": "2024-01-01T00:00:00.000Z",
         "backups": [{"target": "nas", "location": "/nas/ab.png"}]},
        {**IMG, "url": "https://x.example/v2.png", "marked_at": "2024-02-01T00:00:00.000Z",
         "backups": [{"target": "nutstore", "location": "https://dav.example/ab.png"}]},
        # merged in from another machine later, but older: must not win
        {**IMG, "url": "https://x.example/v0.png", "marked_at": "2023-12-01T00:00:00.000Z"},
        {"url": "https://legacy.example/p.png", "marked_at": "2020-01-01T00:00:00.000Z"},
    ]
    states = resolve(lines)
    assert len(states) == 2
    assert states[0]["url"] == "https://x.example/v2.png"
    assert [b["target"] for b in states[0]["backups"]] == ["nas", "nutstore"]
    assert identity(states[1]) == ("url", "https://legacy.example/p.png")


def test_deletion_tombstone_and_reupload():
    up = {**IMG, "url": "https://x.example/a.png", "marked_at": "2024-01-01T00:00:00.000Z"}
    gone = {**up, "deleted_at": "2024-02-01T00:00:00.000Z", "marked_at": "2024-02-01T00:00:00.000Z"}
    again = {**up, "marked_at": "2024-03-01T00:00:00.000Z"}
    assert resolve([up, gone])[0]["deleted_at"]
    assert "deleted_at" not in resolve([up, gone, again])[0]


def test_find_filters(run, tmp_path):
    ledger = tmp_path / "l.jsonl"
    entries = [
        {"sha256": "aa" * 32, "host": "qiniu", "key": "1.png", "url": "https://cdn.example/1.png",
         "source": "/home/me/shots/Screen 1.png", "uploaded_at": "2023-06-01T00:00:00.000Z"},
        {"sha256": "bb" * 32, "host": "github", "key": "2.png", "url": "https://raw.example/2.png",
         "source": "/home/me/pics/cat.jpg", "uploaded_at": "2024-06-01T00:00:00.000Z"},
        {"sha256": "aa" * 32, "host": "qiniu", "key": "1.png", "url": "https://cdn2.example/1.png",
         "source": "/home/me/shots/Screen 1.png", "uploaded_at": "2024-07-01T00:00:00.000Z"},
    ]
    ledger.write_text(jsonl(entries))

    def urls(*args: str) -> list[str]:
        result = run("pp-mark", "--ledger", str(ledger), "find", *args)
        assert result.returncode == 0, result.stderr
        return [r["url"] for r in parse_jsonl(result.stdout)]

    assert urls() == ["https://cdn2.example/1.png", "https://raw.example/2.png"]
    assert urls("--host", "github") == ["https://raw.example/2.png"]
    assert urls("--sha256", "AAAA") == ["https://cdn2.example/1.png"]
    assert urls("--url", "https://cdn.example/*") == []  # the latest state moved to cdn2
    assert urls("--url", "https://cdn2.example/1.png") == ["https://cdn2.example/1.png"]
    assert urls("--since", "2024-06-15") == ["https://cdn2.example/1.png"]
    assert urls("--since", "2024-01-01T00:00:00+08:00", "--host", "github") == ["https://raw.example/2.png"]
    assert urls("--source", "Screen*") == ["https://cdn2.example/1.png"]
    assert urls("--source", "/home/me/pics/*") == ["https://raw.example/2.png"]
    # subcommand anywhere on the line
    moved = run("pp-mark", "find", "--ledger", str(ledger), "--host", "qiniu")
    assert [r["url"] for r in parse_jsonl(moved.stdout)] == ["https://cdn2.example/1.png"]


def test_find_usage_errors(run, tmp_path):
    missing = run("pp-mark", "--ledger", str(tmp_path / "none.jsonl"), "find")
    assert missing.returncode == 2 and "no ledger" in missing.stderr and "Traceback" not in missing.stderr
    (tmp_path / "l.jsonl").write_text("")
    bad = run("pp-mark", "--ledger", str(tmp_path / "l.jsonl"), "find", "--since", "last tuesday")
    assert bad.returncode == 2 and "--since" in bad.stderr


def test_merge_is_a_lossless_idempotent_union(run, tmp_path):
    a, b, mine = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "mine.jsonl"
    shared = {**IMG, "url": "https://x.example/s.png", "marked_at": "2024-01-01T00:00:00.000Z"}
    a.write_text(jsonl([shared, {"url": "https://x.example/only-a.png", "marked_at": "2024-01-02T00:00:00.000Z"}]))
    b.write_text(jsonl([shared, {"url": "https://x.example/only-b.png", "marked_at": "2024-01-03T00:00:00.000Z"},
                        {**shared, "backups": [{"target": "nas", "location": "/nas/s.png"}],
                         "marked_at": "2024-01-04T00:00:00.000Z"}]) + "garbage\n")
    first = run("pp-mark", "--ledger", str(mine), "merge", str(a), str(b))
    assert first.returncode == 0, first.stderr
    assert "4 lines added, 1 already there" in first.stderr
    assert "b.jsonl:4: skipped a bad line" in first.stderr
    content = mine.read_text()
    again = run("pp-mark", "merge", str(b), str(a), "--ledger", str(mine))
    assert "0 lines added" in again.stderr
    assert mine.read_text() == content
    states = Ledger(mine).states()
    assert sorted(s["url"] for s in states) == ["https://x.example/only-a.png", "https://x.example/only-b.png",
                                               "https://x.example/s.png"]
    assert next(s for s in states if s["url"].endswith("/s.png"))["backups"][0]["target"] == "nas"
    # merging the other way round converges to the same set of lines
    def contents(path: Path) -> set[str]:
        return {canonical(entry) for _, entry in Ledger(path).lines()}

    expected = contents(mine) | contents(a)
    run("pp-mark", "--ledger", str(a), "merge", str(mine))
    assert contents(a) == expected == contents(mine)
    missing = run("pp-mark", "merge", str(tmp_path / "nope.jsonl"), "--ledger", str(mine))
    assert missing.returncode == 2


def test_ledger_write_failure_keeps_the_stream_going(run):
    # /dev/full accepts open() and fails every write with ENOSPC: a disk that filled up.
    records = [{"url": f"https://x.example/{i}.png"} for i in range(3)]
    result = run("pp-mark", "--ledger", "/dev/full", input=jsonl(records))
    assert parse_jsonl(result.stdout) == records
    assert result.returncode == 1
    assert "could not append to the ledger" in result.stderr and "3 records not recorded" in result.stderr


def test_ledger_that_is_a_folder_is_a_usage_error(run, tmp_path):
    result = run("pp-mark", "--ledger", str(tmp_path), input=jsonl([{"url": "https://x.example/a.png"}]))
    assert result.returncode == 2 and "folder" in result.stderr and result.stdout == ""


def test_matches_and_ledger_entry_units(tmp_path: Path):
    entry = ledger_entry({"url": "u", "path": "rel/a.png", "password": "hunter22", "error": {}}, "2024-01-01T00:00:00Z")
    assert entry == {"url": "u", "path": str(Path("rel/a.png").resolve()), "marked_at": "2024-01-01T00:00:00Z"}
    assert matches({"url": "https://a/b.png"}, url="https://a/*")
    assert not matches({"url": "https://a/b.png"}, host="qiniu")
    assert not matches({"uploaded_at": "garbage"}, since="2024-01-01")


def test_states_overlay_fields_from_several_sources():
    gallery = {"url": "https://i.example/a.png", "host": "smms", "width": 10, "marked_at": "2023-01-01T00:00:00.000Z"}
    mark = {"url": "https://i.example/a.png", "backups": [{"target": "NutStore", "location": "https://dav/a.png"}],
            "marked_at": "2023-01-02T00:00:00.000Z"}
    for order in ([gallery, mark], [mark, gallery]):
        [state] = resolve(order)
        assert state["host"] == "smms" and state["width"] == 10
        assert state["backups"][0]["target"] == "NutStore"
        assert state["marked_at"] == "2023-01-02T00:00:00.000Z"


def test_find_hides_deleted_unless_asked_and_takes_relative_globs(run, tmp_path):
    ledger = tmp_path / "l.jsonl"
    shots = tmp_path / "shots"
    ledger.write_text(jsonl([
        {**IMG, "url": "https://x.example/a.png", "source": str(shots / "a.png"), "marked_at": "2024-01-01T00:00:00Z"},
        {**IMG, "url": "https://x.example/a.png", "deleted_at": "2024-02-01T00:00:00Z",
         "marked_at": "2024-02-01T00:00:00Z"},
        {"url": "https://x.example/b.png", "source": str(shots / "b.png")},
    ]))
    plain = run("pp-mark", "--ledger", str(ledger), "find")
    assert [r["url"] for r in parse_jsonl(plain.stdout)] == ["https://x.example/b.png"]
    every = run("pp-mark", "--ledger", str(ledger), "find", "--deleted")
    assert [r.get("deleted_at") for r in parse_jsonl(every.stdout)] == ["2024-02-01T00:00:00Z", None]
    relative = run("pp-mark", "--ledger", str(ledger), "find", "--source", "shots/*.png", "--deleted")
    assert len(parse_jsonl(relative.stdout)) == 2


def test_merge_from_process_substitution(env, tmp_path):
    other = tmp_path / "other.jsonl"
    other.write_text(jsonl([{"url": "https://x.example/z.png", "marked_at": "2024-01-01T00:00:00Z"}]))
    mine = tmp_path / "mine.jsonl"
    shell = f"'{command_path('pp-mark')}' --ledger '{mine}' merge <(cat '{other}')"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, env=env, timeout=30)
    assert result.returncode == 0, result.stderr
    assert "1 lines added" in result.stderr


def test_globs_match_exact_names_suffixes_and_leading_wildcards():
    rec = {"source": "/home/u/pics/a[1].png", "url": "https://x.example/a[1].png"}
    assert matches(rec, source="a[1].png") and matches(rec, url="https://x.example/a[1].png")
    assert matches(rec, source="*/pics/*.png") and matches(rec, source="pics/a*.png")
    assert matches(rec, source="/home/u/pics/*") and not matches(rec, source="other/*.png")


def test_one_reading_of_a_line_for_the_ledger_its_index_and_a_sync():
    """Blanks around a line are any Unicode white space; a line of them is blank (None), unlike
    a JSON null, which is a line but no record."""
    for raw in (b'{"a": 1}', b'{"a": 1}\n', b' {"a": 1}\xc2\xa0\r\n', b'\x0c{"a": 1}\xe2\x80\x83'):
        assert parse_line(raw) == {"a": 1}, raw
    for raw in (b"", b"\n", b" \r\n", b"\xc2\xa0\n"):
        assert parse_line(raw) is None, raw
    for raw, error in ((b"null\n", ValueError), (b"[1]\n", ValueError), (b"\xff\n", UnicodeDecodeError),
                       (b'{"a": ', json.JSONDecodeError), (b'{"a": 1} x\n', json.JSONDecodeError),
                       (b'{"a": 1}{}\n', json.JSONDecodeError)):
        with pytest.raises(error):
            parse_line(raw)
