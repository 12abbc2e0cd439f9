"""pp-scan and pp-rewrite on what real blogs write: CommonMark's HTML blocks (with markdown-it as
the oracle for which images a renderer shows), Obsidian embeds, lazy-loading attributes, front
matter, Hugo/Hexo/Jekyll tags. Each fixture cites the generator's documentation it follows."""

from __future__ import annotations

import html
import random
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote

import pytest

from conftest import jsonl, parse_jsonl
from picpipe.docs import Ref, Replacements, decode_target, find_refs, load, rewrite, url_key

FIXTURES = Path(__file__).parent / "fixtures" / "docs"
SHOWN = ("inline", "reference", "html")  # the kinds a CommonMark renderer turns into <img src>


class _Images(HTMLParser):
    """The src of each <img> a browser shows: all but those in raw text (<textarea>) or inert
    (<template>) content; html.parser already reads <script> and <style> as text."""

    def __init__(self) -> None:
        super().__init__()
        self.srcs: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in ("textarea", "template"):
            self.hidden += 1
        elif tag == "img" and not self.hidden:
            self.srcs += [value or "" for name, value in attrs if name == "src"][:1]

    def handle_endtag(self, tag: str) -> None:
        if tag in ("textarea", "template"):
            self.hidden -= 1


def shown(page: str) -> list[str]:
    parser = _Images()
    parser.feed(page)
    return [unquote(src) for src in parser.srcs]


def rendered(text: str) -> list[str]:
    """The images markdown-it's CommonMark renderer shows."""
    markdown_it = pytest.importorskip("markdown_it")
    return shown(markdown_it.MarkdownIt("commonmark").render(text))


def rendered_by_cmark(text: str) -> list[str]:
    """The images cmark-gfm shows (its CommonMark core, raw HTML kept: no GFM tag filter)."""
    cmarkgfm = pytest.importorskip("cmarkgfm")
    from cmarkgfm.cmark import Options

    return shown(cmarkgfm.markdown_to_html(text, options=Options.CMARK_OPT_UNSAFE))


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
    # a block ends where the block quote or list item it is in ends (§5.1, §5.2: no laziness for it)
    "> <div>\n> ![a](a.png)\n![b](b.png)\n",
    "> <pre>\n> ![a](a.png)\n![b](b.png)\n</pre>\n",
    "- <div>\n  ![a](a.png)\n![b](b.png)\n",
    "- item\n\n  <div>\n  ![a](a.png)\n![b](b.png)\n",
    "1. <pre>\n   ![a](a.png)\n![b](b.png)\n",
    "- item\n  ```\n  ![a](a.png)\n![b](b.png)\n",
    "> ```\n> ![a](a.png)\n\n![b](b.png)\n",
    "> - <div>\n>   ![a](a.png)\n> ![b](b.png)\n",
    "- item\n<div>\n![a](a.png)\n",
    "- a\n\n  b\nlazy ![c](c.png)\n",
    # what a browser shows inside raw HTML: <img> in <pre> and <code> yes, in <textarea> or <script> no
    "<pre>\n<img src=\"pre.png\">\n![md](md.png)\n</pre>\n",
    "A <code><img src=\"code.png\"></code> and <code>![md](md.png)</code>\n",
    "<textarea>\n<img src=\"ta.png\">\n</textarea>\n<p><img src=\"p.png\"></p>\n",
    "x <script>![s](s.png)</script> <template><img src=\"t.png\"></template> ![y](y.png)\n",
]


@pytest.mark.parametrize("text", ORACLE_DOCUMENTS)
def test_the_images_pp_scan_reports_are_those_markdown_it_and_cmark_gfm_show(text):
    assert scanned(text) == rendered(text) == rendered_by_cmark(text)


#: Lines of random documents: blocks that open, close and contain, under every container prefix.
_PIECES = ("<div>", "</div>", "<pre>", "</pre>", "<span>", "```", "~~~", "````", " ```", "    code", "", "", "text",
           "# h", "---", "===", "<img src=\"{n}.png\">", "![x]({n}.png)", "[r]: {n}.png", "![r]", "<table><tr><td>",
           "<details>", "`![c]({n}.png)`", "2. ![o]({n}.png)", "+ x", ">> ![q]({n}.png)", "<!-- c -->",
           "\t![t]({n}.png)", "<p>", "</p>", "<custom-el>", "<a href='x'>", "10) y", "-\t![u]({n}.png)", "*", "1.",
           "> ", "<pre><img src=\"{n}.png\"></pre>", "# ![hh]({n}.png)", "[![l]({n}.png)](x)")
_PREFIXES = ("", "", "", "> ", "- ", "  ", "1. ", "   ", "> - ", ">   ", "\t", "* ", ">\t", "-\t", " > ", "    ",
             "2) ", ">> ")


def test_random_documents_show_the_images_both_renderers_show():
    """pp-scan's block structure (containers, laziness, tabs, HTML blocks, fences) against both
    CommonMark renderers on 4,000 random documents. Unused definitions are pp-scan's own
    addition; documents the renderers disagree on have no oracle; front matter is not CommonMark."""
    rng = random.Random(17)
    compared = 0
    for _ in range(4000):
        lines = [rng.choice(_PREFIXES) + rng.choice(_PIECES).format(n=n) for n in range(1, rng.randint(2, 9))]
        text = "\n".join(lines) + "\n"
        shown, by_cmark = rendered(text), rendered_by_cmark(text)
        if shown != by_cmark or text.startswith("---"):
            continue
        found = scanned(text)
        if "[r]:" in text:
            definitions = {unquote(decode_target(ref.target, ref.kind)) for ref in find_refs(text, "doc.md")
                           if ref.kind == "reference"}
            assert set(shown) <= set(found) and set(found) - set(shown) <= definitions, text
        else:
            assert found == shown, text
        compared += 1
    assert compared > 3000


def test_html_blocks_hide_markdown_but_not_img_tags():
    text = (FIXTURES / "html_blocks.md").read_text(encoding="utf-8")
    found = [(ref.line, ref.kind, ref.target.rsplit("/", 1)[-1]) for ref in find_refs(text, "doc.md")]
    assert found == [(5, "html", "div-img.png"), (8, "inline", "after.png"), (10, "html", "alone.png"),
                     (14, "inline", "para.png"), (16, "inline", "para2.png"), (19, "inline", "php.png"),
                     (22, "inline", "doctype.png"), (30, "inline", "td2.png"), (38, "html", "details.png"),
                     (44, "reference", "next-line.png")]


# -- every syntax: what pp-scan reads -------------------------------------------------------------
def vault(tmp_path: Path) -> Path:
    """An Obsidian vault: the note in notes/, attachments elsewhere, one name twice."""
    (tmp_path / "vault" / ".obsidian").mkdir(parents=True)
    for name in ("attachments/shot.png", "notes/local.png", "a/b/dup.png", "notes/sub/dup.png", "notes/paper.pdf"):
        (tmp_path / "vault" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "vault" / name).write_bytes(b"\x89PNG\r\n\x1a\n")
    note = tmp_path / "vault" / "notes" / "note.md"
    note.write_text((FIXTURES / "obsidian.md").read_text(encoding="utf-8"), encoding="utf-8")
    return note


def found(path: Path) -> list[tuple[int, str, str, str]]:
    text = path.read_text(encoding="utf-8")
    return [(ref.line, ref.kind, ref.target, ref.url or ref.resolved or "") for ref in find_refs(text, str(path))]


def test_obsidian_embeds_are_found_as_obsidian_finds_their_files(tmp_path):
    note = vault(tmp_path)
    root = tmp_path / "vault"
    assert found(note) == [
        (3, "obsidian", "shot.png", str(root / "attachments/shot.png")),  # its name, anywhere in the vault
        (3, "obsidian", "shot.png", str(root / "attachments/shot.png")),
        (3, "obsidian", "attachments/shot.png", str(root / "attachments/shot.png")),  # a vault path
        (4, "obsidian", "local.png", str(root / "notes/local.png")),
        (4, "obsidian", "dup.png", str(root / "notes/sub/dup.png")),  # of two, the one nearest the note
        (4, "obsidian", "missing.png", str(root / "notes/missing.png")),  # unresolved: beside the note
    ]


def test_obsidian_unresolved_embed_is_a_not_found_record(run, tmp_path):
    vault(tmp_path)
    result = run("pp-scan", "--local", "vault")
    assert result.returncode == 1
    records = parse_jsonl(result.stdout)
    assert [r["error"]["type"] for r in records if "error" in r] == ["not_found"]
    assert "vault/notes/note.md:4: missing.png" in result.stderr


def test_lazy_loading_attributes_and_srcset():
    assert [(line, kind, target.rsplit("/", 1)[-1]) for line, kind, target, _ in found(FIXTURES / "lazy.md")] == [
        (4, "html", "small.jpg"), (4, "srcset", "a-1x.jpg"), (4, "srcset", "a-2x.jpg"),
        (6, "srcset", "b.avif"), (7, "html", "b.jpg"), (9, "data-src", "lazy.jpg"),
        (10, "data-original", "orig.jpg?w=1&amp;h=2"), (11, "srcset", "c,1.jpg"), (11, "srcset", "c2.jpg"),
        (11, "html", "c0.jpg")]
    refs = find_refs((FIXTURES / "lazy.md").read_text(), "lazy.md")
    assert refs[6].url == "https://img.example.com/orig.jpg?w=1&h=2"  # entities decoded as in src


def test_a_video_source_is_no_image():
    """<source src> is a <video>'s or <audio>'s (Obsidian's own release notes have one); a
    <picture>'s <source> names its images in srcset."""
    text = ('<video controls>\n  <source src="https://x.example/v.mp4" type="video/mp4">\n</video>\n\n'
            '<picture><source srcset="https://x.example/p.avif" src="https://x.example/no.png"></picture>\n')
    assert [(ref.kind, ref.target) for ref in find_refs(text, "doc.md")] == [("srcset", "https://x.example/p.avif")]


@pytest.mark.parametrize("name, expected", [
    ("front_matter.md", [
        (3, "/img/index.png", ""), (4, "https://img.example.com/banner it's.png", "'"),
        (5, "https://img.example.com/cover.jpg", '"'), (6, "https://img.example.com/thumb.jpg", ""),
        (7, "https://img.example.com/og.png", ""), (8, "https://img.example.com/i1.png", "["),
        (8, "https://img.example.com/i2.png", '"'), (10, "https://img.example.com/f1.png", ""),
        (11, "https://img.example.com/f2.png", "'")]),
    ("front_matter_nested.md", [(3, "https://img.example.com/papermod.jpg", '"')]),
    ("front_matter.toml.md", [(3, "https://img.example.com/t1.png", '"'), (3, "https://img.example.com/t2.png", "'")]),
])
def test_front_matter_image_fields(name, expected):
    refs = find_refs((FIXTURES / name).read_text(), str(FIXTURES / name))
    assert {ref.kind for ref in refs} == {"front-matter"}
    assert [(ref.line, ref.url or decode_target(ref.target, ref.kind), ref.wrap) for ref in refs] == expected


@pytest.mark.parametrize("name, expected", [
    ("hugo.md", [(3, "hugo", "/images/examples/zion-national-park.jpg"), (5, "hugo", "https://img.example.com/fig.png"),
                 (7, "hugo", "https://img.example.com/raw string.png")]),
    ("hexo.md", [(4, "hexo", "/images/test.jpg"), (5, "hexo", "https://img.example.com/hexo.png"),
                 (7, "asset_img", "example.jpg"), (17, "inline", "https://img.example.com/after.png")]),
    ("jekyll.md", [(5, "jekyll", "/assets/logo-2x.png"), (6, "jekyll", "https://img.example.com/mm.jpg")]),
])
def test_generator_tags_and_their_code_blocks(name, expected):
    assert [item[:3] for item in found(FIXTURES / name)] == expected


def test_hexo_asset_img_is_read_from_the_post_asset_folder():
    refs = find_refs((FIXTURES / "hexo.md").read_text(), str(FIXTURES / "hexo.md"))
    assert refs[2].resolved == str(FIXTURES / "hexo" / "example.jpg")


# -- rewriting every syntax ----------------------------------------------------------------------
ROUND_TRIP = ["html_blocks.md", "lazy.md", "front_matter.md", "front_matter_nested.md", "front_matter.toml.md",
              "hugo.md", "hexo.md", "jekyll.md", "obsidian"]


def rendered_html(text: str) -> str:
    """What a generator shows: the front matter is read, not rendered; the rest is CommonMark."""
    markdown_it = pytest.importorskip("markdown_it")
    body = re.sub(r"\A(---|\+\+\+)\n.*?\n\1\n", "", text, flags=re.S)
    return markdown_it.MarkdownIt("commonmark").render(body)


def masked(page: str, pairs: list[tuple[Ref, Ref]]) -> str:
    """`page` with every spelling of each old and new target as `URL<n>`: what differs by URL only
    becomes equal."""
    markdown_it = pytest.importorskip("markdown_it")
    normal = markdown_it.MarkdownIt("commonmark").normalizeLink
    spellings: dict[str, str] = {}
    for number, refs in enumerate(pairs):
        for ref in refs:
            value = decode_target(ref.target, ref.kind)
            for spelling in (ref.target, value, normal(value)):
                spellings[spelling] = spellings[html.escape(spelling)] = f"URL{number}"
    for spelling in sorted(spellings, key=len, reverse=True):
        page = page.replace(spelling, spellings[spelling])
    return page


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_round_trip_scan_map_rewrite_scan(run, tmp_path, name):
    if name == "obsidian":
        doc = vault(tmp_path)
    else:
        doc = tmp_path / "site" / name
        doc.parent.mkdir()
        shutil.copy(FIXTURES / name, doc)
    folder = doc.parent
    original = doc.read_text(encoding="utf-8")
    scanned = parse_jsonl(run("pp-scan", str(folder)).stdout)
    new: dict[str, str] = {}  # one new URL per image (a url, or a local file)
    records = []
    for record in scanned:
        old = record.get("url") or record["ref"]["resolved"]
        url = new.setdefault(old, f"https://new.example.com/{len(new)}/n{len(new)} (x)&y.png")
        records.append({"url": url, "ref": record["ref"], **({"replaces": record["url"]} if "url" in record else {})})
    assert records
    result = run("pp-rewrite", str(folder), input=jsonl(records))
    refused = [r for r in scanned if r["ref"]["kind"] == "asset_img"]
    assert result.returncode == (1 if refused else 0), result.stderr
    for record in refused:  # named, line by line
        assert f"{record['ref']['doc']}:{record['ref']['line']}: {record['ref']['target']} (asset_img) not " \
               "rewritten" in result.stderr
    assert (folder / f"{doc.name}.bak").read_text(encoding="utf-8") == original

    again = parse_jsonl(run("pp-scan", str(folder)).stdout)
    kept = [r for r in again if r["ref"]["kind"] == "asset_img"]
    assert [r["ref"]["target"] for r in kept] == [r["ref"]["target"] for r in refused]
    assert sorted({url_key(r["url"]) for r in again if r not in kept}) == sorted({url_key(url) for url in new.values()}
                                                                          - {url_key(new[r["ref"]["resolved"]])
                                                                             for r in refused})

    rewritten = doc.read_text(encoding="utf-8")
    before, after = find_refs(original, str(doc)), find_refs(rewritten, str(doc))
    if name == "obsidian":  # ![[x.png|300]] became ![|300](URL): the only change besides URLs
        assert [ref.kind for ref in after] == ["inline"] * 6

        def markdown(embed: re.Match[str]) -> str:  # Obsidian's size after a bar, or alt text
            after = embed[1] or ""
            return f"![|{after}](@)" if re.fullmatch(r"\d+(x\d+)?", after) else f"![{after}](@)"

        assert re.sub(r"(?<!`)!\[\[[^\]|]+\.png(?:\|([^\]]*))?\]\]", markdown, original) \
            == skeleton(rewritten, after)
        return
    assert len(before) == len(after)
    for old, now in zip(before, after):  # only the targets' characters changed
        assert (old.kind, old.line) == (now.kind, now.line)
    assert skeleton(original, before) == skeleton(rewritten, after)
    pairs = list(zip(before, after))
    assert masked(rendered_html(original), pairs) == masked(rendered_html(rewritten), pairs)


def skeleton(text: str, refs: list[Ref]) -> str:
    for ref in reversed(refs):
        text = text[:ref.start] + "@" + text[ref.end:]
    return text


@pytest.mark.parametrize("text, new, expected", [
    ("---\ncover: 'https://o.example/a.png'\n---\n", "https://n.example/it's.png", "cover: 'https://n.example/it''s.png'"),
    ('---\ncover: "https://o.example/a.png"\n---\n', 'https://n.example/a"b.png', 'cover: "https://n.example/a%22b.png"'),
    ("---\nimages: [https://o.example/a.png]\n---\n", "https://n.example/a,b.png", None),
    ('{{< figure src=`https://o.example/a.png` >}}\n', "https://n.example/a`b.png",
     "{{< figure src=`https://n.example/a%60b.png` >}}"),
    ('{{< figure src=https://o.example/a.png >}}\n', "https://n.example/it's.png", None),
    ("<img srcset='https://o.example/a.png 2x'>\n", "https://n.example/it's.png",
     "<img srcset='https://n.example/it&#39;s.png 2x'>"),
    ("<img srcset=https://o.example/a.png>\n", "https://n.example/a.png?x=1", None),
    ("<img data-src=https://o.example/a.png>\n", "https://n.example/a.png?x=1", '<img data-src="https://n.example/a.png?x=1">'),
    ("{% include figure image_path='https://o.example/a.png' %}\n", "https://n.example/it's.png", None),
    ("{% img https://o.example/a.png %}\n", "https://n.example/a b.png", "{% img https://n.example/a%20b.png %}"),
])
def test_a_target_is_written_as_its_syntax_reads_it_or_refused(tmp_path, text, new, expected):
    doc = tmp_path / "p.md"
    doc.write_text(text)
    replacements = Replacements()
    assert replacements.add({"url": new, "replaces": "https://o.example/a.png"})
    result = rewrite(load(str(doc)), replacements)
    if expected is None:
        assert result.text == text and [ref.target for ref, _ in result.refused] == ["https://o.example/a.png"]
    else:
        assert expected in result.text and not result.refused
        assert [url_key(str(ref.url)) for ref in find_refs(result.text, str(doc))] == [url_key(new)]


@pytest.mark.parametrize("text", ["{% x " * 20000, "{% img /a.png " * 10000, "{{< figure " * 20000,
                                  '{{< figure src="' * 10000, "![[aaaa " * 20000, "{% raw %}" * 20000,
                                  "---\ncover: a" + " " * 50000 + "x\n---\n", "<a" + " b" * 30000 + "\n",
                                  "---\nimages: [" + "a, " * 30000 + "\n---\n", "[a]:\n" * 20000])
def test_hostile_documents_take_linear_time(text):
    import time

    started = time.perf_counter()
    find_refs(text, "d.md")
    assert time.perf_counter() - started < 2  # an unclosed tag per token was quadratic (minutes)


def test_an_obsidian_embed_in_a_table_row_escapes_its_pipe(tmp_path):
    doc = tmp_path / "t.md"
    doc.write_text("| a |\n|---|\n| ![[x.png\\|300]] |\n")
    assert [(ref.kind, ref.target) for ref in find_refs(doc.read_text(), str(doc))] == [("obsidian", "x.png")]
    replacements = Replacements()
    assert replacements.add({"url": "https://n.example/x.png", "ref": {"resolved": str(tmp_path / "x.png")}})
    assert rewrite(load(str(doc)), replacements).text == "| a |\n|---|\n| ![\\|300](https://n.example/x.png) |\n"
