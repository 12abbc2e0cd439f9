"""pp-compress: re-encode images smaller at a measured quality, strip GPS/EXIF. Not built yet (issue #3)."""

import sys

from picpipe.cli import not_implemented


def main() -> int:
    return not_implemented("pp-compress", 3, "re-encode images smaller at a measured quality, strip GPS/EXIF")


if __name__ == "__main__":
    sys.exit(main())
