"""`python -m picpipe.demo images DIR` starts the README's pipelines: its paths go out in UTF-8, as
every command's records do, whatever the console's encoding (cp936 on a Chinese Windows)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import ROOT
from picpipe.demo import SAMPLES


def test_demo_images_prints_utf8_paths_under_cp936(tmp_path: Path) -> None:
    folder = tmp_path / "图片"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONIOENCODING": "cp936", "PYTHONUTF8": "0"}
    done = subprocess.run([sys.executable, "-m", "picpipe.demo", "images", str(folder)], capture_output=True,
                          env=env, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode("utf-8").splitlines() == [str(folder / name) for name in SAMPLES]
    assert all((folder / name).is_file() for name in SAMPLES)
