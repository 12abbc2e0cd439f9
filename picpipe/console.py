"""Messages for people, on stderr, always redacted.

stdout belongs to the record stream; everything a person should read goes through here.
"""

from __future__ import annotations

import os
import sys

from picpipe.redact import redact_text

prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "picpipe"
#: Show tracebacks: `--debug` or PICPIPE_DEBUG=1.
debug = os.environ.get("PICPIPE_DEBUG", "") not in ("", "0", "false", "no")


#: A progress line is on the terminal: the next message clears it first.
progress_shown = False


def say(message: str) -> None:
    """One line on stderr, prefixed with the command name, secrets masked."""
    global progress_shown
    try:
        if progress_shown:
            sys.stderr.write("\r\033[K")
            progress_shown = False
        sys.stderr.write(f"{prog}: {redact_text(message)}\n")
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr closed: nothing sensible left to do
        pass


def warn(message: str) -> None:
    say(f"warning: {message}")


def error(message: str, hint: str | None = None) -> None:
    say(f"error: {message}" + (f"\n  hint: {redact_text(hint)}" if hint else ""))



def traceback(exc: BaseException) -> None:
    """The traceback of `exc`, for --debug: redacted like every other message."""
    import traceback as tb

    text = "".join(tb.format_exception(exc))
    try:
        sys.stderr.write(redact_text(text))
        sys.stderr.flush()
    except (OSError, ValueError):
        pass


def counted(number: int, noun: str) -> str:
    """`1 document`, `2 documents`: for the commands' summaries."""
    return f"{number} {noun}{'' if number == 1 else 's'}"
