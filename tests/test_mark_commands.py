"""pp-mark check and pp-mark import, run as commands."""

from __future__ import annotations

import gzip
import json

from conftest import SENTINEL, ctrl_c_works, jsonl, parse_jsonl
from httpfixture import closed_port, running


def test_check_reports_dead_urls_with_reasons(run, tmp_path):
    with running() as server:
        urls = {
            "live": server.url("/image.png"),
            "head405": server.url("/head-405"),
            "missing": server.url("/missing.png"),
            "error": server.url("/error"),
            "slow": server.url("/slow"),
            "refused": f"http://127.0.0.1:{closed_port()}/gone.png",
            "deleted": server.url("/missing.png?deleted"),
        }
        ledger = tmp_path / "l.jsonl"
        entries = [{"url": url, "name": name} for name, url in urls.items()]
        entries[-1]["deleted_at"] = "2024-01-01T00:00:00.000Z"  # tombstones are not probed
        entries.append({"sha256": "cd" * 32, "backups": [{"target": "nas", "location": "/n/x.png"}]})
        ledger.write_text(jsonl(entries))
        result = run("pp-mark", "--ledger", str(ledger), "check", "--timeout", "0.5", "--retries", "0")
    assert result.returncode == 1
    dead = parse_jsonl(result.stdout)
    assert [(r["name"], r["error"]["type"]) for r in dead] == [
        ("missing", "http_404"), ("error", "http_500"), ("slow", "timeout"), ("refused", "connection_refused"),
    ]
    assert all(r["error"]["stage"] == "check" and r["error"]["hint"] for r in dead)
    assert dead[0]["check"]["status"] == 404
    assert "checked 6 URLs: 2 live, 4 dead, 1 without a url" in result.stderr
    assert "Traceback" not in result.stderr


def test_check_from_stdin_with_all_and_order(run):
    with running() as server:
        records = [{"url": server.url(f"/concurrent/{i}.png"), "i": i} for i in range(12)]
        records.insert(5, {"url": server.url("/missing.png"), "i": "dead"})
        records.insert(0, {"path": "x.png", "error": {"stage": "upload", "type": "timeout", "message": "m"}})
        result = run("pp-mark", "check", "-", "--all", "-j", "8", "--per-host", "3", input=jsonl(records))
        assert server.max_in_flight["*"] <= 3
    out = parse_jsonl(result.stdout)
    assert [r.get("i") for r in out] == [r.get("i") for r in records]  # input order, upstream error kept
    assert out[0]["error"]["stage"] == "upload"
    assert [r["check"]["method"] for r in out[1:] if "error" not in r] == ["HEAD"] * 12
    assert result.returncode == 1


def test_check_usage_errors(run, tmp_path):
    result = run("pp-mark", "check", "--ledger", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "no ledger" in result.stderr
    result = run("pp-mark", "check", "--per-host", "0", "--ledger", str(tmp_path / "none.jsonl"))
    assert result.returncode == 2 and "Traceback" not in result.stderr


def picgo_db(path, items):
    path.write_bytes(gzip.compress(json.dumps({"gallery": items, "__gallery_KEY__": {}}).encode()))


def test_import_adds_to_the_ledger_once_and_drops_secrets(run, tmp_path):
    db = tmp_path / "piclist.db"
    picgo_db(db, [
        {"fileName": "a.png", "extname": ".png", "imgUrl": "https://img.example/a.png", "type": "aws-s3-plist",
         "width": 10, "height": 20, "id": "id-1", "createdAt": 1700000000000,
         "config": {"accessKeyID": "AK", "secretAccessKey": SENTINEL}},
        {"fileName": "b.png", "imgUrl": "", "type": "smms", "id": "id-2"},
    ])
    mark = tmp_path / "mark.json"
    mark.write_text(json.dumps({"total": 5, "images": [
        {"space": "NutStore", "path": f"https://me:{SENTINEL}@dav.jianguoyun.com/dav/pics/a.png",
         "url": "https://img.example/a.png", "time": 1700000001000}]}))
    ledger = tmp_path / "l.jsonl"
    first = run("pp-mark", "--ledger", str(ledger), "import", str(db), str(mark))
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    assert [r["url"] for r in records] == ["https://img.example/a.png", "https://img.example/a.png"]
    assert records[0]["host"] == "s3" and records[0]["uploaded_at"] == "2023-11-14T22:13:20.000Z"
    assert records[1]["backups"][0]["location"] == "https://dav.jianguoyun.com/dav/pics/a.png"
    assert "gallery[1]" in first.stderr and "2 lines added, 0 already there" in first.stderr
    again = run("pp-mark", "--ledger", str(ledger), "import", str(db), str(mark))
    assert "0 lines added, 2 already there" in again.stderr
    assert len(ledger.read_text().splitlines()) == 2
    for text in (first.stdout, first.stderr, ledger.read_text()):
        assert SENTINEL not in text


def test_import_bad_files_are_error_messages_the_rest_goes_on(run, tmp_path):
    good = tmp_path / "picgo.db"
    picgo_db(good, [{"imgUrl": "https://img.example/ok.png", "type": "github", "createdAt": 1}])
    broken = tmp_path / "broken.db"
    broken.write_bytes(gzip.compress(b'{"gallery": [')[:-6])
    result = run("pp-mark", "--ledger", str(tmp_path / "l.jsonl"), "import", str(broken),
                 str(tmp_path / "missing.db"), str(good))
    assert result.returncode == 1
    assert [r["url"] for r in parse_jsonl(result.stdout)] == ["https://img.example/ok.png"]
    assert "corrupt_file" in result.stderr and "not_found" in result.stderr and "Traceback" not in result.stderr
    dry = run("pp-mark", "--ledger", str(tmp_path / "dry.jsonl"), "import", "--dry-run", str(good))
    assert dry.returncode == 0 and not (tmp_path / "dry.jsonl").exists()


def test_check_all_passes_records_without_url_and_ctrl_c_keeps_order(env, run, tmp_path):
    import signal
    import subprocess
    import time

    from conftest import command_path

    with running() as server:
        passthrough = run("pp-mark", "check", "-", "--all", input=jsonl([{"path": "local-only.png"}]))
        assert parse_jsonl(passthrough.stdout) == [{"path": "local-only.png"}]
        # the first URL is slow; the ten 404s behind it finish first and wait for it
        records = [{"url": server.url("/slow")}] + [{"url": server.url(f"/missing.png?{i}")} for i in range(10)]
        (tmp_path / "in.jsonl").write_text(jsonl(records))
        with open(tmp_path / "in.jsonl") as stdin:
            proc = subprocess.Popen([command_path("pp-mark"), "check", "-", "-j", "11", "--timeout", "30"],
                                    stdin=stdin, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
                                    preexec_fn=ctrl_c_works)
        time.sleep(1.0)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130
    assert out == b"" or out.endswith(b"\n")
    # nothing is written past the unfinished first probe: order is kept even when interrupted
    assert parse_jsonl(out.decode()) == []
    assert b"interrupted" in err


def test_check_bad_urls_cost_one_record_each(run):
    with running() as server:
        records = [{"url": server.url("/image.png")}, {"url": "http://a..b/x.png"},
                   {"url": "http://" + "x" * 70 + ".example/x.png"}, {"url": "ftp://x/y.png"},
                   {"url": server.url("/missing.png")}]
        result = run("pp-mark", "check", "-", "--retries", "0", input=jsonl(records) + "{bad\n")
    out = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in out] == ["bad_url", "bad_url", "bad_url", "http_404", "bad_json"]
    assert "internal" not in result.stdout
    assert "line 6" in result.stderr  # its own bad input line is told, too
