"""The encoders pp-compress chooses from: libvips' (the engine of sharp).

Each codec encodes a prepared image (8-bit sRGB or grey, with or without alpha) at a quality; the
search in picpipe.quality picks the quality, picpipe.imaging the winner. `STANDARD` holds what
sharp makes of each format by default (PicList's output, byte for byte for an image without a
colour profile): mozjpeg with trellis quantisation, optimised progressive scans and ImageMagick's
tables at quality 80, libimagequant palettes at sharp's effort and dithering, libwebp, AV1 in
HEIF. The searched JPEG codecs differ in one setting, mozjpeg's MS-SSIM-tuned tables.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pyvips

#: Output format -> (file extension, MIME type).
FORMATS = {
    "jpeg": (".jpg", "image/jpeg"),
    "png": (".png", "image/png"),
    "webp": (".webp", "image/webp"),
    "avif": (".avif", "image/avif"),
}

#: mozjpeg as sharp's `mozjpeg: true` sets it, but for the quantisation tables.
_MOZJPEG = {"optimize_coding": True, "trellis_quant": True, "overshoot_deringing": True, "optimize_scans": True,
            "interlace": True}
#: mozjpeg's tables: sharp uses 3 (ImageMagick's); 2 (tuned for MS-SSIM) needs 3.5% fewer bytes at
#: SSIMULACRA2 75 and 7.7% at 85 on the bench's ten JPEG-bound photos (8 of 10 smaller at 85).
SHARP_TABLES, TABLES = 3, 2


@dataclass(frozen=True)
class Codec:
    """One way of encoding, searched over `quality` in [low, high]."""

    format: str  # key of FORMATS
    name: str  # what the record's compress.method says
    encode: Callable[[pyvips.Image, int, str], bytes]  # (image, quality, keep) -> bytes
    standard: int  # sharp's default quality
    low: int
    high: int
    local: bool  # a tile encodes as it would inside the whole image, so trials may encode a sample
    slope: float  # typical SSIMULACRA2 points per quality step near `standard`: the first guess's step
    step: int  # the search resolves the quality to this many steps


def _jpeg(subsample: str, tables: int) -> Callable[[pyvips.Image, int, str], bytes]:
    def encode(image: pyvips.Image, quality: int, keep: str) -> bytes:
        if image.hasalpha():  # JPEG has no alpha: shown on a white page, as browsers show a transparent image
            image = image.flatten(background=[255] * (image.bands - 1))
        return image.jpegsave_buffer(Q=quality, subsample_mode=subsample, quant_table=tables, keep=keep, **_MOZJPEG)
    return encode


def _palette(image: pyvips.Image, quality: int, keep: str) -> bytes:
    # sharp's png({palette: true}): libimagequant at effort 7, full dithering, zlib level 6 (which
    # costs no more than level 1 next to the quantisation). The winner is re-packed by oxipng.
    return image.pngsave_buffer(palette=True, Q=quality, dither=1.0, effort=7, compression=6, keep=keep)


def _webp(image: pyvips.Image, quality: int, keep: str) -> bytes:
    return image.webpsave_buffer(Q=quality, effort=4, keep=keep)


def _avif(image: pyvips.Image, quality: int, keep: str) -> bytes:
    # Effort 2, not sharp's 4: on the bench's photos 8x faster for one SSIMULACRA2 point at the same bytes.
    return image.heifsave_buffer(Q=quality, compression="av1", effort=2, subsample_mode="off", bitdepth=8, keep=keep)


JPEG_SHARP = Codec("jpeg", "jpeg 4:2:0 (sharp's tables)", _jpeg("on", SHARP_TABLES), standard=80, low=30, high=100,
                   local=True, slope=0.7, step=1)
JPEG_420 = Codec("jpeg", "jpeg 4:2:0", _jpeg("on", TABLES), standard=80, low=30, high=100, local=True, slope=0.7,
                 step=1)
JPEG_444 = Codec("jpeg", "jpeg 4:4:4", _jpeg("off", TABLES), standard=80, low=30, high=100, local=True, slope=0.7,
                 step=1)
# A palette's score moves in jumps (and not always up with Q) and each trial quantises the whole
# image: a coarse ladder of qualities, not a fine search.
PALETTE = Codec("png", "png palette", _palette, standard=80, low=40, high=100, local=False, slope=0.4, step=10)
WEBP = Codec("webp", "webp", _webp, standard=80, low=30, high=100, local=True, slope=0.45, step=2)
AVIF = Codec("avif", "avif", _avif, standard=50, low=20, high=90, local=True, slope=0.5, step=2)


def lossless_png(image: pyvips.Image, keep: str) -> bytes:
    """The pixels as they are (zlib level 6, as the palettes are compared), for oxipng to re-pack."""
    return image.pngsave_buffer(compression=6, keep=keep)


#: What sharp makes of each format by default: the standard encoding the default target starts from.
STANDARD = {"jpeg": JPEG_SHARP, "png": PALETTE, "webp": WEBP, "avif": AVIF}
