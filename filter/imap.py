"""ImapMailbox: the Mailbox protocol over IMAP. The only importer of imapclient.

Three things matter more here than anywhere else in the filter:

* Moving never loses or deletes mail it was not asked to move. MOVE (RFC
  6851) where the server has it; else COPY, then \\Deleted, then UID EXPUNGE
  of exactly the copied UIDs (RFC 4315 section 2.1); never a bare EXPUNGE,
  which would also remove messages the owner had marked \\Deleted.
* Reading never changes the mailbox: every fetch uses BODY.PEEK, so \\Seen
  stays as the owner left it (RFC 9051 section 6.4.5), and folders other
  than the watched one are only ever EXAMINEd (read-only).
* Every failure is sorted into one of two kinds. ``ConnectionLost`` means a
  new session may cure it (socket, TLS and protocol-level breakage);
  ``AuthError``, ``ConnectError`` and ``MailboxError`` mean it will not (a
  refused login, an untrusted certificate, a folder the server refuses).
  All calls into imapclient pass through ``_Guarded``, so no method can
  forget to translate an exception.
"""

from __future__ import annotations

import email.utils
import hashlib
import imaplib
import logging
import re
import select
import socket
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from datetime import datetime
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import LoginError
from imapclient.imapclient import _parse_untagged_response

from filter.config import AccountConfig
from filter.errors import AuthError, ConnectError, FolderError, MailboxError, PloyError, TargetUnavailable
from filter.mailbox import (
    ConnectionLost,
    Fingerprint,
    MailboxStatus,
    RawMessage,
    SentMessage,
    TargetMark,
    TokenUnavailable,
    header_date,
    header_fields,
)
from filter.state import fingerprint_key, message_id_hash

log = logging.getLogger(__name__)

# imapclient logs every response line at DEBUG, message bodies included, and
# our logs must never carry those. Unless someone chose a level for it (a test
# capturing the commands sent, say), its logger stops at INFO.
_imapclient_log = logging.getLogger("imapclient")
if _imapclient_log.level == logging.NOTSET:
    _imapclient_log.setLevel(logging.INFO)

_FETCH_CHUNK = 50
_FINGERPRINT_CHUNK = 500
# UIDs per SEARCH: imaplib refuses reply lines over 1,000,000 bytes, and
# 50,000 UIDs of up to 9 digits and a space stay well under that.
_SEARCH_WINDOW = 50_000
# Bytes per partial FETCH when comparing two messages' contents.
_DIGEST_CHUNK = 1 << 20
_IDENTITY_ITEM = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID DATE)]"
_IDLE_STEP = 1.0
_CHANGE_RESPONSES = frozenset({b"EXISTS", b"RECENT", b"EXPUNGE", b"FETCH"})
_DELETED = "\\Deleted"
# What an IMAP quoted string carries: printable ASCII (RFC 9051 section 9, TEXT-CHAR without 8-bit).
_QUOTABLE_RUN = re.compile(r"[ -~]+")
_UNSELECTABLE = frozenset({"\\noselect", "\\nonexistent"})
_SENT_ITEMS = ["RFC822.SIZE", "INTERNALDATE", "BODY.PEEK[HEADER.FIELDS (DATE TO CC BCC MESSAGE-ID)]"]
_RECIPIENT_FIELDS = frozenset({b"to", b"cc", b"bcc"})


class ImapMailbox:
    """One IMAP account, as the runner's ``Mailbox``.

    ``password`` is already resolved (``config.read_password``). With
    ``idle=False`` the server's IDLE is ignored, for servers whose IDLE is
    broken. Without IDLE, ``wait_for_change`` sleeps at most
    ``poll_interval`` seconds, whatever timeout it is given.
    """

    def __init__(
        self,
        account: AccountConfig,
        password: str | Callable[[], str],
        *,
        idle: bool = True,
        poll_interval: float = 60.0,
    ) -> None:
        """``password`` is the password, or what gives it afresh at every login (an OAuth 2.0 access token)."""
        self.account = account
        self._password = password
        self._idle_enabled = idle
        self._poll_interval = poll_interval
        self._where = f"account {account.name} ({account.host}:{account.port})"
        self._imap: _Guarded | None = None
        self._capabilities: frozenset[str] = frozenset()
        self._selected: str | None = None
        self._uidvalidity = 0
        self._uidnext = 0
        self._exists = 0
        self._permanent_flags: frozenset[str] = frozenset()
        self._warned_no_uidplus = False
        self._idle_refused = False

    def connect(self) -> None:
        """Open the session, secure it as configured and log in.

        TLS is always verified, hostname included; ``ca_file`` adds a CA to
        the system's. ``starttls`` refuses to go on when the server does not
        offer STARTTLS (RFC 9051 section 6.2.1), since the password would
        otherwise cross the network in clear.
        """
        self.close()
        self._idle_refused = False
        account = self.account
        if account.security == "plain" and not account.is_loopback:
            raise ConnectError(f"{self._where}: plain IMAP is allowed only to a loopback address")
        context = self._ssl_context() if account.security != "plain" else None
        # Before connecting: a token command may take a while, and a server waits only so long for a login.
        if callable(self._password):
            try:
                password = self._password()
            except AuthError as exc:
                raise TokenUnavailable(f"{self._where}: no access token: {exc}") from exc
        else:
            password = self._password
        log.info("%s: connecting (%s)", self._where, account.security)
        try:
            with _translated(self._where):
                client = self._connect_client(context)
        except MailboxError as exc:
            # imaplib reports a greeting other than OK (a busy server's BYE, say) as a plain error.
            raise ConnectionLost(f"{self._where}: the server refused the session: {exc}") from exc
        imap = _Guarded(client, self._where)
        self._imap = imap
        try:
            client.normalise_times = False
            if account.security == "starttls":
                if not imap.has_capability("STARTTLS"):
                    raise ConnectError(
                        f"{self._where}: the server does not offer STARTTLS; refusing to send the password "
                        "unencrypted (use security: tls if it offers implicit TLS on another port)"
                    )
                try:
                    imap.starttls(context)
                except MailboxError as exc:
                    raise ConnectError(f"{self._where}: the server would not start TLS ({exc})") from exc
            if account.auth == "xoauth2":
                if not imap.has_capability("AUTH=XOAUTH2"):
                    raise AuthError(f"{self._where}: the server does not offer AUTH=XOAUTH2 (auth: xoauth2)")
                imap.oauth2_login(account.username, password)
            elif imap.has_capability("AUTH=PLAIN"):
                imap.plain_login(account.username, password)
            elif not (account.username.isascii() and password.isascii()):
                # LOGIN carries ASCII only (RFC 9051 section 6.2.3 needs a literal and UTF8=ACCEPT for more).
                raise AuthError(
                    f"{self._where}: the username or password has non-ASCII characters and the server does "
                    "not offer AUTH=PLAIN, the only login here that can carry them"
                )
            else:
                imap.login(account.username, password)
            self._capabilities = frozenset(_text(cap).upper() for cap in imap.capabilities())
        except BaseException:
            self.close()
            raise
        log.info(
            "%s: logged in as %s; %s",
            self._where,
            account.username,
            ", ".join(f"{cap} {'yes' if cap in self._capabilities else 'no'}" for cap in ("MOVE", "UIDPLUS", "IDLE")),
        )
        log.debug("%s: capabilities %s", self._where, " ".join(sorted(self._capabilities)))

    def _connect_client(self, ssl_context: ssl.SSLContext | None) -> IMAPClient:
        """The one place a connection is made, as imapclient's own ``_create_IMAP4`` is.

        Another transport (a proxy, a test double) replaces this method and
        nothing else; the socket timeout applies to connecting and to every read.
        """
        return IMAPClient(
            self.account.host,
            port=self.account.port,
            ssl=self.account.security == "tls",
            ssl_context=ssl_context,
            timeout=self.account.timeout,
        )

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        if self.account.ca_file is not None:
            try:
                context.load_verify_locations(cafile=str(self.account.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise ConnectError(
                    f"{self._where}: ca_file {str(self.account.ca_file)!r} cannot be loaded as a PEM CA "
                    f"certificate: {exc}"
                ) from exc
        return context

    def close(self) -> None:
        """Log out if possible; never raises."""
        imap, self._imap = self._imap, None
        self._forget_selection()
        if imap is not None:
            imap.close_quietly()

    def capabilities(self) -> frozenset[str]:
        return self._capabilities

    def interrupt(self) -> None:
        """From another thread: shut the socket down, so that a read blocked on a silent server returns.

        The session is lost (the blocked call raises ConnectionLost); used
        only when the daemon is stopping. Never raises.
        """
        imap = self._imap
        if imap is None:
            return
        with suppress(Exception):
            imap._client.socket().shutdown(socket.SHUT_RDWR)

    @property
    def _session(self) -> _Guarded:
        if self._imap is None:
            raise ConnectionLost(f"{self._where}: not connected")
        return self._imap

    def select(self, folder: str) -> MailboxStatus:
        """SELECT ``folder`` read-write (RFC 9051 section 6.3.2).

        UIDVALIDITY and UIDNEXT are required in the response (RFC 9051
        section 7.1; RFC 3501 section 6.3.1 too); a server that leaves them
        out cannot be used safely, since UIDs would then mean nothing.
        """
        response = self._session.select_folder(folder)
        self._announced_new_mail()  # the SELECT's own EXISTS is the count every later SEARCH sees
        status = self._status_of("SELECT", folder, response)
        self._selected = folder
        self._uidvalidity = status.uidvalidity
        self._uidnext, self._exists = status.uidnext, status.exists
        self._permanent_flags = frozenset(_text(flag) for flag in response.get(b"PERMANENTFLAGS", ()))
        log.debug("%s: selected %s %s", self._where, folder, status)
        return status

    def _status_of(self, command: str, folder: str, response: dict[bytes, Any]) -> MailboxStatus:
        try:
            return MailboxStatus(
                uidvalidity=int(response[b"UIDVALIDITY"]),
                uidnext=int(response[b"UIDNEXT"]),
                exists=int(response[b"EXISTS"]),
            )
        except KeyError as exc:
            raise MailboxError(f"{self._where}: {command} {folder!r} returned no {exc.args[0].decode()}") from None

    def examine(self, folder: str) -> MailboxStatus:
        """EXAMINE ``folder`` for reading alone (``search_uids`` and ``fetch``); see ``_examine``."""
        status = self._examine(folder)
        self._uidvalidity = status.uidvalidity  # what fetched messages carry
        return status

    def _examine(self, folder: str) -> MailboxStatus:
        """EXAMINE ``folder``: select it read-only (RFC 9051 section 6.3.3), so no flag in it changes.

        The folder selected before is deselected, also when EXAMINE fails
        (RFC 9051 section 6.3.2). A folder that LIST does not show raises
        ``FolderError``; one that exists but will not open, ``MailboxError``.
        """
        imap = self._session
        self._forget_selection()
        try:
            response = imap.select_folder(folder, readonly=True)
        except MailboxError as exc:
            if self.folder_exists(folder):
                raise
            raise FolderError(f"{self._where}: folder {folder!r} does not exist") from exc
        status = self._status_of("EXAMINE", folder, response)
        self._uidnext, self._exists = status.uidnext, status.exists
        return status

    def _leave_examined(self) -> None:
        """Close the folder EXAMINEd for a lookup, with UNSELECT (RFC 3691) where the server has it.

        A caller that forgets to select its own folder again then gets an
        error from the server, rather than another folder's messages.
        """
        if "UNSELECT" in self._capabilities:
            self._session.unselect_folder()

    def _forget_selection(self) -> None:
        self._selected = None
        self._uidvalidity = 0
        self._uidnext = self._exists = 0
        self._permanent_flags = frozenset()

    def search_uids(self, first_uid: int = 1) -> list[int]:
        """UIDs >= ``first_uid`` in the selected folder, ascending.

        The reply to one SEARCH is one line, and a folder of a few hundred
        thousand messages would make that line longer than imaplib accepts.
        A folder that held at most _SEARCH_WINDOW messages when it was
        opened gets one SEARCH, whatever its UIDs; a bigger one is searched
        in windows of about _SEARCH_WINDOW messages each, between the UIDs
        of every _SEARCH_WINDOW-th message (``_window_ends``), so that
        sparse UIDs cost no more SEARCHes than dense ones. Either way a
        last, open window ``UID n:*`` finds what arrived since. The windows
        are ranges of UIDs, which no expunge can shift: together they cover
        every UID from ``first_uid`` up. ``UID n:*`` also matches the highest
        UID when ``n`` is above it (RFC 9051 section 6.4.4: ``*`` is the
        largest UID in use, and ``n:m`` is the same as ``m:n``), so the
        result is filtered.
        """
        self._announced_new_mail()  # what came before this SEARCH, the SEARCH sees
        low = max(first_uid, 1)
        found: set[int] = set()
        for high in self._window_ends(low):
            found.update(self._session.search(["UID", f"{low}:{high}"]))
            low = high + 1
        found.update(self._session.search(["UID", f"{low}:*"]))
        return sorted(uid for uid in found if uid >= first_uid)

    def _window_ends(self, low: int) -> list[int]:
        """The last UID of each closed search window from ``low`` on; none for a folder of one window.

        One SEARCH by message sequence numbers (RFC 9051 section 6.4.4)
        returns the UIDs of messages _SEARCH_WINDOW, 2 x _SEARCH_WINDOW ...
        as the folder was when opened. A server that refuses a number past
        its messages (the folder shrank since) gets windows of
        _SEARCH_WINDOW UIDs instead, up to the UIDNEXT it had then.
        """
        if self._exists <= _SEARCH_WINDOW:
            return []
        positions = ",".join(str(n) for n in range(_SEARCH_WINDOW, self._exists, _SEARCH_WINDOW))
        try:
            ends = self._session.search([positions])
        except MailboxError:
            ends = range(low + _SEARCH_WINDOW - 1, self._uidnext - 1, _SEARCH_WINDOW)
        return sorted(uid for uid in ends if uid >= low)

    def _announced_new_mail(self) -> bool:
        """Whether an EXISTS or RECENT came in the reply to an earlier command; forgets it.

        The server tells of a new message once, in the reply to whatever
        command runs next: if that is the pass's last SEARCH and the message
        arrived just after the search was made, the SEARCH misses it and IDLE
        is never told. imaplib keeps such untagged replies aside
        (``untagged_responses``), where imapclient does not look; this reads
        and clears them, so that ``search_uids`` starts afresh and
        ``wait_for_change`` knows there is mail the pass has not seen.
        """
        kept = getattr(getattr(getattr(self._imap, "_client", None), "_imap", None), "untagged_responses", None)
        if not isinstance(kept, dict):
            return False
        popped = [kept.pop(key, None) for key in ("EXISTS", "RECENT")]  # both, never only the first
        return any(popped)

    def fingerprints(self, uids: Sequence[int]) -> dict[int, Fingerprint]:
        """Size, INTERNALDATE and Message-ID of each UID, without touching \\Seen (BODY.PEEK)."""
        found: dict[int, Fingerprint] = {}
        items = ["RFC822.SIZE", "INTERNALDATE", _IDENTITY_ITEM]
        for chunk in _chunks(sorted(set(uids)), _FINGERPRINT_CHUNK):
            for uid, data in self._session.fetch(chunk, items).items():
                found[uid] = Fingerprint(
                    message_id=message_id_of(_header_block(data)),
                    size=int(data.get(b"RFC822.SIZE", 0)),
                    internaldate=_datetime(data.get(b"INTERNALDATE")),
                )
        return found

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[RawMessage]:
        """The first ``max_bytes`` of each message, in UID order.

        A partial fetch, ``BODY.PEEK[]<0.max_bytes>`` (RFC 9051 section
        6.4.5): the server sends at most that much, and PEEK leaves \\Seen
        unset. UIDs expunged meanwhile are left out.
        """
        messages: list[RawMessage] = []
        # The Message-ID and Date come from their own header item, as in ``fingerprints``: cut
        # at ``max_bytes``, a long header would lose them, and copies would no longer agree.
        items = ["FLAGS", "RFC822.SIZE", "INTERNALDATE", f"BODY.PEEK[]<0.{max_bytes}>", _IDENTITY_ITEM]
        for chunk in _chunks(sorted(set(uids)), _FETCH_CHUNK):
            response = self._session.fetch(chunk, items)
            for uid in chunk:
                data = response.get(uid)
                if data is None:
                    continue
                body = data.get(b"BODY[]<0>") or b""
                identity = _header_block(data)
                size = int(data.get(b"RFC822.SIZE", len(body)))
                messages.append(
                    RawMessage(
                        uid=uid,
                        uidvalidity=self._uidvalidity,
                        flags=tuple(_text(flag) for flag in data.get(b"FLAGS", ())),
                        size=size,
                        internaldate=_datetime(data.get(b"INTERNALDATE")),
                        data=body,
                        truncated=size > len(body),
                        message_id=message_id_of(identity),
                        dated=header_date(header_fields(identity)),
                    )
                )
        return messages

    def contains(
        self, folder: str, fingerprint: Fingerprint, original: int | None = None, since: TargetMark | None = None
    ) -> bool:
        """Whether ``folder`` holds a message with this fingerprint.

        Used after a crash between COPY and EXPUNGE, to tell a message that
        already reached its folder from one that did not. A session has one
        selected folder (RFC 9051 section 6.3.2), so this EXAMINEs ``folder``
        (read-only, changes nothing there) and then SELECTs the previously
        selected folder again. Should that folder's UIDVALIDITY have changed
        in between, the UIDs the caller holds mean nothing any more:
        ``ConnectionLost`` is raised so that the caller starts over.

        Candidates are found with SEARCH HEADER Message-ID (or, for a message
        without one, or one whose Message-ID that search does not find, by
        exact size via LARGER/SMALLER, RFC 9051 section 6.4.4) and then
        compared on Message-ID, size and INTERNALDATE, which COPY and MOVE
        preserve.

        With ``original``, a UID of the selected folder, a candidate must
        also have that message's exact bytes (compared by SHA-256, read in
        partial fetches): the answer then decides whether the original may
        be expunged, and two messages can share a fingerprint (no
        Message-ID, same size, same second), so the fingerprint alone
        must not decide it.

        With ``since``, the folder as it stood before an interrupted COPY,
        only a candidate with a UID at or above its UIDNEXT counts: one
        below was there before the COPY. Under another UIDVALIDITY no UID
        can be placed, and nothing counts.
        """
        if not self.folder_exists(folder):
            return False
        digest = None if original is None else self._digest(original, fingerprint.size)
        if original is not None and digest is None:
            return False
        previous, previous_uidvalidity = self._selected, self._uidvalidity
        try:
            try:
                status = self._examine(folder)
            except MailboxError as exc:  # the folder is there (LIST says so) but will not open
                raise TargetUnavailable(str(exc)) from exc
            found = self._holds(status, fingerprint, digest, since)
        finally:
            if previous is not None:
                status = self.select(previous)
                if status.uidvalidity != previous_uidvalidity:
                    raise ConnectionLost(
                        f"{self._where}: UIDVALIDITY of {previous} changed from {previous_uidvalidity} to "
                        f"{status.uidvalidity}; starting over"
                    )
            else:
                self._leave_examined()
        log.debug(  # the Message-ID is the sender's text: the log names it by its hash
            "%s: %s %s the message of size %d, Message-ID hash %s",
            self._where,
            folder,
            "holds" if found else "lacks",
            fingerprint.size,
            message_id_hash(fingerprint.message_id)[:12] if fingerprint.message_id else "-",
        )
        return found

    def _holds(
        self, status: MailboxStatus, fingerprint: Fingerprint, digest: str | None, since: TargetMark | None
    ) -> bool:
        """The lookup of ``contains`` in the folder just EXAMINEd, whose status is ``status``."""
        if since is not None and status.uidvalidity != since.uidvalidity:
            return False  # no UID of this folder can be placed against the mark

        def alike(candidates: Sequence[int]) -> list[int]:
            if since is not None:
                candidates = [uid for uid in candidates if uid >= since.uidnext]
            return [uid for uid, other in self.fingerprints(candidates).items() if _same(fingerprint, other)]

        found_by_id = alike(self._search_message_id(fingerprint.message_id)) if fingerprint.message_id else []
        # Also by size for a Message-ID the server's search cannot match: Dovecot decodes RFC 2047 encoded
        # words in it before comparing, so the raw text is never found.
        size = fingerprint.size
        same = found_by_id or alike(self._session.search(["LARGER", max(size - 1, 0), "SMALLER", size + 1]))
        return any(digest is None or self._digest(uid, fingerprint.size) == digest for uid in same)

    def _digest(self, uid: int, size: int) -> str | None:
        """SHA-256 of the whole message ``uid`` of the selected folder, or None once it is gone.

        Read in partial fetches of _DIGEST_CHUNK bytes (BODY.PEEK[]<offset.n>,
        RFC 9051 section 6.4.5), so a large message never sits in memory
        whole, and \\Seen is left as it is.
        """
        digest = hashlib.sha256()
        offset = 0
        while offset <= size:  # a server that ignores the partial range cannot keep this going
            data = self._session.fetch([uid], [f"BODY.PEEK[]<{offset}.{_DIGEST_CHUNK}>"]).get(uid)
            if data is None:
                return None
            part = next((value for key, value in data.items() if key.upper().startswith(b"BODY[]")), None)
            if not isinstance(part, bytes):
                return None if offset == 0 and size else digest.hexdigest()
            digest.update(part)
            offset += len(part)
            if len(part) < _DIGEST_CHUNK:
                return digest.hexdigest()
        return None

    def _search_message_id(self, message_id: str) -> list[int]:
        """UIDs in the selected folder whose Message-ID header contains ``message_id``, or a part of it.

        SEARCH HEADER matches substrings (RFC 9051 section 6.4.4), so these
        are only candidates: callers compare the header itself. The value is
        always sent as a quoted string: imapclient leaves a value bare unless
        it holds a space or a quote, and a sender's Message-ID may hold
        parentheses or braces, which would break the command (and so every
        recovery after it). What a quoted string cannot carry (8-bit text,
        control characters) is left out by searching for the longest part
        without it; with no such part, every message is a candidate. A
        server may still find nothing (Dovecot decodes encoded words
        first): ``contains`` then searches by size.
        """
        searchable = max(_QUOTABLE_RUN.findall(message_id), key=len, default="")
        if not searchable:
            return list(self._session.search(["ALL"]))
        quoted = searchable.replace("\\", "\\\\").replace('"', '\\"')
        # Criteria given as one string are sent as they are, so the quotes stay.
        return list(self._session.search(f'HEADER Message-ID "{quoted}"'.encode("ascii")))

    def find_sent_folder(self) -> str | None:
        """The folder LIST marks \\Sent (RFC 6154 section 2), or None when there is none.

        With SPECIAL-USE advertised, the SPECIAL-USE selection option of the
        extended LIST (RFC 6154, RFC 5258) asks for the special-use folders
        alone; a server that refuses it, or does not advertise SPECIAL-USE,
        gets a plain LIST, whose attributes many servers (Dovecot among
        them) fill in too. No folder is ever taken for the sent folder
        because of its name: a server that marks none leaves the choice to
        the ``sent`` setting. When several are marked, the first listed wins.
        """
        imap = self._session
        folders: list[tuple[tuple[bytes, ...], Any, Any]] | None = None
        if "SPECIAL-USE" in self._capabilities:
            try:
                # imapclient has no call for LIST selection options; these two are how it sends and
                # parses its own extension commands.
                lines = imap._raw_command_untagged(b"LIST", [b"(SPECIAL-USE)", b'""', b'"*"'], uid=False)
                folders = imap._proc_folder_list(lines)
            except MailboxError as exc:
                log.debug("%s: LIST (SPECIAL-USE) refused (%s); using a plain LIST", self._where, exc)
        if folders is None:
            folders = imap.list_folders()
        marked = [_text(name) for flags, _, name in folders if _is_sent(flags)]
        if not marked:
            log.info("%s: no folder has the \\Sent attribute", self._where)
            return None
        others = f" (also marked: {', '.join(marked[1:])})" if len(marked) > 1 else ""
        log.info("%s: sent folder is %s, marked \\Sent by the server%s", self._where, marked[0], others)
        return marked[0]

    def read_sent(self, folder: str, first_uid: int, limit: int = 5000) -> tuple[int, list[SentMessage], int]:
        """(UIDVALIDITY, messages, next_uid): up to ``limit`` messages of ``folder`` with UID >= ``first_uid``.

        The folder is EXAMINEd, and only RFC822.SIZE, INTERNALDATE and
        BODY.PEEK[HEADER.FIELDS (DATE TO CC BCC MESSAGE-ID)] are fetched
        (RFC 9051 sections 6.3.3 and 6.4.5), in chunks: no body is read and
        no flag changes. ``next_uid`` is the UID after the last message
        read when ``limit`` cut the list short; else it is the folder's
        UIDNEXT (or past a UID that arrived meanwhile), so UIDs of messages
        expunged before this read are never searched again. A new
        UIDVALIDITY makes every UID held by the caller void (RFC 9051
        section 2.3.1.1); the caller then starts again from 1.

        Afterwards *no* folder is selected: the caller must ``select`` its
        watched folder again before fetching, moving or waiting in IDLE.
        A missing folder raises ``FolderError``, naming it.
        """
        if limit < 1:
            raise ValueError(f"limit must be at least 1, not {limit}")
        status = self._examine(folder)
        uids = self.search_uids(first_uid)
        batch = uids[:limit]
        messages: list[SentMessage] = []
        for chunk in _chunks(batch, _FINGERPRINT_CHUNK):
            response = self._session.fetch(chunk, _SENT_ITEMS)
            for uid in chunk:
                data = response.get(uid)
                if data is None:
                    continue
                size = int(data.get(b"RFC822.SIZE", 0))
                messages.append(sent_message_of(uid, _header_block(data), size, _datetime(data.get(b"INTERNALDATE"))))
        self._leave_examined()
        after_last = batch[-1] + 1 if batch else 1
        next_uid = after_last if len(uids) > limit else max(first_uid, status.uidnext, after_last)
        log.info(
            "%s: read %d sent messages from %s (UIDVALIDITY %d, UIDs %d to %d)",
            self._where,
            len(messages),
            folder,
            status.uidvalidity,
            first_uid,
            next_uid - 1,
        )
        return status.uidvalidity, messages, next_uid

    def append(self, folder: str, data: bytes, keywords: Sequence[str] = ()) -> None:
        """APPEND ``data`` to ``folder`` with ``keywords`` as its flags (RFC 9051 section 6.3.12).

        The folder is created (and subscribed to) first when missing, so
        the owner's mail client shows it. The keywords are passed as they
        are: the folder's PERMANENTFLAGS are not known without selecting
        it, and APPEND only says the flags SHOULD be set, so a server that
        will not keep a keyword may drop it but still stores the message.
        """
        self.ensure_folder(folder)
        self._session.append(folder, data, flags=list(keywords))
        log.info(
            "%s: appended a message of %d bytes to %s%s",
            self._where,
            len(data),
            folder,
            f" with {' '.join(keywords)}" if keywords else "",
        )

    def has_message_id(self, folder: str, message_id: str) -> bool:
        """Whether ``folder`` holds a message whose Message-ID header is exactly ``message_id``.

        SEARCH HEADER in the EXAMINEd folder finds candidates, whose headers
        are then compared whole, since SEARCH matches substrings. False when
        ``folder`` does not exist. Afterwards *no* folder is selected, as
        after ``read_sent``.
        """
        wanted = message_id.strip()
        if not wanted:
            raise ValueError("an empty Message-ID identifies no message")
        try:
            self._examine(folder)
        except FolderError:
            return False
        candidates = self._search_message_id(wanted)
        found = any(fp.message_id == wanted for fp in self.fingerprints(candidates).values())
        self._leave_examined()
        log.debug("%s: %s %s %s", self._where, folder, "holds" if found else "lacks", wanted)
        return found

    def ensure_folder(self, folder: str) -> None:
        """CREATE ``folder`` if missing (RFC 9051 section 6.3.4), then SUBSCRIBE to it.

        Another client may create it between the LIST and the CREATE; a
        refused CREATE is only an error if the folder is still missing.
        """
        imap = self._session
        if not self.folder_exists(folder):
            try:
                imap.create_folder(folder)
                log.info("%s: created folder %s", self._where, folder)
            except MailboxError as exc:
                if not self.folder_exists(folder):
                    hint = self.separator_hint(folder)
                    raise MailboxError(f"{exc}; {hint}" if hint else str(exc)) from exc
        imap.subscribe_folder(folder)

    def separator_hint(self, folder: str) -> str | None:
        """Advice when ``folder`` is written with '/' and this server separates folders with another character.

        The server's separator is what LIST "" "" answers (RFC 9051 section
        6.3.9); folder names in the configuration are the server's own.
        """
        if "/" not in folder:
            return None
        listed = self._session.list_folders("", "")
        separator = next((_text(delimiter) for _, delimiter, _ in listed if delimiter), None)
        if separator is None or separator == "/":
            return None
        return (
            f"this server separates folders with {separator!r}: write {folder.replace('/', separator)!r} for {folder!r}"
        )

    def folder_exists(self, folder: str) -> bool:
        """Whether LIST shows ``folder`` as a folder that can hold mail."""
        return any(name == folder and _selectable(flags) for flags, _, name in self._session.list_folders("", folder))

    def move(
        self,
        uids: Sequence[int],
        folder: str,
        copied: Callable[[], None] | None = None,
        copying: Callable[[TargetMark], None] | None = None,
    ) -> None:
        """Move exactly these UIDs of the selected folder to ``folder``.

        * MOVE advertised: UID MOVE (RFC 6851 section 3.2).
        * UIDPLUS advertised: UID COPY, then STORE +FLAGS.SILENT (\\Deleted),
          then UID EXPUNGE of exactly those UIDs (RFC 4315 section 2.1), so
          messages the owner had marked \\Deleted stay.
        * Neither: UID COPY and \\Deleted only (see ``remove_copied``).

        A failed COPY raises before anything is flagged. ``copying`` is
        called just before the MOVE or COPY with the target's UIDVALIDITY
        and UIDNEXT from STATUS (RFC 9051 section 6.3.11), so that a message
        the command put there can be told from one that was there before
        even when its answer never arrives; ``copied`` is called after a
        confirmed COPY, before the originals are flagged.
        """
        if not uids:
            return
        imap = self._session
        uid_set = uid_set_of(uids)
        if copying is not None:
            copying(self._mark_of(folder))
        if "MOVE" in self._capabilities:
            imap.move(uid_set, folder)
            log.info("%s: moved UIDs %s to %s (MOVE)", self._where, uid_set, folder)
            return
        imap.copy(uid_set, folder)
        log.info("%s: copied UIDs %s to %s", self._where, uid_set, folder)
        if copied is not None:
            copied()
        self.remove_copied(uids)

    def _mark_of(self, folder: str) -> TargetMark:
        """``folder``'s UIDVALIDITY and UIDNEXT, by STATUS: the selected folder stays selected."""
        response = self._session.folder_status(folder, [b"UIDVALIDITY", b"UIDNEXT"])
        try:
            return TargetMark(int(response[b"UIDVALIDITY"]), int(response[b"UIDNEXT"]))
        except (KeyError, TypeError, ValueError) as exc:
            raise MailboxError(f"{self._where}: STATUS of {folder!r} lacks UIDVALIDITY or UIDNEXT") from exc

    def remove_copied(self, uids: Sequence[int]) -> None:
        """Remove exactly these UIDs, whose copies are already in their target folder.

        STORE +FLAGS.SILENT (\\Deleted), then UID EXPUNGE of the same UIDs
        (RFC 4315 section 2.1): other messages marked \\Deleted stay. Without
        UIDPLUS there is no way to expunge some messages and not others, so
        they stay marked until the owner's client expunges; a warning says so
        once per session.
        """
        if not uids:
            return
        imap = self._session
        uid_set = uid_set_of(uids)
        imap.add_flags(uid_set, [_DELETED], silent=True)
        if "UIDPLUS" in self._capabilities:
            imap.uid_expunge(uid_set)
            log.info("%s: expunged UIDs %s from %s", self._where, uid_set, self._selected)
            return
        if not self._warned_no_uidplus:
            log.warning(
                "%s: the server has neither MOVE nor UIDPLUS; moved messages stay in %s marked \\Deleted "
                "until your mail client expunges them",
                self._where,
                self._selected,
            )
            self._warned_no_uidplus = True
        log.info("%s: marked UIDs %s in %s \\Deleted", self._where, uid_set, self._selected)

    def add_keywords(self, uids: Sequence[int], keywords: Sequence[str]) -> None:
        """STORE +FLAGS.SILENT the keywords the folder accepts (RFC 9051 section 6.4.6).

        A server lists ``\\*`` in PERMANENTFLAGS when it accepts new keywords
        (RFC 9051 section 7.1); keywords it would not keep are skipped with a
        warning rather than failing the run.
        """
        if not uids or not keywords:
            return
        if "\\*" in self._permanent_flags:
            allowed = list(keywords)
        else:
            allowed = [keyword for keyword in keywords if keyword in self._permanent_flags]
        skipped = [keyword for keyword in keywords if keyword not in allowed]
        if skipped:
            log.warning(
                "%s: %s does not keep new keywords (PERMANENTFLAGS %s); not adding %s",
                self._where,
                self._selected,
                " ".join(sorted(self._permanent_flags)),
                " ".join(skipped),
            )
        if allowed:
            uid_set = uid_set_of(uids)
            self._session.add_flags(uid_set, allowed, silent=True)
            log.info("%s: added %s to UIDs %s", self._where, " ".join(allowed), uid_set)

    def _start_idle(self) -> bool:
        """Send IDLE and read up to the server's go-ahead; False if the server refused it.

        imapclient's ``idle`` takes any reply but the go-ahead for an error.
        Yet a server may first send untagged responses (imaplib keeps them
        aside, where ``_announced_new_mail`` finds new mail among them), and
        one that advertises IDLE may still answer it NO or BAD. A refusal
        leaves the session usable: the rest of this session polls, with a
        warning, rather than reconnecting after every pass.
        """
        client = self._session._client
        with _translated(self._where):
            tag = client._imap._command("IDLE")
            while client._imap._get_response() is not None:
                answer = client._imap.tagged_commands.get(tag)
                if answer:
                    del client._imap.tagged_commands[tag]
                    self._idle_refused = True
                    kind, data = answer
                    said = b" ".join(part for part in data if isinstance(part, bytes)).decode("ascii", "replace")
                    log.warning(
                        "%s: the server refused IDLE (%s %s); polling every %g s until the next connection",
                        self._where,
                        kind,
                        said[:200],
                        self._poll_interval,
                    )
                    return False
            client._idle_tag = tag
        return True

    @staticmethod
    def _sleep(until: float, should_stop: Callable[[], bool]) -> bool:
        """Sleep until the monotonic time ``until`` or ``should_stop()``, in steps; False (no change seen)."""
        while not should_stop() and (remaining := until - time.monotonic()) > 0:
            time.sleep(min(_IDLE_STEP, remaining))
        return False

    def _read_ahead(self, deadline: float | None = None) -> tuple[list[Any], bool]:
        """The response lines the server has begun to send, parsed, and whether the socket showed its end.

        Returns at once when there are none. The end is b"" from a plain
        socket, which is also what one with nothing to read gives: it means
        the end only once the socket was found readable.

        imaplib reads the socket through a buffer, and TLS decrypts whole
        records, so a line the server wrote together with the one imaplib
        asked for (an EXISTS right behind "+ idling") waits in a buffer
        where polling the socket never looks: IDLE would not learn of that
        message until the server next wrote something, a keepalive minutes
        later. What is buffered is looked at without waiting; a line that
        has begun is read to its end as imaplib reads any reply, so a line
        that comes in pieces is never cut, within the session's timeout or
        until ``deadline`` (a monotonic time, at least a second away): a
        line that stops half-way past that means a session gone wrong, and
        ``ConnectionLost`` is raised, as for a reply IDLE cannot read (a
        literal, a tagged line).
        """
        client = self._session._client
        reader = getattr(getattr(client, "_imap", None), "file", None)
        if not hasattr(reader, "peek"):
            return [], False
        responses: list[Any] = []
        with _translated(self._where):
            sock = client.socket()
            while True:
                sock.setblocking(False)
                try:
                    begun = _peek(reader)
                finally:
                    sock.setblocking(True)
                    client._set_read_timeout()
                if not begun:
                    return responses, begun is not None
                if deadline is not None:
                    sock.settimeout(min(self.account.timeout, max(deadline - time.monotonic(), 1.0)))
                try:
                    line = client._imap._get_line()
                finally:
                    client._set_read_timeout()
                try:
                    responses.append(_parse_untagged_response(line))
                except Exception as exc:  # a literal or a tagged line: the session's state is no longer known
                    raise ConnectionLost(f"{self._where}: a reply IDLE cannot read ({exc})", by_server=True) from exc

    def _readable(self, timeout: float) -> bool:
        """Whether the socket has something to read (TLS's own buffer included) within ``timeout`` seconds."""
        with _translated(self._where):
            sock = self._session._client.socket()
            if isinstance(sock, ssl.SSLSocket) and sock.pending():
                return True
            poller = select.poll()
            poller.register(sock.fileno(), select.POLLIN | select.POLLPRI)
            return bool(poller.poll(max(timeout, 0.0) * 1000))

    def wait_for_change(self, timeout: float, should_stop: Callable[[], bool]) -> bool:
        """Wait in IDLE (RFC 2177) until the selected folder changes, ``timeout`` passes or ``should_stop()``.

        IDLE is checked in steps of at most a second so that ``should_stop``
        is noticed; DONE always ends it before returning. RFC 2177 section 3
        asks clients to renew IDLE at least every 29 minutes; the caller
        passes ``timeout`` <= 600 s. A socket that is readable with nothing
        to read (not even part of a TLS record) has reached its end, so
        IDLE ends at once: DONE then finds out whether the connection is
        gone.
        Without IDLE (or with ``idle=False``) this only sleeps, for at most
        ``poll_interval``, and returns False; the caller polls.
        """
        deadline = time.monotonic() + timeout
        poll_until = min(deadline, time.monotonic() + self._poll_interval)
        if not (self._idle_enabled and "IDLE" in self._capabilities) or self._idle_refused:
            return self._sleep(poll_until, should_stop)
        imap = self._session
        if should_stop():
            return False
        if self._announced_new_mail():
            log.debug("%s: new mail announced since the last search; no IDLE", self._where)
            return True
        if not self._start_idle():
            return self._sleep(poll_until, should_stop)
        changed = self._announced_new_mail()  # announced before the server's "+ idling"
        try:
            while not changed and not should_stop() and (remaining := deadline - time.monotonic()) > 0:
                responses, _ = self._read_ahead(deadline)
                if not responses and self._readable(min(_IDLE_STEP, remaining)):
                    responses, at_end = self._read_ahead(deadline)
                    if not responses and at_end:
                        break  # readable, yet nothing came: the end of the connection, which DONE finds out
                changed = _reports_change(responses)
        except ConnectionLost:
            raise
        except BaseException:
            with suppress(ConnectionLost, PloyError):
                imap.idle_done()
            raise
        _, responses = imap.idle_done()
        changed = changed or _reports_change(responses)
        log.debug("%s: IDLE ended, %s", self._where, "change reported" if changed else "no change")
        return changed


class _Guarded:
    """An IMAPClient whose every method call translates failures into the filter's exceptions."""

    def __init__(self, client: IMAPClient, where: str) -> None:
        self._client = client
        self._where = where

    def __getattr__(self, name: str) -> Callable[..., Any]:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            with _translated(self._where):
                return method(*args, **kwargs)

        return call

    def close_quietly(self) -> None:
        """LOGOUT, or at least close the socket; for a session that may already be broken."""
        try:
            self._client.logout()
        except Exception:
            with suppress(Exception):
                self._client.shutdown()


@contextmanager
def _translated(where: str) -> Iterator[None]:
    """The single place where imapclient, imaplib, ssl and socket exceptions become the filter's.

    A login refused with [UNAVAILABLE] (RFC 5530 section 3) is temporary,
    and a login that failed because the connection broke is too: both are
    ``ConnectionLost``, not ``AuthError``. imaplib signals a folder that
    cannot be written with a subclass of its "abort"; that one will not be
    cured by reconnecting, so it is a ``MailboxError``.
    """
    try:
        yield
    except ssl.SSLCertVerificationError as exc:
        raise ConnectError(
            f"{where}: the server's TLS certificate failed verification ({exc.verify_message}); "
            "if it is signed by a private CA, set ca_file to that CA's certificate"
        ) from exc
    except LoginError as exc:
        cause = exc.__context__
        text = str(exc)
        if isinstance(cause, imaplib.IMAP4.abort | OSError | EOFError) or "[UNAVAILABLE]" in text:
            raise ConnectionLost(f"{where}: login interrupted: {text}") from exc
        raise AuthError(f"{where}: the server refused the login: {text}") from exc
    except imaplib.IMAP4.readonly as exc:
        raise MailboxError(f"{where}: the server allows only read access: {exc}") from exc
    except imaplib.IMAP4.abort as exc:
        # imaplib says "socket error" for an end of file or a cut line; any other abort is the server's word.
        # A server that is shutting down says so in its BYE: that is not about the command in flight either.
        text = str(exc)
        by_server = "socket error" not in text and "shutting down" not in text.lower()
        raise ConnectionLost(f"{where}: connection lost: {text}", by_server=by_server) from exc
    except imaplib.IMAP4.error as exc:
        raise MailboxError(f"{where}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise ConnectionLost(f"{where}: connection lost: {exc or type(exc).__name__}") from exc


def message_id_of(data: bytes) -> str:
    """The Message-ID header value in ``data`` (a header block or a whole message), stripped.

    Pure and total: "" when there is no such header, never an exception on
    malformed mail. The same function reads fetched messages and the
    HEADER.FIELDS of fingerprints, so both agree on the value.
    """
    for name, value in header_fields(data):
        if name == b"message-id":
            return value.decode("utf-8", "replace")
    return ""


def recipients_of(header: bytes) -> tuple[str, ...]:
    """The bare, lower-case addresses in the To, Cc and Bcc fields of ``header``, each once, in order.

    Pure and total: group names (RFC 5322 section 3.4) and empty groups
    add nothing, and an entry that is not ``local@domain`` is dropped, so a
    malformed field gives what can be read of it and never an exception.
    """
    return _recipients(header_fields(header))


def sent_message_of(uid: int, header: bytes, size: int, internaldate: datetime | None) -> SentMessage:
    """A SentMessage from one message's fetched header fields, size and INTERNALDATE; pure and total.

    The key is the fingerprint key the state uses for any message. The
    time is the Date field when it can be read (a date without a zone, or
    with -0000, is taken as UTC), else INTERNALDATE, else 0.0.
    """
    fields = header_fields(header)
    message_id = next((value.decode("utf-8", "replace") for name, value in fields if name == b"message-id"), "")
    when = header_date(fields)
    if when is None:
        when = internaldate.timestamp() if internaldate is not None else 0.0
    return SentMessage(
        uid=uid,
        key=fingerprint_key(Fingerprint(message_id, size, internaldate)),
        time=when,
        recipients=_recipients(fields),
    )


def _recipients(fields: Sequence[tuple[bytes, bytes]]) -> tuple[str, ...]:
    values = [value.decode("utf-8", "replace") for name, value in fields if name in _RECIPIENT_FIELDS]
    found: dict[str, None] = {}
    for _, address in email.utils.getaddresses(values):
        address = address.strip().lower()
        if _is_bare_address(address):
            found.setdefault(address, None)
    return tuple(found)


def _is_bare_address(address: str) -> bool:
    local, at, domain = address.rpartition("@")
    return bool(at and local and domain) and not any(c.isspace() or c in "<>" for c in address)


def _header_block(data: dict[bytes, Any]) -> bytes:
    """The BODY[HEADER.FIELDS (...)] literal of one FETCH response, whichever way the server spelled the key."""
    for key, value in data.items():
        if isinstance(key, bytes) and key.upper().startswith(b"BODY[HEADER.FIELDS") and isinstance(value, bytes):
            return value
    return b""


def uid_set_of(uids: Sequence[int]) -> str:
    """A compact UID set (RFC 9051 section 9, sequence-set): [1, 2, 3, 7] -> "1:3,7".

    Ranges cover only runs of consecutive UIDs that were all given, so the
    set names exactly these UIDs, never a neighbour.
    """
    ordered = sorted(set(uids))
    if not ordered:
        raise ValueError("an empty UID set is not valid IMAP")
    parts = []
    start = prev = ordered[0]
    for uid in [*ordered[1:], None]:
        if uid is not None and uid == prev + 1:
            prev = uid
            continue
        parts.append(str(start) if start == prev else f"{start}:{prev}")
        if uid is not None:
            start = prev = uid
    return ",".join(parts)


def _chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def _same(wanted: Fingerprint, other: Fingerprint) -> bool:
    if wanted.message_id != other.message_id or wanted.size != other.size:
        return False
    return wanted.internaldate is None or other.internaldate is None or wanted.internaldate == other.internaldate


def _peek(reader: Any) -> bytes | None:
    """What a buffered reader over a non-blocking socket holds, reading the socket at most once.

    b"" at the end of a plain socket (or with nothing there: the buffered
    reader does not tell the two apart), None while TLS has only part of a
    record.
    """
    try:
        return bytes(reader.peek(1))
    except (BlockingIOError, ssl.SSLWantReadError):
        return None


def _reports_change(responses: Sequence[Any]) -> bool:
    """Whether IDLE responses include EXISTS, RECENT, EXPUNGE or FETCH (RFC 2177 section 3)."""
    return any(
        isinstance(response, tuple)
        and len(response) >= 2
        and isinstance(response[1], bytes)
        and response[1].upper() in _CHANGE_RESPONSES
        for response in responses
    )


def _selectable(flags: Sequence[bytes | str]) -> bool:
    return not {_text(flag).lower() for flag in flags} & _UNSELECTABLE


def _is_sent(flags: Sequence[bytes | str]) -> bool:
    return _selectable(flags) and "\\sent" in {_text(flag).lower() for flag in flags}


def _datetime(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value
