"""pp-compress: re-encode images smaller at a measured quality, strip GPS/EXIF. Not built yet (issue #3)."""

import sys

from picpipe.cli import not_implemented

EXAMPLES = """\
  ls *.png | pp-compress | pp-upload --host qiniu | pp-link --md
  pp-compress --max-width 1600 --format webp photo.jpg | jq .compress
  find posts -name '*.jpg' | pp-compress -j 4 --out build/img
"""


def main() -> int:
    return not_implemented("pp-compress", 3, "re-encode images smaller at a measured quality, strip GPS/EXIF", EXAMPLES)


if __name__ == "__main__":
    sys.exit(main())
