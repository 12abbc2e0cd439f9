"""One image on several hosts: a record's `mirrors`.

`pp-upload --host a --host b` keeps the first host's copy in the record's own fields (host,
key, url, uploaded_at) and each other host's in `mirrors`, a list of objects with the same
fields. The ledger keeps one line per copy (`copies`), so each host's copy is found, deduped,
checked and deleted as an upload of its own; pp-link --host picks one (`on_host`).
"""

from __future__ import annotations

from typing import Any

from picpipe.stream import Record

#: What a copy on one host says of itself; the rest of the record (sha256, size, source...) is shared.
FIELDS = ("host", "key", "url", "uploaded_at", "deduped", "reused", "deleted_at")


def of(record: Record) -> list[dict[str, Any]]:
    """The record's mirrors that are objects (a well-formed record has no other kind)."""
    mirrors = record.get("mirrors")
    return [m for m in mirrors if isinstance(m, dict)] if isinstance(mirrors, list) else []


def copies(record: Record) -> list[Record]:
    """The record as its own host's copy, then one record per mirror that has a URL: each
    whole, as if uploaded alone (the mirrors' own `replaces` is not theirs to say)."""
    shared = {k: v for k, v in record.items() if k not in (*FIELDS, "mirrors", "replaces")}
    own = {k: v for k, v in record.items() if k != "mirrors"}
    return [own, *({**shared, **{k: m[k] for k in FIELDS if k in m}} for m in of(record) if m.get("url"))]


def on_host(record: Record, host: str) -> Record | None:
    """The record as its copy on `host` (its own, or a mirror's), None when it has none there."""
    if record.get("host") == host:
        return {k: v for k, v in record.items() if k != "mirrors"}
    return next((copy for copy in copies(record)[1:] if copy.get("host") == host), None)
