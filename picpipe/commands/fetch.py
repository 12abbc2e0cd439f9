"""pp-fetch: download each record's url into a local file, so that live images can be migrated."""

from __future__ import annotations

import argparse
import re
import sys
from typing import TYPE_CHECKING

from picpipe import console
from picpipe.cli import StreamCommand, positive_float, positive_int
from picpipe.errors import UsageError
from picpipe.stream import Record

if TYPE_CHECKING:
    from picpipe.fetch import Fetcher

_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmg]?)(?:i?b)?", re.I)


def size_bytes(text: str) -> int:
    """`50M`, `500k`, `2G`, `1048576`: powers of 1024, as curl's --max-filesize reads them."""
    match = _SIZE.fullmatch(text.strip())
    if match is None or float(match[1]) <= 0:
        raise argparse.ArgumentTypeError(f"not a size: {text!r} (write e.g. 50M, 500k or 1048576)")
    return int(float(match[1]) * 1024 ** " kmg".index(match[2].lower() or " "))


class FetchCommand(StreamCommand):
    prog = "pp-fetch"
    stage = "fetch"
    default_jobs = 8
    description = (
        "Download each record's url (http/https) into a file under --out and set path to it, with\n"
        "sha256, size, mime (read from the bytes) and fetched {url, status, at}; url stays as it\n"
        "was, so pp-upload records it as `replaces`. Files are named after the URL:\n"
        "fetched/img.example.com/2024/05/a.png. The same URL is downloaded once per run; a file\n"
        "already there with the same bytes is reused, other bytes go beside it (a-<sha256>.png).\n"
        "Records with a path and no url pass through. Failures are error records: http_404,\n"
        "http_403, timeout, dns, too_large, not_an_image ... (exit 1); the rest goes on."
    )
    examples = """\
  pp-scan docs/ | pp-fetch --out fetched/ | pp-upload --host new | pp-mark | pp-rewrite docs/
  pp-mark find --host smms | pp-fetch | pp-backup --to nutstore
  pp-scan posts/ | pp-fetch --referer https://weibo.com/ | jq -r 'select(.error) | .url + "  " + .error.type'
  echo '{"url": "https://img.example.com/a.png"}' | pp-fetch --max-size 10M | jq -r .path
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--out", default="fetched", metavar="DIR",
                            help="folder for the downloads, one subfolder per host (default ./fetched)")
        parser.add_argument("--referer", metavar="URL",
                            help="send this Referer header, for hosts that refuse hotlinking without one "
                            "(Weibo's sinaimg.cn: https://weibo.com/)")
        parser.add_argument("--max-size", type=size_bytes, default="50M", metavar="SIZE",
                            help="refuse larger downloads as too_large (default 50M)")
        parser.add_argument("--timeout", type=positive_float, default=30.0, metavar="S",
                            help="seconds to connect and between bytes of the answer (default 30)")
        parser.add_argument("--retries", type=int, choices=range(0, 11), default=2, metavar="N",
                            help="extra tries after a timeout, a dropped connection, 429 or 5xx (0-10, default 2)")
        parser.add_argument("--per-host", type=positive_int, default=4, metavar="N",
                            help="at most N downloads at once from one host (default 4)")

    def start(self, args: argparse.Namespace) -> None:
        from picpipe.fetch import Fetcher
        from picpipe.linkcheck import url_problem

        if args.referer is not None and url_problem(args.referer) is not None:
            raise UsageError(f"--referer {args.referer!r} is not an http(s) URL",
                             "give the page's address, e.g. --referer https://weibo.com/")
        try:
            self.fetcher: Fetcher = Fetcher(args.out, timeout=args.timeout, retries=args.retries,
                                            per_host=args.per_host, max_size=args.max_size, referer=args.referer)
        except OSError as exc:
            raise UsageError(f"--out {args.out}: cannot make this folder ({exc.strerror or exc})",
                             "choose a folder you may write to with --out") from None

    def process(self, record: Record) -> Record:
        return self.fetcher.fetch_record(record)

    def finish(self, args: argparse.Namespace) -> None:
        self.fetcher.close()
        counts = self.fetcher.counts
        if not args.quiet and (counts["written"] or counts["reused"]):
            console.say(f"{counts['written']} new files in {args.out}, {counts['reused']} already there")


def main() -> int:
    return FetchCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
