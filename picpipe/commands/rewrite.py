"""pp-rewrite: swap image links in Markdown and HTML documents for the URLs records give them."""

from __future__ import annotations

import argparse
import sys

from picpipe import console
from picpipe.cli import Command, fail_record
from picpipe.console import counted
from picpipe.docs import Replacements, diff, documents, load, rewrite, save
from picpipe.errors import PicpipeError, UsageError
from picpipe.stream import Output, read_stream, say_error


class RewriteCommand(Command):
    prog = "pp-rewrite"
    description = (
        "Rewrite the image links of Markdown and HTML documents (files or folders) in place.\n"
        "Records on stdin say what to change: a record's `url` replaces its `replaces` (the URL\n"
        "pp-upload moved it from) and its `ref` target (from pp-scan; a local image by its resolved\n"
        "path), in every document where that is an image's target. Only those characters change:\n"
        "never code blocks, inline code or comments. Writes are atomic; DOC.bak keeps the old text.\n"
        "stdout: one JSON record per rewritten document, {\"doc\", \"replaced\", \"unmatched\", \"backup\"}.\n"
        "Remote image links no record replaces are left as they are and listed on stderr.\n"
        "Every syntax pp-scan reads is rewritten; an Obsidian embed ![[x.png|300]] becomes\n"
        "![300](URL) (Obsidian shows no URL in ![[...]]). A link its syntax cannot hold safely\n"
        "({% asset_img %}, an unquoted srcset that would need quotes) is named on stderr: exit 1.\n"
        "Folders are walked as pp-scan walks them: a symlinked document or folder is rewritten only\n"
        "when its real path stays inside the folder given (a file's own folder); one that leaves it\n"
        "or loops is an error record (symlink_outside, symlink_loop) and is neither read nor written.\n"
        "Exit 1 when a document could not be read or written, an input record carries an error,\n"
        "or records give one link two different new URLs (those links are left alone)."
    )
    examples = """\
  pp-mark check | pp-backup restore | pp-upload --host new | pp-mark | pp-rewrite posts/
  pp-scan posts/ | pp-fetch | pp-upload --host new | pp-mark | pp-rewrite --dry-run posts/ | less
  pp-scan --local notes/ | pp-upload --host github | pp-mark | pp-rewrite --no-backup notes/
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("paths", nargs="*", metavar="DOC_OR_FOLDER",
                            help="Markdown or HTML files, or folders (walked as pp-scan does)")
        parser.add_argument("-n", "--dry-run", action="store_true",
                            help="print a unified diff on stdout (patch -p1 applies it), change nothing")
        parser.add_argument("--no-backup", action="store_true", help="keep no DOC.bak copy of the old text")
        parser.add_argument("--report-local", action="store_true",
                            help="also list local image paths that no record replaces")

    def run(self, args: argparse.Namespace) -> int:
        if not args.paths:
            raise UsageError("no documents: give the Markdown or HTML files or folders to rewrite",
                             "for example: ... | pp-upload --host new | pp-mark | pp-rewrite posts/")
        if sys.stdin is None or sys.stdin.isatty():
            raise UsageError("no records: pipe in the records that say which link becomes which URL",
                             "records from pp-upload (with replaces) or pp-scan | ... | pp-upload; see --help")
        out = Output(quiet=args.quiet, noun="documents")
        replacements = self.read_replacements(out)
        if not replacements.new:
            if not args.quiet:
                console.say("nothing to rewrite: no record gives an image link a new URL")
            return out.status
        changed = replaced = unmatched = 0
        for found in documents(args.paths):
            doc = found.path
            try:
                if found.error is not None:
                    raise found.error
                result = rewrite(load(doc), replacements)
                left = [ref for ref in result.unmatched if ref.url is not None or args.report_local]
                unmatched += len(left)
                for ref in left if not args.quiet else ():
                    console.say(f"{doc}:{ref.line}: {ref.url or ref.target}")
                for ref, why in result.refused:  # a record asked for it: an error, whatever -q says
                    console.error(f"{doc}:{ref.line}: {ref.target} ({ref.kind}) not rewritten to "
                                  f"{replacements.get(ref.key)}", why)
                out.errors += len(result.refused)
                for line, old in result.leftover if not args.quiet else ():
                    console.say(f"{doc}:{line}: {old} still appears here, not as an image's target (a link around "
                                "the image, or code?): left as it is")
                if not result.changed:
                    continue
                changed += 1
                replaced += len(result.replaced)
                if args.dry_run:
                    out.text(diff(result).removesuffix("\n"))
                    continue
                backup = save(result, backup=not args.no_backup, tree=found.tree)
                out.record({"doc": doc, "replaced": len(result.replaced), "unmatched": len(left),
                            **({"backup": backup} if backup else {})})
            except BrokenPipeError:
                raise  # the reader left (| head): stop quietly with 141, as the Command envelope does
            except (PicpipeError, OSError) as exc:
                failed = fail_record({"doc": doc}, "rewrite", exc)
                if args.dry_run:  # stdout is a diff: the failure goes to stderr only
                    out.report(doc, failed)
                else:
                    say_error(doc, failed)
                    out.record(failed)
        out.progress.done()
        if not args.quiet:
            verb = "would rewrite" if args.dry_run else "rewrote"
            console.say(f"{verb} {counted(replaced, 'image link')} in {counted(changed, 'document')}"
                        + (f"; {counted(unmatched, 'image link')} without a replacement left as written"
                           if unmatched else ""))
        return out.status

    @staticmethod
    def read_replacements(out: Output) -> Replacements:
        """The mapping from the records on stdin; error records and conflicts counted in `out`."""
        replacements, errors = Replacements(), 0
        for item in read_stream(sys.stdin.buffer):
            if item.bad_input:
                say_error(item.where, item.record)
            if "error" in item.record:
                errors += 1
            else:
                replacements.add(item.record)
        if errors:
            console.error(f"{counted(errors, 'input record')} with an error: those images were not rewritten",
                          "the stage that failed said why above; fix it and run the pipeline again")
        for key, urls in replacements.conflicts.items():
            console.error(f"{key[1]}: records give it {len(urls)} different new URLs ({', '.join(sorted(urls))}); "
                          "left as it is", "keep one record per image (jq), or edit that link by hand")
        out.errors += errors + len(replacements.conflicts)
        return replacements


def main() -> int:
    return RewriteCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
