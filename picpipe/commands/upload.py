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
from picpipe.errors import PicpipeError, UsageError
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
        "its record; with more than one --host, the other hosts' copies go into `mirrors`.\n"
        "Keys come from a template (default {year}/{month}/{sha256:12}{ext}), so the\n"
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
  pp-upload --host qiniu --host github shot.png | pp-mark | pp-link --md --host github
  pp-upload --host s3 --path 'blog/{name}-{sha256:8}{ext}' shot.png | jq -r .url
  pp-mark find --host old --url 'https://old.example.com/*' | pp-upload --host old --delete | pp-mark
  PICPIPE_B2_TYPE=s3 PICPIPE_B2_REGION=us-west-004 PICPIPE_B2_ENDPOINT=https://s3.us-west-004.backblazeb2.com \\
    PICPIPE_B2_BUCKET=pics PICPIPE_B2_ACCESS_KEY=... PICPIPE_B2_SECRET_KEY=... pp-upload --host b2 *.png
"""

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        from picpipe.config import host_types

        super().add_arguments(parser)
        parser.add_argument("--host", required=True, action="append", metavar="PROFILE",
                            help="the host profile: a [profiles.NAME] of the config or PICPIPE_NAME_* variables; "
                            f"types: {' '.join(host_types())}. "
                            "Repeat it to upload to several hosts: the first one's URL is the record's, "
                            "the others are in `mirrors`")
        parser.add_argument("--path", metavar="TEMPLATE",
                            help=f"key template (default: the profile's path, else {DEFAULT_TEMPLATE}); "
                            "{name} {ext} {sha256:N} {md5:N} {year} {month} {day} {timestamp} {uuid}, and PicList's "
                            "{Y} {m} {d} {h} {i} {s} {filename} {localFolder:N} {str-N} {ulid} {md5-16} ...")
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

        names = list(dict.fromkeys(args.host))  # the same --host twice is one host
        if len(names) > 1 and (args.base_url or args.endpoint):
            raise UsageError("--base-url and --endpoint are for one --host",
                             "set base_url or endpoint in each host's profile instead")
        profiles = [self.config.profile(name, {"base_url": args.base_url, "endpoint": args.endpoint,
                                               "path": args.path}) for name in names]
        #: Each host's key template: its profile's path, else the default.
        self.templates = {p["name"]: str(p.get("path") or DEFAULT_TEMPLATE) for p in profiles}
        for template in self.templates.values():
            check_template(template)
        self.overwrite, self.deleting, self.any_file = args.overwrite, args.delete, args.any_file
        self.hosts: list[Host] = []
        for profile in profiles:
            self.hosts.append(open_host(profile))
        self.host: Host = self.hosts[0]
        self.dedupe = args.dedupe and not args.delete
        #: (host, sha256) → this run's uploads (and the ledger's answers): the same bytes twice are sent once.
        self.known: dict[tuple[str, str], Record] = {}
        self.lock = threading.Lock()
        self.busy = KeyedLocks()
        from picpipe.ledger import Ledger

        self.ledger = Ledger(args.ledger or self.config.ledger())

    def uploaded_before(self, sha256: str, host: str) -> Record | None:
        """The newest live ledger entry of these bytes on host profile `host`, asked of the ledger's
        index (brought up to date first: a line appended a moment ago counts)."""
        found = None
        for entry in self.ledger.states_for([sha256]):
            if entry.get("host") == host and entry.get("url") and not entry.get("deleted_at"):
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
        # This upload's copies replace what the record said of its copies: a record from pp-mark find
        # --deleted (or an earlier upload) must not keep its deleted_at, reused or deduped.
        from picpipe import mirrors

        for field in (*mirrors.FIELDS, "mirrors"):
            result.pop(field, None)
        copies, failed = [], []
        for host in self.hosts:
            try:
                copies.append(self.put(host, record, result, data, sha256))
            except (PicpipeError, OSError) as problem:
                if host is self.host:  # no first copy, no URL: the mirrors wait for the next run
                    raise
                if isinstance(problem, OSError):
                    from picpipe.files import os_error

                    problem = os_error(problem)
                failed.append((host.name, problem))
        result.update(copies[0])
        if len(self.hosts) > 1:
            result["mirrors"] = copies[1:]
        if failed:  # the copies made are in the record (and the ledger): a run again makes the rest
            name, first = failed[0]
            more = f" (and {len(failed) - 1} more mirror{'s' if len(failed) > 2 else ''})" if len(failed) > 1 else ""
            result["error"] = PicpipeError(first.type, f"mirror {name}: {first.message}{more}", first.hint,
                                           **first.extra).to_dict(self.stage)
        return replacing(record, result)

    def put(self, host: Host, record: Record, result: Record, data: bytes, sha256: str) -> dict[str, Any]:
        """The image's copy on one host: {host, key, url, uploaded_at} and deduped or reused."""
        name = host.name
        # The same bytes twice in one run are sent once (the second is deduped), and two images
        # meeting at one key go one after the other, so the second sees the first and conflicts.
        with self.busy.hold(f"sha256:{name}:{sha256}"):
            with self.lock:
                seen = self.known.get((name, sha256))
            if seen is None and self.dedupe:
                seen = self.uploaded_before(sha256, name)
                if seen is not None:
                    with self.lock:
                        self.known.setdefault((name, sha256), seen)
            # A restored image is here because its URL died, and the ledger's URL for it may be that
            # very one (the same profile moved to a new domain): it is uploaded again.
            if seen is not None and "restored_from" not in record:
                return {"host": name, "key": seen.get("key"), "url": seen["url"],
                        "uploaded_at": seen.get("uploaded_at"), "deduped": True}
            source = record.get("source") if isinstance(record.get("source"), str) else result["path"]
            key = make_key(self.templates[name], _named_like(str(source), result["path"]), data, sha256,
                           source=str(source))
            with self.busy.hold(f"key:{name}:{key}"):
                stored = host.put(key, data, str(result.get("mime") or "application/octet-stream"), self.overwrite)
            copy: dict[str, Any] = {"host": name, "key": stored.key, "url": stored.url, "uploaded_at": now_iso()}
            if stored.reused:
                copy["reused"] = True
            if self.dedupe:
                with self.lock:
                    self.known[(name, sha256)] = copy
        return copy

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
        """Delete the record's copies on the --host profiles: its own and its mirrors'; each
        deleted copy gets deleted_at (pp-mark then keeps the tombstones)."""
        from picpipe import mirrors

        hosts = {host.name: host for host in self.hosts}
        own, others = record.get("host") in hosts, [m for m in mirrors.of(record) if m.get("host") in hosts]
        key = record.get("key")
        if not own and not others or own and (not isinstance(key, str) or not key):
            names = ", ".join(hosts)
            raise PicpipeError("not_on_host", f"the record is not an upload to {names} "
                               f"(host {record.get('host')!r}, key {key!r})",
                               f"give records from pp-mark find --host {self.host.name}")
        when = now_iso()
        result = dict(record)
        for copy in [record] * own + others:
            host, where = hosts[copy["host"]], copy.get("key")
            if not isinstance(where, str) or not where:
                raise PicpipeError("not_on_host", f"the mirror on {host.name} has no key", "give records as "
                                   "pp-upload or pp-mark find wrote them")
            host.check_key(where)
            host.delete(where)
        if own:
            result["deleted_at"] = when
        if others:
            result["mirrors"] = [{**m, "deleted_at": when} if m in others else m for m in mirrors.of(record)]
        return result

    def finish(self, args: argparse.Namespace) -> None:
        for host in self.hosts:
            host.close()
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

