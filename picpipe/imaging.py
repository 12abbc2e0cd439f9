"""Image facts, and the quality-targeted compressor behind pp-compress.

For each image the compressor tries the encodings that can keep its format (JPEG: Pillow's
libjpeg-turbo at a searched quality, then mozjpeg's lossless re-optimisation; PNG: a palette
from libimagequant at a searched quality, and lossless oxipng; WebP and AVIF: a searched
quality), measures each candidate's SSIM against the oriented, resized original, and keeps
the smallest one that stays at or above the target. Metadata (EXIF, GPS, XMP, comments) is
dropped after the EXIF orientation is applied to the pixels; ICC profiles stay.

Pillow, numpy and the encoders are imported here, so only pp-compress pays for them.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from PIL import Image, ImageOps, UnidentifiedImageError

from picpipe.errors import PicpipeError

if TYPE_CHECKING:
    from picpipe.ssim import Reference

#: The SSIM a candidate must keep by default (--target), chosen with `make bench`: of 0.96,
#: 0.97 and 0.985, the one with the fewest bytes that keeps mean SSIM above sharp q80's.
DEFAULT_TARGET = 0.96
#: Re-pack the original losslessly only when the best re-encoding is above this share of its size.
LOSSLESS_WORTH_TRYING = 0.9
#: Images with more pixels are refused as decompression bombs (settable with --max-pixels).
DEFAULT_MAX_PIXELS = 100_000_000

#: Output format → (Pillow format name, file extension, MIME type).
FORMATS = {
    "jpeg": ("JPEG", ".jpg", "image/jpeg"),
    "png": ("PNG", ".png", "image/png"),
    "webp": ("WEBP", ".webp", "image/webp"),
    "avif": ("AVIF", ".avif", "image/avif"),
}
_PIL_TO_FORMAT = {"JPEG": "jpeg", "MPO": "jpeg", "PNG": "png", "WEBP": "webp", "AVIF": "avif"}


@dataclass(frozen=True)
class Options:
    """What the user asked for; picklable, so worker processes get it whole."""

    target: float = DEFAULT_TARGET
    quality: int | None = None  # a fixed quality instead of the search
    format: str | None = None  # jpeg, png, webp, avif, auto; None keeps the input's
    max_width: int | None = None
    max_height: int | None = None
    keep_metadata: bool = False
    max_pixels: int = DEFAULT_MAX_PIXELS


@dataclass
class Candidate:
    data: bytes
    format: str  # key of FORMATS
    method: str
    quality: int | None
    similarity: float


def facts(data: bytes) -> dict[str, Any]:
    """sha256, size, width, height, format and mime of image bytes (DESIGN §1 fields)."""
    with Image.open(io.BytesIO(data)) as image:
        kind = image.format or "?"
        width, height = image.size
    fmt = _PIL_TO_FORMAT.get(kind, kind.lower())
    mime = FORMATS[fmt][2] if fmt in FORMATS else Image.MIME.get(kind, "")  # MPO is a JPEG to browsers
    return {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "width": width, "height": height,
            "format": fmt, "mime": mime}


def open_image(data: bytes, name: str, max_pixels: int) -> Image.Image:
    """Decode fully, turning every way an input can be bad into a clear PicpipeError."""
    if not data:
        raise PicpipeError("empty_file", f"{name} is empty (0 bytes)", "the file was not written completely")
    Image.MAX_IMAGE_PIXELS = max_pixels
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise PicpipeError("too_large", f"{name} has more than {max_pixels} pixels (a decompression bomb?)",
                           "raise the limit with --max-pixels if you trust this image") from None
    except UnidentifiedImageError:
        raise PicpipeError("not_an_image", f"{name} is not an image Pillow can read",
                           "pp-compress reads JPEG, PNG, WebP, AVIF, GIF, BMP and TIFF") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise PicpipeError("corrupt_image", f"{name} is damaged or truncated ({exc})",
                           "re-export or re-download the original") from None
    return image


def compress(data: bytes, name: str, options: Options) -> tuple[bytes, dict[str, Any]]:
    """(new bytes, the record's `compress` object) for one image's bytes."""
    image = open_image(data, name, options.max_pixels)
    kind = image.format or ""
    if getattr(image, "n_frames", 1) > 1:
        return data, {"method": "kept", "reason": f"animated {kind}: frames are kept as they are"}
    source_format = _PIL_TO_FORMAT.get(kind)
    target_format = source_format if options.format in (None, "keep") else options.format
    if target_format is None:
        return data, {"method": "kept", "reason": f"{kind} is kept as it is; choose --format to convert it"}
    # Kept with --keep-metadata: then the orientation stays in the EXIF, not in the pixels.
    keep: dict[str, bytes] = {k: image.info[k] for k in ("exif", "xmp") if options.keep_metadata and k in image.info}
    if image.info.get("icc_profile"):
        keep["icc_profile"] = image.info["icc_profile"]
    prepared = image if options.keep_metadata else ImageOps.exif_transpose(image)
    prepared = _resize(prepared, options.max_width, options.max_height)
    formats = _auto_formats(prepared) if target_format == "auto" else [target_format]
    candidates: list[Candidate] = []
    for fmt in formats:
        candidates.extend(_candidates(fmt, prepared, keep, options))
    pixels_as_they_are = prepared.size == image.size and (options.keep_metadata or _orientation(image) == 1)
    fit = [c for c in candidates if c.similarity >= options.target or options.quality is not None]
    # The original re-packed losslessly matters only when re-encoding saved little or nothing.
    if source_format in formats and pixels_as_they_are and min((len(c.data) for c in fit), default=len(data)) > (
            LOSSLESS_WORTH_TRYING * len(data)):
        lossless = _lossless_original(source_format, data, options.keep_metadata)
        fit += lossless
        candidates += lossless
    best = min(fit or candidates, key=lambda c: len(c.data))
    info: dict[str, Any] = {"before": len(data), "after": len(best.data), "method": best.method,
                            "quality": best.quality, "ssim": round(best.similarity, 5), "target": options.target}
    # The original bytes may only stay when they are what the user would get anyway.
    may_keep = (target_format == source_format and pixels_as_they_are
                and (options.keep_metadata or not _has_private_metadata(image)))
    if may_keep and len(best.data) >= len(data):
        return data, {**info, "after": len(data), "method": "kept", "reason": "no encoding was smaller"}
    return best.data, info


def _resize(image: Image.Image, max_width: int | None, max_height: int | None) -> Image.Image:
    """Fit within the bounds, never upscale."""
    width, height = image.size
    scale = min((max_width or width) / width, (max_height or height) / height, 1.0)
    if scale >= 1.0:
        return image
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return image.resize(size, Image.Resampling.LANCZOS)


def _orientation(image: Image.Image) -> int:
    return int(image.getexif().get(0x0112, 1) or 1)


def _has_private_metadata(image: Image.Image) -> bool:
    """EXIF (GPS inside), XMP or comments that the user's readers must not get."""
    info = image.info
    return bool(image.getexif()) or any(k in info for k in ("exif", "xmp", "XML:com.adobe.xmp", "comment"))


def _has_alpha(image: Image.Image) -> bool:
    return image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info


def _auto_formats(image: Image.Image) -> list[str]:
    return ["png", "webp"] if _has_alpha(image) else ["jpeg", "png", "webp"]


def _encode(image: Image.Image, fmt: str, keep: dict[str, bytes], **params: Any) -> bytes:
    """Encode with the metadata to keep (ICC always; EXIF and XMP with --keep-metadata)."""
    buffer = io.BytesIO()
    image.save(buffer, FORMATS[fmt][0], **keep, **params)
    return buffer.getvalue()


def _score(reference: Reference, candidate: Image.Image | bytes) -> float:
    """SSIM of a candidate (pixels, or encoded bytes to decode) against the reference."""
    if isinstance(candidate, Image.Image):
        return reference.score(candidate)
    with Image.open(io.BytesIO(candidate)) as decoded:
        decoded.load()
        return reference.score(decoded)


def _search(trial: Callable[[int], Image.Image | bytes], reference: Reference, options: Options,
            low: int, high: int, guess: int = 75) -> tuple[Image.Image | bytes, int, float]:
    """The lowest quality in [low, high] whose SSIM keeps the target.

    Screenshots and flat graphics often keep the target at the lowest quality: one trial then.
    Otherwise `guess` (where most photos land) is tried, then `high` if the guess failed (when
    that fails too, no quality can pass); then the interval is narrowed by interpolating the
    SSIM between a failing and a passing trial, kept within the middle half of the interval, as
    SSIM flattens out near the top. Each trial
    is a full encode and SSIM; `trial` gives what the SSIM can be measured on (pixels or bytes),
    so lossless finishing steps (mozjpeg, oxipng) run once, on the winner.
    """
    def measure(quality: int) -> tuple[Image.Image | bytes, int, float]:
        result = trial(quality)
        return result, quality, _score(reference, result)

    if options.quality is not None:
        return measure(options.quality)
    failing = measure(low)
    passing: tuple[Image.Image | bytes, int, float] | None = None
    top = high + 1  # the lowest quality known to pass; above `high` until one does
    while failing[2] < options.target and top - failing[1] > 1:
        bottom = failing[1]
        if passing is not None:
            share = (options.target - failing[2]) / (passing[2] - failing[2])
            quality = round(bottom + (top - bottom) * min(max(share, 0.25), 0.75))
        else:  # the guess, then the highest quality: if that fails too, there is nothing to search
            quality = guess if bottom < guess else high
        tried = measure(min(max(quality, bottom + 1), top - 1))
        if tried[2] >= options.target:
            passing, top = tried, tried[1]
        else:
            failing = tried
    # Nothing passed: `failing` is then the highest quality, reported as it is.
    return passing or failing


def _candidates(fmt: str, image: Image.Image, keep: dict[str, bytes], options: Options) -> list[Candidate]:
    from picpipe.ssim import Reference

    if fmt == "jpeg":
        import mozjpeg_lossless_optimization as mozjpeg

        rgb = _flatten(image)
        reference = Reference(rgb)
        markers = mozjpeg.COPY_MARKERS.ALL if "exif" in keep else mozjpeg.COPY_MARKERS.ICC
        found: list[Candidate] = []
        cap: int | None = None  # the bytes to beat: 4:4:4 needs no SSIM trials at qualities larger than that
        # Chroma subsampling 4:2:0 wins on smooth photos, 4:4:4 on sharp colour edges: try both.
        for subsampling, label in ((2, "4:2:0"), (0, "4:4:4")):
            def jpeg(quality: int, subsampling: int = subsampling) -> bytes:
                return _encode(rgb, "jpeg", keep, quality=quality, subsampling=subsampling)

            high = 95 if cap is None else _highest_below(jpeg, 40, 95, cap)
            if high is None:
                continue
            raw, quality, score = _search(jpeg, reference, options, 40, high)
            assert isinstance(raw, bytes)
            found.append(Candidate(mozjpeg.optimize(raw, copy=markers), "jpeg", f"jpeg {label}+mozjpeg", quality,
                                   score))
            if score >= options.target and options.quality is None:
                cap = len(raw)
        return found
    if fmt == "png":
        return _png_candidates(image, keep, options)
    if fmt in ("webp", "avif"):
        def lossy(quality: int) -> bytes:
            extra = {"method": 6} if fmt == "webp" else {"speed": 6}
            return _encode(image, fmt, keep, quality=quality, **extra)

        data, quality, score = _search(lossy, Reference(image), options, 30, 95)
        assert isinstance(data, bytes)
        return [Candidate(data, fmt, fmt, quality, score)]
    raise ValueError(f"unknown format {fmt!r}")


def _highest_below(encode: Callable[[int], bytes], low: int, high: int, cap: int) -> int | None:
    """The highest quality in [low, high] that encodes to fewer than `cap` bytes (a few cheap encodes)."""
    if len(encode(low)) >= cap:
        return None
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if len(encode(middle)) < cap else (low, middle - 1)
    return low


def _png_candidates(image: Image.Image, keep: dict[str, bytes], options: Options) -> list[Candidate]:
    import imagequant

    from picpipe.ssim import Reference

    reference = Reference(image)
    rgba = image.convert("RGBA")
    raw = rgba.tobytes()  # once: imagequant's own PIL helper converts pixel by pixel in Python
    # Full dithering keeps smooth grey tones from banding; colour photos stay smooth at half
    # dithering, which is 5-10% smaller at the same SSIM. (None at all bands visibly, though
    # SSIM does not see it.)
    dithering = 1.0 if reference.grey else 0.5

    def palette(quality: int) -> Image.Image:  # a palette is lossless once chosen: score the pixels
        # A fresh libimagequant image each time: one reused after a dithered remap degrades the next.
        indexes, colours = imagequant.quantize_raw_rgba_bytes(raw, *rgba.size, dithering_level=dithering,
                                                               max_quality=quality)
        quantized = Image.frombytes("P", rgba.size, indexes)
        opaque = all(alpha == 255 for alpha in colours[3::4])
        if opaque:
            del colours[3::4]  # an RGB palette: no alpha channel to score or to store
        quantized.putpalette(colours, rawmode="RGB" if opaque else "RGBA")
        return quantized

    quantized, quality, score = _search(palette, reference, options, 10, 100)
    assert isinstance(quantized, Image.Image)
    found = [Candidate(_encode(quantized, "png", keep), "png", "png-palette+oxipng", quality, score)]
    # Lossless matters when the palette missed the target, or when the image has so few colours
    # that lossless may well be the smaller one (screenshots, diagrams).
    if score < options.target or image.getcolors(256) is not None:
        found.append(Candidate(_encode(image, "png", keep), "png", "png+oxipng", None, 1.0))
    # oxipng is the slow part: it re-packs only the one that wins at Pillow's compression.
    fit = [c for c in found if c.similarity >= options.target or options.quality is not None] or found
    best = min(fit, key=lambda c: len(c.data))
    best.data = _oxipng(best.data, "exif" in keep)
    return [best]


def _flatten(image: Image.Image) -> Image.Image:
    """JPEG has no alpha: composite over white, as browsers show a transparent image on a page."""
    if _has_alpha(image):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return image.convert("RGB") if image.mode not in ("RGB", "L") else image


def _lossless_original(fmt: str, data: bytes, keep_metadata: bool) -> list[Candidate]:
    """The original pixels re-packed without metadata: never worse in quality, often smaller."""
    if fmt == "jpeg":
        import mozjpeg_lossless_optimization as mozjpeg

        copy = mozjpeg.COPY_MARKERS.ALL if keep_metadata else mozjpeg.COPY_MARKERS.ICC
        try:
            return [Candidate(mozjpeg.optimize(data, copy=copy), "jpeg", "mozjpeg-lossless", None, 1.0)]
        except ValueError:
            return []
    if fmt == "png":
        import oxipng

        try:
            return [Candidate(_oxipng(data, keep_metadata), "png", "oxipng-lossless", None, 1.0)]
        except oxipng.PngError:
            return []
    return []


def _oxipng(png: bytes, keep_metadata: bool) -> bytes:
    """Lossless PNG re-packing; drops every ancillary chunk but colour ones (iCCP, sRGB, gAMA) unless asked."""
    import oxipng

    strip = oxipng.StripChunks.none() if keep_metadata else oxipng.StripChunks.safe()
    # Level 1: on the bench's 20 PNGs level 2 was 0.5 % smaller and took 1.6x as long.
    return oxipng.optimize_from_memory(png, level=1, strip=strip)


def output_name(source: str, fmt: str) -> str:
    """`photo.jpg` for photo.jpeg converted to JPEG, `shot.webp` for shot.png converted to WebP."""
    stem = os.path.splitext(os.path.basename(source))[0] or "image"
    return stem + FORMATS[fmt][1]
