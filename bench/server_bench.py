"""pp-server under concurrent clients, as the ledger grows: what Typora, Obsidian and PicList
clients see when they upload at the same time.

For each ledger size in BENCH_SERVER_SIZES (lines; default 1000,1000000: the synthetic ledgers of
ledger_bench.py, made of the lines real runs write), a pp-server runs the configured pipeline
(local host + local backup, as pp-typora does) over that ledger, its index built beforehand.
BENCH_CLIENTS clients (default 100) each POST one new PNG to /upload while as many POST
/heartbeat, all released at once. Reports, medians of BENCH_REPEAT rounds (default 3; fresh images
each round): the wall time of the round, the median and slowest upload, the slowest heartbeat,
and each against the smallest ledger. Every upload must succeed and be in the ledger once.
"""

from __future__ import annotations

import hashlib
import http.client
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from ledger_bench import BIN, Bench, label
from PIL import Image

SIZES = [int(s) for s in os.environ.get("BENCH_SERVER_SIZES", "1000,1000000").split(",") if s.strip()]
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "100"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))


def png(seed: int) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buffer, "PNG")
    return buffer.getvalue()


def post(port: int, path: str, body: bytes, content_type: str) -> tuple[float, int, dict]:
    """One request on its own connection: (seconds, status, JSON answer)."""
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": content_type})
        answer = conn.getresponse()
        return time.perf_counter() - start, answer.status, json.loads(answer.read())
    finally:
        conn.close()


def upload(port: int, name: str, data: bytes) -> tuple[float, int, dict]:
    boundary = "picpipe-bench"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; filename=\"{name}\"\r\n"
            "Content-Type: image/png\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return post(port, "/upload", body, f"multipart/form-data; boundary={boundary}")


def at_once(calls: list[Callable[[], tuple[float, int, dict]]]) -> list[tuple[float, int, dict]]:
    """Every call on its own thread, released together."""
    results: list[tuple[float, int, dict]] = [(0.0, 0, {})] * len(calls)
    gate = threading.Barrier(len(calls))

    def one(index: int) -> None:
        gate.wait()
        results[index] = calls[index]()

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(calls))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def serve(bench: Bench, ledger: Path) -> tuple[subprocess.Popen[bytes], int]:
    config = bench.work / "server.toml"
    config.write_text(f'ledger = "{ledger}"\n\n[pipeline]\nhost = "local"\nbackup = "nas"\n\n'
                      f'[profiles.nas]\ntype = "local"\ndir = "{bench.nas}"\n')
    port = free_port()
    server = subprocess.Popen([str(BIN / "pp-server"), "--port", str(port)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, env={**bench.env, "PICPIPE_CONFIG": str(config)})
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            if post(port, "/heartbeat", b"", "application/json")[1] == 200:
                return server, port
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise SystemExit("server bench: pp-server did not answer /heartbeat")


def run_size(bench: Bench, lines: int) -> dict[str, float]:
    ledger = bench.work / f"server-{lines}.jsonl"
    bench.write_ledger(ledger, lines)
    subprocess.run([str(BIN / "pp-mark"), "-q", "--ledger", str(ledger), "index"], env=bench.env, check=True)
    before = ledger.stat().st_size
    server, port = serve(bench, ledger)
    rounds: list[dict[str, float]] = []
    sent: set[str] = set()
    try:
        for round_ in range(REPEAT):
            print(f"  {label(lines)}: round {round_ + 1} of {REPEAT}, {CLIENTS} uploads + {CLIENTS} heartbeats",
                  file=sys.stderr)
            images = [png(lines + 10_000 * round_ + i) for i in range(CLIENTS)]
            sent |= {hashlib.sha256(image).hexdigest() for image in images}
            calls: list[Callable[[], tuple[float, int, dict]]] = [
                partial(upload, port, f"image-{round_}-{i}.png", image) for i, image in enumerate(images)]
            calls += [partial(post, port, "/heartbeat", b"", "application/json")] * CLIENTS
            start = time.perf_counter()
            results = at_once(calls)
            wall = time.perf_counter() - start
            uploads, beats = results[:CLIENTS], results[CLIENTS:]
            failed = [r for r in uploads if r[1] != 200 or not r[2].get("success")]
            if failed:
                raise SystemExit(f"server bench: {len(failed)} uploads failed, e.g. {failed[0]}")
            times = sorted(r[0] for r in uploads)
            rounds.append({"wall": wall, "median upload": statistics.median(times), "slowest upload": times[-1],
                           "slowest heartbeat": max(r[0] for r in beats)})
    finally:
        server.send_signal(signal.SIGINT)
        server.wait(30)
    with ledger.open("rb") as appended:
        appended.seek(before)
        marked = {json.loads(line).get("sha256") for line in appended if line.strip()}
    if not sent <= marked:
        raise SystemExit(f"server bench: {len(sent - marked)} of {len(sent)} uploads are not in the ledger")
    return {key: statistics.median(r[key] for r in rounds) for key in rounds[0]}


def main() -> int:
    with tempfile.TemporaryDirectory() as tmp:
        bench = Bench(Path(tmp))
        results = {lines: run_size(bench, lines) for lines in sorted(set(SIZES))}
    base = results[min(results)]
    print(f"\nserver bench: pp-server, {CLIENTS} uploads (local host + local backup, through the ledger) and "
          f"{CLIENTS} heartbeats at once; medians of {REPEAT} rounds, s (x the {label(min(results))} ledger)\n")
    print(f"{'':<20}" + "".join(f"{label(n):>20}" for n in results))
    for key in base:
        print(f"{key:<20}" + "".join(f"{r[key]:>9.3f} s ({r[key] / base[key]:4.2f}x)" for r in results.values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
