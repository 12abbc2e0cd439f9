"""`make bench` for pp-compress: picpipe against sharp (PicList's engine), side by side.

Corpus: the photos and scans inside the scikit-image wheel's data folder (fetched with
`pip download`, never committed) plus screenshots of real documentation pages (Python's own
pydoc pages rendered by headless Chromium). For each tool: total bytes as a fraction of the
input, mean and minimum SSIM against the original, and wall time. Medians of BENCH_REPEAT runs.
pngquant (PNG files only) and cwebp (every file to WebP) join when installed, each compared
with sharp on the same files.
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
import zipfile
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageOps

from picpipe.ssim import ssim

HERE = Path(__file__).resolve().parent
CACHE = Path(os.environ.get("BENCH_CACHE", HERE / ".cache"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
#: Synthetic or non-photographic files in the data folder that no blogger uploads.
SKIP = {"chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "horse.png", "phantom.png", "logo.png",
        "no_time_for_that_tiny.gif", "clock_motion.png"}
PAGES = ["json", "pathlib", "argparse", "subprocess"]


def photos(folder: Path) -> list[Path]:
    """The scikit-image wheel's data images, unpacked from the wheel pip downloads."""
    folder.mkdir(parents=True, exist_ok=True)
    wheels = list(folder.glob("scikit_image-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "-d", str(folder), "scikit-image"], check=True)
        wheels = list(folder.glob("scikit_image-*.whl"))
    out = folder / "data"
    with zipfile.ZipFile(wheels[0]) as wheel:
        for name in wheel.namelist():
            base = name.rsplit("/", 1)[-1]
            if name.startswith("skimage/data/") and base.endswith((".png", ".jpg")) and base not in SKIP:
                (out / base).parent.mkdir(parents=True, exist_ok=True)
                (out / base).write_bytes(wheel.read(name))
    return sorted(out.glob("*"))


def screenshots(folder: Path) -> list[Path]:
    """Documentation pages (pydoc's HTML for a few stdlib modules) as Chromium screenshots."""
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        print("  screenshots: chromium not installed (apt-get install chromium): photos only", file=sys.stderr)
        return []
    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    for module in PAGES:
        shot = folder / f"doc-{module}.png"
        if not shot.exists():
            subprocess.run([sys.executable, "-m", "pydoc", "-w", module], cwd=folder, check=True,
                           stdout=subprocess.DEVNULL)
            subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                            "--disable-background-networking", "--disable-component-update", "--no-first-run",
                            f"--user-data-dir={folder / 'profile'}", f"--screenshot={shot}",
                            "--window-size=1280,1600", (folder / f"{module}.html").as_uri()],
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        shots.append(shot)
    return shots


def sharp_ready() -> Path | None:
    """node_modules with sharp beside this file (npm install, not committed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    if not (CACHE / "node_modules" / "sharp").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(CACHE), "sharp"],
                       check=True)
    return CACHE


def score(originals: list[Path], outputs: list[Path]) -> tuple[int, float, float, str]:
    scores = []
    for original, output in zip(originals, outputs, strict=True):
        with Image.open(original) as a, Image.open(output) as b:
            reference = ImageOps.exif_transpose(a)
            scores.append((ssim(reference, b.convert(reference.mode) if b.size == reference.size else b), output))
    worst = min(scores)
    return sum(p.stat().st_size for p in outputs), statistics.mean(s for s, _ in scores), worst[0], worst[1].name


def run_picpipe(files: list[Path], out: Path, extra: list[str]) -> tuple[float, list[Path]]:
    pp = Path(sys.executable).parent / "pp-compress"
    start = time.perf_counter()
    result = subprocess.run([str(pp), "--out", str(out), *extra, *map(str, files)], check=True,
                            capture_output=True, text=True)
    seconds = time.perf_counter() - start
    records = [json.loads(line) for line in result.stdout.splitlines()]
    return seconds, [Path(r["path"]) for r in records]


def run_sharp(files: list[Path], out: Path, modules: Path) -> tuple[float, list[Path]]:
    env = {**os.environ, "NODE_PATH": str(modules / "node_modules")}
    start = time.perf_counter()
    subprocess.run(["node", str(HERE / "sharp_compress.js"), str(out), *map(str, files)], check=True, env=env,
                   stdout=subprocess.DEVNULL)
    return time.perf_counter() - start, [out / f.name for f in files]


def run_each(command: Callable[[Path, Path], list[str]], suffix: str, files: list[Path],
             out: Path) -> tuple[float, list[Path]]:
    """A one-file-per-run tool (pngquant, cwebp), two at a time like the others on a 2-core machine."""
    outputs = [out / (f.stem + suffix) for f in files]
    start = time.perf_counter()
    with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
        for done in pool.map(lambda pair: subprocess.run(command(*pair), capture_output=True),
                             zip(files, outputs, strict=True)):
            if done.returncode != 0:
                raise RuntimeError(done.stderr.decode(errors="replace"))
    return time.perf_counter() - start, outputs


def pngquant(source: Path, target: Path) -> list[str]:
    return ["pngquant", "--quality=0-80", "--strip", "--force", "--output", str(target), str(source)]


def cwebp(source: Path, target: Path) -> list[str]:
    return ["cwebp", "-quiet", "-q", "80", "-metadata", "icc", str(source), "-o", str(target)]


def main() -> int:
    files = photos(CACHE / "skimage") + screenshots(CACHE / "shots")
    total_in = sum(f.stat().st_size for f in files)
    print(f"corpus: {len(files)} images, {total_in} bytes", file=sys.stderr)
    modules = sharp_ready()
    pngs = [f for f in files if f.suffix == ".png"]
    #: name -> (the files it takes, how to run it on them)
    tools: dict[str, tuple[list[Path], Callable[[list[Path], Path], tuple[float, list[Path]]]]] = {
        "picpipe": (files, lambda fs, out: run_picpipe(fs, out, []))}
    tools["picpipe --format webp"] = (files, lambda fs, out: run_picpipe(fs, out, ["--format", "webp"]))
    for target in os.environ.get("BENCH_TARGETS", "").split():
        tools[f"picpipe --target {target}"] = (files, lambda fs, out, t=target: run_picpipe(fs, out, ["--target", t]))
    if modules is not None:
        tools["sharp q80"] = (files, lambda fs, out: run_sharp(fs, out, modules))
        if shutil.which("pngquant"):
            tools["sharp q80, PNG files"] = (pngs, lambda fs, out: run_sharp(fs, out, modules))
    if shutil.which("pngquant"):
        tools["pngquant 0-80, PNG files"] = (pngs, lambda fs, out: run_each(pngquant, ".png", fs, out))
    if shutil.which("cwebp"):
        tools["cwebp q80 (to WebP)"] = (files, lambda fs, out: run_each(cwebp, ".webp", fs, out))
    rows = []
    for name, (subset, tool) in tools.items():
        times = []
        for _ in range(REPEAT):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, outputs = tool(subset, Path(tmp))
                times.append(seconds)
                size, mean, worst, worst_name = score(subset, outputs)
        rows.append((name, len(subset), sum(f.stat().st_size for f in subset), size, mean, worst, worst_name,
                     statistics.median(times)))
        print(f"  {name} done", file=sys.stderr)
    # Each row is compared with sharp on the same files.
    sharp_rows = {r[1]: r for r in rows if r[0].startswith("sharp")}
    print(f"\npp-compress bench: {len(files)} images, {total_in} bytes in; medians of {REPEAT} runs\n")
    header = ("tool", "files", "bytes/in", "vs sharp", "mean SSIM", "min SSIM", "wall s", "vs sharp")
    print("{:<28} {:>5} {:>8} {:>8} {:>9} {:>8} {:>7} {:>8}".format(*header))
    for name, count, size_in, size, mean, worst, worst_name, seconds in rows:
        sharp_row = sharp_rows.get(count)
        size_ratio = f"{size / sharp_row[3]:8.3f}" if sharp_row else f"{'-':>8}"
        time_ratio = f"{seconds / sharp_row[7]:8.2f}" if sharp_row else f"{'-':>8}"
        print(f"{name:<28} {count:>5} {size / size_in:8.3f} {size_ratio} {mean:9.4f} {worst:8.4f} {seconds:7.2f} "
              f"{time_ratio}   (lowest: {worst_name})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
