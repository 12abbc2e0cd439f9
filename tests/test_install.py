"""Installation without make: the wheel, installed into a clean venv outside the checkout, gives
working commands (what `pipx install .` and `pip install --user .` do). It also catches a module
or a dependency missing from the wheel, which the editable install of `make install` hides."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import ROOT

#: pip's words when the connection to the package index fails (then the test is skipped, not
#: failed): urllib3's connection errors, which pip prints on each retry. Not "No matching
#: distribution found" alone: a reachable index says that for a wrong or unsatisfiable pin.
OFFLINE = re.compile(r"NewConnectionError|Failed to establish a new connection|Temporary failure in name resolution|"
                     r"Name or service not known|nodename nor servname|getaddrinfo failed|Network is unreachable|"
                     r"No route to host|ConnectTimeoutError|ProxyError|SSLError")


def pip(python: Path | str, *args: str, timeout: float) -> subprocess.CompletedProcess:
    done = subprocess.run([str(python), "-m", "pip", *args], capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0 and OFFLINE.search(done.stderr):
        pytest.skip(f"pip cannot reach the package index: {done.stderr.strip().splitlines()[-1]}")
    assert done.returncode == 0, done.stderr
    return done


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A venv in a temporary folder holding the wheel built from this checkout (not `-e`): its bin/."""
    base = tmp_path_factory.mktemp("install")
    source = base / "source"  # a copy: building in the checkout would leave build/ there
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "picpipe", source / "picpipe", ignore=shutil.ignore_patterns("__pycache__"))
    pip(sys.executable, "wheel", "--quiet", "--no-deps", "--wheel-dir", str(base / "dist"), str(source), timeout=300)
    wheel, = (base / "dist").glob("picpipe-*.whl")
    shipped = set(zipfile.ZipFile(wheel).namelist())
    modules = {path.relative_to(source).as_posix() for path in (source / "picpipe").rglob("*.py")}
    assert modules - shipped == set(), "modules missing from the wheel"

    subprocess.run([sys.executable, "-m", "venv", str(base / "venv")], check=True, timeout=120)
    bin_dir = base / "venv" / ("Scripts" if os.name == "nt" else "bin")
    pip(bin_dir / "python", "install", "--quiet", str(wheel), timeout=600)
    return bin_dir


@pytest.fixture
def outside(tmp_path: Path, installed: Path) -> dict[str, str]:
    """An environment that sees the installed commands and nothing of the checkout."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PICPIPE_", "PYTHON", "VIRTUAL_ENV"))}
    env.update(PATH=f"{installed}{os.pathsep}{env.get('PATH', '')}", XDG_CONFIG_HOME=str(tmp_path / "config"),
               XDG_DATA_HOME=str(tmp_path / "data"), XDG_CACHE_HOME=str(tmp_path / "cache"),
               PICPIPE_LOCAL_DIR=str(tmp_path / "host"))
    return env


def sh(script: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", f"set -o pipefail; {script}"], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=120, stdin=subprocess.DEVNULL)


def test_the_installed_commands_run_a_pipeline(installed: Path, outside: dict[str, str], tmp_path: Path) -> None:
    where = sh("python -c 'import picpipe; print(picpipe.__file__)'", outside, tmp_path)
    assert where.stdout.startswith(str(installed.parent)), where  # the venv's copy, not the checkout's
    done = sh("python -m picpipe.demo images originals | pp-compress --out small | "
              "pp-upload --host local --ledger ledger.jsonl | pp-mark --ledger ledger.jsonl | pp-link --md",
              outside, tmp_path)
    assert done.returncode == 0, done.stderr
    links = done.stdout.splitlines()
    assert len(links) == 3, links
    assert all(re.fullmatch(r"!\[[^]]+\]\(file://\S+\.(png|webp)\)", line) for line in links), links
    assert len(list((tmp_path / "host").rglob("*.*"))) == 3
    found = sh("pp-mark --ledger ledger.jsonl find --source '*sunset*' | pp-link --url", outside, tmp_path)
    assert found.returncode == 0 and found.stdout.count("file://") == 1, found


def test_the_installed_commands_report_bad_input_and_print_completions(outside: dict[str, str],
                                                                       tmp_path: Path) -> None:
    bad = sh("""printf '{"url": "https://img.example.com/ok.png"}\\n{"url": oops}\\n' | pp-link --md""",
             outside, tmp_path)
    assert bad.returncode == 1 and bad.stdout == "![ok](https://img.example.com/ok.png)\n"
    assert "Traceback" not in bad.stderr and bad.stderr
    completion = sh("pp-backup --print-completion bash > pp-backup.bash && bash -n pp-backup.bash && "
                    "pp-link --version", outside, tmp_path)
    assert completion.returncode == 0, completion.stderr
    assert completion.stdout.startswith("pp-link (picpipe) ")


def test_every_module_imports_from_the_installed_wheel(outside: dict[str, str], tmp_path: Path) -> None:
    """Without the test extras: a module importing a package the wheel does not depend on fails here."""
    done = sh("python -c 'import importlib, pkgutil, picpipe\n"
              "names = [m.name for m in pkgutil.walk_packages(picpipe.__path__, \"picpipe.\")]\n"
              "[importlib.import_module(n) for n in names]\nprint(len(names))'", outside, tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout) >= 60


def test_no_package_index_skips_and_a_broken_build_fails(monkeypatch: pytest.MonkeyPatch) -> None:
    def fake(stderr: str):
        return lambda *a, **k: subprocess.CompletedProcess(a[0], 1, "", stderr)

    monkeypatch.setattr(subprocess, "run", fake("WARNING: Retrying ... NewConnectionError('Failed to establish')\n"
                                                "ERROR: No matching distribution found for setuptools>=77"))
    with pytest.raises(pytest.skip.Exception, match="cannot reach the package index"):
        pip("python", "install", "x", timeout=1)
    monkeypatch.setattr(subprocess, "run", fake("error: invalid command 'bdist_wheel'"))
    with pytest.raises(AssertionError, match="bdist_wheel"):
        pip("python", "wheel", ".", timeout=1)


@pytest.mark.parametrize("stderr", [
    "ERROR: Could not find a version that satisfies the requirement filelock>=3.300 (from picpipe) (from versions: "
    "3.0.0, 3.20.0)\nERROR: No matching distribution found for filelock>=3.300",
    "ERROR: Ignored the following versions that require a different python version: 9.0 Requires-Python >=3.14\n"
    "ERROR: No matching distribution found for pillow>=9",
])
def test_a_bad_pin_with_the_index_reachable_fails(monkeypatch: pytest.MonkeyPatch, stderr: str) -> None:
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(a[0], 1, "", stderr))
    with pytest.raises(AssertionError, match="No matching distribution"):
        pip("python", "install", "x", timeout=1)
