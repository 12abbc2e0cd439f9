"""Roots (issue 13): what a document names stays in its tree. pp-scan turns a local image into a
`path` only inside the folder given or a --root; pp-scan and pp-rewrite follow a symlink only
when it stays inside the folder given, and survive loops; pp-backup restore never writes through a
symlink planted in --out; a reader that leaves early (`| head -1`) ends the run with 141, quietly."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

import pytest

from conftest import command_path, jsonl, parse_jsonl
from test_upload import image

SECRET = b"root:x:0:0:root:/root:/bin/bash\n"
OLD, NEW = "https://old.example/a.png", "https://new.example/a.png"
MOVE = jsonl([{"url": NEW, "replaces": OLD}])


def errors(records: list[dict]) -> list[tuple[str, str]]:
    return [(r.get("ref", r)["doc"], r["error"]["type"]) for r in records if "error" in r]


@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """notes/ with one good local image, and a passwd-like file beside it, outside."""
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "passwd").write_bytes(SECRET)
    image(tmp_path / "notes" / "img" / "ok.png", (10, 200, 30))
    return tmp_path / "notes"


def test_a_note_cannot_name_a_file_outside_its_folder(run, tmp_path, notes):
    secret = tmp_path / "private" / "passwd"
    (notes / "img" / "leak.png").symlink_to(secret)
    (notes / "n.md").write_text(
        "![ok](img/ok.png)\n"
        "![z](../../../../../../../../" + str(secret).lstrip("/") + ")\n"
        f"![abs]({secret})\n"
        f"![url](file://{secret})\n"
        "![home](~/.ssh/id_rsa)\n"
        "![link](img/leak.png)\n"
        f"<img src=\"../private/passwd\">\n"
        "![web](https://img.example/w.png)\n")
    result = run("pp-scan", "--local", "notes")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    refused = [r for r in records if "error" in r]
    assert [r["ref"]["line"] for r in refused] == [2, 3, 4, 6, 7]
    for record in refused:
        assert "path" not in record and record["ref"]["doc"] == "notes/n.md"
        assert str(secret) in record["error"]["message"] and record["error"]["message"].startswith("notes/n.md:")
        # not an image: no advice to trust the folder the document chose
        assert record["error"]["type"] == "outside_root" and "--root" not in record["error"]["hint"]
        assert "never published" in record["error"]["hint"]
    # the good image still goes through; `~` is no home folder in Markdown: a name inside notes/
    assert [r["path"] for r in records if "error" not in r] == [str(notes / "img/ok.png"), str(notes / "~/.ssh/id_rsa")]
    assert "notes/n.md:6: img/leak.png is " + str(secret) in result.stderr
    assert "pp-scan: 7 image references (0 remote, 2 local, 5 refused) in 1 document" in result.stderr


def test_the_published_pipeline_sends_only_what_lies_in_the_notes(env, tmp_path, notes):
    """The audit's case: pp-scan --local notes | pp-upload --host local put the file on the host."""
    (notes / "n.md").write_text("![ok](img/ok.png)\n![z](../private/passwd)\n")
    env.update(PATH=str(Path(command_path("pp-scan")).parent) + ":" + env["PATH"],
               PICPIPE_LEDGER=str(tmp_path / "ledger.jsonl"), PICPIPE_WEB_TYPE="local",
               PICPIPE_WEB_DIR=str(tmp_path / "host"), PICPIPE_WEB_BASE_URL="https://img.example/")
    result = subprocess.run(["bash", "-c", "pp-scan --local notes | pp-upload --host web"], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == [None, "outside_root"]
    assert records[0]["url"].startswith("https://img.example/")
    published = [p.read_bytes() for p in (tmp_path / "host").rglob("*") if p.is_file()]
    assert len(published) == 1 and SECRET not in published


def test_root_allows_a_folder_given_on_the_command_line(run, tmp_path, notes):
    (notes / "n.md").write_text("![z](../private/passwd)\n![up](../shared/logo.png)\n")
    image(tmp_path / "shared" / "logo.png", (1, 2, 3))
    result = run("pp-scan", "--root", "shared", "notes")
    assert result.returncode == 1
    records = parse_jsonl(result.stdout)
    assert records[0]["error"]["type"] == "outside_root" and records[1]["path"] == str(tmp_path / "shared/logo.png")
    # an image outside: the hint names the folder that would let it in
    alone = parse_jsonl(run("pp-scan", "notes").stdout)
    assert alone[1]["error"]["type"] == "outside_root"
    assert f"pp-scan --root {tmp_path / 'shared'} " in alone[1]["error"]["hint"]
    both = run("pp-scan", "--root", "shared", "--root", str(tmp_path / "private"), "notes")
    assert both.returncode == 0 and [r["path"] for r in parse_jsonl(both.stdout)] == [
        str(tmp_path / "private/passwd"), str(tmp_path / "shared/logo.png")]
    missing = run("pp-scan", "--root", "nowhere", "notes")
    assert missing.returncode == 2 and missing.stdout == "" and "--root nowhere" in missing.stderr
    # a file argument's tree is its own folder
    (notes / "sub").mkdir()
    (notes / "sub" / "p.md").write_text("![a](../img/ok.png)\n")
    assert parse_jsonl(run("pp-scan", "notes/sub/p.md").stdout)[0]["error"]["type"] == "outside_root"
    assert "path" in parse_jsonl(run("pp-scan", "--root", "notes", "notes/sub/p.md").stdout)[0]


@pytest.fixture
def hugo(tmp_path: Path) -> Path:
    """A Hugo site: posts in content/, their /images/... in static/images/."""
    image(tmp_path / "site" / "static" / "images" / "x.png", (200, 100, 0))
    (tmp_path / "site" / "static" / "images" / "leak.png").symlink_to(tmp_path / "private" / "passwd")
    (tmp_path / "private").mkdir()
    (tmp_path / "private" / "passwd").write_bytes(SECRET)
    (tmp_path / "site" / "content" / "posts").mkdir(parents=True)
    (tmp_path / "site" / "content" / "posts" / "p.md").write_text(
        "![a](/images/x.png)\n![b](/etc/passwd)\n![c](/images/gone.png)\n![d](../../gone.png)\n"
        f"![e]({OLD})\n![f](/images/leak.png)\n")
    return tmp_path / "site"


def test_a_site_root_path_without_site_root_is_a_missing_file_not_a_folder_to_trust(run, hugo):
    """Review finding 7: `/images/x.png` used to get the hint `--root /images` (no such folder),
    and `/etc/passwd` the hint `--root /etc`."""
    result = run("pp-scan", "site/content")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == [
        "not_found", "outside_root", "not_found", "not_found", None, "not_found"]
    assert all("path" not in r for r in records)
    first, passwd, _, relative, _, _ = (r.get("error", {}) for r in records)
    assert first["message"] == "site/content/posts/p.md:1: /images/x.png: no such file"
    assert "--site-root static" in first["hint"] and "--root" not in first["hint"].replace("--site-root", "")
    assert passwd["message"].startswith("site/content/posts/p.md:2: /etc/passwd, outside ")
    assert "--root" not in passwd["hint"] and "never published" in passwd["hint"]
    assert relative["message"].endswith(f"../../gone.png is {hugo / 'gone.png'}: no such file")
    assert relative["hint"] == "check the link"
    assert "pp-scan: 6 image references (1 remote, 0 local, 1 refused, 4 missing) in 1 document" in result.stderr
    # --remote and --url leave the local problems out, as before
    for only in (["--remote"], ["--url", OLD]):
        remote = run("pp-scan", *only, "site/content")
        assert remote.returncode == 0 and [r["url"] for r in parse_jsonl(remote.stdout)] == [OLD]
        assert "pp-scan: 1 image reference (1 remote, 0 local) in 1 document" in remote.stderr


def test_site_root_reads_slash_paths_against_the_static_folder(run, env, tmp_path, hugo):
    result = run("pp-scan", "--local", "--site-root", "site/static", "site/content")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    static = hugo / "static"
    assert [r.get("path") for r in records] == [
        str(static / "images/x.png"), str(static / "etc/passwd"), str(static / "images/gone.png"), None, None]
    # pp-rewrite finds the reference by what the document says
    assert records[0]["ref"]["resolved"] == "/images/x.png"
    # the site root is a root like any other: a symlink in it that leads out is still refused
    assert records[4]["error"]["type"] == "outside_root" and "--root" not in records[4]["error"]["hint"]
    assert "pp-scan: 5 image references (0 remote, 3 local, 1 refused, 1 missing) in 1 document" in result.stderr
    missing = run("pp-scan", "--site-root", "nowhere", "site/content")
    assert missing.returncode == 2 and missing.stdout == "" and "--site-root nowhere" in missing.stderr

    # the whole loop: only the image under static/ is published, and the post points at it
    env.update(PATH=str(Path(command_path("pp-scan")).parent) + ":" + env["PATH"],
               PICPIPE_LEDGER=str(tmp_path / "ledger.jsonl"), PICPIPE_WEB_TYPE="local",
               PICPIPE_WEB_DIR=str(tmp_path / "host"), PICPIPE_WEB_BASE_URL="https://img.example/")
    loop = subprocess.run(["bash", "-c", "pp-scan --local --site-root site/static site/content | "
                           "pp-upload --host web | pp-rewrite --no-backup site/content"],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=60)
    assert loop.returncode == 1 and "Traceback" not in loop.stderr
    published = [p for p in (tmp_path / "host").rglob("*") if p.is_file()]
    assert [p.read_bytes() for p in published] == [(static / "images/x.png").read_bytes()]
    lines = (hugo / "content/posts/p.md").read_text().splitlines()
    assert lines[0].startswith("![a](https://img.example/") and lines[1:] == [
        "![b](/etc/passwd)", "![c](/images/gone.png)", "![d](../../gone.png)", f"![e]({OLD})", "![f](/images/leak.png)"]


def test_symlinks_that_leave_the_folder_are_neither_read_nor_written(run, tmp_path):
    outside = tmp_path / "outside"
    (outside / "folder").mkdir(parents=True)
    (outside / "p.md").write_text(f"![a]({OLD})\n")
    (outside / "folder" / "q.md").write_text(f"![a]({OLD})\n")
    docs = tmp_path / "docs"
    (docs / "2024").mkdir(parents=True)
    (docs / ".drafts").mkdir()
    (docs / "2024" / "real.md").write_text(f"![a]({OLD})\n")
    (docs / ".drafts" / "draft.md").write_text(f"![a]({OLD})\n")
    (docs / "escape.md").symlink_to(outside / "p.md")
    (docs / "elsewhere").symlink_to(outside / "folder")
    (docs / "alias.md").symlink_to("2024/real.md")  # inside: fine, read once
    (docs / "latest").symlink_to("2024")  # another name of a folder walked anyway
    (docs / "drafts").symlink_to(".drafts")  # the only way in to a hidden folder: followed

    scanned = run("pp-scan", "docs")
    assert scanned.returncode == 1 and "Traceback" not in scanned.stderr
    records = parse_jsonl(scanned.stdout)
    assert errors(records) == [("docs/elsewhere", "symlink_outside"), ("docs/escape.md", "symlink_outside")]
    assert [r["ref"]["doc"] for r in records if "error" not in r] == ["docs/2024/real.md", "docs/drafts/draft.md"]
    assert "docs/escape.md is a symlink to " + str(outside / "p.md") in scanned.stderr

    result = run("pp-rewrite", "--no-backup", "docs", input=MOVE)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    out = parse_jsonl(result.stdout)
    assert errors(out) == [("docs/elsewhere", "symlink_outside"), ("docs/escape.md", "symlink_outside")]
    assert [r["doc"] for r in out if "error" not in r] == ["docs/2024/real.md", "docs/drafts/draft.md"]
    assert (outside / "p.md").read_text() == (outside / "folder" / "q.md").read_text() == f"![a]({OLD})\n"
    assert (docs / "2024" / "real.md").read_text() == (docs / ".drafts" / "draft.md").read_text() == f"![a]({NEW})\n"
    assert (docs / "alias.md").is_symlink() and (docs / "escape.md").is_symlink()
    # named on the command line (a shell glob), the symlink is refused the same way
    named = run("pp-rewrite", "docs/escape.md", input=MOVE)
    assert named.returncode == 1 and parse_jsonl(named.stdout)[0]["error"]["type"] == "symlink_outside"
    assert (outside / "p.md").read_text() == f"![a]({OLD})\n" and not (docs / "escape.md.bak").exists()


def test_a_symlink_loop_does_not_stop_the_walk(run, tmp_path):
    notes = tmp_path / "notes"
    (notes / "b").mkdir(parents=True)
    (notes / "a.md").symlink_to("a.md")  # ELOOP
    (notes / "b" / "up").symlink_to("..")  # a folder link to its parent
    (notes / "ping.md").symlink_to("pong.md")
    (notes / "pong.md").symlink_to("ping.md")
    (notes / "b" / "c.md").write_text(f"![a]({OLD})\n")
    (notes / "z.md").write_text(f"![a]({OLD})\n")
    result = run("pp-scan", "notes", timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert errors(records) == [("notes/a.md", "symlink_loop"), ("notes/b/up", "symlink_loop"),
                               ("notes/ping.md", "symlink_loop"), ("notes/pong.md", "symlink_loop")]
    assert [r["ref"]["doc"] for r in records if "error" not in r] == ["notes/b/c.md", "notes/z.md"]
    assert "pp-scan: 2 image references (2 remote, 0 local) in 2 documents" in result.stderr

    rewritten = run("pp-rewrite", "--no-backup", "notes", input=MOVE, timeout=30)
    assert rewritten.returncode == 1 and "Traceback" not in rewritten.stderr
    assert (notes / "b" / "c.md").read_text() == (notes / "z.md").read_text() == f"![a]({NEW})\n"


def test_restore_writes_nothing_outside_out(run, tmp_path):
    usb, out, elsewhere = tmp_path / "usb", tmp_path / "restored", tmp_path / "elsewhere"
    pictures = [image(usb / "x" / "a.png", (200, 0, 0)), image(usb / "y" / "b.png", (0, 200, 0)),
                image(usb / "z" / "c.png", (0, 0, 200))]
    digests = [hashlib.sha256(p.read_bytes()).hexdigest() for p in pictures]
    records = [{"url": f"https://dead.example/{p.name}", "sha256": digest,
                "backups": [{"target": "usb", "location": str(p), "sha256": digest}]}
               for p, digest in zip(pictures, digests)]
    elsewhere.mkdir()
    (elsewhere / "b.png").write_bytes(b"not yours")
    out.mkdir()
    (out / "x").symlink_to(elsewhere)  # a planted folder link
    (out / "y").mkdir()
    (out / "y" / "b.png").symlink_to(elsewhere / "b.png")  # a planted file link
    result = run("pp-backup", "restore", "--out", str(out), input=jsonl(records),
                 extra_env={"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(usb)})
    assert result.returncode == 1 and "Traceback" not in result.stderr
    restored = parse_jsonl(result.stdout)
    assert restored[0]["error"]["type"] == "unsafe_path" and "hint" in restored[0]["error"]
    assert f"{out / 'x'} is a symlink" in restored[0]["error"]["message"]
    # the file link is left as it is; the copy goes beside it, named after its bytes
    assert Path(restored[1]["path"]).parent == out / "y" and not Path(restored[1]["path"]).is_symlink()
    assert Path(restored[1]["path"]).read_bytes() == pictures[1].read_bytes()
    assert restored[2]["path"] == str(out / "z" / "c.png") and "error" not in restored[2]
    assert sorted(p.name for p in elsewhere.iterdir()) == ["b.png"]
    assert (elsewhere / "b.png").read_bytes() == b"not yours"
    assert oct(os.stat(restored[2]["path"]).st_mode & 0o777) == oct(0o666 & ~_umask())


def test_restore_removes_the_temp_files_a_killed_restore_left_and_no_live_one(run, tmp_path):
    from picpipe.files import _machine

    usb, out = tmp_path / "usb", tmp_path / "restored"
    picture = image(usb / "k" / "a.png", (10, 20, 30))
    digest = hashlib.sha256(picture.read_bytes()).hexdigest()
    record = {"url": "https://dead.example/a.png", "sha256": digest,
              "backups": [{"target": "usb", "location": str(picture), "sha256": digest}]}
    gone = subprocess.Popen(["true"])
    gone.wait()
    out.mkdir()
    dead = out / f".pp-restore-{_machine()}-{gone.pid}-0badc0de.tmp"  # what kill -9 mid-restore leaves
    live = out / f".pp-restore-{_machine()}-{os.getpid()}-1badc0de.tmp"  # a restore running now
    old = out / ".pp-restore-0123456789ab"  # an earlier version's name, untouched for two hours
    for left in (dead, live, old):
        left.write_bytes(b"half a picture")
    os.utime(old, (os.path.getmtime(old) - 7200,) * 2)
    result = run("pp-backup", "restore", "--out", str(out), input=jsonl([record]),
                 extra_env={"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(usb)})
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    [restored] = parse_jsonl(result.stdout)
    assert Path(restored["path"]).read_bytes() == picture.read_bytes()
    assert sorted(p.name for p in out.iterdir()) == sorted(["k", live.name])


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@pytest.mark.parametrize("argv", [["pp-rewrite", "--dry-run", "docs"], ["pp-scan", "docs"]])
def test_a_reader_that_leaves_early_ends_the_run_quietly(env, tmp_path, argv):
    """`... | head -1`: exit 141 and nothing on stderr, not one "Broken pipe" line per document."""
    (tmp_path / "docs").mkdir()
    for number in range(200):  # far more than a pipe holds: the writer is still writing when head leaves
        (tmp_path / "docs" / f"d{number:03}.md").write_text(f"![a]({OLD})\n" * 40)
    process = subprocess.Popen([command_path(argv[0]), "-q", *argv[1:]], stdin=subprocess.PIPE,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=tmp_path)
    assert process.stdin is not None and process.stdout is not None and process.stderr is not None
    process.stdin.write(MOVE.encode())
    process.stdin.close()
    first = process.stdout.readline()
    process.stdout.close()
    assert process.wait(timeout=60) == 141
    assert process.stderr.read() == b"" and first.strip()
