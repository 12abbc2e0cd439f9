"""pp-upload against `rclone copy`: 300 small images to a local S3 (moto) and WebDAV (WsgiDAV)
server, same concurrency, side by side in one run; then the same images again through the
ledger, which must touch no server.

Each round uploads into a fresh prefix so that every object is new for both tools. Prints the
median wall time of each tool, the ratio (picpipe / rclone; below 1 means picpipe is faster)
and the requests each server saw per image.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
from davservers import PASSWORD, USER, wsgidav  # noqa: E402

BIN = Path(sys.executable).parent
IMAGES = int(os.environ.get("BENCH_IMAGES", "300"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
JOBS = 4


def make_images(folder: Path, count: int = IMAGES) -> list[Path]:
    """Small, distinct PNGs (a blog's screenshots after pp-compress: 5-20 KB)."""
    rng = np.random.default_rng(7)
    folder.mkdir()
    files = []
    for i in range(count):
        pixels = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
        path = folder / f"shot-{i:03d}.png"
        Image.fromarray(pixels).save(path)
        files.append(path)
    return files


def timed(command: list[str], env: dict[str, str], stdin: str = "") -> tuple[float, str]:
    start = time.perf_counter()
    done = subprocess.run(command, input=stdin, capture_output=True, text=True, env=env)
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{command[0]} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return elapsed, done.stdout


class Requests(logging.Handler):
    """Counts the requests moto's werkzeug server logs (one record per request), printing none."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += 1


def moto_server() -> tuple[object, str, Requests]:
    from moto.server import ThreadedMotoServer

    counter = Requests()
    logging.getLogger("werkzeug").addHandler(counter)
    logging.getLogger("werkzeug").setLevel(logging.INFO)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"  # type: ignore[attr-defined]
    import boto3

    boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="bench",
                 aws_secret_access_key="bench-secret").create_bucket(Bucket="bench")
    return server, endpoint, counter


def compare(name: str, files: list[Path], ours: Callable[[int], list[str]], theirs: Callable[[int], list[str]],
            env: dict[str, str], count: Callable[[], int] | None) -> float:
    listing = "".join(f"{f}\n" for f in files)
    ours_times, theirs_times, ours_requests, theirs_requests = [], [], [], []
    for round_ in range(REPEAT):
        before = count() if count else 0
        ours_times.append(timed(ours(round_), env, listing)[0])
        middle = count() if count else 0
        theirs_times.append(timed(theirs(round_), env)[0])
        ours_requests.append(middle - before)
        theirs_requests.append((count() if count else 0) - middle)
    a, b = statistics.median(ours_times), statistics.median(theirs_times)
    per = (f"   requests per image: picpipe {statistics.median(ours_requests) / len(files):.2f}, "
           f"rclone {statistics.median(theirs_requests) / len(files):.2f}") if count else ""
    print(f"{name:<8} picpipe {a:6.2f} s   rclone copy {b:6.2f} s   ratio {a / b:.2f}{per}")
    return a / b


def main() -> int:
    if shutil.which("rclone") is None:
        print("upload bench: rclone is not installed (apt-get install rclone): nothing to compare with")
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = make_images(work / "images")
        size = sum(f.stat().st_size for f in files)
        print(f"\npp-upload bench: {IMAGES} images ({size // 1024} KB), -j {JOBS} / --transfers {JOBS}, "
              f"medians of {REPEAT} rounds\n")
        moto, endpoint, moto_requests = moto_server()
        dav_root = work / "dav"
        dav_root.mkdir()
        with wsgidav(dav_root) as dav:
            inherited = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # rclone's S3 SDK fails on it
            env = {**inherited, "XDG_DATA_HOME": str(work / "data"), "XDG_CONFIG_HOME": str(work / "config"),
                   "PICPIPE_S3B_TYPE": "s3", "PICPIPE_S3B_ENDPOINT": endpoint, "PICPIPE_S3B_BUCKET": "bench",
                   "PICPIPE_S3B_ACCESS_KEY": "bench", "PICPIPE_S3B_SECRET_KEY": "bench-secret",
                   "PICPIPE_S3B_CONDITIONAL_WRITES": "true",  # moto refuses If-None-Match: * with 412
                   "PICPIPE_DAVB_TYPE": "webdav", "PICPIPE_DAVB_URL": dav.url, "PICPIPE_DAVB_USER": USER,
                   "PICPIPE_DAVB_PASSWORD": PASSWORD,
                   "RCLONE_CONFIG_S3B_TYPE": "s3", "RCLONE_CONFIG_S3B_PROVIDER": "Other",
                   "RCLONE_CONFIG_S3B_ENDPOINT": endpoint, "RCLONE_CONFIG_S3B_ACCESS_KEY_ID": "bench",
                   "RCLONE_CONFIG_S3B_SECRET_ACCESS_KEY": "bench-secret", "RCLONE_CONFIG_S3B_FORCE_PATH_STYLE": "true",
                   "RCLONE_CONFIG_DAVB_TYPE": "webdav", "RCLONE_CONFIG_DAVB_URL": dav.url,
                   "RCLONE_CONFIG_DAVB_VENDOR": "other", "RCLONE_CONFIG_DAVB_USER": USER,
                   "RCLONE_CONFIG_DAVB_PASS": subprocess.run(["rclone", "obscure", PASSWORD], capture_output=True,
                                                             text=True, check=True).stdout.strip()}
            upload = [str(BIN / "pp-upload"), "-j", str(JOBS), "--host"]

            def rclone(remote: str) -> Callable[[int], list[str]]:
                return lambda r: ["rclone", "copy", str(work / "images"), f"{remote}/rclone-{r}",
                                  "--transfers", str(JOBS), "--checkers", str(JOBS)]

            compare("s3", files, lambda r: [*upload, "s3b", "--path", f"picpipe-{r}/{{name}}{{ext}}"],
                    rclone("s3b:bench"), env, lambda: moto_requests.count)
            compare("webdav", files, lambda r: [*upload, "davb", "--path", f"picpipe-{r}/{{name}}{{ext}}"],
                    rclone("davb:"), env, lambda: len(dav.requests))

            # The same images again: the ledger knows them, so no request may reach either server.
            ledger = work / "ledger.jsonl"
            for host in ("s3b", "davb"):
                _, records = timed([*upload, host, "--path", "again/{name}{ext}"], env,
                                   "".join(f"{f}\n" for f in files))
                timed([str(BIN / "pp-mark"), "--ledger", str(ledger)], env, records)
            seen = moto_requests.count, len(dav.requests)
            dead = {**env, "PICPIPE_S3B_ENDPOINT": "http://127.0.0.1:9", "PICPIPE_DAVB_URL": "http://127.0.0.1:9/"}
            for host in ("s3b", "davb"):
                elapsed, out = timed([*upload, host, "--ledger", str(ledger), "--path", "again/{name}{ext}"], dead,
                                     "".join(f"{f}\n" for f in files))
                deduped = sum(1 for line in out.splitlines() if json.loads(line).get("deduped") is True)
                print(f"re-run   {host:<5} {deduped}/{IMAGES} deduped in {elapsed:.2f} s with the endpoint "
                      f"pointed at a closed port; requests meanwhile: S3 {moto_requests.count - seen[0]}, "
                      f"WebDAV {len(dav.requests) - seen[1]}")
        moto.stop()  # type: ignore[attr-defined]
    return 0


if __name__ == "__main__":
    sys.exit(main())
