"""How pp-compress judges a candidate: SSIMULACRA2 on a sample, a quality search, a colour guard.

A large image is judged on a mosaic of nine tiles from the centres of a 3x3 grid (`Sample`):
encoding and scoring 0.9 megapixels instead of 24 keeps a search of a few trials cheap and its
memory flat. On the bench's wallpapers and screenshots the mosaic's score stays within 1.4 points
of the whole image's at qualities 80-90 (2.8 at worst on a HiDPI page), and the default target
compares the mosaic's scores with each other. Block codecs (JPEG, WebP, AVIF) encode the mosaic
itself; a palette, chosen for the whole image, is cut into the same tiles after encoding.

SSIMULACRA2 is a mean over the picture, so a small badge whose pink turned grey can hide in it.
`Blocks` guards against that: the largest CIEDE2000 between the 8x8 block means of the original
and of the candidate, over the whole image. (sharp's quality-80 palette of a Python docs page turns
the logo's yellow to beige, a block shift of 14, at a SSIMULACRA2 of 87.)
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from picpipe.ssimulacra2 import Reference

if TYPE_CHECKING:
    import pyvips

    from picpipe.codecs import Codec

#: Images up to this many pixels are judged whole; larger ones on a mosaic of tiles.
WHOLE_PIXELS = 1_000_000
#: Mosaic tiles: a multiple of 16 (JPEG's 4:2:0 blocks), large enough for SSIMULACRA2's 1:32 scale.
TILE = 320
#: Tiles across and down the mosaic (at most).
GRID = 3
#: The default target is the standard encoding's score less this (SSIMULACRA2 points; 3 is about the
#: smallest difference people notice), kept between FLOOR and CAP.
MARGIN = 2.0
#: Never aim below this: where the standard encoding already shows artefacts, do not add to them.
FLOOR = 70.0
#: Never aim above this: 90 is "visually lossless", no difference in a flicker test at 1:1; one more
#: point so that a judge reading a little lower still sees 90.
CAP = 91.0
#: At most this many encodes per codec in one search.
MAX_TRIALS = 6
#: Block colour shift (CIEDE2000 of 8x8 block means) above which a candidate changed a colour.
MAX_COLOUR_SHIFT = 10.0


def pixels(image: pyvips.Image) -> np.ndarray:
    """(height, width, bands) uint8 of an 8-bit image."""
    return np.ndarray(buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands))


def decode(data: bytes, like: pyvips.Image) -> pyvips.Image:
    """Encoded bytes back to pixels with `like`'s bands (a palette may add or drop alpha, or turn grey to RGB)."""
    import pyvips

    image = pyvips.Image.new_from_buffer(data, "")
    if image.format != "uchar":
        image = image.cast("uchar")
    colour, alpha = like.bands - like.hasalpha(), like.hasalpha()
    opaque = image.extract_band(0, n=image.bands - 1) if image.hasalpha() else image
    if opaque.bands != colour:
        opaque = opaque.colourspace("b-w" if colour == 1 else "srgb")
    if not alpha:
        return opaque
    return opaque.bandjoin(image.extract_band(image.bands - 1) if image.hasalpha() else 255)


class Blocks:
    """An image's 8x8 block means in Lab (1/64 of its pixels), kept to check candidates' colours against."""

    def __init__(self, image: pyvips.Image) -> None:
        self.block = min(8, image.width, image.height)
        self.width = image.width
        self.lab = _lab(image, self.block).copy_memory()

    def shift(self, candidate: pyvips.Image) -> float:
        """The largest CIEDE2000 between these block means and a candidate's (of the same size, or
        already 1/8 of it: a JPEG decoded with shrink-on-load)."""
        theirs = _lab(candidate, self.block if candidate.width == self.width else 1)
        ours = self.lab
        if (theirs.width, theirs.height) != (ours.width, ours.height):  # shrink-on-load rounds partial blocks up
            theirs = theirs.crop(0, 0, min(theirs.width, ours.width), min(theirs.height, ours.height))
            ours = ours.crop(0, 0, theirs.width, theirs.height)
        return float(ours.dE00(theirs).max())

    def shift_of(self, data: bytes) -> float:
        """`shift` of an encoding: a JPEG is decoded at 1/8 scale, which is its blocks' means, at a
        fraction of the cost of decoding it whole."""
        import pyvips

        shrink = {"shrink": self.block} if data[:2] == b"\xff\xd8" and self.block > 1 else {}
        return self.shift(pyvips.Image.new_from_buffer(data, "", **shrink))


class Sample:
    """The pixels candidates are judged on: the whole image, or a mosaic of tiles of a large one,
    with the colour blocks of both."""

    def __init__(self, image: pyvips.Image) -> None:
        import pyvips

        self.boxes: list[tuple[int, int]] = []
        self.blocks = Blocks(image)
        if image.width * image.height <= WHOLE_PIXELS:
            self.image = image
            self.sample_blocks = self.blocks
        else:
            self.across = min(GRID, max(1, image.width // TILE))
            down = min(GRID, max(1, image.height // TILE))
            size = (min(TILE, image.width), min(TILE, image.height))
            xs = _centres(image.width, size[0], self.across)
            ys = _centres(image.height, size[1], down)
            self.boxes = [(x, y) for y in ys for x in xs]
            self.size = size
            self.image = pyvips.Image.arrayjoin(self.cut_tiles(image), across=self.across).copy_memory()
            self.sample_blocks = Blocks(self.image)
        self.reference = Reference(pixels(self.image))

    def cut_tiles(self, image: pyvips.Image) -> list[pyvips.Image]:
        return [image.crop(x, y, *self.size) for x, y in self.boxes]

    def cut(self, image: pyvips.Image) -> pyvips.Image:
        """The sample's pixels of a full-size candidate."""
        if not self.boxes:
            return image
        import pyvips

        return pyvips.Image.arrayjoin(self.cut_tiles(image), across=self.across)

    def judge(self, data: bytes, whole: bool) -> tuple[float, float]:
        """(SSIMULACRA2, colour shift) of encoded bytes: of the sample itself, or (`whole`) of the
        whole image, scored on the sample's tiles and checked for colour everywhere."""
        decoded = decode(data, self.image)
        if whole:
            return self.reference.score(pixels(self.cut(decoded))), self.blocks.shift(decoded)
        return self.reference.score(pixels(decoded)), self.sample_blocks.shift(decoded)


def _centres(length: int, tile: int, count: int) -> list[int]:
    """Offsets of `count` tiles centred in equal cells along `length`, on 16-pixel boundaries.
    Centred, not spread to the edges: a page's margins would fill two of three columns."""
    return [max(0, min(length - tile, round((i + 0.5) * length / count - tile / 2))) // 16 * 16 for i in range(count)]


def default_target(standard_score: float) -> float:
    """The default target for an image whose standard encoding (sharp's quality 80) scores `standard_score`."""
    return min(CAP, max(FLOOR, standard_score - MARGIN))


def search(trial: Callable[[int], float], codec: Codec, target: float, start: int,
           known: dict[int, float] | None = None) -> tuple[int, float]:
    """The lowest quality whose score keeps `target`, known within `codec.step`: (quality, score).

    `trial(quality)` encodes and scores; `known` holds scores already measured. The first trial is
    `start` (a guess from the standard encoding's score); then a step of the distance to the target
    over the codec's typical slope, then secant steps between the nearest failing and passing
    qualities. A pass closer to the target than one step's typical change ends the search. When
    nothing up to `codec.high` passes, the highest quality is returned with its (failing) score.
    """
    scores: dict[int, float] = dict(known or {})

    def measure(quality: int) -> float:
        if quality not in scores:
            scores[quality] = trial(quality)
        return scores[quality]

    quality = min(max(start, codec.low), codec.high)
    for _ in range(MAX_TRIALS):
        score = measure(quality)
        passing = [q for q, s in scores.items() if s >= target]
        failing = [q for q, s in scores.items() if s < target and (not passing or q < min(passing))]
        top = min(passing) if passing else None
        bottom = max(failing) if failing else None
        if top is not None and (top == codec.low or (bottom is not None and top - bottom <= codec.step)):
            break
        if top is not None and bottom is None and scores[top] - target < codec.step * codec.slope:
            break  # one step down is expected to fail: not worth an encode (a palette's is a whole quantisation)
        if top is None and bottom == codec.high:
            break
        if top is not None and bottom is not None:  # secant between the bracket's ends
            s_low, s_high = scores[bottom], scores[top]
            share = (target - s_low) / (s_high - s_low) if s_high > s_low else 0.5
            guess = bottom + round((top - bottom) * min(max(share, 0.2), 0.8))
        else:  # step from the last trial by the slope seen so far (else the codec's), a little past the target
            slope = codec.slope
            if len(scores) >= 2:
                (q1, s1), (q2, s2) = sorted(scores.items(), key=lambda item: abs(item[0] - quality))[:2]
                if q1 != q2 and (s1 - s2) / (q1 - q2) > 0:
                    slope = min(max((s1 - s2) / (q1 - q2), codec.slope / 4), codec.slope * 4)
            step = (target - score) / slope
            step = math.ceil(step + 1) if step > 0 else math.floor(step + 1)
            guess = quality + (max(step, codec.step) if score < target else min(step, -codec.step))
        low = (bottom + 1) if bottom is not None else codec.low
        high = (top - 1) if top is not None else codec.high
        guess = min(max(guess, low), high)
        if guess in scores:
            break
        quality = guess
    passing = [q for q, s in scores.items() if s >= target]
    best = min(passing) if passing else max(scores)
    return best, scores[best]


def _lab(image: pyvips.Image, shrink: int) -> pyvips.Image:
    if image.hasalpha():
        image = image.flatten(background=[128] * (image.bands - 1))
    if image.bands < 3:
        image = image.colourspace("srgb")
    return (image.shrink(shrink, shrink) if shrink > 1 else image).colourspace("lab")
