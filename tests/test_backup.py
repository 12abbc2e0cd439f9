"""pp-backup against real WebDAV servers and a folder: copies, re-runs that send nothing, the
Nutstore rate limit, faults, the ledger on the target, and restore."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from PIL import Image

from conftest import jsonl, parse_jsonl
from davservers import PASSWORD, nutstore_like, profile_env, wsgidav
from test_upload import image


def dav_env(url: str, name: str = "nas", **extra: str) -> dict[str, str]:
    return profile_env(name, url + "backup/", **extra)


def files(folder: Path, n: int, prefix: str = "f") -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    made = []
    for i in range(n):
        path = folder / f"{prefix}{i}.png"
        Image.frombytes("RGB", (16, 16), hashlib.sha256(f"{prefix}{i}".encode()).digest() * 24).save(path)
        made.append(path)
    return made


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def ledger_lines(path: Path) -> list[dict]:
    return parse_jsonl(path.read_text()) if path.exists() else []


@pytest.fixture
def ledger(tmp_path: Path) -> Path:
    return tmp_path / "ledger.jsonl"


def test_folder_target_copies_records_and_skips_on_rerun(run, tmp_path, ledger):
    images = files(tmp_path / "in", 3)
    env = {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(tmp_path / "usb")}
    first = run("pp-backup", "--to", "usb", "--ledger", str(ledger), *map(str, images), extra_env=env)
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    for src, record in zip(images, records):
        [entry] = record["backups"]
        assert entry["target"] == "usb" and entry["sha256"] == sha(src) and entry["size"] == src.stat().st_size
        copy = Path(entry["location"])
        assert copy.is_absolute() and copy.read_bytes() == src.read_bytes()
        assert entry["key"] == f"{entry['key'][:8]}{sha(src)}.png"  # {year}/{month}/{sha256}{ext}
    assert "3 copied, 0 already there" in first.stderr
    assert len(ledger_lines(ledger)) == 3

    again = run("pp-backup", "--to", "usb", "--ledger", str(ledger), *map(str, images), extra_env=env)
    assert again.returncode == 0 and "0 copied, 3 already there" in again.stderr
    assert [r["backups"] for r in parse_jsonl(again.stdout)] == [r["backups"] for r in records]
    assert len(ledger_lines(ledger)) == 3  # nothing new to record


def test_webdav_copy_is_one_put_under_the_upload_key_with_the_original_extension(run, tmp_path, ledger):
    originals = [image(tmp_path / f"photo {i} 图.png", (i * 40, 10, 10)) for i in range(4)]
    records = [{"source": str(o), "path": str(o.with_suffix(".webp")), "sha256": f"{i:064x}", "host": "qiniu",
                "key": f"2024/05/{i:012x}.webp", "url": f"https://cdn.example.com/2024/05/{i:012x}.webp"}
               for i, o in enumerate(originals)]
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        result = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "4", input=jsonl(records),
                     extra_env=dav_env(dav.url))
        assert result.returncode == 0, result.stderr
        methods = [m for m, _ in dav.requests]
        # the folder listing (404: not there yet); MKCOL of it (409), then from the top; one PUT per copy
        assert methods.count("PUT") == 4 and methods.count("PROPFIND") == 1 and methods.count("MKCOL") == 4
        assert "GET" not in methods and "HEAD" not in methods
    for original, record in zip(originals, parse_jsonl(result.stdout)):
        entry = record["backups"][-1]
        assert entry["key"] == record["key"].replace(".webp", ".png")
        assert entry["location"] == dav.url + "backup/" + entry["key"]
        assert (root / "backup" / entry["key"]).read_bytes() == original.read_bytes()
        assert entry["sha256"] == sha(original) and record["sha256"] != entry["sha256"]  # path's hash stays
    assert PASSWORD not in result.stdout + result.stderr + ledger.read_text()


def test_rerun_over_1000_backed_up_images_sends_no_request(run, tmp_path, ledger):
    images = files(tmp_path / "in", 1000)
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url)
        first = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "8", "--path", "all/{name}{ext}",
                    input="".join(f"{p}\n" for p in images), extra_env=env, timeout=240)
        assert first.returncode == 0, first.stderr
        assert len(list((root / "backup" / "all").iterdir())) == 1000
        sent = len(dav.requests)
        assert sent == 1000 + 1 + 3  # one PUT each, one listing, MKCOL all/ (409), backup/ and all/
        again = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "8", "--path", "all/{name}{ext}",
                    input="".join(f"{p}\n" for p in images), extra_env=env, timeout=240)
        assert again.returncode == 0 and "0 copied, 1000 already there" in again.stderr
        assert len(dav.requests) == sent  # the ledger knew every copy: zero requests
        # records that carry their backups need not even the ledger
        piped = run("pp-backup", "--to", "nas", "--ledger", str(tmp_path / "other.jsonl"), input=first.stdout,
                    extra_env=env, timeout=240)
        assert piped.returncode == 0 and len(dav.requests) == sent


def test_verify_reads_back_and_a_different_file_is_never_replaced(run, tmp_path, ledger):
    a = image(tmp_path / "one" / "logo.png", (200, 0, 0))
    b = image(tmp_path / "two" / "logo.png", (0, 0, 200))
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url)
        args = ("--to", "nas", "--ledger", str(ledger), "--path", "same/{name}{ext}")
        ok = run("pp-backup", *args, "--verify", str(a), extra_env=env)
        assert ok.returncode == 0, ok.stderr
        assert [m for m, _ in dav.requests][-2:] == ["PUT", "GET"]  # written, then read back
        clash = run("pp-backup", *args, str(b), extra_env=env)
    assert clash.returncode == 1
    [record] = parse_jsonl(clash.stdout)
    assert record["error"]["type"] == "conflict" and "backups" not in record
    assert (root / "backup" / "same" / "logo.png").read_bytes() == a.read_bytes()
    assert len(ledger_lines(ledger)) == 1  # only the verified copy was recorded


def test_bad_input_gets_error_records_and_the_rest_is_copied(run, tmp_path, ledger):
    good = files(tmp_path / "in", 2)
    lines = f"{good[0]}\n{tmp_path / 'missing.png'}\n{{\"path\": oops}}\n{tmp_path}\n{good[1]}\n"
    env = {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(tmp_path / "usb")}
    result = run("pp-backup", "--to", "usb", "--ledger", str(ledger), input=lines, extra_env=env)
    assert result.returncode == 1
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == [None, "not_found", "bad_json", "is_a_folder", None]
    assert "line 2" in result.stderr and "Traceback" not in result.stderr
    assert len(ledger_lines(ledger)) == 2


def test_usage_errors_exit_2(run, tmp_path):
    no_profile = run("pp-backup", "--to", "nowhere", "x.png")
    assert no_profile.returncode == 2 and "no profile named 'nowhere'" in no_profile.stderr
    s3 = run("pp-backup", "--to", "b", "x.png", extra_env={"PICPIPE_B_TYPE": "s3"})
    assert s3.returncode == 2 and "folder or WebDAV" in s3.stderr
    assert "examples:" in run("pp-backup", "--help").stdout
    assert "--out" in run("pp-backup", "restore", "--help").stdout


def test_nutstore_block_stops_cleanly_and_the_resumed_run_sends_only_the_rest(run, tmp_path, ledger):
    images = files(tmp_path / "in", 10)
    root = tmp_path / "ns"
    root.mkdir()
    with nutstore_like(root) as dav:
        env = dav_env(dav.url, "nut", vendor="nutstore", pace="1000")
        env["PICPIPE_NUT_URL"] = dav.url + "picpipe/"
        dav.limit = 9  # PROPFIND, MKCOL 2026/11/ (409), picpipe/ 2026/ 11/, 4 PUTs; then blocked
        first = run("pp-backup", "--to", "nut", "--ledger", str(ledger), "-j", "1", *map(str, images),
                    extra_env=env)
        assert first.returncode == 1
        records = parse_jsonl(first.stdout)
        assert [("error" in r) for r in records] == [False] * 4 + [True] * 6
        assert {r["error"]["type"] for r in records[4:]} == {"rate_limited"}
        assert "resume_after" in records[4]["error"] and "BlockedTemporarily" in first.stderr
        assert dav.served == 9 and len(dav.requests) == 10  # one blocked request, then none at all
        assert len(ledger_lines(ledger)) == 4

        dav.limit = None  # 30 minutes later
        before = len(dav.requests)
        resumed = run("pp-backup", "--to", "nut", "--ledger", str(ledger), "-j", "1", *map(str, images),
                      extra_env=env)
        assert resumed.returncode == 0, resumed.stderr
        assert "6 copied, 4 already there" in resumed.stderr
        methods = [m for m, _ in dav.requests[before:]]
        assert methods.count("PUT") == 6 and "GET" not in methods and "HEAD" not in methods
    stored = sorted(p.name for p in (root / "picpipe").rglob("*.png"))
    assert stored == sorted(f"{sha(p)}.png" for p in images)


def test_nutstore_refuses_files_directly_under_dav(run, tmp_path, ledger):
    src = files(tmp_path / "in", 1)[0]
    root = tmp_path / "ns"
    root.mkdir()
    with nutstore_like(root) as dav:
        env = dav_env(dav.url, "nut", vendor="nutstore", pace="1000")
        env["PICPIPE_NUT_URL"] = dav.url
        result = run("pp-backup", "--to", "nut", "--ledger", str(ledger), str(src), extra_env=env)
        assert dav.requests == []  # refused before anything is sent
    assert result.returncode == 2 and "directly in /dav/" in result.stderr and "dav/picpipe/" in result.stderr


def test_server_faults_are_retried_and_a_dead_server_loses_nothing(run, tmp_path, ledger):
    images = files(tmp_path / "in", 6)
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url, retries="2", timeout="2")
        dav.fail_next(500)
        dav.fail_next("reset")
        first = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "1", *map(str, images[:3]),
                    extra_env=env)
        assert first.returncode == 0, first.stderr
        dav.stop()  # the server dies
        second = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "1", *map(str, images),
                     extra_env=env)
    assert second.returncode == 1
    records = parse_jsonl(second.stdout)
    assert [r.get("error", {}).get("type") for r in records] == [None] * 3 + ["connection_refused"] * 3
    on_server = {p.name for p in (root / "backup").rglob("*.png")}
    recorded = {Path(b["key"]).name for line in ledger_lines(ledger) for b in line["backups"]}
    assert recorded == on_server and len(on_server) == 3  # nothing recorded that is not stored


def test_ledger_follows_the_user_across_machines(run, tmp_path):
    root = tmp_path / "dav"
    root.mkdir()
    laptop, desktop = tmp_path / "laptop.jsonl", tmp_path / "desktop.jsonl"
    laptop.write_text(jsonl([{"url": "https://cdn.example.com/a.png", "sha256": "aa", "host": "q", "key": "a"}]))
    desktop.write_text(jsonl([{"url": "https://cdn.example.com/b.png", "sha256": "bb", "host": "q", "key": "b"}]))
    with wsgidav(root) as dav:
        env = {**dav_env(dav.url), "XDG_STATE_HOME": str(tmp_path / "state")}
        push = run("pp-backup", "ledger", "--to", "nas", "--ledger", str(laptop), extra_env=env)
        assert push.returncode == 0, push.stderr
        assert "sent 1 line " in push.stderr
        # one new file under a temp name, then renamed: a reader never sees half of it
        moves = [path for method, path in dav.requests if method == "MOVE"]
        assert len(moves) == 1 and moves[0].startswith("/backup/picpipe-ledger/") and moves[0].endswith(".tmp")
        both = run("pp-backup", "ledger", "--to", "nas", "--ledger", str(desktop), extra_env=env)
        assert both.returncode == 0 and "1 added to the ledger" in both.stderr
        pull = run("pp-backup", "ledger", "--from", "nas", "--ledger", str(laptop), extra_env=env)
        assert pull.returncode == 0 and "1 added to the ledger" in pull.stderr
    assert {json.loads(line)["sha256"] for line in laptop.read_text().splitlines()} == {"aa", "bb"}
    segments = sorted((root / "backup").rglob("*"))
    assert [p.name for p in segments if p.is_file()] == ["00000001.jsonl", "00000001.jsonl"]  # no temp left
    remote = "".join(p.read_text() for p in segments if p.is_file())
    assert {json.loads(line)["sha256"] for line in remote.splitlines()} == {"aa", "bb"}


def test_restore_brings_back_the_originals_from_dead_links(run, tmp_path, ledger):
    originals = [image(tmp_path / "in" / f"p{i}.png", (i * 50, 90, 9)) for i in range(3)]
    digests = [sha(p) for p in originals]
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url)
        uploaded = [{"path": str(p), "host": "old", "key": f"x/{p.name}", "url": f"https://dead.example/x/{p.name}"}
                    for p in originals]
        backup = run("pp-backup", "--to", "nas", "--ledger", str(ledger), input=jsonl(uploaded), extra_env=env)
        assert backup.returncode == 0, backup.stderr
        for p in originals:
            p.unlink()  # the laptop died too
        # what pp-mark check emits for dead links: the ledger state with a check error
        dead = [{**r, "error": {"stage": "check", "type": "http_404", "message": "gone"}}
                for r in parse_jsonl(backup.stdout)]
        dead.append({"url": "https://dead.example/none.png", "error": {"stage": "check", "type": "dns"}})
        dead.append({"path": "x", "error": {"stage": "upload", "type": "auth"}})  # not ours: passed on
        out = tmp_path / "restored"
        result = run("pp-backup", "restore", "--out", str(out), input=jsonl(dead), extra_env=env)
    assert result.returncode == 1
    records = parse_jsonl(result.stdout)
    for record, digest in zip(records[:3], digests):
        assert "error" not in record and sha(Path(record["path"])) == digest == record["sha256"]
        assert Path(record["path"]).parent == out / "x" and record["restored_from"]["target"] == "nas"
    assert records[3]["error"]["type"] == "no_backup" and records[3]["error"]["stage"] == "restore"
    assert records[4]["error"] == dead[4]["error"]


def test_restore_checks_sha256_and_never_sends_credentials_elsewhere(run, tmp_path, ledger):
    src = image(tmp_path / "a.png", (1, 2, 3))
    root, other_root = tmp_path / "dav", tmp_path / "other"
    root.mkdir()
    other_root.mkdir()
    with wsgidav(root) as dav, wsgidav(other_root) as other:
        env = dav_env(dav.url)
        [record] = parse_jsonl(run("pp-backup", "--to", "nas", "--ledger", str(ledger), str(src),
                                   extra_env=env).stdout)
        entry = record["backups"][0]
        (root / "backup" / entry["key"]).write_bytes(b"bit rot")
        forged = {**record, "backups": [{**entry, "location": other.url + "backup/" + entry["key"]}]}
        result = run("pp-backup", "restore", "--out", str(tmp_path / "r"), input=jsonl([record, forged]),
                     extra_env=env)
        assert other.requests == []  # the password went nowhere else
    assert result.returncode == 1
    errors = [r["error"] for r in parse_jsonl(result.stdout)]
    assert errors[0]["type"] == "restore_failed" and "other bytes" in errors[0]["message"]
    assert errors[1]["type"] == "restore_failed" and "no configured profile reaches" in errors[1]["message"]
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").rglob("*.png"))


def test_images_meeting_at_one_name_never_replace_each_other_even_on_rclone(run, tmp_path, ledger):
    """rclone serve webdav ignores If-None-Match: only one write per key at a time keeps copies safe."""
    from davservers import rclone_webdav

    logos = [image(tmp_path / str(i) / "logo.png", (i * 30, 0, 0)) for i in range(8)]
    root = tmp_path / "dav"
    root.mkdir()
    with rclone_webdav(root) as dav:
        result = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "4", "--path", "same/{name}{ext}",
                     *map(str, logos), extra_env=dav_env(dav.url))
    records = parse_jsonl(result.stdout)
    kept = [r for r in records if "error" not in r]
    assert len(kept) == 1 and {r["error"]["type"] for r in records if "error" in r} == {"conflict"}
    assert sha(root / "backup" / "same" / "logo.png") == kept[0]["backups"][0]["sha256"]
    assert [b["sha256"] for line in ledger_lines(ledger) for b in line["backups"]] == [kept[0]["backups"][0]["sha256"]]


def test_a_copy_cut_short_by_an_interrupted_run_is_replaced(run, tmp_path, ledger):
    src = files(tmp_path / "in", 1)[0]
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url)
        first = run("pp-backup", "--to", "nas", "--ledger", str(tmp_path / "l1.jsonl"), str(src), extra_env=env)
        key = parse_jsonl(first.stdout)[0]["backups"][0]["key"]
        (root / "backup" / key).write_bytes(src.read_bytes()[:100])  # what a stopped PUT leaves
        again = run("pp-backup", "--to", "nas", "--ledger", str(ledger), str(src), extra_env=env)
    assert again.returncode == 0, again.stderr
    assert (root / "backup" / key).read_bytes() == src.read_bytes()


def test_digest_auth_with_parallel_workers(run, tmp_path, ledger):
    images = files(tmp_path / "in", 8)
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root, auth="digest") as dav:
        result = run("pp-backup", "--to", "nas", "--ledger", str(ledger), "-j", "4", "--path", "{name}/{name}{ext}",
                     *map(str, images), extra_env=dav_env(dav.url))
    assert result.returncode == 0, result.stderr
    assert len(list((root / "backup").rglob("*.png"))) == 8


def test_a_block_with_parallel_workers_sends_at_most_the_requests_in_flight(run, tmp_path, ledger):
    images = files(tmp_path / "in", 12)
    root = tmp_path / "ns"
    (root / "picpipe").mkdir(parents=True)
    with nutstore_like(root) as dav:
        env = dav_env(dav.url, "nut", vendor="nutstore", pace="1000")
        env["PICPIPE_NUT_URL"] = dav.url + "picpipe/"
        dav.limit = 5
        result = run("pp-backup", "--to", "nut", "--ledger", str(ledger), "-j", "4", "--path", "{name}{ext}",
                     *map(str, images), extra_env=env)
        blocked = len(dav.requests) - dav.served
    assert result.returncode == 1 and blocked <= 4  # the 0.4 s pace lets few start before the block is known
    stored = {p.name for p in (root / "picpipe").iterdir()}
    assert {Path(b["key"]).name for line in ledger_lines(ledger) for b in line["backups"]} == stored


def test_a_moved_target_gets_new_copies(run, tmp_path, ledger):
    src = files(tmp_path / "in", 1)[0]
    root = tmp_path / "dav"
    root.mkdir()
    with wsgidav(root) as dav:
        env = dav_env(dav.url)
        run("pp-backup", "--to", "nas", "--ledger", str(ledger), str(src), extra_env=env)
        env["PICPIPE_NAS_URL"] = dav.url + "elsewhere/"
        moved = run("pp-backup", "--to", "nas", "--ledger", str(ledger), str(src), extra_env=env)
    assert moved.returncode == 0 and "1 copied" in moved.stderr
    assert len(list((root / "elsewhere").rglob("*.png"))) == 1


def test_ledger_sync_with_a_nutstore_folder_not_made_yet(run, tmp_path, ledger):
    ledger.write_text(jsonl([{"url": "https://cdn.example.com/a.png", "sha256": "aa", "host": "q", "key": "a"}]))
    root = tmp_path / "ns"
    root.mkdir()
    with nutstore_like(root) as dav:
        env = dav_env(dav.url, "nut", vendor="nutstore", pace="1000")
        env.update(PICPIPE_NUT_URL=dav.url + "picpipe/", XDG_STATE_HOME=str(tmp_path / "state"))
        pull = run("pp-backup", "ledger", "--from", "nut", "--ledger", str(ledger), extra_env=env)
        push = run("pp-backup", "ledger", "--to", "nut", "--ledger", str(ledger), extra_env=env)
    assert pull.returncode == 0 and "nothing new to receive" in pull.stderr
    assert push.returncode == 0, push.stderr
    [segment] = (root / "picpipe" / "picpipe-ledger").glob("*/00000001.jsonl")
    assert segment.read_text() == ledger.read_text()


def test_restore_of_colliding_names_in_parallel_keeps_each_records_bytes(run, tmp_path, ledger):
    originals = [image(tmp_path / str(i) / "logo.png", (i * 25, 9, 9)) for i in range(8)]
    backups = [tmp_path / f"usb{i}" for i in range(8)]
    env = {}
    records = []
    for i, (src, folder) in enumerate(zip(originals, backups)):
        env.update({f"PICPIPE_USB{i}_TYPE": "local", f"PICPIPE_USB{i}_DIR": str(folder)})
        done = run("pp-backup", "--to", f"usb{i}", "--ledger", str(ledger), "--path", "x/{name}{ext}", str(src),
                   extra_env=env)
        records.extend(parse_jsonl(done.stdout))
    result = run("pp-backup", "restore", "-j", "4", "--out", str(tmp_path / "out"), input=jsonl(records),
                 extra_env=env)
    assert result.returncode == 0, result.stderr
    restored = parse_jsonl(result.stdout)
    assert len({r["path"] for r in restored}) == 8
    assert all(sha(Path(r["path"])) == r["sha256"] == sha(src) for r, src in zip(restored, originals))


def test_restore_never_reads_a_local_path_outside_a_backup_folder(run, tmp_path):
    secret = tmp_path / "private.png"
    secret.write_bytes(b"not for the web")
    env = {"PICPIPE_NAS_TYPE": "local", "PICPIPE_NAS_DIR": str(tmp_path / "nas")}
    forged = {"url": "https://x.example/a.png", "backups": [{"target": "nas", "location": str(secret)}]}
    result = run("pp-backup", "restore", "--out", str(tmp_path / "out"), input=jsonl([forged]), extra_env=env)
    assert result.returncode == 1 and parse_jsonl(result.stdout)[0]["error"]["type"] == "restore_failed"
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*"))
