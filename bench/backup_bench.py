"""pp-backup against `rclone copy`: 500 small images backed up to a local WebDAV server (WsgiDAV),
same concurrency, side by side in one run; then the same images again, which pp-backup must
answer from its ledger without a single request.

Each round copies into a fresh folder (and pp-backup gets a fresh ledger), so that every file is
new for both tools. Prints the median wall time of each tool, the ratio (picpipe / rclone; the
target is 0.5 or less), the requests the server saw per new file (target: 1 for pp-backup, one
PUT; rclone MKCOLs the parent before each upload and reads the file back with a PROPFIND), and
the no-op re-run of each. rclone's WebDAV backend spaces its calls at least 10 ms apart (its
pacer; the flag to change that came after Debian's rclone 1.60), so ~100 requests/s is its ceiling
at any --transfers: three requests per file make most of the difference in wall time.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from upload_bench import make_images, timed  # noqa: E402

from davservers import PASSWORD, USER, Dav, wsgidav  # noqa: E402

BIN = Path(sys.executable).parent
IMAGES = int(os.environ.get("BENCH_BACKUP_IMAGES", "500"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
JOBS = 4


def run(dav: Dav, command: list[str], env: dict[str, str], stdin: str = "") -> tuple[float, int]:
    """Wall time and the number of requests the server saw meanwhile."""
    before = len(dav.requests)
    elapsed, _ = timed(command, env, stdin)
    return elapsed, len(dav.requests) - before


def stored(root: Path, folder: str) -> int:
    return sum(1 for _ in (root / folder).iterdir())


def median_row(name: str, results: list[tuple[float, int]]) -> float:
    """Prints the medians of the rounds; returns the median wall time."""
    seconds = statistics.median(t for t, _ in results)
    requests = statistics.median(n for _, n in results)
    print(f"{name:<14} {seconds:8.2f} s {requests:10.0f} {requests / IMAGES:14.2f}")
    return seconds


def rerun_row(name: str, result: tuple[float, int]) -> None:
    print(f"{name:<14} {result[0]:8.2f} s {result[1]:10d}")


def main() -> int:
    has_rclone = shutil.which("rclone") is not None
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = make_images(work / "images", IMAGES)
        listing = "".join(f"{f}\n" for f in files)
        size = sum(f.stat().st_size for f in files)
        print(f"\npp-backup bench: {IMAGES} images ({size // 1024} KB) to WsgiDAV on 127.0.0.1, "
              f"-j {JOBS} / --transfers {JOBS}, medians of {REPEAT} rounds\n")
        root = work / "dav"
        root.mkdir()
        with wsgidav(root) as dav:
            env = {**os.environ, "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config"),
                   "PICPIPE_DAVB_TYPE": "webdav", "PICPIPE_DAVB_URL": dav.url, "PICPIPE_DAVB_USER": USER,
                   "PICPIPE_DAVB_PASSWORD": PASSWORD}
            if has_rclone:
                env.update({"RCLONE_CONFIG_DAVB_TYPE": "webdav", "RCLONE_CONFIG_DAVB_URL": dav.url,
                            "RCLONE_CONFIG_DAVB_VENDOR": "other", "RCLONE_CONFIG_DAVB_USER": USER,
                            "RCLONE_CONFIG_DAVB_PASS": subprocess.run(["rclone", "obscure", PASSWORD],
                                                                      capture_output=True, text=True,
                                                                      check=True).stdout.strip()})

            def backup(folder: str, ledger: Path) -> list[str]:
                return [str(BIN / "pp-backup"), "--to", "davb", "-j", str(JOBS), "--ledger", str(ledger),
                        "--path", f"{folder}/{{name}}{{ext}}"]

            def rclone(folder: str) -> list[str]:
                return ["rclone", "copy", str(work / "images"), f"davb:{folder}", "--transfers", str(JOBS),
                        "--checkers", str(JOBS), "--config", os.devnull]

            ours: list[tuple[float, int]] = []
            theirs: list[tuple[float, int]] = []
            for r in range(REPEAT):
                ours.append(run(dav, backup(f"picpipe-{r}", work / f"ledger-{r}.jsonl"), env, listing))
                if has_rclone:
                    theirs.append(run(dav, rclone(f"rclone-{r}"), env))
            for r in range(REPEAT):
                copies = [stored(root, f"picpipe-{r}")] + ([stored(root, f"rclone-{r}")] if has_rclone else [])
                if copies != [IMAGES] * len(copies):
                    raise SystemExit(f"round {r}: {copies} files stored, {IMAGES} expected")

            # The same files again into the last round's folders; pp-backup with that round's ledger.
            last = REPEAT - 1
            again = run(dav, backup(f"picpipe-{last}", work / f"ledger-{last}.jsonl"), env, listing)
            rclone_again = run(dav, rclone(f"rclone-{last}"), env) if has_rclone else None

        print(f"{'new files':<14} {'wall time':>10} {'requests':>10} {'per new file':>14}")
        a = median_row("pp-backup", ours)
        if has_rclone:
            b = median_row("rclone copy", theirs)
            print(f"ratio picpipe/rclone {a / b:.2f} (target <= 0.50)")
        else:
            print("rclone copy    left out: rclone is not installed (apt-get install rclone)")
        print(f"\n{'no-op re-run':<14} {'wall time':>10} {'requests':>10}   (the same {IMAGES} files again)")
        rerun_row("pp-backup", again)
        if rclone_again is not None:
            rerun_row("rclone copy", rclone_again)
        if again[1] != 0:
            raise SystemExit(f"pp-backup re-run sent {again[1]} requests: the ledger should have answered")
    return 0


if __name__ == "__main__":
    sys.exit(main())
