"""The ledger at a million lines (issue 14): what one image costs as the ledger grows.

Editors call picpipe once per pasted image, so every single-image command must cost the same
with an empty ledger and with a million lines. This measures, on synthetic ledgers made of the
lines real runs write (one `pp-upload | pp-mark` line and one `pp-backup` line per image, copied
from a real run at start-up, about 630 bytes a line), for each size in BENCH_LEDGER_SIZES
(lines; default 0,1000,100000,1000000), the median wall time and peak resident memory (the
largest process, from ru_maxrss of the waited-for children) of BENCH_REPEAT runs (default 3) of:
pp-upload --host local of 1 new PNG, the same image again (a dedupe hit), pp-backup of 1 image
to a folder, pp-typora of 1 image with a [pipeline] (local host + local backup), pp-mark find
--sha256 PREFIX, pp-mark merge of a 1k-line ledger, pp-mark find --url URL, pp-mark find --source
GLOB (which reads every image's state, one at a time), python3 -c pass (start-up alone, for the
stretch target of `xargs -n1 pp-upload`); and the index: `pp-mark < /dev/null` (which
brings it up to date) when warm, from nothing (a fresh XDG_CACHE_HOME) and 1k lines behind.

Before every run the ledger (same path, same inode, same mtime), the index cache (a snapshot
taken once it was warm), the host and the backup folder are put back as they were, untimed, so
that each run appends to its own copy and sees a warm index; the "empty" ledger holds only the
2 lines of the image the dedupe hit finds. Prints a table like the issue's and its verdicts.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

BIN = Path(sys.executable).parent
SIZES = [int(s) for s in os.environ.get("BENCH_LEDGER_SIZES", "0,1000,100000,1000000").split(",") if s.strip()]
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
OTHER = 1000  # lines merged in, and lines the index is behind
#: Without /usr/bin/time: runs a command, writes the peak resident KB of its largest process.
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[2:]); "
        "open(sys.argv[1], 'w').write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)); "
        "sys.exit(r.returncode)")
SINGLE = ("upload", "dedupe", "backup", "typora", "find", "merge")  # the musts' single-image calls


@dataclass
class Case:
    key: str
    name: str
    argv: list[str]
    warm: bool = True  # start from the warm index (else from an empty cache)
    behind: bool = False  # OTHER lines appended since the index last looked
    expect: str = ""  # stdout must contain this (the call did what we think it did)


def sh(*argv: str | Path) -> None:
    subprocess.run([str(a) for a in argv], check=True)


def png(path: Path, seed: int) -> Path:
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(path)
    return path


def label(lines: int) -> str:
    if lines == 0:
        return "empty"
    for unit, div in (("M", 1_000_000), ("k", 1000)):
        if lines % div == 0:
            return f"{lines // div}{unit}"
    return str(lines)


class Bench:
    def __init__(self, work: Path) -> None:
        self.work = work
        for folder in ("config/picpipe", "data", "images"):
            (work / folder).mkdir(parents=True)
        self.host, self.nas, self.live = work / "host", work / "nas", work / "ledger.jsonl"
        (work / "config/picpipe/config.toml").write_text(
            f'[profiles.nas]\ntype = "local"\ndir = "{self.nas}"\n\n[pipeline]\nhost = "local"\nbackup = "nas"\n')
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("PICPIPE_")}
        self.env.update(XDG_CONFIG_HOME=str(work / "config"), XDG_DATA_HOME=str(work / "data"),
                        XDG_CACHE_HOME=str(work / "shape-cache"), PICPIPE_LOCAL_DIR=str(self.host),
                        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
        self.seen = png(work / "images/seen.png", 1)  # in every ledger: the dedupe hit
        self.new = png(work / "images/new.png", 2)  # in none: uploaded, backed up
        # The exact lines a real run writes: pp-upload | pp-mark | pp-backup, one image.
        shape = work / "shape.jsonl"
        subprocess.run(["bash", "-o", "pipefail", "-c",
                        f"pp-upload -q --host local '{self.seen}' | pp-mark -q --ledger '{shape}' | "
                        f"pp-backup -q --to nas --ledger '{shape}' > /dev/null"], env=self.env, check=True)
        self.lines = shape.read_bytes().splitlines(keepends=True)
        assert len(self.lines) == 2 and b'"backups"' in self.lines[1], self.lines
        self.sha = json.loads(self.lines[0])["sha256"]
        self.url = json.loads(self.lines[0])["url"]
        self.path = json.loads(self.lines[0])["path"].encode()
        self.merge, self.tail = work / "other.jsonl", work / "tail.jsonl"
        self.write_ledger(self.merge, OTHER, first=10**9, known=False)
        self.write_ledger(self.tail, OTHER, first=2 * 10**9, known=False)

    def synthetic(self, image: int) -> list[bytes]:
        """The two lines of another image: new hash, file name, key and URL; same shape."""
        sha = hashlib.sha256(b"%d" % image).hexdigest().encode()
        old = self.sha.encode()
        name = (b"/home/someone/Documents/Blog/content/posts/2024-05-01-the-ledger-at-a-million-lines-in-constant-time"
                b"/images/Screenshot 2024-05-01 at 10.23.45 (%d).png" % image)
        return [line.replace(old, sha).replace(old[:12], sha[:12]).replace(self.path, name) for line in self.lines]

    def write_ledger(self, path: Path, lines: int, first: int = 0, known: bool = True) -> None:
        """`lines` synthetic lines (2 per image), with the known image's 2 lines in the middle."""
        with path.open("wb") as out:
            images = lines // 2
            for start in range(0, images, 10_000):
                if known and start <= images // 2 < start + 10_000:
                    out.writelines(self.lines)
                out.writelines(line for i in range(start, min(images, start + 10_000))
                               for line in self.synthetic(first + i))
            if known and images == 0:
                out.writelines(self.lines)

    def restore(self, base: Path, cache: Path, snapshot: Path | None, behind: bool) -> None:
        """Put the ledger (in place: same inode), the index cache and the targets back (untimed)."""
        sh("cp", "--reflink=auto", "--preserve=timestamps", base, self.live)
        if behind:
            with self.live.open("ab") as out:
                out.write(self.tail.read_bytes())
        for folder in (cache, self.host, self.nas):
            shutil.rmtree(folder, ignore_errors=True)
        if snapshot is None:
            cache.mkdir()
        else:
            sh("cp", "-a", "--reflink=auto", snapshot, cache)

    def measure(self, case: Case, cache: Path) -> tuple[float, float]:
        """(wall seconds, peak MB of the largest process) of one run that must succeed. The peak
        comes from a small wrapper (a child's ru_maxrss counts what it held before exec)."""
        env = {**self.env, "XDG_CACHE_HOME": str(cache)}
        with tempfile.NamedTemporaryFile() as peak, tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            wrapper = ["/usr/bin/time", "-f", "%M", "-o", peak.name] if Path("/usr/bin/time").exists() \
                else [sys.executable, "-c", PEAK, peak.name]
            start = time.perf_counter()
            done = subprocess.run([*wrapper, *case.argv], stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env)
            elapsed = time.perf_counter() - start
            out.seek(0)
            err.seek(0)
            stdout = out.read().decode()
            if done.returncode != 0 or case.expect not in stdout:
                raise SystemExit(f"{case.name}: exit status {done.returncode}, stdout {stdout[:500]!r}\n"
                                 f"{err.read().decode()[-2000:]}")
            return elapsed, int(Path(peak.name).read_text().split()[-1]) / 1024

    def cases(self) -> list[Case]:
        live, new, seen = str(self.live), str(self.new), str(self.seen)
        mark = [str(BIN / "pp-mark"), "-q", "--ledger", live]
        look = mark  # stdin is /dev/null: pp-mark only brings the index up to date
        return [
            Case("upload", "pp-upload --host local, 1 new PNG",
                 [str(BIN / "pp-upload"), "-q", "--host", "local", "--ledger", live, new], expect='"url"'),
            Case("dedupe", "the same image again (dedupe hit)",
                 [str(BIN / "pp-upload"), "-q", "--host", "local", "--ledger", live, seen], expect='"deduped":true'),
            Case("backup", "pp-backup --to a folder, 1 image",
                 [str(BIN / "pp-backup"), "-q", "--to", "nas", "--ledger", live, new], expect='"backups"'),
            Case("typora", "pp-typora, 1 image (upload+mark+backup)",
                 [str(BIN / "pp-typora"), "-q", "--ledger", live, new], expect="file://"),
            Case("find", "pp-mark find --sha256 PREFIX", [*mark, "find", "--sha256", self.sha[:12]], expect=self.sha),
            Case("merge", f"pp-mark merge of a {label(OTHER)}-line ledger", [*mark, "merge", str(self.merge)]),
            Case("url", "pp-mark find --url URL", [*mark, "find", "--url", self.url], expect=self.sha),
            Case("scan", "pp-mark find --source GLOB (every state)", [*mark, "find", "--source", "nothing-*.png"]),
            Case("python", "python3 -c pass (start-up alone)", [sys.executable, "-c", "pass"]),
            Case("warm", "index: warm, nothing to read", look),
            Case("build", "index: first build (fresh cache)", look, warm=False),
            Case("catchup", f"index: catch up on {label(OTHER)} appended lines", look, behind=True),
        ]

    def run_size(self, lines: int) -> tuple[dict[str, tuple[float, float]], int]:
        """Medians per case for a ledger of `lines` lines, and the ledger's size in bytes."""
        base, cache, snapshot = self.work / "base.jsonl", self.work / f"cache-{lines}", self.work / "warm-cache"
        self.write_ledger(base, lines)
        self.restore(base, cache, None, False)
        self.measure(next(c for c in self.cases() if c.key == "warm"), cache)  # build the index: the warm snapshot
        shutil.rmtree(snapshot, ignore_errors=True)
        sh("cp", "-a", "--reflink=auto", cache, snapshot)
        runs: dict[str, list[tuple[float, float]]] = {}
        for _ in range(REPEAT):
            for case in self.cases():
                print(f"  {label(lines)}: {case.name} ...", file=sys.stderr, flush=True)
                self.restore(base, cache, snapshot if case.warm else None, case.behind)
                runs.setdefault(case.key, []).append(self.measure(case, cache))
        size = base.stat().st_size
        for path in (base, self.live):
            path.unlink()
        shutil.rmtree(cache)
        medians = {k: (statistics.median(t for t, _ in v), statistics.median(m for _, m in v)) for k, v in runs.items()}
        return medians, size


def verdicts(results: dict[int, dict[str, tuple[float, float]]]) -> list[tuple[str, str, bool]]:
    """(level, what, passed) at the largest size, against the smallest (the empty ledger)."""
    big, small = max(results), min(results)
    at, base = results[big], results[small]
    out = [("must", f"{key}: {at[key][0]:.2f} s <= 1.3 x {base[key][0]:.2f} s ({label(small)}), "
                    f"{at[key][1]:.0f} MB <= 100 MB", at[key][0] <= 1.3 * base[key][0] and at[key][1] <= 100)
           for key in SINGLE]
    build = at["build"][0] - at["warm"][0]
    per_million = build * 1_000_000 / big if big else 0.0
    out.append(("must", f"first build: {build:.2f} s beyond a warm look = {per_million:.1f} s per 1M lines <= 10 s",
                per_million <= 10))
    catchup = at["catchup"][0] - at["warm"][0]
    out.append(("must", f"catch-up of {label(OTHER)} lines: {catchup:.3f} s beyond a warm look <= 0.1 s",
                catchup <= 0.1))
    for key, goal in (("dedupe", 0.1), ("find", 0.1), ("merge", 1.0)):
        out.append(("target", f"{key}: {at[key][0]:.3f} s <= {goal} s", at[key][0] <= goal))
    start = base["python"][0]
    out.append(("stretch", f"upload of 1 new PNG ({label(small)}): {base['upload'][0]:.3f} s <= 2 x python3 -c pass "
                           f"({start:.3f} s) + the upload's own time", base["upload"][0] <= 2 * start))
    return out


def main() -> int:
    results: dict[int, dict[str, tuple[float, float]]] = {}
    sizes: dict[int, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        names = {case.key: case.name for case in bench.cases()}
        for lines in sorted(set(SIZES)):
            results[lines], sizes[lines] = bench.run_size(lines)
    print(f"\nledger bench: medians of {REPEAT} runs, wall s / peak MB of the largest process; "
          f"ledger sizes: {', '.join(f'{label(n)} = {sizes[n] / 1e6:.1f} MB' for n in sizes)}\n")
    print(f"{'per call':<42}" + "".join(f"{label(n):>17}" for n in results))
    for key, name in names.items():
        print(f"{name:<42}" + "".join(f"{r[key][0]:>8.3f} s /{r[key][1]:>4.0f} MB" for r in results.values()))
    if len(results) > 1:
        print(f"\nverdicts at {label(max(results))} lines (against {label(min(results))}):")
        for level, what, passed in verdicts(results):
            print(f"  {'PASS' if passed else 'FAIL'} {level:<6} {what}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
