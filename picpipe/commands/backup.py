"""pp-backup: copy originals to a local folder or WebDAV. Not built yet (issue #5)."""

import sys

from picpipe.cli import not_implemented

EXAMPLES = """\
  ls *.png | pp-upload --host qiniu | pp-mark | pp-backup --to nutstore | pp-mark
  pp-mark find --host smms | pp-backup --to nas | pp-mark
  pp-backup --to nutstore photos/*.jpg | jq -r '.backups[].location'
"""


def main() -> int:
    return not_implemented("pp-backup", 5, "copy originals to a local folder or WebDAV", EXAMPLES)


if __name__ == "__main__":
    sys.exit(main())
