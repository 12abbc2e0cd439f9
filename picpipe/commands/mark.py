"""pp-mark: the ledger. A tee by default; `find`, `merge`, `import` and `check` below."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from picpipe import console
from picpipe.cli import (
    Command,
    StreamCommand,
    ledger_argument,
    positive_float,
    positive_int,
    require_input,
    split_subcommand,
)
from picpipe.errors import PicpipeError, UsageError
from picpipe.ledger import BadLine, Ledger, ledger_entries, matches, worth_keeping
from picpipe.stream import Item, Output, Record, field_problem, no_interrupt, read_items, say_error

if TYPE_CHECKING:
    from picpipe.linkcheck import Probe

SUBCOMMANDS = ("tee", "find", "merge", "import", "check", "index")


class LedgerCommand(Command):
    """A pp-mark subcommand: knows the ledger and reports its bad lines once each."""

    bad_lines = 0
    MAX_BAD_LINE_MESSAGES = 10

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        ledger_argument(parser)

    def open_ledger(self, args: argparse.Namespace) -> Ledger:
        path = args.ledger or self.config.ledger()
        ledger = Ledger(path)
        if ledger.path.is_dir():
            raise UsageError(f"the ledger {ledger.path} is a folder", "give a file with --ledger FILE")
        return ledger

    def bad_line(self, ledger: Ledger) -> BadLine:
        def report(number: int, problem: str) -> None:
            self.bad_lines += 1
            if self.bad_lines <= self.MAX_BAD_LINE_MESSAGES:
                console.warn(f"{ledger.path}:{number}: skipped a bad line: {problem} (the line is left as it is)")
        return report

    def report_bad_lines(self) -> None:
        if self.bad_lines > self.MAX_BAD_LINE_MESSAGES:
            console.warn(f"skipped {self.bad_lines} bad ledger lines in all")


class TeeCommand(StreamCommand, LedgerCommand):
    prog = "pp-mark"
    stage = "mark"
    description = (
        "Pass records through unchanged and append every record that has a url or backups to\n"
        "the ledger, so you can always find which bytes went to which URL and where the copies are.\n"
        "Subcommands: find, merge, import, check, index (pp-mark SUBCOMMAND --help)."
    )
    examples = """\
  ls *.png | pp-upload --host qiniu | pp-mark | pp-link --md
  pp-mark find --source 'screenshot*.png' | jq -r .url
  pp-mark import ~/.config/picgo/picgo.db && pp-mark check
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        StreamCommand.add_arguments(self, parser)
        ledger_argument(parser)

    def start(self, args: argparse.Namespace) -> None:
        self.ledger = self.open_ledger(args)
        try:
            self.ledger.open()
        except OSError as exc:
            raise UsageError(f"cannot open the ledger {self.ledger.path}: {exc.strerror}",
                             "check the folder's permissions, or choose another file with --ledger") from None
        self.ledger.catch_up_index()
        self.unrecorded = 0

    def write(self, item: Item, record: Record) -> None:
        # Ledger first, then stdout, and Ctrl-C held until both are done: a record that went
        # downstream is already recorded, and a recorded one goes downstream. A record the
        # ledger already holds (a re-run after a crash) passes through without a new line.
        with no_interrupt:
            if worth_keeping(record):
                try:
                    for entry in ledger_entries(record):
                        self.ledger.append_new(entry)
                except OSError as exc:
                    self.unrecorded += 1
                    if self.unrecorded == 1:
                        from picpipe.files import os_error

                        problem = os_error(exc)
                        console.error(f"{item.where}: could not append to the ledger: {problem.message}",
                                      f"{problem.hint}; records still pass through")
            super().write(item, record)

    def finish(self, args: argparse.Namespace) -> None:
        self.ledger.close()
        if self.unrecorded:
            assert self.out is not None
            self.out.errors += self.unrecorded
            console.error(f"{console.counted(self.unrecorded, 'record')} not recorded in the ledger")


class FindCommand(LedgerCommand):
    prog = "pp-mark find"
    description = "Emit the latest state of every image in the ledger that matches all the filters."
    examples = """\
  pp-mark find --url 'https://cdn.example.com/*' | pp-link --md
  pp-mark find --sha256 3fa2 | jq .backups
  pp-mark find --host github --since 2024-01-01 | pp-link --url
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--url", metavar="GLOB", help="URL, or a glob such as 'https://old.cdn/*'")
        parser.add_argument("--sha256", metavar="HEX", help="content hash or its first characters")
        parser.add_argument("--host", metavar="NAME", help="profile name the image was uploaded with")
        parser.add_argument("--since", metavar="TIME", help="uploaded at or after TIME (2024-01-31 or ISO 8601)")
        parser.add_argument("--source", metavar="GLOB",
                            help="original file: a path glob, or a file-name glob when it has no '/'")
        parser.add_argument("--deleted", action="store_true",
                            help="include images deleted from their host (tombstones with deleted_at)")

    def run(self, args: argparse.Namespace) -> int:
        if args.since:
            from picpipe.timeutil import parse_time

            try:
                parse_time(args.since)
            except ValueError:
                raise UsageError(f"--since {args.since!r} is not a date or time",
                                 "use 2024-01-31 or 2024-01-31T08:00:00Z") from None
        ledger = self.open_ledger(args)
        if not ledger.path.exists():
            raise UsageError(f"no ledger at {ledger.path} yet",
                             "records are added by `... | pp-mark`, or `pp-mark import` your PicGo history")
        out = Output(quiet=args.quiet)
        filters = {k: getattr(args, k) for k in ("url", "sha256", "host", "since", "source")}
        # A sha256 prefix or a whole URL is looked up in the ledger's index: only those images'
        # lines are read. Any other filter reads every image, one at a time.
        report = self.bad_line(ledger)
        if args.sha256:
            states: Iterable[Record] = ledger.states_by_sha256_prefix(args.sha256.lower(), report)
        elif args.url and not any(c in args.url for c in "*?["):
            states = ledger.states_by_url(args.url, report)
        else:
            states = ledger.iter_states(report)
        for state in states:
            if (args.deleted or not state.get("deleted_at")) and matches(state, **filters):
                out.record(state)
        self.report_bad_lines()
        return 0


class MergeCommand(LedgerCommand):
    prog = "pp-mark merge"
    description = (
        "Add to the ledger every line of the given ledgers that it does not hold yet, so ledgers\n"
        "from several machines combine without loss. Running it again adds nothing."
    )
    examples = """\
  pp-mark merge laptop-ledger.jsonl
  pp-mark --ledger all.jsonl merge a.jsonl b.jsonl
  ssh nas cat .local/share/picpipe/ledger.jsonl | pp-mark merge -
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("files", nargs="+", metavar="FILE", help="ledgers to merge in (- is stdin)")

    def run(self, args: argparse.Namespace) -> int:
        ledger = self.open_ledger(args)
        sources = [Ledger(name) if name != "-" else stdin_ledger() for name in args.files]
        for name, source in zip(args.files, sources):  # all of them before any line is added
            if name != "-" and not source.path.exists() or source.path.is_dir():
                raise UsageError(f"{name}: no such ledger file")

        def entries() -> Iterator[Record]:
            """The lines to merge, streamed: only those of each batch are held at once."""
            for source in sources:
                report = self.bad_line(source)
                for number, entry in source.lines(report):
                    problem = field_problem(entry)
                    if problem is None:
                        yield entry
                    else:  # a wrong-typed field does not enter this ledger from another one either
                        report(number, f"{problem[0]} is not {problem[1]}")

        added, present = ledger.add_new(entries(), self.bad_line(ledger))
        ledger.close()
        self.report_bad_lines()
        if not args.quiet:
            console.say(f"{ledger.path}: {added} lines added, {present} already there")
        return 0


class ImportCommand(LedgerCommand):
    prog = "pp-mark import"
    description = (
        "Bring a PicGo / PicList gallery (picgo.db, piclist.db, or the older data.json), a\n"
        "picgo-plugin-autobackup mark.json or PicGo-Core's picgo.log into the ledger, and print\n"
        "the imported records (a gallery item's file name becomes its source).\n"
        "Uploader secrets stored in those files are dropped. Importing twice adds nothing."
    )
    examples = """\
  pp-mark import ~/.config/picgo/picgo.db
  pp-mark import "$APPDATA/picgo/picgo.db" Autobackup/mark.json | pp-link --url
  pp-mark import --dry-run ~/Library/Application\\ Support/picgo/picgo.db | jq -r .url
  pp-mark import ~/.picgo/picgo.log        # PicGo-Core's CLI keeps no gallery, only this log
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("files", nargs="+", metavar="FILE",
                            help="picgo.db, piclist.db, data.json, mark.json or picgo.log")
        parser.add_argument("-n", "--dry-run", action="store_true", help="print the records, do not touch the ledger")

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.importers import HistoryReader

        ledger = self.open_ledger(args)
        out = Output(quiet=args.quiet)
        records: list[Record] = []
        for name in args.files:
            try:
                reader = HistoryReader(name)
                found = list(reader)
            except PicpipeError as exc:
                say_error(name, {"error": exc.to_dict("import")})
                out.errors += 1
                continue
            for reason in reader.skipped:
                console.warn(f"{name}: skipped {reason}")
            if not args.quiet:
                console.say(f"{name}: {len(found)} records ({reader.format}), {len(reader.skipped)} skipped")
            records.extend(found)
        if not args.dry_run and records:
            added, present = ledger.add_new(records, self.bad_line(ledger))
            ledger.close()
            if not args.quiet:
                console.say(f"{ledger.path}: {added} lines added, {present} already there")
        for record in records:
            out.record(record)
        self.report_bad_lines()
        return out.status


class CheckCommand(LedgerCommand):
    prog = "pp-mark check"
    default_jobs = 16
    out: Output | None = None
    results: Iterable[tuple[Item, Probe | None]] = ()
    description = (
        "Probe the URL of every image in the ledger (or of records on stdin with -) and emit the\n"
        "dead ones as error records with the reason: http_404, http_500, dns, tls, timeout,\n"
        "connection_refused ... HEAD first, GET when HEAD is refused. Exit 1 when any is dead."
    )
    examples = """\
  pp-mark check | jq -r '.url + "  " + .error.type'
  pp-mark find --host smms | pp-mark check - --timeout 5
  pp-mark check --all | jq -c '{url, status: .check.status}'
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("source", nargs="?", choices=["-"], help="- reads records from stdin instead of the ledger")
        parser.add_argument("--per-host", type=positive_int, default=4, metavar="N",
                            help="at most N requests at once to one host (default 4)")
        parser.add_argument("--timeout", type=positive_float, default=10.0, metavar="S",
                            help="seconds to connect and to wait for an answer (default 10)")
        parser.add_argument("--retries", type=int, default=1, metavar="N",
                            help="extra tries after a timeout or a connection error (default 1)")
        parser.add_argument("--all", action="store_true", help="emit the live ones too, with a `check` field")

    def items(self, args: argparse.Namespace) -> Iterator[Item]:
        """Records on stdin, or the live images of the ledger: not deleted, and not replaced by a
        later upload (a repaired dead link is not dead news twice)."""
        if args.source == "-":
            require_input([])
            return read_items(["-"])
        ledger = self.open_ledger(args)
        if not ledger.path.exists():
            raise UsageError(f"no ledger at {ledger.path} yet", "check links of records on stdin with: pp-mark check -")
        replaced = ledger.replaced(self.bad_line(ledger))
        states = ledger.iter_states()  # its bad lines were reported by the first pass
        return (Item(f"ledger entry {n}", s) for n, s in enumerate(states, 1)
                if not s.get("deleted_at") and s.get("url") not in replaced)

    def run(self, args: argparse.Namespace) -> int:
        from picpipe.linkcheck import check_urls

        self.out = Output(quiet=args.quiet, noun="URLs")
        self.all, self.quiet = args.all, args.quiet
        self.counts = {"live": 0, "dead": 0, "skipped": 0}

        def url_of(item: Item) -> str | None:
            url = item.record.get("url")
            return url if "error" not in item.record and isinstance(url, str) and url else None

        self.results = check_urls(self.items(args), url_of, jobs=args.jobs, per_host=args.per_host,
                                  timeout=args.timeout, retries=max(0, args.retries))
        for item, probe in self.results:
            self.emit(item, probe)
        self.out.progress.done()
        self.report_bad_lines()
        if not args.quiet:
            skipped = f", {self.counts['skipped']} without a url" if self.counts["skipped"] else ""
            console.say(f"checked {self.counts['live'] + self.counts['dead']} URLs: {self.counts['live']} live, "
                        f"{self.counts['dead']} dead{skipped}")
        return self.out.status

    def emit(self, item: Item, probe: Probe | None) -> None:
        """Dead ones out as error records; live ones and records without a URL only with --all."""
        assert self.out is not None
        record = item.record
        if probe is None:
            if item.bad_input and not self.quiet:
                say_error(item.where, record)
            if "error" not in record:
                self.counts["skipped"] += 1
            if "error" in record or self.all:  # upstream errors always pass through
                self.out.record(record)
            else:
                self.out.progress.tick()
            return
        result = {**record, "check": {"status": probe.status, "method": probe.method, "ms": probe.elapsed_ms}}
        if probe.error is None:
            self.counts["live"] += 1
            if self.all:
                self.out.record(result)
            else:
                self.out.progress.tick()
            return
        self.counts["dead"] += 1
        result["error"] = probe.error.to_dict("check")
        if not self.quiet:
            say_error(item.where, result)
        self.out.record(result)

    def on_interrupt(self) -> None:
        for item, probe in getattr(self.results, "pending", list)():
            self.emit(item, probe)


class IndexCommand(LedgerCommand):
    prog = "pp-mark index"
    description = (
        "Bring the ledger's index up to date now (every command does so by itself, reading only\n"
        "the lines added since), or --rebuild it from the whole ledger after you edited the ledger\n"
        "in place by hand. The index is a cache under $XDG_CACHE_HOME/picpipe/ledger-index/:\n"
        "deleting it loses nothing, the next command builds it again."
    )
    examples = """\
  pp-mark index                 # say where the index is and how much of the ledger it covers
  pp-mark index --rebuild       # after editing the ledger by hand
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--rebuild", action="store_true", help="read the whole ledger again")

    def run(self, args: argparse.Namespace) -> int:
        import time

        ledger = self.open_ledger(args)
        if not ledger.path.exists():
            raise UsageError(f"no ledger at {ledger.path} yet", "records are added by `... | pp-mark`")
        started = time.monotonic()
        with ledger:
            if args.rebuild:
                file = ledger.rebuild_index()
            else:
                ledger.catch_up_index()
                file = ledger.index_file()
        if file is None:
            console.error(f"{ledger.path} has no index", "the ledger is no regular file, or the cache folder "
                          "cannot be written (see the warning above): lookups read the whole ledger")
            return 1
        if not args.quiet:
            console.say(f"{ledger.path} ({ledger.path.stat().st_size >> 20} MB) is indexed in {file} "
                        f"({file.stat().st_size >> 20} MB), in {time.monotonic() - started:.1f} s")
        return 0


COMMAND_CLASSES: dict[str, type[Command]] = {
    "tee": TeeCommand, "find": FindCommand, "merge": MergeCommand, "import": ImportCommand, "check": CheckCommand,
    "index": IndexCommand,
}


#: The file that is stdin: read as it streams in (POSIX); where there is none (Windows), a copy.
STDIN = "/dev/stdin"


def stdin_ledger() -> Ledger:
    """The ledger piped in (`pp-mark merge -`). Without a /dev/stdin (Windows), stdin is copied
    into a temp file first, removed when the command ends."""
    import os

    if os.path.exists(STDIN):
        return Ledger(STDIN)
    import atexit
    import shutil
    import tempfile

    with tempfile.NamedTemporaryFile("wb", prefix="pp-mark-", suffix=".jsonl", delete=False) as spool:
        atexit.register(os.unlink, spool.name)
        shutil.copyfileobj(sys.stdin.buffer, spool)
    return Ledger(spool.name)


def main() -> int:
    name, argv = split_subcommand(sys.argv[1:], SUBCOMMANDS, takes_value={"--ledger", "-j", "--jobs"})
    return COMMAND_CLASSES[name or "tee"]().main(argv)


if __name__ == "__main__":
    sys.exit(main())
