"""pp-backup: copy originals to a local folder or WebDAV. Not built yet (issue #5)."""

import sys

from picpipe.cli import not_implemented


def main() -> int:
    return not_implemented("pp-backup", 5, "copy originals to a local folder or WebDAV")


if __name__ == "__main__":
    sys.exit(main())
