"""pp-scan and pp-rewrite (picpipe.docs): which image references a document has, and rewriting
exactly their targets, byte for byte, never in code."""

from __future__ import annotations

import json
import os
import resource
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import command_path, jsonl, parse_jsonl
from picpipe.docs import Replacements, encode_target, find_refs, load, rewrite, save, url_key
from picpipe.errors import PicpipeError

IMG = "https://img.example.com"

# Every syntax pp-scan reads, and every place it must not look.
FIXTURE = r"""# Post ![badge](https://img.example.com/badge.svg)

Inline ![a cat](https://img.example.com/cat.png "The cat") and ![spaces](<img/my shot.png>).
Typora ![typora](img/my%20shot.png) CJK ![截图](图片/截图%201.png) ![raw](<图片/截图 1.png>)
Reference ![logo][Logo] with title, ![wide][] collapsed, ![plain] shortcut, ![x][missing] undefined.
<img src="https://img.example.com/d.png?w=1&amp;h=2" alt="d &amp; e"> <IMG SRC='e.png'> <img width=3 src=f.png>
Inline code `![c](https://img.example.com/code.png)` and ``<img src="https://img.example.com/code2.png"> ` ``.
Escaped \![no](https://img.example.com/esc.png), data ![dot](data:image/png;base64,iVBORw0KGgo=),
mail ![m](mailto:me@example.com), link [![in a link](https://img.example.com/in.png)](https://example.com/).

```markdown
![fenced](https://img.example.com/fenced.png)
```

~~~~
```
![tilde](https://img.example.com/tilde.png)
~~~~

    ![indented](https://img.example.com/indented.png)

- a list item

    ![in the item](https://img.example.com/item.png)

<!-- ![commented](https://img.example.com/comment.png)
<img src="https://img.example.com/comment2.png"> -->
<textarea>
<img src="https://img.example.com/textarea.png">
</textarea>

[logo]: https://img.example.com/logo.png "Logo"
[wide]: <https://img.example.com/wide image.png>
[plain]: ./plain.jpg
[page]: https://example.com/about
[banner]: https://img.example.com/banner.webp
"""


def ref(line: int, text: str, target: str, kind: str = "inline", resolved: Path | None = None,
        doc: str = "posts/post.md") -> dict:
    where = {"doc": doc, "line": line, "text": text, "target": target, "kind": kind}
    if resolved is not None:
        where["resolved"] = str(resolved)
    return where


def remote(url: str, where: dict, alt: str | None = None) -> dict:
    return {"url": url, "ref": where, **({"alt": alt} if alt else {})}


def local(path: Path, where: dict, alt: str | None = None) -> dict:
    return {"path": str(path), "ref": where, **({"alt": alt} if alt else {})}


def test_scan_reads_every_syntax_and_nothing_in_code(run, tmp_path):
    posts = tmp_path / "posts"
    posts.mkdir()
    (posts / "post.md").write_text(FIXTURE)
    shot, cjk, plain = posts / "img/my shot.png", posts / "图片/截图 1.png", posts / "plain.jpg"
    result = run("pp-scan", "posts/post.md")
    assert result.returncode == 0, result.stderr
    assert parse_jsonl(result.stdout) == [
        remote(f"{IMG}/badge.svg", ref(1, f"![badge]({IMG}/badge.svg)", f"{IMG}/badge.svg"), "badge"),
        remote(f"{IMG}/cat.png", ref(3, f'![a cat]({IMG}/cat.png "The cat")', f"{IMG}/cat.png"), "a cat"),
        local(shot, ref(3, "![spaces](<img/my shot.png>)", "img/my shot.png", resolved=shot), "spaces"),
        local(shot, ref(4, "![typora](img/my%20shot.png)", "img/my%20shot.png", resolved=shot), "typora"),
        local(cjk, ref(4, "![截图](图片/截图%201.png)", "图片/截图%201.png", resolved=cjk), "截图"),
        local(cjk, ref(4, "![raw](<图片/截图 1.png>)", "图片/截图 1.png", resolved=cjk), "raw"),
        remote(f"{IMG}/d.png?w=1&h=2",
               ref(6, f'<img src="{IMG}/d.png?w=1&amp;h=2" alt="d &amp; e">', f"{IMG}/d.png?w=1&amp;h=2", "html"),
               "d & e"),
        local(posts / "e.png", ref(6, "<IMG SRC='e.png'>", "e.png", "html", posts / "e.png")),
        local(posts / "f.png", ref(6, "<img width=3 src=f.png>", "f.png", "html", posts / "f.png")),
        remote(f"{IMG}/in.png", ref(9, f"![in a link]({IMG}/in.png)", f"{IMG}/in.png"), "in a link"),
        remote(f"{IMG}/item.png", ref(24, f"![in the item]({IMG}/item.png)", f"{IMG}/item.png"), "in the item"),
        remote(f"{IMG}/logo.png", ref(32, f'[logo]: {IMG}/logo.png "Logo"', f"{IMG}/logo.png", "reference"), "logo"),
        remote(f"{IMG}/wide image.png",
               ref(33, f"[wide]: <{IMG}/wide image.png>", f"{IMG}/wide image.png", "reference"), "wide"),
        local(plain, ref(34, "[plain]: ./plain.jpg", "./plain.jpg", "reference", plain), "plain"),
        # used by no image of this document, but an image file: a shared definitions file's
        remote(f"{IMG}/banner.webp", ref(36, f"[banner]: {IMG}/banner.webp", f"{IMG}/banner.webp", "reference")),
    ]
    assert result.stderr == "pp-scan: 15 image references (8 remote, 7 local) in 1 document\n"
    assert run("pp-scan", "-q", "--remote", "posts").stderr == ""
    assert [r["ref"]["line"] for r in parse_jsonl(run("pp-scan", "--local", "posts").stdout)] == [3, 4, 4, 4, 6, 6, 34]
    matching = parse_jsonl(run("pp-scan", "--url", f"{IMG}/*.png", "posts").stdout)
    assert [r["url"] for r in matching] == [f"{IMG}/{n}.png" for n in ("cat", "in", "item", "logo", "wide image")]


def test_crlf_and_bom_documents(run, tmp_path):
    text = "\ufeff![a](https://x.example/a.png)\r\n\r\n```\r\n![b](https://x.example/a.png)\r\n```\r\n" \
           "<img\r\n  src=\"https://x.example/a.png\">\r\n\r\n[r]: https://x.example/r.png\r\n![r]"
    (tmp_path / "win.md").write_bytes(text.encode())
    scanned = parse_jsonl(run("pp-scan", "win.md").stdout)
    assert [(r["ref"]["line"], r["ref"]["text"]) for r in scanned] == [
        (1, "![a](https://x.example/a.png)"), (6, '<img\r\n  src="https://x.example/a.png">'),
        (9, "[r]: https://x.example/r.png")]
    records = jsonl([{"url": "https://y.example/a.png", "replaces": "https://x.example/a.png"},
                     {"url": "https://y.example/r.png", "replaces": "https://x.example/r.png"}])
    result = run("pp-rewrite", "--no-backup", "win.md", input=records)
    assert result.returncode == 0, result.stderr
    expected = text.replace("x.example/a.png)\r\n\r\n", "y.example/a.png)\r\n\r\n").replace(
        '"https://x.example/a.png"', '"https://y.example/a.png"').replace("x.example/r", "y.example/r")
    assert (tmp_path / "win.md").read_bytes() == expected.encode()  # BOM, CRLF, no final newline: all kept
    assert expected.count("x.example") == 1  # the fenced one


def test_folders_are_walked_in_a_stable_order(run, tmp_path):
    for name in ["posts/b.md", "posts/a/z.markdown", "posts/a/y.mdx", "posts/page.html", "posts/old.HTM",
                 "posts/notes.txt", "posts/.drafts/d.md", "posts/node_modules/pkg/README.md", "posts/a.md.bak"]:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(f'<img src="https://x.example/{Path(name).name}.png">\n')
    result = run("pp-scan", "posts", "posts/b.md", "./posts/page.html")
    assert result.returncode == 0, result.stderr
    docs = [r["ref"]["doc"] for r in parse_jsonl(result.stdout)]
    assert docs == ["posts/a/y.mdx", "posts/a/z.markdown", "posts/b.md", "posts/old.HTM", "posts/page.html"]


def test_missing_unreadable_and_empty_inputs_are_error_records(run, tmp_path):
    (tmp_path / "good.md").write_text("![a](a.png)\n")
    (tmp_path / "gbk.md").write_bytes("![截图](a.png)\n".encode("gbk"))
    (tmp_path / "empty").mkdir()
    result = run("pp-scan", "missing.md", "gbk.md", "empty", "good.md")
    assert result.returncode == 1
    out = parse_jsonl(result.stdout)
    assert [(r["ref"]["doc"], r.get("error", {}).get("type")) for r in out] == [
        ("missing.md", "not_found"), ("gbk.md", "bad_encoding"), ("empty", "no_documents"), ("good.md", None)]
    assert out[1]["error"]["message"].startswith("gbk.md: not UTF-8") and "iconv" in out[1]["error"]["hint"]
    assert "missing.md: no such file" in result.stderr and "Traceback" not in result.stderr
    usage = run("pp-scan")
    assert usage.returncode == 2 and "hint:" in usage.stderr and usage.stdout == ""


@pytest.mark.parametrize("name", ["pp-scan", "pp-rewrite"])
def test_help_shows_pipelines(run, name):
    examples = run(name, "--help").stdout.split("examples:")[1]
    pipelines = [line for line in examples.splitlines() if line.strip().startswith("pp-")]
    assert len(pipelines) >= 2 and all("|" in line for line in pipelines)


# -- the finder's rules, one by one -------------------------------------------------------------
def targets(text: str, doc: str = "d.md") -> list[str]:
    return [r.target for r in find_refs(text, doc, html=doc.endswith(".html"))]


@pytest.mark.parametrize(("text", "expected"), [
    ("```\n![a](a.png)\n", []),  # an unclosed fence runs to the end
    ("````\n```\n![a](a.png)\n````\n![b](b.png)\n", ["b.png"]),
    ("```js title=\"x\"\n![a](a.png)\n```\n![b](b.png)\n", ["b.png"]),
    ("``` `x` ```\n![a](a.png)\n", ["a.png"]),  # backticks in the info string: no fence, a code span
    ("text\n    ![a](a.png)\n", ["a.png"]),  # a paragraph's continuation, not code
    ("# h\n\n\t![a](a.png)\n", []),  # a tab indents code too
    ("1. step\n\n   ```sh\n   ![a](a.png)\n   ```\n\n   ![b](b.png)\n", ["b.png"]),
    ("- a\n  - b\n\n          ![code](c.png)\n\n      ![para](p.png)\n", ["p.png"]),
    ("> ![a](a.png)\n>\n>     ![code](c.png)\n> ```\n> ![f](f.png)\n> ```\n", ["a.png"]),
    ("![a `]` b](a.png) `![c](c.png)` ``![d](d.png)``\n", ["a.png"]),
    ("![a](a.png\n'title\non lines') ![b](b.png (paren title))\n", ["a.png", "b.png"]),
    ("![a](x/(1).png) ![b](x\\(2.png) ![c](<x/a b.png> \"t\")\n", ["x/(1).png", "x\\(2.png", "x/a b.png"]),
    ("![a](a.png \"t\" junk) ![b](b c.png) ![](<>) ![e]()\n", []),
    ("x <!-- ![a](a.png) --> ![b](b.png) <!--\n![c](c.png)\n\n![d](d.png)\n", ["b.png", "d.png"]),
    ("<!-- one -->![a](a.png)\n\n![b](b.png)\n", ["b.png"]),  # a comment block takes its whole line
    # a browser shows <img> inside <code> and <pre>; <textarea> holds text
    ("x <code>![a](a.png)</code> <pre>\n<img src=b.png>\n</pre> <CODE>![c](c.png)\n\n![d](d.png)\n",
     ["a.png", "b.png", "c.png", "d.png"]),
    ("x <textarea>![a](a.png)\n<img src=b.png></textarea>\n\n![d](d.png)\n", ["d.png"]),
    ("<script>\n![a](a.png)\n</script>\n![b](b.png)\n", ["b.png"]),
    ("[^1]: note.png\n[a]:\n![a]\n", []),  # footnotes: no images
    ("![A][B  c]\n\n[b C]: x.png\n[B c]: y.png\n", ["x.png"]),  # labels fold case and blanks; the first counts
    ("Para\n[a]: a.png\n![a]\n", []),  # a definition cannot interrupt a paragraph
    ("<img src={cover} /> <img src=\"{{ site.url }}/a.png\"> <img data-src=x.png src=\"\"> <img alt=x>\n", ["x.png"]),
    ("![a](//cdn.example/a.png) ![b](file:///srv/b%20c.png) ![c](mailto:x) ![d](#top) ![e](https://)\n",
     ["//cdn.example/a.png", "file:///srv/b%20c.png"]),
])
def test_markdown_rules(text, expected):
    assert targets(text) == expected


def test_html_documents_read_img_a_browser_shows():
    page = ("<p>![md](no.png)<img src=a.png></p><!-- <img src=b.png> --><pre><img src=c.png></pre>"
            "<code><img src=\"d.png\"></code><script>x='<img src=e.png>'</script><IMG\nsrc='f.png'>")
    assert targets(page, "p.html") == ["a.png", "c.png", "d.png", "f.png"]
    assert [r.line for r in find_refs(page, "p.html", html=True)] == [1, 1, 1, 1]


def test_targets_are_classified_and_decoded(tmp_path):
    refs = find_refs("![a](//cdn.example/a.png) ![b](file:///srv/b%20c.png) ![c](x\\_y.png#frag) "
                     "![d](https://x.example/a&amp;b.png)\n", str(tmp_path / "d.md"))
    assert [(r.url, r.resolved) for r in refs] == [
        ("https://cdn.example/a.png", None), (None, "/srv/b c.png"), (None, str(tmp_path / "x_y.png")),
        ("https://x.example/a&b.png", None)]


@pytest.mark.parametrize("url", ["https://new.example/a b (1.png", "https://new.example/图床/截图.png?x=1&y='2'",
                                 "https://new.example/p(1).png", "https://new.example/a&amp;b.png"])
@pytest.mark.parametrize("written", ['![a](old.png "t")', "![a](<old.png>)", "[a]: old.png\n![a]",
                                     '<img src="old.png">', "<img src='old.png'>", "<img src=old.png alt=x>"])
def test_a_new_url_reads_back_as_itself_in_every_place(tmp_path, url, written):
    from picpipe.links import encode_url

    doc = tmp_path / "d.md"
    doc.write_text(written + "\n")
    replacements = Replacements()
    replacements.add({"url": url, "ref": {"doc": str(doc), "target": "old.png", "kind": "inline"}})
    result = rewrite(load(str(doc)), replacements)
    assert len(result.replaced) == 1
    [old] = find_refs(doc.read_text(), str(doc))
    [new] = find_refs(result.text, str(doc))
    # as pp-link writes it; a bare Markdown target with an unbalanced parenthesis encodes it
    assert new.url in {encode_url(url), encode_url(url).replace("(", "%28")} and url_key(new.url) == url_key(url)
    prefix, suffix = doc.read_text()[:old.start], doc.read_text()[old.end:]
    # everything around the target as it was (an unquoted HTML value may have needed quotes)
    assert (result.text[:new.start], result.text[new.end:]) in {(prefix, suffix), (prefix + '"', '"' + suffix)}


def test_url_key_makes_one_image_of_its_spellings():
    keys = {url_key(u) for u in ["https://IMG.example.com/图/a%7e.png", "HTTPS://img.example.com/%E5%9B%BE/a~.png",
                                 "https://img.example.com/%e5%9b%be/a%7E.png"]}
    assert len(keys) == 1
    assert url_key("https://x.example/a%2Fb.png") != url_key("https://x.example/a/b.png")
    assert encode_target("https://x.example/图.png", "inline", "") == "https://x.example/%E5%9B%BE.png"


# -- rewriting ------------------------------------------------------------------------------------
OLD, OLD2, NEW, NEW2 = ("https://old.example.com/a.png", "https://old.example.com/b.jpg",
                        f"{IMG}/2024/a.png", f"{IMG}/2024/b.jpg")
POST = f"""---
link: {OLD}
---
# Hi

![a]({OLD}) and ![again]( {OLD}  "t" ) and [a link]({OLD}) and `![code]({OLD})`

```
![fenced]({OLD})
```

<!-- ![c]({OLD}) -->
<img alt=x src='{OLD}'> ![other](https://other.example.com/o.png) ![mine](mine.png)
![r][ref]

[ref]: <{OLD2}> 'title'
"""
REWRITTEN = POST.replace(f"![a]({OLD})", f"![a]({NEW})").replace(f"( {OLD}  ", f"( {NEW}  ").replace(
    f"src='{OLD}'", f"src='{NEW}'").replace(f"<{OLD2}>", f"<{NEW2}>")
RECORDS = jsonl([{"url": NEW, "replaces": OLD, "sha256": "a" * 64}, {"url": NEW2, "replaces": OLD2},
                 {"url": f"{IMG}/unrelated.png", "replaces": "https://old.example.com/unrelated.png"}])


def posts(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / "posts" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "posts" / name).write_text(text)
    return tmp_path / "posts"


def skeleton(text: str, refs: list) -> str:
    """The text with each reference's target cut out: what a rewrite must leave as it was."""
    for found in reversed(refs):
        text = text[:found.start] + "@" + text[found.end:]
    return text


def listing(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_rewrite_changes_image_targets_only(run, tmp_path):
    folder = posts(tmp_path, {"p.md": POST, "same.md": "no images\n"})
    os.chmod(folder / "p.md", 0o640)
    result = run("pp-rewrite", "posts", input=RECORDS)
    assert result.returncode == 0, result.stderr
    assert (folder / "p.md").read_text() == REWRITTEN
    assert REWRITTEN.count(OLD) == 5  # front matter, link, inline code, fence, comment: untouched
    assert (folder / "p.md.bak").read_text() == POST
    assert os.stat(folder / "p.md").st_mode & 0o777 == 0o640 == os.stat(folder / "p.md.bak").st_mode & 0o777
    assert parse_jsonl(result.stdout) == [{"doc": "posts/p.md", "replaced": 4, "unmatched": 1,
                                           "backup": "posts/p.md.bak"}]
    said = result.stderr.splitlines()
    assert said[0] == "pp-rewrite: posts/p.md:13: https://other.example.com/o.png"
    assert said[-1] == "pp-rewrite: rewrote 4 image links in 1 document; 1 image link without a replacement " \
                       "left as written"
    # the lines where the old URL stays (it is no image target there) are named, one message per line
    assert len([line for line in said if f"{OLD} still appears here" in line]) == len(said) - 2 == 4
    assert listing(folder) == ["p.md", "p.md.bak", "same.md"]  # no temp file left

    again = run("pp-rewrite", "posts", input=RECORDS)  # already done: nothing to write, the new URLs known
    assert again.returncode == 0 and again.stdout == "" and "rewrote 0 image links in 0 documents" in again.stderr
    assert (folder / "p.md").read_text() == REWRITTEN


def test_backups_never_overwrite_and_can_be_skipped(run, tmp_path):
    folder = posts(tmp_path, {"p.md": POST})
    (folder / "p.md.bak").write_text("an older backup\n")
    first = parse_jsonl(run("pp-rewrite", "-q", "posts/p.md", input=RECORDS).stdout)[0]
    assert first["backup"].startswith("posts/p.md.") and first["backup"].endswith(".bak")
    assert (tmp_path / first["backup"]).read_text() == POST
    assert (folder / "p.md.bak").read_text() == "an older backup\n"
    (folder / "p.md").write_text(POST)
    second = parse_jsonl(run("pp-rewrite", "-q", "posts/p.md", input=RECORDS).stdout)[0]
    assert second["backup"] not in (first["backup"], "posts/p.md.bak")  # same second: numbered
    (folder / "p.md").write_text(POST)
    before = listing(folder)
    result = run("pp-rewrite", "-q", "--no-backup", "posts/p.md", input=RECORDS)
    assert parse_jsonl(result.stdout) == [{"doc": "posts/p.md", "replaced": 4, "unmatched": 1}]
    assert listing(folder) == before and (folder / "p.md").read_text() == REWRITTEN


def test_dry_run_prints_a_diff_and_changes_nothing(run, tmp_path):
    folder = posts(tmp_path, {"p.md": POST, "tail.md": f"![t]({OLD2})"})
    result = run("pp-rewrite", "--dry-run", "posts", input=RECORDS)
    assert result.returncode == 0, result.stderr
    no_newline = "\\ No newline at end of file"
    assert result.stdout.split("\n") == [
        "--- a/posts/p.md", "+++ b/posts/p.md", "@@ -3,14 +3,14 @@", " ---", " # Hi", " ",
        f"-![a]({OLD}) and ![again]( {OLD}  \"t\" ) and [a link]({OLD}) and `![code]({OLD})`",
        f"+![a]({NEW}) and ![again]( {NEW}  \"t\" ) and [a link]({OLD}) and `![code]({OLD})`",
        " ", " ```", f" ![fenced]({OLD})", " ```", " ", f" <!-- ![c]({OLD}) -->",
        f"-<img alt=x src='{OLD}'> ![other](https://other.example.com/o.png) ![mine](mine.png)",
        f"+<img alt=x src='{NEW}'> ![other](https://other.example.com/o.png) ![mine](mine.png)",
        " ![r][ref]", " ", f"-[ref]: <{OLD2}> 'title'", f"+[ref]: <{NEW2}> 'title'",
        "--- a/posts/tail.md", "+++ b/posts/tail.md", "@@ -1 +1 @@",
        f"-![t]({OLD2})", no_newline, f"+![t]({NEW2})", no_newline, ""]
    assert (folder / "p.md").read_text() == POST and listing(folder) == ["p.md", "tail.md"]
    assert "would rewrite 5 image links in 2 documents" in result.stderr
    patched = subprocess.run(["patch", "-p1", "--dry-run"], input=result.stdout, capture_output=True, text=True,
                             cwd=tmp_path)
    assert patched.returncode == 0, patched.stdout


def test_local_images_are_matched_by_resolved_path_in_every_document(run, tmp_path):
    folder = posts(tmp_path, {"a/one.md": "![x](../img/a.png) ![y](<../img/b c.png>)\n",
                              "two.md": "![x](img/a.png) ![x2](./img/../img/a.png) ![y](img/b%20c.png)\n"})
    scanned = parse_jsonl(run("pp-scan", "--root", "posts", "posts/a/one.md").stdout)  # ../img: outside posts/a
    assert scanned[0]["ref"]["resolved"] == str(folder / "img/a.png")
    uploaded = [{**scanned[0], "url": f"{IMG}/a.png"}]  # b c.png: not uploaded
    result = run("pp-rewrite", "--no-backup", "posts", input=jsonl(uploaded))
    assert result.returncode == 0, result.stderr
    assert (folder / "a/one.md").read_text() == f"![x]({IMG}/a.png) ![y](<../img/b c.png>)\n"
    assert (folder / "two.md").read_text() == f"![x]({IMG}/a.png) ![x2]({IMG}/a.png) ![y](img/b%20c.png)\n"
    assert "b c.png" not in result.stderr  # local images without a replacement: only on request

    (folder / "two.md").write_text("![y](img/b%20c.png)\n")
    reported = run("pp-rewrite", "--report-local", "posts/two.md", input=jsonl(uploaded))
    assert "pp-rewrite: posts/two.md:1: img/b%20c.png" in reported.stderr and reported.returncode == 0


def test_error_records_conflicts_and_bad_documents_exit_1(run, tmp_path):
    folder = posts(tmp_path, {"p.md": f"![a]({OLD}) ![b]({OLD2})\n"})
    records = jsonl([
        {"url": NEW, "replaces": OLD},
        {"url": f"{IMG}/one.jpg", "replaces": OLD2}, {"url": f"{IMG}/two.jpg", "replaces": OLD2},
        {"path": "x.png", "error": {"stage": "upload", "type": "http_500", "message": "boom"}},
    ]) + "{broken\n"
    result = run("pp-rewrite", "posts/p.md", "posts/missing.md", input=records)
    assert result.returncode == 1
    assert (folder / "p.md").read_text() == f"![a]({NEW}) ![b]({OLD2})\n"
    out = parse_jsonl(result.stdout)
    assert out[0]["doc"] == "posts/p.md" and out[0]["replaced"] == 1
    assert out[1]["doc"] == "posts/missing.md" and out[1]["error"]["type"] == "not_found"
    assert "line 5" in result.stderr and "bad_json" in result.stderr
    assert "2 input records with an error: those images were not rewritten" in result.stderr
    assert f"{OLD2}: records give it 2 different new URLs" in result.stderr
    assert "Traceback" not in result.stderr


def test_usage_errors(run, tmp_path):
    assert run("pp-rewrite", input=RECORDS).returncode == 2
    nothing = run("pp-rewrite", "posts", input=jsonl([{"url": NEW}, {"path": "a.png"}]))
    assert nothing.returncode == 0 and "nothing to rewrite" in nothing.stderr


def test_a_failed_write_leaves_the_document_and_no_temp_file(env, tmp_path):
    """A write that fails part way (here a file size limit: EFBIG) is an error record; the document
    is as it was and nothing else is left in its folder."""
    folder = posts(tmp_path, {"big.md": f"![a]({OLD})\n" + "x" * 4000 + "\n"})

    def limit() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1000, 1000))

    result = subprocess.run([command_path("pp-rewrite"), "posts"], input=jsonl([{"url": NEW, "replaces": OLD}]),
                            capture_output=True, text=True, env=env, cwd=tmp_path, preexec_fn=limit, timeout=60)
    assert result.returncode == 1
    [failed] = parse_jsonl(result.stdout)
    assert failed["doc"] == "posts/big.md" and failed["error"]["type"] == "disk_full"  # EFBIG: the disk's limit
    assert listing(folder) == ["big.md"] and (folder / "big.md").read_text().startswith(f"![a]({OLD})")


def test_a_document_changed_meanwhile_is_left_alone(tmp_path):
    doc = tmp_path / "p.md"
    doc.write_text(f"![a]({OLD})\n")
    replacements = Replacements()
    replacements.add({"url": NEW, "replaces": OLD})
    result = rewrite(load(str(doc)), replacements)
    doc.write_text(f"![a]({OLD})\nsaved by the editor\n")
    with pytest.raises(PicpipeError) as caught:
        save(result)
    assert caught.value.type == "changed_meanwhile"
    assert doc.read_text().endswith("saved by the editor\n") and listing(tmp_path) == ["p.md"]


def test_a_symlinked_document_stays_a_symlink(tmp_path):
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "p.md").write_text(f"![a]({OLD})\n")
    (tmp_path / "link.md").symlink_to("shared/p.md")
    replacements = Replacements()
    replacements.add({"url": NEW, "replaces": OLD})
    backup = save(rewrite(load(str(tmp_path / "link.md")), replacements))
    assert (tmp_path / "link.md").is_symlink() and (tmp_path / "shared/p.md").read_text() == f"![a]({NEW})\n"
    assert backup == str(tmp_path / "link.md.bak") and Path(backup).read_text() == f"![a]({OLD})\n"


def test_round_trip_scan_transform_rewrite(env, tmp_path):
    """pp-scan | a jq-like transform that moves every image to a new host | pp-rewrite."""
    folder = posts(tmp_path, {"one.md": FIXTURE, "sub/two.html": "<p><img src=\"../img/my shot.png\"></p>\n"})
    transform = tmp_path / "move.py"
    transform.write_text(
        "import json, os, sys\n"
        "for line in sys.stdin:\n"
        "    r = json.loads(line)\n"
        "    old = r.get('url') or r['path']\n"
        "    r['url'] = 'https://new.example/' + os.path.basename(old.split('?')[0])\n"
        "    print(json.dumps(r, ensure_ascii=False))\n")
    env["PATH"] = str(Path(command_path("pp-scan")).parent) + ":" + env["PATH"]
    result = subprocess.run(["bash", "-o", "pipefail", "-c", f"pp-scan posts | {sys.executable} move.py | "
                             "pp-rewrite --no-backup posts"], capture_output=True, text=True, env=env,
                            cwd=tmp_path, timeout=60)
    assert result.returncode == 0, result.stderr
    new = "https://new.example/"
    expected = FIXTURE
    for old, moved in [
        (f"({IMG}/badge.svg)", f"({new}badge.svg)"), (f'({IMG}/cat.png "', f'({new}cat.png "'),
        ("(<img/my shot.png>)", f"(<{new}my%20shot.png>)"), ("(img/my%20shot.png)", f"({new}my%20shot.png)"),
        ("(图片/截图%201.png)", f"({new}%E6%88%AA%E5%9B%BE%201.png)"),
        ("(<图片/截图 1.png>)", f"(<{new}%E6%88%AA%E5%9B%BE%201.png>)"),
        (f'"{IMG}/d.png?w=1&amp;h=2"', f'"{new}d.png"'), ("'e.png'", f"'{new}e.png'"), ("src=f.png", f"src={new}f.png"),
        (f"({IMG}/in.png)", f"({new}in.png)"), (f"({IMG}/item.png)", f"({new}item.png)"),
        (f"]: {IMG}/logo.png ", f"]: {new}logo.png "), (f"<{IMG}/wide image.png>", f"<{new}wide%20image.png>"),
        ("]: ./plain.jpg", f"]: {new}plain.jpg"), (f"]: {IMG}/banner.webp", f"]: {new}banner.webp"),
    ]:
        assert expected.count(old) == 1
        expected = expected.replace(old, moved)
    assert (folder / "one.md").read_text() == expected
    assert (folder / "sub/two.html").read_text() == f"<p><img src=\"{new}my%20shot.png\"></p>\n"


@pytest.mark.parametrize("text", ["![a](" * 4000, "![" * 10000, "![a](b \"" * 3000, "<img " * 4000,
                                  "[" * 20000 + "]"])
def test_hostile_paragraphs_take_linear_time(text):
    import time

    started = time.perf_counter()
    assert targets(text) == [] and targets(text, "p.html") == []
    assert time.perf_counter() - started < 5  # quadratic scanning took minutes here


def test_live_migration_recipe(env, tmp_path):
    """pp-scan posts/ --url 'A*' | pp-fetch | pp-upload --host b | pp-mark | pp-rewrite posts/, with
    host A a real web server: every A image of every post now points at B, where the same bytes
    are; code, local images and everything else stay as they were; a second run has nothing to do."""
    import hashlib
    import threading
    from functools import partial
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import unquote

    from test_upload import image

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    names = ["cover.png", "截图 1.png", "diagram.png"]
    originals = {name: image(tmp_path / "host-a" / name, (60 * i, 200, 30)).read_bytes()
                 for i, name in enumerate(names)}
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(tmp_path / "host-a")))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    a = f"http://127.0.0.1:{server.server_address[1]}/"
    b = "https://img-b.example/"
    texts = {"one.md": f"![c]({a}cover.png \"Cover\")\n\n```\n![c]({a}cover.png)\n```\n\n"
                       f"![s][shot] ![l](img/local.png)\n\n[shot]: <{a}截图 1.png>\n",
             "sub/two.html": f"<p><img src='{a}%E6%88%AA%E5%9B%BE%201.png'><img alt=d src={a}diagram.png></p>\n"}
    folder = posts(tmp_path, texts)
    env.update(PATH=str(Path(command_path("pp-scan")).parent) + ":" + env["PATH"], NO_PROXY="127.0.0.1",
               no_proxy="127.0.0.1", PICPIPE_LEDGER=str(tmp_path / "ledger.jsonl"), PICPIPE_B_TYPE="local",
               PICPIPE_B_DIR=str(tmp_path / "host-b"), PICPIPE_B_BASE_URL=b)
    recipe = f"pp-scan posts/ --url '{a}*' | pp-fetch | pp-upload --host b | pp-mark | pp-rewrite posts/"
    try:
        result = subprocess.run(["bash", "-o", "pipefail", "-c", recipe], capture_output=True, text=True,
                                env=env, cwd=tmp_path, timeout=60)
        again = subprocess.run(["bash", "-o", "pipefail", "-c", recipe], capture_output=True, text=True,
                               env=env, cwd=tmp_path, timeout=60)
    finally:
        server.shutdown()
        server.server_close()
    assert result.returncode == 0, result.stderr
    assert again.returncode == 0 and again.stdout == "" and "nothing to rewrite" in again.stderr
    rewritten = {name: (folder / name).read_text() for name in texts}
    moved = {}
    for name, text in rewritten.items():
        for found in find_refs(text, str(folder / name), html=name.endswith(".html")):
            if found.url is not None:
                assert found.url.startswith(b), found
                moved[found.url] = (tmp_path / "host-b" / unquote(found.url[len(b):])).read_bytes()
    assert len(moved) == 3 and {hashlib.sha256(data).hexdigest() for data in moved.values()} == {
        hashlib.sha256(data).hexdigest() for data in originals.values()}
    for name, text in texts.items():  # nothing but the remote image targets changed
        html = name.endswith(".html")
        before, after = find_refs(text, name, html), find_refs(rewritten[name], name, html)
        assert [r.target for r in before if r.url is None] == [r.target for r in after if r.url is None]
        assert skeleton(text, before) == skeleton(rewritten[name], after)
    assert f"```\n![c]({a}cover.png)\n```" in rewritten["one.md"]


def test_a_replaced_url_left_elsewhere_is_reported(run, tmp_path):
    """`[![a](OLD)](OLD)`: the image moves, the link around it is no image target: it is left as it
    is, and said so, so that a repair is never silently incomplete."""
    old, new = "https://dead.example/a.png", "https://img.example.com/a.png"
    post = tmp_path / "post.md"
    post.write_text(f"[![a]({old})]({old})\n\n```\n{old}\n```\n")
    result = run("pp-rewrite", str(post), input=json.dumps({"url": new, "replaces": old}) + "\n")
    assert result.returncode == 0, result.stderr
    assert post.read_text() == f"[![a]({new})]({old})\n\n```\n{old}\n```\n"
    assert f"post.md:1: {old} still appears" in result.stderr and f"post.md:4: {old} still appears" in result.stderr
