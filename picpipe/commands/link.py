"""pp-link: print each record's link as Markdown, HTML, URL, BBCode or a template."""

from __future__ import annotations

import argparse
import sys

from picpipe.cli import StreamCommand
from picpipe.errors import PicpipeError, UsageError
from picpipe.links import STYLES, Template, format_link, parse_rewrite
from picpipe.stream import Item, Record


class LinkCommand(StreamCommand):
    prog = "pp-link"
    stage = "link"
    description = (
        "Print one link per record, in input order. Records come from pp-upload or pp-mark find\n"
        "(a JSON object with a url per line). Placeholders for --template: $url, $fileName\n"
        "(name without extension), $extName (.png), and {field} / {a.b} for any record field."
    )
    examples = """\
  ls *.png | pp-upload --host qiniu | pp-link --md
  pp-mark find --host github | pp-link --rewrite https://cdn.jsdelivr.net/gh/me/img@main/=https://img.example.com/ --md
  pp-mark find --since 2024-01-01 | pp-link --template '<img src="$url" width="{width}">'
  pp-mark find | pp-link --html --json | jq -r .link
  pp-upload --host qiniu --host github shot.png | pp-link --md --host github
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        style = parser.add_mutually_exclusive_group()
        for name, text in (("md", "![name](url) (default)"), ("html", '<img src="url" alt="name">'),
                           ("url", "the URL alone"), ("bbcode", "[img]url[/img]")):
            style.add_argument(f"--{name}", dest="style", action="store_const", const=name, help=text)
        style.add_argument("--template", "-t", metavar="T", help="a template such as '![$fileName]($url)'")
        parser.add_argument("--json", action="store_true", help="keep the record stream and add a `link` field")
        parser.add_argument("--host", metavar="PROFILE",
                            help="the link to the copy on this host: the record's own or one of its mirrors")
        parser.add_argument("--rewrite", action="append", default=[], metavar="OLD=NEW",
                            help="replace the URL prefix OLD by NEW (repeatable; first match wins)")

    def start(self, args: argparse.Namespace) -> None:
        env, file = self.config.section_layers("link")
        # The first layer that chooses a style wins whole: flags, then PICPIPE_LINK_*, then [link].
        for where, layer in (("flags", {"template": args.template, "format": args.style}),  # noqa: B007
                             ("environment", env), ("[link]", file)):
            if layer.get("template") or layer.get("format"):
                break
        else:
            where, layer = "default", {}
        template = self.config.resolve(where, "template", layer.get("template"))
        self.style = self.config.resolve(where, "format", layer.get("format")) or "md"
        if not template and self.style not in STYLES:
            raise UsageError(f"unknown link format {self.style!r} ({where})", f"use one of: {', '.join(STYLES)}")
        self.template = Template(template) if template else None
        rewrite = self.config.resolve("[link]", "rewrite", env.get("rewrite", file.get("rewrite")))
        rules = args.rewrite or _as_list(rewrite)
        try:
            self.rewrite = [parse_rewrite(rule) for rule in rules]
        except ValueError as exc:
            hint = "for example: --rewrite https://old.example.com/=https://new.example.com/"
            raise UsageError(str(exc), hint) from None
        self.json = args.json
        self.host: str | None = args.host
        # In text mode every error record leaves the stream here, so `write` reports them all.
        self.report_new_errors = self.json

    def process(self, record: Record) -> Record:
        if self.host is not None:
            from picpipe import mirrors

            copy = mirrors.on_host(record, self.host)
            if copy is None and "mirrors" not in record:  # one copy's record: a ledger line, or one host's upload
                raise PicpipeError("not_on_host", f"the record is the image's copy on {record.get('host') or 'no host'}"
                                   f", not one on {self.host}", f"pp-mark find gives one record per copy: pp-mark find "
                                   f"--host {self.host} lists the copies on {self.host}; else upload it there: "
                                   f"pp-upload --host {self.host}")
            if copy is None:
                hosts = [record.get("host"), *(m.get("host") for m in mirrors.of(record))]
                raise PicpipeError("not_on_host", f"the image has no copy on {self.host} "
                                   f"(it is on {', '.join(str(h) for h in hosts if h) or 'no host'})",
                                   f"upload it there: pp-upload --host {self.host}")
            record = copy
        return {**record, "link": format_link(record, self.style, self.template, self.rewrite)}

    def write(self, item: Item, record: Record) -> None:
        assert self.out is not None
        if self.json:
            self.out.record(record)
        elif "error" in record:
            self.out.report(item.where, record)
        else:
            self.out.text(record["link"])


def _as_list(value: str | list[str] | None) -> list[str]:
    """`rewrite` in the config may be one rule or a list; PICPIPE_LINK_REWRITE is one rule."""
    if value is None:
        return []
    return [value] if isinstance(value, str) else [str(v) for v in value]


def main() -> int:
    return LinkCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
