"""ImgBB: Chevereto's API V1 as ImgBB runs it (picpipe/hosts/chevereto.py), with ImgBB's presets.

`POST https://api.imgbb.com/1/upload`, the key as the field `key` (sent in the body, not the
query string ImgBB's examples use, so that it stays out of URLs), the file as `image`; the answer
is `{"data": {"url", "delete_url", ...}, "success": true, "status": 200}`. Every upload is a new
image (no dedupe, no conflict); the record's `key` is `data.delete_url`, a page where a person
confirms the deletion: ImgBB's API has no delete, so --delete says so and names that page.

Sources: api.imgbb.com (the API page); chevereto/chevereto app/legacy/routes/api.php (the
`image` field selects the ImgBB answer: `data`, `status`, the encoded id).
"""

from __future__ import annotations

from typing import ClassVar

from picpipe.hosts.chevereto import CheveretoHost


class ImgbbHost(CheveretoHost):
    keys = ("api_key",)
    field: ClassVar[str] = "image"
    result: ClassVar[str] = "data"
    default_api: ClassVar[str | None] = "https://api.imgbb.com/1/upload"
    key_in_header: ClassVar[bool] = False
    deletes: ClassVar[bool] = False
    product: ClassVar[str] = "ImgBB"

    hints: ClassVar[dict[str | int, str]] = {
        **CheveretoHost.hints,
        "100": "ImgBB refused the API key: copy it from api.imgbb.com (signed in) into the profile's api_key",
        400: "ImgBB refused the upload: its message says why (ImgBB takes images up to 32 MB)",
    }


HOST = ImgbbHost
