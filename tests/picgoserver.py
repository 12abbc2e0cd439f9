"""The real PicGo-Core server for tests: npm picgo 3.1.0 with picgo-plugin-s3 (installed into
.cache/npm by `make test`), uploading to a bucket on moto's S3 server on 127.0.0.1. Tests that use
it carry `needs_picgo` (skipped when node or the npm packages are missing)."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import unquote, urlsplit

import pytest
import requests
from test_editors import free_port

from conftest import ROOT

NODE_MODULES = ROOT / ".cache" / "npm" / "node_modules"
PICGO = NODE_MODULES / "picgo" / "bin" / "picgo"
BUCKET = "imgs"

needs_picgo = pytest.mark.skipif(
    shutil.which("node") is None or not PICGO.exists() or not (NODE_MODULES / "picgo-plugin-s3").is_dir(),
    reason="node, or npm picgo 3.1.0 and picgo-plugin-s3 in .cache/npm, missing: `make test` installs them")


def moto_bucket() -> Iterator[tuple[str, object]]:
    """moto's S3 on 127.0.0.1 with one bucket: (endpoint, boto3 client); for a module's fixture."""
    boto3 = pytest.importorskip("boto3")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{server._server.server_port}"
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    try:
        yield endpoint, client
    finally:
        server.stop()


def stored(client: object, url: str) -> bytes:
    """The object behind a path-style URL of the bucket."""
    key = urlsplit(url).path.split(f"/{BUCKET}/", 1)[1]
    return client.get_object(Bucket=BUCKET, Key=unquote(key))["Body"].read()  # type: ignore[attr-defined]


def keys(client: object, prefix: str) -> list[str]:
    """The bucket's object keys under `prefix`."""
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=prefix)  # type: ignore[attr-defined]
    return [item["Key"] for item in listed.get("Contents", [])]


class PicGo:
    """`picgo server` with the S3 plugin configured for the moto bucket, in a home of its own.
    `upload_path` is the plugin's key template ({md5}, {fullName}, {timestampMS}, ...)."""

    def __init__(self, home: Path, endpoint: str, env: dict[str, str], secret: str | None = None,
                 upload_path: str = "picgo/{md5}.{extName}") -> None:
        base = home / ".picgo"
        base.mkdir(parents=True)
        (base / "node_modules").symlink_to(NODE_MODULES)
        (base / "package.json").write_text(json.dumps({"name": "picgo-plugins", "private": True,
                                                       "dependencies": {"picgo-plugin-s3": "1.5.2"}}))
        (base / "config.json").write_text(json.dumps({
            "picBed": {"current": "aws-s3", "uploader": "aws-s3", "aws-s3": {
                "accessKeyID": "testing", "secretAccessKey": "testing", "bucketName": BUCKET,
                "uploadPath": upload_path, "region": "us-east-1", "endpoint": endpoint,
                "pathStyleAccess": True}},
            "picgoPlugins": {"picgo-plugin-s3": True}}))
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        args = ["node", str(PICGO), "-c", str(base / "config.json"), "server", "--port", str(self.port),
                "--host", "127.0.0.1", "--ignore-existing-external-server", *(["--secret", secret] if secret else [])]
        self.proc = subprocess.Popen(args, env={**env, "HOME": str(home)}, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "picgo server exited"
            try:
                requests.post(self.url + "/heartbeat", timeout=2)
                return
            except requests.ConnectionError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError("picgo server did not answer /heartbeat")

    def post(self, path: str = "/upload", **kwargs) -> requests.Response:
        return requests.post(self.url + path, timeout=30, **kwargs)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
