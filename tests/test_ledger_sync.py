"""pp-backup ledger (issue 14): each machine sends only its new lines, as segment files written
once, and merges the others'; against a folder, WsgiDAV and the Nutstore-like server, with the
requests counted at the server. Then the automatic sync after a pp-mark run, and its failures."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from conftest import jsonl
from davservers import PASSWORD, Dav, nutstore_like, profile_env, wsgidav


@dataclass
class Place:
    """A target: the profile `nas` in the environment, the folder holding what it stores, its server."""

    env: dict[str, str]
    folder: Path
    dav: Dav | None = None

    def methods(self, since: int = 0) -> list[str]:
        assert self.dav is not None
        return sorted(method for method, _ in self.dav.requests[since:])

    def sent(self) -> int:
        return len(self.dav.requests) if self.dav is not None else 0


@pytest.fixture(params=["folder", "wsgidav", "nutstore"])
def place(request, tmp_path: Path) -> Iterator[Place]:
    root = tmp_path / "server"
    root.mkdir()
    if request.param == "folder":
        yield Place({"PICPIPE_NAS_TYPE": "local", "PICPIPE_NAS_DIR": str(root / "backup")}, root / "backup")
    elif request.param == "wsgidav":
        with wsgidav(root) as dav:
            yield Place(profile_env("nas", dav.url + "backup/"), root / "backup", dav)
    else:  # at 127.0.0.1, so Nutstore's 0.4 s between requests only where a test says vendor = "nutstore"
        with nutstore_like(root) as dav:
            yield Place(profile_env("nas", dav.url + "picpipe/"), root / "picpipe", dav)


@pytest.fixture
def dav_place(tmp_path: Path) -> Iterator[Place]:
    root = tmp_path / "server"
    root.mkdir()
    with wsgidav(root) as dav:
        yield Place({**profile_env("nas", dav.url + "backup/"), "PICPIPE_NAS_RETRIES": "0"}, root / "backup", dav)


def records(prefix: str, n: int, start: int = 0) -> list[dict]:
    return [{"url": f"https://cdn.example.com/{prefix}{i}.png", "host": "q", "key": f"{prefix}{i}.png",
             "sha256": hashlib.sha256(f"{prefix}{i}".encode()).hexdigest(), "marked_at": "2024-05-01T08:00:00.000Z"}
            for i in range(start, start + n)]


def lines(path: Path) -> set[str]:
    """A ledger's lines, independent of key order: what a union is made of."""
    return {json.dumps(json.loads(line), sort_keys=True) for line in path.read_text().splitlines() if line.strip()}


def segments(place: Place) -> dict[str, bytes]:
    """machine/NNNNNNNN.jsonl → bytes: what readers take from the target."""
    top = place.folder / "picpipe-ledger"
    found = sorted(top.glob("*/*.jsonl")) if top.exists() else []
    return {f"{p.parent.name}/{p.name}": p.read_bytes() for p in found if p.name[:8].isdigit()}


def others(place: Place) -> list[str]:
    """Files under picpipe-ledger/ that are no segment (temp files)."""
    top = place.folder / "picpipe-ledger"
    return sorted(str(p.relative_to(top)) for p in top.rglob("*") if p.is_file() and not p.name[:8].isdigit()) \
        if top.exists() else []


class Machine:
    """One ledger with its own sync state (as on its own machine), syncing with the place."""

    def __init__(self, run, tmp_path: Path, name: str, place: Place) -> None:
        self.run, self.place = run, place
        self.ledger = tmp_path / f"{name}.jsonl"
        self.state = tmp_path / f"{name}-state"

    def append(self, recs: list[dict]) -> bytes:
        data = jsonl(recs).encode()
        with open(self.ledger, "ab") as handle:
            handle.write(data)
        return data

    def sync(self, way: str = "--to", ok: bool = True, **extra: str):
        result = self.run("pp-backup", "ledger", way, "nas", "--ledger", str(self.ledger),
                          extra_env={**self.place.env, "XDG_STATE_HOME": str(self.state), **extra})
        if ok:
            assert result.returncode == 0, result.stderr
        return result


def test_two_machines_end_with_the_union_and_a_sync_with_nothing_new_writes_nothing(run, tmp_path, place):
    laptop, desktop = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "desktop", place)
    laptop.append(records("a", 30))
    desktop.append(records("b", 20))
    first = laptop.sync()
    assert "sent 30 lines" in first.stderr
    both = desktop.sync()
    assert "sent 20 lines" in both.stderr and "received 30 lines" in both.stderr and "30 added" in both.stderr
    back = laptop.sync()
    assert "nothing new to send" in back.stderr and "20 added to the ledger" in back.stderr
    assert lines(laptop.ledger) == lines(desktop.ledger) and len(lines(laptop.ledger)) == 50
    # each machine wrote one segment, and only its own lines
    assert sorted(len(data.splitlines()) for data in segments(place).values()) == [20, 30]
    before = place.sent()
    for machine in (laptop, desktop):
        again = machine.sync()
        assert "nothing new to send; nothing new to receive" in again.stderr
    if place.dav is not None:  # a listing of the machines and one of the other machine's folder: no write
        assert place.methods(before) == ["PROPFIND"] * 4
        assert "; 2 requests" in again.stderr
    assert not others(place)


def test_ten_new_lines_are_one_segment_of_exactly_those_bytes(run, tmp_path, dav_place):
    laptop, desktop = Machine(run, tmp_path, "laptop", dav_place), Machine(run, tmp_path, "desktop", dav_place)
    laptop.append(records("a", 100))
    desktop.append(records("b", 5))
    laptop.sync(), desktop.sync(), laptop.sync()
    old = segments(dav_place)
    new = laptop.append(records("a", 10, start=100))
    before = dav_place.sent()
    result = laptop.sync()
    # steady state with one other machine: 2 listings, and PUT + MOVE for the one new segment
    assert dav_place.methods(before) == ["MOVE", "PROPFIND", "PROPFIND", "PUT"]
    assert f"sent 10 lines ({len(new)} bytes) in 1 segment" in result.stderr and "; 4 requests" in result.stderr
    added = {name: data for name, data in segments(dav_place).items() if name not in old}
    assert list(added.values()) == [new] and list(added)[0].endswith("/00000002.jsonl")
    pulled = desktop.sync()
    assert "received 10 lines" in pulled.stderr and lines(desktop.ledger) == lines(laptop.ledger)


def test_a_line_the_ledger_reads_as_good_is_merged_not_skipped_as_bad(run, tmp_path):
    """A sync reads a line as the ledger does (`parse_line`): blanks around it are any Unicode
    white space (a no-break space an editor left, a form feed), a line of them is blank."""
    folder = tmp_path / "server" / "backup"
    place = Place({"PICPIPE_NAS_TYPE": "local", "PICPIPE_NAS_DIR": str(folder)}, folder)
    laptop, desktop = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "desktop", place)
    good = records("a", 3)
    with open(laptop.ledger, "wb") as handle:
        handle.write(json.dumps(good[0]).encode() + "\u00a0\n".encode()
                     + b"\f" + json.dumps(good[1]).encode() + b"\r\n"
                     + "\u00a0\u2003\n".encode() + b"not json\n[1]\n" + json.dumps(good[2]).encode() + b"\n")
    from picpipe.ledger import Ledger

    with Ledger(laptop.ledger) as ledger:
        assert [entry for _, entry in ledger.lines()] == good
    laptop.sync()
    result = desktop.sync("--from")
    assert "received 5 lines" in result.stderr and "3 added to the ledger" in result.stderr, result.stderr
    assert "2 bad lines skipped" in result.stderr
    assert lines(desktop.ledger) == {json.dumps(r, sort_keys=True) for r in good}


def test_lines_pulled_from_another_machine_are_never_sent_back(run, tmp_path, place):
    laptop, desktop = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "desktop", place)
    laptop.append(records("a", 3))
    laptop.sync()
    desktop.append(records("b", 2))
    desktop.sync()  # sends its 2, then receives the laptop's 3
    own = desktop.append(records("b", 1, start=2))  # a line of its own after the pulled ones
    result = desktop.sync()
    assert "sent 1 line " in result.stderr
    laptop.sync()
    assert "nothing new to send" in laptop.sync().stderr
    by_machine: dict[str, list[bytes]] = {}
    for name, data in segments(place).items():
        by_machine.setdefault(name.split("/")[0], []).append(data)
    assert sorted(len(v) for v in by_machine.values()) == [1, 2]
    desktop_segments = max(by_machine.values(), key=len)
    assert desktop_segments[1] == own
    assert all(b"cdn.example.com/a" not in data for data in desktop_segments)  # the laptop's lines stayed home
    assert lines(laptop.ledger) == lines(desktop.ledger) and len(lines(laptop.ledger)) == 6


def test_a_replaced_ledger_is_sent_whole_and_the_union_is_unchanged(run, tmp_path, place):
    laptop, desktop = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "desktop", place)
    laptop.append(records("a", 5))
    laptop.sync()
    laptop.append(records("a", 3, start=5))
    laptop.sync()
    desktop.append(records("b", 2))
    desktop.sync()
    union = set().union(*(lines_of(data) for data in segments(place).values()))
    # an older copy of the ledger put back (a restore from a backup): the same first lines, then it differs
    older = tmp_path / "older.jsonl"
    older.write_text(jsonl(records("a", 4)))
    os.replace(older, laptop.ledger)
    result = laptop.sync()
    assert "replaced or rewritten" in result.stderr and "sent 4 lines" in result.stderr
    newest = [data for name, data in segments(place).items() if name.endswith("/00000003.jsonl")]
    assert newest == [jsonl(records("a", 4)).encode()]  # the whole file again, as a new segment
    assert set().union(*(lines_of(data) for data in segments(place).values())) == union
    assert lines(laptop.ledger) == union  # its own older lines came back from the target too


def lines_of(data: bytes) -> set[str]:
    return {json.dumps(json.loads(line), sort_keys=True) for line in data.splitlines() if line.strip()}


def test_a_push_that_fails_leaves_no_segment_and_the_next_sync_sends_the_lines(run, tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    with nutstore_like(root) as dav:
        place = Place({**profile_env("nas", dav.url + "picpipe/"), "PICPIPE_NAS_RETRIES": "0"}, root / "picpipe", dav)
        laptop = Machine(run, tmp_path, "laptop", place)
        laptop.append(records("a", 3))
        laptop.sync()
        first = segments(place)
        new = laptop.append(records("a", 4, start=3))
        dav.fail_next(500)  # the PUT
        failed = laptop.sync(ok=False)
        assert failed.returncode == 1 and "HTTP 500" in failed.stderr and "Traceback" not in failed.stderr
        assert segments(place) == first
        # a push killed between its PUT and its rename: the rename (and the temp's removal) never happen
        dav.limit = dav.served + 2  # the DELETE of the failed PUT's temp name (404), and the PUT
        blocked = laptop.sync(ok=False)
        assert blocked.returncode == 1 and "BlockedTemporarily" in blocked.stderr
        assert segments(place) == first and len(others(place)) == 1  # a temp name: readers skip it
        dav.limit = None
        done = laptop.sync()
        assert "sent 4 lines" in done.stderr
    added = {name: data for name, data in segments(place).items() if name not in first}
    assert list(added.values()) == [new] and list(added)[0].endswith("/00000002.jsonl")
    assert others(place) == []  # the next sync removed the temp file


def test_the_single_ledger_file_of_earlier_versions_is_merged_once(run, tmp_path, dav_place):
    laptop, desktop = Machine(run, tmp_path, "laptop", dav_place), Machine(run, tmp_path, "desktop", dav_place)
    old = laptop.append(records("a", 3))
    dav_place.folder.mkdir()
    (dav_place.folder / "picpipe-ledger.jsonl").write_bytes(old)  # what `--to` of earlier versions uploaded
    new = laptop.append(records("a", 2, start=3))
    result = laptop.sync()
    assert "sent 2 lines" in result.stderr  # the old file was this ledger's beginning: not sent again
    [segment] = segments(dav_place).values()
    assert segment == new
    desktop.append(records("b", 1))
    got = desktop.sync()
    assert "received 5 lines" in got.stderr and "5 added" in got.stderr
    assert lines(desktop.ledger) == lines(laptop.ledger) | lines_of(jsonl(records("b", 1)).encode())
    before = dav_place.sent()
    desktop.sync()
    assert dav_place.methods(before) == ["PROPFIND", "PROPFIND"]  # the old file is not asked for again
    assert (dav_place.folder / "picpipe-ledger.jsonl").read_bytes() == old  # and never rewritten


def test_a_wrong_password_is_one_clear_error_and_never_printed(run, tmp_path, dav_place):
    laptop = Machine(run, tmp_path, "laptop", dav_place)
    laptop.append(records("a", 1))
    result = laptop.sync(ok=False, PICPIPE_NAS_PASSWORD="Wrong-pass-1234")
    assert result.returncode == 1
    assert "HTTP 401" in result.stderr and "hint:" in result.stderr and "app password" in result.stderr
    assert "Traceback" not in result.stderr and "Wrong-pass-1234" not in result.stderr
    assert PASSWORD not in result.stderr


def test_nutstore_requests_go_through_the_shared_budget(run, tmp_path, env):
    root = tmp_path / "server"
    root.mkdir()
    with nutstore_like(root) as dav:
        place = Place(profile_env("nas", dav.url + "picpipe/", vendor="nutstore", pace="1000"), root / "picpipe", dav)
        laptop = Machine(run, tmp_path, "laptop", place)
        laptop.append(records("a", 2))
        result = laptop.sync()
    [pace] = (Path(env["XDG_CACHE_HOME"]) / "picpipe" / "pace").glob("*.times")
    assert len(pace.read_text().split()) == len(dav.requests)
    assert f"; {len(dav.requests)} requests" in result.stderr


# -- the automatic sync --------------------------------------------------------------------------
def auto_env(tmp_path: Path, place: Place, every: float, **extra: str) -> dict[str, str]:
    config = tmp_path / "config.toml"
    config.write_text(f'[ledger]\npath = "{tmp_path / "ledger.jsonl"}"\nsync = "nas"\nsync_every = {every}\n')
    return {**place.env, "PICPIPE_CONFIG": str(config), "XDG_STATE_HOME": str(tmp_path / "state"), **extra}


def wait_for(check, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while not (found := check()):
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)
    return found


def idle(tmp_path: Path) -> None:
    """Wait until no automatic sync holds its lock (it has ended)."""
    def free(lock: Path) -> bool:
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            return False
        finally:
            os.close(fd)

    for lock in (tmp_path / "state" / "picpipe" / "ledger-sync").glob("*.auto"):
        wait_for(lambda lock=lock: free(lock))


def test_pp_mark_returns_at_once_and_the_ledger_syncs_in_the_background(run, tmp_path, dav_place):
    env = auto_env(tmp_path, dav_place, every=3)
    started = time.monotonic()
    marked = run("pp-mark", input=jsonl(records("a", 5)), extra_env=env)
    took = time.monotonic() - started
    assert marked.returncode == 0, marked.stderr
    assert len(marked.stdout.splitlines()) == 5 and marked.stderr == ""
    assert took < 2.0 and segments(dav_place) == {}  # the sync waits a moment for the rest of a pipeline
    [segment] = wait_for(lambda: list(segments(dav_place).values()))
    assert segment == (tmp_path / "ledger.jsonl").read_bytes()
    # more lines: debounced, sync_every (3 s) after the last one, and the one running takes them
    run("pp-mark", input=jsonl(records("a", 2, start=5)), extra_env=env)
    run("pp-mark", input=jsonl(records("a", 1, start=7)), extra_env=env)
    wait_for(lambda: len(segments(dav_place)) == 2, timeout=30)
    idle(tmp_path)
    assert b"".join(segments(dav_place).values()) == (tmp_path / "ledger.jsonl").read_bytes()
    assert [m for m in dav_place.methods() if m == "PUT"] == ["PUT"] * 3  # 1st PUT: 409, folder made
    [log] = (tmp_path / "state" / "picpipe" / "ledger-sync").glob("*.log")
    assert log.read_text().count("nas: sent") == 2  # two syncs; the pull of one never started another


def test_a_failed_automatic_sync_is_said_once_by_the_next_command(run, tmp_path, dav_place):
    env = auto_env(tmp_path, dav_place, every=0, PICPIPE_NAS_PASSWORD="Wrong-pass-1234")
    marked = run("pp-mark", input=jsonl(records("a", 2)), extra_env=env)
    assert marked.returncode == 0 and marked.stderr == ""
    state = tmp_path / "state" / "picpipe" / "ledger-sync"
    wait_for(lambda: list(state.glob("*.failed")))
    idle(tmp_path)
    found = run("pp-mark", "find", extra_env=env)
    assert found.returncode == 0 and len(found.stdout.splitlines()) == 2
    [warning] = found.stderr.splitlines()
    [log] = state.glob("*.log")
    assert warning.startswith("pp-mark find: warning: ledger sync to nas failed at 20")
    assert "HTTP 401" in warning and warning.endswith(f"; see {log}")
    assert "Wrong-pass-1234" not in log.read_text() + warning
    assert run("pp-mark", "find", extra_env=env).stderr == ""  # said once
    # fixed: the next run's sync sends everything, and clears the failure
    fixed = {**env, "PICPIPE_NAS_PASSWORD": PASSWORD}
    run("pp-mark", input=jsonl(records("a", 1, start=2)), extra_env=fixed)
    [segment] = wait_for(lambda: list(segments(dav_place).values()))
    assert segment == (tmp_path / "ledger.jsonl").read_bytes()
    idle(tmp_path)
    assert not list(state.glob("*.failed")) and run("pp-mark", "find", extra_env=fixed).stderr == ""


def test_no_automatic_sync_without_the_setting_or_without_new_lines(run, tmp_path, dav_place):
    plain = {**dav_place.env, "PICPIPE_LEDGER": str(tmp_path / "ledger.jsonl"), "XDG_STATE_HOME": str(tmp_path / "s")}
    run("pp-mark", input=jsonl(records("a", 2)), extra_env=plain)
    env = auto_env(tmp_path, dav_place, every=0)
    run("pp-mark", "find", extra_env=env)  # reads, adds nothing
    run("pp-mark", input=jsonl(records("a", 1, start=2)), extra_env={**env, "PICPIPE_LEDGER_SYNC": "off"})
    time.sleep(0.5)
    assert dav_place.dav is not None and dav_place.dav.requests == []
    assert not (tmp_path / "s").exists()


def test_an_automatic_sync_to_a_profile_that_is_no_backup_target_is_said_by_the_next_command(run, tmp_path,
                                                                                             dav_place):
    env = auto_env(tmp_path, dav_place, every=0, PICPIPE_NAS_TYPE="github")  # an image host, not a target
    marked = run("pp-mark", input=jsonl(records("a", 2)), extra_env=env)
    assert marked.returncode == 0 and "ledger" not in marked.stderr
    state = tmp_path / "state" / "picpipe" / "ledger-sync"
    wait_for(lambda: list(state.glob("*.failed")))
    idle(tmp_path)
    warnings = [line for line in run("pp-mark", "find", extra_env=env).stderr.splitlines() if "ledger sync" in line]
    assert len(warnings) == 1 and "is of type 'github': backups go to a folder or WebDAV" in warnings[0]
    assert dav_place.dav is not None and dav_place.dav.requests == []


def test_a_machine_cloned_with_its_sync_state_takes_a_new_name_and_both_get_the_union(run, tmp_path, place):
    """A home folder copied to a new machine (a restored backup, a cloned disk) brings the sync
    state along: both machines then write into one folder, which neither reads. The one that
    meets a segment number taken moves to a folder of its own."""
    import shutil

    from picpipe.ledgersync import state_files

    laptop, clone = Machine(run, tmp_path, "laptop", place), Machine(run, tmp_path, "clone", place)
    laptop.append(records("a", 2))
    laptop.sync()
    shutil.copy(laptop.ledger, clone.ledger)
    folder, laptop_state = state_files(laptop.ledger, {"XDG_STATE_HOME": str(laptop.state)})
    copied, clone_state = state_files(clone.ledger, {"XDG_STATE_HOME": str(clone.state)})
    copied.mkdir(parents=True)
    shutil.copy(folder / f"{laptop_state}.json", copied / f"{clone_state}.json")  # as at the same path there
    laptop.append(records("a", 1, start=2))
    clone.append(records("c", 1))
    laptop.sync()
    assert "received 1 line" in clone.sync().stderr
    laptop.sync()
    assert lines(laptop.ledger) == lines(clone.ledger) and len(lines(laptop.ledger)) == 4
    assert len({name.split("/")[0] for name in segments(place)}) == 2


# -- the Windows paths of the failure file and the log (forced here) --------------------------------
def test_a_failure_is_said_again_after_one_was_told_even_where_rename_never_replaces(tmp_path, monkeypatch):
    """On Windows os.rename refuses an existing name: the second failure must still be said."""
    from picpipe import console, ledgersync

    def windows_rename(src: object, dst: object) -> None:
        if os.path.lexists(dst):  # type: ignore[arg-type]
            raise FileExistsError(17, "Cannot create a file when that file already exists", dst)
        os.replace(src, dst)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "rename", windows_rename)
    said: list[str] = []
    monkeypatch.setattr(console, "warn", said.append)
    environ = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    folder, ident = ledgersync.state_files(tmp_path / "ledger.jsonl", environ)
    folder.mkdir(parents=True)
    for reason in ("first", "second"):
        (folder / f"{ident}.failed").write_text(json.dumps({"target": "nas", "at": "now", "reason": reason,
                                                            "log": "x.log"}) + "\n")
        ledgersync.tell_failure(tmp_path / "ledger.jsonl", environ)
    assert [s.split(": ")[-1].split(";")[0] for s in said] == ["first", "second"]
    assert not (folder / f"{ident}.failed").exists()


def test_a_log_that_cannot_be_rotated_now_does_not_stop_the_command(tmp_path, monkeypatch):
    """Windows: a sync started a moment ago has the log open, and renaming it is a sharing violation."""
    import subprocess

    from picpipe import ledgersync

    environ = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    folder, ident = ledgersync.state_files(tmp_path / "ledger.jsonl", environ)
    folder.mkdir(parents=True)
    (folder / f"{ident}.log").write_bytes(b"x" * (ledgersync.LOG_MAX + 1))

    def in_use(*args: object, **kwargs: object) -> None:
        raise PermissionError(13, "The process cannot access the file because it is being used by another process")

    started: list[list[str]] = []
    monkeypatch.setattr(os, "replace", in_use)
    monkeypatch.setattr(subprocess, "Popen", lambda argv, **kwargs: started.append(argv))
    assert ledgersync.start_auto_sync("nas", tmp_path / "ledger.jsonl", environ)
    assert len(started) == 1 and (folder / f"{ident}.log").stat().st_size == ledgersync.LOG_MAX + 1


def test_the_state_and_a_failure_are_fsynced_and_a_ctrl_c_leaves_no_temp_file(tmp_path, monkeypatch):
    """Both are written to a temp file (`files.replace_file`) and renamed: a Ctrl-C before the
    rename leaves the old file and nothing else in the state folder."""
    from picpipe import ledgersync

    environ = {"XDG_STATE_HOME": str(tmp_path / "state"), "HOME": str(tmp_path)}
    state = ledgersync.SyncState(tmp_path / "ledger.jsonl", environ)
    state.data["machine"] = "laptop-1234"
    synced: list[int] = []
    fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or fsync(fd))
    state.save()
    ledgersync._failed(state, "nas", "first")
    assert len(synced) == 2
    saved = {path.name: path.read_bytes() for path in state.folder.iterdir()}
    assert sorted(saved) == sorted([state.path.name, state.paths.failed.name])
    assert json.loads(saved[state.path.name])["machine"] == "laptop-1234"

    def interrupted(src: object, dst: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    state.data["machine"] = "other-5678"
    with pytest.raises(KeyboardInterrupt):
        state.save()
    with pytest.raises(KeyboardInterrupt):
        ledgersync._failed(state, "nas", "second")
    assert {path.name: path.read_bytes() for path in state.folder.iterdir()} == saved
