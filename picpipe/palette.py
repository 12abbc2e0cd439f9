"""Palette quantization with libimagequant, for pp-compress's quality search.

A quality search quantizes the same image several times. The `imagequant` package's helper
copies the pixels into a new libimagequant image on every call; this keeps one (through the
package's cffi bindings), so the pixels are handed over once and the contrast maps that
libimagequant derives from them are computed once.
"""

from __future__ import annotations

from types import TracebackType
from typing import Any

from PIL import Image


class Quantizer:
    """One RGBA image, ready to be reduced to a palette at any imagequant quality (0-100)."""

    def __init__(self, rgba: Image.Image, dithering: float) -> None:
        import imagequant

        self._lib, self._ffi = imagequant.lib, imagequant.ffi
        self._size = rgba.size
        self._pixels = rgba.tobytes()  # libimagequant keeps a pointer to it: it must outlive the image
        self._dithering = dithering
        lib = self._lib
        self._attr = lib.liq_attr_create()
        self._image = lib.liq_image_create_rgba(self._attr, self._pixels, *self._size, 0)

    def remap(self, quality: int) -> Image.Image:
        """The image as a palette ("P") at this imagequant quality; the palette has alpha only if used."""
        lib, ffi = self._lib, self._ffi
        self._check(lib.liq_set_quality(self._attr, 0, quality))
        result = ffi.new("liq_result**")
        self._check(lib.liq_image_quantize(self._image, self._attr, result))
        try:
            lib.liq_set_dithering_level(result[0], self._dithering)
            width, height = self._size
            indexes = ffi.new("char[]", width * height)
            self._check(lib.liq_write_remapped_image(result[0], self._image, indexes, width * height))
            palette = lib.liq_get_palette(result[0])
            entries = palette.entries[0 : palette.count]
            opaque = all(entry.a == 255 for entry in entries)
            colours = [channel for entry in entries
                       for channel in ((entry.r, entry.g, entry.b) if opaque else (entry.r, entry.g, entry.b, entry.a))]
        finally:
            lib.liq_result_destroy(result[0])
        image = Image.frombuffer("P", self._size, ffi.buffer(indexes), "raw", "P", 0, 1).copy()
        image.putpalette(colours, rawmode="RGB" if opaque else "RGBA")  # no alpha channel unless needed
        return image

    def close(self) -> None:
        self._lib.liq_image_destroy(self._image)
        self._lib.liq_attr_destroy(self._attr)

    def __enter__(self) -> Quantizer:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def _check(self, code: Any) -> None:
        if code != self._lib.LIQ_OK:
            raise RuntimeError(f"libimagequant error {code}")
