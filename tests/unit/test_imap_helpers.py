"""The pure helpers of the IMAP seam: UID sets, Message-ID, recipient and date extraction."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

import filter.imap
from filter.config import parse_config
from filter.errors import AuthError, MailboxError
from filter.imap import ImapMailbox, _peek, message_id_of, recipients_of, sent_message_of, uid_set_of
from filter.mailbox import Fingerprint
from filter.state import fingerprint_key

INTERNALDATE = datetime(2026, 3, 4, 5, 6, 7, tzinfo=UTC)


def test_uid_set_joins_runs_of_consecutive_uids() -> None:
    assert uid_set_of([7, 1, 2, 3]) == "1:3,7"


def test_uid_set_never_covers_a_uid_not_given() -> None:
    assert uid_set_of([1, 3, 5]) == "1,3,5"


def test_uid_set_ignores_duplicates() -> None:
    assert uid_set_of([4, 4, 5]) == "4:5"


def test_empty_uid_set_is_refused() -> None:
    with pytest.raises(ValueError):
        uid_set_of([])


def test_message_id_is_read_from_the_header_only() -> None:
    data = b"Subject: x\r\nMessage-ID: <a@b>\r\n\r\nMessage-ID: <body@b>\r\n"
    assert message_id_of(data) == "<a@b>"


def test_folded_message_id_is_unfolded() -> None:
    assert message_id_of(b"Message-Id:\r\n  <folded@example.org>\r\n\r\n") == "<folded@example.org>"


@pytest.mark.parametrize("data", [b"", b"\x00\xff\xfe junk", b"no headers at all"])
def test_missing_message_id_is_empty(data: bytes) -> None:
    assert message_id_of(data) == ""


def test_recipients_are_bare_lower_case_addresses_from_to_cc_and_bcc() -> None:
    header = (
        b"From: Owner <owner@example.org>\r\n"
        b'To: "Smith, Ann" <Ann@Example.ORG>, bob@example.org\r\n'
        b"Cc: =?utf-8?q?J=C3=B6rg?= <joerg@example.de>\r\n"
        b"Bcc: carol@example.net (Carol)\r\n\r\n"
    )
    assert recipients_of(header) == ("ann@example.org", "bob@example.org", "joerg@example.de", "carol@example.net")


def test_recipients_are_listed_once_in_the_order_first_met() -> None:
    header = b"To: a@example.org, B@example.org\r\nCc: b@example.org\r\nTo: A@Example.org, c@example.org\r\n\r\n"
    assert recipients_of(header) == ("a@example.org", "b@example.org", "c@example.org")


def test_folded_recipient_fields_are_unfolded() -> None:
    assert recipients_of(b"To: Ann <ann@example.org>,\r\n\tBob\r\n <bob@example.org>\r\n\r\n") == (
        "ann@example.org",
        "bob@example.org",
    )


def test_group_names_and_empty_groups_add_no_recipient() -> None:
    header = b"To: undisclosed-recipients:;\r\nCc: Team: ann@example.org, Bob <bob@example.org>;\r\n\r\n"
    assert recipients_of(header) == ("ann@example.org", "bob@example.org")


def test_recipients_ignore_from_and_the_body() -> None:
    assert recipients_of(b"From: owner@example.org\r\nSubject: hi\r\n\r\nTo: body@example.org\r\n") == ()


@pytest.mark.parametrize(
    "value",
    [b"", b"<<>>", b"@@@", b",,,", b"foo bar", b"a@b@", b"@example.org", b"\x00\xff\xfe", b'"unclosed <x@y'],
)
def test_malformed_recipient_fields_give_no_address_and_no_exception(value: bytes) -> None:
    assert recipients_of(b"To: " + value + b"\r\n\r\n") == ()


def test_an_unclosed_angle_bracket_still_yields_its_address() -> None:
    assert recipients_of(b"To: Bob <bob@example.org, , ann@\r\n\r\n") == ("bob@example.org",)


def test_sent_message_takes_its_time_from_the_date_field() -> None:
    header = b"Date: Mon, 2 Mar 2026 10:00:00 +0100\r\nTo: ann@example.org\r\nMessage-ID: <s1@example.org>\r\n\r\n"
    sent = sent_message_of(7, header, 1234, INTERNALDATE)
    assert sent.uid == 7
    assert sent.time == datetime(2026, 3, 2, 9, 0, tzinfo=UTC).timestamp()
    assert sent.recipients == ("ann@example.org",)


def test_a_date_without_a_zone_is_read_as_utc() -> None:
    sent = sent_message_of(1, b"Date: Mon, 2 Mar 2026 10:00:00 -0000\r\n\r\n", 10, INTERNALDATE)
    assert sent.time == datetime(2026, 3, 2, 10, 0, tzinfo=UTC).timestamp()


@pytest.mark.parametrize("date", [b"Date: next Tuesday\r\n", b"Date: Mon, 2 Mar 2026 25:61:00 +9999\r\n", b""])
def test_sent_message_falls_back_to_internaldate_without_a_readable_date(date: bytes) -> None:
    sent = sent_message_of(1, date + b"To: ann@example.org\r\n\r\n", 10, INTERNALDATE)
    assert sent.time == INTERNALDATE.timestamp()


def test_sent_message_without_date_or_internaldate_has_time_zero() -> None:
    assert sent_message_of(1, b"To: ann@example.org\r\n\r\n", 10, None).time == 0.0


def test_sent_message_key_is_the_state_fingerprint_key() -> None:
    with_id = sent_message_of(1, b"Message-ID: <s1@example.org>\r\n\r\n", 500, INTERNALDATE)
    without_id = sent_message_of(2, b"To: ann@example.org\r\n\r\n", 500, INTERNALDATE)
    assert with_id.key == fingerprint_key(Fingerprint("<s1@example.org>", 500, INTERNALDATE))
    assert without_id.key == fingerprint_key(Fingerprint("", 500, INTERNALDATE))
    assert with_id.key != without_id.key


class _NoPlainLogin:
    """An IMAP session that offers LOGIN only; calling it would fail on non-ASCII text (imaplib sends ASCII)."""

    def __init__(self) -> None:
        self.logged_in = False

    def has_capability(self, name: str) -> bool:
        return False

    def login(self, username: str, password: str) -> None:
        (username + password).encode("ascii")
        self.logged_in = True

    def logout(self) -> None:
        pass

    def shutdown(self) -> None:
        pass


def test_a_non_ascii_password_without_auth_plain_is_a_clear_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    account = parse_config(
        {"accounts": [{"name": "a", "host": "127.0.0.1", "security": "plain", "username": "u", "password_env": "P"}]}
    ).accounts[0]
    session = _NoPlainLogin()
    mailbox = ImapMailbox(account, "pässwörd")
    monkeypatch.setattr(mailbox, "_connect_client", lambda context: session)
    with pytest.raises(AuthError, match="non-ASCII characters and the server does not offer AUTH=PLAIN"):
        mailbox.connect()
    assert not session.logged_in


def test_peek_shows_what_a_reader_holds_without_waiting_for_more() -> None:
    ours, theirs = socket.socketpair()
    with ours, theirs, ours.makefile("rb") as reader:
        ours.setblocking(False)
        assert not _peek(reader)  # nothing sent: no wait
        theirs.sendall(b"+ idling\r\n* 3 EXISTS\r\n")
        assert reader.readline() == b"+ idling\r\n"
        assert _peek(reader) == b"* 3 EXISTS\r\n"  # read already, though the socket has nothing left
        assert reader.readline() == b"* 3 EXISTS\r\n"
        theirs.sendall(b"* 4 EXI")
        assert _peek(reader) == b"* 4 EXI"


def test_a_server_refusing_message_numbers_gets_windows_of_uids(monkeypatch: pytest.MonkeyPatch) -> None:
    """Some servers answer BAD to a message number past the last: the windows are then counted in UIDs."""
    monkeypatch.setattr(filter.imap, "_SEARCH_WINDOW", 4)
    account = parse_config(
        {"accounts": [{"name": "a", "host": "127.0.0.1", "security": "plain", "username": "u", "password_env": "P"}]}
    ).accounts[0]
    mailbox = ImapMailbox(account, "pw")
    searched: list[list[str]] = []

    class Session:
        def search(self, criteria: list[str]) -> list[int]:
            searched.append(criteria)
            if criteria[0] != "UID":
                raise MailboxError("SEARCH => BAD invalid message number")
            return []

    mailbox._imap = Session()  # type: ignore[assignment]
    mailbox._exists, mailbox._uidnext = 9, 14
    assert mailbox.search_uids(2) == []
    assert searched == [["4,8"], ["UID", "2:5"], ["UID", "6:9"], ["UID", "10:*"]]


@pytest.mark.parametrize(
    "text, by_server",
    [
        ("socket error: EOF", False),
        ("Server shutting down.", False),  # a restart, not the message in flight
        ("FETCH failed: Internal error occurred", True),
    ],
)
def test_a_lost_session_says_whether_the_server_ended_it_over_the_command(text: str, by_server: bool) -> None:
    import imaplib

    from filter.imap import _translated
    from filter.mailbox import ConnectionLost

    with pytest.raises(ConnectionLost) as info, _translated("here"):
        raise imaplib.IMAP4.abort(text)
    assert info.value.by_server is by_server
