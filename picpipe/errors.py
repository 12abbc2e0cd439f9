"""The two kinds of failure every command knows.

`PicpipeError` is the failure of one record: it becomes that record's `error` object and the
stream goes on. `UsageError` is a mistake in how the command was called or configured: nothing
is processed and the command exits 2.
"""

from __future__ import annotations

from typing import Any


class PicpipeError(Exception):
    """One record failed; `type` is a stable machine-readable word, `hint` says what to do."""

    def __init__(self, type: str, message: str, hint: str | None = None, **extra: Any) -> None:
        super().__init__(message)
        self.type = type
        self.message = message
        self.hint = hint
        self.extra = extra

    def to_dict(self, stage: str) -> dict[str, Any]:
        """The record's `error` object (DESIGN §1), secrets removed."""
        from picpipe.redact import redact_text

        err: dict[str, Any] = {"stage": stage, "type": self.type, "message": redact_text(self.message)}
        if self.hint:
            err["hint"] = redact_text(self.hint)
        err.update(self.extra)
        return err


class UsageError(Exception):
    """The command line or the configuration is wrong: exit 2, nothing processed."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint
