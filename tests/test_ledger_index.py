"""The ledger's index as a lookup: one image's lines by sha256, a sha256 prefix, a backup copy.

Every lookup through the index must give what reading the whole ledger gives (`Ledger.states()`
restricted to those images), after appends by other processes, a replaced or rewritten file,
a torn tail, a deleted index, and without an index at all.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from conftest import ROOT, jsonl, parse_jsonl
from picpipe.commands.backup import CopyCommand
from picpipe.ledger import Ledger, identity, matches, resolve

HOSTS = ("qiniu", "github", "local")
TARGETS = ("nas", "nutstore")
BACKUP_ROOT = "/backups/nas/"


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("XDG_CACHE_HOME", str(folder))
    return folder


def sha(n: int) -> str:
    return hashlib.sha256(str(n).encode()).hexdigest()


def random_ledger(rng: random.Random, lines: int, images: int = 300) -> list[dict[str, Any]]:
    """Lines as real runs write them, with repeats: uploads to several hosts, re-uploads,
    tombstones, backups of the image and of its original (another hash), imported entries with
    a URL only, lines out of time order (merged ledgers) and lines without a time."""
    out: list[dict[str, Any]] = []
    for i in range(lines):
        n = rng.randrange(images)
        host = rng.choice(HOSTS)
        entry: dict[str, Any] = {"sha256": sha(n), "host": host, "key": f"{n:08x}{rng.choice(['', '-b'])}.png",
                                 "source": f"/home/me/shot {n}.png"}
        entry["url"] = f"https://{host}.example.com/{entry['key']}"
        kind = rng.random()
        if kind < 0.12:
            entry["deleted_at"] = f"2024-06-{rng.randrange(1, 28):02d}T00:00:00Z"
        elif kind < 0.35:
            target = rng.choice(TARGETS)
            where = BACKUP_ROOT if target == "nas" else "https://dav.example.com/dav/"
            copy = sha(n + 100000) if rng.random() < 0.5 else sha(n)  # the original's hash, or the image's
            entry["backups"] = [{"target": target, "location": f"{where}{copy[:12]}.png", "sha256": copy,
                                 "at": "2024-05-01T00:00:00Z"}]
        elif kind < 0.42:
            entry = {"url": f"https://old.example.com/{n}.png", "source": f"/home/me/shot {n}.png"}
            if rng.random() < 0.5:
                entry["backups"] = [{"target": "nas", "location": f"{BACKUP_ROOT}old-{n}.png",
                                     "sha256": sha(n + 100000)}]
        elif kind < 0.46:
            entry.pop("sha256")  # a host's entry known by (host, key) only
        elif kind < 0.48:  # hashes that are no lowercase hex (hand-edited, imported)
            entry["sha256"] = rng.choice([f"12zz{n}", sha(n).upper(), f"{n}", "0" * 20])
        if rng.random() < 0.9:
            entry["marked_at"] = f"2024-{rng.randrange(1, 13):02d}-{rng.randrange(1, 28):02d}T{i % 24:02d}:00:00Z"
        out.append(entry)
    return out


def write(path: Path, entries: list[dict[str, Any]], mode: str = "a") -> None:
    with path.open(mode) as handle:
        handle.write(jsonl(entries))


def without_index(path: Path) -> Ledger:
    ledger = Ledger(path)
    ledger._index_failed = True  # as when the cache cannot be written: the whole file is read
    return ledger


def uploaded_before_full(ledger: Ledger, host: str) -> dict[str, dict[str, Any]]:
    """pp-upload's dedupe as it was: all states read at start."""
    known: dict[str, dict[str, Any]] = {}
    for entry in ledger.states():
        if entry.get("host") == host and entry.get("url") and not entry.get("deleted_at"):
            known[str(entry.get("sha256"))] = entry
    return known


def uploaded_before(ledger: Ledger, host: str, digest: str) -> dict[str, Any] | None:
    """pp-upload's dedupe now (UploadCommand.uploaded_before)."""
    from picpipe.commands.upload import UploadCommand

    command = SimpleNamespace(ledger=ledger)
    return UploadCommand.uploaded_before(command, digest, host)  # type: ignore[arg-type]


class FakeTarget:
    name = "nas"

    def key_of(self, location: str) -> str | None:
        return location[len(BACKUP_ROOT):] if location.startswith(BACKUP_ROOT) else None


def copies_full(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """pp-backup's known copies as they were: all states read at start."""
    known: dict[str, dict[str, Any]] = {}
    for state in ledger.states():
        for entry in state.get("backups") or ():
            if entry.get("target") == "nas" and entry.get("sha256") and FakeTarget().key_of(entry["location"]):
                known[str(entry["sha256"])] = entry
    return known


def copies(ledger: Ledger, digests: set[str]) -> dict[str, dict[str, Any]]:
    return CopyCommand.copies_in(SimpleNamespace(target=FakeTarget()), ledger, digests)  # type: ignore[arg-type]


def find(ledger: Ledger, prefix: str, deleted: bool = False) -> list[dict[str, Any]]:
    """pp-mark find --sha256 PREFIX (FindCommand.run's filter)."""
    return [s for s in ledger.states_by_sha256_prefix(prefix.lower())
            if (deleted or not s.get("deleted_at")) and matches(s, sha256=prefix)]


def assert_same(path: Path, rng: random.Random, images: int = 300, samples: int = 60,
                indexed_expected: bool = True) -> None:
    """Every lookup through the index equals the same lookup on a full read."""
    indexed, full = Ledger(path), without_index(path)
    everything = resolve(entry for _, entry in full.lines())
    wanted = [sha(rng.randrange(images + 20)) for _ in range(samples)]
    for digest in wanted:
        assert indexed.states_for([digest]) == \
            [s for s in everything if identity(s)[0] == "image" and identity(s)[1] == digest]
        assert indexed.states_for([digest]) == full.states_for([digest])
    assert indexed.states_for(wanted) == full.states_for(wanted)
    for host in HOSTS:
        before = uploaded_before_full(full, host)
        for digest in wanted:
            assert uploaded_before(indexed, host, digest) == before.get(digest), (host, digest)
    known = copies_full(full)
    for digest in [*wanted, *(sha(rng.randrange(images) + 100000) for _ in range(samples))]:
        assert copies(indexed, {digest}) == ({digest: known[digest]} if digest in known else {}), digest
    for prefix in ("0", "a", "0a", "aa", wanted[0][:3], wanted[0][:20], wanted[1], "f", "FF", "g", "12", "12z",
                   "0" * 17, "0" * 20, "0" * 21, "7"):
        for deleted in (False, True):
            assert find(indexed, prefix, deleted) == find(full, prefix, deleted), prefix
    urls = [str(s["url"]) for s in rng.sample(everything, min(samples, len(everything))) if s.get("url")]
    for url in [*urls, "https://old.example.com/1.png", "https://nowhere.example.com/x.png", ""]:
        assert [s for s in indexed.states_by_url(url) if matches(s, url=url)] == \
            [s for s in everything if matches(s, url=url)], url
    assert list(indexed.iter_states()) == everything
    assert (indexed._index is not None) is indexed_expected  # the lookups went through the index
    indexed.close()


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_lookups_through_the_index_equal_a_full_read(tmp_path: Path, seed: int):
    rng = random.Random(seed)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 3000))
    assert_same(path, rng)
    # Lines added since: by another writer (read as the appended tail), and by append_new
    # (kept in memory and flushed), then a look by a fresh process.
    write(path, random_ledger(rng, 500))
    assert_same(path, rng)
    writer = Ledger(path)
    for entry in random_ledger(rng, 300):
        writer.append_new(entry)
    assert_same(path, rng)
    writer.close()
    assert_same(path, rng)


APPEND = """
import json, sys
from picpipe.ledger import Ledger
ledger = Ledger(sys.argv[1])
for line in sys.stdin:
    ledger.append_new(json.loads(line))
ledger.close()
"""


def test_appends_by_another_process_are_seen_at_the_next_lookup(tmp_path: Path):
    rng = random.Random(7)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 1000))
    ledger = Ledger(path)
    assert ledger.states_for([sha(5000)]) == []  # the index is built and kept open
    new = {"sha256": sha(5000), "host": "qiniu", "key": "k.png", "url": "https://q/k.png",
           "backups": [{"target": "nas", "location": f"{BACKUP_ROOT}k.png", "sha256": sha(5001)}]}
    subprocess.run([sys.executable, "-c", APPEND, str(path)], input=jsonl([new]), text=True, check=True,
                   env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert [s["url"] for s in ledger.states_for([sha(5000)])] == ["https://q/k.png"]
    assert uploaded_before(ledger, "qiniu", sha(5000))["key"] == "k.png"
    assert copies(ledger, {sha(5001)})[sha(5001)]["location"] == f"{BACKUP_ROOT}k.png"
    assert [s["key"] for s in find(ledger, sha(5000)[:6])] == ["k.png"]
    ledger.close()
    assert_same(path, rng)


def test_a_ledger_replaced_by_an_older_copy_is_indexed_again(tmp_path: Path):
    rng = random.Random(11)
    path, old = tmp_path / "ledger.jsonl", tmp_path / "old.jsonl"
    write(path, random_ledger(rng, 1500))
    shutil.copy(path, old)
    write(path, random_ledger(rng, 1500))
    ledger = Ledger(path)
    assert_same(path, rng)
    ledger.states_for([sha(1)])
    # Another file (a sync put the older copy back): another inode.
    shutil.copy(old, tmp_path / "older.jsonl")
    os.replace(tmp_path / "older.jsonl", path)
    assert ledger.states_for([sha(1)]) == without_index(path).states_for([sha(1)])
    assert_same(path, rng)
    # The same file rewritten in place: shorter, then the same size with other bytes.
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2].rsplit(b"\n", 1)[0] + b"\n")
    assert_same(path, rng)
    data = path.read_bytes()
    lines = data.splitlines(keepends=True)
    rng.shuffle(lines)
    path.write_bytes(b"".join(lines))
    assert len(path.read_bytes()) == len(data)
    assert_same(path, rng)
    ledger.close()


def test_a_torn_tail_is_fenced_and_the_index_stays_right(tmp_path: Path):
    rng = random.Random(13)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 1000))
    assert_same(path, rng)
    data = path.read_bytes()
    path.write_bytes(data[:-25])  # a writer killed in the middle of its last line
    assert_same(path, rng)
    ledger = Ledger(path)
    ledger.append([{"sha256": sha(7000), "host": "local", "key": "t.png", "url": "https://l/t.png"}])
    ledger.close()
    assert [s["key"] for s in Ledger(path).states_for([sha(7000)])] == ["t.png"]
    assert_same(path, rng)


def test_a_hand_edited_last_line_without_its_newline_and_odd_blanks_are_lines(tmp_path: Path):
    """What a full read takes as a line the index has too: a last line an editor saved without
    its newline (else pp-upload would upload its image again), a line with blanks JSON does not
    know around it (a form feed, a no-break space); then the next append fences the last line."""
    rng = random.Random(41)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 300))
    with path.open("a") as handle:
        handle.write("\f" + json.dumps({"sha256": sha(8000), "host": "local", "key": "f.png", "url": "https://l/f.png"})
                     + "\u00a0\n")
        handle.write(json.dumps({"sha256": sha(8001), "host": "local", "key": "e.png", "url": "https://l/e.png"}))
    assert_same(path, rng)
    for digest, key in ((sha(8000), "f.png"), (sha(8001), "e.png")):
        assert uploaded_before(Ledger(path), "local", digest)["key"] == key
    with Ledger(path) as ledger:
        assert not ledger.append_new({"sha256": sha(8001), "host": "local", "key": "e.png", "url": "https://l/e.png"})
        assert ledger.append_new({"sha256": sha(8002), "host": "local", "key": "g.png", "url": "https://l/g.png"})
    assert path.read_text().endswith('"url": "https://l/e.png"}\n' + json.dumps(
        {"sha256": sha(8002), "host": "local", "key": "g.png", "url": "https://l/g.png"}, separators=(",", ":")) + "\n")
    assert_same(path, rng)


def test_a_deleted_or_unusable_index_changes_nothing(tmp_path: Path, cache: Path,
                                                     monkeypatch: pytest.MonkeyPatch):
    rng = random.Random(17)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 1000))
    assert_same(path, rng)
    files = list((cache / "picpipe" / "ledger-index").glob("*.sqlite3"))
    assert len(files) == 1
    shutil.rmtree(cache)
    assert_same(path, rng)
    assert list((cache / "picpipe" / "ledger-index").glob("*.sqlite3"))  # rebuilt
    # A cache that cannot be written: the lookups read the whole file, with the same answers.
    shutil.rmtree(cache)
    cache.write_text("not a folder")
    assert_same(path, rng, indexed_expected=False)
    # An index of the old format is rebuilt rather than misread.
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache2"))
    Ledger(path).states_for([sha(1)])
    index = next((tmp_path / "cache2" / "picpipe" / "ledger-index").glob("*.sqlite3"))
    import sqlite3

    with sqlite3.connect(index) as db:
        db.execute("UPDATE meta SET value = '1' WHERE name = 'version'")
        db.execute("DELETE FROM line")
    assert_same(path, rng)


def test_no_ledger_finds_nothing_and_creates_nothing(tmp_path: Path):
    path = tmp_path / "none" / "ledger.jsonl"
    ledger = Ledger(path)
    assert ledger.states_for([sha(1)]) == [] and ledger.states_with_copies({sha(1)}) == []
    ledger.close()
    assert not path.exists()


def test_upload_dedupes_through_the_index_across_runs_and_within_one(run, tmp_path: Path, env):
    from PIL import Image

    img = tmp_path / "a.png"
    Image.new("RGB", (20, 10), (200, 10, 10)).save(img)
    ledger = tmp_path / "ledger.jsonl"
    write(ledger, random_ledger(random.Random(3), 2000))
    args = ("--host", "local", "--ledger", str(ledger))
    first = run("pp-upload", *args, str(img), str(img))
    assert first.returncode == 0, first.stderr
    records = parse_jsonl(first.stdout)
    # Either may go first (workers run at once), the other is deduped: one upload.
    assert sorted(str(r.get("deduped")) for r in records) == ["None", "True"]
    assert records[0]["url"] == records[1]["url"]
    assert run("pp-mark", "--ledger", str(ledger), input=jsonl(records[:1])).returncode == 0
    again = parse_jsonl(run("pp-upload", *args, str(img)).stdout)
    assert again[0]["deduped"] is True and again[0]["url"] == records[0]["url"]
    found = run("pp-mark", "find", "--ledger", str(ledger), "--sha256", records[0]["sha256"][:8].upper())
    assert [json.loads(line)["url"] for line in found.stdout.splitlines()] == [records[0]["url"]]


WRITER = """
import sys
from picpipe.ledger import Ledger
ledger = Ledger(sys.argv[1])
for i in range(int(sys.argv[2]), int(sys.argv[2]) + int(sys.argv[3])):
    ledger.append_new({"sha256": "%064x" % i, "host": "local", "key": "%d.png" % i, "url": "https://l/%d.png" % i})
ledger.close()
"""


def test_lookups_among_concurrent_appenders_never_miss_a_line_already_written(tmp_path: Path):
    """Writers in other processes (pp-mark's way: lines kept in memory, indexed by 1000s) and
    one here; a lookup of a line this writer has finished appending always finds it."""
    import threading

    path = tmp_path / "ledger.jsonl"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    others = [subprocess.Popen([sys.executable, "-c", WRITER, str(path), str(100000 * (w + 1)), "1000"], env=env)
              for w in range(3)]
    done = -1
    misses: list[int] = []

    def look() -> None:
        reader = Ledger(path)
        while done < 999:
            seen = done
            if seen >= 0 and not reader.states_for([f"{seen:064x}"]):
                misses.append(seen)
        reader.close()

    thread = threading.Thread(target=look)
    thread.start()
    writer = Ledger(path)
    for i in range(1000):
        writer.append_new({"sha256": f"{i:064x}", "host": "local", "key": f"{i}.png", "url": f"https://l/{i}.png"})
        done = i
    writer.close()
    thread.join()
    assert all(proc.wait() == 0 for proc in others)
    assert misses == []
    everything = without_index(path).states()
    assert len(everything) == 4000
    lookups = Ledger(path)
    assert all(lookups.states_for([s["sha256"]]) == [s] for s in everything[::37])


@pytest.mark.parametrize("seed,warm,torn", [(1, True, False), (2, False, False), (3, True, True)])
def test_merge_through_the_index_equals_merge_by_reading_everything(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                                     seed: int, warm: bool, torn: bool):
    rng = random.Random(seed)
    base = random_ledger(rng, 600, images=150)
    other = base[100:400:3] + random_ledger(rng, 400, images=200)  # lines it holds, and new ones
    odd: list[dict[str, Any]] = [{"url": "", "note": "no identity"}, {"note": "nothing at all"},
                                 {**base[5], "marked_at": "2030-01-01T00:00:00Z"},  # same image, a new line
                                 {k: base[7][k] for k in reversed(list(base[7]))}]  # same line, keys reordered
    other += odd
    rng.shuffle(other)
    other += other[:60] + odd  # repeats within what is merged in
    monkeypatch.setattr(Ledger, "MERGE_BATCH", 37)  # several batches, repeats across them
    indexed, full = tmp_path / "indexed.jsonl", tmp_path / "full.jsonl"
    for path in (indexed, full):
        write(path, base, "w")
        if torn:
            with path.open("a") as handle:
                handle.write('{"url": "https://x.example/torn.png", "mar')
    if warm:
        assert Ledger(indexed).states_for([sha(1)]) is not None  # the index covers the ledger already
    with Ledger(indexed) as ledger:
        by_index = ledger.add_new(iter(other))
        assert ledger._index is not None  # it went through the index
    with without_index(full) as ledger:
        by_reading = ledger.add_new(other)
    assert by_index == by_reading and by_index[0] > 0 and by_index[1] > 0
    assert indexed.read_bytes() == full.read_bytes()  # the same lines, in the same order
    assert Ledger(indexed).states() == Ledger(full).states()
    # the index covers the merged lines: lookups and a second merge agree with a full read
    assert_same(indexed, rng, images=200)
    with Ledger(indexed) as ledger:
        assert ledger.add_new(other) == (0, len(other))
    assert indexed.read_bytes() == full.read_bytes()


def test_every_state_streamed_in_small_chunks_equals_a_full_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """`iter_states` (pp-mark find without --sha256/--url, check): the states of `states()` in
    its order, an image's lines spread over many chunks; bad lines reported the same way."""
    monkeypatch.setattr(Ledger, "STATES_CHUNK", 7)
    rng = random.Random(19)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 800, images=60))
    with path.open("ab") as handle:
        handle.write(b'not json\n[1]\n\xff\n')
    write(path, random_ledger(rng, 400, images=60))
    with path.open("ab") as handle:
        handle.write(b'{"url": "https://x.example/torn.png", "mar')
    bad_full: list[tuple[int, str]] = []
    bad_streamed: list[tuple[int, str]] = []
    everything = without_index(path).states(lambda n, p: bad_full.append((n, p)))
    ledger = Ledger(path)
    assert list(ledger.iter_states(lambda n, p: bad_streamed.append((n, p)))) == everything
    assert ledger._index is not None and bad_streamed == bad_full and len(bad_full) == 4
    # Lines appended while the states stream out are left for the next look, none half-read.
    streamed = ledger.iter_states()
    first = next(streamed)
    with Ledger(path) as other:  # fences the torn line off
        other.append([{"sha256": sha(9000), "host": "local", "key": "n.png", "url": "https://l/n.png"}])
    assert [first, *streamed] == everything
    assert list(ledger.iter_states())[-1]["key"] == "n.png"
    ledger.close()


def test_streaming_reads_each_line_of_an_image_with_many_lines_about_twice(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch):
    """An image's first line reads its K-1 later ones to fold its state; each later line reads
    the lines before it only up to its image's first: 2·(K-1) reads an image, not K·(K-1)."""
    from picpipe import files

    images, rounds = 40, 12
    monkeypatch.setattr(Ledger, "STATES_CHUNK", 25)  # each round's lines over two chunks
    path = tmp_path / "ledger.jsonl"
    write(path, [{"sha256": sha(n), "host": "local", "key": f"{n}.png", "url": f"https://l/{n}.png",
                  "backups": [{"target": f"t{r}", "location": f"/b/{r}/{n}.png"}]}
                 for r in range(rounds) for n in range(images)])
    everything = without_index(path).states()
    assert len(everything) == images and all(len(s["backups"]) == rounds for s in everything)
    ledger = Ledger(path)
    assert list(ledger.iter_states()) == everything  # builds the index
    reads = []
    pread = files.pread
    monkeypatch.setattr(files, "pread", lambda fd, n, off: reads.append(off) or pread(fd, n, off))
    assert list(ledger.iter_states()) == everything
    assert len(reads) <= 2 * images * (rounds - 1) + 2, len(reads)  # + the index's look at the tail
    ledger.close()


def test_find_by_url_and_by_other_filters_through_the_index(run, tmp_path: Path):
    rng = random.Random(23)
    path = tmp_path / "ledger.jsonl"
    entries = random_ledger(rng, 600, images=80)
    write(path, entries)
    everything = without_index(path).states()
    live = [s for s in everything if not s.get("deleted_at")]
    url = next(s["url"] for s in live if "old.example" not in s["url"])
    for args, wanted in ((["--url", url], [s for s in live if s["url"] == url]),
                         (["--host", "github"], [s for s in live if s.get("host") == "github"]),
                         (["--source", "shot 1*.png"], [s for s in live if matches(s, source="shot 1*.png")]),
                         (["--url", "https://old.example.com/*"], [s for s in live if "old.example" in s["url"]]),
                         ([], live)):
        found = run("pp-mark", "find", "--ledger", str(path), *args)
        assert found.returncode == 0, found.stderr
        assert parse_jsonl(found.stdout) == wanted and wanted, args


def test_a_hand_edit_in_place_is_seen_after_pp_mark_index_rebuild(run, tmp_path: Path):
    """An edit that keeps the file, its size and its last 4 KB is not noticed by the index
    (only the tail is compared); `pp-mark index --rebuild` reads it all again."""
    rng = random.Random(29)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 400))
    first = json.loads(path.read_bytes().split(b"\n", 1)[0])
    assert run("pp-mark", "index", "--ledger", str(path)).returncode == 0
    data = path.read_bytes()
    old_sha = first["sha256"] if "sha256" in first else None
    assert old_sha and len(old_sha) == 64
    edited = data.replace(old_sha.encode(), sha(123456).encode(), 1)  # the first line's hash, by hand
    with path.open("r+b") as handle:
        handle.write(edited)
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns))
    result = run("pp-mark", "index", "--rebuild", "--ledger", str(path))
    assert result.returncode == 0, result.stderr
    assert "is indexed in" in result.stderr and "ledger-index" in result.stderr
    assert [s["key"] for s in Ledger(path).states_for([sha(123456)])] == [first["key"]]
    assert_same(path, rng)
    assert run("pp-mark", "index", "--ledger", str(tmp_path / "none.jsonl")).returncode == 2


def test_the_index_after_import_covers_the_imported_lines(run, tmp_path: Path):
    rng = random.Random(31)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 500))
    assert_same(path, rng)
    gallery = tmp_path / "data.json"
    gallery.write_text(json.dumps({"uploaded": [
        {"fileName": f"p{i}.png", "imgUrl": f"https://old.example.com/{i}.png", "type": "smms"} for i in range(40)]}))
    result = run("pp-mark", "import", "--ledger", str(path), str(gallery))
    assert result.returncode == 0, result.stderr
    assert_same(path, rng)
    assert run("pp-mark", "import", "--ledger", str(path), str(gallery)).stderr.count("0 lines added") == 1


BUILD = """
import os, signal, sys
from picpipe.ledger import Ledger, LedgerIndex
LedgerIndex.BIG_READ = 1 << 20  # the staged way of a long read, on a small ledger
index_lines, calls = LedgerIndex._index_lines, []
def index_lines(self, *args):
    calls.append(1)
    if len(calls) == 3:  # in the middle of the build: its transaction is open, rows half-staged
        os.kill(os.getpid(), signal.SIGKILL)
    index_lines(self, *args)
LedgerIndex._index_lines = index_lines
Ledger(sys.argv[1]).states_for(["0" * 64])
"""


def test_kill_9_in_the_middle_of_an_index_update_is_repaired_by_the_next_run(run, tmp_path: Path):
    """A process killed while it builds the index (one transaction), and a bulk pp-mark killed
    with where its lines are still in memory: the next look repairs both from the ledger."""
    import time

    rng = random.Random(37)
    path = tmp_path / "ledger.jsonl"
    write(path, random_ledger(rng, 20_000, images=2000))
    assert path.stat().st_size > 4 << 20
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    build = subprocess.run([sys.executable, "-c", BUILD, str(path)], env=env)
    assert build.returncode == -9
    assert_covered(path)
    mark = subprocess.Popen([str(ROOT / ".venv" / "bin" / "pp-mark"), "-q", "--ledger", str(path)],
                            stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, env=env)
    assert mark.stdin is not None
    size = path.stat().st_size
    mark.stdin.write(jsonl([{"sha256": sha(20000 + i), "host": "local", "key": f"m{i}.png",
                             "url": f"https://l/m{i}.png"} for i in range(1500)]).encode())
    mark.stdin.flush()
    while path.stat().st_size == size:
        time.sleep(0.01)
    time.sleep(0.05)
    mark.kill()  # some lines appended, where they are still in its memory (flushed every 1000)
    mark.wait()
    assert any(str(s.get("key", "")).startswith("m") for s in assert_covered(path))


def assert_covered(path: Path) -> list[dict[str, Any]]:
    """Every image of the ledger is found through the index as a full read has it."""
    everything = without_index(path).states()
    with Ledger(path) as ledger:
        assert list(ledger.iter_states()) == everything
        by_sha: dict[str, list[dict[str, Any]]] = {}
        for state in everything:
            if identity(state)[0] == "image" and identity(state)[1]:
                by_sha.setdefault(identity(state)[1], []).append(state)
        for digest, states in by_sha.items():
            assert ledger.states_for([digest]) == states
        assert ledger._index is not None
    return everything
