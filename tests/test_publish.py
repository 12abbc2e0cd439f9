"""Only images leave the machine: picpipe.publish's rule, and pp-upload, pp-backup, the editors'
pipeline and pp-server applying it (issue 13, defects 1, 8 and 15; review findings 3, 4, 5, 10)."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image
from test_editors import config_env, serve  # noqa: F401  (fixtures)

from conftest import jsonl, parse_jsonl
from picpipe import pipeline
from picpipe.errors import PicpipeError
from picpipe.imaging import DEFAULT_MAX_PIXELS
from picpipe.publish import MAX_BYTES, MAX_PIXELS, check, check_file, sniff
from test_upload import image


def encoded(fmt: str, size: tuple[int, int] = (40, 30), **options: object) -> bytes:
    picture = Image.linear_gradient("L").resize(size).convert("RGB")
    out = io.BytesIO()
    picture.save(out, fmt, **options)
    return out.getvalue()


def chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def png_bomb(side: int = 100_000) -> bytes:
    """A whole, tiny PNG whose header says side x side pixels: what a decompression bomb looks like."""
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 4096))
            + chunk(b"IEND", b""))


def refused(data: bytes, name: str = "x") -> PicpipeError:
    with pytest.raises(PicpipeError) as caught:
        check(data, name)
    assert caught.value.hint, caught.value.message
    return caught.value


SVG = '<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink">{}</svg>'
CLEAN_SVG = SVG.format('<defs><linearGradient id="g"><stop offset="0"/></linearGradient></defs>'
                       '<style>rect { fill: url("#g") }</style><rect width="9" height="9" fill="url(#g)"/>'
                       '<use xlink:href="#g"/><image href="data:image/png;base64,iVBORw0KGgo="/>'
                       '<a href="#top"><text>x</text></a>').encode()
XHTML = 'xmlns:h="http://www.w3.org/1999/xhtml"'
SCRIPT_SVG = SVG.format("<script>fetch('/steal?c=' + document.cookie)</script>").encode()


# -- the rule, as a library function ------------------------------------------------------------

@pytest.mark.parametrize("fmt, options, name", [
    ("PNG", {}, "png"), ("JPEG", {}, "jpeg"), ("JPEG", {"progressive": True}, "jpeg"), ("GIF", {}, "gif"),
    ("WEBP", {}, "webp"), ("AVIF", {}, "avif"), ("BMP", {}, "bmp"), ("ICO", {"sizes": [(16, 16)]}, "ico"),
])
def test_whole_images_of_the_allowed_types_pass_with_their_facts(fmt, options, name):
    facts = check(encoded(fmt, **options), "a")
    assert facts["format"] == name and facts["mime"].startswith("image/")
    assert (facts["width"], facts["height"]) == ((16, 12) if name == "ico" else (40, 30))


def test_what_follows_the_end_of_an_image_is_let_be():
    exif = Image.Exif()
    exif[0x010F] = "camera"
    with_thumbnail = io.BytesIO()
    Image.new("RGB", (400, 300), (1, 2, 3)).save(with_thumbnail, "JPEG", exif=exif)
    motion_photo = encoded("JPEG") + b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 40  # a video after EOI
    for data in (with_thumbnail.getvalue(), motion_photo, encoded("PNG") + b"trailing bytes"):
        assert check(data, "a")["format"] in ("jpeg", "png")


def test_an_empty_file_is_refused():
    error = refused(b"", "shot.png")
    assert error.type == "empty" and "shot.png" in error.message and "0 bytes" in error.message


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "WEBP", "AVIF"])
def test_a_truncated_image_is_refused_wherever_it_is_cut(fmt):
    data = encoded(fmt, (64, 48))
    types = set()
    for cut in range(1, len(data)):
        error = refused(data[:cut], f"cut.{fmt.lower()}")  # never an exception of another kind
        types.add(error.type)
        if cut > len(data) // 4:
            assert error.type == "truncated" and fmt in error.message, (cut, error.message)
    assert types <= {"not_an_image", "truncated"}


@pytest.mark.parametrize("text", [b"root:x:0:0:root:/root:/bin/bash\n", b"-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl\n",
                                  b"BM but a text", b"<html><body>hi</body></html>", b"\x00" * 64])
def test_text_and_other_files_named_png_are_not_images(tmp_path, text):
    path = tmp_path / "photo.png"
    path.write_bytes(text)
    with pytest.raises(PicpipeError) as caught:
        check_file(str(path))
    assert caught.value.type in ("not_an_image", "truncated") and str(path) in caught.value.message
    assert "--any-file" in str(caught.value.hint)


def test_a_missing_file_and_a_folder_say_so(tmp_path):
    for path, kind in ((tmp_path / "gone.png", "not_found"), (tmp_path, "is_a_folder")):
        with pytest.raises(PicpipeError) as caught:
            check_file(str(path))
        assert caught.value.type == kind


def test_a_file_over_max_bytes_is_refused_unread(tmp_path):
    big = tmp_path / "huge.png"
    with big.open("wb") as handle:  # sparse: nothing is written, and reading it would take a GiB
        handle.write(png_bomb())
        handle.truncate(MAX_BYTES + 1)
    with pytest.raises(PicpipeError) as caught:
        check_file(str(big))
    assert caught.value.type == "too_large" and str(big) in caught.value.message and caught.value.hint


def test_tiff_is_an_image_browsers_do_not_show():
    error = refused(encoded("TIFF"), "scan.tif")
    assert error.type == "unsupported_format" and "pp-compress --format" in str(error.hint)


def test_backups_keep_originals_no_browser_shows():
    assert check(encoded("TIFF"), "scan.tif", originals=True) == {"format": "tiff", "mime": "image/tiff"}
    # A backup never decodes: a 10-gigapixel header is copied as it is (a panorama), whole and checked.
    assert check(png_bomb(), "pano.png", originals=True)["width"] == 100_000
    with pytest.raises(PicpipeError) as cut:
        check(png_bomb()[:40], "pano.png", originals=True)
    assert cut.value.type == "truncated"
    assert refused(b"II*\x00" + b"\x00" * 4, "short.tif").type == "unsupported_format"
    assert refused(b"-----BEGIN OPENSSH PRIVATE KEY-----\n").type == "not_an_image"


def test_a_decompression_bomb_is_too_large_with_its_pixel_count_and_the_limit():
    error = refused(png_bomb(), "bomb.png")
    assert error.type == "too_large"
    assert "100000x100000" in error.message and str(MAX_PIXELS) in error.message
    assert "--any-file" in str(error.hint) and "pp-compress" in str(error.hint)
    assert MAX_PIXELS == DEFAULT_MAX_PIXELS  # the same limit as pp-compress's


def test_a_clean_svg_passes():
    assert check(CLEAN_SVG, "icon.svg") == {"format": "svg", "mime": "image/svg+xml"}
    inkscape = SVG.format('<g xmlns:inkscape="http://www.inkscape.org/namespaces/inkscape" inkscape:label="L">'
                          '<image srcset="data:image/png;base64,iVBORw0KGgo= 2x"/><title xmlns="">t</title></g>')
    assert check(inkscape.encode(), "drawing.svg")["format"] == "svg"  # editors' attributes are inert
    prefixed = b'<s:svg xmlns:s="http://www.w3.org/2000/svg"><s:rect width="1" height="1"/></s:svg>'
    assert check(prefixed, "prefixed.svg")["format"] == "svg"
    plain_doctype = (b'<?xml version="1.0"?>\n<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" '
                     b'"http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">\n' + CLEAN_SVG)
    assert check(plain_doctype, "illustrator.svg")["format"] == "svg"


@pytest.mark.parametrize("body, named", [
    ("<script>alert(1)</script>", "<script>"),
    ('<g onload="alert(1)"/>', "onload"),
    ('<rect ONCLICK="alert(1)"/>', "onclick"),
    ('<image href="https://tracker.example/p.png"/>', "https://tracker.example/p.png"),
    ('<use xlink:href="sprites.svg#icon"/>', "sprites.svg#icon"),
    ('<a xlink:href=" javascript:alert(1)"><text>x</text></a>', "javascript:"),
    ('<image href="data:image/svg+xml;base64,PHN2Zz4="/>', "data:image/svg+xml"),
    ('<foreignObject><div xmlns="http://www.w3.org/1999/xhtml">x</div></foreignObject>', "foreignObject"),
    ("<style>@import 'https://e.example/x.css';</style>", "@import"),
    ("<style><![CDATA[rect { fill: url(https://e.example/x) }]]></style>", "https://e.example/x"),
    ('<rect style="fill: \\75 rl(https://e.example/x)"/>', "https://e.example/x"),
    ('<rect filter="url(http://e.example/f.svg#f)"/>', "http://e.example/f.svg#f"),
    ('<a><set attributeName="href" to="javascript:alert(1)"/><text>x</text></a>', "animation of href"),
    # XHTML inside an SVG does HTML's work: only SVG elements pass (review finding 5)
    (f'<h:meta {XHTML} http-equiv="refresh" content="0;url=https://evil.example/"/>', "<h:meta>"),
    (f'<h:img {XHTML} srcset="https://evil.example/a.png 2x"/>', "<h:img>"),
    (f'<h:video {XHTML} poster="https://evil.example/p.png"/>', "<h:video>"),
    (f'<h:form {XHTML} action="https://evil.example/"><h:input/></h:form>', "<h:form>"),
    (f'<h:button {XHTML} formaction="javascript:alert(1)">x</h:button>', "<h:button>"),
    ('<math xmlns="http://www.w3.org/1998/Math/MathML"><mi>x</mi></math>', "<math>"),
    # every attribute that carries a URL is a reference, whatever the element
    ('<image srcset="data:image/png;base64,iVBORw0KGgo= 1x, https://evil.example/b.png 2x"/>',
     "https://evil.example/b.png"),
    ('<g content="0; URL=\'https://evil.example/\'"/>', "https://evil.example/"),
    ('<g xml:base="https://evil.example/"><use href="#a"/></g>', "https://evil.example/"),
    ('<a><set attributeName="xlink:href" to="https://evil.example/"/><text>x</text></a>', "animation of href"),
])
def test_an_svg_that_runs_or_loads_something_is_unsafe(body, named):
    error = refused(SVG.format(body).encode(), "logo.svg")
    assert error.type == "unsafe_svg" and named in error.message and "logo.svg" in error.message
    assert "--any-file" in str(error.hint)


def test_svg_entities_are_refused_never_expanded():
    laughs = "".join(f'<!ENTITY l{i} "{f"&l{i - 1};" * 10}">' for i in range(1, 10))
    bomb = f'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY l0 "lol">{laughs}]>{SVG.format("<text>&l9;</text>")}'
    error = refused(bomb.encode(), "laughs.svg")
    assert error.type == "unsafe_svg" and "DOCTYPE" in error.message
    stylesheet = b'<?xml version="1.0"?><?xml-stylesheet href="https://e.example/x.css"?>' + CLEAN_SVG
    assert refused(stylesheet).type == "unsafe_svg"


def test_an_svg_that_is_no_svg_is_not_an_image():
    assert refused(b'<svg xmlns="http://www.w3.org/2000/svg"><rect></svg>').type == "not_an_image"
    assert refused(b'<?xml version="1.0"?><html><svg/></html>').type == "not_an_image"
    page = b"<!-- error page -->\n<!DOCTYPE html><html><body><svg><path d='M0 0'/></svg>Not found</body></html>"
    assert sniff(page) is None and refused(page).type == "not_an_image"  # an inline icon makes no SVG


# -- the commands ---------------------------------------------------------------------------------

@pytest.fixture
def notes(tmp_path: Path) -> Path:
    """A shared vault: one real picture and, beside it, what a hostile note points at."""
    folder = tmp_path / "notes"
    image(folder / "good.png", (10, 200, 30))
    (folder / "passwd.png").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (folder / "id_rsa").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n")
    (folder / "empty.png").write_bytes(b"")
    (folder / "cut.jpg").write_bytes(encoded("JPEG", (64, 48))[:300])
    (folder / "bomb.png").write_bytes(png_bomb())
    (folder / "script.svg").write_bytes(SCRIPT_SVG)
    (folder / "note.md").write_text("".join(f"![{n}]({n})\n" for n in
                                            ("passwd.png", "good.png", "id_rsa", "empty.png", "cut.jpg", "bomb.png",
                                             "script.svg")))
    return folder


def hosted_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def test_upload_publishes_only_the_images_a_note_names(run, tmp_path, notes):
    scan = run("pp-scan", "--local", str(notes))
    env = {"PICPIPE_SITE_TYPE": "local", "PICPIPE_SITE_DIR": str(tmp_path / "site"),
           "PICPIPE_SITE_BASE_URL": "https://img.example/"}
    result = run("pp-upload", "--host", "site", "--ledger", str(tmp_path / "ledger.jsonl"), input=scan.stdout,
                 extra_env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == [
        "not_an_image", None, "not_an_image", "empty", "truncated", "too_large", "unsafe_svg"]
    for record in records:
        if "error" in record:
            assert "note.md:" in record["error"]["message"] and record["error"]["hint"]
            assert record["error"]["stage"] == "upload" and "url" not in record
    assert "a picpipe bug" not in result.stdout + result.stderr  # the bomb is the file's problem, not ours
    good = (notes / "good.png").read_bytes()
    assert list(hosted_files(tmp_path / "site").values()) == [good]
    assert records[1]["url"].startswith("https://img.example/") and records[1]["mime"] == "image/png"


def test_upload_any_file_hosts_other_files(run, tmp_path, notes):
    site = tmp_path / "site"
    paths = [str(notes / "id_rsa"), str(notes / "bomb.png"), str(notes / "script.svg")]
    result = run("pp-upload", "--host", "local", "--any-file", "--ledger", str(tmp_path / "l.jsonl"), *paths,
                 extra_env={"PICPIPE_LOCAL_DIR": str(site)})
    assert result.returncode == 0, result.stderr
    assert sorted(hosted_files(site).values()) == sorted(Path(p).read_bytes() for p in paths)
    assert "--any-file" in run("pp-upload", "--help").stdout


def test_upload_sends_the_type_it_checked_never_a_records(run, tmp_path, notes):
    """A record's mime becomes the Content-Type the host serves: a PNG said to be text/html must
    not become a page (review finding 3). A device or a FIFO is refused without reading it, a
    file over MAX_BYTES before it is read (finding 4)."""
    good = notes / "good.png"
    fifo = tmp_path / "fifo.png"
    os.mkfifo(fifo)
    big = tmp_path / "big.png"
    with big.open("wb") as handle:
        handle.truncate(MAX_BYTES + 1)
    records = [{"path": str(good), "sha256": hashlib.sha256(good.read_bytes()).hexdigest(), "mime": "text/html",
                "format": "html"}, {"path": "/dev/zero"}, {"path": str(fifo)}, {"path": str(big)}]
    result = run("pp-upload", "--host", "local", "--ledger", str(tmp_path / "l.jsonl"), input=jsonl(records),
                 extra_env={"PICPIPE_LOCAL_DIR": str(tmp_path / "site")}, timeout=30)
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr
    out = parse_jsonl(result.stdout)
    assert (out[0]["mime"], out[0]["format"], out[0]["url"].endswith(".png")) == ("image/png", "png", True)
    assert [r["error"]["type"] for r in out[1:]] == ["not_a_file", "not_a_file", "too_large"]
    assert "/dev/zero" in out[1]["error"]["message"] and "FIFO" in out[2]["error"]["message"]
    assert all(r["error"]["hint"] for r in out[1:])
    assert list(hosted_files(tmp_path / "site").values()) == [good.read_bytes()]


def test_upload_of_a_clean_svg_says_its_type(run, tmp_path):
    (tmp_path / "icon.svg").write_bytes(CLEAN_SVG)
    result = run("pp-upload", "--host", "local", "--ledger", str(tmp_path / "l.jsonl"), str(tmp_path / "icon.svg"),
                 extra_env={"PICPIPE_LOCAL_DIR": str(tmp_path / "site")})
    assert result.returncode == 0, result.stderr
    [record] = parse_jsonl(result.stdout)
    assert record["format"] == "svg" and record["mime"] == "image/svg+xml"


def test_backup_copies_only_images_unless_any_file(run, tmp_path, notes):
    usb = tmp_path / "usb"
    env = {"PICPIPE_USB_TYPE": "local", "PICPIPE_USB_DIR": str(usb)}
    names = ["passwd.png", "good.png", "empty.png", "cut.jpg"]
    inputs = jsonl([{"path": str(notes / name)} for name in names])
    result = run("pp-backup", "--to", "usb", "--ledger", str(tmp_path / "l.jsonl"), input=inputs, extra_env=env)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    records = parse_jsonl(result.stdout)
    assert [r.get("error", {}).get("type") for r in records] == ["not_an_image", None, "empty", "truncated"]
    assert all(r["error"]["stage"] == "backup" and "backups" not in r for r in records if "error" in r)
    assert list(hosted_files(usb).values()) == [(notes / "good.png").read_bytes()]
    assert len(parse_jsonl((tmp_path / "l.jsonl").read_text())) == 1

    (tmp_path / "scan.tif").write_bytes(encoded("TIFF"))  # an original no browser shows is still kept
    kept = run("pp-backup", "--to", "usb", "--ledger", str(tmp_path / "l.jsonl"), str(tmp_path / "scan.tif"),
               str(notes / "bomb.png"), extra_env=env)  # nor is the pixel limit: a backup never decodes
    assert kept.returncode == 0 and [r.get("error") for r in parse_jsonl(kept.stdout)] == [None, None], kept.stderr
    assert encoded("TIFF") in hosted_files(usb).values() and png_bomb() in hosted_files(usb).values()

    anyway = run("pp-backup", "--to", "usb", "--any-file", "--ledger", str(tmp_path / "l.jsonl"),
                 str(notes / "passwd.png"), extra_env=env)
    assert anyway.returncode == 0, anyway.stderr
    assert (notes / "passwd.png").read_bytes() in hosted_files(usb).values()


def test_the_editors_pipeline_refuses_an_svg_with_a_script_and_a_bomb_in_their_places(env, tmp_path, notes):
    environ = {**env, "PICPIPE_SITE_TYPE": "local", "PICPIPE_SITE_DIR": str(tmp_path / "site"),
               "PICPIPE_SITE_BASE_URL": "https://img.example/"}
    chain = pipeline.Pipeline(pipeline.Settings("site", ledger=str(tmp_path / "l.jsonl")), environ, log=lambda _: None)
    items = [str(notes / "script.svg"), str(notes / "good.png"), str(notes / "bomb.png"), str(notes / "cut.jpg")]
    outcomes = chain.run(items)
    assert [o.item for o in outcomes] == items
    assert [o.record.get("error", {}).get("type") for o in outcomes] == ["unsafe_svg", None, "too_large", "truncated"]
    problem = outcomes[0].problem()
    assert problem is not None and "script" in problem[0] and "--any-file" in str(problem[1])
    assert outcomes[1].url is not None
    assert list(hosted_files(tmp_path / "site").values()) == [(notes / "good.png").read_bytes()]


def test_pp_server_does_not_publish_an_svg_with_a_script(serve, tmp_path, notes):  # noqa: F811
    answer = serve().post(data=json.dumps({"list": [str(notes / "script.svg"), str(notes / "good.png")]}),
                          headers={"Content-Type": "application/json"})
    assert answer.status_code == 500 and "script" in answer.json()["message"]
    published = hosted_files(tmp_path / "site")
    assert SCRIPT_SVG not in published.values()
    assert hashlib.sha256((notes / "good.png").read_bytes()).hexdigest() in {
        hashlib.sha256(data).hexdigest() for data in published.values()}
