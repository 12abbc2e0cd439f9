"""`make bench`: picpipe side by side with the tools people would otherwise script, in one run.

Each case runs both commands REPEAT times on the same generated input and prints the medians
and the ratio (picpipe / peer; below 1 means picpipe is faster). Peers that are not installed
are reported as missing, not skipped silently.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
REPEAT = int(os.environ.get("BENCH_REPEAT", "5"))
RECORDS = int(os.environ.get("BENCH_RECORDS", "100000"))


def tool(name: str) -> str:
    installed = BIN / name
    return str(installed if installed.exists() else ROOT / "bin" / name)


def median_seconds(shell: str, repeat: int = REPEAT) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        subprocess.run(["bash", "-o", "pipefail", "-c", shell], check=True, stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def make_records(path: Path) -> None:
    with path.open("w") as out:
        for i in range(RECORDS):
            record = {"path": f"/home/me/blog/img/shot {i}.png", "source": f"/home/me/blog/img/shot {i}.png",
                      "sha256": f"{i:064x}", "size": 1000 + i, "width": 800, "height": 600, "format": "png",
                      "mime": "image/png", "host": "github" if i % 2 else "qiniu", "key": f"{i:016x}.png",
                      "url": f"https://img.example.com/{i:016x}.png", "uploaded_at": "2024-05-01T00:00:00.000Z"}
            out.write(json.dumps(record) + "\n")


def main() -> int:
    jq = shutil.which("jq")
    rows: list[tuple[str, float, str, float | None]] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "records.jsonl"
        make_records(data)
        ledger = Path(tmp) / "ledger.jsonl"
        shutil.copy(data, ledger)
        link, mark = tool("pp-link"), tool("pp-mark")

        def case(name: str, ours: str, peer_name: str, peer: str | None) -> None:
            print(f"  {name} ...", file=sys.stderr, flush=True)
            ours_s = median_seconds(ours)
            peer_s = median_seconds(peer) if peer else None
            rows.append((name, ours_s, peer_name if peer else f"{peer_name} (not installed)", peer_s))

        case("start-up: --version, 20 runs", f"for i in $(seq 20); do {link} --version; done",
             "jq --version", f"for i in $(seq 20); do {jq} --version; done" if jq else None)
        markdown = '"![" + (.source|split("/")[-1]|rtrimstr(".png")) + "](" + .url + ")"'
        case(f"pp-link --md, {RECORDS} records", f"{link} --md < {data}",
             "jq -r (same Markdown)", f"{jq} -r '{markdown}' < {data}" if jq else None)
        case(f"pp-mark tee into a ledger, {RECORDS} records",
             f"rm -f {tmp}/l1; {mark} --ledger {tmp}/l1 < {data}",
             "tee -a (append only)", f"rm -f {tmp}/l2; tee -a {tmp}/l2 < {data}")
        case(f"pp-mark find --host github, {RECORDS}-line ledger", f"{mark} --ledger {ledger} find --host github",
             "jq -c select(.host==\"github\")", f"{jq} -c 'select(.host==\"github\")' < {ledger}" if jq else None)
        # One new image into a ledger of 1k and of 1M lines: the call Typora and pp-server make per
        # upload. pp-mark first brings its index up to date (timed once, the first look), then a
        # call costs the same at any size; `tee -a` (append, no check) is the floor.
        os.environ["XDG_CACHE_HOME"] = f"{tmp}/cache"
        one = Path(tmp) / "one.jsonl"
        one.write_text(json.dumps({"sha256": "f" * 64, "host": "github", "url": "https://img.example.com/new.png"})
                       + "\n")
        for lines in (1_000, 1_000_000):
            big = Path(tmp) / f"ledger-{lines}.jsonl"
            with data.open("rb") as source, big.open("wb") as out:
                head = [source.readline() for _ in range(min(lines, RECORDS))]
                for _ in range(lines // len(head)):
                    out.writelines(head)
            start = time.perf_counter()
            subprocess.run([mark, "--ledger", str(big), "-q"], stdin=subprocess.DEVNULL, check=True,
                           stdout=subprocess.DEVNULL)
            rows.append((f"pp-mark: first look at a {lines}-line ledger", time.perf_counter() - start, "-", None))
            case(f"pp-mark one image, {lines}-line ledger", f"{mark} --ledger {big} < {one}",
                 "tee -a (append only)", f"tee -a {tmp}/l3 < {one}")

    print(f"\npicpipe bench: medians of {REPEAT} runs, ratio = picpipe / peer (lower is better)\n")
    print(f"{'case':<48} {'picpipe':>9} {'peer':<34} {'peer s':>8} {'ratio':>6}")
    for name, ours_s, peer_name, peer_s in rows:
        peer_text = f"{peer_s:8.3f}" if peer_s is not None else f"{'-':>8}"
        ratio = f"{ours_s / peer_s:6.2f}" if peer_s else f"{'-':>6}"
        print(f"{name:<48} {ours_s:8.3f}s {peer_name:<34} {peer_text} {ratio}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
