"""Image references in Markdown and HTML documents: found for pp-scan, rewritten by pp-rewrite.

    >>> [(r.line, r.kind, r.target) for r in find_refs('![a](x.png "t")\\n`![b](y.png)`\\n', "doc.md")]
    [(1, 'inline', 'x.png')]

Not a full CommonMark parser, but its rules for what matters here. A line pass sets aside what is
code (fenced and indented code blocks, Liquid `{% raw %}`/`{% codeblock %}`/`{% highlight %}`),
reads HTML blocks (CommonMark §4.6, kinds 1-7) as HTML only, since a renderer prints the Markdown
in them as text, and collects reference definitions (the URL may be on the next line); an inline
pass over each paragraph finds `![alt](url "title")`, `![alt](<url>)`, `![alt][id]`, `![id]`,
`<img src>` (also `srcset`, `data-src`, `data-original`, of `<source>` too), Obsidian's
`![[x.png|300]]`, Hugo's `{{< figure src >}}`, Hexo's `{% img %}`/`{% asset_img %}` and Jekyll's
`{% include ... image="x.png" %}`, skipping code spans, comments and `<code>`/`<pre>` elements.
Image fields of the front matter (`cover`, `thumbnail`, ... `FRONT_MATTER_KEYS`) are read by a
minimal reader of those keys (YAML or TOML scalars and lists). HTML documents get the HTML part
of the inline pass only.
Every reference keeps the offsets of its target in the text, so a rewrite changes those
characters and no other.

A reference definition (`[id]: url "title"`) counts when an image uses it, or when its target
looks like an image file (a common image extension): a definition file shared by several
documents (an include, an auto-appended snippet) holds image targets no image of its own uses.

Documents come from other people (a cloned repo, a pull request, a shared vault), so what they
name stays in their tree: the folder given on the command line (a file's own folder). Walking it,
a symlink (document or folder) is followed when its real path stays inside the tree; one that
leaves it is neither read nor written (`symlink_outside`), and a link that loops is not followed
(`symlink_loop`): each is one error record, and the walk goes on. pp-scan makes a local image a
`path` only when its real path (symlinks resolved) lies inside the tree or a `--root` given on
the command line; anything else (`../../etc/passwd`, `/home/u/x.png`, `file:///...`, a symlink
that leads out) is an `outside_root` error record that keeps its `ref` (`not_found` when there is
no such file: a broken link). A site's `/images/x.png` is read against `--site-root DIR` (Hugo's
static/, Hexo's source/, a Jekyll site's folder), which counts as a root.
"""

from __future__ import annotations

import errno
import itertools
import os
import re
import stat
import time
from bisect import bisect_right
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, NamedTuple

from picpipe.errors import PicpipeError
from picpipe.files import BINARY, NONBLOCK
from picpipe.links import WINDOWS_PATH, elsewhere, encode_url, url_identity
from picpipe.links import file_url_path as url_path

MARKDOWN_SUFFIXES = (".md", ".markdown", ".mdx")
HTML_SUFFIXES = (".html", ".htm")
#: The kinds of reference read in an HTML tag's attribute: character references decoded.
HTML_KINDS = ("html", "srcset", "data-src", "data-original")
DOCUMENT_SUFFIXES = MARKDOWN_SUFFIXES + HTML_SUFFIXES
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".webp", ".avif", ".svg", ".bmp", ".ico", ".tif", ".tiff",
                  ".heic", ".heif", ".jxl", ".apng")
#: Folders never walked: version control, editor settings (.obsidian, .git) and installed packages.
SKIPPED_FOLDER = "node_modules"

Key = tuple[str, str]  # ("url", normalised URL) or ("path", absolute path): what a replacement is for


class Ref(NamedTuple):
    """One image reference, and where its target sits in the document's text."""

    doc: str
    line: int
    #: "inline" (`![a](t)`), "reference" (the definition `[id]: t`), "html" (`<img src="t">`),
    #: "srcset", "data-src", "data-original" (of `<img>` or `<source>`), "obsidian" (`![[t|300]]`),
    #: "front-matter", "hugo" (figure), "hexo" (`{% img t %}`), "asset_img", "jekyll" (an include's argument).
    kind: str
    #: The whole reference as written.
    text: str
    #: The target as written; text_of_document[start:end] == target.
    target: str
    start: int
    end: int
    #: How the target is delimited: "" (bare), "<" (Markdown's <...>), '"' or "'" (HTML quotes).
    wrap: str
    #: The remote URL (escapes decoded), for a remote target.
    url: str | None
    #: The absolute local path (percent-decoded, resolved against the document's folder), for a local one.
    resolved: str | None
    alt: str | None = None

    @property
    def key(self) -> Key:
        return ("url", url_key(self.url)) if self.url is not None else ("path", str(self.resolved))

    def record(self) -> dict[str, Any]:
        """The pp-scan record: `url` or `path`, `ref`, and `alt` when there is one."""
        ref: dict[str, Any] = {"doc": self.doc, "line": self.line, "text": self.text, "target": self.target,
                               "kind": self.kind}
        record: dict[str, Any] = {}
        if self.url is not None:
            record["url"] = self.url
        else:
            record["path"] = ref["resolved"] = self.resolved
        record["ref"] = ref
        if self.alt:
            record["alt"] = self.alt
        return record


# -- targets ----------------------------------------------------------------------------------
_PUNCT = "!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~"
_ENTITY = r"&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_HTML_DECODE = re.compile(_ENTITY)
_ENTITY_AMPERSAND = re.compile("&(?=" + _ENTITY[1:] + ")")
_MARKDOWN_DECODE = re.compile(r"\\[!-/:-@\[-`{-~]|" + _ENTITY)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):")


def local_path(path: str, folder: str) -> str:
    """The absolute path of a local target, read against the document's folder."""
    return path if elsewhere(path) else os.path.abspath(os.path.join(folder, path))


def file_url_path(url: str) -> str:
    """The local path a file: URL names (`links.file_url_path`, the one reading of them), made
    absolute as a document's paths are."""
    return local_path(url_path(url), os.sep)


def decode_target(target: str, kind: str) -> str:
    """The target as a browser reads it: character references (and Markdown's backslash escapes)
    decoded. Only `&name;` forms: `?a=1&copy=2` in a URL is no entity."""
    import html

    if kind not in HTML_KINDS and kind not in ("inline", "reference"):
        return target  # front matter, Obsidian, Hugo and Liquid tags: written as they are read
    if kind not in HTML_KINDS and WINDOWS_PATH.match(target.strip()):
        return target  # `\\server\share\x.png` as Typora on Windows writes it: the backslashes separate
    pattern = _HTML_DECODE if kind in HTML_KINDS else _MARKDOWN_DECODE
    return pattern.sub(lambda m: m.group(0)[1] if m.group(0)[0] == "\\" else html.unescape(m.group(0)), target)


def classify(value: str, folder: str) -> tuple[str, str] | None:
    """("url", URL) for a remote target, ("path", absolute path) for a local one, None for what is
    neither: data: and mailto: URIs, #anchors, template placeholders ({{ site.url }}, MDX {expr})."""
    value = value.strip()
    if not value or value[0] in "#{" or "{{" in value or "{%" in value:
        return None
    if value.startswith("//"):  # protocol-relative (Hexo themes): fetched over https
        value = "https:" + value
    scheme = None if WINDOWS_PATH.match(value) else _SCHEME.match(value)  # `C:` is a drive
    if scheme:
        name = scheme.group(1).lower()
        if name in ("http", "https"):
            return ("url", value) if value[scheme.end():].lstrip("/").split("/")[0] else None
        if name == "file":
            return ("path", file_url_path(value))
        return None
    from urllib.parse import unquote

    # Typora writes img/my%20shot.png: a URL path, so ?query and #fragment are not part of the file.
    path = unquote(re.split(r"[?#]", value, maxsplit=1)[0])
    return ("path", local_path(path, folder)) if path else None


def url_key(url: str) -> str:
    """A URL as compared for replacement: `links.url_identity`, the project's one URL identity
    (`图(1).png`, `%E5%9B%BE%281%29.png` and `%e5%9b%be(1).png` are one image)."""
    return url_identity(url)


def encode_target(url: str, kind: str, wrap: str) -> str:
    """`url` written for the place of a target, so that it reads back as `url`: spaces and
    non-ASCII percent-encoded (as pp-link writes URLs), `&` as `&amp;` in HTML, quotes added to an
    unquoted HTML value that needs them; in Markdown, unbalanced parentheses in a bare target encoded
    and an `&` that would start a character reference escaped."""
    url = encode_url(url)
    if kind in HTML_KINDS:
        url = url.replace("&", "&amp;")
        if wrap == "'":
            return url.replace("'", "&#39;")
        return f'"{url}"' if not wrap and re.search("['=]", url) else url
    url = _ENTITY_AMPERSAND.sub(r"\\&", url)  # a&amp;b.png stays a&amp;b.png, not a&b.png
    if not wrap and not _balanced(url):
        return url.replace("(", "%28").replace(")", "%29")
    return url


def replacement(text: str, ref: Ref, new: str) -> tuple[int, int, str] | str:
    """(start, end, new text) that makes `ref` show `new`, or why that cannot be done safely. Only
    the target's characters change, except for an Obsidian embed: Obsidian shows no URL in
    `![[...]]`, so the embed becomes its external-image form `![size](URL)`."""
    url = encode_url(new)
    if ref.kind == "obsidian":
        embed = text.rfind("![[", 0, ref.start)
        bar = ref.text.find("|")
        after = ref.text[bar + 1:-2].strip() if bar >= 0 else ""
        # Obsidian sizes an external image as ![alt|300](url) or ![alt|100x145](url); other text
        # after the bar is the image's alt text (https://help.obsidian.md/embeds). In a table row
        # the bar stays escaped.
        pipe = "\\|" if bar > 0 and ref.text[bar - 1] == "\\" else "|"
        alt = pipe + after if re.fullmatch(r"\d+(x\d+)?", after) else after.replace("]", "\\]")
        return embed, embed + len(ref.text), f"![{alt}]({encode_target(new, 'inline', '')})"
    if ref.kind == "asset_img":
        return ("{% asset_img %} names a file of the post's asset folder, not a URL: write "
                f"{{% img {url} %}} in its place by hand")
    if ref.kind == "srcset" and (url[0] == "," or url[-1] == "," or not ref.wrap and re.search("[\"'=<>`]", url)):
        return "this URL cannot stand in an unquoted srcset (or starts or ends with a comma): edit it by hand"
    if ref.kind in HTML_KINDS or ref.kind in ("inline", "reference"):
        return ref.start, ref.end, encode_target(new, ref.kind, ref.wrap)
    if ref.kind == "front-matter":
        if ref.wrap == '"':
            url = url.replace("\\", "\\\\").replace('"', '\\"')
        elif ref.wrap == "'":
            url = url.replace("'", "''")
        elif re.search(r"\s#|:\s", url) or ref.wrap == "[" and re.search(r"[,\[\]{}]", url):  # ends a plain scalar
            return "this URL cannot stand unquoted in front matter: quote the value, then run pp-rewrite again"
        return ref.start, ref.end, url
    if ref.wrap and ref.wrap in url or not ref.wrap and re.search(r"[\s\"'`]", url):
        return f"this URL cannot stand in a {ref.kind} tag's {ref.wrap or 'unquoted'} argument: edit it by hand"
    return ref.start, ref.end, url


def _balanced(text: str) -> bool:
    depth = 0
    for char in text:
        depth += {"(": 1, ")": -1}.get(char, 0)
        if depth < 0:
            return False
    return depth == 0


def looks_like_image(ref: Ref) -> bool:
    from urllib.parse import urlsplit

    path = urlsplit(ref.url).path if ref.url is not None else str(ref.resolved)
    return path.lower().endswith(IMAGE_SUFFIXES)


# -- finding references ------------------------------------------------------------------------
_QUOTE_MARK = re.compile(r" {0,3}> ?")
_SETEXT = re.compile(r"(?:=+|-+)[ \t]*$")
_SPACES = re.compile(" *")
_FENCE = re.compile(r"(`{3,}|~{3,})(.*)")
_FENCE_END = re.compile(r"(`{3,}|~{3,})[ \t]*$")
_ITEM = re.compile(r"([-+*]|[0-9]{1,9}[.)])(?=[ \t]|$)")
_BREAK = re.compile(r"([-*_])(?:[ \t]*\1){2,}[ \t]*$")
_HEADING = re.compile(r"#{1,6}(?:[ \t]|$)")
#: CommonMark §4.6: the start of each kind of HTML block (1-7) and, for kinds 1-5, its end
#: (6 and 7 end at a blank line). Kinds 1-6 may interrupt a paragraph; 7 may not.
_BLOCK_NAMES = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|dialog|dir|div|"
    "dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|h1|h2|h3|h4|h5|h6|head|header|hr|html|iframe|"
    "legend|li|link|main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|search|section|summary|table|"
    "tbody|td|tfoot|th|thead|title|tr|track|ul")
_TAG_ATTRIBUTES = r"""(?:\s+[A-Za-z_:][A-Za-z0-9_.:-]*(?:\s*=\s*(?:[^\s"'=<>`]+|'[^']*'|"[^"]*"))?)*"""
_HTML_BLOCKS: tuple[tuple[re.Pattern[str], re.Pattern[str] | None], ...] = (
    (re.compile(r"<(?:pre|script|style|textarea)(?=[ \t>]|$)", re.I),
     re.compile(r"</(?:pre|script|style|textarea)>", re.I)),
    (re.compile("<!--"), re.compile("-->")),
    (re.compile(r"<\?"), re.compile(r"\?>")),
    (re.compile("<![A-Za-z]"), re.compile(">")),
    (re.compile(r"<!\[CDATA\["), re.compile(r"\]\]>")),
    (re.compile(rf"</?(?:{_BLOCK_NAMES})(?=[ \t>]|/>|$)", re.I), None),
    (re.compile(rf"(?:<(?!(?:pre|script|style|textarea)\b)[A-Za-z][A-Za-z0-9-]*{_TAG_ATTRIBUTES}\s*/?>"
                r"|</[A-Za-z][A-Za-z0-9-]*\s*>)[ \t]*$", re.I), None),
)
#: Liquid blocks whose content is code to Hexo and Jekyll: nothing inside is read.
_LIQUID_CODE = re.compile(r"\{%-?\s*(raw|codeblock|code|highlight)\b[^\n]*?-?%\}")
_DEFINITION_LABEL = re.compile(r"\[(?!\^)((?:[^\\\[\]]|\\.){1,999})\]:[ \t]*$")
_DEFINITION = re.compile(
    r"""\[(?!\^)((?:[^\\\[\]]|\\.){1,999})\]:[ \t]*(?:\r?\n[ \t]*)?(?:<((?:[^\\<>\n]|\\.)*)>|([^\s<]\S*))"""
    r"""(?:[ \t]+("(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|\((?:[^()\\]|\\.)*\)))?[ \t]*$""")
_LABEL = re.compile(r"\[((?:[^\\\[\]]|\\.){0,999})\]")
_MARKDOWN_TOKEN = re.compile(r"\\|`+|<!--|<(script|style|textarea|template)(?=[\s>/])|<(?:img|source)(?=[\s/>])"
                             r"|!\[\[|!\[|\{\{[<%]|\{%", re.I)
_HTML_TOKEN = re.compile(r"<!--|<(script|style|textarea|template)(?=[\s>/])|<(?:img|source)(?=[\s/>])", re.I)
_BACKTICKS = re.compile(r"`+")
_BRACKET_TOKEN = re.compile(r"\\.|`+|[\[\]]", re.S)
#: Longer <img> tags (a big data: URI in src) are not read: nothing in them is worth a record.
MAX_TAG = 16384
#: The attributes of an <img> that name one image, and the ref.kind of each.
_SOURCES = (("src", "html"), ("data-src", "data-src"), ("data-original", "data-original"))
_IMG_TAG = re.compile(r"""<(?:img|source)(?=[\s/>])(?:[^>"']++|"[^"]*+"|'[^']*+')*+>""", re.I)
#: Obsidian's embed: ![[name]], ![[name|300]], ![[folder/name.png#heading|alias]] (https://help.obsidian.md/embeds)
_OBSIDIAN = re.compile(r"!\[\[([^\[\]|#^\n]+)(?:#[^\[\]|\n]*)?(?:\|[^\[\]\n]*)?\]\]")
#: Hugo's figure shortcode: {{< figure src="..." >}}, {{% figure src="..." %}} (https://gohugo.io/shortcodes/figure/)
_HUGO = re.compile(r"\{\{([<%])\s*figure\s(.*)[>%]\}\}", re.S)  # matched up to the first >}} or %}}
_HUGO_ARGUMENT = re.compile(r"""([A-Za-z]\w*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|`([^`]*)`|([^\s"`]+))""")
#: Liquid tags: Hexo's {% img %} and {% asset_img %}, Jekyll's {% include %}, and the code ones.
_LIQUID = re.compile(r"\{%-?\s*([A-Za-z_]+)\b(.*?)-?%\}", re.S)  # up to the first %}, as Liquid reads it
_LIQUID_ARGUMENT = re.compile(r"""([A-Za-z_][\w-]*=)?(?:"([^"]*)"|'([^']*)'|([^\s"']+))""")
#: Front-matter fields that hold an image (Hexo themes: cover, thumbnail, banner_img, index_img;
#: Hugo and Jekyll themes: image, images, og_image, featured_image, cover.image).
FRONT_MATTER_KEYS = ("cover", "thumbnail", "banner_img", "index_img", "image", "images", "og_image",
                     "featured_image")
_FRONT_MATTER = re.compile(r"\ufeff?(---|\+\+\+)[ \t]*\r?\n")
_FIELD = re.compile(rf"[ \t]*(?:-[ \t]+)?({'|'.join(FRONT_MATTER_KEYS)})[ \t]*(?::(?=[ \t]|$)|=)[ \t]*", re.I)
_ITEM_LINE = re.compile(r"([ \t]*)-[ \t]+")
_QUOTED = r""""((?:[^"\\\n]|\\.)*)"|'((?:[^'\n]|'')*)'|"""
#: A plain scalar ends before blanks and a # comment (or, in a flow list, before , or ]).
_SCALAR = re.compile(_QUOTED + r"""([^\s#"'\[\]{},&*!|>](?:\S|[ \t]++(?=[^\s#]))*+)""")
_FLOW_SCALAR = re.compile(_QUOTED + r"""([^\s#"'\[\]{},&*!|>](?:[^\s,\]]|[ \t]++(?=[^\s#,\]]))*+)(?=[ \t]*[,\]])""")
_ATTRIBUTE = re.compile(r"""([^\s"'>/=]+)(?:\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s"'=<>`]+)))?""")
_ANGLE_TARGET = re.compile(r"<(?:[^\\<>\n]|\\.)*>")
_TITLES = {quote: re.compile(rf"{quote}(?:[^{quote}\\]|\\.)*{quote}", re.S) for quote in "\"'"}
_TITLES["("] = re.compile(r"\((?:[^()\\]|\\.)*\)", re.S)
_SPACE = re.compile(r"[ \t]*(?:\r?\n[ \t]*)?")
_QUOTES = {2: '"', 3: "'", 4: ""}  # _ATTRIBUTE's value groups and how each is delimited


def _normal_label(label: str) -> str:
    return " ".join(label.split()).casefold()


def find_refs(text: str, doc: str = "", html: bool = False) -> list[Ref]:
    """Every image reference of a document's text, in document order; local targets are resolved
    against the folder of `doc`."""
    return _Finder(text, doc).run(html)


def _path_part(value: str) -> str:
    return re.split(r"[?#]", value, maxsplit=1)[0]


def _candidates(text: str, start: int, end: int) -> Iterator[tuple[int, int]]:
    """(start, end) of each URL of a srcset value, as the HTML standard splits it: blanks and
    commas before a URL, a URL up to a blank (less its trailing commas), descriptors up to a comma
    outside parentheses."""
    pos = start
    while pos < end:
        while pos < end and text[pos] in " \t\n\r\f,":
            pos += 1
        first = pos
        while pos < end and text[pos] not in " \t\n\r\f":
            pos += 1
        last = pos
        while last > first and text[last - 1] == ",":
            last -= 1
        if last > first:
            yield first, last
        if last == pos:  # descriptors follow, up to a comma outside parentheses
            depth = 0
            while pos < end and (text[pos] != "," or depth):
                depth += {"(": 1, ")": -1}.get(text[pos], 0)
                pos += 1


_VAULTS: dict[str, tuple[float, dict[str, list[str]]]] = {}


def obsidian_path(name: str, folder: str) -> str:
    """The file an Obsidian embed names, found as Obsidian finds it: relative to the note, then to
    the vault (the nearest folder up that holds .obsidian), then by its name anywhere in the vault
    (the one nearest the note when there are several); else relative to the note (not found)."""
    vault = folder
    while not os.path.isdir(os.path.join(vault, ".obsidian")):
        parent = os.path.dirname(vault)
        if parent == vault:
            vault = folder
            break
        vault = parent
    for base in (folder, vault):
        path = os.path.abspath(os.path.join(base, name))
        if os.path.isfile(path):
            return path
    cached = _VAULTS.get(vault)
    if cached is None or time.monotonic() - cached[0] > 10:  # one walk per vault for a run, not per embed
        index: dict[str, list[str]] = {}
        for top, subfolders, files in os.walk(vault):
            subfolders[:] = sorted(d for d in subfolders if not d.startswith(".") and d != SKIPPED_FOLDER)
            for file in files:
                index.setdefault(file.lower(), []).append(os.path.join(top, file))
        cached = _VAULTS[vault] = (time.monotonic(), index)
    tail = os.sep + os.path.normpath(name).lower()
    found = [path for path in cached[1].get(os.path.basename(name).lower(), [])
             if (os.sep + path.lower()).endswith(tail)]
    if found:
        return min(found, key=lambda path: (len(os.path.relpath(path, folder).split(os.sep)), path))
    return os.path.abspath(os.path.join(folder, name))


class _Finder:
    def __init__(self, text: str, doc: str) -> None:
        self.text = text
        self.doc = doc
        self.folder = os.path.dirname(os.path.abspath(doc)) if doc else os.getcwd()
        self.line_starts = [0] + [m.end() for m in re.finditer("\n", text)]
        self.found: list[Ref] = []
        self.definitions: list[tuple[str, Ref | None]] = []
        self.first: dict[str, Ref | None] = {}  # label → its definition (the first one wins)
        self.used: dict[str, str] = {}  # label → alt text of the first image that uses it
        self.pairs: dict[int, int] | None = None  # brackets of the paragraph being read, from its first image on
        self.unclosed: set[str] = set()  # title quotes with no closing one left in the paragraph
        self.body_start = 0  # past the front matter
        self.closers: dict[str, int] = {}  # `%}` or `>}}` → where it is next in the paragraph (-1: nowhere)

    def run(self, html: bool) -> list[Ref]:
        if html:
            self.inline(0, len(self.text), markdown=False)
        else:
            self.front_matter()
            for start, end in self.blocks():
                self.inline(start, end, markdown=True)
            for label, ref in self.definitions:
                if ref is None or self.first[label] is not ref:  # a later definition of a label is dead text
                    continue
                if label in self.used:
                    self.found.append(ref._replace(alt=self.used[label] or None))
                elif looks_like_image(ref):
                    self.found.append(ref)
        return sorted(self.found, key=lambda r: r.start)

    def make(self, kind: str, start: int, end: int, target_start: int, target_end: int, wrap: str,
             alt: str | None = None, value: str | None = None) -> Ref | None:
        """The reference, None for a target that is no image (data:, #anchor, a template).
        `value` is the target as the generator reads it, when that is not `decode_target`'s."""
        target = self.text[target_start:target_end]
        where = classify(decode_target(target, kind) if value is None else value, self.folder)
        if where is None:
            return None
        url, resolved = (where[1], None) if where[0] == "url" else (None, where[1])
        return Ref(self.doc, bisect_right(self.line_starts, start), kind, self.text[start:end], target,
                   target_start, target_end, wrap, url, resolved, alt)

    def match_end(self, pattern: re.Pattern[str], pos: int, end: int) -> int:
        """Where a pattern that may match nothing (blanks, a container prefix) ends, from `pos`."""
        match = pattern.match(self.text, pos, end)
        return match.end() if match else pos

    def add(self, ref: Ref | None) -> None:
        if ref is not None:
            self.found.append(ref)

    # -- the line pass (Markdown) --------------------------------------------------------------
    def lines(self) -> Iterator[tuple[int, int]]:
        """(start, end) of each line, without its line ending."""
        text = self.text
        for start in self.line_starts:
            if start == len(text) and start:
                return
            newline = text.find("\n", start)
            end = len(text) if newline < 0 else newline
            yield start, end - 1 if end > start and text[end - 1] == "\r" else end

    def blocks(self) -> list[tuple[int, int]]:
        """The spans to read inline (paragraphs and headings); collects reference definitions and
        reads HTML blocks as HTML; leaves out code blocks and what a Liquid code tag holds."""
        blocks = _Blocks(self)
        for start, end in self.lines():
            if start >= blocks.skip_to:
                blocks.line(start, end)
        blocks.close_leaf()
        return blocks.spans

    def close_html(self, block: list[int]) -> None:
        """Read an HTML block that ends here: its <img> tags count, its Markdown does not."""
        if block:
            self.inline(block[0], block[1], markdown=False)
            block.clear()

    def definition(self, match: re.Match[str]) -> None:
        label = _normal_label(match.group(1))
        group = 2 if match.group(2) is not None else 3
        end = match.end(4) if match.group(4) else match.end(group) + (group == 2)
        ref = self.make("reference", match.start(), end, match.start(group), match.end(group),
                        "<" if group == 2 else "")
        self.definitions.append((label, ref))
        self.first.setdefault(label, ref)

    # -- the inline pass -------------------------------------------------------------------------
    def inline(self, start: int, end: int, markdown: bool) -> None:
        text = self.text
        pattern = _MARKDOWN_TOKEN if markdown else _HTML_TOKEN
        pos, self.pairs, self.unclosed, self.closers = start, None, set(), {}
        while True:
            token = pattern.search(text, pos, end)
            if token is None:
                return
            at, word = token.start(), token.group(0)
            if word == "\\":
                pos = at + 2
            elif word[0] == "`":
                pos = self.code_span(at, len(word), end)
            elif word == "<!--":
                close = text.find("-->", at + 4, end)
                pos = end if close < 0 else close + 3
            elif token.group(1):  # <code>, <pre>...: skipped to their end tag
                close_tag = re.compile(rf"</{token.group(1)}\s*>", re.I).search(text, token.end(), end)
                pos = end if close_tag is None else close_tag.end()
            elif word == "![[":
                pos = self.obsidian(at, end)
            elif word == "![":
                pos = self.image(at, end)
            elif word[0] == "{":
                pos = self.hugo(at, end) if word[1] == "{" else self.liquid(at, end)
            else:
                pos = self.img_tag(at, end)

    def code_span(self, at: int, length: int, end: int) -> int:
        """Past the code span opened by `length` backticks at `at`; past the backticks when unclosed."""
        for run in _BACKTICKS.finditer(self.text, at + length, end):
            if len(run.group(0)) == length:
                return run.end()
        return at + length

    def img_tag(self, at: int, end: int) -> int:
        tag = _IMG_TAG.match(self.text, at, min(end, at + MAX_TAG))
        if tag is None:
            return at + 4
        values: dict[str, tuple[re.Match[str], int]] = {}  # name → (attribute, group of its value); first wins
        for attribute in _ATTRIBUTE.finditer(self.text, at + 4, tag.end() - 1):
            group = next((g for g in _QUOTES if attribute.group(g) is not None), 0)
            values.setdefault(attribute.group(1).lower(), (attribute, group))
        alt, alt_group = values.get("alt", (None, 0))
        alt_text = (decode_target(alt.group(alt_group), "html") if alt is not None and alt_group else None) or None
        # <source src> is a video's or a sound's; a <picture>'s <source> names its images in srcset only
        sources = () if self.text[at + 1:at + 7].lower() == "source" else _SOURCES
        for name, kind in sources:
            value, group = values.get(name, (None, 0))
            if value is not None and group:
                self.add(self.make(kind, at, tag.end(), value.start(group), value.end(group), _QUOTES[group],
                                   alt_text))
        srcset, group = values.get("srcset", values.get("data-srcset", (None, 0)))
        if srcset is not None and group:
            for first, last in _candidates(self.text, srcset.start(group), srcset.end(group)):
                self.add(self.make("srcset", at, tag.end(), first, last, _QUOTES[group], alt_text))
        return tag.end()

    def obsidian(self, at: int, end: int) -> int:
        """An Obsidian embed of an image file: its name read as Obsidian finds the file."""
        embed = _OBSIDIAN.match(self.text, at, end)
        if embed is None:
            return at + 3
        name = embed.group(1).strip()
        name = name[:-1].rstrip() if name.endswith("\\") else name  # ![[x.png\|300]] in a table row
        if name.lower().endswith(IMAGE_SUFFIXES) and not _SCHEME.match(name):
            first = embed.start(1) + len(embed.group(1)) - len(embed.group(1).lstrip())
            self.add(self.make("obsidian", at, embed.end(), first, first + len(name), "",
                               value=obsidian_path(name, self.folder)))
        return embed.end()

    def closer(self, mark: str, at: int, end: int) -> int:
        """Where `mark` is next from `at` in the paragraph ending at `end`, -1 for nowhere: found
        once for all the tags that it closes, so that a paragraph of unclosed tags stays linear."""
        known = self.closers.get(mark)
        if known is None or 0 <= known < at:
            known = self.closers[mark] = self.text.find(mark, at, end)
        return known

    def hugo(self, at: int, end: int) -> int:
        """Hugo's figure shortcode: its src (https://gohugo.io/shortcodes/figure/)."""
        close = self.closer(">}}" if self.text[at + 2] == "<" else "%}}", at, end)
        shortcode = _HUGO.match(self.text, at, close + 3) if close >= 0 else None
        if shortcode is None:
            return at + 3 if close < 0 else close + 3
        for argument in _HUGO_ARGUMENT.finditer(self.text, shortcode.start(2), shortcode.end(2)):
            if argument.group(1) == "src":
                group = next(g for g in (2, 3, 4) if argument.group(g) is not None)
                self.add(self.make("hugo", at, shortcode.end(), argument.start(group), argument.end(group),
                                   {2: '"', 3: "`", 4: ""}[group]))
        return shortcode.end()

    def liquid(self, at: int, end: int) -> int:
        """A Liquid tag: Hexo's {% img %} and {% asset_img %}, Jekyll's {% include %} with an image
        argument; {% raw %}, {% codeblock %} and {% highlight %} skipped to their end tag."""
        text = self.text
        close = self.closer("%}", at, end)
        tag = _LIQUID.match(text, at, close + 2) if close >= 0 else None
        if tag is None:
            return at + 2 if close < 0 else close + 2
        name = tag.group(1).lower()
        if name in ("raw", "codeblock", "code", "highlight"):
            ending = re.compile(rf"\{{%-?\s*end{name}\s*-?%\}}").search(text, tag.end(), end)
            return end if ending is None else ending.end()
        arguments = [(a, g) for a in _LIQUID_ARGUMENT.finditer(text, tag.start(2), tag.end(2))
                     for g in (2, 3, 4) if a.group(g) is not None]
        wraps = {2: '"', 3: "'", 4: ""}
        if name in ("img", "image"):  # the first argument that is a URL or starts with / (hexo's img.ts)
            for argument, group in arguments:
                value = argument.group(group)
                if not argument.group(1) and (value.startswith("/") or _SCHEME.match(value)):
                    self.add(self.make("hexo", at, tag.end(), argument.start(group), argument.end(group),
                                       wraps[group]))
                    break
        elif name in ("asset_img", "asset_image"):  # a file of the post's asset folder (POST/NAME)
            for argument, group in arguments:
                value = argument.group(group)
                if not argument.group(1) and value.lower().endswith(IMAGE_SUFFIXES):
                    asset = os.path.join(os.path.splitext(self.doc)[0] if self.doc else self.folder, value)
                    self.add(self.make("asset_img", at, tag.end(), argument.start(group), argument.end(group),
                                       wraps[group], value=os.path.abspath(asset)))
                    break
        elif name in ("include", "include_relative"):  # a quoted argument that names an image file
            for argument, group in arguments:
                value = argument.group(group)
                if argument.group(1) and group != 4 and _path_part(value).lower().endswith(IMAGE_SUFFIXES):
                    self.add(self.make("jekyll", at, tag.end(), argument.start(group), argument.end(group),
                                       wraps[group]))
        return tag.end()

    def front_matter(self) -> None:
        """Image fields of a YAML (---) or TOML (+++) front matter: a scalar, a flow list [a, b] or
        a block list of `- a` lines; values keep their quoting."""
        text = self.text
        opening = _FRONT_MATTER.match(text)
        if opening is None:
            return
        fence = opening.group(1)
        closing = re.compile(rf"^(?:{re.escape(fence)}|\.\.\.)[ \t]*\r?$", re.M).search(text, opening.end())
        if closing is None:
            return
        self.body_start = closing.end()
        field_indent: int | None = None
        for start, end in self.lines():
            if start < opening.end():
                continue
            if start >= closing.start():
                break
            field = _FIELD.match(text, start, end)
            if field is not None:
                field_indent = None
                if field.end() == end:  # a block list follows
                    field_indent = len(text[start:field.start(1)])
                elif text.startswith("[", field.end()):
                    for entry in _FLOW_SCALAR.finditer(text, field.end() + 1, end):
                        self.scalar(entry, start, end, "[")
                else:
                    value = _SCALAR.match(text, field.end(), end)
                    if value is not None:
                        self.scalar(value, start, end, "")
                continue
            item = _ITEM_LINE.match(text, start, end)
            if field_indent is not None and item is not None and len(item.group(1)) >= field_indent:
                scalar = _SCALAR.match(text, item.end(), end)
                if scalar is not None and not re.match(r"[^\s'\"]*:(?:\s|$)", scalar.group(0)):
                    self.scalar(scalar, start, end, "")
            elif text[start:end].strip():
                field_indent = None

    def scalar(self, scalar: re.Match[str], start: int, end: int, plain: str) -> None:
        group = next(g for g in (1, 2, 3) if scalar.group(g) is not None)
        raw = scalar.group(group)
        value = raw.replace("''", "'") if group == 2 else re.sub(r'\\(.)', r"\1", raw) if group == 1 else raw
        kept = classify(value, self.folder)
        if kept is not None and (kept[0] == "url" or kept[1].lower().endswith(IMAGE_SUFFIXES)):
            self.add(self.make("front-matter", start, end, scalar.start(group), scalar.end(group),
                               {1: '"', 2: "'", 3: plain}[group], value=value))

    def brackets(self, start: int, end: int) -> dict[int, int]:
        """Each `[` of a paragraph → its `]`, escapes and code spans skipped: one pass, so that a
        paragraph of unclosed brackets costs no more than a closed one."""
        pairs: dict[int, int] = {}
        opened: list[int] = []
        pos = start
        while token := _BRACKET_TOKEN.search(self.text, pos, end):
            pos = token.end()
            if token.group(0)[0] == "`":
                pos = self.code_span(token.start(), len(token.group(0)), end)
            elif token.group(0) == "[":
                opened.append(token.start())
            elif token.group(0) == "]" and opened:
                pairs[opened.pop()] = token.start()
        return pairs

    def image(self, at: int, end: int) -> int:
        """Read `![...]` at `at`: an inline image or a use of a definition; where to go on."""
        text = self.text
        if self.pairs is None:
            self.pairs = self.brackets(at, end)
        close = self.pairs.get(at + 1)
        if close is None:
            return at + 2
        alt = text[at + 2:close]
        after = close + 1
        if text.startswith("(", after):
            target = self.destination(after + 1, end)
            if target is not None:
                self.add(self.make("inline", at, target[3], target[0], target[1], target[2], alt or None))
                return target[3]
        label = _LABEL.match(text, after, end)
        if label is not None:  # ![alt][id] or ![alt][]: a full or collapsed reference, never a shortcut
            return label.end() if self.use(label.group(1) or alt, alt) else at + 2
        return after if self.use(alt, alt) else at + 2

    def use(self, label: str, alt: str) -> bool:
        name = _normal_label(label)
        if name not in self.first:
            return False
        self.used.setdefault(name, alt)
        return True

    def destination(self, pos: int, end: int) -> tuple[int, int, str, int] | None:
        """(target start, target end, wrap, end of the image) for `(url "title")` read from `pos`."""
        text = self.text
        i = self.match_end(_SPACE, pos, end)
        angle = _ANGLE_TARGET.match(text, i, end)
        if angle is not None:
            start, stop, wrap, i = i + 1, angle.end() - 1, "<", angle.end()
        elif text.startswith("<", i):
            return None
        else:
            j, depth = i, 0
            while j < end:
                char = text[j]
                if char == "\\" and j + 1 < end and text[j + 1] in _PUNCT:
                    j += 2
                    continue
                if char <= " " or char == "\x7f" or char == ")" and not depth:
                    break
                depth += {"(": 1, ")": -1}.get(char, 0)
                if depth > 32:  # CommonMark's limit, and what keeps `![a](![a](...` linear
                    return None
                j += 1
            if depth:
                return None
            start, stop, wrap, i = i, j, "", j
        space = self.match_end(_SPACE, i, end)
        if space > i and space < end and text[space] in _TITLES:
            if text[space] in self.unclosed:
                return None
            title = _TITLES[text[space]].match(text, space, end)
            if title is None:
                if text[space] != "(":  # no closing quote up to the paragraph's end: none for later titles
                    self.unclosed.add(text[space])
                return None
            space = self.match_end(_SPACE, title.end(), end)
        return (start, stop, wrap, space + 1) if text.startswith(")", space) else None


# -- documents -------------------------------------------------------------------------------------
class _Blocks:
    """CommonMark's block structure, one line at a time (the spec's appendix, "A parsing
    strategy"): the line first continues the open containers (block quotes, list items) it can,
    may open new ones, then continues or starts a leaf (paragraph, heading, fence, indented code,
    HTML block). Only a paragraph continues lazily, so a fence or an HTML block ends where the
    block quote or list item holding it ends. Columns are counted with tabs stopped at 4."""

    QUOTE = -1  # a block quote on the container stack; a list item is how far its content is indented
    #             from where its parent's content starts (≥ 0)

    def __init__(self, finder: _Finder) -> None:
        self.finder = finder
        self.text = finder.text
        self.spans: list[tuple[int, int]] = []
        self.stack: list[int] = []  # the open containers, outermost first
        self.leaf: str | None = None  # "paragraph", "fence", "code", "html" (kind 6, 7), "raw" (kind 1-5, Liquid)
        self.paragraph: list[int] = []  # [start, end] of the open paragraph
        self.html_block: list[int] = []  # [start, end] of the open HTML block: read as HTML only
        self.fence = ("", 0)  # character and length of the open fence
        self.raw_end: re.Pattern[str] | None = None  # what ends the open "raw" leaf
        self.empty_item = -1  # depth of a list item opened on the previous line with nothing after its marker
        self.skip_to = finder.body_start  # past the front matter, past a definition's second line

    def close_leaf(self) -> None:
        if self.leaf == "paragraph":
            self.spans.append((self.paragraph[0], self.paragraph[1]))
        elif self.leaf in ("html", "raw"):
            self.finder.close_html(self.html_block)
        self.leaf = None

    def close_containers(self, depth: int) -> None:
        """End the containers from `depth` on: with them, the leaf inside."""
        if depth < len(self.stack):
            self.close_leaf()
            del self.stack[depth:]

    def line(self, start: int, end: int) -> None:
        line = self.text[start:end]
        if "\t" in line:
            line = line.expandtabs(4)  # a line starts at column 0: its tab stops are CommonMark's
        pos, matched = 0, 0
        for container in self.stack:
            first = _first(line, pos)
            if container == self.QUOTE:
                quote = _QUOTE_MARK.match(line, pos)
                if quote is None:
                    break
                pos = quote.end()
            elif first < len(line):
                if first - pos < container:
                    break
                pos += container
            matched += 1
        empty_item, self.empty_item = self.empty_item, -1
        if matched == len(self.stack) and self.continued(line, pos, end):
            return
        pos, opened = self.open_containers(line, pos, matched)
        first = _first(line, pos)
        if matched < len(self.stack) and not opened:
            if self.leaf == "paragraph" and first < len(line) and not self.interrupts(line, first, pos):
                self.paragraph[1] = end  # a lazy continuation line
                return
            self.close_containers(matched)
        if first == len(line):
            if 0 <= empty_item == len(self.stack) - 1 and not opened:
                self.close_containers(empty_item)  # a list item begins with at most one blank line
            self.close_leaf()
            return
        self.leaf_line(line, first, pos, self.offset(start, end, first), end)

    def continued(self, line: str, pos: int, end: int) -> bool:
        """Whether the line belongs to the open fence, code or HTML block (all its containers
        continue)."""
        first = _first(line, pos)
        if self.leaf == "fence":
            closing = _FENCE_END.match(line, first) if first - pos < 4 else None
            if closing and closing.group(1)[0] == self.fence[0] and len(closing.group(1)) >= self.fence[1]:
                self.leaf = None
            return True
        if self.leaf == "raw":
            if self.html_block:
                self.html_block[1] = end
            if self.raw_end is not None and self.raw_end.search(line, pos):
                self.close_leaf()
            return True
        if self.leaf == "html" and first < len(line):
            self.html_block[1] = end
            return True
        if self.leaf == "code" and (first == len(line) or first - pos >= 4):
            return True
        if self.leaf in ("html", "code"):
            self.close_leaf()
        return False

    def open_containers(self, line: str, pos: int, matched: int) -> tuple[int, bool]:
        """Open the block quotes and list items that start on this line; where its content starts."""
        opened = False
        while True:
            first = _first(line, pos)
            if first - pos >= 4:
                break
            quote = _QUOTE_MARK.match(line, pos)
            item = _ITEM.match(line, first) if quote is None and not _BREAK.match(line, first) else None
            if item is not None:
                after = item.end()
                blank = _first(line, after) == len(line)
                ordinal = item.group(1)[:-1]
                if self.leaf == "paragraph" and matched == len(self.stack) and not opened \
                        and (blank or ordinal.isdigit() and int(ordinal) != 1):
                    break  # an empty item, or a list not starting at 1, cannot interrupt a paragraph
                spaces = _first(line, after) - after
                content = after + 1 if blank or spaces > 4 else after + spaces
            elif quote is None:
                break
            if not opened:
                self.close_containers(matched)
                self.close_leaf()
                opened = True
            if item is None:
                self.stack.append(self.QUOTE)
                pos = quote.end() if quote else pos
            else:
                self.stack.append(content - pos)
                pos = min(content, len(line))
                if blank:
                    self.empty_item = len(self.stack) - 1
        return pos, opened

    def interrupts(self, line: str, first: int, pos: int) -> bool:
        """Whether a line whose containers did not all continue starts a block here, so that it
        is no lazy continuation of the open paragraph. An HTML block of kind 7 may start, since
        the paragraph is not what it would interrupt; indented code may not."""
        if first - pos >= 4:
            return False
        return bool(_fence_opening(line, first) or _BREAK.match(line, first) or _HEADING.match(line, first)
                    or line[first] == "<" and any(begin.match(line, first) for begin, _ in _HTML_BLOCKS))

    def leaf_line(self, line: str, first: int, pos: int, rest: int, end: int) -> None:
        """A non-blank line inside its containers: `first` is where its text starts in the
        (tab-expanded) line, `rest` the same place in the document."""
        text, paragraph = self.text, self.leaf == "paragraph"
        if first - pos >= 4:
            if paragraph:
                self.paragraph[1] = end
            else:
                self.leaf = "code"
            return
        opening = _fence_opening(line, first)
        if opening:
            self.close_leaf()
            self.leaf, self.fence = "fence", (opening.group(1)[0], len(opening.group(1)))
            return
        kind = next((k for k, (begin, _) in enumerate(_HTML_BLOCKS)
                     if begin.match(line, first) and (k < 6 or not paragraph)), None) if line[first] == "<" else None
        if kind is not None:
            self.close_leaf()
            self.html_block[:] = [rest, end]
            self.raw_end = _HTML_BLOCKS[kind][1]
            self.leaf = "html" if self.raw_end is None else "raw"
            if self.raw_end is not None and self.raw_end.search(line, first + 2):
                self.close_leaf()
            return
        liquid = _LIQUID_CODE.match(line, first)
        if liquid is not None:
            self.close_leaf()
            self.raw_end = re.compile(rf"\{{%-?\s*end{liquid.group(1)}\s*-?%\}}")
            if not self.raw_end.search(line, liquid.end()):
                self.leaf = "raw"
            return
        if paragraph and _SETEXT.match(line, first) or _BREAK.match(line, first):
            self.close_leaf()
            return
        if _HEADING.match(line, first):
            self.close_leaf()
            self.spans.append((rest, end))
            return
        if paragraph:
            self.paragraph[1] = end
            return
        definition = _DEFINITION.match(text, rest, end)
        if definition is None and _DEFINITION_LABEL.match(text, rest, end):  # the URL on the next line
            following = text.find("\n", end)
            stop = len(text) if following < 0 or text.find("\n", following + 1) < 0 \
                else text.find("\n", following + 1)
            stop -= stop > 0 and text[stop - 1] == "\r"
            definition = _DEFINITION.match(text, rest, stop) if following >= 0 else None
            if definition is not None:
                self.skip_to = stop
        if definition and definition.group(1).strip():
            self.finder.definition(definition)
            return
        self.paragraph[:] = [rest, end]
        self.leaf = "paragraph"

    def offset(self, start: int, end: int, column: int) -> int:
        """Where column `column` of the line at `start` is in the document (after a tab that
        spans it)."""
        if "\t" not in self.text[start:end]:
            return start + column
        at = 0
        for pos in range(start, end):
            if at >= column:
                return pos
            at += 4 - at % 4 if self.text[pos] == "\t" else 1
        return end


def _first(line: str, pos: int) -> int:
    """Where the text of a tab-expanded line starts, from `pos`: its length when the rest is blank."""
    return _SPACES.match(line, pos).end()  # type: ignore[union-attr]  # " *" always matches


def _fence_opening(line: str, first: int) -> re.Match[str] | None:
    opening = _FENCE.match(line, first)
    return None if opening is None or opening.group(1)[0] == "`" and "`" in opening.group(2) else opening


class Found(NamedTuple):
    """A document to read, or (with `error`) a path that is neither read nor written, and why."""

    path: str
    #: The real path of the folder given on the command line (a file's own folder): the
    #: document's tree, which its symlinks and (for pp-scan) its local images must not leave.
    tree: str
    error: PicpipeError | None = None


def inside(path: str, folder: str) -> bool:
    """Whether the real path `path` is the real path `folder` or lies under it."""
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def documents(paths: Iterable[str]) -> Iterator[Found]:
    """Each path as given, folders walked for Markdown and HTML files (sorted; hidden folders and
    node_modules skipped; each file once). A symlink (document or folder) is followed when its
    real path stays inside the folder given, else it is reported and left alone, like a loop. A
    folder without any document is yielded itself, for `load` to name the mistake."""
    seen: set[tuple[bool, str]] = set()
    for path in paths:
        if os.path.isdir(path):
            tree = os.path.realpath(path)
            found = sorted(_walk(path, tree), key=lambda f: f.path) or [Found(path, tree)]
        else:
            found = [_check(path, os.path.realpath(os.path.dirname(os.path.abspath(path))))]
        for item in found:  # the same document, or the same refusal, once
            ok = item.error is None
            key = (ok, os.path.realpath(item.path) if ok else os.path.abspath(item.path))
            if key not in seen:
                seen.add(key)
                yield item


def _walk(top: str, tree: str) -> list[Found]:
    """Documents under `top`: real folders first, then each symlinked folder whose real path is
    inside `tree` and not walked yet; the links that leave `tree` or loop back, and folders that
    cannot be listed, as refusals."""
    found: list[Found] = []
    walked: set[str] = set()
    pending, links = [top], list[str]()

    def unlistable(exc: OSError) -> None:
        found.append(Found(str(exc.filename), tree, PicpipeError(
            "unreadable", f"{exc.filename}: {exc.strerror}: its documents were not read",
            "check the folder's permissions")))

    while pending or links:
        if not pending:
            link = links.pop(0)
            real = os.path.realpath(link)
            if not inside(real, tree):
                found.append(Found(link, tree, _outside(link, real, tree)))
            elif inside(os.path.realpath(os.path.dirname(link)), real):
                found.append(Found(link, tree, PicpipeError(
                    "symlink_loop", f"{link} links to {real}, a folder it is in (a loop): not followed",
                    "nothing to do if that is intended; the documents around it were read")))
            elif real not in walked:  # else another name of a folder already walked
                pending.append(link)
            continue
        for folder, subfolders, files in os.walk(pending.pop(0), onerror=unlistable):
            walked.add(os.path.realpath(folder))
            subfolders[:] = [d for d in subfolders if not d.startswith(".") and d != SKIPPED_FOLDER]
            links += [os.path.join(folder, d) for d in subfolders if os.path.islink(os.path.join(folder, d))]
            subfolders[:] = [d for d in subfolders if not os.path.islink(os.path.join(folder, d))]
            found += [_check(os.path.join(folder, f), tree) for f in files
                      if f.lower().endswith(DOCUMENT_SUFFIXES) and not f.startswith(".")]
    return found


def _check(path: str, tree: str) -> Found:
    """A document, or its refusal when it is a symlink that loops or leaves `tree`. Other
    failures (missing, unreadable) are `load`'s to name."""
    try:
        os.stat(path)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return Found(path, tree, PicpipeError(
                "symlink_loop", f"{path}: a symlink loop (too many levels of symbolic links): not read",
                "fix or remove the link (ls -l shows where it points); the other documents were read"))
        return Found(path, tree)
    real = os.path.realpath(path)
    return Found(path, tree, None if inside(real, tree) else _outside(path, real, tree))


def _outside(link: str, real: str, tree: str) -> PicpipeError:
    return PicpipeError("symlink_outside", f"{link} is a symlink to {real}, outside {tree}: neither read nor written",
                        f"only what lies inside the folder given is read or rewritten; give {real} itself on the "
                        "command line if you mean it")


class Document(NamedTuple):
    path: str
    text: str
    stat: os.stat_result

    @property
    def html(self) -> bool:
        return self.path.lower().endswith(HTML_SUFFIXES)

    def refs(self) -> list[Ref]:
        return find_refs(self.text, self.path, self.html)


def load(path: str) -> Document:
    """A document's text (UTF-8, line endings as they are), or a PicpipeError that names it."""
    from picpipe.files import read_source

    if os.path.isdir(path):
        raise PicpipeError("no_documents", f"{path}: no Markdown or HTML documents in this folder",
                           f"documents are found by their names: *{', *'.join(DOCUMENT_SUFFIXES)}")
    before = _stat(path)
    data = read_source(path)
    try:
        return Document(path, data.decode("utf-8"), before)
    except UnicodeDecodeError as exc:
        raise PicpipeError("bad_encoding", f"{path}: not UTF-8 (byte {exc.start} is {data[exc.start]:#04x})",
                           "convert it to UTF-8 first, e.g. iconv -f GBK -t UTF-8 (many Windows editors save GBK)") \
            from None


def _stat(path: str) -> os.stat_result:
    try:
        return os.stat(path)
    except FileNotFoundError:
        raise PicpipeError("not_found", f"{path}: no such file", "check the path (relative to the current folder)") \
            from None


def scan(paths: Iterable[str], roots: Sequence[str] = (), site_root: str | None = None) \
        -> Iterator[tuple[str, list[dict[str, Any]], bool]]:
    """Per document: (doc, its image records in document order (pp-scan's), True), or (doc, one
    error record, False) for a document that was not read. A local image is a `path` only when
    its real path lies inside the document's tree or one of `roots` (real paths); with
    `site_root` (a real path, counted as a root), a target that starts with one `/` is read
    against it, as a static site generator does."""
    folders: dict[str, str] = {}
    if site_root is not None:
        roots = (*roots, site_root)
    for found in documents(paths):
        try:
            if found.error is not None:
                raise found.error
            refs = load(found.path).refs()
        except PicpipeError as exc:
            yield found.path, [{"ref": {"doc": found.path}, "error": exc.to_dict("scan")}], False
            continue
        yield found.path, [confined(ref, (found.tree, *roots), folders, site_root) for ref in refs], True


def site_absolute(ref: Ref) -> bool:
    """Whether a local target starts with one `/`: the site's root to Hugo, Jekyll and Hexo, the
    filesystem's root to everything else."""
    target = decode_target(ref.target, ref.kind).strip()
    return ref.resolved is not None and target.startswith("/") and not target.startswith("//")


def confined(ref: Ref, roots: Sequence[str], folders: dict[str, str] | None = None,
             site_root: str | None = None) -> dict[str, Any]:
    """The reference's record; for a local image outside every root (`../../etc/passwd`,
    `/home/u/.ssh/id_rsa`, `file:///...`, a symlink that leads out) an `outside_root` error record
    in its place, without `path`: a note from someone else must not publish any file it names.
    Such a target that does not exist is a `not_found` record instead: a broken link, not an
    attack. With `site_root`, `path` of a `/images/x.png` target is the file under it, while
    `ref.resolved` stays `/images/x.png`, the key pp-rewrite finds in the document.
    `folders` caches the real paths of image folders (most images of a tree share a few)."""
    record = ref.record()
    if ref.resolved is None:
        return record
    local = ref.resolved
    if site_root is not None and site_absolute(ref):
        local = record["path"] = os.path.join(site_root, ref.resolved.lstrip(os.sep))
    if elsewhere(local):
        del record["path"]
        record["error"] = PicpipeError(
            "not_found", f"{ref.doc}:{ref.line}: {ref.target}: a Windows path, no such file on this system",
            "run pp-scan on the Windows machine that holds the image, or copy the image beside the document "
            "and link it by a relative path (Typora: Preferences > Image > Use relative path)").to_dict("scan")
        return record
    folder, name = os.path.split(local)
    if folders is None:
        folders = {}
    if folder not in folders:
        folders[folder] = os.path.realpath(folder)
    real = os.path.join(folders[folder], name)
    if os.path.islink(real):
        real = os.path.realpath(real)
    if any(inside(real, root) for root in roots):
        if ref.kind == "obsidian" and not os.path.exists(real):  # found nowhere in the vault: say so now
            del record["path"]
            record["error"] = PicpipeError(
                "not_found", f"{ref.doc}:{ref.line}: {ref.target}: no such file in the vault or beside the note",
                "check the embed's name (Obsidian's own search finds the file if it exists)").to_dict("scan")
        return record
    del record["path"]
    where = f"{ref.doc}:{ref.line}: {ref.target}{f' is {real}' if real != ref.target else ''}"
    if not os.path.exists(real):
        site = ("; a target that starts with / is read from the filesystem's root: for a site, give its static "
                "folder, e.g. pp-scan --site-root static ... (Hugo; Hexo: source, Jekyll: the site's folder)")
        record["error"] = PicpipeError(
            "not_found", f"{where}: no such file",
            "check the link" + (site if site_root is None and site_absolute(ref) else "")).to_dict("scan")
    elif _image_file(real):
        record["error"] = PicpipeError(
            "outside_root", f"{where}, outside {roots[0]}: not read",
            f"only images inside the folder given to pp-scan are read; if you trust this document, allow the "
            f"image's folder: pp-scan --root {os.path.dirname(real)} ...").to_dict("scan")
    else:
        record["error"] = PicpipeError(
            "outside_root", f"{where}, outside {roots[0]}, and not an image: not read",
            "the document points outside its folder at a file that is not an image; such files are never "
            "published: check the link (a document from someone else may be after your files)").to_dict("scan")
    return record


def _image_file(path: str) -> bool:
    """Whether `path` is a regular file that looks like an image (its extension or its first
    bytes): only then is trusting its folder worth suggesting. Never blocks on a FIFO or device."""
    from picpipe.publish import sniff

    if path.lower().endswith(IMAGE_SUFFIXES):
        return os.path.isfile(path)
    try:
        fd = os.open(path, os.O_RDONLY | NONBLOCK | BINARY)
    except OSError:
        return False
    try:
        return stat.S_ISREG(os.fstat(fd).st_mode) and sniff(os.read(fd, 4096)) is not None
    except OSError:
        return False
    finally:
        os.close(fd)


# -- rewriting -------------------------------------------------------------------------------------
def target_key(value: str, folder: str) -> Key | None:
    where = classify(value, folder)
    if where is None:
        return None
    return ("url", url_key(where[1])) if where[0] == "url" else where


class Replacements:
    """Old target → new URL, from records: pp-upload's `replaces` and pp-scan's `ref` (a local
    target by `ref.resolved`). One old target given two different new URLs is a conflict: it is
    left alone."""

    def __init__(self) -> None:
        self.new: dict[Key, str] = {}
        self.conflicts: dict[Key, set[str]] = {}
        #: The new URLs: a document that already shows one needs nothing.
        self.current: set[Key] = set()

    def add(self, record: dict[str, Any]) -> bool:
        """Learn what the record replaces; False when it replaces nothing."""
        new = record.get("url")
        if not isinstance(new, str) or not new.strip():
            return False
        new_key = target_key(new, os.getcwd())
        olds = [key for key in self.old_keys(record) if key != new_key]
        for key in olds:
            if key in self.conflicts:
                self.conflicts[key].add(new)
            elif self.new.setdefault(key, new) != new:
                self.conflicts[key] = {self.new.pop(key), new}
        if olds and new_key is not None:
            self.current.add(new_key)
        return bool(olds)

    @staticmethod
    def old_keys(record: dict[str, Any]) -> list[Key]:
        keys = []
        replaces = record.get("replaces")
        if isinstance(replaces, str):
            keys.append(target_key(replaces, os.getcwd()))
        ref = record.get("ref")
        if isinstance(ref, dict):
            resolved, target, doc = ref.get("resolved"), ref.get("target"), ref.get("doc")
            if isinstance(resolved, str) and resolved:
                keys.append(("path", os.path.abspath(resolved)))
            elif isinstance(target, str):
                folder = os.path.dirname(os.path.abspath(doc)) if isinstance(doc, str) and doc else os.getcwd()
                keys.append(target_key(decode_target(target, str(ref.get("kind"))), folder))
        return list(dict.fromkeys(key for key in keys if key is not None))

    def get(self, key: Key) -> str | None:
        return self.new.get(key)


class Rewrite(NamedTuple):
    """What rewriting one document would change."""

    document: Document
    text: str
    replaced: list[Ref]
    #: References left as they are: no record gives them a new URL.
    unmatched: list[Ref]
    #: (line, old URL): a replaced URL that still appears elsewhere (a link around the image,
    #: a code block): left as it is, and worth a look.
    leftover: list[tuple[int, str]]
    #: (reference, why): a reference with a new URL that its syntax cannot hold safely: left as it is.
    refused: list[tuple[Ref, str]] = []

    @property
    def changed(self) -> bool:
        return self.text != self.document.text


def rewrite(document: Document, replacements: Replacements) -> Rewrite:
    """The document's text with each image target that has a replacement swapped, and nothing else."""
    text = document.text
    pieces, replaced, unmatched, refused, last = [], [], [], [], 0
    for ref in document.refs():
        new = replacements.get(ref.key)
        if new is None:
            if ref.key not in replacements.current:
                unmatched.append(ref)
            continue
        change = replacement(text, ref, new)
        if isinstance(change, str):
            refused.append((ref, change))
            continue
        start, end, target = change
        if target != text[start:end] and start >= last:
            pieces += [text[last:start], target]
            replaced.append(ref)
            last = end
    new_text = "".join(pieces) + text[last:]
    olds = dict.fromkeys(ref.target for ref in replaced if ref.url is not None)
    leftover = [(number, old) for number, line in enumerate(new_text.splitlines(), 1) for old in olds if old in line]
    return Rewrite(document, new_text, replaced, unmatched, leftover, refused)


def save(result: Rewrite, backup: bool = True, tree: str | None = None) -> str | None:
    """Write the rewritten document atomically (a temp file in its folder, fsynced, renamed over
    it, the file mode kept), after a backup copy of the old text unless told not to. Refuses a
    document that changed since it was read (an editor saved it), and one whose real path has
    left `tree` (a symlink changed since the walk). Returns the backup's path."""
    from pathlib import Path

    from picpipe.files import temp_copy

    doc, before = result.document.path, result.document.stat
    real = os.path.realpath(doc)  # a symlinked post stays a symlink: its target is replaced
    if tree is not None and not inside(real, tree):
        raise _outside(doc, real, tree)
    with temp_copy(Path(os.path.dirname(real)), result.text.encode("utf-8"),
                   prefix=f".{os.path.basename(real)}.") as temp:
        os.chmod(temp, stat.S_IMODE(before.st_mode))
        copy = _backup(doc, result.document.text.encode("utf-8"), before) if backup else None
        now = _stat(doc)
        if (now.st_ino, now.st_size, now.st_mtime_ns) != (before.st_ino, before.st_size, before.st_mtime_ns):
            if copy is not None:
                os.unlink(copy)
            raise PicpipeError("changed_meanwhile", f"{doc} changed while it was being rewritten: left as it is",
                               "run pp-rewrite again (save and close the document in your editor first)")
        os.replace(temp, real)
    return copy


def _backup(doc: str, data: bytes, before: os.stat_result) -> str:
    """`doc`.bak, else `doc`.TIMESTAMP.bak: never over an older backup. Same mode and times as `doc`."""
    return next(name for name in _backup_names(doc) if _write_new(name, data, before))


def _backup_names(doc: str) -> Iterator[str]:
    yield f"{doc}.bak"
    stamp = time.strftime("%Y%m%d-%H%M%S")
    yield f"{doc}.{stamp}.bak"
    for number in itertools.count(2):
        yield f"{doc}.{stamp}-{number}.bak"


def _write_new(name: str, data: bytes, before: os.stat_result) -> bool:
    """Write a file that is not there yet (False when it is), with the mode and times of `before`."""
    try:
        fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | BINARY, 0o600)
    except FileExistsError:
        return False
    mode = stat.S_IMODE(before.st_mode)
    with os.fdopen(fd, "wb") as handle:
        if hasattr(os, "fchmod"):
            os.fchmod(fd, mode)
        handle.write(data)
    if not hasattr(os, "fchmod"):
        os.chmod(name, mode)  # Windows before Python 3.13: its read-only bit is all a mode holds there
    os.utime(name, ns=(before.st_atime_ns, before.st_mtime_ns))
    return True


_DIFF_LINE = re.compile(r"[^\n]*\n|[^\n]+")


def diff(result: Rewrite) -> str:
    """A unified diff (a/DOC, b/DOC) of the rewrite, lines split at \\n only (a CR stays in its line)."""
    import difflib

    doc = result.document.path
    lines = difflib.unified_diff(_DIFF_LINE.findall(result.document.text), _DIFF_LINE.findall(result.text),
                                 f"a/{doc}", f"b/{doc}")
    return "".join(line if line.endswith("\n") else line + "\n\\ No newline at end of file\n" for line in lines)
