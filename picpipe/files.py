"""Reading the user's files, with each way that fails named for a person."""

from __future__ import annotations

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
