"""pp-typora: Typora's "Custom Command" uploader, running the configured pipeline."""

from __future__ import annotations

import argparse
import os
import sys

from picpipe import console
from picpipe.cli import EXIT_OK, EXIT_RECORD_ERRORS, Command, ledger_argument


class TyporaCommand(Command):
    prog = "pp-typora"
    description = (
        "Upload the images Typora passes as arguments through the configured pipeline\n"
        "([pp-compress |] pp-upload --host H | pp-mark [| pp-backup --to B], from [pipeline] in the\n"
        "config) and print, last on stdout, one URL per image in argument order: what Typora's\n"
        "Custom Command reads. Messages go to stderr. If any image fails, nothing is printed on\n"
        "stdout and the exit status is 1, so Typora reports a failure instead of inserting a\n"
        "shifted list; the images that did go through are uploaded and in the ledger, and the\n"
        "next try finds them there instead of uploading them again. Remote http(s) images\n"
        "(Typora's \"apply to online images\") are fetched and re-uploaded to the host. Only whole\n"
        "images are published (PNG, JPEG, GIF, WebP, AVIF, BMP, ICO, inert SVG): a text file, a\n"
        "truncated image, a decompression bomb or an SVG with a script is reported, not uploaded.\n"
        "Typora: Preferences > Image > Image Uploader: Custom Command, command: pp-typora"
    )
    examples = """\
  pp-typora ~/Pictures/shot.png "/Users/me/blog/my image.png"
  pp-typora --host github --backup nutstore shot.png
  pp-mark find --source 'shot.png' | pp-link --url      # what Typora got, from the ledger
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="+", metavar="PATH", help="image files (or http(s) URLs) from Typora")
        parser.add_argument("--host", metavar="PROFILE", help="upload here (default: [pipeline] host)")
        parser.add_argument("--backup", action="append", metavar="PROFILE",
                            help="back up to this profile (repeatable; default: [pipeline] backup)")
        parser.add_argument("--compress", action=argparse.BooleanOptionalAction, default=None,
                            help="run pp-compress first (default: [pipeline] compress, else no)")
        parser.add_argument("--path", metavar="TEMPLATE", help="key template (default: [pipeline] path)")
        ledger_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.pipeline import Pipeline, settings
        from picpipe.stream import Output

        out = Output(quiet=True)  # first: with stdout closed, Typora would get no URL for what is uploaded
        flags = {"host": args.host, "backup": args.backup, "compress": args.compress, "path": args.path}
        chosen = settings(self.config, flags, args.ledger)
        items = [p if p.startswith(("http://", "https://")) else os.path.abspath(p) for p in args.paths]
        outcomes = Pipeline(chosen).run(items)
        problems = [p for p in (o.problem() for o in outcomes) if p is not None]
        if problems:
            for message, hint in problems:
                console.error(message, hint)
            console.say(f"{len(problems)} of {console.counted(len(outcomes), 'image')} failed: no URLs printed")
            return EXIT_RECORD_ERRORS
        if not args.quiet:
            console.say(f"{console.counted(len(outcomes), 'image')} uploaded to {', '.join(chosen.hosts)}")
        for outcome in outcomes:
            out.text(str(outcome.url))
        return EXIT_OK


def main() -> int:
    return TyporaCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
