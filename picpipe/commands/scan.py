"""pp-scan: one record per image reference in Markdown and HTML documents."""

from __future__ import annotations

import argparse
import fnmatch
import os
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
        "document's folder) and `ref` (doc, line, text, target, kind). Reads (kind in brackets)\n"
        "![alt](url \"title\") and ![alt](<a b.png>) [inline], [id]: url definitions [reference],\n"
        "<img src> [html], srcset [srcset], data-src / data-original [data-src, data-original] of\n"
        "<img> and <source>, Obsidian ![[x.png|300]] [obsidian], front-matter cover, thumbnail,\n"
        "banner_img, index_img, image(s), og_image, featured_image [front-matter], Hugo\n"
        "{{< figure src=... >}} [hugo], Hexo {% img /x.png %} [hexo] and {% asset_img x.png %}\n"
        "[asset_img], Jekyll {% include figure.html image=\"x.png\" %} [jekyll]. Never code blocks,\n"
        "inline code, HTML comments, <pre>/<code>, {% raw %}/{% codeblock %}/{% highlight %}, nor\n"
        "Markdown inside an HTML block (CommonMark: a renderer prints it as text). Walks folders for\n"
        f"{', '.join('*' + s for s in DOCUMENT_SUFFIXES)} (hidden folders and node_modules skipped).\n"
        "\n"
        "A local image must lie (symlinks resolved) inside the folder given (a file's own folder)\n"
        "or a --root: ../../etc/passwd, /home/u/x.png, file:// URLs and links that lead out become\n"
        "outside_root error records, never paths. A symlinked document or folder is followed when\n"
        "its real path stays inside the folder given; one that leaves it (symlink_outside) or loops\n"
        "(symlink_loop) is not read: an error record, and the other documents are still read.\n"
        "A target that leads out and does not exist is a not_found record (a broken link).\n"
        "\n"
        "Static sites (Hugo, Jekyll, Hexo) write /images/x.png for a file under the site's static\n"
        "folder: --site-root DIR reads a target that starts with / against DIR (a root too)."
    )
    examples = """\
  pp-scan posts/ | jq -r .url | sort -u
  pp-scan posts/ --url 'https://old.example.com/*' | pp-fetch | pp-upload --host new | pp-mark | pp-rewrite posts/
  pp-scan --local notes/ | pp-upload --host github | pp-mark | pp-rewrite notes/
  pp-scan --local --root ~/Pictures notes/ | pp-upload --host github | pp-mark | pp-rewrite notes/
  pp-scan --local --site-root static content | pp-upload --host github | pp-mark | pp-rewrite content
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", metavar="DOC_OR_FOLDER", help="Markdown or HTML files, or folders")
        which = parser.add_mutually_exclusive_group()
        which.add_argument("--remote", action="store_true", help="only images on the web (http, https)")
        which.add_argument("--local", action="store_true", help="only local image files")
        parser.add_argument("--url", metavar="GLOB", help="only remote images whose URL matches GLOB")
        parser.add_argument("--root", action="append", default=[], metavar="DIR",
                            help="also accept local images inside DIR (repeatable); by default only those "
                                 "inside the folder given")
        parser.add_argument("--site-root", metavar="DIR",
                            help="read a target that starts with / (/images/x.png) against DIR, the site's "
                                 "static folder (Hugo: static, Hexo: source, Jekyll: the site's folder), "
                                 "not the filesystem's root; DIR also counts as a --root")

    def run(self, args: argparse.Namespace) -> int:
        if not args.paths:
            raise UsageError("no documents: give Markdown or HTML files or folders",
                             "for example: pp-scan posts/ | jq -r .url")
        roots = [self.root(folder) for folder in args.root]
        site_root = None if args.site_root is None else self.root(args.site_root, "--site-root")
        out = Output(quiet=args.quiet, noun="references")
        documents = 0
        counts = {"remote": 0, "local": 0, "refused": 0, "missing": 0}
        for doc, records, read in scan(args.paths, roots, site_root):
            documents += read
            for record in records:
                if not self.wanted(record, args):
                    continue
                if "error" in record:
                    say_error(doc, record)
                    if "target" in record["ref"]:  # a reference, not a document that was not read
                        counts["missing" if record["error"]["type"] == "not_found" else "refused"] += 1
                else:
                    counts["remote" if "url" in record else "local"] += 1
                out.record(record)
        out.progress.done()
        if not args.quiet:
            parts = [f"{n} {name}" for name, n in counts.items() if n or name in ("remote", "local")]
            console.say(f"{counted(sum(counts.values()), 'image reference')} ({', '.join(parts)}) "
                        f"in {counted(documents, 'document')}")
        return out.status

    @staticmethod
    def root(folder: str, option: str = "--root") -> str:
        if not os.path.isdir(folder):
            raise UsageError(f"{option} {folder}: no such folder", "give a folder that holds the documents' images")
        return os.path.realpath(folder)

    @staticmethod
    def wanted(record: Record, args: argparse.Namespace) -> bool:
        """Whether the filters keep a record; a document that could not be read always counts."""
        ref = record.get("ref")
        if "error" in record and not (isinstance(ref, dict) and "target" in ref):
            return True
        url = record.get("url")
        if args.url is not None:
            return url is not None and (url == args.url or fnmatch.fnmatchcase(url, args.url))
        return not (args.remote and url is None or args.local and url is not None)


def main() -> int:
    return ScanCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
