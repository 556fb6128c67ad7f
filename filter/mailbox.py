"""The Mailbox protocol: what the runner needs from a mail store, and the values it returns.

The runner never sees a protocol library. It talks to a ``Mailbox`` (the
role); ``ImapMailbox`` in ``imap.py`` is the implementation for IMAP. Keeping
the seam this narrow is what lets the loop be read, and reasoned about for
crash safety, without knowing IMAP.
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol


class ConnectionLost(Exception):
    """A socket, TLS or protocol error: the session is gone; reconnect and resume.

    Raised by a Mailbox for every failure that a new connection may cure.
    Failures that a new connection will not cure (a refused login, a folder
    the server will not create) are ``PloyError`` subclasses instead.
    ``by_server`` is True when the server itself ended the session (a BYE,
    a reply that breaks the protocol), False for a network failure (end of
    file, reset, timeout), which says nothing of the command in flight.
    """

    def __init__(self, *args: object, by_server: bool = False) -> None:
        super().__init__(*args)
        self.by_server = by_server


class TokenUnavailable(ConnectionLost):
    """The command that prints an OAuth 2.0 access token failed: the daemon tries again, as for a server out of reach.

    Refreshing a token needs the network, which at boot may not be up yet.
    A one-off command reports it as an authentication failure.
    """


@dataclass(frozen=True)
class MailboxStatus:
    """What SELECT tells about a folder (RFC 9051 section 6.3.2)."""

    uidvalidity: int
    uidnext: int
    exists: int


@dataclass(frozen=True)
class TargetMark:
    """A folder as it stood just before a COPY into it (STATUS, RFC 9051 section 6.3.11).

    A copy made by that COPY has a UID at or above ``uidnext`` under this
    ``uidvalidity`` (UIDs only grow, RFC 9051 section 2.3.1.1), so a
    byte-identical message found there afterwards is the COPY's own, and one
    below it was there before.
    """

    uidvalidity: int
    uidnext: int


@dataclass(frozen=True)
class Fingerprint:
    """What identifies one message across folders and UIDVALIDITY epochs.

    UIDs change when a message is copied or when UIDVALIDITY changes; the
    Message-ID header, the size and the INTERNALDATE survive both (COPY and
    MOVE keep INTERNALDATE, RFC 9051 section 6.4.7). ``message_id`` is the raw
    header value, stripped, or "" when the message has none.
    """

    message_id: str
    size: int
    internaldate: datetime | None


@dataclass(frozen=True)
class RawMessage:
    """One message as fetched: the first ``max_bytes`` of it and its metadata.

    ``data`` may be shorter than ``size`` when the message was larger than the
    fetch cap (``truncated`` is then True). The classifier only needs the
    start of a message; the move acts on the server's copy, never on these
    bytes, so truncation can never lose mail.
    """

    uid: int
    uidvalidity: int
    flags: tuple[str, ...]
    size: int
    internaldate: datetime | None
    data: bytes
    truncated: bool
    message_id: str
    dated: float | None = None  # the Date header's time, read from the header itself, never from cut data


@dataclass(frozen=True)
class SentMessage:
    """One message of the owner's sent folder, as the sender ledger needs it: to whom, and when.

    Read from a few header fields, never the body. ``key`` is the message's
    fingerprint key (``state.fingerprint_key``: Message-ID and size, else
    size and INTERNALDATE), so a message read twice, after a UIDVALIDITY
    change or from a copy, is still one message. ``time`` is the Date header
    in epoch seconds, or INTERNALDATE when Date is missing or unreadable
    (0.0 when both are). ``recipients`` are the bare, lower-case addresses
    of To, Cc and Bcc, each once, in the order first met; group names and
    anything without a local part and a domain are left out.
    """

    uid: int
    key: str
    time: float
    recipients: tuple[str, ...]


class Mailbox(Protocol):
    """A connection to one account's mail store.

    Every method may raise ``ConnectionLost``; the runner then closes the
    mailbox, waits, calls ``connect()`` again and resumes from its state.
    """

    def connect(self) -> None:
        """Open the session and log in; raises AuthError or ConnectError when that is final."""

    def close(self) -> None:
        """Log out if possible; never raises."""

    def capabilities(self) -> frozenset[str]:
        """The server's capabilities, upper case (e.g. "MOVE", "UIDPLUS", "IDLE")."""

    def select(self, folder: str) -> MailboxStatus:
        """SELECT ``folder`` read-write and return its status."""

    def examine(self, folder: str) -> MailboxStatus:
        """EXAMINE ``folder``: open it read-only, so that no flag in it changes (\\Recent included).

        Raises FolderError when the folder does not exist. ``search_uids``
        and ``fetch`` then read it; nothing may be changed in it.
        """

    def search_uids(self, first_uid: int = 1) -> list[int]:
        """UIDs >= ``first_uid`` in the selected folder, ascending."""

    def fingerprints(self, uids: Sequence[int]) -> dict[int, Fingerprint]:
        """Fingerprints of the given UIDs of the selected folder (absent UIDs are left out)."""

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[RawMessage]:
        """The messages with these UIDs, each cut at ``max_bytes``; \\Seen is left untouched."""

    def contains(
        self, folder: str, fingerprint: Fingerprint, original: int | None = None, since: TargetMark | None = None
    ) -> bool:
        """Whether ``folder`` holds a message with this fingerprint (for crash recovery).

        With ``original`` (a UID of the selected folder), the message found
        must also have the same bytes as that one: only then may the
        original be removed. With ``since``, only a message that arrived
        after that mark counts (none when the folder's UIDVALIDITY changed).
        """

    def ensure_folder(self, folder: str) -> None:
        """CREATE ``folder`` when it does not exist yet, and subscribe to it."""

    def move(
        self,
        uids: Sequence[int],
        folder: str,
        copied: Callable[[], None] | None = None,
        copying: Callable[[TargetMark], None] | None = None,
    ) -> None:
        """Move these UIDs of the selected folder to ``folder``, deleting nothing else.

        ``copying`` is called with the target's mark just before the MOVE or
        COPY; a move made of COPY and then removal calls ``copied`` between
        the two, once the server has confirmed the COPY.
        """

    def remove_copied(self, uids: Sequence[int]) -> None:
        """Finish an interrupted COPY-based move: \\Deleted + UID EXPUNGE of exactly these UIDs.

        Called only for a move whose COPY the server confirmed, after
        ``contains`` found the copy in the target (RFC 4315 section 2.1).
        Without UIDPLUS the messages are only marked \\Deleted, never
        expunged with a bare EXPUNGE.
        """

    def add_keywords(self, uids: Sequence[int], keywords: Sequence[str]) -> None:
        """Add IMAP keywords (e.g. "$PloyArticle") to these UIDs."""

    def find_sent_folder(self) -> str | None:
        """The folder marked \\Sent (RFC 6154 section 2), or None when no folder is.

        Never a guess from folder names: an owner whose server marks no
        folder names it in the configuration instead.
        """

    def read_sent(self, folder: str, first_uid: int, limit: int = 5000) -> tuple[int, list[SentMessage], int]:
        """(UIDVALIDITY, messages, next_uid): up to ``limit`` messages of ``folder`` with UID >= ``first_uid``.

        Messages come in UID order; reading again from ``next_uid`` goes on
        where this call stopped. ``folder`` is opened read-only, so no flag
        changes; afterwards *no* folder is selected, and the caller must
        ``select`` its watched folder again before fetching or moving.
        Raises ``FolderError`` when ``folder`` does not exist.
        """

    def append(self, folder: str, data: bytes, keywords: Sequence[str] = ()) -> None:
        """Store the message ``data`` in ``folder`` with these keywords, creating the folder if missing."""

    def has_message_id(self, folder: str, message_id: str) -> bool:
        """Whether ``folder`` holds a message whose Message-ID header is ``message_id``.

        False when ``folder`` does not exist. Like ``read_sent``, this leaves
        no folder selected.
        """

    def wait_for_change(self, timeout: float, should_stop: Callable[[], bool]) -> bool:
        """Block until the selected folder changes, ``timeout`` passes or ``should_stop()``.

        Uses IDLE (RFC 2177) where the server has it, else sleeps. Must notice
        ``should_stop()`` within about a second. Returns True when the server
        reported a change.
        """


def header_fields(data: bytes) -> list[tuple[bytes, bytes]]:
    """(lower-case name, stripped value) of each field of the header in ``data``, unfolded, in order.

    ``data`` is a header block or a whole message; the body is not read.
    Lines without a colon are skipped. Pure and total.
    """
    head = re.split(rb"\r?\n\r?\n", data, maxsplit=1)[0]
    unfolded = re.sub(rb"\r?\n[ \t]+", b" ", head)
    fields = []
    for line in unfolded.splitlines():
        name, colon, value = line.partition(b":")
        if colon:
            fields.append((name.strip().lower(), value.strip()))
    return fields


def header_date(fields: Sequence[tuple[bytes, bytes]]) -> float | None:
    """The first Date field (RFC 5322 section 3.3) as epoch seconds; None when absent or unreadable.

    A date without a zone, or with -0000, is taken as UTC, so that a
    message's time never depends on the machine's time zone.
    """
    date = next((value for name, value in fields if name == b"date"), None)
    if date is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(date.decode("ascii", "replace"))
        return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).timestamp()
    except (TypeError, ValueError, OverflowError):
        return None
