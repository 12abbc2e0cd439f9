"""pp-davtest: health-check a WebDAV target. Not built yet (issue #5)."""

import sys

from picpipe.cli import not_implemented

EXAMPLES = """\
  pp-davtest --target nutstore
  pp-davtest --target nas | jq '.steps'
  pp-davtest --target nutstore && ls *.png | pp-backup --to nutstore
"""


def main() -> int:
    return not_implemented("pp-davtest", 5, "health-check a WebDAV target", EXAMPLES)


if __name__ == "__main__":
    sys.exit(main())
