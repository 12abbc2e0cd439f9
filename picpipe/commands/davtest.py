"""pp-davtest: health-check a WebDAV target. Not built yet (issue #5)."""

import sys

from picpipe.cli import not_implemented


def main() -> int:
    return not_implemented("pp-davtest", 5, "health-check a WebDAV target")


if __name__ == "__main__":
    sys.exit(main())
