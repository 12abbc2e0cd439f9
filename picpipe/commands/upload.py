"""pp-upload: upload to an image host. Not built yet (issue #4)."""

import sys

from picpipe.cli import not_implemented


def main() -> int:
    return not_implemented("pp-upload", 4, "upload to an image host")


if __name__ == "__main__":
    sys.exit(main())
