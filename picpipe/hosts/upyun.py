"""Upyun (又拍云) cloud storage over its REST API: PUT /<bucket>/<path>, `Authorization: UPYUN op:sig`.

Upyun documents no conditional write (a PUT replaces), so a key is looked at before it is
written. The look is a GET, not a HEAD: a HEAD answer has no body, so a refused signature would
lose Upyun's error code, and the bytes settle "same image" exactly. The race between the look
and the PUT (another writer in between) is the one Upyun leaves open.
"""

from __future__ import annotations

import functools
import hashlib
from typing import TYPE_CHECKING, Any

from picpipe.hosts import HttpHost, Stored
from picpipe.hosts.signing import b64, hmac_sha1, http_date, uri_encode

if TYPE_CHECKING:
    import requests


class UpyunHost(HttpHost):
    keys = ("bucket", "operator", "password")

    base_url_required = "the domain bound to the service (Upyun's default test domain is for testing only)"
    hints = {
        "40100005": "Upyun refused the signature: check operator and password (the operator's password, not the "
                    "account's), that the operator is authorised on this service (bucket), and that a changed "
                    "password was saved",
        "40100006": "Upyun has no such operator: check operator in the profile (an operator name, not the account)",
        "40000003": "Upyun needs the service (bucket) name: check bucket in the profile",
        "40100002": "this computer's clock is more than 30 minutes off: set it right (NTP) and re-run",
    }

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.bucket = self.setting("bucket")
        self.operator = self.setting("operator")
        # The signing key is the MD5 of the password, never the password itself.
        self.key = hashlib.md5(self.setting("password").encode(), usedforsecurity=False).hexdigest()
        self.api = self.endpoint("https://v0.api.upyun.com")

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        if not overwrite:
            there = self._call("GET", key, ok=(200, 404))
            if there.status_code == 200:
                return self.already_there(key, there.content == data)
        # Content-MD5 (hex, signed) lets Upyun refuse bytes damaged on the way.
        self._call("PUT", key, ok=(200,), data=data,
                   headers={"Content-Type": mime, "Content-MD5": hashlib.md5(data, usedforsecurity=False).hexdigest()})
        return Stored(key, self.url(key))

    def delete(self, key: str) -> None:
        self._call("DELETE", key, ok=(200, 404))

    def _call(self, method: str, key: str, **kwargs: Any) -> requests.Response:
        uri = uri_encode(f"/{self.bucket}/{key}")
        return self.request(method, self.api + uri, sign=functools.partial(self._sign, uri), **kwargs)

    def _sign(self, uri: str, prepared: requests.PreparedRequest) -> None:
        """b64(HMAC-SHA1(MD5(password), METHOD&URI&Date[&Content-MD5])), URI as sent."""
        date = http_date()
        parts = [str(prepared.method), uri, date]
        md5 = prepared.headers.get("Content-MD5")
        if md5:
            parts.append(md5)
        prepared.headers["Date"] = date
        prepared.headers["Authorization"] = f"UPYUN {self.operator}:{b64(hmac_sha1(self.key, '&'.join(parts)))}"


HOST = UpyunHost
