"""pp-upload: upload to an image host. Not built yet (issue #4)."""

import sys

from picpipe.cli import not_implemented

EXAMPLES = """\
  ls *.png | pp-upload --host qiniu | pp-mark | pp-link --md
  pp-compress shot.png | pp-upload --host github | pp-link --url
  find img -newer .last-upload -name '*.png' | pp-upload --host s3 -j 4 | pp-mark
"""


def main() -> int:
    return not_implemented("pp-upload", 4, "upload to an image host", EXAMPLES)


if __name__ == "__main__":
    sys.exit(main())
