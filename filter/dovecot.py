"""A throwaway Dovecot on loopback, for the integration tests and the README demo.

``LocalDovecot`` runs Debian's dovecot-imapd (2.3) as a child process with
every file it touches (configuration, sockets, state, logs, Maildirs, TLS
keys) under one directory, and every service under an unprivileged user:
``dovecot`` for the internal services and the mail files, ``dovenull`` for
the login processes. It listens on 127.0.0.1 only, on ports chosen when it
first starts, so it stays out of the way of a system Dovecot and of other
``LocalDovecot`` instances running at the same time.

It must be started as root: Dovecot's master process needs root to drop
every service to those users.

The helpers (``append``, ``messages``, ``flags``, ...) use the standard
library's ``imaplib`` and ``doveadm``, never the code under test, so a test
can check what really happened on the server.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import imaplib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import TracebackType
from typing import Any

from filter.mailbox import header_date, header_fields

DOVECOT = Path("/usr/sbin/dovecot")
DOVEADM = Path("/usr/bin/doveadm")
HOST = "127.0.0.1"
DEFAULT_USER = "owner"
DEFAULT_PASSWORD = "owner-secret"
INSTALL_HINT = "dovecot not installed: apt-get install dovecot-imapd"

# What Debian's Dovecot 2.3.19 advertises after login when imap_capability is
# left empty (with a single namespace and no special-use folders). Setting
# imap_capability replaces the whole list, before and after login alike; it
# does not even keep the LITERAL+ and NOTIFY that Dovecot appends itself.
DEFAULT_CAPABILITIES = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES THREAD=REFS "
    "THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN NAMESPACE UIDPLUS "
    "LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES WITHIN CONTEXT=SEARCH LIST-STATUS "
    "BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW STATUS=SIZE SAVEDATE LITERAL+ NOTIFY"
)

_START_TIMEOUT = 15.0
_STOP_TIMEOUT = 10.0
_OPENSSL_CONFIG = """\
[req]
distinguished_name = dn
prompt = no
[dn]
CN = ployfilter test
[ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
[server]
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature,keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = IP:127.0.0.1,DNS:localhost
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid:always
"""


def _arrival_of(data: bytes) -> str:
    """The Date field of ``data`` as an IMAP date-time for APPEND, or "" (the time of arrival) without one."""
    when = header_date(header_fields(data))
    return "" if when is None else imaplib.Time2Internaldate(when)


def capabilities_without(*names: str) -> str:
    """The default capability list minus ``names``, as a value for ``imap_capability``.

    Used to build servers that lack an extension the filter can use, e.g.
    MOVE (RFC 6851), UIDPLUS (RFC 4315) or IDLE (RFC 2177).
    """
    drop = {name.upper() for name in names}
    default = DEFAULT_CAPABILITIES.split()
    unknown = drop - {cap.upper() for cap in default}
    if unknown:
        raise ValueError(f"not in Dovecot's default capabilities: {', '.join(sorted(unknown))}")
    return " ".join(cap for cap in default if cap.upper() not in drop)


CAPABILITIES_NO_MOVE = capabilities_without("MOVE")
CAPABILITIES_NO_MOVE_NO_UIDPLUS = capabilities_without("MOVE", "UIDPLUS")
CAPABILITIES_NO_IDLE = capabilities_without("IDLE")


class DovecotError(RuntimeError):
    """The local Dovecot could not be started, stopped or driven; the message carries its log."""


def unavailable_reason() -> str | None:
    """Why a LocalDovecot cannot run here, or None when it can."""
    if not DOVECOT.is_file() or not DOVEADM.is_file():
        return INSTALL_HINT
    if os.geteuid() != 0:
        return "LocalDovecot must be started as root (Dovecot drops its services to the dovecot and dovenull users)"
    for user in ("dovecot", "dovenull"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"system user {user!r} is missing; reinstall dovecot-core"
    return None


class LocalDovecot:
    """A Dovecot serving IMAP on 127.0.0.1 from a temporary directory.

    ``root`` is the directory to work in; when it is None a fresh one is
    made in the system temp dir and removed again by ``close`` (or at the
    end of the ``with`` block). The configuration, the logs and the TLS
    files are always in ``root``. Dovecot's unprivileged services must also
    reach the sockets, the user database and the Maildirs (``runtime``);
    when ``root`` lies under a directory other users cannot search (pytest's
    ``tmp_path`` does), those go to a private directory in the system temp
    dir instead, linked from ``root/runtime`` and removed by ``close``.

    With ``tls`` a private CA and a certificate for 127.0.0.1 and localhost
    are made with the openssl CLI; ``ca_file`` is the CA to trust, ``port``
    offers STARTTLS and ``tls_port`` implicit TLS. Without it, ``port`` is
    plain IMAP and ``tls_port`` is None.

    ``capabilities`` replaces Dovecot's whole capability list (see
    ``capabilities_without``). ``users`` maps user names to passwords.
    ``special_use`` maps folder names to an RFC 6154 attribute ("\\Sent"):
    Dovecot takes these from its configuration only, and advertises
    SPECIAL-USE when there is one. ``quota_kib`` gives each user a storage
    quota of that many KiB (Dovecot's quota plugin, no grace), to make a
    full mailbox refuse COPY and APPEND. ``separator`` is the hierarchy
    separator LIST shows ("." as on servers with Maildir++ folders). With
    ``oauth2`` the server also takes SASL XOAUTH2 and OAUTHBEARER logins,
    with access tokens from ``oauth2_token`` (JWTs it validates itself).
    """

    def __init__(
        self,
        root: str | os.PathLike[str] | None = None,
        *,
        users: Mapping[str, str] | None = None,
        tls: bool = False,
        capabilities: str | None = None,
        special_use: Mapping[str, str] | None = None,
        quota_kib: int | None = None,
        separator: str = "/",
        oauth2: bool = False,
    ) -> None:
        self.special_use = dict(special_use or {})
        self.quota_kib = quota_kib
        self.separator = separator
        self.oauth2 = oauth2
        self._oauth2_secret = secrets.token_bytes(32)
        self.users = dict(users) if users is not None else {DEFAULT_USER: DEFAULT_PASSWORD}
        for user, password in self.users.items():
            if not re.fullmatch(r"[A-Za-z0-9_.@-]+", user):
                raise ValueError(f"user name {user!r}: use letters, digits, '_', '.', '@' or '-'")
            if not password or any(c in password for c in ":\r\n"):
                raise ValueError(f"password for {user!r} must be non-empty, without ':' or line breaks")
        self.tls = tls
        self.capabilities = capabilities
        self.host = HOST
        self.port = 0
        self.tls_port: int | None = None
        self.ca_file: Path | None = None
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="ployfilter-dovecot-") if root is None else root).resolve()
        self.runtime = self.root
        self.config_path = self.root / "dovecot.conf"
        self.log_path = self.root / "log" / "dovecot.log"
        self._stderr_path = self.root / "log" / "stderr.log"
        self._process: subprocess.Popen[bytes] | None = None
        self._stopping: list[subprocess.Popen[bytes]] = []
        self._prepared = False
        internal = pwd.getpwnam("dovecot")
        self._mail_uid = internal.pw_uid
        self._mail_gid = internal.pw_gid

    def oauth2_token(self, user: str = DEFAULT_USER, lifetime: float = 600.0) -> str:
        """An OAuth 2.0 access token for ``user`` that this server accepts (a JWT signed with HS256).

        A negative ``lifetime`` gives a token that has expired already.
        """
        now = int(time.time())
        header = {"alg": "HS256", "typ": "JWT", "kid": "default"}
        claims = {"sub": user, "iat": min(now, now + int(lifetime)), "exp": now + int(lifetime)}
        signed = b".".join(_base64url(json.dumps(part).encode()) for part in (header, claims))
        signature = hmac.new(self._oauth2_secret, signed, hashlib.sha256).digest()
        return (signed + b"." + _base64url(signature)).decode()

    def __enter__(self) -> LocalDovecot:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        """Start Dovecot and wait until it greets on its ports.

        Ports are chosen on the first start and kept by ``restart``. Another
        process may grab a chosen port before Dovecot binds it; the first
        start then tries again with new ports.
        """
        if self.running:
            raise DovecotError(f"Dovecot in {self.root} is already running")
        reason = unavailable_reason()
        if reason:
            raise DovecotError(reason)
        self.stop()
        self._prepare()
        choose_ports = self.port == 0
        for attempt in range(3 if choose_ports else 1):
            if choose_ports:
                self.port = _free_port()
                self.tls_port = _free_port() if self.tls else None
            self._write_config()
            try:
                self._launch()
                return
            except DovecotError:
                if attempt == 2 or not choose_ports or "Address already in use" not in self.log_tail():
                    raise

    def stop(self, *, wait: bool = True) -> None:
        """Stop the master process and wait until every Dovecot process of it is gone.

        Dovecot's master kills its services when it gets SIGTERM; the login
        processes hold the listening sockets too, so waiting for all of them
        is what makes ``restart`` on the same ports reliable. The master
        always takes about a second to exit (it sleeps that long for its log
        process), so with ``wait=False`` this only sends the signal and the
        waiting is left to the next ``stop``, ``start`` or ``close``: a test
        suite can then tear many servers down at once.
        """
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                process.terminate()
            self._stopping.append(process)
        if wait:
            while self._stopping:
                _wait_gone(self._stopping.pop())

    def close(self) -> None:
        """Stop, and remove the directories this object made (``root`` when it chose it, a separate ``runtime``)."""
        self.stop()
        self._prepared = False
        if self.runtime != self.root:
            shutil.rmtree(self.runtime, ignore_errors=True)
            (self.root / "runtime").unlink(missing_ok=True)
            self.runtime = self.root
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)

    def restart(self) -> None:
        """Stop and start again on the same ports, keeping all mail."""
        self.stop()
        self.start()

    def log_tail(self, lines: int = 40) -> str:
        """The last ``lines`` lines of Dovecot's log and of its stderr."""
        parts = []
        for path in (self._stderr_path, self.log_path):
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except FileNotFoundError:
                continue
            if text.strip():
                parts.append(f"--- {path.name}\n" + "\n".join(text.splitlines()[-lines:]))
        return "\n".join(parts) or "(Dovecot wrote no log)"

    def doveadm(self, *args: str) -> str:
        """Run ``doveadm -c <our config> args...`` and return its output.

        doveadm works on the mail files directly, so it also works while the
        server is stopped.
        """
        result = subprocess.run(
            [str(DOVEADM), "-c", str(self.config_path), *args],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise DovecotError(
                f"doveadm {' '.join(args)} failed with status {result.returncode}: {result.stderr.strip()}"
            )
        return result.stdout

    def set_uidvalidity(self, user: str, folder: str, value: int) -> None:
        """Give ``folder`` a new UIDVALIDITY, as a server does after rebuilding it.

        The next SELECT, also in a session that is already open, reports it
        (RFC 9051 section 2.3.1.1).
        """
        self.doveadm("mailbox", "update", "-u", user, "--uid-validity", str(value), folder)

    def create(self, user: str, folder: str) -> None:
        """Create ``folder`` (and its parents) for ``user``."""
        self.doveadm("mailbox", "create", "-u", user, folder)

    def folders(self, user: str) -> list[str]:
        """The names of all of ``user``'s folders, sorted."""
        return sorted(line for line in self.doveadm("mailbox", "list", "-u", user).splitlines() if line)

    def append(
        self, user: str, folder: str, data: bytes, flags: Sequence[str] = (), internaldate: str | None = ""
    ) -> int:
        """APPEND ``data`` to ``folder`` with ``flags``; returns the new message's UID (RFC 4315 APPENDUID).

        ``internaldate`` sets INTERNALDATE, quoted as IMAP writes it
        ('"02-Mar-2026 10:00:00 +0000"'); by default the server uses the time
        of arrival. None takes the message's own Date, as if it had been
        delivered when it was sent (sample mail dated in the past).
        """
        if internaldate is None:
            internaldate = _arrival_of(data)
        with self._session(user) as imap:
            typ, response = imap.append(_quote(folder), " ".join(flags), internaldate, data)
            _check(typ, response, f"APPEND to {folder}")
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response[0] or b"")
        if not match:
            raise DovecotError(f"APPEND to {folder} returned no APPENDUID: {response!r}")
        return int(match.group(1))

    def deliver(self, user: str, data: bytes) -> None:
        """Drop ``data`` straight into the INBOX Maildir's ``new/``, as a local delivery agent would.

        APPEND refuses some messages a server can still hold (Dovecot will not
        save a zero-byte message); delivering the file directly puts exactly
        those bytes in the INBOX.
        """
        inbox = self.runtime / "mail" / user
        for path in (inbox, *(inbox / sub for sub in ("cur", "new", "tmp"))):
            path.mkdir(exist_ok=True)
            os.chown(path, self._mail_uid, self._mail_gid)
        name = f"{time.time_ns()}.{secrets.token_hex(4)}.ployfilter-test"
        target = inbox / "new" / name
        target.write_bytes(data)
        os.chown(target, self._mail_uid, self._mail_gid)

    def messages(self, user: str, folder: str) -> list[bytes]:
        """The full bytes of every message in ``folder``, in UID order."""
        return [data for _, data, _ in self._fetch_all(user, folder, "BODY.PEEK[]")]

    def flags(self, user: str, folder: str) -> list[tuple[str, ...]]:
        """The flags of every message in ``folder``, in UID order."""
        return [flags for _, _, flags in self._fetch_all(user, folder, "FLAGS")]

    def uids(self, user: str, folder: str) -> list[int]:
        """The UIDs of every message in ``folder``, ascending."""
        return [uid for uid, _, _ in self._fetch_all(user, folder, "FLAGS")]

    @contextmanager
    def _session(self, user: str) -> Iterator[imaplib.IMAP4]:
        if not self.running:
            raise DovecotError(f"Dovecot in {self.root} is not running")
        imap = imaplib.IMAP4(self.host, self.port, timeout=30)
        try:
            typ, response = imap.login(user, self.users[user])
            _check(typ, response, f"LOGIN as {user}")
            yield imap
        finally:
            with suppress(imaplib.IMAP4.error, OSError):
                imap.logout()

    def _fetch_all(self, user: str, folder: str, item: str) -> list[tuple[int, bytes, tuple[str, ...]]]:
        """(uid, literal, flags) of every message, read through EXAMINE so nothing changes."""
        with self._session(user) as imap:
            typ, response = imap.select(_quote(folder), readonly=True)
            _check(typ, response, f"EXAMINE {folder}")
            if int(response[0] or b"0") == 0:
                return []
            typ, response = imap.uid("FETCH", "1:*", f"(UID FLAGS {item})")
            _check(typ, response, f"FETCH in {folder}")
        found = []
        for part in response:
            prefix, literal = part if isinstance(part, tuple) else (part or b"", b"")
            uid = re.search(rb"UID (\d+)", prefix)
            if uid is None:
                continue
            flags = tuple(flag.decode("ascii", "replace") for flag in imaplib.ParseFlags(prefix))
            found.append((int(uid.group(1)), literal, flags))
        return sorted(found)

    def _prepare(self) -> None:
        """Make the directory tree, the user database and, with TLS, the certificates (once)."""
        if self._prepared:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "log").mkdir(exist_ok=True)
        if not _searchable_by_others(self.root):
            self.runtime = Path(tempfile.mkdtemp(prefix="ployfilter-dovecot-"))
            self.runtime.chmod(0o755)
            if not _searchable_by_others(self.runtime):
                raise DovecotError(f"{self.runtime} is not searchable by Dovecot's unprivileged users")
            link = self.root / "runtime"
            link.unlink(missing_ok=True)
            link.symlink_to(self.runtime)
        for sub in ("run", "state"):
            (self.runtime / sub).mkdir(exist_ok=True)
        mail = self.runtime / "mail"
        mail.mkdir(exist_ok=True)
        os.chown(mail, self._mail_uid, self._mail_gid)
        mail.chmod(0o700)
        passwd = self.runtime / "users"
        passwd.write_text("".join(f"{user}:{{PLAIN}}{password}\n" for user, password in self.users.items()))
        os.chown(passwd, 0, self._mail_gid)
        passwd.chmod(0o640)
        if self.tls:
            self.ca_file = _make_certificates(self.root / "tls")
        if self.oauth2:
            # Dovecot's local validation reads the key for a token's (azp, alg, kid) from a dict: with the fs
            # driver, the file default/HS256/default under the prefix, holding the key in base64.
            keys = self.runtime / "oauth2-keys" / "default" / "HS256"
            keys.mkdir(parents=True, exist_ok=True)
            (keys / "default").write_text(base64.b64encode(self._oauth2_secret).decode())
            (self.runtime / "oauth2.conf.ext").write_text(
                "introspection_mode = local\n"
                f"local_validation_key_dict = fs:posix:prefix={self.runtime / 'oauth2-keys'}/\n"
                "username_attribute = sub\n"
            )
        self._prepared = True

    def _write_config(self) -> None:
        runtime = self.runtime
        tls_dir = self.root / "tls"
        if self.tls:
            ssl = f"ssl = yes\nssl_cert = <{tls_dir / 'server.pem'}\nssl_key = <{tls_dir / 'server.key'}\n"
        else:
            ssl = "ssl = no\n"
        capability = f"imap_capability = {self.capabilities}\n" if self.capabilities is not None else ""
        oauth2 = (
            f"passdb {{\n  driver = oauth2\n  mechanisms = xoauth2 oauthbearer\n"
            f"  args = {runtime / 'oauth2.conf.ext'}\n}}\n"
            if self.oauth2
            else ""
        )
        quota = (
            "mail_plugins = $mail_plugins quota\n"
            f"plugin {{\n  quota = count:User quota\n  quota_rule = *:storage={self.quota_kib}K\n"
            "  quota_grace = 0\n  quota_vsizes = yes\n}\n"
            if self.quota_kib is not None
            else ""
        )
        mailboxes = "".join(
            f'  mailbox "{folder}" {{\n    special_use = {attribute}\n  }}\n'
            for folder, attribute in self.special_use.items()
        )
        # IDLE learns of new mail from inotify; where inotify is not to be had
        # (its per-user instance limit spent), Dovecot falls back to a timed
        # check, 30 s by default, as long as a test waits: check every second.
        # The auth penalty (anvil-auth-penalty) would delay every login for up
        # to 15 s after a test's deliberate failed login; a listener with mode
        # 0 turns it off (auth then logs that it cannot connect to it).
        self.config_path.write_text(
            f"""\
instance_name = ployfilter-{runtime.name}
base_dir = {runtime / "run"}
state_dir = {runtime / "state"}
log_path = {self.log_path}
info_log_path = {self.log_path}
protocols = imap
listen = {HOST}
{ssl}default_internal_user = dovecot
default_login_user = dovenull
first_valid_uid = {self._mail_uid}
last_valid_uid = {self._mail_uid}
auth_mechanisms = plain login{" xoauth2 oauthbearer" if self.oauth2 else ""}
disable_plaintext_auth = no
auth_failure_delay = 0
mailbox_idle_check_interval = 1 secs
{capability}{quota}mail_location = maildir:{runtime / "mail"}/%u:LAYOUT=fs
namespace inbox {{
  inbox = yes
  separator = {self.separator}
  prefix =
{mailboxes}}}
passdb {{
  driver = passwd-file
  args = {runtime / "users"}
}}
{oauth2}userdb {{
  driver = static
  args = uid={self._mail_uid} gid={self._mail_gid} home={runtime / "mail"}/%u
}}
service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.tls_port or 0}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""
        )

    def _launch(self) -> None:
        with self._stderr_path.open("ab") as stderr:
            self._process = subprocess.Popen(
                [str(DOVECOT), "-F", "-c", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=stderr,
                stderr=stderr,
                start_new_session=True,
            )
        try:
            self._wait_ready()
        except DovecotError:
            self.stop()
            raise

    def _wait_ready(self) -> None:
        """Wait for the IMAP greeting on the plain port and a connection on the TLS port."""
        assert self._process is not None
        deadline = time.monotonic() + _START_TIMEOUT
        pending = [port for port in (self.port, self.tls_port) if port]
        while pending:
            status = self._process.poll()
            if status is not None:
                raise DovecotError(f"dovecot exited with status {status} while starting:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise DovecotError(
                    f"dovecot did not listen on {HOST}:{pending[0]} in {_START_TIMEOUT:g} s:\n{self.log_tail()}"
                )
            try:
                with socket.create_connection((HOST, pending[0]), timeout=2) as sock:
                    if pending[0] == self.port:
                        if not sock.recv(4096).startswith(b"* OK"):
                            raise OSError("no IMAP greeting")
                        sock.sendall(b"0 LOGOUT\r\n")
                        sock.recv(4096)
                pending.pop(0)
            except OSError:
                time.sleep(0.02)


def _searchable_by_others(path: Path) -> bool:
    """Whether users other than root can reach ``path`` (search permission on it and every ancestor)."""
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_gone(process: subprocess.Popen[bytes]) -> None:
    """Wait for a signalled master, then end what is left of its process group.

    Once the master is gone, an imap process serving a client lingers for
    about ten seconds before it notices; SIGTERM makes it say BYE to its
    client and exit at once, as it would under a running master.
    """
    try:
        process.wait(timeout=_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        _signal_group(process.pid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + _STOP_TIMEOUT
    if _group_alive(process.pid):
        _signal_group(process.pid, signal.SIGTERM)
    while _group_alive(process.pid):
        if time.monotonic() > deadline:
            _signal_group(process.pid, signal.SIGKILL)
            break
        time.sleep(0.02)


def _group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs (zombies hold no sockets and do not count)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat_file.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            return True
    return False


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _make_certificates(directory: Path) -> Path:
    """A private CA and a server certificate for 127.0.0.1 and localhost, signed by it.

    Returns the CA certificate, the file a client must trust. Keys are P-256:
    quick to make, and accepted by every TLS stack the filter runs on.
    """
    directory.mkdir(mode=0o700, exist_ok=True)
    config = directory / "openssl.cnf"
    config.write_text(_OPENSSL_CONFIG)
    newkey = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    commands = [
        [
            "req",
            "-x509",
            "-config",
            str(config),
            "-extensions",
            "ca",
            *newkey,
            "-days",
            "30",
            "-subj",
            "/CN=ployfilter test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.pem",
        ],
        [
            "req",
            "-new",
            "-config",
            str(config),
            *newkey,
            "-subj",
            "/CN=localhost",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ],
        [
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-set_serial",
            str(secrets.randbits(63)),
            "-days",
            "30",
            "-extfile",
            str(config),
            "-extensions",
            "server",
            "-out",
            "server.pem",
        ],
    ]
    openssl = shutil.which("openssl")
    if openssl is None:
        raise DovecotError("the openssl command is needed to make TLS certificates: apt-get install openssl")
    for command in commands:
        result = subprocess.run([openssl, *command], cwd=directory, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise DovecotError(f"openssl {command[0]} failed: {result.stderr.strip()}")
    return directory / "ca.pem"


def _quote(folder: str) -> str:
    """``folder`` as an IMAP quoted string (RFC 9051 section 4.3); imaplib does not quote."""
    return '"' + folder.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _check(typ: str, response: list[Any], what: str) -> None:
    if typ != "OK":
        raise DovecotError(f"{what} failed: {typ} {response!r}")


def _base64url(data: bytes) -> bytes:
    """Base64 with the URL alphabet and no padding, as JWTs are written (RFC 7515 section 2)."""
    return base64.urlsafe_b64encode(data).rstrip(b"=")
