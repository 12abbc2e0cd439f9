"""SFTP as an image host: your own server, where a web server serves the folder `dir` at `base_url`.

    [profiles.vps]
    type = "sftp"
    server = "example.com"            # `server`, not `host`: a record's `host` and --host name the profile
    user = "deploy"                   # default: your login name, as ssh
    key_file = "~/.ssh/id_ed25519"    # or password = "env:VPS_PASSWORD"; neither: ssh-agent and ~/.ssh/id_*
    dir = "/var/www/img"              # absolute, or relative to the login folder
    base_url = "https://img.example.com/"

The server's host key must already be in known_hosts (the profile's file, else ~/.ssh/known_hosts and
/etc/ssh/ssh_known_hosts, as ssh reads them): an unknown or changed key is an error record with the
key's fingerprint and how to add it, and nothing is sent (paramiko's RejectPolicy, never AutoAdd).

"Never over a different file": the bytes go to a temp name in the target folder, then SFTP's rename
moves them into place; OpenSSH renames with link(2) then unlink, so the rename fails when the name is
taken, and a taken name is compared (size, then bytes): the same image is a reuse, another a conflict.
`--overwrite` renames with posix-rename@openssh.com, which replaces atomically.

One SSH connection per run carries up to MAX_CHANNELS SFTP sessions (paramiko's SFTPClient is not
for concurrent use, so each -j worker borrows a session of its own). A connection that cannot be
made after `retries` tries, or a refused host key or login, fails the rest of the run at once: a
server that counts failed logins (fail2ban) is not hammered. paramiko is imported when a profile of
this type is used, so other commands do not pay for it.
"""

from __future__ import annotations

import getpass
import logging
import os
import posixpath
import secrets
import socket
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from picpipe import console
from picpipe.concurrency import KeyedLocks
from picpipe.errors import PicpipeError, UsageError
from picpipe.hosts import Host, Stored
from picpipe.net import TIMEOUT_RETRIES, backoff, in_chain

if TYPE_CHECKING:
    import paramiko

T = TypeVar("T")

#: How the temp files of an upload begin (hidden, and picpipe's: as the local host's).
TEMP = ".pp-upload-"
#: SFTP sessions at most over the one connection: OpenSSH's MaxSessions is 10 by default.
MAX_CHANNELS = 8
#: Connection failures that another try may get past.
PASSING = frozenset({"connection", "connection_refused", "timeout"})


class SftpHost(Host):
    keys = ("server", "port", "user", "password", "key_file", "key_passphrase", "known_hosts", "dir")
    base_url_required = "an SFTP server has no public URL of its own; base_url is where a web server serves dir"

    def __init__(self, profile: dict[str, Any]) -> None:
        super().__init__(profile)
        self.server = self.setting("server")
        self.port = int(self.number("port", 22, (1, 65535, True)))
        self.user = str(profile.get("user") or getpass.getuser())
        self.timeout = self.number("timeout", 30.0)
        self.retries = int(self.number("retries", 4))
        folder = str(profile.get("dir") or "").strip()
        folder = "" if folder in ("~", "~/", ".") else folder.removeprefix("~/")  # SFTP starts in the login folder
        self.root = posixpath.normpath(folder) if folder else ""
        self.key_file = os.path.expanduser(str(profile["key_file"])) if profile.get("key_file") else None
        if self.key_file and not os.path.isfile(self.key_file):
            raise UsageError(f"profile {self.name!r}: key_file {self.key_file} does not exist",
                             "give the private key's path (e.g. ~/.ssh/id_ed25519), not the .pub file's")
        given = profile.get("known_hosts")
        self.known_hosts = [os.path.expanduser(str(given))] if given else [
            os.path.expanduser("~/.ssh/known_hosts"), "/etc/ssh/ssh_known_hosts"]
        if given and not os.path.isfile(self.known_hosts[0]):
            raise UsageError(f"profile {self.name!r}: known_hosts file {self.known_hosts[0]} does not exist",
                             f"make it with {self.keyscan()} after checking the fingerprint")
        self.where = f"{self.server}:{self.port}"
        self.lock = threading.Lock()  # the connection
        self.client: paramiko.SSHClient | None = None
        self.failure: PicpipeError | None = None  # the run's connection failed for good
        self.pool = threading.Condition()  # the SFTP sessions
        self.idle: list[paramiko.SFTPClient] = []
        self.open, self.capacity = 0, MAX_CHANNELS
        self.busy = KeyedLocks()
        self.folders: set[str] = set()  # made (or found) and inside dir, in this run
        self.real_root: str | None = None

    def keyscan(self) -> str:
        port = f"-p {self.port} " if self.port != 22 else ""
        return f"ssh-keyscan {port}{self.server} >> {self.known_hosts[0]}"

    def remote(self, key: str) -> str:
        self.check_key(key)  # sanitised keys have no '..': the path stays under dir
        return posixpath.join(self.root, key) if self.root else key

    # --- the operations -------------------------------------------------------------------------

    def put(self, key: str, data: bytes, mime: str, overwrite: bool = False) -> Stored:
        target = self.remote(key)
        return self.attempt(lambda sftp: self._put(sftp, key, target, data, overwrite), f"upload of {key}")

    def _put(self, sftp: paramiko.SFTPClient, key: str, target: str, data: bytes, overwrite: bool) -> Stored:
        folder = posixpath.dirname(target)
        self.inside(sftp, folder, make=True)
        if not overwrite:
            size = self.size(sftp, target)
            if size is not None:  # taken before anything is sent
                return self.already_there(key, self.holds(sftp, target, size, data))
        temp: str | None = posixpath.join(folder, TEMP + secrets.token_hex(8))
        try:
            with sftp.open(str(temp), "wx") as file:  # O_EXCL: a name nobody else has
                file.set_pipelined(True)
                file.write(data)
            if overwrite:
                self.replace(sftp, str(temp), target)
            else:
                try:
                    sftp.rename(str(temp), target)  # fails when the name is taken (OpenSSH: link(2))
                except OSError:
                    size = self.size(sftp, target)
                    if size is None:
                        raise
                    return self.already_there(key, self.holds(sftp, target, size, data))
            temp = None
        finally:
            if temp is not None:
                self.quietly(lambda: sftp.remove(str(temp)))
        return Stored(key, self.url(key))

    def replace(self, sftp: paramiko.SFTPClient, temp: str, target: str) -> None:
        """--overwrite: an atomic replace where the server has posix-rename (OpenSSH), else remove, rename."""
        try:
            sftp.posix_rename(temp, target)
        except PermissionError:
            raise
        except OSError:
            self.quietly(lambda: sftp.remove(target))
            sftp.rename(temp, target)

    def delete(self, key: str) -> None:
        target = self.remote(key)

        def work(sftp: paramiko.SFTPClient) -> None:
            if self.inside(sftp, posixpath.dirname(target), make=False):
                try:
                    sftp.remove(target)
                except FileNotFoundError:
                    pass  # already gone counts as deleted

        self.attempt(work, f"delete of {key}")

    @staticmethod
    def size(sftp: paramiko.SFTPClient, path: str) -> int | None:
        """The size of the file at `path`; None when there is none."""
        try:
            return sftp.stat(path).st_size or 0
        except FileNotFoundError:
            return None

    @staticmethod
    def holds(sftp: paramiko.SFTPClient, path: str, size: int, data: bytes) -> bool:
        """Whether the file at `path` (of `size` bytes) is `data`: another size settles it unread."""
        if size != len(data):
            return False
        with sftp.open(path, "r") as file:
            file.prefetch(size)
            return bool(file.read() == data)

    def inside(self, sftp: paramiko.SFTPClient, folder: str, make: bool) -> bool:
        """Whether `folder` exists (made when `make`), checked once per run to lie inside dir also
        after symlinks; False when it is missing and not made."""
        with self.busy.hold(folder):
            if folder in self.folders:
                return True
            if self.size(sftp, folder or ".") is None:
                if not make:
                    return False
                self.make(sftp, folder)
            if self.real_root is None:
                self.real_root = sftp.normalize(self.root or ".")
            real, root = sftp.normalize(folder or "."), self.real_root
            if real != root and not real.startswith(root.rstrip("/") + "/"):
                raise PicpipeError("bad_key", f"{self.name}: {folder} leads out of {root} on the server (a symlink?)",
                                   "keep symlinks that point elsewhere out of the profile's dir")
            self.folders.add(folder)
            return True

    def make(self, sftp: paramiko.SFTPClient, folder: str) -> None:
        """mkdir -p, from the deepest folder up: a new {year}/{month} under an existing dir is one mkdir."""
        try:
            sftp.mkdir(folder)
        except OSError:
            if self.size(sftp, folder) is not None:  # made by another worker or run meanwhile
                return
            parent = posixpath.dirname(folder)
            if parent in ("", "/", folder) or self.size(sftp, parent) is not None:
                raise
            self.make(sftp, parent)
            sftp.mkdir(folder)

    @staticmethod
    def quietly(action: Callable[[], Any]) -> None:
        """Clean-up that may fail (the link is gone, the file too) without hiding the first error."""
        try:
            action()
        except Exception:  # noqa: BLE001 - paramiko raises several kinds; the caller's error matters
            pass

    # --- the connection and its sessions ---------------------------------------------------------

    def attempt(self, work: Callable[[paramiko.SFTPClient], T], what: str) -> T:
        """Run `work` on a borrowed SFTP session; a lost connection is made again and the work
        repeated (safe: an upload that got through is found as a reuse)."""
        import paramiko

        tries = self.retries + 1
        for attempt in range(tries):
            try:
                sftp = self.take()
            except (EOFError, OSError, paramiko.SSHException) as exc:  # the connection died as a session opened
                lost: BaseException = exc
            else:
                keep = False
                try:
                    result = work(sftp)
                    keep = True
                    return result
                except PicpipeError:
                    keep = True
                    raise
                except TimeoutError:
                    raise PicpipeError("timeout", f"{self.name}: no answer from {self.where} within "
                                       f"{self.timeout:g} s during the {what}", "the server or the network is "
                                       "stuck: re-run later (what is done is not sent twice), or raise the "
                                       "profile's timeout") from None
                except OSError as exc:
                    if self.alive(sftp):  # the server's answer to this request
                        keep = True
                        raise self.refused(exc, what) from None
                    lost = exc
                except (EOFError, paramiko.SSHException) as exc:
                    lost = exc
                finally:
                    self.give(sftp, keep)
            if attempt + 1 == tries:
                raise PicpipeError("connection", f"{self.name}: the connection to {self.where} was lost during "
                                   f"the {what}: {lost or type(lost).__name__}",
                                   "the server or the network dropped it: re-run later (what is done is not "
                                   "sent twice)")
            delay = backoff(attempt)
            console.say(f"{self.name}: connection lost, try {attempt + 2} of {tries} in {delay:.1f} s")
            time.sleep(delay)
        raise AssertionError("unreachable")

    def refused(self, exc: OSError, what: str) -> PicpipeError:
        """The server's SFTP status for a request, as a record's error."""
        text = exc.strerror or str(exc) or type(exc).__name__
        if isinstance(exc, PermissionError):
            return PicpipeError("permission", f"{self.name}: the {what} was refused on {self.server}: {text}",
                                f"user {self.user} may not write in {self.root or 'the login folder'} there: "
                                "check the folder's owner and mode (ls -ld) on the server")
        return PicpipeError("rejected", f"{self.name}: the {what} failed on {self.server}: {text}",
                            "the server refused it (a full disk, a quota, a read-only file system?): its sshd "
                            "log says why")

    @staticmethod
    def alive(sftp: paramiko.SFTPClient) -> bool:
        channel = sftp.get_channel()
        return channel is not None and not channel.closed and channel.get_transport().is_active()

    def take(self) -> paramiko.SFTPClient:
        """An idle SFTP session, or a new one while there are fewer than the server allows."""
        import paramiko

        while True:
            with self.pool:
                while True:
                    while self.idle and not self.alive(self.idle[-1]):
                        self.quietly(self.idle.pop().close)
                        self.open -= 1
                    if self.idle:
                        return self.idle.pop()
                    if self.open < self.capacity:
                        self.open += 1
                        break
                    self.pool.wait()
            try:
                sftp = self.connect().open_sftp_client()
            except paramiko.ChannelException:  # the server's MaxSessions: make do with the sessions open
                with self.pool:
                    self.open -= 1
                    if not self.open:
                        raise
                    self.capacity = self.open
                continue
            except BaseException:
                with self.pool:
                    self.open -= 1
                    self.pool.notify()
                raise
            assert sftp is not None
            sftp.get_channel().settimeout(self.timeout)
            return sftp

    def give(self, sftp: paramiko.SFTPClient, keep: bool) -> None:
        with self.pool:
            if keep and self.alive(sftp):
                self.idle.append(sftp)
            else:
                self.quietly(sftp.close)
                self.open -= 1
            self.pool.notify()

    def connect(self) -> paramiko.Transport:
        """The run's one SSH connection, made (again) when there is none; tried `retries` more times
        when it cannot be made for a reason that may pass; a failure that outlasts them, a host key
        that is not known and a login that is refused fail the rest of the run."""
        with self.lock:
            if self.failure is not None:
                raise self.failure
            transport = self.client.get_transport() if self.client is not None else None
            if transport is not None and transport.is_active():
                return transport
            if self.client is not None:
                self.client.close()
                self.client = None
            tries = self.retries + 1
            for attempt in range(tries):
                try:
                    self.client = self.login()
                    transport = self.client.get_transport()
                    assert transport is not None
                    return transport
                except PicpipeError as error:
                    # a try that timed out took the whole timeout: one more at most, as net.TIMEOUT_RETRIES
                    last = attempt + 1 >= (min(tries, 1 + TIMEOUT_RETRIES) if error.type == "timeout" else tries)
                    if error.type not in PASSING or last:
                        self.failure = error
                        raise
                    delay = backoff(attempt)
                    console.say(f"{error.message}, try {attempt + 2} of {tries} in {delay:.1f} s")
                    time.sleep(delay)
            raise AssertionError("unreachable")

    def login(self) -> paramiko.SSHClient:
        """Connect, check the host key, log in: every failure a PicpipeError that says what to do."""
        import paramiko

        logging.getLogger("paramiko").addHandler(logging.NullHandler())  # no log lines or tracebacks on stderr
        key = self.private_key()
        started = time.monotonic()
        try:
            sock = socket.create_connection((self.server, self.port), timeout=self.timeout)
        except OSError as exc:
            raise self.unreachable(exc) from None
        client = paramiko.SSHClient()
        offered: list[paramiko.PKey] = []

        class Refuse(paramiko.RejectPolicy):
            def missing_host_key(self, client: paramiko.SSHClient, hostname: str, key: paramiko.PKey) -> None:
                offered.append(key)
                super().missing_host_key(client, hostname, key)

        for path in self.known_hosts:
            try:
                if os.path.isfile(path):
                    client.load_system_host_keys(path)  # read only: nothing is ever written to them
            except (paramiko.SSHException, OSError, UnicodeError, ValueError) as exc:
                sock.close()
                raise PicpipeError("known_hosts", f"{self.name}: cannot read {path}: {exc}",
                                   f"fix or remove the broken line (ssh-keygen -F {self.server} -f {path} "
                                   "finds the server's)") from None
        try:
            client.set_missing_host_key_policy(Refuse())
            password = self.profile.get("password") or None
            client.connect(self.server, self.port, self.user, password=password, pkey=key,
                           timeout=self.timeout,
                           allow_agent=not (self.key_file or password), look_for_keys=not (self.key_file or password),
                           sock=sock, banner_timeout=self.timeout, auth_timeout=self.timeout,
                           channel_timeout=self.timeout)
            return client
        except BaseException as exc:
            logging_in = shook_hands(client)
            client.close()
            sock.close()
            if isinstance(exc, paramiko.BadHostKeyException):
                raise self.changed_key(exc.key, exc.expected_key) from None
            if isinstance(exc, paramiko.SSHException) and offered:
                raise self.unknown_key(offered[0]) from None
            if isinstance(exc, paramiko.AuthenticationException) or isinstance(exc, paramiko.SSHException) \
                    and logging_in:
                raise self.auth_failed(exc) from None
            if isinstance(exc, (paramiko.SSHException, EOFError, OSError)):
                # paramiko wraps a timeout ("Error reading SSH protocol banner"), or goes on after its own
                # wait for the key exchange ran out and fails the login ("No existing session")
                if in_chain(exc, TimeoutError) or time.monotonic() - started >= self.timeout:
                    raise PicpipeError("timeout", f"{self.name}: {self.where} did not start SSH within "
                                       f"{self.timeout:g} s", "something accepts connections there but says "
                                       "nothing: check server and port, or raise the profile's timeout") from None
                raise PicpipeError("connection",
                                   f"{self.name}: no SSH session with {self.where}: {exc or type(exc).__name__}",
                                   f"something answers there but does not speak SSH, or drops the connection: "
                                   f"check server and port, and try ssh -p {self.port} {self.user}@{self.server}") \
                    from None
            raise

    def private_key(self) -> paramiko.PKey | None:
        """key_file, opened with key_passphrase: a key that will not open is said as such, not as a
        refused login (paramiko would try it, fail, and say neither)."""
        import paramiko

        if not self.key_file:
            return None
        passphrase = self.profile.get("key_passphrase") or None
        try:
            # positional: the argument is called passphrase before paramiko 5.0
            return paramiko.PKey.from_path(self.key_file, passphrase.encode() if passphrase else None)
        except (paramiko.SSHException, ValueError, TypeError) as exc:  # cryptography: TypeError for no passphrase
            if passphrase:
                problem = f"does not open with key_passphrase (a wrong passphrase?): {exc}"
            elif isinstance(exc, (paramiko.PasswordRequiredException, TypeError)):
                problem = "is locked with a passphrase: set key_passphrase (env:NAME)"
            else:
                problem = f"is not a private key paramiko reads: {exc}"
        except OSError as exc:
            problem = f"cannot be read: {exc.strerror or exc}"
        raise PicpipeError("auth", f"{self.name}: key_file {self.key_file} {problem}",
                           "give the private key's path (not the .pub file's) and, for a locked key, key_passphrase "
                           "(env:NAME); ssh-keygen -y -f KEY checks both")

    def unreachable(self, exc: OSError) -> PicpipeError:
        if isinstance(exc, socket.gaierror):
            return PicpipeError("dns", f"{self.name}: the name {self.server} does not resolve",
                                "check server in the profile (a name or an address, without user@ or :port)")
        if isinstance(exc, ConnectionRefusedError):
            return PicpipeError("connection_refused", f"{self.name}: connection refused by {self.where}",
                                f"nothing listens there: check server and port ({self.port}) in the profile, and "
                                "that sshd runs on the server")
        if isinstance(exc, TimeoutError):
            return PicpipeError("timeout", f"{self.name}: no connection to {self.where} within {self.timeout:g} s",
                                "the server is down, or a firewall drops the port: check server and port, or raise "
                                "the profile's timeout")
        return PicpipeError("connection", f"{self.name}: cannot connect to {self.where}: {exc.strerror or exc}",
                            "check server and port in the profile, and the network")

    def unknown_key(self, key: paramiko.PKey) -> PicpipeError:
        kind, fingerprint = key_kind(key), key.fingerprint
        return PicpipeError(
            "host_key_unknown",
            f"{self.name}: the host key of {self.where} is not in {' or '.join(self.known_hosts)}: "
            f"{kind} key {fingerprint}; nothing was sent",
            f"check that {fingerprint} is the server's key (on the server: ssh-keygen -lf "
            f"/etc/ssh/ssh_host_{kind.lower()}_key.pub), then add it: {self.keyscan()}",
            fingerprint=fingerprint)

    def changed_key(self, got: paramiko.PKey, expected: paramiko.PKey) -> PicpipeError:
        fingerprint = got.fingerprint
        name = f"[{self.server}]:{self.port}" if self.port != 22 else self.server
        return PicpipeError(
            "host_key_changed",
            f"{self.name}: the host key of {self.where} CHANGED: it is now {key_kind(got)} key {fingerprint}, "
            f"known_hosts says {key_kind(expected)} key {expected.fingerprint}; nothing was sent",
            "someone may be intercepting the connection. If the server was reinstalled or its keys replaced, "
            f"check the new fingerprint with its admin, then: ssh-keygen -R '{name}' -f {self.known_hosts[0]} "
            f"and {self.keyscan()}",
            fingerprint=fingerprint)

    def auth_failed(self, exc: BaseException) -> PicpipeError:
        if self.key_file:
            how = f"key_file {self.key_file}: its .pub must be in ~{self.user}/.ssh/authorized_keys on the server"
        elif self.profile.get("password"):
            how = "the password (password = \"env:NAME\"; the server must allow PasswordAuthentication)"
        else:
            how = "your ssh-agent and ~/.ssh/id_* keys (none was accepted), or set key_file or password"
        key = f"-i {self.key_file} " if self.key_file else ""
        return PicpipeError("auth", f"{self.name}: {self.where} refused the login of {self.user}: "
                            f"{exc or type(exc).__name__}",
                            f"check user ({self.user}) and {how}; ssh -v -p {self.port} {key}{self.user}@{self.server} "
                            "says more")

    def close(self) -> None:
        with self.pool:
            for sftp in self.idle:
                self.quietly(sftp.close)
            self.idle.clear()
        with self.lock:
            if self.client is not None:
                self.client.close()
                self.client = None


def shook_hands(client: paramiko.SSHClient) -> bool:
    """Whether the key exchange finished (and so the host key was accepted): a failure after it is the login's."""
    import paramiko

    transport = client.get_transport()
    try:
        return transport is not None and transport.is_active() and transport.get_remote_server_key() is not None
    except paramiko.SSHException:  # "No existing session": no key exchange yet
        return False


def key_kind(key: paramiko.PKey) -> str:
    """ED25519, ECDSA, RSA: as ssh names a host key's type."""
    name = key.get_name()
    return "ED25519" if "ed25519" in name else "ECDSA" if "ecdsa" in name else "RSA" if "rsa" in name else name


HOST = SftpHost
