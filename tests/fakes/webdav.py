"""A minimal WebDAV server for fault tests: Basic auth checked, If-None-Match honoured.

The interoperability tests run against WsgiDAV and rclone (tests/davservers.py); this one
exists because a real server cannot be told to fail the next request on cue.
"""

from __future__ import annotations

import base64
import urllib.parse

from fakehost import FakeHandler

USER, PASSWORD = "writer", "fault-test-password"


class FakeWebDav(FakeHandler):
    def handle_request(self) -> None:
        expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != expected:
            self.reply(401, "<error>wrong user or password</error>", {"WWW-Authenticate": 'Basic realm="fake"'},
                       content_type="application/xml")
            return
        path = urllib.parse.unquote(urllib.parse.urlsplit(self.path).path)
        objects = self.server.objects
        if self.command == "PROPFIND":
            hrefs = "".join(f"<d:response><d:href>{urllib.parse.quote(p)}</d:href></d:response>"
                            for p in list(objects) if p.rpartition("/")[0] + "/" == path)
            self.reply(207, f'<d:multistatus xmlns:d="DAV:"><d:response><d:href>{path}</d:href></d:response>'
                            f"{hrefs}</d:multistatus>", content_type="application/xml")
        elif self.command == "MKCOL":
            self.reply(405)  # every folder exists here
        elif self.command == "PUT":
            data = self.body()
            with self.server.lock:
                if path in objects and self.headers.get("If-None-Match") == "*":
                    self.reply(412)
                    return
                created = path not in objects
                objects[path] = data
            self.reply(201 if created else 204)
        elif self.command == "GET":
            self.reply(200, objects[path], content_type="image/png") if path in objects else self.reply(404)
        elif self.command == "DELETE":
            self.reply(204 if objects.pop(path, None) is not None else 404)
        else:
            self.reply(405)
