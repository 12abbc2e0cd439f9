"""links.url_identity: one identity for every spelling of a URL, used by pp-rewrite, pp-mark
(find --url, check) and pp-fetch. A property test over random Unicode paths (hand-rolled:
hypothesis is not installed) and the commands end to end (issue 17)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from conftest import jsonl, parse_jsonl
from picpipe.fetch import local_name
from picpipe.ledger import Ledger, matches
from picpipe.links import UrlSet, encode_url, url_identity

RESERVED = ":/?#[]@!$&'()*+,;="
ALPHABET = ("abcXYZ019-._~ " + RESERVED + "%" + "辅音等补充截图图片" + "äßé" + "😀")
#: Raw in a URL these would change its structure (or start an escape): every spelling encodes them.
STRUCTURAL = "%?#/"
HOSTS = [("img.example.com", ["IMG.Example.COM", "img.example.com:443"]),
         ("例子.测试", ["xn--fsqu00a.xn--0zwm56d", "XN--FSQU00A.xn--0zwm56d:443", "%E4%BE%8B%E5%AD%90.测试"]),
         ("münchen.example", ["xn--mnchen-3ya.example", "MÜNCHEN.example"])]


def escape(char: str, lower: bool = False) -> str:
    text = "".join(f"%{byte:02X}" for byte in char.encode())
    return text.lower() if lower else text


def spell(segment: str, rng: random.Random, how: str) -> str:
    """One spelling of a path segment (a '/' in it is part of the name). A space that may end the
    URL is encoded: a URL is read with blanks around it stripped."""
    out = []
    for i, char in enumerate(segment):
        if char == " " and i == len(segment) - 1:
            out.append(escape(char, rng.random() < 0.5))
        elif how == "raw":
            out.append(escape(char) if char in STRUCTURAL else char)
        elif how == "upper":
            out.append(escape(char))
        elif how == "lower":
            out.append(escape(char, lower=True))
        else:  # mixed: each character raw or escaped, in either case
            out.append(escape(char, rng.random() < 0.5) if char in STRUCTURAL or rng.random() < 0.5 else char)
    return "".join(out)


def random_segments(rng: random.Random) -> list[str]:
    return ["".join(rng.choice(ALPHABET) for _ in range(rng.randint(1, 12))) for _ in range(rng.randint(1, 4))]


def spellings(segments: list[str], rng: random.Random) -> list[str]:
    host, aliases = rng.choice(HOSTS)
    urls = []
    for how in ("raw", "upper", "lower", "mixed", "mixed"):
        path = "/" + "/".join(spell(segment, rng, how) for segment in segments)
        for name in (host, *aliases):
            scheme = rng.choice(["https", "HTTPS", "Https"])
            urls.append(f"{scheme}://{name}{path}" + rng.choice(["", "#frag", "#a b/c?d"]))
    return [*urls, encode_url(urls[0]), encode_url(urls[-1])]


def test_property_every_spelling_of_a_path_has_one_identity_and_others_differ():
    rng = random.Random(17)
    seen: dict[str, tuple[str, ...]] = {}
    for _ in range(400):
        segments = random_segments(rng)
        urls = spellings(segments, rng)
        identities = {url_identity(url) for url in urls}
        assert len(identities) == 1, (segments, urls, identities)
        [identity] = identities
        assert url_identity(identity) == identity  # idempotent
        assert identity.isascii() and "#" not in identity and " " not in identity
        # different resources never share one: the identity says which segments there were
        host = identity.split("/")[2]
        resource = (host, *segments)
        assert seen.setdefault(identity, resource) == resource, (identity, seen[identity], resource)


@pytest.mark.parametrize(("one", "other"), [
    ("https://x.example/a%2Fb.png", "https://x.example/a/b.png"),  # %2F: a slash in the name, not a folder
    ("https://x.example/a?b.png", "https://x.example/a%3Fb.png"),  # a query is no part of the name
    ("https://x.example/a%23b.png", "https://x.example/a#b.png"),
    ("https://x.example/a+b.png", "https://x.example/a%20b.png"),  # + in a path is a plus, never a space
    ("https://x.example/a.png?x=1&y=2", "https://x.example/a.png?x=1%26y=2"),  # in a query & and %26 differ
    ("https://x.example/a.png?q=a+b", "https://x.example/a.png?q=a%2Bb"),
    ("https://x.example/a.png?", "https://x.example/a.png"),
    ("https://x.example:8443/a.png", "https://x.example/a.png"),
    ("http://x.example/a.png", "https://x.example/a.png"),
    ("https://x.example/A.png", "https://x.example/a.png"),  # a path keeps its case
    ("https://x.example/%25", "https://x.example/%2525"),
    ("https://x.example/a/..b.png", "https://x.example/b.png"),  # `..b.png` is a name, not a dot segment
    ("https://x.example/a%2F..%2Fb.png", "https://x.example/b.png"),  # nor is anything with %2F in it
])
def test_different_resources_have_different_identities(one, other):
    assert url_identity(one) != url_identity(other)


@pytest.mark.parametrize(("spellings", "identity"), [
    (["https://x.example/%E8%BE%85%E9%9F%B3tr+dr+gr%E7%AD%89(%E8%A1%A5%E5%85%85).jpg",
      "https://x.example/辅音tr+dr+gr等(补充).jpg",
      "https://x.example/%E8%BE%85%E9%9F%B3tr%2Bdr%2bgr%e7%ad%89%28%E8%A1%A5%E5%85%85%29.jpg"],
     "https://x.example/%E8%BE%85%E9%9F%B3tr+dr+gr%E7%AD%89(%E8%A1%A5%E5%85%85).jpg"),
    (["https://x.example/截图(1).png", "https://x.example/%E6%88%AA%E5%9B%BE%281%29.png"],
     "https://x.example/%E6%88%AA%E5%9B%BE(1).png"),
    (["https://x.example/Screenshot (12).png", "https://x.example/Screenshot%20%2812%29.png"],
     "https://x.example/Screenshot%20(12).png"),
    (["HTTP://Faß.DE:80/a%7e%41.png#top", "http://xn--fa-hia.de/a~A.png"], "http://xn--fa-hia.de/a~A.png"),
    (["https://x.example", "https://x.example:/", "https://X.example:443/#f"], "https://x.example/"),
    (["https://x.example/a.png?w=%7e&q=a b&t=%e5%9b%be", "https://x.example/a.png?w=~&q=a%20b&t=图"],
     "https://x.example/a.png?w=~&q=a%20b&t=%E5%9B%BE"),
    (["https://x.example/100%.png", "https://x.example/100%25.png"], "https://x.example/100%25.png"),
    (["https://x.example/[1].png", "https://x.example/%5B1%5D.png"], "https://x.example/%5B1%5D.png"),
    # dot segments resolved as a browser resolves them (RFC 3986 §5.2.4), escaped dots too
    (["https://x.example/a/b/../c/./d.png", "https://x.example/a/c/d.png", "https://x.example/a/%2E%2e/a/c/d.png",
      "https://x.example/../../a/c/d.png"], "https://x.example/a/c/d.png"),
    (["https://x.example/a/b/..", "https://x.example/a/."], "https://x.example/a/"),
    (["https://x.example/.well-known/x.png"], "https://x.example/.well-known/x.png"),
])
def test_known_spellings(spellings, identity):
    assert {url_identity(url) for url in spellings} == {identity}


def test_encode_url_keeps_parentheses_raw_whether_or_not_it_encodes_anything_else():
    assert encode_url("https://x.example/a(1).png") == "https://x.example/a(1).png"
    assert encode_url("https://x.example/截图(1).png") == "https://x.example/%E6%88%AA%E5%9B%BE(1).png"
    assert encode_url("https://x.example/Screenshot (12).png") == "https://x.example/Screenshot%20(12).png"


def test_url_set_and_matches_compare_identities():
    urls = UrlSet(["https://x.example/截图(1).png"])
    assert "https://x.example/%E6%88%AA%E5%9B%BE%281%29.png" in urls and None not in urls
    assert "https://x.example/%E6%88%AA%E5%9B%BE%281%29.jpg" not in urls
    record = {"url": "https://x.example/%E6%88%AA%E5%9B%BE%281%29.png"}
    assert matches(record, url="https://x.example/截图(1).png")
    assert matches(record, url="https://x.example/%E6%88%AA*")  # a glob still matches the text as written
    assert not matches(record, url="https://x.example/截图(2).png")


def test_fetch_names_one_file_for_every_spelling():
    names = {local_name(url, "image/png") for url in [
        "https://例子.测试/图片/截图(1).png", "https://xn--fsqu00a.xn--0zwm56d/%E5%9B%BE%E7%89%87/%E6%88%AA%E5%9B%BE%281%29.png",
        "HTTPS://XN--FSQU00A.xn--0zwm56d:443/%e5%9b%be%e7%89%87/%e6%88%aa%e5%9b%be(1).png#x"]}
    assert names == {"xn--fsqu00a.xn--0zwm56d/图片/截图(1).png"}
    assert local_name("https://x.example/100%25%20off.png", "image/png") == "x.example/100% off.png"  # decoded once


# -- end to end -------------------------------------------------------------------------------------
BUG_ENCODED = "https://blog.example.com/img/%E8%BE%85%E9%9F%B3tr+dr+gr%E7%AD%89(%E8%A1%A5%E5%85%85).jpg"
BUG_DECODED = "https://blog.example.com/img/辅音tr+dr+gr等(补充).jpg"
NEW = "https://new.example.com/2024/a.jpg"


def rewrite(run, tmp_path: Path, post: str, replaces: str) -> tuple[str, str]:
    doc = tmp_path / "post.md"
    doc.write_text(post)
    result = run("pp-rewrite", str(doc), input=jsonl([{"url": NEW, "replaces": replaces}]))
    assert result.returncode == 0, result.stderr
    assert "without a replacement" not in result.stderr, result.stderr
    return doc.read_text(), result.stderr


@pytest.mark.parametrize(("written", "ledger"), [(BUG_ENCODED, BUG_DECODED), (BUG_DECODED, BUG_ENCODED)])
def test_the_bug_html_img_is_rewritten_whichever_way_round(run, tmp_path, written, ledger):
    text, _ = rewrite(run, tmp_path, f'<p>x</p>\n\n<img src="{written}" alt="辅音">\n', ledger)
    assert text == f'<p>x</p>\n\n<img src="{NEW}" alt="辅音">\n'


@pytest.mark.parametrize(("written", "ledger"), [
    ("![a](https://x.example/%E6%88%AA%E5%9B%BE%281%29.png)", "https://x.example/截图(1).png"),
    ("![a](https://x.example/截图(1).png)", "https://x.example/%E6%88%AA%E5%9B%BE%281%29.png"),
    ("![a](<https://x.example/Screenshot (12).png>)", "https://x.example/Screenshot%20%2812%29.png"),
    ("![a](https://x.example/Screenshot%20%2812%29.png)", "https://x.example/Screenshot (12).png"),
    ('<img src="https://x.example/Screenshot%20(12).png">', "https://x.example/Screenshot (12).png"),
])
def test_windows_and_macos_file_names_are_rewritten_both_ways_round(run, tmp_path, written, ledger):
    text, _ = rewrite(run, tmp_path, f"see {written} here\n", ledger)
    assert NEW in text and "x.example" not in text and text.startswith("see ") and text.endswith(" here\n")


def test_pp_mark_find_url_finds_the_record_under_either_spelling(run, tmp_path):
    ledger = tmp_path / "l.jsonl"
    ledger.write_text(jsonl([
        {"url": BUG_DECODED, "host": "old"}, {"url": "https://x.example/other.png"},
        {"sha256": "ab" * 32, "host": "new", "key": "a.jpg", "url": NEW, "replaces": BUG_DECODED}]))
    for url in (BUG_DECODED, BUG_ENCODED, BUG_ENCODED.replace("(", "%28").replace(")", "%29").lower()
                .replace("https://blog.example.com/img/", "HTTPS://Blog.Example.com:443/img/")):
        for _ in range(2):  # the second look goes through the index made by the first
            result = run("pp-mark", "--ledger", str(ledger), "find", "--url", url)
            assert result.returncode == 0, result.stderr
            assert [r["url"] for r in parse_jsonl(result.stdout)] == [BUG_DECODED], url
    assert BUG_ENCODED in Ledger(ledger).replaced()


def test_pp_mark_check_skips_a_url_replaced_under_another_spelling(run, tmp_path):
    image = tmp_path / "new.png"
    image.write_bytes(b"png")
    ledger = tmp_path / "l.jsonl"
    dead = "http://127.0.0.1:9/%E6%88%AA%E5%9B%BE%281%29.png"  # nothing listens on port 9
    ledger.write_text(jsonl([{"url": dead},
                             {"url": image.as_uri(), "replaces": "http://127.0.0.1:9/截图(1).png"}]))
    result = run("pp-mark", "--ledger", str(ledger), "check", "--timeout", "1", "--retries", "0")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""
