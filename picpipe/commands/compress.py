"""pp-compress: make images smaller at a measured quality, without their GPS/EXIF."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picpipe.cli import StreamCommand, positive_int
from picpipe.config import SECTIONS, xdg_home
from picpipe.errors import PicpipeError, UsageError
from picpipe.files import read_source, temp_copy
from picpipe.stream import Record

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    from picpipe.concurrency import Submitter
    from picpipe.imaging import Options
    from picpipe.watermark import Spec

FORMAT_CHOICES = ("jpeg", "png", "webp", "avif", "auto")


def score(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if 0 < value <= 1:  # an SSIM target from before
        raise argparse.ArgumentTypeError(f"--target is a SSIMULACRA2 score now (e.g. 85 or 90), not an SSIM ({text})")
    if not 1 < value <= 100:
        raise argparse.ArgumentTypeError(f"a SSIMULACRA2 target is at most 100 (identical), not {text}")
    return value


def quality(text: str) -> int:
    value = positive_int(text)
    if value > 100:
        raise argparse.ArgumentTypeError(f"quality is 1 to 100, not {text}")
    return value


#: The watermark's settings: flags --watermark-KEY, PICPIPE_COMPRESS_<KEY>, [compress] KEY.
WATERMARK_KEYS = SECTIONS["compress"]
#: Settings naming files: relative to the configuration file's folder when written there.
WATERMARK_FILES = ("watermark_image", "watermark_font")


def parsed_by(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """An argparse type of a picpipe.watermark parser: its mistakes are argparse's usage errors."""
    def parsed(text: str) -> Any:
        try:
            return parse(text)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parsed


#: What one worker may need at most (the bench: 260-310 MB on 15-24 megapixel images), with room.
WORKER_MEMORY = 512 * 2**20


def jobs_for_this_machine() -> int:
    """One worker per core, but no more than the machine's memory holds at WORKER_MEMORY each."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):  # not a POSIX sysconf (Windows)
        return os.cpu_count() or 1
    return max(1, min(os.cpu_count() or 1, memory // WORKER_MEMORY))


class CompressCommand(StreamCommand):
    prog = "pp-compress"
    stage = "compress"
    default_jobs = jobs_for_this_machine()
    pool: ProcessPoolExecutor | None = None
    description = (
        "Re-encode each image as small as it can be while it still looks like the original, and\n"
        "drop EXIF/GPS/XMP/comments after applying the orientation. Looks are scored with\n"
        "SSIMULACRA2 (100 = identical, 90 = visually lossless, 80 = no difference side by side).\n"
        "By default each image keeps the score of sharp's quality-80 encoding (what PicList makes)\n"
        "within 2 points, never below 70 and never aiming above 91; --target fixes a score instead.\n"
        "The original files are never changed (unless --in-place); the record's path points at\n"
        "the new file, `source` keeps the original, `compress` says what was done."
    )
    examples = """\
  ls *.png | pp-compress | pp-upload --host qiniu | pp-link --md
  pp-compress --max-width 1600 photo.jpg | jq '.compress'
  pp-compress --target 90 screenshot.png        # visually lossless, whatever it costs
  find posts -name '*.jpg' | pp-compress --format webp --out build/img | jq -r .path
  pp-compress --watermark '© example.com' --watermark-position bottom-right photo.jpg
  pp-compress --watermark-image logo.png --watermark-size 0.2 --watermark-opacity 0.8 shot.png
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from picpipe.imaging import DEFAULT_MAX_PIXELS

        super().add_arguments(parser)
        parser.add_argument("--target", type=score, metavar="SCORE",
                            help="the SSIMULACRA2 score to keep, e.g. 85 (default: that of sharp's quality 80, "
                            "less 2, between 70 and 91)")
        parser.add_argument("--quality", type=quality, metavar="N",
                            help="a fixed quality 1-100 instead of the search")
        parser.add_argument("--format", choices=FORMAT_CHOICES,
                            help="convert to this format; auto picks the smallest (default: keep the format)")
        for side, dimension in (("width", "wider"), ("height", "taller")):
            parser.add_argument(f"--max-{side}", type=positive_int, metavar="PX",
                                help=f"shrink {dimension} images (never enlarge)")
        parser.add_argument("--keep-metadata", action="store_true", help="keep EXIF (with GPS), XMP and comments")
        parser.add_argument("--max-pixels", type=positive_int, default=DEFAULT_MAX_PIXELS, metavar="N",
                            help=f"refuse larger images as decompression bombs (default {DEFAULT_MAX_PIXELS})")
        place = parser.add_mutually_exclusive_group()
        place.add_argument("--out", metavar="DIR", help="write the results here, named like the originals "
                           "(default: a content-addressed cache under $XDG_CACHE_HOME/picpipe)")
        place.add_argument("--in-place", action="store_true",
                           help="replace the originals (atomically) when the result is smaller")
        self.add_watermark_arguments(parser)

    def add_watermark_arguments(self, parser: argparse.ArgumentParser) -> None:
        from picpipe import watermark as wm

        group = parser.add_argument_group(
            "watermark", "drawn on the upright pixels before they are judged and encoded; defaults from "
            "[compress] watermark_* in the config (PICPIPE_COMPRESS_WATERMARK_* ...)")
        which = group.add_mutually_exclusive_group()
        which.add_argument("--watermark", metavar="TEXT", help="write TEXT, white with a dark outline")
        which.add_argument("--watermark-image", metavar="FILE", help="draw this image (a PNG with transparency)")
        which.add_argument("--no-watermark", action="store_true", help="no watermark, whatever the config says")
        group.add_argument("--watermark-position", type=parsed_by(wm.PARSERS["watermark_position"]), metavar="WHERE",
                           help=f"one of {', '.join(wm.POSITIONS)} (default {wm.DEFAULT_POSITION})")
        group.add_argument("--watermark-opacity", type=parsed_by(wm.PARSERS["watermark_opacity"]), metavar="0-1",
                           help=f"1 is opaque (default {wm.DEFAULT_OPACITY})")
        group.add_argument("--watermark-size", type=parsed_by(wm.PARSERS["watermark_size"]), metavar="SHARE",
                           help="the mark fits in SHARE of the image's width and of its height, e.g. 0.15 or "
                           f"15%% (default {wm.DEFAULT_SIZE}, PicList's)")
        group.add_argument("--watermark-min", type=parsed_by(wm.PARSERS["watermark_min"]), metavar="PX",
                           help="leave images whose shorter side is below PX unmarked "
                           f"(default {wm.DEFAULT_MIN_SIDE})")
        group.add_argument("--watermark-margin", type=parsed_by(wm.PARSERS["watermark_margin"]), metavar="MARGIN",
                           help=f"distance from the edges, pixels or %% of the shorter side (default "
                           f"{wm.DEFAULT_MARGIN.replace('%', '%%')})")
        group.add_argument("--watermark-font", metavar="FILE",
                           help="a .ttf/.otf/.ttc font for the text (default: Pillow's, else a font on this "
                           "machine that has every character, e.g. a CJK font for 中文)")

    def start(self, args: argparse.Namespace) -> None:
        from picpipe.imaging import Options

        if args.in_place and args.format:
            raise UsageError("--in-place cannot change the format", "write the converted files with --out DIR")
        self.options = Options(target=args.target, quality=args.quality, format=args.format,
                               max_width=args.max_width, max_height=args.max_height,
                               keep_metadata=args.keep_metadata, max_pixels=args.max_pixels,
                               watermark=self.watermark(args))
        self.out_dir = (None if args.in_place else Path(args.out) if args.out
                        else xdg_home("XDG_CACHE_HOME", ".cache") / "compressed")
        if self.out_dir is not None:
            try:
                self.out_dir.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                raise UsageError(f"cannot create the output folder {self.out_dir}: {exc.strerror}") from None
        self.named = args.out is not None

    def watermark(self, args: argparse.Namespace) -> Spec | None:
        """The checked watermark from the flags over PICPIPE_COMPRESS_* over [compress]; text or
        image is one choice, taken whole from the strongest layer that makes it."""
        from picpipe import watermark as wm

        if args.no_watermark:
            return None
        env, file = self.config.section_layers("compress")
        folder = self.config.path.parent if self.config.path is not None else Path.cwd()
        flags = {key: getattr(args, key) for key in WATERMARK_KEYS if getattr(args, key) is not None}
        values: dict[str, Any] = {}
        for where, layer in ((f"[compress] in {self.config.path}", file), ("PICPIPE_COMPRESS_*", env),
                             ("", flags)):
            if where:  # flags were parsed by argparse; the others are parsed here, saying where
                for key, value in list(layer.items()):
                    value = layer[key] = self.config.resolve("[compress]", key, value)
                    if layer is file and key in WATERMARK_FILES and isinstance(value, str):
                        layer[key] = str(folder / os.path.expanduser(value))
                    elif key in wm.PARSERS:
                        try:
                            layer[key] = wm.PARSERS[key](value)
                        except ValueError as exc:
                            raise UsageError(f"{where}: {key}: {exc}", "see pp-compress --help") from None
            if "watermark" in layer or "watermark_image" in layer:
                values.pop("watermark", None)
                values.pop("watermark_image", None)
            values.update(layer)
        if values.get("watermark") is None and values.get("watermark_image") is None:
            return None
        return wm.checked(values.get("watermark"), values.get("watermark_image"), values.get("watermark_font"), values)

    def worker(self) -> Callable[[Record], Record]:
        return partial(compress_record, self.options, self.out_dir, self.named)

    def executor(self, jobs: int) -> Submitter | None:
        if jobs <= 1:
            return None
        import signal
        from concurrent.futures import ProcessPoolExecutor

        # Workers leave Ctrl-C to the main process, which writes what finished and stops.
        self.pool = ProcessPoolExecutor(jobs, initializer=signal.signal, initargs=(signal.SIGINT, signal.SIG_IGN))
        return self.pool

    def run(self, args: argparse.Namespace) -> int:
        try:
            return super().run(args)
        finally:
            # Joined here on every path, also after Ctrl-C or a reader that left: the interpreter's
            # exit hook would wait for the running images all the same, and when it meets a pool
            # still closing it writes to a pipe the pool just closed (3.11: "Exception ignored ...
            # Bad file descriptor", 2 runs in 40 with -j 2 before the pool was shut down here).
            if self.pool is not None:
                self.pool.shutdown(wait=True, cancel_futures=True)


def compress_record(options: Options, out_dir: Path | None, named: bool, record: Record) -> Record:
    """Compress the image at record["path"]; module-level so worker processes can run it."""
    from picpipe import imaging

    path = record.get("path")
    if not isinstance(path, str) or not path:
        raise PicpipeError("no_path", "the record has no path to an image file", "give file paths or {\"path\": ...}")
    original = read_source(path)
    data, info = imaging.compress(original, path, options)
    result: dict[str, Any] = {**record, "source": record.get("source") or path}
    facts = imaging.facts(data)
    if data is not original:
        result["path"] = write_result(data, facts, path, out_dir, named)
    return {**result, **facts, "compress": info}


def write_result(data: bytes, facts: dict[str, Any], source: str, out_dir: Path | None, named: bool) -> str:
    """Write atomically (temp file + rename) and return the new path; never touches `source`
    unless out_dir is None (--in-place)."""
    from picpipe.imaging import FORMATS, output_name

    if out_dir is None:
        target = Path(source)
    elif named:
        name = output_name(source, facts["format"])
        target = out_dir / name
        if target.exists() and target.read_bytes() != data:  # another image of the same name
            stem, ext = os.path.splitext(name)
            target = out_dir / f"{stem}-{facts['sha256'][:8]}{ext}"
    else:
        target = out_dir / f"{facts['sha256']}{FORMATS[facts['format']][0]}"
        if target.exists():
            return str(target)
    with temp_copy(target.parent, data, ".pp-compress-") as temp:
        if out_dir is None:
            os.chmod(temp, os.stat(source).st_mode & 0o7777)
        os.replace(temp, target)
    return str(target)


def main() -> int:
    return CompressCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
