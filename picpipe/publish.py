"""What may leave the machine: the one rule pp-upload, pp-backup, pp-server and pp-typora share.

A file is published only when it is a whole image of a type browsers show in a page (what an
image host is for): PNG (and APNG), JPEG, GIF, WebP, AVIF, BMP, ICO, and SVG without scripts,
event handlers or external references. Its signature says the type, a header decode says it is
one (and its size in pixels: a decompression bomb is refused), and its structure is walked to
its end marker, so a truncated file is refused too. A backup's original is never decoded, so no
pixel limit applies to it (a 180 MP panorama is backed up as it is). TIFF and HEIC are images, but only Safari
shows them: they are refused with a hint to convert them (pp-backup keeps them as originals).
Anything else, a notes folder's `../../.ssh/id_rsa` included, never leaves; `--any-file` is the
explicit way to host other files.

    from picpipe.publish import check, check_file
    facts = check_file("shot.png")   # {"format": "png", "mime": "image/png", "width": ..., "height": ...}
    # or PicpipeError with type empty / not_an_image / truncated / too_large / unsupported_format / unsafe_svg
"""

from __future__ import annotations

import io
import re
import string
import struct
from collections.abc import Callable, Mapping
from typing import Any

from picpipe.errors import PicpipeError

#: Images with more pixels are refused as decompression bombs: pp-compress's default limit too
#: (imaging.DEFAULT_MAX_PIXELS, not imported here: that would load the compressor).
MAX_PIXELS = 100_000_000
#: Files larger are refused before they are read (they are held in memory whole): 1 GiB is more
#: than the largest image the pixel limit lets through (100 MP of 16-bit RGBA in a PNG stored
#: without compression is 800 MB) and than any image host takes in one upload.
MAX_BYTES = 1 << 30
#: Formats that may be published, with the MIME type hosts are told.
MIME = {"png": "image/png", "jpeg": "image/jpeg", "gif": "image/gif", "webp": "image/webp",
        "avif": "image/avif", "bmp": "image/bmp", "ico": "image/x-icon", "svg": "image/svg+xml"}
ALLOWED = ", ".join(name.upper() for name in MIME)
#: Images no browser but Safari shows: kept by backups (check(originals=True)), never published.
ORIGINALS = {"tiff": "image/tiff", "heic": "image/heic"}
ANY_FILE = "--any-file publishes it anyway"

_SIGNATURES = ((b"\x89PNG\r\n\x1a\n", "png"), (b"\xff\xd8\xff", "jpeg"), (b"GIF87a", "gif"), (b"GIF89a", "gif"),
               (b"BM", "bmp"), (b"\x00\x00\x01\x00", "ico"), (b"II*\x00", "tiff"), (b"MM\x00*", "tiff"))


def sniff(head: bytes) -> str | None:
    """The image format a file's first bytes show (allowed or not), or None."""
    for signature, kind in _SIGNATURES:
        if head.startswith(signature):
            return kind
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[4:8] == b"ftyp" and head[8:12] in (b"avif", b"avis", b"heic", b"heix", b"mif1", b"msf1"):
        brands = head[8:max(16, int.from_bytes(head[:4], "big"))]  # major, version, compatible brands
        return "avif" if head[8:11] == b"avi" or b"avif" in brands else "heic"
    if _SVG_START.match(head[:4096].removeprefix(b"\xef\xbb\xbf")):
        return "svg"
    return None


#: An SVG document's start: the <svg> root (prefixed or not) after an optional prolog, processing
#: instructions, comments and a doctype (its internal subset included, refused later). An HTML
#: page with an inline <svg> icon is no SVG.
_SVG_START = re.compile(rb"\s*(?:<\?[^>]*>\s*|<!--.*?-->\s*|<!doctype[^>\[]*(?:\[.*?\])?\s*>\s*)*"
                        rb"<(?:[\w.-]+:)?svg[\s>/]", re.S | re.I)


def named(path: str, record: Mapping[str, Any]) -> str:
    """The path as messages name it: with the document and line it came from (pp-scan's `ref`),
    since that document, not the user, chose the file."""
    ref = record.get("ref")
    if isinstance(ref, dict) and isinstance(ref.get("doc"), str):
        line = ref.get("line")
        return f"{path} (from {ref['doc']}{f':{line}' if isinstance(line, int) else ''})"
    return path


def check_file(path: str, max_pixels: int = MAX_PIXELS, originals: bool = False) -> dict[str, Any]:
    """`check` on a file's bytes; a missing file, a folder, a FIFO or a device, an unreadable file or
    one over MAX_BYTES is its own error."""
    from picpipe.files import read_source

    return check(read_source(path, MAX_BYTES), path, max_pixels, originals)


def check(data: bytes, name: str, max_pixels: int = MAX_PIXELS, originals: bool = False) -> dict[str, Any]:
    """format, mime (and width, height of a raster image) of bytes that may be published;
    otherwise a PicpipeError naming `name` (the file) with a hint. `originals` (pp-backup) also
    lets TIFF and HEIC through on their signature and lifts the pixel limit: a camera's or a
    scanner's original is what a backup is for, it is never decoded, and no browser is asked to
    show it."""
    if not data:
        raise PicpipeError("empty", f"{name} is empty (0 bytes): nothing to publish",
                           "the file was not written completely; save or export it again")
    kind = sniff(data[:4096])
    if kind is None:
        raise PicpipeError("not_an_image", f"{name} is not an image file (only {ALLOWED} are published)",
                           f"give image files; {ANY_FILE} if you really host other files")
    if kind in ORIGINALS and originals:
        return {"format": kind, "mime": ORIGINALS[kind]}
    if kind not in MIME:
        raise PicpipeError("unsupported_format", f"{name} is a {kind.upper()} image, which most browsers do not "
                           "show", f"convert it first, e.g. pp-compress --format webp; {ANY_FILE}")
    if kind == "svg":
        _check_svg(data, name)
        return {"format": "svg", "mime": MIME["svg"]}
    try:
        problem = _ENDS[kind](data)
    except (IndexError, struct.error):  # the structure is cut before its first fields
        problem = "cut short"
    try:
        width, height = _header(data, kind, name)
    except PicpipeError:
        if problem is None or kind in ("bmp", "ico"):  # their signatures are too short to call it a cut image
            raise
        width = height = 0  # a header cut short: the file is truncated, said below
    if width * height > max_pixels and not originals:
        raise PicpipeError("too_large", f"{name} is {width}x{height} = {width * height} pixels, more than the "
                           f"limit of {max_pixels} (a decompression bomb?)",
                           "scale it down first (pp-compress --max-pixels N --max-width 4000), "
                           f"or {ANY_FILE} if you trust it")
    if problem is not None:
        raise PicpipeError("truncated", f"{name} is a truncated or damaged {kind.upper()} ({problem})",
                           "the file was not written completely; save or export it again")
    return {"format": kind, "mime": MIME[kind], "width": width, "height": height}


def _header(data: bytes, kind: str, name: str) -> tuple[int, int]:
    """(width, height) from the header, read by the format's own Pillow plugin: only the header
    is parsed, and Pillow's global bomb limit (and its warning) is not involved, we check ours."""
    import importlib

    module, cls = _PLUGINS[kind]
    try:
        plugin = getattr(importlib.import_module(f"PIL.{module}ImagePlugin"), cls)
    except ImportError:  # Pillow before 11.2 has no AVIF plugin: libvips reads the header
        return _vips_header(data, kind, name)
    try:
        with plugin(io.BytesIO(data)) as image:
            width, height = image.size
    except Exception as exc:  # each plugin fails in its own way (SyntaxError, OSError, struct.error...)
        raise _undecodable(name, kind, exc) from None
    if width < 1 or height < 1:
        raise PicpipeError("not_an_image", f"{name}: its {kind.upper()} header says {width}x{height} pixels",
                           f"the file is damaged; {ANY_FILE}")
    return width, height


_PLUGINS = {"png": ("Png", "PngImageFile"), "jpeg": ("Jpeg", "JpegImageFile"), "gif": ("Gif", "GifImageFile"),
            "webp": ("WebP", "WebPImageFile"), "avif": ("Avif", "AvifImageFile"), "bmp": ("Bmp", "BmpImageFile"),
            "ico": ("Ico", "IcoImageFile")}


def _vips_header(data: bytes, kind: str, name: str) -> tuple[int, int]:
    import pyvips

    try:
        image = pyvips.Image.new_from_buffer(data, "")
    except pyvips.Error as exc:
        raise _undecodable(name, kind, exc) from None
    return image.width, image.height


def _undecodable(name: str, kind: str, exc: Exception) -> PicpipeError:
    return PicpipeError("not_an_image", f"{name}: its {kind.upper()} header does not decode "
                        f"({str(exc).strip()[:200]})", f"the file is damaged or no image; {ANY_FILE}")


# -- where each format ends: None when the file is whole, else what is wrong --------------------

def _png_end(data: bytes) -> str | None:
    """Chunk by chunk to IEND (bytes after it are let be, as browsers do)."""
    pos = 8
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        pos += 12 + length
        if pos > len(data):
            break
        if kind == b"IEND":
            return None
    return "no IEND chunk at its end"


_MARKER_AFTER_SCAN = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")


def _jpeg_end(data: bytes) -> str | None:
    """Segment by segment, across each scan's entropy-coded data, to the main image's EOI (an EXIF
    thumbnail's EOI comes before the first scan; a motion photo's video after the EOI is let be)."""
    pos = 2
    while pos + 2 <= len(data):
        if data[pos] != 0xFF:
            return f"no marker at byte {pos}"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return None
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:
            pos += 2
            continue
        if pos + 4 > len(data):
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
        if marker == 0xDA:
            found = _MARKER_AFTER_SCAN.search(data, pos)
            if found is None:
                break
            pos = found.start()
    return "no end-of-image marker"


def _gif_end(data: bytes) -> str | None:
    """Block by block to the trailer (0x3B)."""
    pos = 13 + (3 << ((data[10] & 7) + 1) if data[10] & 0x80 else 0)
    while pos < len(data):
        block = data[pos]
        if block == 0x3B:
            return None
        if block == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif block == 0x2C:  # image: descriptor, local colour table, LZW code size, then sub-blocks
            if pos + 10 > len(data):
                break
            flags = data[pos + 9]
            pos += 11 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
        else:
            return f"unknown block {block:#04x} at byte {pos}"
        while pos < len(data) and data[pos]:  # sub-blocks, up to the empty one
            pos += 1 + data[pos]
        pos += 1
    return "no trailer"


def _riff_end(data: bytes) -> str | None:
    size = int.from_bytes(data[4:8], "little")
    return None if len(data) >= 8 + size else f"{len(data)} of {8 + size} bytes"


def _bmff_end(data: bytes) -> str | None:
    """AVIF: every top-level box whole, the image data (mdat) among them."""
    pos, kinds = 0, set()
    while pos + 8 <= len(data):
        size = int.from_bytes(data[pos:pos + 4], "big")
        kinds.add(data[pos + 4:pos + 8])
        if size == 1:
            size = int.from_bytes(data[pos + 8:pos + 16], "big")
        elif size == 0:  # to the end of the file
            size = len(data) - pos
        if size < 8:
            return f"a box of {size} bytes at byte {pos}"
        pos += size
    if pos != len(data):
        return f"the box at byte {pos} ends after the file"
    return None if b"mdat" in kinds else "no image data (mdat)"


def _bmp_end(data: bytes) -> str | None:
    declared, pixels = struct.unpack("<I4xI", data[2:14])
    if pixels >= len(data) or declared > len(data):
        return f"{len(data)} bytes, the header says {max(declared, pixels + 1)}"
    return None


def _ico_end(data: bytes) -> str | None:
    count = int.from_bytes(data[4:6], "little")
    for index in range(count):
        entry = data[6 + 16 * index:22 + 16 * index]
        if len(entry) < 16:
            return "the image directory is cut"
        size, offset = struct.unpack("<II", entry[8:16])
        if offset + size > len(data):
            return f"image {index + 1} ends after the file"
    return None


_ENDS: dict[str, Callable[[bytes], str | None]] = {
    "png": _png_end, "jpeg": _jpeg_end, "gif": _gif_end, "webp": _riff_end, "avif": _bmff_end, "bmp": _bmp_end,
    "ico": _ico_end}


# -- SVG ------------------------------------------------------------------------------------------

#: Elements that run code or embed another document.
_ACTIVE = {"script", "foreignobject", "handler", "listener", "iframe", "embed", "object"}
_ANIMATION = {"animate", "set", "animatemotion", "animatetransform", "animatecolor", "discard"}
SVG_NAMESPACE = "http://www.w3.org/2000/svg"
#: Attributes that carry a URL in SVG or in another vocabulary (HTML's, xml:base): each is a
#: reference, allowed only to this document or an inline raster image, whatever its element.
_URL_ATTRIBUTES = {"href", "src", "srcset", "poster", "action", "formaction", "data", "codebase", "cite",
                   "background", "longdesc", "usemap", "manifest", "ping", "lowsrc", "dynsrc", "archive",
                   "classid", "profile", "base"}
_REFRESH_URL = re.compile(r"\burl\s*=\s*['\"]?([^'\"]*)", re.I)
_SRCSET_DESCRIPTOR = re.compile(r"[0-9.]+[wxh]\Z", re.I)
_CSS_FUNCTION = re.compile(r"(@import|(?:-webkit-)?image-set\s*\(|\bsrc\s*\(|\burl\s*\(\s*(['\"]?)(.*?)\2\s*\))",
                           re.I | re.S)
_CSS_ESCAPE = re.compile(r"\\([0-9a-fA-F]{1,6}\s?|.)", re.S)
_SAFE_DATA = re.compile(r"data:image/(png|jpeg|jpg|gif|webp|avif|bmp)[;,]", re.I)
_SVG_HINT = ("remove it (e.g. with svgo, or export as a plain SVG) or publish a PNG; "
             f"{ANY_FILE} if you trust it")


class _Unsafe(Exception):
    """What makes the SVG unsafe to publish."""


def _check_svg(data: bytes, name: str) -> None:
    """An SVG published on a host's domain runs its scripts when opened: refused unless it is
    inert. Parsed by expat with internal DTD subsets refused, so no entity is ever declared or
    expanded (an external DTD is never read, by expat or by browsers)."""
    from xml.parsers import expat

    parser = expat.ParserCreate(namespace_separator=" ")
    parser.namespace_prefixes = True  # names are "uri local prefix": messages say <h:meta>
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    walker = _SvgWalker()
    parser.StartDoctypeDeclHandler = walker.doctype
    parser.EntityDeclHandler = walker.entity
    parser.StartElementHandler = walker.start
    parser.EndElementHandler = walker.end
    parser.CharacterDataHandler = walker.text
    parser.ProcessingInstructionHandler = walker.instruction
    try:
        parser.Parse(data, True)
    except _Unsafe as exc:
        raise PicpipeError("unsafe_svg", f"{name} is an SVG with {exc}, which would run or load something "
                           "when it is opened", _SVG_HINT) from None
    except expat.ExpatError as exc:
        raise PicpipeError("not_an_image", f"{name} is not a well-formed SVG ({exc})",
                           f"browsers do not show it either; fix or re-export it; {ANY_FILE}") from None
    if walker.root != "svg":
        raise PicpipeError("not_an_image", f"{name} is XML but not an SVG (its root is <{walker.root}>)",
                           f"give image files; {ANY_FILE}")


class _SvgWalker:
    """expat's handlers: each raises _Unsafe on the first thing that could run or fetch."""

    def __init__(self) -> None:
        self.root = ""
        self.styles = 0  # how deep inside <style> elements
        self.css: list[str] = []

    def doctype(self, name: str, system: str | None, public: str | None, internal: bool) -> None:
        if internal:
            raise _Unsafe("a DOCTYPE with declarations (entities are never expanded here)")

    def entity(self, *_: Any) -> None:
        raise _Unsafe("an ENTITY declaration")

    def start(self, tag: str, attrs: dict[str, str]) -> None:
        namespace, local, written = _name(tag)
        self.root = self.root or (local if namespace == SVG_NAMESPACE else written)
        if namespace not in (SVG_NAMESPACE, ""):  # an XHTML <meta>, <img>, <form>... would do HTML's work
            raise _Unsafe(f"a <{written}> element of another vocabulary than SVG's ({namespace})")
        if local.lower() in _ACTIVE:
            raise _Unsafe(f"a <{written}> element")
        if local.lower() == "style":
            self.styles += 1
        for key, value in attrs.items():
            attr = _name(key)[1].lower()
            if attr.startswith("on"):
                raise _Unsafe(f"an event handler attribute {attr}=")
            if attr == "srcset":  # "URL descriptor, URL descriptor": a data: URL keeps its commas
                for candidate in (word.strip(",") for word in value.split()):
                    if candidate and not _SRCSET_DESCRIPTOR.match(candidate):
                        _reference(candidate, attr)
            elif attr in _URL_ATTRIBUTES:
                _reference(value, attr)
            elif attr == "content" and (refresh := _REFRESH_URL.search(value)):
                _reference(refresh.group(1), "content=...url=")
            elif attr == "style" or "url(" in value.lower() or "\\" in value:
                _css(value)
        if local.lower() in _ANIMATION:
            target = attrs.get("attributeName", "").rsplit(":", 1)[-1].lower()
            if target in _URL_ATTRIBUTES or target.startswith("on"):
                raise _Unsafe(f"an animation of {target}=")

    def end(self, tag: str) -> None:
        if _name(tag)[1].lower() == "style":
            self.styles -= 1
            _css("".join(self.css))
            self.css.clear()

    def text(self, chunk: str) -> None:
        if self.styles:
            self.css.append(chunk)

    def instruction(self, target: str, data: str) -> None:
        raise _Unsafe(f"a processing instruction <?{target}?> (a stylesheet is an external reference)")


def _name(expat_name: str) -> tuple[str, str, str]:
    """(namespace, local name, the name as written) of expat's "uri local prefix" form."""
    parts = expat_name.split(" ")
    if len(parts) == 1:
        return "", parts[0], parts[0]
    return parts[0], parts[1], f"{parts[2]}:{parts[1]}" if len(parts) > 2 else parts[1]


def _reference(value: str, where: str) -> None:
    """Only a fragment of this document or an inline raster image: nothing fetched, nothing run."""
    value = value.strip()
    if not (value.startswith("#") or _SAFE_DATA.match(value)):
        raise _Unsafe(f"an external reference in {where}: {value[:80]!r}")


def _css(text: str) -> None:
    text = _CSS_ESCAPE.sub(lambda m: _unescape(m.group(1)), text)
    for found in _CSS_FUNCTION.finditer(text):
        if found.group(3) is None:
            raise _Unsafe(f"CSS {found.group(1).strip()!r} (an external reference)")
        _reference(found.group(3), "url()")


def _unescape(escape: str) -> str:
    """A CSS escape's character (`\\75` is u), so that `\\75rl(` is seen as url(."""
    digits = escape.strip()
    if digits and all(c in string.hexdigits for c in digits):
        code = int(digits, 16)
        return chr(code) if 0 < code <= 0x10FFFF else "\ufffd"
    return escape
