"""pp-upload: put images on an image host, never overwriting a different image."""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import threading
from typing import TYPE_CHECKING, Any

from picpipe.cli import StreamCommand, ledger_argument
from picpipe.concurrency import KeyedLocks
from picpipe.errors import PicpipeError
from picpipe.files import read_source
from picpipe.keys import DEFAULT_TEMPLATE, check_template, make_key
from picpipe.publish import MAX_BYTES, check, named
from picpipe.stream import Record
from picpipe.timeutil import now_iso

if TYPE_CHECKING:
    from picpipe.hosts import Host


class UploadCommand(StreamCommand):
    prog = "pp-upload"
    stage = "upload"
    default_jobs = 4
    description = (
        "Upload each image to the host profile --host and add host, key, url and uploaded_at to\n"
        "its record. Keys come from a template (default {year}/{month}/{sha256:12}{ext}), so the\n"
        "same bytes get the same key. An image whose bytes the ledger already shows on this host\n"
        "is not sent again (deduped: true). A different image already at the key is an error,\n"
        "never silently replaced (--overwrite to replace). --delete removes records' objects.\n"
        "Only whole images leave the machine: PNG, JPEG, GIF, WebP, AVIF, BMP, ICO, and SVG without\n"
        "scripts, event handlers or external references. An empty, truncated or text file, a\n"
        "decompression bomb, a TIFF or an unsafe SVG is an error record; --any-file sends any file."
    )
    examples = """\
  ls *.png | pp-upload --host local | pp-link --md
  ls *.png | pp-compress | pp-upload --host qiniu | pp-mark | pp-link --md
  pp-upload --host s3 --path 'blog/{name}-{sha256:8}{ext}' shot.png | jq -r .url
  pp-mark find --host old --url 'https://old.example.com/*' | pp-upload --host old --delete | pp-mark
  PICPIPE_B2_TYPE=s3 PICPIPE_B2_REGION=us-west-004 PICPIPE_B2_ENDPOINT=https://s3.us-west-004.backblazeb2.com \\
    PICPIPE_B2_BUCKET=pics PICPIPE_B2_ACCESS_KEY=... PICPIPE_B2_SECRET_KEY=... pp-upload --host b2 *.png
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        super().add_arguments(parser)
        parser.add_argument("--host", required=True, metavar="PROFILE",
                            help="the host profile: a [profiles.NAME] of the config or PICPIPE_NAME_* variables; "
                            "types: local webdav s3 qiniu aliyun upyun tencent github gitee smms imgur")
        parser.add_argument("--path", metavar="TEMPLATE",
                            help=f"key template (default: the profile's path, else {DEFAULT_TEMPLATE}); "
                            "{name} {ext} {sha256:N} {md5:N} {year} {month} {day} {timestamp} {uuid}")
        parser.add_argument("--base-url", metavar="URL", help="public URL prefix (custom domain or CDN)")
        parser.add_argument("--endpoint", metavar="URL", help="API or upload URL override")
        parser.add_argument("--overwrite", action="store_true",
                            help="replace a different image already at the same key")
        parser.add_argument("--no-dedupe", dest="dedupe", action="store_false",
                            help="upload even when the ledger shows these bytes on this host")
        parser.add_argument("--delete", action="store_true",
                            help="delete each record's object (host and key) instead of uploading")
        parser.add_argument("--any-file", action="store_true",
                            help="upload any file, not only whole images of the types browsers show (also "
                            "SVGs with scripts or external references): for hosts that serve other files")
        ledger_argument(parser)

    def start(self, args: argparse.Namespace) -> None:
        from picpipe.hosts import open_host

        profile = self.config.profile(args.host, {"base_url": args.base_url, "endpoint": args.endpoint,
                                                  "path": args.path})
        self.template = str(profile.get("path") or DEFAULT_TEMPLATE)
        check_template(self.template)
        self.overwrite, self.deleting, self.any_file = args.overwrite, args.delete, args.any_file
        self.host: Host = open_host(profile)
        self.dedupe = args.dedupe and not args.delete
        #: sha256 → this run's uploads (and the ledger's answers): the same bytes twice are sent once.
        self.known: dict[str, Record] = {}
        self.lock = threading.Lock()
        self.busy = KeyedLocks()
        from picpipe.ledger import Ledger

        self.ledger = Ledger(args.ledger or self.config.ledger())

    def uploaded_before(self, sha256: str) -> Record | None:
        """The newest live ledger entry of these bytes on this host profile, asked of the ledger's
        index (brought up to date first: a line appended a moment ago counts)."""
        found = None
        for entry in self.ledger.states_for([sha256]):
            if entry.get("host") == self.host.name and entry.get("url") and not entry.get("deleted_at"):
                found = entry
        return found

    def process(self, record: Record) -> Record:
        if self.deleting:
            return self.delete(record)
        path = record.get("path")
        if not isinstance(path, str) or not path:
            raise PicpipeError("no_path", "the record has no path to an image file",
                               "give file paths or {\"path\": ...}")
        data = read_source(path, MAX_BYTES)
        sha256 = hashlib.sha256(data).hexdigest()
        checked = None if self.any_file else check(data, named(path, record))
        result: dict[str, Any] = {**record, **self.facts(record, data, sha256, checked)}
        # The same bytes twice in one run are sent once (the second is deduped), and two images
        # meeting at one key go one after the other, so the second sees the first and conflicts.
        with self.busy.hold("sha256:" + sha256):
            with self.lock:
                seen = self.known.get(sha256)
            if seen is None and self.dedupe:
                seen = self.uploaded_before(sha256)
                if seen is not None:
                    with self.lock:
                        self.known.setdefault(sha256, seen)
            # A restored image is here because its URL died, and the ledger's URL for it may be that
            # very one (the same profile moved to a new domain): it is uploaded again.
            if seen is not None and "restored_from" not in record:
                return replacing(record, {**result, "host": self.host.name, "key": seen.get("key"), "url": seen["url"],
                                          "uploaded_at": seen.get("uploaded_at"), "deduped": True})
            name = record.get("source") if isinstance(record.get("source"), str) else path
            key = make_key(self.template, _named_like(str(name), path), data, sha256, source=str(name))
            with self.busy.hold("key:" + key):
                stored = self.host.put(key, data, str(result.get("mime") or "application/octet-stream"),
                                       self.overwrite)
            result.update(host=self.host.name, key=stored.key, url=stored.url, uploaded_at=now_iso())
            if stored.reused:
                result["reused"] = True
            if self.dedupe:
                with self.lock:
                    self.known[sha256] = result
        return replacing(record, result)

    def facts(self, record: Record, data: bytes, sha256: str, checked: dict[str, Any] | None) -> dict[str, Any]:
        """sha256 and size always (the bytes may have changed). The type the publishing check found
        always wins over a record's mime and format: the mime becomes the Content-Type the host
        serves, and a record (a document's, anyone's) saying text/html of a PNG must not make it a
        page. With --any-file, the record's facts for these very bytes, else Pillow's if it knows
        the file."""
        if checked is not None:
            return {"sha256": sha256, "size": len(data), **checked}
        if record.get("sha256") == sha256 and record.get("mime"):
            return {"size": len(data)}
        from PIL import Image

        from picpipe.imaging import facts

        try:
            return facts(data)
        except (OSError, SyntaxError, ValueError, Image.DecompressionBombError):  # hosts still take it
            return {"sha256": sha256, "size": len(data)}

    def delete(self, record: Record) -> Record:
        key = record.get("key")
        if record.get("host") != self.host.name or not isinstance(key, str) or not key:
            raise PicpipeError("not_on_host", f"the record is not an upload to {self.host.name} "
                               f"(host {record.get('host')!r}, key {key!r})",
                               f"give records from pp-mark find --host {self.host.name}")
        self.host.check_key(key)
        self.host.delete(key)
        return {**record, "deleted_at": now_iso()}

    def finish(self, args: argparse.Namespace) -> None:
        self.host.close()
        self.ledger.close()


def replacing(record: Record, result: Record) -> Record:
    """The upload with `replaces`: the URL the record had before (a dead host's, a scanned
    document's), so that pp-rewrite can swap it for the new one in the documents."""
    old = record.get("url")
    if isinstance(old, str) and old and old != result["url"]:
        return {**result, "replaces": old}
    return result


def _named_like(source: str, path: str) -> str:
    """The file name for {name}: the user's original's stem with the current bytes' extension."""
    return os.path.splitext(os.path.basename(source))[0] + os.path.splitext(path)[1]


def main() -> int:
    return UploadCommand().main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())

