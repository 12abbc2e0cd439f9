"""pp-backup: copy originals to a local folder or WebDAV, sync the ledger there, restore from it.

The work itself is picpipe.backup's; this module is the command line around it.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

from picpipe import console
from picpipe.cli import Command, StreamCommand, ledger_argument, split_subcommand
from picpipe.errors import PicpipeError, UsageError
from picpipe.stream import Record

if TYPE_CHECKING:
    from picpipe.backup import Target, TargetFinder
    from picpipe.ledger import Ledger

SUBCOMMANDS = ("copy", "ledger", "restore")


def target_argument(parser: argparse.ArgumentParser, flag: str, required: bool = True, help: str = "") -> None:
    parser.add_argument(flag, required=required, metavar="PROFILE", dest="target",
                        help=help or "a profile of type local (dir) or webdav (url, user, password)")


class CopyCommand(StreamCommand):
    prog = "pp-backup"
    stage = "backup"
    default_jobs = 4
    description = (
        "Copy each image's original (source, else path) to the backup target --to and add a\n"
        "backups entry {target, location, key, sha256, size, at} to its record once the target\n"
        "has acknowledged the whole file (--verify: read back and compare sha256). The copy goes\n"
        "under the upload key, else {year}/{month}/{sha256}{ext}; a different file there is never\n"
        "replaced. Copies are appended to the ledger as they are made, and a copy the record or the\n"
        "ledger already shows is not sent again. Only whole images are copied (the rule of pp-upload,\n"
        "and TIFF and HEIC originals: an empty, truncated or text file is an error record);\n"
        "--any-file copies any file.\n"
        "Subcommands: ledger, restore (pp-backup SUB --help)."
    )
    examples = """\
  ls *.png | pp-compress | pp-upload --host qiniu | pp-mark | pp-backup --to nutstore | pp-link --md
  pp-backup --to nas photos/*.jpg | jq -r '.backups[-1].location'
  pp-mark find --host smms | pp-backup --to nutstore --verify
  pp-backup ledger --to nutstore          # the upload history follows you to the next machine
  pp-mark check | pp-backup restore --out restored/ | pp-upload --host github | pp-mark
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        target_argument(parser, "--to")
        parser.add_argument("--path", metavar="TEMPLATE",
                            help="key template for the copies (default: the upload key, else {year}/{month}/"
                            "{sha256}{ext}); placeholders as in pp-upload --path")
        parser.add_argument("--verify", action="store_true",
                            help="read every new copy back and compare its sha256 (one more request per image)")
        ledger_argument(parser)
        parser.add_argument("--no-ledger", dest="record", action="store_false",
                            help="do not append new copies to the ledger (then pipe into pp-mark)")
        parser.add_argument("--any-file", action="store_true",
                            help="copy any file, not only whole images of the types pp-upload publishes")

    def start(self, args: argparse.Namespace) -> None:
        from picpipe.backup import open_target
        from picpipe.keys import check_template
        from picpipe.ledger import Ledger

        if args.path:
            check_template(args.path)
        self.template, self.verify, self.any_file = args.path, args.verify, args.any_file
        self.target: Target = open_target(self.config.profile(args.target))
        ledger = Ledger(args.ledger or self.config.ledger())
        #: sha256 → a copy inside this target: this run's, and the ledger's as looked up per image.
        self.known: dict[str, dict[str, Any]] = {}
        self.lookup = ledger
        self.ledger = ledger if args.record else None
        self.counts = {"copied": 0, "on_target": 0, "known": 0}
        self.lock = threading.Lock()
        self.blocked: PicpipeError | None = None

    def copies_in(self, ledger: Ledger, sha256s: set[str]) -> dict[str, dict[str, Any]]:
        """sha256 → a copy inside this target that the ledger already holds, for these copies'
        hashes (asked of the ledger's index)."""
        known: dict[str, dict[str, Any]] = {}
        for state in ledger.states_with_copies(sha256s):
            backups = state.get("backups")
            for entry in backups if isinstance(backups, list) else ():
                if isinstance(entry, dict) and entry.get("target") == self.target.name and entry.get("sha256") \
                        and self.target.key_of(str(entry.get("location"))) is not None:
                    known[str(entry["sha256"])] = entry
        return {sha: entry for sha, entry in known.items() if sha in sha256s}

    def process(self, record: Record) -> Record:
        """Copy, then record the copy in the ledger at once, here in the worker: a copy that was
        made is recorded even if the run is stopped before its turn on stdout comes."""
        from picpipe.backup import back_up, copies_of
        from picpipe.ledger import ledger_entries, not_recorded
        from picpipe.publish import check, named

        copies = copies_of(record)
        if not self.any_file:  # a backup target is often a shared or public folder: the rule of pp-upload
            for file, data, _ in copies:
                check(data, named(file, record), originals=True)
        with self.lock:
            asked = {hashlib.sha256(data).hexdigest() for _, data, _ in copies} - set(self.known)
        if asked:
            found = self.copies_in(self.lookup, asked)
            with self.lock:
                for sha, entry in found.items():
                    self.known.setdefault(sha, entry)
        try:
            result, how = back_up(record, self.target, self.known, self.template, self.verify, copies)
        except PicpipeError as exc:
            if exc.type in ("rate_limited", "circuit_open"):  # the run's end says it once more, last
                self.blocked = exc
            raise
        with self.lock:
            self.counts[how] += 1
            if how != "known":
                for entry in result["backups"]:
                    if isinstance(entry, dict) and entry.get("target") == self.target.name and entry.get("sha256"):
                        self.known.setdefault(entry["sha256"], entry)
                if self.ledger is not None:
                    try:
                        self.ledger.append(ledger_entries(result))
                    except OSError as exc:  # the copy exists, and the record says so: only the ledger missed it
                        copy = result["backups"][-1].get("location") if result.get("backups") else "?"
                        return {**result, "error": not_recorded(exc, f"copied to {copy}").to_dict(self.stage)}
        return result

    def finish(self, args: argparse.Namespace) -> None:
        self.target.close()
        if self.ledger is not None:
            self.ledger.close()
        if not args.quiet:
            counts = self.counts
            console.say(f"{self.target.name}: {counts['copied']} copied, {counts['on_target'] + counts['known']} "
                        f"already there ({counts['known']} known from the records and the ledger, no request)")
        if self.blocked is not None:
            console.error(self.blocked.message, self.blocked.hint)


class LedgerSyncCommand(Command):
    prog = "pp-backup ledger"
    auto_sync = False  # it is the sync: what its pull adds must not start another one
    description = (
        "Keep the ledger on a backup target, so the upload history survives a reinstall and\n"
        "follows you across machines. --to sends the lines added since the last sync as one new\n"
        "file, picpipe-ledger/<machine>/<n>.jsonl (a temp name, then a rename: a reader never sees\n"
        "half of one), then merges the other machines' files not merged yet; --from only merges.\n"
        "Nothing already on the target is sent again, and a file there is never rewritten. The\n"
        "picpipe-ledger.jsonl of earlier versions is merged too. Entries are only ever added.\n"
        "With [ledger] sync = \"PROFILE\" in the configuration, a run that adds lines to the ledger\n"
        "starts --to PROFILE --auto in the background."
    )
    examples = """\
  pp-backup ledger --to nutstore
  pp-backup ledger --from nutstore && pp-mark find --source '*.png' | head
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        way = parser.add_mutually_exclusive_group(required=True)
        way.add_argument("--to", metavar="PROFILE",
                         help="send the new lines there, then merge the other machines' new lines here")
        way.add_argument("--from", dest="source", metavar="PROFILE",
                         help="merge the lines on the target that are not merged yet into the local ledger")
        parser.add_argument("--auto", action="store_true",
                            help="as the automatic sync runs: one at a time per ledger, at least [ledger] "
                            "sync_every seconds apart, again while new lines come; failures go to its log and "
                            "the next command says so")
        ledger_argument(parser)

    def run(self, args: argparse.Namespace) -> int:
        from picpipe import ledgersync
        from picpipe.backup import open_target
        from picpipe.ledger import default_path

        ledger = Path(args.ledger or self.config.ledger() or default_path())
        if args.auto:
            if not args.to:
                raise UsageError("--auto goes with --to", "pp-backup ledger --to PROFILE --auto")
            _, every = self.config.ledger_sync()
            return ledgersync.auto_sync(self.config, args.to, ledger, every)
        target = open_target(self.config.profile(args.to or args.source))
        try:
            report = ledgersync.sync(target, ledger, push=bool(args.to), legacy=not args.to)
        except PicpipeError as exc:
            console.error(exc.message, exc.hint)
            return 1
        finally:
            target.close()
        if not args.quiet:
            console.say(report.summary(target.name, push=bool(args.to)))
        return 0


class RestoreCommand(StreamCommand):
    prog = "pp-backup restore"
    stage = "restore"
    default_jobs = 4
    repairs = ("check",)
    description = (
        "Download a backup copy of each record (records from pp-mark find or the dead links of\n"
        "pp-mark check) into --out, check its sha256, and emit the record with path set to the\n"
        "restored file and restored_from saying which copy: ready for pp-upload to a new host."
    )
    examples = """\
  pp-mark check | pp-backup restore --out restored/ | pp-upload --host github | pp-mark
  pp-mark find --url 'https://sm.ms/*' | pp-backup restore --from nutstore | jq -r .path
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        target_argument(parser, "--from", required=False,
                        help="restore from this target only (default: each copy's own target)")
        parser.add_argument("--out", metavar="DIR", default="restored",
                            help="folder for the restored files (default ./restored)")

    def start(self, args: argparse.Namespace) -> None:
        from picpipe.backup import TargetFinder

        self.only: str | None = args.target
        if self.only is not None:
            self.config.profile(self.only)  # a misspelt name is a usage error before any work
        self.finder: TargetFinder = TargetFinder(self.config.profile)
        self.out_dir = Path(args.out)
        if self.out_dir.exists() and not self.out_dir.is_dir():
            raise UsageError(f"--out {args.out} is not a folder")

    def process(self, record: Record) -> Record:
        from picpipe.backup import restore

        return restore(record, self.finder, self.out_dir, self.only)

    def finish(self, args: argparse.Namespace) -> None:
        self.finder.close()


COMMAND_CLASSES: dict[str, type[Command]] = {"copy": CopyCommand, "ledger": LedgerSyncCommand,
                                             "restore": RestoreCommand}


def main() -> int:
    name, argv = split_subcommand(sys.argv[1:], SUBCOMMANDS,
                                  takes_value={"--to", "--from", "--path", "--ledger", "--out", "-j", "--jobs"})
    return COMMAND_CLASSES[name or "copy"]().main(argv)


if __name__ == "__main__":
    sys.exit(main())
