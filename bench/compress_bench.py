"""`make bench` for pp-compress: picpipe, sharp (PicList's engine), pngquant and cwebp, side by side.

Corpus: bench/corpus.py (scikit-image's photos, Debian's wallpapers up to 20 megapixels, documentation
pages rendered by Chromium), fetched once into bench/.cache. Each tool compresses the whole corpus in
one run (all cores, as its users run it), BENCH_REPEAT times: the median wall time counts. Each file
is also run alone once, for its own time and peak memory (the largest process: a worker of ours).

Quality is judged by measures picpipe does not optimise: the `ssimulacra2` package from PyPI (and
libjxl's C++ tool too, in a second report, when BENCH_SSIMULACRA2 names it) and butteraugli's 3-norm (`butteraugli_main`
from Debian's libjxl-devtools), on originals and results both converted to sRGB through their ICC
profiles (sharp converts, picpipe keeps the profile). Scores are cached by content in the cache folder.

Then the issue's targets, in order: must (no image more than 3 points below sharp unless at 90 or
above; total bytes at most sharp's), target (wall time at most 1.25x sharp's; at most 300 MB per
worker on a 24-megapixel photo), stretch (bytes at most 0.85x sharp's; --format auto at most 0.6x).
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
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from corpus import corpus  # noqa: E402

CACHE = Path(os.environ.get("BENCH_CACHE", HERE / ".cache"))
REPEAT = int(os.environ.get("BENCH_REPEAT", "3"))
CPP_SSIMULACRA2 = os.environ.get("BENCH_SSIMULACRA2")
BIN = Path(sys.executable).parent
#: Measures the peak resident memory of a command's largest process (itself or a worker).
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[2:], stdout=open(sys.argv[1], 'wb')); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")

Batch = Callable[[list[Path], Path], list[str]]  # (files, out folder) -> argv compressing them all
Outputs = Callable[[list[Path], Path, str], list[Path]]  # (files, out folder, stdout) -> result files


class Tool:
    def __init__(self, name: str, files: list[Path], batch: Batch, outputs: Outputs, each: bool = False) -> None:
        self.name, self.files, self.batch, self.outputs, self.each = name, files, batch, outputs, each
        self.times: list[float] = []
        self.seconds = 0.0
        self.peak_mb = 0.0
        self.results: dict[Path, Path] = {}
        self.alone: dict[Path, tuple[float, float]] = {}  # file -> (seconds, peak MB) run alone

    def run(self, files: list[Path], out: Path) -> tuple[float, float, list[Path]]:
        """(seconds, peak MB, result files) for one run over `files`."""
        start = time.perf_counter()
        if self.each:  # one process per file, as many at once as there are cores
            with ThreadPoolExecutor(os.cpu_count() or 2) as pool:
                runs = list(pool.map(lambda f: measured(self.batch([f], out)), files))
            peak = max(r[1] for r in runs)
            stdout = ""
        else:
            stdout, peak = measured(self.batch(files, out))
        return time.perf_counter() - start, peak, self.outputs(files, out, stdout)


def measured(argv: list[str]) -> tuple[str, float]:
    """(stdout, peak MB of the largest process) of a command that must succeed."""
    with tempfile.NamedTemporaryFile() as stdout:
        done = subprocess.run([sys.executable, "-c", PEAK, stdout.name, *argv], capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr[-2000:]}")
        return Path(stdout.name).read_text(), int(done.stdout.split()[-1]) / 1024


def picpipe(*extra: str) -> tuple[Batch, Outputs]:
    def batch(files: list[Path], out: Path) -> list[str]:
        return [str(BIN / "pp-compress"), "--quiet", "--out", str(out), *extra, *map(str, files)]

    def outputs(files: list[Path], out: Path, stdout: str) -> list[Path]:
        return [Path(json.loads(line)["path"]) for line in stdout.splitlines()]
    return batch, outputs


def sharp(modules: Path) -> tuple[Batch, Outputs]:
    def batch(files: list[Path], out: Path) -> list[str]:
        return ["env", f"NODE_PATH={modules / 'node_modules'}", "node", str(HERE / "sharp_compress.js"), str(out),
                *map(str, files)]

    return batch, lambda files, out, _: [out / f.name for f in files]


def pngquant_each(files: list[Path], out: Path) -> list[str]:
    return ["pngquant", "--quality=0-80", "--strip", "--force", "--output", str(out / files[0].name), str(files[0])]


def cwebp_each(files: list[Path], out: Path) -> list[str]:
    target = out / (files[0].stem + ".webp")
    return ["cwebp", "-quiet", "-q", "80", "-metadata", "icc", str(files[0]), "-o", str(target)]


def sharp_ready() -> Path | None:
    """node_modules with sharp in the cache (npm install, not committed)."""
    if shutil.which("node") is None or shutil.which("npm") is None:
        return None
    if not (CACHE / "node_modules" / "sharp").exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        subprocess.run(["npm", "install", "--silent", "--no-audit", "--no-fund", "--prefix", str(CACHE), "sharp"],
                       check=True)
    return CACHE


class Judge:
    """SSIMULACRA2 and butteraugli of a result against its original, cached by content."""

    def __init__(self, cpp: str | None = None) -> None:
        self.path = CACHE / "scores.json"
        self.scores: dict[str, float | None] = json.loads(self.path.read_text()) if self.path.exists() else {}
        self.folder = Path(tempfile.mkdtemp(prefix="bench-judge-"))
        self.cpp = cpp
        self.name = "ssimulacra2 (libjxl C++)" if cpp else "ssimulacra2 (PyPI)"
        self.butteraugli = shutil.which("butteraugli_main")

    def srgb_png(self, path: Path, like: Path | None = None) -> Path:
        """The image as an 8-bit sRGB PNG without profile, oriented, alpha over mid grey: what both metrics read."""
        import pyvips

        image = pyvips.Image.new_from_file(str(path)).autorot()
        if "icc-profile-data" in image.get_fields():
            image = image.icc_transform("srgb", embedded=True, intent="relative")
        image = image.colourspace("srgb") if image.bands < 3 else image
        if image.hasalpha():
            image = image.flatten(background=[128, 128, 128])
        image = image.cast("uchar") if image.format != "uchar" else image
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:24]
        png = self.folder / f"{digest}.png"
        if not png.exists():
            image.copy(interpretation="srgb").pngsave(str(png), compression=1, keep="none")
        return png

    def measure(self, original: Path, result: Path) -> tuple[float | None, float | None]:
        key = "".join(hashlib.sha256(p.read_bytes()).hexdigest()[:24] for p in (original, result))
        names = (f"{self.name}:{key}", f"butteraugli:{key}")
        if any(name not in self.scores for name in names):
            a, b = self.srgb_png(original), self.srgb_png(result)
            self.scores[names[0]] = self.ssimulacra2(a, b)
            self.scores[names[1]] = self.butteraugli_3norm(a, b)
            self.path.write_text(json.dumps(self.scores))
        return self.scores[names[0]], self.scores[names[1]]

    def ssimulacra2(self, a: Path, b: Path) -> float:
        if self.cpp:
            return float(subprocess.run([self.cpp, str(a), str(b)], capture_output=True, text=True, check=True).stdout)
        from ssimulacra2 import compute_ssimulacra2

        return float(compute_ssimulacra2(str(a), str(b)))

    def butteraugli_3norm(self, a: Path, b: Path) -> float | None:
        if self.butteraugli is None:
            return None
        out = subprocess.run([self.butteraugli, str(a), str(b), "--pnorm", "3"], capture_output=True, text=True,
                             check=True).stdout
        return float(out.split("3-norm:")[1].split()[0])


def megapixels(path: Path) -> float:
    from PIL import Image

    with Image.open(path) as image:
        return image.width * image.height / 1e6


def main() -> int:
    kinds = corpus(CACHE)
    files = [f for kind in kinds.values() for f in kind]
    kind_of = {f: kind for kind, fs in kinds.items() for f in fs}
    modules = sharp_ready()
    if modules is None:
        print("compress bench: node and npm are needed for sharp, the baseline: nothing to compare with")
        return 0
    pngs = [f for f in files if f.suffix == ".png"]
    tools = [Tool("picpipe", files, *picpipe()),
             Tool("picpipe --format auto", files, *picpipe("--format", "auto")),
             Tool("sharp q80", files, *sharp(modules))]
    if shutil.which("pngquant"):
        tools.append(Tool("pngquant 0-80 (PNG files)", pngs, pngquant_each,
                          lambda fs, out, _: [out / f.name for f in fs], each=True))
    if shutil.which("cwebp"):
        tools.append(Tool("cwebp q80 (to WebP)", files, cwebp_each,
                          lambda fs, out, _: [out / (f.stem + ".webp") for f in fs], each=True))
    work = Path(tempfile.mkdtemp(prefix="bench-compress-"))
    print(f"corpus: {len(files)} images ({', '.join(f'{len(v)} {k}' for k, v in kinds.items())}), "
          f"{sum(f.stat().st_size for f in files) / 1e6:.1f} MB; {REPEAT} runs each", file=sys.stderr)
    for round_ in range(REPEAT):  # tools take turns, so that a slow moment of the machine hits all of them
        for tool in tools:
            out = work / f"{tool.name.split()[0]}-{tools.index(tool)}-{round_}"
            out.mkdir()
            seconds, peak, outputs = tool.run(tool.files, out)
            tool.times.append(seconds)
            tool.peak_mb = max(tool.peak_mb, peak)
            tool.results = dict(zip(tool.files, outputs, strict=True))
    for tool in tools:
        tool.seconds = statistics.median(tool.times)
        for f in tool.files:  # alone, for per-image time and memory
            out = work / f"alone-{tools.index(tool)}"
            out.mkdir(exist_ok=True)
            seconds, peak, _ = tool.run([f], out)
            tool.alone[f] = (seconds, peak)
        print(f"  {tool.name}: {tool.seconds:.2f} s", file=sys.stderr)
    for judge in [Judge(), *([Judge(CPP_SSIMULACRA2)] if CPP_SSIMULACRA2 else [])]:
        print(f"  judging with {judge.name} and butteraugli (cached in {judge.path})", file=sys.stderr)
        scores = {(tool.name, f): judge.measure(f, tool.results[f]) for tool in tools for f in tool.files}
        report(files, kind_of, tools, scores, judge.name)
    memory_check(modules, work)
    shutil.rmtree(work, ignore_errors=True)
    return 0


def report(files: list[Path], kind_of: dict[Path, str], tools: list[Tool],
           scores: dict[tuple[str, Path], tuple[float | None, float | None]], metric: str) -> None:
    ours, auto, base = tools[0], tools[1], tools[2]
    print(f"\npp-compress bench: {len(files)} images; SSIMULACRA2 = {metric}, BA = butteraugli 3-norm; "
          f"time and memory of each file alone\n")
    head = f"{'image':<30} {'kind':<11} {'MP':>5} |"
    for tool in (ours, auto, base):
        head += f" {tool.name[:21]:>21} KB  S2    BA    s    MB |"
    print(head)
    for f in files:
        line = f"{f.name[:30]:<30} {kind_of[f]:<11} {megapixels(f):5.1f} |"
        for tool in (ours, auto, base):
            s2, ba = scores[(tool.name, f)]
            seconds, peak = tool.alone[f]
            line += (f" {tool.results[f].stat().st_size / 1000:24.0f} {s2:5.1f} {ba or 0:5.2f} {seconds:4.1f} "
                     f"{peak:5.0f} |")
        print(line)
    print(f"\n{'tool':<28} {'files':>5} {'KB':>9} {'vs sharp':>8} {'mean S2':>8} {'min S2':>7} {'mean BA':>8} "
          f"{'max BA':>7} {'wall s':>7} {'vs sharp':>8} {'peak MB':>8}")
    for tool in tools:
        same = tool.files
        size = sum(tool.results[f].stat().st_size for f in same)
        sharp_size = sum(base.results[f].stat().st_size for f in same)
        s2 = [scores[(tool.name, f)][0] or 0 for f in same]
        ba = [scores[(tool.name, f)][1] or 0 for f in same]
        sharp_time = base.seconds if len(same) == len(base.files) else None
        print(f"{tool.name:<28} {len(same):>5} {size / 1000:9.0f} {size / sharp_size:8.3f} {statistics.mean(s2):8.2f} "
              f"{min(s2):7.2f} {statistics.mean(ba):8.2f} {max(ba):7.2f} {tool.seconds:7.2f} "
              f"{(f'{tool.seconds / sharp_time:8.2f}' if sharp_time else '       -')} {tool.peak_mb:8.0f}")
    print()
    for tool in (ours, auto):
        worse = [(f.name, round(scores[(tool.name, f)][0] or 0, 1), round(scores[(base.name, f)][0] or 0, 1))
                 for f in files if not visibly_no_worse(scores[(tool.name, f)][0], scores[(base.name, f)][0])]
        size = sum(tool.results[f].stat().st_size for f in files) / sum(base.results[f].stat().st_size for f in files)
        print(f"{tool.name}: {len(files) - len(worse)}/{len(files)} images no worse than sharp (S2 >= sharp - 3 "
              f"or >= 90){': worse ' + str(worse) if worse else ''}; bytes {size:.3f} x sharp; "
              f"wall time {tool.seconds / base.seconds:.2f} x sharp")
    print(f"must:    {'holds' if all_ok(ours, base, files, scores) else 'FAILS'} "
          "(every image S2 >= sharp - 3 or >= 90, total bytes <= sharp)")
    print(f"target:  wall time {ours.seconds / base.seconds:.2f} x sharp (goal <= 1.25)")
    print(f"stretch: bytes {ratio(ours, base, files):.3f} x sharp (goal <= 0.85); --format auto "
          f"{ratio(auto, base, files):.3f} x sharp (goal <= 0.60)")


def visibly_no_worse(ours: float | None, sharp_score: float | None) -> bool:
    return ours is not None and sharp_score is not None and (ours >= sharp_score - 3 or ours >= 90)


def ratio(tool: Tool, base: Tool, files: list[Path]) -> float:
    return sum(tool.results[f].stat().st_size for f in files) / sum(base.results[f].stat().st_size for f in files)


def all_ok(tool: Tool, base: Tool, files: list[Path], scores: dict[tuple[str, Path], tuple[float | None, float | None]]
           ) -> bool:
    return ratio(tool, base, files) <= 1 and all(
        visibly_no_worse(scores[(tool.name, f)][0], scores[(base.name, f)][0]) for f in files)


def memory_check(modules: Path, work: Path) -> None:
    """Peak memory on a 24-megapixel photo (the corpus's 20-megapixel one, enlarged to 6000x4000)."""
    import pyvips

    big = CACHE / "photo-24mp.jpg"
    if not big.exists():
        source = next((CACHE / "wallpapers").glob("lomiri-kleiber.jpg"), None)
        if source is None:
            return
        image = pyvips.Image.new_from_file(str(source))
        image.resize(6000 / image.width, vscale=4000 / image.height, kernel="lanczos3").jpegsave(str(big), Q=92)
    twin = work / "photo-24mp-2.jpg"
    shutil.copy(big, twin)
    print(f"\npeak memory on a 24-megapixel photo ({big.name}, 6000x4000):")
    for name, argv in (("picpipe -j 1, one photo", picpipe("-j", "1")[0]([big], work)),
                       ("picpipe -j 2, two photos", picpipe("-j", "2")[0]([big, twin], work)),
                       ("sharp q80, one photo", sharp(modules)[0]([big], work))):
        start = time.perf_counter()
        _, peak = measured(argv)
        print(f"  {name:<28} {peak:6.0f} MB per process  {time.perf_counter() - start:5.1f} s   (goal <= 300 MB)")


if __name__ == "__main__":
    sys.exit(main())
