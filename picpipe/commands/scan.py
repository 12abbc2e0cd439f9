"""pp-scan: one record per image reference in Markdown and HTML documents."""

from __future__ import annotations

import argparse
import fnmatch
import sys

from picpipe import console
from picpipe.cli import Command
from picpipe.console import counted
from picpipe.docs import DOCUMENT_SUFFIXES, scan
from picpipe.errors import UsageError
from picpipe.stream import Output, Record, say_error


class ScanCommand(Command):
    prog = "pp-scan"
    description = (
        "Find the images of Markdown and HTML documents: one record per image reference, in\n"
        "document order, with `url` (a remote image) or `path` (a local one, resolved against the\n"
        "document's folder) and `ref` (doc, line, text, target, kind). Reads ![alt](url \"title\"),\n"
        "![alt](<a b.png>), ![alt][id] with its [id]: url definition, and <img src>; never code\n"
        "blocks, inline code, HTML comments or <pre>/<code>. Folders are walked for\n"
        f"{', '.join('*' + s for s in DOCUMENT_SUFFIXES)} (hidden folders and node_modules skipped)."
    )
    examples = """\
  pp-scan posts/ | jq -r .url | sort -u
  pp-scan posts/ --url 'https://old.example.com/*' | pp-fetch | pp-upload --host new | pp-mark | pp-rewrite posts/
  pp-scan --local notes/ | pp-upload --host github | pp-mark | pp-rewrite notes/
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", metavar="DOC_OR_FOLDER", help="Markdown or HTML files, or folders")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--remote", action="store_true", help="only images on the web (http, https)")
        which.add_argument("--local", action="store_true", help="only local image files")
        parser.add_argument("--url", metavar="GLOB", help="only remote images whose URL matches GLOB")

    def run(self, args: argparse.Namespace) -> int:
        if not args.paths:
            raise UsageError("no documents: give Markdown or HTML files or folders",
                             "for example: pp-scan posts/ | jq -r .url")
        out = Output(quiet=args.quiet, noun="references")
        documents, remote, local = 0, 0, 0
        for doc, records in scan(args.paths):
            documents += not any("error" in record for record in records)
            for record in records:
                if "error" in record:
                    say_error(doc, record)
                elif not self.wanted(record, args):
                    continue
                elif "url" in record:
                    remote += 1
                else:
                    local += 1
                out.record(record)
        out.progress.done()
        if not args.quiet:
            console.say(f"{counted(remote + local, 'image reference')} ({remote} remote, {local} local) "
                        f"in {counted(documents, 'document')}")
        return out.status

    @staticmethod
    def wanted(record: Record, args: argparse.Namespace) -> bool:
        url = record.get("url")
        if args.url is not None:
            return url is not None and (url == args.url or fnmatch.fnmatchcase(url, args.url))
        return not (args.remote and url is None or args.local and url is not None)


def main() -> int:
    return ScanCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
