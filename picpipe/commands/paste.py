"""pp-paste: the clipboard's image as a file and its record, the first stage of PicGo's hotkey.

The file goes to --out, else $PICPIPE_PASTE_OUT, else $XDG_DATA_HOME/picpipe/pasted
(~/.local/share/picpipe/pasted), beside the ledger. Not a temp folder as in PicGo: these bytes
are the only original there is (the clipboard forgets), pp-backup keeps them, the ledger names
them, and a record must point to a file that outlives the pipe. Not the cache either (cleaners
empty it), nor the current folder (a hotkey or an editor starts pp-paste wherever it was
started, and would leave pasted/ folders all over).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path

from picpipe.cli import Command, fail_record
from picpipe.errors import PicpipeError, UsageError
from picpipe.stream import Output, Record, say_error

DEFAULT_NAME = "paste-{sha256:12}{ext}"
_EXT = {"jpeg": ".jpg"}


class PasteCommand(Command):
    prog = "pp-paste"
    description = (
        "Write the clipboard's image to a file and print its record (path, sha256, size, format,\n"
        "mime, width, height, pasted {tool, type, at}); `source` is that file, the original.\n"
        "A copied image file (a file manager's Copy) is not copied again: its record points to it,\n"
        "one record per file. Tools: wl-paste (Wayland), xclip (X11), osascript (macOS), Windows\n"
        "PowerShell. Only images that may be published pass (PNG, JPEG, GIF, WebP, AVIF, BMP, ICO,\n"
        "SVG without scripts): text or a broken image on the clipboard is an error record (exit 1);\n"
        "no clipboard tool is exit 2. The default name holds the content's hash, so pasting the\n"
        "same image twice gives the same file; a name that holds other bytes is never overwritten\n"
        "(the new file goes beside it, NAME-<sha256:12>.png)."
    )
    examples = """\
  pp-paste | pp-compress | pp-upload --host qiniu | pp-mark | pp-link --md
  pp-paste -q | pp-upload --host github | pp-link --url | wl-copy     # pbcopy on macOS
  pp-paste --out ~/Pictures/pasted --name '{year}{month}{day}-{sha256:8}{ext}' | jq -r .path
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--out", metavar="DIR",
                            help="folder for pasted images (default $PICPIPE_PASTE_OUT, else "
                                 "~/.local/share/picpipe/pasted: under $XDG_DATA_HOME, beside the ledger)")
        parser.add_argument("--name", default=DEFAULT_NAME, metavar="TEMPLATE",
                            help=f"file name under DIR (default {DEFAULT_NAME}): the placeholders of pp-upload "
                                 "--path ({ext} {sha256:N} {year} {month} {day} {uuid}, PicList's {Y} {m} {str-N} "
                                 "...); / makes subfolders")

    def run(self, args: argparse.Namespace) -> int:
        from picpipe import clipboard
        from picpipe.config import xdg_home
        from picpipe.keys import check_template
        from picpipe.timeutil import now_iso

        out = Output(quiet=args.quiet)
        check_template(args.name)
        folder = Path(os.path.expanduser(args.out or self.config.environ.get("PICPIPE_PASTE_OUT")
                                         or xdg_home("XDG_DATA_HOME", os.path.join(".local", "share"),
                                                     self.config.environ) / "pasted"))
        try:
            clip = clipboard.read()
        except PicpipeError as exc:
            if exc.type == "no_clipboard_tool":  # nothing can be pasted on this machine as it is
                raise UsageError(exc.message, exc.hint) from None
            return self.emit(out, "the clipboard", fail_record({}, "paste", exc))
        pasted = {"tool": clip.tool, "type": clip.type, "at": now_iso()}
        if clip.data is not None:
            record: Record = {"pasted": pasted}
            try:
                record = {**self.store(clip.data, clipboard.describe(clip), folder, args.name), **record}
            except (PicpipeError, OSError) as exc:
                record = fail_record(record, "paste", exc)
            return self.emit(out, "the clipboard", record)
        for path in clip.files:
            record = {"path": path, "source": path, "pasted": pasted}
            try:
                record = {**record, **self.facts(path)}
            except (PicpipeError, OSError) as exc:
                record = fail_record(record, "paste", exc)
            self.emit(out, path, record)
        return out.status

    def emit(self, out: Output, where: str, record: Record) -> int:
        if "error" in record:
            say_error(where, record)
        out.record(record)
        return out.status

    def facts(self, path: str) -> Record:
        """A copied file's facts; it must be an image that may be published, as a pasted one."""
        from picpipe.clipboard import check_image
        from picpipe.files import read_source
        from picpipe.publish import MAX_BYTES

        data = read_source(path, MAX_BYTES)
        return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), **check_image(data, path)}

    def store(self, data: bytes, name: str, folder: Path, template: str) -> Record:
        """Check the bytes, then write them under `folder` by the template, never over other bytes."""
        from picpipe.clipboard import check_image
        from picpipe.files import names_beside, write_first_free
        from picpipe.keys import make_key

        facts = check_image(data, name)
        sha256 = hashlib.sha256(data).hexdigest()
        ext = _EXT.get(facts["format"], "." + facts["format"])
        relative = make_key(template, "clipboard" + ext, data, sha256, source=str(folder / ("clipboard" + ext)))
        placed = write_first_free(data, _folders_made(folder, names_beside(relative, sha256)), ".pp-paste-")
        if placed is None:
            raise PicpipeError("name_taken", f"{folder / relative} and the names beside it hold other files",
                               "move those files away, or choose another --out or --name")
        path = os.path.abspath(placed[0])
        return {"path": path, "source": path, "sha256": sha256, "size": len(data), **facts}


def _folders_made(folder: Path, names: list[str]) -> Iterator[Path]:
    """The paths of `names` under `folder`, each folder on the way made: a usage error when it cannot be."""
    for name in names:
        target = folder / name
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UsageError(f"--out {folder}: cannot make the folder {target.parent} ({exc.strerror or exc})",
                             "choose a folder you may write to with --out") from None
        yield target


def main() -> int:
    return PasteCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
