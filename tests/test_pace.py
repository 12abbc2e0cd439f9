"""picpipe.pace.Pacer on a tiny window (3 requests per 0.5 s instead of 540 per 30 minutes): the
budget holds within one process and across processes sharing the state file, the gap is kept,
and a damaged state file costs nothing but its memory."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from conftest import ROOT
from picpipe.pace import Pacer

BUDGET, WINDOW = 3, 0.5
#: Seconds of slack for the time between a pacer's decision and our reading of the clock.
SLACK = 0.05


def paced(pacer: Pacer, calls: int) -> list[float]:
    """The times at which `calls` requests were let through."""
    times = []
    for _ in range(calls):
        pacer.wait()
        times.append(time.time())
    return times


def assert_within_budget(times: list[float]) -> None:
    """No window of WINDOW seconds holds more than BUDGET requests."""
    times = sorted(times)
    for first, after in zip(times, times[BUDGET:]):
        assert after - first >= WINDOW - SLACK, times


def test_the_request_over_budget_waits_until_the_window_frees(tmp_path: Path) -> None:
    pacer = Pacer(tmp_path / "pace" / "account.times", BUDGET, window=WINDOW)
    start = time.time()
    times = paced(pacer, BUDGET + 1)
    assert times[BUDGET - 1] - start < 0.1  # the budget itself goes at once
    assert WINDOW - SLACK <= times[BUDGET] - start < WINDOW + 0.2
    assert_within_budget(times)


def test_processes_sharing_the_state_file_share_the_budget(tmp_path: Path) -> None:
    state, calls = tmp_path / "shared.times", 4
    script = (f"import json, pathlib, time\nfrom picpipe.pace import Pacer\n"
              f"p, t = Pacer(pathlib.Path({str(state)!r}), {BUDGET}, window={WINDOW}), []\n"
              f"for _ in range({calls}):\n    p.wait()\n    t.append(time.time())\nprint(json.dumps(t))")
    runs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT)
            for _ in range(2)]
    outputs = [run.communicate(timeout=30)[0] for run in runs]
    assert [run.returncode for run in runs] == [0, 0]
    times = [t for output in outputs for t in json.loads(output)]
    assert len(times) == 2 * calls
    assert_within_budget(times)  # 8 requests: 3, then 3 more after one window, then 2 after two
    assert max(times) - min(times) >= 2 * WINDOW - SLACK


def test_requests_keep_the_gap(tmp_path: Path) -> None:
    pacer = Pacer(tmp_path / "gap.times", 100, gap=0.15, window=WINDOW)
    times = paced(pacer, 4)
    gaps = [b - a for a, b in zip(times, times[1:])]
    assert all(0.15 - SLACK <= gap < 0.15 + 0.1 for gap in gaps), gaps


def test_a_damaged_state_file_is_tolerated_and_rewritten(tmp_path: Path) -> None:
    state = tmp_path / "damaged.times"
    state.write_bytes(b"\x00\xffnot a time\n1e999\nnan\n12.5.6\n-\n" + f"{time.time() + 3600:.3f}\n".encode())
    pacer = Pacer(state, BUDGET, window=WINDOW)
    start = time.time()
    paced(pacer, BUDGET)  # nothing in the file counts: no wait
    assert time.time() - start < 0.1
    kept = [float(line) for line in state.read_text().splitlines()]
    assert len(kept) == BUDGET and all(start - 1 <= t <= time.time() + 0.001 for t in kept)  # kept to the ms


def test_the_state_file_is_per_account_and_names_no_user(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    one = Pacer.for_account("dav.jianguoyun.com", "me@example.com", 540, 0.4, "backup").state
    other = Pacer.for_account("dav.jianguoyun.com", "you@example.com", 540, 0.4, "backup").state
    assert one.parent == tmp_path / "picpipe" / "pace" and one != other
    assert "example" not in str(one)


def test_an_unusable_state_file_costs_the_memory_not_the_request(tmp_path: Path, capsys) -> None:
    state = tmp_path / "pace"
    state.mkdir()  # a folder where the file should be
    pacer = Pacer(state, budget=2, window=0.5, who="nut")
    started = time.monotonic()
    for _ in range(3):
        pacer.wait()
    assert time.monotonic() - started >= 0.4  # still paced, within this process
    assert "cannot keep the request count" in capsys.readouterr().err
