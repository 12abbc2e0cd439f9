"""A real OpenSSH server on 127.0.0.1 for tests: its own host key, config and authorized_keys in a
temp folder, SFTP by `internal-sftp`, logging to a file the test can read.

    with sshd(tmp_path) as server: ...   # server.port, server.client_key, server.known_hosts, server.log()

Needs Debian's openssh-server (/usr/sbin/sshd) and openssh-client (ssh-keygen); the tests skip
with the reason when either is missing or `sshd -t` refuses the config. sshd wants an absolute
path to itself and, as root, its privilege separation folder /run/sshd (made here when missing,
as the package's service would). The login is the user running the tests (root in CI); as
another user sshd runs unprivileged, which OpenSSH allows for that user's own logins by key.
"""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

SSHD = Path("/usr/sbin/sshd")
#: The passphrase of the second client key (server.locked_key).
PASSPHRASE = "Phrase-of-the-locked-key-7c1e"

CONFIG = """\
ListenAddress 127.0.0.1
HostKey {tmp}/host_ed25519
PidFile none
AuthorizedKeysFile {tmp}/authorized_keys
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication yes
KbdInteractiveAuthentication no
PermitRootLogin yes
AllowUsers {user}
MaxAuthTries 6
Subsystem sftp internal-sftp
LogLevel VERBOSE
"""


@dataclass
class Sshd:
    port: int
    user: str
    folder: Path
    process: subprocess.Popen[bytes]
    probes: int = 0  # connections made to see that sshd serves

    def connections(self) -> int:
        """Connections the tests' clients made (sshd logs each)."""
        return self.log().count("Connection from ") - self.probes

    @property
    def client_key(self) -> Path:
        """A private key without passphrase, in authorized_keys."""
        return self.folder / "client_ed25519"

    @property
    def locked_key(self) -> Path:
        """A private key with PASSPHRASE, in authorized_keys."""
        return self.folder / "locked_ed25519"

    @property
    def stranger_key(self) -> Path:
        """A private key the server does not know."""
        return self.folder / "stranger_ed25519"

    @property
    def known_hosts(self) -> Path:
        """A known_hosts file with this server's key, as `ssh-keyscan -p PORT 127.0.0.1` writes it."""
        return self.folder / "known_hosts"

    def fingerprint(self) -> str:
        """The host key's SHA256:... fingerprint, as ssh-keygen -l says it."""
        out = subprocess.run(["ssh-keygen", "-l", "-f", str(self.folder / "host_ed25519.pub")],
                             capture_output=True, text=True, check=True).stdout
        return out.split()[1]

    def log(self) -> str:
        return (self.folder / "sshd.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(10)


def keygen(path: Path, passphrase: str = "") -> None:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", passphrase, "-C", path.name, "-f", str(path)],
                   check=True, capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def sshd(tmp: Path) -> Iterator[Sshd]:
    """sshd -D -e on a free port of 127.0.0.1 until the test ends."""
    if not SSHD.exists():
        pytest.skip("OpenSSH's sshd is not installed (apt-get install openssh-server)")
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is not installed (apt-get install openssh-client)")
    folder = tmp / "sshd"
    folder.mkdir(mode=0o700)
    for name in ("host_ed25519", "client_ed25519", "stranger_ed25519"):
        keygen(folder / name)
    keygen(folder / "locked_ed25519", PASSPHRASE)
    (folder / "authorized_keys").write_text((folder / "client_ed25519.pub").read_text()
                                            + (folder / "locked_ed25519.pub").read_text())
    user = getpass.getuser()
    config = folder / "sshd_config"
    config.write_text(CONFIG.format(tmp=folder, user=user))
    if os.geteuid() == 0 and not Path("/run/sshd").is_dir():
        os.makedirs("/run/sshd", mode=0o755, exist_ok=True)
    port = free_port()
    checked = subprocess.run([str(SSHD), "-t", "-f", str(config), "-p", str(port)], capture_output=True, text=True)
    if checked.returncode != 0:
        pytest.skip(f"sshd refuses to run here: {checked.stderr.strip()}")
    host_key = (folder / "host_ed25519.pub").read_text().split()
    (folder / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    with open(folder / "sshd.log", "wb") as log:
        process = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config), "-p", str(port)],
                                   stdout=log, stderr=subprocess.STDOUT)
    server = Sshd(port, user, folder, process)
    try:
        wait_for_banner(server)
        yield server
    finally:
        server.stop()


def wait_for_banner(server: Sshd) -> None:
    """Until sshd says its SSH-2.0 banner (listening is not yet serving)."""
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", server.port), timeout=1) as s:
                server.probes += 1
                if s.recv(64).startswith(b"SSH-2.0-"):
                    return
        except OSError:
            pass
        if server.process.poll() is not None:
            raise RuntimeError(f"sshd did not start: {server.log()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"sshd did not answer within 15 s: {server.log()}")
        time.sleep(0.05)
