"""pp-scan and pp-rewrite on what real blogs write: CommonMark's HTML blocks (with markdown-it as
the oracle for which images a renderer shows), Obsidian embeds, lazy-loading attributes, front
matter, Hugo/Hexo/Jekyll tags. Each fixture cites the generator's documentation it follows."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from picpipe.docs import decode_target, find_refs

FIXTURES = Path(__file__).parent / "fixtures" / "docs"
SHOWN = ("inline", "reference", "html")  # the kinds a CommonMark renderer turns into <img src>


class _Images(HTMLParser):
    """The src of each <img> a browser shows: none inside <pre> or <code> (pp-scan's rule too)."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.code = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("pre", "code", "textarea"):
            self.code += 1
        elif tag == "img" and not self.code:
            self.srcs += [value or "" for name, value in attrs if name == "src"][:1]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("pre", "code", "textarea"):
            self.code -= 1


def rendered(text: str) -> list[str]:
    markdown_it = pytest.importorskip("markdown_it")
    parser = _Images()
    parser.feed(markdown_it.MarkdownIt("commonmark").render(text))
    return [unquote(src) for src in parser.srcs]


def scanned(text: str, doc: str = "doc.md") -> list[str]:
    return [unquote(decode_target(ref.target, ref.kind)) for ref in find_refs(text, doc) if ref.kind in SHOWN]


ORACLE_DOCUMENTS = [
    (FIXTURES / "html_blocks.md").read_text(encoding="utf-8"),
    '<div style="max-width:300px;">\n![a](https://x.example/a.png)\n![b](https://x.example/b.png)\n\n![c](c.png)\n',
    "<DIV>\n![a](a.png)\n\n<div/>\n![b](b.png)\n",
    "<pre>\n![a](a.png)\n</pre>\n![b](b.png)\n",
    "<script>\nlet s = '![a](a.png)'\n\n![still script](s.png)\n</script>\n![b](b.png)\n",
    "<!--\n![a](a.png)\n\n-->\n![b](b.png)\n",
    "<a href=\"x\">\n![a](a.png)\n\n<a href=\"x\"> text\n![b](b.png)\n",
    "<custom-element data-x='1'>\n![a](a.png)\n\n</custom-element>\n\n![b](b.png)\n",
    "- item\n\n  <div>\n  ![a](a.png)\n\n  ![b](b.png)\n",
    "Text\n<div>\n![a](a.png)\n",
    "[a]:\n<https://x.example/a b.png>\n\n![a]\n",
]


@pytest.mark.parametrize("text", ORACLE_DOCUMENTS)
def test_the_images_pp_scan_reports_are_those_markdown_it_shows(text):
    assert scanned(text) == rendered(text)


def test_html_blocks_hide_markdown_but_not_img_tags():
    text = (FIXTURES / "html_blocks.md").read_text(encoding="utf-8")
    found = [(ref.line, ref.kind, ref.target.rsplit("/", 1)[-1]) for ref in find_refs(text, "doc.md")]
    assert found == [(5, "html", "div-img.png"), (8, "inline", "after.png"), (10, "html", "alone.png"),
                     (14, "inline", "para.png"), (16, "inline", "para2.png"), (19, "inline", "php.png"),
                     (22, "inline", "doctype.png"), (30, "inline", "td2.png"), (38, "html", "details.png"),
                     (44, "reference", "next-line.png")]
