"""Reading the user's files, with each way that fails named for a person."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from picpipe.errors import PicpipeError


def read_source(path: str) -> bytes:
    """The bytes of an input file, with the ways that fails named for a person."""
    try:
        with open(path, "rb") as handle:
            return handle.read()
    except FileNotFoundError:
        raise PicpipeError("not_found", f"{path}: no such file",
                           "check the path (relative to the current folder)") from None
    except IsADirectoryError:
        raise PicpipeError("is_a_folder", f"{path} is a folder",
                           "give image files, e.g. find DIR -name '*.png'") from None
    except PermissionError:
        raise PicpipeError("unreadable", f"{path}: permission denied", "check the file's permissions") from None


@contextmanager
def temp_copy(folder: Path, data: bytes, prefix: str) -> Iterator[str]:
    """`data` written and fsynced to a temp file in `folder`, removed on exit unless moved away:
    the caller renames or links it into place, so a reader never sees half a file."""
    fd, temp = tempfile.mkstemp(dir=folder, prefix=prefix)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        yield temp
    finally:
        if os.path.exists(temp):
            os.unlink(temp)
