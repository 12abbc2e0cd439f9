"""The bench corpus: real images that picpipe did not make, fetched once into a cache folder.

`make bench` compares pp-compress with sharp, pngquant and cwebp. Doing that on images we made ourselves
would flatter whichever tool suits our generator, so every image here comes from someone else:

- photos: the photos and scans inside the scikit-image wheel (`pip download`), less the synthetic ones;
- wallpapers: large JPEG and PNG wallpapers from Debian packages (`apt-get download`): camera photos
  up to 20 megapixels, rendered artwork, and the smooth gradients that show banding;
- screenshots: real documentation pages from Debian -doc packages (Sphinx themes, an asciidoc manual
  page) rendered by headless Chromium, two of them at device scale 2 like a Mac user's screenshot.

Nothing is committed: the files live under the cache folder (bench/.cache is in .gitignore). A second
call finds them there and downloads or renders nothing. A source that cannot be had (no network, not
root and no apt lists, no Chromium) is reported on stderr and that kind comes back shorter.

    python bench/corpus.py [CACHE]     # fetch if needed, then list the files with sizes and dimensions
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path

from PIL import Image

HERE = Path(__file__).resolve().parent
KINDS = ("photos", "screenshots", "wallpapers")

#: scikit-image data files that are synthetic, tiny or a duplicate: no blogger uploads them.
PHOTO_SKIP = {
    "chessboard_GRAY.png", "chessboard_RGB.png", "color.png", "horse.png", "phantom.png", "logo.png",
    "no_time_for_that_tiny.gif", "clock_motion.png",
    "microaneurysms.png",  # a 102x102 crop
    "motorcycle_right.png",  # the stereo twin of motorcycle_left.png
}
#: Anything smaller on a side is a test fixture, not a photo (guards against files a later wheel adds).
PHOTO_MIN_SIDE = 128

#: (file in the cache, Debian package, glob inside the package). Where the glob matches several sizes of
#: one wallpaper the largest in pixels is taken, as a user would download the largest.
WALLPAPERS: list[tuple[str, str, str]] = [
    # KDE: camera photos as JPEG (2560x1600), rendered artwork as a 5120x2880 JPEG, large PNGs.
    ("kde-evening-glow.jpg", "plasma-workspace-wallpapers", "usr/share/wallpapers/EveningGlow/contents/images/*.jpg"),
    ("kde-fallen-leaf.jpg", "plasma-workspace-wallpapers", "usr/share/wallpapers/FallenLeaf/contents/images/*.jpg"),
    ("kde-path.jpg", "plasma-workspace-wallpapers", "usr/share/wallpapers/Path/contents/images/*.jpg"),
    ("kde-volna.jpg", "plasma-workspace-wallpapers", "usr/share/wallpapers/Volna/contents/images/*.jpg"),
    ("kde-altai.png", "plasma-workspace-wallpapers", "usr/share/wallpapers/Altai/contents/images/*.png"),
    ("kde-kokkini.png", "plasma-workspace-wallpapers", "usr/share/wallpapers/Kokkini/contents/images/*.png"),
    # The largest camera photo in Debian's wallpapers: 6028x3391 (20 MP), a DSLR shot of a nuthatch.
    ("lomiri-kleiber.jpg", "lomiri-wallpapers-20.04", "usr/share/backgrounds/Kleiber_by_Lukas_Baubkus.jpg"),
    # Debian's own themes: smooth gradient PNGs, where a palette shows banding.
    ("debian-softwaves.png", "desktop-base", "usr/share/desktop-base/softwaves-theme/grub/grub-16x9.png"),
    ("debian-futureprototype.png", "desktop-base",
     "usr/share/plymouth/themes/futureprototype/plymouth_background_future.png"),
    ("debian-joy.png", "desktop-base", "usr/share/plymouth/themes/joy/background.png"),
]

#: (file in the cache, Debian package, page inside the package, device scale factor). Chosen for colour:
#: a coloured field list, a table, note and warning boxes, highlighted code, a logo, dark sidebars.
SCREENSHOTS: list[tuple[str, str, str, int]] = [
    ("doc-python-whatsnew.png", "python3.11-doc", "usr/share/doc/python3.11/html/whatsnew/3.11.html", 1),
    ("doc-python-json-2x.png", "python3.11-doc", "usr/share/doc/python3.11/html/library/json.html", 2),
    ("doc-python-xml.png", "python3.11-doc", "usr/share/doc/python3.11/html/library/xml.html", 1),
    ("doc-python-controlflow.png", "python3.11-doc", "usr/share/doc/python3.11/html/tutorial/controlflow.html", 1),
    ("doc-scrapy-selectors.png", "python-scrapy-doc", "usr/share/doc/python-scrapy-doc/html/topics/selectors.html", 1),
    ("doc-scrapy-telnetconsole.png", "python-scrapy-doc",
     "usr/share/doc/python-scrapy-doc/html/topics/telnetconsole.html", 1),
    ("doc-scrapy-tutorial.png", "python-scrapy-doc", "usr/share/doc/python-scrapy-doc/html/intro/tutorial.html", 1),
    ("doc-tornado-index-2x.png", "python-tornado-doc", "usr/share/doc/python-tornado-doc/html/index.html", 2),
    ("doc-tornado-locks.png", "python-tornado-doc", "usr/share/doc/python-tornado-doc/html/locks.html", 1),
    ("doc-requests-quickstart.png", "python-requests-doc",
     "usr/share/doc/python-requests-doc/html/user/quickstart.html", 1),
    ("doc-git-rebase.png", "git-doc", "usr/share/doc/git-doc/git-rebase.html", 1),
]
#: Debian's -doc packages link their theme's CSS and fonts to other packages by relative symlinks; all are
#: unpacked into one tree so that those links resolve. Without the theme a page renders unstyled: skipped.
THEME = {"python-scrapy-doc": "sphinx-rtd-theme-common", "python-tornado-doc": "sphinx-rtd-theme-common"}
#: Fonts and scripts the pages use: without them a page still renders, a little less like the real one.
SUPPORT = ["fonts-lato", "fonts-font-awesome", "libjs-sphinxdoc", "libjs-jquery"]
WINDOW = "1280,1600"


def corpus(cache: Path) -> dict[str, list[Path]]:
    """Fetch (once, cached under `cache`) and return the bench images by kind: "photos", "screenshots", "wallpapers"."""
    cache = Path(cache)
    cache.mkdir(parents=True, exist_ok=True)
    return {"photos": _photos(cache / "photos"), "screenshots": _screenshots(cache / "screenshots"),
            "wallpapers": _wallpapers(cache / "wallpapers")}


def _warn(message: str) -> None:
    """Tell the person running the bench why a kind is shorter: stderr, so stdout stays the listing."""
    print(f"corpus: {message}", file=sys.stderr)


def _tail(result: subprocess.CompletedProcess[str] | None) -> str:
    """The last lines a failed command printed: enough to see why, without pages of progress output."""
    if result is None:
        return "did not run"
    lines = (result.stderr or result.stdout or "").strip().splitlines()
    return " | ".join(lines[-3:]) or f"exit status {result.returncode}"


def _run(args: list[str], cwd: Path | None = None, timeout: float = 1800) -> subprocess.CompletedProcess[str] | None:
    """Run a command quietly; None when it cannot start or hangs, so a caller skips instead of crashing."""
    try:
        return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        _warn(f"{args[0]}: {exc}")
        return None


def _install(src: Path, dst: Path) -> None:
    """Copy into the cache under a temporary name, then rename: an interrupted run leaves no half file."""
    part = dst.with_name(dst.name + ".part")
    shutil.copyfile(src, part)
    os.replace(part, dst)


def _work(cache: Path) -> Path:
    """A scratch folder beside the cache (same file system for the renames), removed when done."""
    cache.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(prefix=".work-", dir=cache))


# -- photos: the scikit-image wheel -------------------------------------------------------------------------------

def _photos(folder: Path) -> list[Path]:
    """The scikit-image wheel's data photos. The wheel's file list decides the names, so a manifest remembers them."""
    manifest = folder / "MANIFEST"
    if manifest.exists():
        paths = [folder / name for name in manifest.read_text().split()]
        if all(path.exists() for path in paths):
            return paths
    work = _work(folder)
    try:
        result = _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                       "-d", str(work), "scikit-image"])
        wheels = sorted(work.glob("scikit_image-*.whl"))
        if result is None or result.returncode != 0 or not wheels:
            _warn(f"photos: pip download scikit-image failed ({_tail(result)}): no photos")
            return []
        paths = []
        with zipfile.ZipFile(wheels[0]) as wheel:
            for name in sorted(wheel.namelist()):
                base = name.rsplit("/", 1)[-1]
                if (name.startswith("skimage/data/") and name.count("/") == 2 and base.endswith((".png", ".jpg"))
                        and base not in PHOTO_SKIP):
                    (work / base).write_bytes(wheel.read(name))
                    try:
                        with Image.open(work / base) as image:
                            if min(image.size) < PHOTO_MIN_SIDE:
                                continue
                    except OSError as exc:
                        _warn(f"photos: {base} unreadable ({exc}): skipped")
                        continue
                    _install(work / base, folder / base)
                    paths.append(folder / base)
        manifest.write_text("".join(f"{path.name}\n" for path in paths))
        return paths
    finally:
        shutil.rmtree(work, ignore_errors=True)


# -- Debian packages ----------------------------------------------------------------------------------------------

@functools.cache
def _apt_update() -> bool:
    """Refresh apt's lists once per run, as root only: a fresh machine has none, an old one stale ones."""
    if os.geteuid() != 0:
        _warn("apt lists are missing or stale and only root can run apt-get update")
        return False
    result = _run(["apt-get", "update", "-qq"])
    if result is None or result.returncode != 0:
        _warn(f"apt-get update failed: {_tail(result)}")
        return False
    return True


def _unpack(packages: list[str], root: Path) -> set[str]:
    """Download Debian packages (no root needed) and unpack them all into `root`; return those that worked."""
    if shutil.which("apt-get") is None or shutil.which("dpkg-deb") is None:
        _warn("apt-get or dpkg-deb not found (not Debian?): Debian packages skipped")
        return set()
    debs = root.parent / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    root.mkdir(parents=True, exist_ok=True)
    done = set()
    for package in dict.fromkeys(packages):
        for attempt in range(2):
            result = _run(["apt-get", "download", "-q", package], cwd=debs)
            found = sorted(debs.glob(f"{package}_*.deb"))
            if result is not None and result.returncode == 0 and found:
                break
            if attempt == 0 and result is not None and _apt_update():
                continue
            _warn(f"apt-get download {package} failed: {_tail(result)}")
            found = []
            break
        if not found:
            continue
        unpacked = _run(["dpkg-deb", "-x", str(found[-1]), str(root)])
        found[-1].unlink()  # the large packages are 100 MB: keep the scratch folder small
        if unpacked is None or unpacked.returncode != 0:
            _warn(f"dpkg-deb -x {found[-1].name} failed: {_tail(unpacked)}")
            continue
        done.add(package)
    return done


def _largest(matches: list[Path]) -> Path:
    """The largest image of a wallpaper offered in several sizes, by pixel count (then by name, for determinism)."""
    def area(path: Path) -> int:
        with Image.open(path) as image:
            return image.width * image.height
    return max(sorted(matches), key=area)


def _wallpapers(folder: Path) -> list[Path]:
    """The WALLPAPERS from Debian packages, downloading only the packages whose files are not cached yet."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [item for item in WALLPAPERS if not (folder / item[0]).exists()]
    if missing:
        work = _work(folder)
        try:
            root = work / "root"
            unpacked = _unpack([package for _, package, _ in missing], root)
            for name, package, pattern in missing:
                if package not in unpacked:
                    continue
                matches = [path for path in root.glob(pattern) if path.is_file()]
                if not matches:
                    _warn(f"wallpapers: {package} has no {pattern}: {name} skipped")
                    continue
                _install(_largest(matches), folder / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [folder / name for name, _, _ in WALLPAPERS if (folder / name).exists()]


# -- screenshots: documentation pages in headless Chromium --------------------------------------------------------

def _chromium() -> str | None:
    """The Chromium binary, under any of its usual names."""
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    return None


def _render(chromium: str, page: Path, out: Path, scale: int, profile: Path) -> str | None:
    """Screenshot one page at a 1280x1600 window (x scale); an error message, or None when it worked."""
    args = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
            "--disable-background-networking", "--disable-component-update", "--no-first-run", "--disable-sync",
            f"--user-data-dir={profile}", f"--screenshot={out}", f"--window-size={WINDOW}"]
    if scale != 1:
        args.append(f"--force-device-scale-factor={scale}")
    result = _run([*args, page.as_uri()], timeout=180)
    if result is None:
        return "chromium did not finish"
    if not out.exists():
        return f"no screenshot ({_tail(result)})"
    with Image.open(out) as image:
        levels = sum(1 for count in image.convert("L").histogram() if count)
    if levels < 16:  # text is antialiased: a rendered page has many grey levels, a blank one a few
        return "the screenshot is blank"
    return None


def _screenshots(folder: Path) -> list[Path]:
    """The SCREENSHOTS, rendering only those not cached yet; the doc packages are fetched only for those."""
    folder.mkdir(parents=True, exist_ok=True)
    missing = [item for item in SCREENSHOTS if not (folder / item[0]).exists()]
    chromium = _chromium() if missing else None
    if missing and chromium is None:
        _warn("screenshots: chromium not installed (apt-get install chromium): no screenshots rendered")
    if missing and chromium is not None:
        work = _work(folder)
        try:
            root = work / "root"
            docs = [package for _, package, _, _ in missing]
            themes = [THEME[package] for package in docs if package in THEME]
            unpacked = _unpack([*docs, *themes, *SUPPORT], root)
            for name, package, page, scale in missing:
                theme = THEME.get(package)
                if package not in unpacked or (theme is not None and theme not in unpacked):
                    _warn(f"screenshots: {name} skipped ({package} or its theme could not be had)")
                    continue
                if not (root / page).exists():
                    _warn(f"screenshots: {package} has no {page}: {name} skipped")
                    continue
                shot = work / name
                error = _render(chromium, root / page, shot, scale, work / "profile")
                if error:
                    _warn(f"screenshots: {name}: {error}")
                    continue
                os.replace(shot, folder / name)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return [folder / name for name, _, _, _ in SCREENSHOTS if (folder / name).exists()]


# -- the listing --------------------------------------------------------------------------------------------------

def _describe(path: Path) -> str:
    """Dimensions, mode and format, as the bench tables will need them."""
    try:
        with Image.open(path) as image:
            megapixels = image.width * image.height / 1e6
            return f"{image.width:>5}x{image.height:<5} {megapixels:5.1f} MP  {image.mode:<4} {image.format}"
    except OSError as exc:
        return f"unreadable: {exc}"


def main(argv: list[str]) -> int:
    """Fetch if needed and list the corpus: kind, file, size, dimensions. A missing source is only reported."""
    cache = Path(argv[0]) if argv else HERE / ".cache"
    start = time.monotonic()
    images = corpus(cache)
    elapsed = time.monotonic() - start
    total_files = total_bytes = 0
    for kind in KINDS:
        paths = images[kind]
        size = sum(path.stat().st_size for path in paths)
        total_files, total_bytes = total_files + len(paths), total_bytes + size
        print(f"{kind}: {len(paths)} files, {size / 1e6:.1f} MB")
        for path in paths:
            print(f"  {path.name:<32} {path.stat().st_size / 1e3:>9.0f} kB  {_describe(path)}")
    print(f"total: {total_files} files, {total_bytes / 1e6:.1f} MB in {cache} ({elapsed:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
