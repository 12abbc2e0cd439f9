"""What every picpipe command shares: arguments, the record loop, errors and exit codes.

A command module holds only what is its own (csvkit style): it subclasses `Command` (or
`StreamCommand` for the usual record-in, record-out loop) and calls `main()`.

Exit codes (DESIGN §1): 0 all records fine, 1 some record carries an error, 2 usage or
configuration error (nothing processed), 130 interrupted, 141 the reader closed the pipe.
A stdout that is closed (`>&-`) or not writable is a usage error: exit 2 with one line on stderr,
before any work for the commands that write records.
"""

from __future__ import annotations

import argparse
import errno
import io
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import TYPE_CHECKING, NoReturn

from picpipe import __version__, console
from picpipe.errors import PicpipeError, UsageError
from picpipe.stream import STDOUT, ClosedStdout, Item, Output, Record, read_items, say_error, stdout_closed

if TYPE_CHECKING:
    from picpipe.concurrency import Submitter
    from picpipe.config import Config

EXIT_OK, EXIT_RECORD_ERRORS, EXIT_USAGE = 0, 1, 2
EXIT_INTERRUPTED, EXIT_BROKEN_PIPE = 130, 141


class Command:
    """Argument parsing and the error/exit-code envelope around `run`."""

    prog = "picpipe"
    description = ""
    #: Shown under --help: real pipelines, one per line (indented by two spaces).
    examples = ""
    #: Default for -j/--jobs; None means the command takes no -j.
    default_jobs: int | None = None
    #: After a run that added lines to the ledger, start the automatic sync ([ledger] sync).
    auto_sync = True
    config: Config

    # -- to override -------------------------------------------------------------------
    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the command's own options."""

    def run(self, args: argparse.Namespace) -> int:
        raise NotImplementedError

    # -- shared ------------------------------------------------------------------------
    def build_parser(self, argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
        """The command's parser; `argv` (default sys.argv[1:]) only says whether --print-completion is asked for."""
        parser = Parser(
            prog=self.prog,
            description=self.description,
            epilog=f"examples:\n{self.examples}" if self.examples else None,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        add_common_options(parser, self.default_jobs)
        from picpipe import completion  # --print-completion SHELL; shtab is imported only then

        completion.add_option(parser, sys.argv[1:] if argv is None else argv)
        self.add_arguments(parser)
        return parser

    def main(self, argv: Sequence[str] | None = None) -> int:
        console.prog = self.prog
        hold_closed_stdio()
        utf8_stdio()
        from picpipe import config

        # Loaded before the arguments, so that even argparse's messages mask configured secrets;
        # a broken file is reported after parsing, so that --help still works.
        try:
            self.config, config_error = config.load(), None
        except UsageError as exc:
            config_error = exc
        args = self.build_parser(argv).parse_args(argv)
        if getattr(args, "debug", False):
            console.debug = True
        try:
            if config_error is not None:
                raise config_error
            status = self.run(args)
            self.after_run()
            return status
        except UsageError as exc:
            console.error(exc.message, exc.hint)
            return EXIT_USAGE
        except BrokenPipeError:
            return broken_pipe()
        except OSError as exc:  # stdin or stdout unusable, a full disk, a file that vanished mid-run
            if exc.filename == STDOUT:
                discard_stdout()  # what is still buffered cannot fail again at exit
                if exc.errno == errno.EBADF:
                    closed = stdout_closed()
                    console.error(closed.message, closed.hint)
                    return EXIT_USAGE
            from picpipe.files import os_error

            error = os_error(exc)
            console.error(error.message, error.hint)
            return EXIT_RECORD_ERRORS
        except KeyboardInterrupt:
            try:
                self.on_interrupt()
            except (BrokenPipeError, KeyboardInterrupt):
                pass
            console.say("interrupted")
            return EXIT_INTERRUPTED
        except Exception as exc:  # a bug: say so plainly, trace only on request
            if isinstance(exc, UnicodeEncodeError) and (problem := unencodable_name(exc)) is not None:
                console.error(problem.message, problem.hint)  # --ledger 截图.jsonl under LC_ALL=C PYTHONUTF8=0
                return EXIT_USAGE
            if console.debug:
                console.traceback(exc)
            console.error(
                f"internal error: {type(exc).__name__}: {exc}",
                "run again with --debug (or PICPIPE_DEBUG=1) for a traceback, and report it",
            )
            return EXIT_RECORD_ERRORS

    def on_interrupt(self) -> None:
        """After Ctrl-C: a chance to write what was already finished."""

    def after_run(self) -> None:
        """With [ledger] sync configured: say when the last automatic sync failed, and start one
        in the background when this run added lines to the ledger. Never fails the command."""
        if not self.auto_sync:
            return
        try:
            if self.config.ledger_sync()[0] is None:
                return
            ledger = sys.modules.get("picpipe.ledger")  # not imported: nothing was appended
            from picpipe import ledgersync

            ledgersync.after_command(self.config, ledger.appended() if ledger is not None else set())
        except Exception as exc:  # the pipeline's work is done and said: a sync never changes that
            if console.debug:
                console.traceback(exc)
            message = exc.message if isinstance(exc, (PicpipeError, UsageError)) else f"{type(exc).__name__}: {exc}"
            console.warn(f"the automatic ledger sync could not start: {message}")


class Parser(argparse.ArgumentParser):
    """argparse, with its error messages redacted like every other message."""

    def error(self, message: str) -> NoReturn:
        from picpipe.redact import redact_text

        self.print_usage(sys.stderr)
        self.exit(EXIT_USAGE, f"{self.prog}: error: {redact_text(message)}\n")


def add_common_options(parser: argparse.ArgumentParser, default_jobs: int | None) -> None:
    parser.add_argument("--version", action="version", version=f"%(prog)s (picpipe) {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks (also PICPIPE_DEBUG=1)")
    parser.add_argument("-q", "--quiet", action="store_true", help="no progress or summary on stderr")
    if default_jobs is not None:
        parser.add_argument(
            "-j", "--jobs", type=jobs_int, default=default_jobs, metavar="N",
            help=f"work on N records at once, 1 to {MAX_JOBS}; output keeps input order (default {default_jobs})",
        )


def ledger_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--ledger", metavar="FILE",
                        help="the ledger file (default $PICPIPE_LEDGER, else ~/.local/share/picpipe/ledger.jsonl)")


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more: {text}")
    return value


#: Threads are cheap but not free: more than this is a typo, not a plan.
MAX_JOBS = 256


def jobs_int(text: str) -> int:
    value = positive_int(text)
    if value > MAX_JOBS:
        raise argparse.ArgumentTypeError(f"at most {MAX_JOBS}: {text}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be more than 0: {text}")
    return value


def broken_pipe() -> int:
    """The reader went away (`| head -1`): stop quietly, as Unix tools killed by SIGPIPE do."""
    discard_stdout()
    return EXIT_BROKEN_PIPE


def discard_stdout() -> None:
    """Point fd 1 at /dev/null, so that the interpreter's final flush of what stdout still
    buffers cannot fail ("Exception ignored ... BrokenPipeError") after the command said its say."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.close(devnull)
    except OSError:
        pass


def hold_closed_stdio() -> None:
    """A command started with stdin, stdout or stderr closed (`>&-`): /dev/null holds the slot,
    so that no file opened later (the ledger!) becomes fd 1 and receives records, and a stdout
    that is closed or opened read-only stands in as `ClosedStdout`, whose first write says so."""
    for fd in (0, 1, 2):
        mode = fd_mode(fd)
        if mode is None:
            devnull = os.open(os.devnull, os.O_RDWR)
            if devnull != fd:
                os.dup2(devnull, fd)
                os.close(devnull)
        if fd == 1 and mode not in (os.O_WRONLY, os.O_RDWR):
            sys.stdout = io.TextIOWrapper(ClosedStdout(), write_through=True)  # type: ignore[arg-type]
        elif fd == 2 and (mode is None or sys.stderr is None):  # also pythonw.exe's None
            sys.stderr = open(os.devnull, "w", encoding="utf-8", errors="backslashreplace")  # noqa: SIM115 -- until exit


def fd_mode(fd: int) -> int | None:
    """fd's access mode (os.O_RDONLY, O_WRONLY or O_RDWR), None when it is closed.

    OS-specific: POSIX asks fcntl; Windows has no fcntl and no way to ask an fd's mode, so an
    open fd counts as read-write (msvcrt.get_osfhandle fails on a closed one), and a read-only
    stdout is caught at its first write (EBADF) instead of before the work.
    """
    if os.name == "nt":
        import msvcrt

        try:
            msvcrt.get_osfhandle(fd)  # type: ignore[attr-defined,unused-ignore]
        except OSError:
            return None
        return os.O_RDWR
    import fcntl

    try:
        return fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE
    except OSError:
        return None


def utf8_stdio() -> None:
    """stdin and stdout speak UTF-8 whatever the locale or PYTHONIOENCODING (cp936, LANG=C): they
    carry JSON Lines between commands and to jq, Typora and PicGo (Node reads a child's stdout as
    UTF-8). Records go through the byte buffers anyway; this covers text written to sys.stdout
    (--help, --version, pp-davtest's report). stderr is for a person: it keeps the console's
    encoding, and a character the console cannot show becomes an escape (`\u622a`), never an
    exception. What is already so is left alone (a Windows console is UTF-8 already)."""
    wanted = ((sys.stdin, "utf-8", "surrogateescape"), (sys.stdout, "utf-8", "backslashreplace"),
              (sys.stderr, None, "backslashreplace"))
    for stream, encoding, errors in wanted:
        if not isinstance(stream, io.TextIOWrapper):  # closed (None), or replaced by a test
            continue
        if (encoding is None or stream.encoding.replace("_", "-").lower() in ("utf-8", "utf8")) \
                and stream.errors == errors:
            continue
        try:
            stream.reconfigure(encoding=encoding or stream.encoding, errors=errors)
        except (OSError, ValueError):  # a closed stream: it fails where it is used, and says so there
            pass


def unencodable_name(exc: UnicodeEncodeError) -> PicpipeError | None:
    """A file name that the file-name encoding cannot hold, as an error a person can act on;
    None when `exc` is about something else (a bug). It happens with the C locale and UTF-8 mode
    turned off (LC_ALL=C PYTHONUTF8=0: the encoding is ASCII), or with a lone surrogate
    (`"\\ud800"`) in a record's path."""
    import codecs

    encoding = codecs.lookup(sys.getfilesystemencoding()).name
    if not isinstance(exc.object, str) or codecs.lookup(exc.encoding).name != encoding:
        return None
    name = exc.object.encode("utf-8", "backslashreplace").decode("utf-8")
    if encoding == "ascii":
        return PicpipeError("bad_file_name", f"{name}: this locale's file names are ASCII ({encoding}): "
                            "the name cannot be opened",
                            "run in a UTF-8 locale (LANG=C.UTF-8) or with PYTHONUTF8=1")
    return PicpipeError("bad_file_name", f"{name}: not a possible file name in {encoding}",
                        "fix the path field of the record (a lone surrogate is no character)")


def require_input(paths: Sequence[str]) -> None:
    """Refuse to wait on a terminal for records nobody is going to type."""
    if not paths and (sys.stdin is None or sys.stdin.isatty()):
        raise UsageError(
            "no input: give image paths as arguments or pipe records in",
            "for example: ls *.png | pp-... , or see --help",
        )


def fail_record(record: Record, stage: str, exc: BaseException) -> Record:
    """Attach an `error` object to a record (a copy): the record itself is never lost."""
    if isinstance(exc, PicpipeError):
        error = exc.to_dict(stage)
    elif isinstance(exc, OSError):
        from picpipe.files import os_error

        error = os_error(exc).to_dict(stage)
    elif isinstance(exc, UnicodeEncodeError) and (name_error := unencodable_name(exc)) is not None:
        error = name_error.to_dict(stage)
    else:
        if console.debug:
            console.traceback(exc)
        error = PicpipeError("internal", f"{type(exc).__name__}: {exc}",
                             "this is a picpipe bug: re-run with --debug and report it").to_dict(stage)
    return {**record, "error": error}


class StreamCommand(Command):
    """Records in, records out: the loop shared by pp-link, pp-mark and the stages to come."""

    stage = "?"
    default_jobs: int | None = 1
    out: Output | None = None
    _results: Iterable[tuple[Item, Record, bool]] = ()
    #: Human messages for errors this stage creates go to stderr as they happen.
    report_new_errors = True
    #: Stages whose error records this command works on rather than passes on (pp-backup restore
    #: takes the dead links of pp-mark check); the old error is dropped when the work succeeds.
    repairs: tuple[str, ...] = ()

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", metavar="PATH",
                            help="image files (default: records or paths read from stdin; - is stdin)")

    def start(self, args: argparse.Namespace) -> None:
        """Check options and load configuration before the first record (raise UsageError)."""

    def process(self, record: Record) -> Record:
        """Do this stage's work on one record; raise PicpipeError for a record-level failure."""
        return record

    def finish(self, args: argparse.Namespace) -> None:
        """After the last record: summaries on stderr."""

    def worker(self) -> Callable[[Record], Record]:
        """What runs on each record: `process`, or a picklable function for worker processes."""
        return self.process

    def executor(self, jobs: int) -> Submitter | None:
        """Where the work runs: None for threads (I/O); a process pool for CPU-bound stages."""
        return None

    def run(self, args: argparse.Namespace) -> int:
        require_input(args.paths)
        self.out = Output(quiet=args.quiet)  # first: a closed stdout stops the command before any work
        self.start(args)
        from picpipe.concurrency import ordered_map

        jobs = getattr(args, "jobs", 1)
        work = partial(run_item, self.worker(), self.stage, repairs=self.repairs)
        self._results = ordered_map(work, read_items(args.paths), jobs, self.executor(jobs))
        for item, record, new_error in self._results:
            self.write_new(item, record, new_error)
        self.out.progress.done()
        self.finish(args)
        return self.out.status

    def write_new(self, item: Item, record: Record, new_error: bool) -> None:
        """Tell a person about an error made here (not one passed on), then write the record."""
        if new_error and self.report_new_errors:
            say_error(item.where, record)
        self.write(item, record)

    def write(self, item: Item, record: Record) -> None:
        """Put one finished record on stdout (override for text output)."""
        assert self.out is not None
        self.out.record(record)

    def on_interrupt(self) -> None:
        for finished in getattr(self._results, "pending", list)():
            self.write_new(*finished)


def run_item(work: Callable[[Record], Record], stage: str, item: Item,
             repairs: tuple[str, ...] = ()) -> tuple[Item, Record, bool]:
    """One record through one stage: (item, result, whether the result is an error made here).

    Module-level, so that it can run in a worker process. Error records from earlier stages
    pass through untouched, unless their stage is one this command `repairs`; a bad input line
    counts as made here, and so does an error the work returns with its result (a copy made
    whose ledger line could not be written).
    """
    record = item.record
    error = record.get("error")
    if error is not None and (item.bad_input or not isinstance(error, dict) or error.get("stage") not in repairs):
        return item, record, item.bad_input
    try:
        result = work(record)
    except Exception as exc:
        return item, fail_record(record, stage, exc), True
    return item, result, result.get("error") not in (None, error)


def split_subcommand(argv: Sequence[str], names: Iterable[str], takes_value: set[str]) -> tuple[str | None, list[str]]:
    """Find the subcommand wherever it stands among the options (`pp-mark --ledger L find`):
    the first word that is no option and no option's value. None when there is none."""
    argv = list(argv)
    index = 0
    while index < len(argv):
        token = argv[index]
        if token == "--":
            break
        if token in takes_value:
            index += 2
            continue
        if not token.startswith("-") or token == "-":
            if token in names:
                return token, argv[:index] + argv[index + 1:]
            break
        index += 1
    return None, argv
