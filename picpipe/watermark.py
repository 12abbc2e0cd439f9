"""Watermarks for pp-compress (PicList's feature): a line of text or a logo drawn on the pixels.

    from picpipe import watermark
    spec = watermark.spec(text="© me", position="bottom-right")   # checked: UsageError if wrong
    marked = watermark.apply(image, spec)                         # a pyvips.Image, upright

The mark fits in a box of `size` times the image's width by `size` times its height (PicList's
watermarkScaleRatio, 0.15 by default), keeping its own proportions, at `margin` from the edges,
in one of nine places. Only that box's pixels change: they are blended in numpy with the mark
at `opacity`, and put back into the image, so every other pixel stays exactly as it was.
Images whose shorter side is below `min_side` are left alone (a thumbnail or an icon), and so
are those a text does not fit at its smallest (a long text on a narrow strip).

Text is white with a thin dark outline, which reads on light and dark pictures. Its font is the
first that has a glyph for every character: `font` if given, else Pillow's bundled font (Latin),
DejaVu, then the CJK fonts of Linux, macOS and Windows and any font fontconfig knows. A
character no font has is a UsageError naming --watermark-font, never a row of boxes (tofu).
"""

from __future__ import annotations

import functools
import io
import math
import os
import shutil
import subprocess
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from picpipe.errors import UsageError

if TYPE_CHECKING:
    import numpy as np
    import pyvips
    from PIL import Image, ImageFont

#: PicList's nine places, as (horizontal, vertical) shares of the room left beside the mark.
POSITIONS: dict[str, tuple[float, float]] = {
    "top-left": (0, 0), "top": (0.5, 0), "top-right": (1, 0),
    "left": (0, 0.5), "center": (0.5, 0.5), "right": (1, 0.5),
    "bottom-left": (0, 1), "bottom": (0.5, 1), "bottom-right": (1, 1),
}
DEFAULT_POSITION = "bottom-right"
DEFAULT_OPACITY = 0.5
#: PicList's default watermarkScaleRatio.
DEFAULT_SIZE = 0.15
#: Images whose shorter side is below this many pixels are not marked.
DEFAULT_MIN_SIDE = 200
DEFAULT_MARGIN = "2%"
#: Text is never drawn smaller than this (pixels of line height) while the image has room for it.
MIN_TEXT_HEIGHT = 12
#: A mark image with more pixels is refused: a logo, not a photo.
MAX_MARK_PIXELS = 25_000_000

#: Fonts tried after Pillow's own, in order: DejaVu (Debian, most Linux), then CJK fonts of
#: Debian/Ubuntu/Fedora, macOS and Windows. fontconfig is asked after these.
FONT_CANDIDATES = (
    "/usr/share/fonts/truetype/dejavu/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/dejavu-sans-fonts/DejaVuSans-Bold.ttf",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Bold.ttc",
    "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/google-noto-cjk/NotoSansCJK-Regular.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/wqy/wqy-zenhei.ttc",
    "/usr/share/fonts/wqy-microhei/wqy-microhei.ttc",
    "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
    "/System/Library/Fonts/PingFang.ttc",
    "/System/Library/Fonts/STHeiti Medium.ttc",
    "/System/Library/Fonts/Hiragino Sans GB.ttc",
    "/System/Library/Fonts/Supplemental/Arial Unicode.ttf",
    "/Library/Fonts/Arial Unicode.ttf",
    os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts", "msyh.ttc"),
    os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts", "simhei.ttf"),
    os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts", "YuGothM.ttc"),
    os.path.join(os.environ.get("WINDIR", r"C:\Windows"), "Fonts", "malgun.ttf"),
)
FONT_HINT = ("give a font that has them with --watermark-font FILE (.ttf, .otf or .ttc), e.g. "
             "/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc after `apt install fonts-noto-cjk` "
             "(or fonts-wqy-microhei), /System/Library/Fonts/PingFang.ttc on macOS, "
             r"C:\Windows\Fonts\msyh.ttc on Windows")


@dataclass(frozen=True)
class Spec:
    """A checked watermark (made by `spec`); picklable, so worker processes get it whole."""

    text: str | None = None
    image: bytes | None = None  # the mark image file's bytes
    position: str = DEFAULT_POSITION
    opacity: float = DEFAULT_OPACITY
    size: float = DEFAULT_SIZE
    min_side: int = DEFAULT_MIN_SIDE
    margin: float = 0.02
    margin_relative: bool = True  # margin is a share of the shorter side, else pixels
    font: str | None = None  # a font file; None: Pillow's bundled font


# -- values, as flags, config and environment give them -------------------------------------------

def parse_opacity(value: Any) -> float:
    number = _number(value, "an opacity")
    if not 0 < number <= 1:
        raise ValueError(f"an opacity is more than 0 and at most 1 (0.5 is half), not {value}")
    return number


def parse_size(value: Any) -> float:
    """0.15 or "15%": the share of the image's width (and height) the mark may take."""
    text = str(value).strip()
    number = _number(text[:-1], "a size") / 100 if text.endswith("%") else _number(text, "a size")
    if not 0 < number <= 1:
        raise ValueError(f"a size is a share of the image, more than 0 and at most 1 (or 15%), not {value}")
    return number


def parse_margin(value: Any) -> tuple[float, bool]:
    """16 (pixels) or "2%" (of the shorter side): (number, relative)."""
    text = str(value).strip()
    relative = text.endswith("%")
    number = _number(text[:-1] if relative else text, "a margin")
    if number < 0 or (relative and number >= 50):
        raise ValueError(f"a margin is pixels (16) or a percentage of the shorter side below 50 (2%), not {value}")
    return (number / 100, True) if relative else (number, False)


def parse_min_side(value: Any) -> int:
    number = _number(value, "a number of pixels")
    if number != int(number) or number < 0:
        raise ValueError(f"a number of pixels is a whole number, 0 or more, not {value}")
    return int(number)


def parse_position(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in POSITIONS:
        raise ValueError(f"unknown position {value!r} (one of: {', '.join(POSITIONS)})")
    return text


def _number(value: Any, what: str) -> float:
    try:
        number = math.nan if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a number, not {value!r}") from None
    if not math.isfinite(number):
        raise ValueError(f"{what} must be a number, not {value!r}")
    return number


#: The settings written as text (--watermark-KEY, [compress] KEY, PICPIPE_COMPRESS_<KEY>) and their
#: parsers, by config key: pp-compress parses each value once, saying where it was written.
PARSERS: dict[str, Callable[[Any], Any]] = {
    "watermark_position": parse_position, "watermark_opacity": parse_opacity, "watermark_size": parse_size,
    "watermark_min": parse_min_side, "watermark_margin": parse_margin}


def spec(text: str | None = None, image_file: str | None = None, position: str = DEFAULT_POSITION,
         opacity: float | str = DEFAULT_OPACITY, size: float | str = DEFAULT_SIZE,
         min_side: int | str = DEFAULT_MIN_SIDE,
         margin: str | float = DEFAULT_MARGIN, font: str | None = None) -> Spec:
    """A checked Spec from settings as written (see `checked`). Every mistake is a UsageError with a
    hint, said before any image is touched."""
    given = {"watermark_position": position, "watermark_opacity": opacity, "watermark_size": size,
             "watermark_min": min_side, "watermark_margin": margin}
    try:
        parsed = {key: PARSERS[key](value) for key, value in given.items()}
    except ValueError as exc:
        raise UsageError(f"watermark: {exc}", "see pp-compress --help") from None
    return checked(text, image_file, font, parsed)


def checked(text: str | None, image_file: str | None, font: str | None, parsed: Mapping[str, Any]) -> Spec:
    """The Spec of a text or an image, with the settings `PARSERS` made (the defaults for those not
    given), once the mark image decodes and the text has a font with all its glyphs."""
    if (text is None) == (image_file is None):
        raise UsageError("a watermark is either a text or an image", "give --watermark TEXT or --watermark-image FILE")
    distance, relative = parsed.get("watermark_margin") or parse_margin(DEFAULT_MARGIN)
    settings = dict(position=parsed.get("watermark_position", DEFAULT_POSITION),
                    opacity=parsed.get("watermark_opacity", DEFAULT_OPACITY),
                    size=parsed.get("watermark_size", DEFAULT_SIZE),
                    min_side=parsed.get("watermark_min", DEFAULT_MIN_SIDE), margin=distance, margin_relative=relative)
    if text is not None:
        if not text.strip():
            raise UsageError("the watermark text is empty", "give --watermark TEXT with something to show")
        return Spec(text=text, font=choose_font(text, font), **settings)  # type: ignore[arg-type]
    assert image_file is not None
    return Spec(image=_read_mark(image_file), **settings)  # type: ignore[arg-type]


def _read_mark(path: str) -> bytes:
    """The mark image's bytes, once it is known to decode."""
    from PIL import Image

    hint = "give a PNG (with transparency) or another image file: --watermark-image logo.png"
    try:
        with open(os.path.expanduser(path), "rb") as file:
            data = file.read()
    except OSError as exc:
        raise UsageError(f"cannot read the watermark image {path}: {exc.strerror}", hint) from None
    try:
        with Image.open(io.BytesIO(data)) as mark:
            if mark.width * mark.height > MAX_MARK_PIXELS:
                raise UsageError(f"the watermark image {path} has {mark.width}x{mark.height} pixels: a logo "
                                 f"needs far fewer (at most {MAX_MARK_PIXELS})", "scale it down first")
            mark.load()
    except UsageError:
        raise
    except Exception:
        raise UsageError(f"the watermark image {path} is not an image that can be read", hint) from None
    return data


# -- fonts ----------------------------------------------------------------------------------------

def choose_font(text: str, font: str | None = None) -> str | None:
    """The font file to write `text` with (None: Pillow's bundled one), or a UsageError naming the
    characters no font has."""
    if font is not None:
        path = os.path.expanduser(font)
        try:
            loaded = _font(path, 32)
        except OSError as exc:
            raise UsageError(f"cannot use the font {font}: {exc}", "give a .ttf, .otf or .ttc font file") from None
        missing = _missing(loaded, text)
        if missing:
            raise UsageError(f"the font {font} has no glyphs for {' '.join(missing)} in the watermark text", FONT_HINT)
        return path
    missing = _missing(_font(None, 32), text)
    if not missing:
        return None
    for path in _candidates(missing):
        try:
            if not _missing(_font(path, 32), text):
                return path
        except OSError:  # a broken or unreadable font file: the next one
            continue
    raise UsageError(f"no font on this machine has glyphs for {' '.join(missing)} in the watermark text", FONT_HINT)


def _candidates(characters: list[str]) -> list[str]:
    """Font files that may have `characters`: the known ones that exist, then fontconfig's."""
    found = [path for path in FONT_CANDIDATES if os.path.isfile(path)]
    fc_list = shutil.which("fc-list")
    if fc_list:
        charset = " ".join(f"{ord(c):x}" for c in characters)
        try:
            listed = subprocess.run([fc_list, "--format", "%{file}\n", f":charset={charset}"], capture_output=True,
                                    text=True, timeout=10).stdout.splitlines()
        except (OSError, subprocess.SubprocessError):
            listed = []
        found += sorted({p for p in listed if p.lower().endswith((".ttf", ".otf", ".ttc")) and p not in found})
    return found


@functools.lru_cache(maxsize=32)
def _font(path: str | None, size: int) -> ImageFont.FreeTypeFont:
    from PIL import ImageFont

    if path is None:
        return ImageFont.load_default(size)  # type: ignore[return-value]  # FreeType in every wheel
    return ImageFont.truetype(path, size)


def _missing(font: ImageFont.FreeTypeFont, text: str) -> list[str]:
    """The characters of `text` that `font` draws as its "missing glyph" box."""
    tofu = _glyph(font, "\U0010ffff")  # a noncharacter: no font maps it
    return [c for c in dict.fromkeys(text) if not c.isspace() and c.isprintable() and _glyph(font, c) == tofu]


def _glyph(font: ImageFont.FreeTypeFont, character: str) -> tuple[tuple[int, int], bytes]:
    mask = font.getmask(character)
    return mask.size, bytes(mask)


# -- drawing --------------------------------------------------------------------------------------

def apply(image: pyvips.Image, spec: Spec) -> pyvips.Image:
    """`image` (8-bit sRGB or grey, with or without alpha, upright) with the mark drawn on it."""
    return mark(image, spec)[0]


def mark(image: pyvips.Image, spec: Spec) -> tuple[pyvips.Image, dict[str, Any]]:
    """(the marked image, what was done: `box` [x, y, width, height], or `skipped` and why)."""
    import numpy as np
    import pyvips

    shorter = min(image.width, image.height)
    if shorter < spec.min_side:
        return image, {"skipped": f"{image.width}x{image.height} is below the {spec.min_side} px watermark minimum"}
    margin = round(spec.margin * shorter) if spec.margin_relative else round(spec.margin)
    room = (image.width - 2 * margin, image.height - 2 * margin)
    if min(room) < 1:
        return image, {"skipped": f"the {margin} px margin leaves no room on {image.width}x{image.height}"}
    box = (max(1, min(room[0], round(spec.size * image.width))), max(1, min(room[1], round(spec.size * image.height))))
    overlay = _text(spec, box, room) if spec.text is not None else _picture(spec, box)
    if overlay.shape[1] > room[0] or overlay.shape[0] > room[1]:  # even its smallest size is too wide
        return image, {"skipped": f"the text does not fit on {image.width}x{image.height} even at its smallest "
                                  f"({overlay.shape[1]}x{overlay.shape[0]} px)"}
    across, down = POSITIONS[spec.position]
    x = margin + round((room[0] - overlay.shape[1]) * across)
    y = margin + round((room[1] - overlay.shape[0]) * down)
    height, width = overlay.shape[:2]
    region = np.ndarray(buffer=image.crop(x, y, width, height).write_to_memory(), dtype=np.uint8,
                        shape=(height, width, image.bands))
    blended = _blend(region, overlay, spec.opacity, image.bands - image.hasalpha())
    patch = pyvips.Image.new_from_array(blended).copy(interpretation=image.interpretation)
    return image.insert(patch, x, y), {"box": [x, y, width, height], "position": spec.position}


def _text(spec: Spec, box: tuple[int, int], room: tuple[int, int]) -> np.ndarray:
    """The text as straight RGBA: white on a dark outline, cropped to its ink, fitting `box`; on
    a small image it may take more of the `room`, up to MIN_TEXT_HEIGHT pixels of ink."""
    assert spec.text is not None
    probe = 100
    width, height = _ink(spec.text, spec.font, probe)[1].size
    size = int(probe * min(box[0] / width, box[1] / height))
    limit = box
    if size * height < MIN_TEXT_HEIGHT * probe:
        size = min(-(-MIN_TEXT_HEIGHT * probe // height), int(probe * min(room[0] / width, room[1] / height)))
        limit = room
    size = max(1, size)
    while True:  # hinting is not quite linear: shrink until it fits
        fill, outline = _ink(spec.text, spec.font, size)
        if size == 1 or (outline.width <= limit[0] and outline.height <= limit[1]):
            return _over(_coverage(fill), _coverage(outline))
        size = max(1, min(size - 1, int(size * 0.97)))


def _coverage(mask: Image.Image) -> np.ndarray:
    import numpy as np

    return np.asarray(mask, dtype=np.float32) / 255


def _ink(text: str, font_path: str | None, size: int) -> tuple[Image.Image, Image.Image]:
    """(fill, fill with its outline) coverage masks of the text at `size`, cropped to the outline."""
    from PIL import Image, ImageDraw

    font = _font(font_path, size)
    stroke = max(1, round(size / 16))
    bbox = ImageDraw.Draw(Image.new("L", (1, 1))).textbbox((0, 0), text, font=font, stroke_width=stroke)
    left, top, right, bottom = math.floor(bbox[0]), math.floor(bbox[1]), math.ceil(bbox[2]), math.ceil(bbox[3])
    masks = []
    for width in (0, stroke):
        mask = Image.new("L", (max(1, right - left), max(1, bottom - top)))
        ImageDraw.Draw(mask).text((-left, -top), text, fill=255, font=font, stroke_width=width, stroke_fill=255)
        masks.append(mask)
    return masks[0], masks[1]


def _over(fill: np.ndarray, outline: np.ndarray) -> np.ndarray:
    """White `fill` over a black `outline`, as straight RGBA floats 0-1."""
    import numpy as np

    alpha = fill + outline * (1 - fill)
    white = np.divide(fill, alpha, out=np.zeros_like(alpha), where=alpha > 0)
    return np.dstack([white, white, white, alpha])


def _picture(spec: Spec, box: tuple[int, int]) -> np.ndarray:
    """The mark image as straight RGBA floats 0-1, scaled (up or down) to fit `box`."""
    import numpy as np
    from PIL import Image, ImageOps

    assert spec.image is not None
    with Image.open(io.BytesIO(spec.image)) as opened:
        picture = ImageOps.exif_transpose(opened).convert("RGBA")
    scale = min(box[0] / picture.width, box[1] / picture.height)
    size = (max(1, round(picture.width * scale)), max(1, round(picture.height * scale)))
    if size != picture.size:
        picture = picture.resize(size, Image.Resampling.LANCZOS)  # Pillow resizes RGBA premultiplied
    return np.asarray(picture, dtype=np.float32) / 255


def _blend(region: np.ndarray, overlay: np.ndarray, opacity: float, colours: int) -> np.ndarray:
    """`overlay` (straight RGBA 0-1) at `opacity` over `region` (uint8, `colours` bands and maybe
    alpha), the usual "over" operator, rounded back to uint8."""
    import numpy as np

    top = overlay[..., :3] if colours == 3 else (overlay[..., :3] @ np.array([0.299, 0.587, 0.114],
                                                                              dtype=np.float32))[..., None]
    a = overlay[..., 3:4] * opacity
    base = region.astype(np.float32) / 255
    if region.shape[2] == colours:  # opaque
        out = base * (1 - a) + top * a
    else:
        below = base[..., colours:]
        alpha = a + below * (1 - a)
        colour = np.divide(top * a + base[..., :colours] * below * (1 - a), alpha,
                           out=np.zeros_like(base[..., :colours]), where=alpha > 0)
        out = np.concatenate([colour, alpha], axis=2)
    return np.clip(np.rint(out * 255), 0, 255).astype(np.uint8)
