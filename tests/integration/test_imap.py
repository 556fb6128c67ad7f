"""ImapMailbox against a real Dovecot on 127.0.0.1.

What the server ends up holding is checked with an independent client (the
LocalDovecot helpers, built on imaplib and doveadm); which commands were
sent is read from imapclient's own DEBUG log.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress

import pytest

from filter.dovecot import (
    CAPABILITIES_NO_IDLE,
    CAPABILITIES_NO_MOVE,
    CAPABILITIES_NO_MOVE_NO_UIDPLUS,
    DEFAULT_USER,
    LocalDovecot,
    unavailable_reason,
)
from filter.errors import AuthError, ConnectError, MailboxError
from filter.imap import ImapMailbox
from filter.mailbox import ConnectionLost, Fingerprint

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

USER = DEFAULT_USER
ARTICLES = "Networking/Articles"
Commands = Callable[[], list[str]]
OpenMailbox = Callable[..., ImapMailbox]
StartDovecot = Callable[..., LocalDovecot]


def mail(n: int, body: str = "Hello.", message_id: bool = True) -> bytes:
    header = f"From: sender{n}@example.org\r\nTo: owner@example.org\r\nSubject: note {n}\r\n"
    if message_id:
        header += f"Message-ID: <note-{n}@example.org>\r\n"
    return f"{header}\r\n{body}\r\n".encode()


def test_move_uses_uid_move_when_advertised(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    uid = dovecot.append(USER, "INBOX", mail(1))
    dovecot.append(USER, "INBOX", mail(2))
    mailbox = open_mailbox(dovecot)
    mailbox.ensure_folder(ARTICLES)
    mailbox.select("INBOX")

    mailbox.move([uid], ARTICLES)

    assert f'UID MOVE {uid} "{ARTICLES}"' in imap_commands()
    assert dovecot.messages(USER, ARTICLES) == [mail(1)]
    assert dovecot.messages(USER, "INBOX") == [mail(2)]


def test_move_without_move_copies_flags_and_expunges_exactly_those_uids(
    dovecot_factory: StartDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    first = server.append(USER, "INBOX", mail(1))
    already_deleted = server.append(USER, "INBOX", mail(2), flags=["\\Deleted"])
    second = server.append(USER, "INBOX", mail(3))
    kept = server.append(USER, "INBOX", mail(4))
    mailbox = open_mailbox(server)
    assert "MOVE" not in mailbox.capabilities() and "UIDPLUS" in mailbox.capabilities()
    mailbox.ensure_folder(ARTICLES)
    mailbox.select("INBOX")

    mailbox.move([first, second], ARTICLES)

    sent = imap_commands()
    uid_set = f"{first},{second}"
    assert f'UID COPY {uid_set} "{ARTICLES}"' in sent
    assert f"UID STORE {uid_set} +FLAGS.SILENT (\\Deleted)" in sent
    assert f"UID EXPUNGE {uid_set}" in sent
    assert "EXPUNGE" not in sent and not any("MOVE" in line for line in sent)
    assert sent.index(f'UID COPY {uid_set} "{ARTICLES}"') < sent.index(f"UID EXPUNGE {uid_set}")
    assert messages_by_uid(server, "INBOX") == {already_deleted: mail(2), kept: mail(4)}
    flags = flags_by_uid(server, "INBOX")
    assert "\\Deleted" in flags[already_deleted] and "\\Deleted" not in flags[kept]
    assert sorted(server.messages(USER, ARTICLES)) == [mail(1), mail(3)]


def test_move_without_move_or_uidplus_copies_and_leaves_the_original_marked_deleted(
    dovecot_factory: StartDovecot, open_mailbox: OpenMailbox, imap_commands: Commands, caplog: pytest.LogCaptureFixture
) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE_NO_UIDPLUS)
    uid = server.append(USER, "INBOX", mail(1))
    other = server.append(USER, "INBOX", mail(2))
    mailbox = open_mailbox(server)
    mailbox.ensure_folder(ARTICLES)
    mailbox.select("INBOX")

    with caplog.at_level(logging.WARNING, logger="filter.imap"):
        mailbox.move([uid], ARTICLES)
        mailbox.move([other], ARTICLES)

    assert not any("EXPUNGE" in line for line in imap_commands())
    assert server.messages(USER, ARTICLES) == [mail(1), mail(2)]
    assert server.uids(USER, "INBOX") == [uid, other]
    assert all("\\Deleted" in flags for flags in server.flags(USER, "INBOX"))
    assert len([r for r in caplog.records if "neither MOVE nor UIDPLUS" in r.getMessage()]) == 1


def test_failed_copy_flags_nothing(dovecot_factory: StartDovecot, open_mailbox: OpenMailbox) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    uid = server.append(USER, "INBOX", mail(1))
    mailbox = open_mailbox(server)
    mailbox.select("INBOX")

    with pytest.raises(MailboxError):
        mailbox.move([uid], "No/Such/Folder")

    assert "\\Deleted" not in flags_by_uid(server, "INBOX")[uid]


def test_fetch_leaves_seen_unset(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    uid = dovecot.append(USER, "INBOX", mail(1))
    mailbox = open_mailbox(dovecot)
    status = mailbox.select("INBOX")

    [message] = mailbox.fetch([uid], 1 << 20)

    assert message.data == mail(1)
    assert message.uid == uid and message.uidvalidity == status.uidvalidity
    assert message.message_id == "<note-1@example.org>"
    assert not message.truncated
    assert "\\Seen" not in dovecot.flags(USER, "INBOX")[0]


def test_fetch_caps_bytes_at_max_bytes_and_reports_truncation(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    big = mail(1, body="x" * 20000)
    small_uid = dovecot.append(USER, "INBOX", mail(2))
    big_uid = dovecot.append(USER, "INBOX", big)
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    small, large = mailbox.fetch([big_uid, small_uid], 4096)

    assert (small.uid, large.uid) == (small_uid, big_uid)
    assert large.data == big[:4096] and large.size == len(big) and large.truncated
    assert small.data == mail(2) and not small.truncated
    assert large.message_id == "<note-1@example.org>"


def test_fingerprints_read_message_id_size_and_date(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    with_id = dovecot.append(USER, "INBOX", mail(1))
    without_id = dovecot.append(USER, "INBOX", mail(2, message_id=False))
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    prints = mailbox.fingerprints([with_id, without_id, 999])

    assert set(prints) == {with_id, without_id}
    assert prints[with_id].message_id == "<note-1@example.org>"
    assert prints[with_id].size == len(mail(1))
    assert prints[without_id].message_id == ""
    assert prints[with_id].internaldate is not None


def test_implicit_tls_with_private_ca_file_works(dovecot_tls: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot_tls, security="tls")

    assert mailbox.select("INBOX").exists == 0
    assert f"Login: user=<{USER}>, method=PLAIN" in dovecot_tls.log_tail()
    assert ", TLS, session=" in dovecot_tls.log_tail()


def test_starttls_with_private_ca_file_works(dovecot_tls: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot_tls, security="starttls")

    assert mailbox.select("INBOX").exists == 0
    assert ", TLS, session=" in dovecot_tls.log_tail()


@pytest.mark.parametrize("security", ["tls", "starttls"])
def test_tls_without_ca_file_is_refused_with_connect_error(
    dovecot_tls: LocalDovecot, open_mailbox: OpenMailbox, security: str
) -> None:
    with pytest.raises(ConnectError, match="ca_file"):
        open_mailbox(dovecot_tls, security=security, ca_file=None)
    assert "Login: user=" not in dovecot_tls.log_tail()


def test_starttls_is_refused_when_the_server_does_not_offer_it(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    with pytest.raises(ConnectError, match="STARTTLS"):
        open_mailbox(dovecot, security="starttls")
    assert "Login: user=" not in dovecot.log_tail()


def test_wrong_password_raises_auth_error(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    with pytest.raises(AuthError, match="AUTHENTICATIONFAILED"):
        open_mailbox(dovecot, password="not the password")


def test_unreachable_server_raises_connection_lost(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    dovecot.stop()
    with pytest.raises(ConnectionLost):
        open_mailbox(dovecot)


def test_select_of_a_missing_folder_raises_mailbox_error(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot)
    with pytest.raises(MailboxError, match="No/Such"):
        mailbox.select("No/Such")


def _wait_while_mail_arrives(mailbox: ImapMailbox, dovecot: LocalDovecot, timeout: float) -> tuple[bool, float]:
    """``wait_for_change`` on the inbox while another connection appends a message half a second in.

    Returns what the wait returned and how long it took.
    """
    mailbox.select("INBOX")
    appender = threading.Timer(0.5, dovecot.append, (USER, "INBOX", mail(1)))
    appender.start()
    started = time.monotonic()
    try:
        changed = mailbox.wait_for_change(timeout, lambda: False)
    finally:
        appender.join()
    return changed, time.monotonic() - started


def test_idle_wakes_up_soon_after_an_append_from_another_connection(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    mailbox = open_mailbox(dovecot)

    changed, waited = _wait_while_mail_arrives(mailbox, dovecot, 30)

    assert changed
    assert waited < 5
    assert mailbox.search_uids() == dovecot.uids(USER, "INBOX")


def test_mail_announced_with_the_last_search_ends_the_wait_at_once(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    """A message that arrives while a SEARCH runs is announced in that SEARCH's reply, and never again in IDLE."""
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")
    assert mailbox.search_uids() == []
    uid = dovecot.append(USER, "INBOX", mail(1))
    assert mailbox.search_uids(uid + 1) == []  # the reply carries "* 1 EXISTS"; the SEARCH saw nothing new
    started = time.monotonic()

    assert mailbox.wait_for_change(8, lambda: False)

    assert time.monotonic() - started < 2
    assert mailbox.search_uids() == [uid]


class _RewritingRelay:
    """A TCP relay to a server that passes each chunk either way through a function, to play a server's quirks."""

    def __init__(
        self,
        host: str,
        port: int,
        to_server: Callable[[bytes], bytes] = lambda data: data,
        to_client: Callable[[bytes], bytes] = lambda data: data,
    ) -> None:
        self._listener = socket.create_server((host, 0))
        self.port = self._listener.getsockname()[1]
        self._upstream = (host, port)
        self._rewrite = (to_server, to_client)
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        client, _ = self._listener.accept()
        server = socket.create_connection(self._upstream)
        threading.Thread(target=self._pump, args=(client, server, self._rewrite[0]), daemon=True).start()
        threading.Thread(target=self._to_client, args=(server, client), daemon=True).start()

    def _to_client(self, server: socket.socket, client: socket.socket) -> None:
        self._pump(server, client, self._rewrite[1])

    @staticmethod
    def _pump(source: socket.socket, target: socket.socket, rewrite: Callable[[bytes], bytes]) -> None:
        with suppress(OSError):
            while data := source.recv(65536):
                target.sendall(rewrite(data))
            target.shutdown(socket.SHUT_WR)

    def close(self) -> None:
        self._listener.close()


class _JoiningRelay(_RewritingRelay):
    """A relay that sends the server's IDLE go-ahead only together with the next EXISTS.

    Once the client has sent IDLE, what the server writes is held until half
    a second after it includes an EXISTS (at most 20 s) and then written in
    one piece, so that the client reads "+ idling" and the announcement of
    new mail in a single read, as can happen by chance when mail arrives
    just as IDLE starts.
    """

    def __init__(self, host: str, port: int) -> None:
        self._idle_sent = threading.Event()
        self.joined = threading.Event()
        super().__init__(host, port, to_server=self._note_idle)

    def _note_idle(self, data: bytes) -> bytes:
        if b" IDLE\r\n" in data:
            self._idle_sent.set()
        return data

    def _to_client(self, server: socket.socket, client: socket.socket) -> None:
        held = b""
        deadline: float | None = None
        server.settimeout(0.1)
        with suppress(OSError):
            while (data := _received(server)) != b"":
                if not self._idle_sent.is_set() or self.joined.is_set():
                    client.sendall(data or b"")
                    continue
                held += data or b""
                if deadline is None:
                    deadline = time.monotonic() + 20
                if b"EXISTS" in held:
                    deadline = min(deadline, time.monotonic() + 0.5)  # and whatever comes with it (RECENT)
                if time.monotonic() >= deadline:
                    client.sendall(held)
                    self.joined.set()
            client.shutdown(socket.SHUT_WR)


def _received(sock: socket.socket) -> bytes | None:
    """What the socket has (b"" at its end), or None when nothing came within its timeout."""
    try:
        return sock.recv(65536)
    except TimeoutError:
        return None


class _TricklingRelay(_RewritingRelay):
    """A relay that passes on what the server writes a few bytes at a time, as a slow link would."""

    def _to_client(self, server: socket.socket, client: socket.socket) -> None:
        with suppress(OSError):
            while data := server.recv(65536):
                for start in range(0, len(data), 3):
                    client.sendall(data[start : start + 3])
                    time.sleep(0.002)
            client.shutdown(socket.SHUT_WR)


@pytest.mark.parametrize("security", ["plain", "tls"])
def test_idle_reads_replies_that_come_a_few_bytes_at_a_time(
    dovecot_tls: LocalDovecot, open_mailbox: OpenMailbox, security: str
) -> None:
    port = dovecot_tls.tls_port if security == "tls" else dovecot_tls.port
    relay = _TricklingRelay(dovecot_tls.host, port)
    try:
        mailbox = open_mailbox(dovecot_tls, security=security, port=relay.port)
        for _ in range(2):
            changed, _ = _wait_while_mail_arrives(mailbox, dovecot_tls, 30)
            assert changed
            assert mailbox.search_uids() == dovecot_tls.uids(USER, "INBOX")  # the same session goes on
    finally:
        relay.close()


def test_mail_announced_in_the_same_read_as_the_idle_go_ahead_ends_the_wait(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    """imaplib reads ahead of the line it wants: an EXISTS read with "+ idling" is in its buffer, not the socket.

    Over plain IMAP only: the relay must read the session to know when IDLE starts.
    """
    relay = _JoiningRelay(dovecot.host, dovecot.port)
    try:
        mailbox = open_mailbox(dovecot, port=relay.port)

        changed, waited = _wait_while_mail_arrives(mailbox, dovecot, 120)

        assert relay.joined.is_set()
        assert changed
        assert waited < 60  # not woken by the next keepalive or the end of the wait
        assert mailbox.search_uids() == dovecot.uids(USER, "INBOX")
    finally:
        relay.close()


def test_idle_refused_by_a_server_that_advertises_it_falls_back_to_polling_on_the_same_session(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox, caplog: pytest.LogCaptureFixture
) -> None:
    idles: list[bytes] = []

    def spoil_idle(data: bytes) -> bytes:  # the server sees a command it does not know, and answers BAD
        if data.endswith(b" IDLE\r\n"):
            idles.append(data)
            return data.replace(b" IDLE\r\n", b" IDLEX\r\n")
        return data

    relay = _RewritingRelay(dovecot.host, dovecot.port, to_server=spoil_idle)
    try:
        mailbox = open_mailbox(dovecot, port=relay.port)
        mailbox.select("INBOX")

        assert not mailbox.wait_for_change(1.2, lambda: False)
        assert not mailbox.wait_for_change(1.2, lambda: False)

        assert len(idles) == 1  # the second wait polled without asking again
        assert "the server refused IDLE (BAD" in caplog.text
        assert mailbox.search_uids() == []  # the session still takes commands
    finally:
        relay.close()


def test_untagged_responses_before_the_idle_go_ahead_do_not_break_idle(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    relay = _RewritingRelay(
        dovecot.host, dovecot.port, to_client=lambda data: data.replace(b"+ idling", b"* OK Still here\r\n+ idling")
    )
    try:
        mailbox = open_mailbox(dovecot, port=relay.port)

        changed, _ = _wait_while_mail_arrives(mailbox, dovecot, 30)

        assert changed
        assert mailbox.search_uids() == dovecot.uids(USER, "INBOX")
    finally:
        relay.close()


@pytest.mark.parametrize(
    "added, reason",
    [
        (b"* OK Still h", "timed out"),  # half a line, then nothing: the wait must not outlast its deadline
        (b"* 1 FETCH (FLAGS () X-GM-LABELS {7}\r\nab\r\ncde)\r\n", "a reply IDLE cannot read"),  # a literal
    ],
)
def test_a_reply_idle_cannot_finish_or_read_ends_the_session_by_the_deadline(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox, added: bytes, reason: str
) -> None:
    relay = _RewritingRelay(
        dovecot.host, dovecot.port, to_client=lambda data: data.replace(b"+ idling\r\n", b"+ idling\r\n" + added)
    )
    try:
        mailbox = open_mailbox(dovecot, port=relay.port, timeout=60)
        mailbox.select("INBOX")
        started = time.monotonic()
        with pytest.raises(ConnectionLost, match=reason):
            mailbox.wait_for_change(3, lambda: False)
        assert time.monotonic() - started < 30  # the session's 60 s timeout did not apply
    finally:
        relay.close()


def test_a_starttls_the_server_refuses_is_a_tls_failure(dovecot_tls: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    def spoil(data: bytes) -> bytes:  # the server sees a command it does not know, and answers BAD
        return data.replace(b" STARTTLS\r\n", b" STARTTLX\r\n")

    relay = _RewritingRelay(dovecot_tls.host, dovecot_tls.port, to_server=spoil)
    try:
        with pytest.raises(ConnectError, match="would not start TLS"):
            open_mailbox(dovecot_tls, security="starttls", port=relay.port)
    finally:
        relay.close()


def test_wait_for_change_returns_promptly_when_should_stop_turns_true_mid_idle(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")
    stop_at = time.monotonic() + 0.5

    changed = mailbox.wait_for_change(60, lambda: time.monotonic() >= stop_at)

    assert not changed
    assert time.monotonic() - stop_at < 2
    assert "IDLE" in imap_commands()
    assert mailbox.search_uids() == []  # DONE was sent: the session takes commands again


def test_server_stopped_during_idle_raises_connection_lost(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")
    stopper = threading.Timer(0.5, dovecot.stop)
    stopper.start()
    started = time.monotonic()
    try:
        with pytest.raises(ConnectionLost):
            mailbox.wait_for_change(60, lambda: False)
    finally:
        stopper.join()
    assert time.monotonic() - started < 10


def test_wait_for_change_without_idle_sleeps_and_returns_false(
    dovecot_factory: StartDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_IDLE)
    mailbox = open_mailbox(server)
    mailbox.select("INBOX")
    started = time.monotonic()

    assert not mailbox.wait_for_change(1.2, lambda: False)

    assert 1.0 < time.monotonic() - started < 3
    assert "IDLE" not in imap_commands()


def test_ensure_folder_creates_nested_folder_and_subscribes(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot)

    mailbox.ensure_folder(ARTICLES)
    mailbox.ensure_folder(ARTICLES)

    assert ARTICLES in dovecot.folders(USER)
    assert ARTICLES in dovecot.doveadm("mailbox", "list", "-s", "-u", USER).split()
    assert mailbox.select(ARTICLES).exists == 0


def test_contains_finds_a_copied_message_by_fingerprint_and_not_a_different_one(
    dovecot: LocalDovecot, open_mailbox
) -> None:
    moved = dovecot.append(USER, "INBOX", mail(1))
    stays = dovecot.append(USER, "INBOX", mail(2))
    mailbox = open_mailbox(dovecot)
    mailbox.ensure_folder(ARTICLES)
    mailbox.select("INBOX")
    prints = mailbox.fingerprints([moved, stays])
    mailbox.move([moved], ARTICLES)

    assert mailbox.contains(ARTICLES, prints[moved])
    assert not mailbox.contains(ARTICLES, prints[stays])
    assert not mailbox.contains(ARTICLES, Fingerprint(prints[moved].message_id, prints[moved].size + 1, None))
    assert not mailbox.contains("Not/There", prints[moved])
    assert mailbox.search_uids() == [stays]  # INBOX is selected again


def test_contains_matches_a_message_without_message_id_by_size_and_date(dovecot: LocalDovecot, open_mailbox) -> None:
    uid = dovecot.append(USER, "INBOX", mail(1, message_id=False))
    dovecot.append(USER, "INBOX", mail(22, message_id=False))  # one byte longer
    mailbox = open_mailbox(dovecot)
    mailbox.ensure_folder(ARTICLES)
    mailbox.select("INBOX")
    fingerprint = mailbox.fingerprints([uid])[uid]
    mailbox.move([uid], ARTICLES)

    assert mailbox.contains(ARTICLES, fingerprint)
    assert not mailbox.contains(ARTICLES, Fingerprint("", fingerprint.size + 1, fingerprint.internaldate))


def test_uidvalidity_change_is_seen_by_select(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    mailbox = open_mailbox(dovecot)
    before = mailbox.select("INBOX").uidvalidity

    dovecot.set_uidvalidity(USER, "INBOX", before + 1000)

    assert mailbox.select("INBOX").uidvalidity == before + 1000


def test_server_stopped_under_an_open_session_raises_connection_lost(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    dovecot.append(USER, "INBOX", mail(1))
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    dovecot.stop()

    with pytest.raises(ConnectionLost):
        mailbox.search_uids()


def test_search_uids_above_the_highest_uid_returns_nothing(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    uids = [dovecot.append(USER, "INBOX", mail(n)) for n in range(3)]
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    assert mailbox.search_uids(uids[-1] + 1) == []
    assert mailbox.search_uids(uids[1]) == uids[1:]
    assert mailbox.search_uids() == uids


def test_add_keywords_sets_them_without_touching_seen(dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    uid = dovecot.append(USER, "INBOX", mail(1))
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    mailbox.add_keywords([uid], ["$PloyArticle"])

    [flags] = dovecot.flags(USER, "INBOX")
    assert "$PloyArticle" in flags and "\\Seen" not in flags


def messages_by_uid(server: LocalDovecot, folder: str) -> dict[int, bytes]:
    return dict(zip(server.uids(USER, folder), server.messages(USER, folder), strict=True))


def flags_by_uid(server: LocalDovecot, folder: str) -> dict[int, tuple[str, ...]]:
    return dict(zip(server.uids(USER, folder), server.flags(USER, folder), strict=True))
