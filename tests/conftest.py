"""Shared test helpers: run the real commands as a user would, through subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SENTINEL = "S3NT1NEL-do-not-leak-4f9a"


def command_path(name: str) -> str:
    """The installed console script next to this Python if any, else the checkout's bin/ launcher."""
    installed = Path(sys.executable).parent / name
    return str(installed if installed.exists() else ROOT / "bin" / name)


def ctrl_c_works() -> None:
    """Popen's preexec_fn for a child the test interrupts: a shell without job control (a CI
    script's `cmd &`) starts children with SIGINT ignored, and Python then keeps it ignored."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def jsonl(records: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)


def parse_jsonl(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    """A clean environment: private config, data and cache folders, no PICPIPE_* from outside."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PICPIPE_")}
    clean.update(
        XDG_CONFIG_HOME=str(tmp_path / "config"),
        XDG_DATA_HOME=str(tmp_path / "data"),
        XDG_CACHE_HOME=str(tmp_path / "cache"),
        PYTHONPATH=str(ROOT),
    )
    return clean


@pytest.fixture
def run(env: dict[str, str], tmp_path: Path):
    """run("pp-link", "--md", input="...") → CompletedProcess (text, captured)."""

    def _run(name: str, *args: str, input: str | bytes | None = "", extra_env: dict[str, str] | None = None,
             timeout: float = 60) -> subprocess.CompletedProcess:
        text = not isinstance(input, bytes)
        return subprocess.run(
            [command_path(name), *args], input=input, capture_output=True, text=text,
            env={**env, **(extra_env or {})}, cwd=tmp_path, timeout=timeout,
        )

    return _run
