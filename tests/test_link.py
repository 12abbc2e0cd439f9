"""pp-link: formats, templates, URL encoding, rewrite, --json."""

from __future__ import annotations

import pytest

from conftest import jsonl, parse_jsonl
from picpipe.errors import PicpipeError
from picpipe.links import Template, encode_url, file_name, format_link, parse_rewrite, rewrite_url, split_name

REC = {"url": "https://img.example.com/2024/a1b2.png", "source": "/home/me/shots/Screen Shot.png",
       "width": 640, "height": 480, "compress": {"before": 1000, "after": 400}}


@pytest.mark.parametrize(
    ("style", "expected"),
    [
        ("md", "![Screen Shot](https://img.example.com/2024/a1b2.png)"),
        ("html", '<img src="https://img.example.com/2024/a1b2.png" alt="Screen Shot">'),
        ("url", "https://img.example.com/2024/a1b2.png"),
        ("bbcode", "[img]https://img.example.com/2024/a1b2.png[/img]"),
    ],
)
def test_styles(style, expected):
    assert format_link(REC, style) == expected


def test_alt_text_falls_back_from_source_to_path_key_and_url():
    assert file_name({"path": "C:\\pics\\win.jpg"}) == "win.jpg"
    assert file_name({"key": "img/2024/k.webp"}) == "k.webp"
    assert file_name({"url": "https://x.example/a/%E5%9B%BE.png?x=1"}) == "图.png"
    assert split_name("archive.tar.gz") == ("archive.tar", ".gz")
    assert split_name(".hidden") == (".hidden", "")
    assert split_name("noext") == ("noext", "")


def test_markdown_alt_and_url_cannot_break_the_link():
    rec = {"url": "https://x.example/a (1).png", "source": "dir/we[ir]d  name.png"}
    assert format_link(rec, "md") == "![we\\[ir\\]d name](https://x.example/a%20%281%29.png)"


def test_html_is_escaped():
    rec = {"url": 'https://x.example/a.png?x=1&y="2"', "source": '<b>"q"&.png'}
    assert format_link(rec, "html") == (
        '<img src="https://x.example/a.png?x=1&amp;y=%222%22" alt="&lt;b&gt;&quot;q&quot;&amp;">')


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("https://x.example/a b.png", "https://x.example/a%20b.png"),
        ("https://x.example/图床/截图.png", "https://x.example/%E5%9B%BE%E5%BA%8A/%E6%88%AA%E5%9B%BE.png"),
        ("https://x.example/a%20b.png", "https://x.example/a%20b.png"),  # never encoded twice
        ("https://x.example/100%.png", "https://x.example/100%25.png"),
        ("https://例子.测试/a.png", "https://xn--fsqu00a.xn--0zwm56d/a.png"),
        ("https://München.example:8080/ä.png", "https://xn--mnchen-3ya.example:8080/%C3%A4.png"),
        ("https://faß.de/a.png", "https://xn--fa-hia.de/a.png"),  # IDNA 2008, as browsers
        ("https://x.example:8443/p.png?w=100&q=a b#frag ment", "https://x.example:8443/p.png?w=100&q=a%20b#frag%20ment"),
        ("https://cdn.jsdelivr.net/gh/u/r@main/a.png", "https://cdn.jsdelivr.net/gh/u/r@main/a.png"),
    ],
)
def test_encode_url(url, expected):
    assert encode_url(url) == expected
    assert encode_url(expected) == expected


def test_template_placeholders_and_fields():
    t = Template("$fileName|$extName|$url|{width}x{height}|{compress.after}|{{literal}}|$url")
    assert t.render(REC) == ("Screen Shot|.png|https://img.example.com/2024/a1b2.png|640x480|400|{literal}|"
                             "https://img.example.com/2024/a1b2.png")
    assert Template("{backups.0.target}").render({"backups": [{"target": "nas"}]}) == "nas"
    assert Template("{compress}").render(REC) == '{"before":1000,"after":400}'
    assert Template("{path}").render({"path": "a.png"}) == "a.png"  # no url needed when none is asked for


def test_template_missing_field_is_a_record_error():
    with pytest.raises(PicpipeError) as info:
        Template("{nope}").render(REC)
    assert info.value.type == "missing_field"
    assert "url" in (info.value.hint or "")


def test_rewrite():
    rules = [parse_rewrite("https://cdn.jsdelivr.net/gh/me/img@main/=https://img.example.com/")]
    assert rewrite_url("https://cdn.jsdelivr.net/gh/me/img@main/a.png", rules) == "https://img.example.com/a.png"
    assert rewrite_url("https://elsewhere.example/a.png", rules) == "https://elsewhere.example/a.png"
    assert parse_rewrite("https://a.example/?k=v=https://b.example/") == ("https://a.example/?k=v", "https://b.example/")
    with pytest.raises(ValueError):
        parse_rewrite("missing-separator")


def test_cli_formats_and_order(run):
    records = [{"url": f"https://x.example/{i} 图.png", "source": f"{i}.png"} for i in range(5)]
    result = run("pp-link", "--template", "$fileName=$url", input=jsonl(records))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [f"{i}=https://x.example/{i}%20%E5%9B%BE.png" for i in range(5)]


def test_cli_json_keeps_the_stream(run):
    records = [
        {"url": "https://old.example/a.png", "mine": {"k": 1}},
        {"path": "b.png", "error": {"stage": "upload", "type": "timeout", "message": "slow"}},
    ]
    result = run("pp-link", "--json", "--bbcode", "--rewrite", "https://old.example/=https://new.example/",
                 input=jsonl(records))
    assert result.returncode == 1
    out = parse_jsonl(result.stdout)
    assert out[0] == {**records[0], "link": "[img]https://new.example/a.png[/img]"}
    assert out[1] == records[1]  # upstream errors pass through unchanged
    assert result.stderr == ""   # ...and are not reported again


def test_cli_config_defaults_and_env_override(run, tmp_path):
    config = tmp_path / "config" / "picpipe" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text('[link]\nformat = "html"\nrewrite = ["https://old.example/=https://new.example/"]\n')
    rec = jsonl([{"url": "https://old.example/a.png"}])
    assert run("pp-link", input=rec).stdout == '<img src="https://new.example/a.png" alt="a">\n'
    assert run("pp-link", input=rec, extra_env={"PICPIPE_LINK_FORMAT": "url"}).stdout == "https://new.example/a.png\n"
    assert run("pp-link", "--md", input=rec).stdout == "![a](https://new.example/a.png)\n"
    assert run("pp-link", "--md", "--rewrite", "https://old.example/=https://flag.example/",
               input=rec).stdout == "![a](https://flag.example/a.png)\n"
