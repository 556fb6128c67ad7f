"""What the sender ledger needs from ImapMailbox, against a real Dovecot on 127.0.0.1.

The owner's sent folder is found by its \\Sent attribute (RFC 6154) and read
through EXAMINE, header fields only; the weekly digest is APPENDed and found
again by its Message-ID. Servers here mark the folder "Sent Items" \\Sent in
their configuration, as a provider's server does; a folder merely named
"Sent" must never be taken for it.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from filter.dovecot import DEFAULT_CAPABILITIES, DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.errors import FolderError, MailboxError
from filter.imap import ImapMailbox
from filter.mailbox import ConnectionLost, Fingerprint
from filter.state import fingerprint_key

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

USER = DEFAULT_USER
SENT = "Sent Items"
DIGESTS = "Ployfilter/Digests"
Commands = Callable[[], list[str]]
OpenMailbox = Callable[..., ImapMailbox]
StartDovecot = Callable[..., LocalDovecot]


@pytest.fixture
def sent_dovecot(dovecot_factory: StartDovecot) -> LocalDovecot:
    """A server with the folders SENT (marked \\Sent) and "Sent" (not marked)."""
    server = dovecot_factory(special_use={SENT: "\\Sent"})
    server.create(USER, SENT)
    server.create(USER, "Sent")
    return server


def sent_mail(n: int, headers: str) -> bytes:
    return (f"From: Owner <owner@example.org>\r\n{headers}Subject: sent {n}\r\n\r\nThanks, {n}.\r\n").encode()


def to_ann(n: int) -> bytes:
    return sent_mail(n, f"To: Ann <ann@example.org>\r\nMessage-ID: <sent-{n}@example.org>\r\n")


def test_find_sent_folder_asks_for_special_use_folders_when_advertised(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    mailbox = open_mailbox(sent_dovecot)
    assert "SPECIAL-USE" in mailbox.capabilities()

    assert mailbox.find_sent_folder() == SENT
    assert 'LIST (SPECIAL-USE) "" "*"' in imap_commands()


def test_find_sent_folder_reads_plain_list_attributes_without_special_use(
    dovecot_factory: StartDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    server = dovecot_factory(capabilities=DEFAULT_CAPABILITIES, special_use={SENT: "\\Sent"})
    server.create(USER, "Sent")
    server.create(USER, SENT)
    mailbox = open_mailbox(server)
    assert "SPECIAL-USE" not in mailbox.capabilities()

    assert mailbox.find_sent_folder() == SENT
    assert not any("SPECIAL-USE" in line for line in imap_commands())


def test_find_sent_folder_is_none_when_no_folder_is_marked_even_one_named_sent(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    dovecot.create(USER, "Sent")
    dovecot.create(USER, "Sent Messages")

    assert open_mailbox(dovecot).find_sent_folder() is None


def test_read_sent_returns_recipients_dates_and_keys_in_uid_order(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    first = sent_mail(
        1,
        "Date: Mon, 2 Mar 2026 10:00:00 +0100\r\nTo: Ann <Ann@Example.org>, bob@example.org\r\n"
        "Cc: Carol <carol@example.net>\r\nMessage-ID: <sent-1@example.org>\r\n",
    )
    second = sent_mail(
        2, "Date: Tue, 3 Mar 2026 08:30:00 +0000\r\nTo: undisclosed-recipients:;\r\nBcc: dan@example.com\r\n"
    )
    uids = [sent_dovecot.append(USER, SENT, data) for data in (first, second)]
    sent_dovecot.set_uidvalidity(USER, SENT, 4242)
    mailbox = open_mailbox(sent_dovecot)

    uidvalidity, messages, next_uid = mailbox.read_sent(SENT, 1)

    assert uidvalidity == 4242
    assert [m.uid for m in messages] == uids
    assert next_uid == uids[-1] + 1
    one, two = messages
    assert one.recipients == ("ann@example.org", "bob@example.org", "carol@example.net")
    assert one.time == 1772442000.0  # 2026-03-02 09:00 UTC
    assert one.key == fingerprint_key(Fingerprint("<sent-1@example.org>", len(first), None))
    assert two.recipients == ("dan@example.com",)
    assert two.time == 1772526600.0  # 2026-03-03 08:30 UTC


def test_read_sent_copes_with_a_malformed_to_and_an_unreadable_date(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    broken = sent_mail(1, "Date: the day after tomorrow\r\nTo: Bob <bob@example.org, , @@@, <>\r\nCc: ;;\r\n")
    empty = sent_mail(2, "")
    sent_dovecot.append(USER, SENT, broken)
    sent_dovecot.append(USER, SENT, empty)
    mailbox = open_mailbox(sent_dovecot)

    _, (one, two), _ = mailbox.read_sent(SENT, 1)

    assert one.recipients == ("bob@example.org",)
    assert abs(one.time - time.time()) < 300  # INTERNALDATE: the time of the APPEND
    assert two.recipients == ()
    assert one.key != two.key


def test_read_sent_respects_first_uid_and_limit_and_says_where_to_go_on(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    uids = [sent_dovecot.append(USER, SENT, to_ann(n)) for n in range(5)]
    mailbox = open_mailbox(sent_dovecot)

    _, page1, next1 = mailbox.read_sent(SENT, 1, limit=2)
    _, page2, next2 = mailbox.read_sent(SENT, next1, limit=2)
    _, page3, next3 = mailbox.read_sent(SENT, next2, limit=2)
    _, page4, next4 = mailbox.read_sent(SENT, next3, limit=2)
    late = sent_dovecot.append(USER, SENT, to_ann(5))
    _, page5, _ = mailbox.read_sent(SENT, next4)

    assert [[m.uid for m in page] for page in (page1, page2, page3, page4, page5)] == [
        uids[0:2],
        uids[2:4],
        uids[4:],
        [],
        [late],
    ]
    assert (next1, next2, next3, next4) == (uids[2], uids[4], uids[4] + 1, uids[4] + 1)


def test_read_sent_examines_and_fetches_header_fields_only(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox, imap_commands: Commands
) -> None:
    sent_dovecot.append(USER, SENT, to_ann(1))
    mailbox = open_mailbox(sent_dovecot)

    mailbox.read_sent(SENT, 1)

    sent = imap_commands()
    assert f'EXAMINE "{SENT}"' in sent
    assert not any(line.startswith("SELECT") for line in sent)
    fetches = [line for line in sent if " FETCH " in f" {line}"]
    assert fetches and all("BODY.PEEK[HEADER.FIELDS (DATE TO CC BCC MESSAGE-ID)]" in line for line in fetches)
    assert not any("BODY.PEEK[]" in line or "RFC822 " in line or "RFC822)" in line for line in fetches)
    assert "\\Seen" not in sent_dovecot.flags(USER, SENT)[0]


def test_read_sent_leaves_no_folder_selected(sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox) -> None:
    inbox_uid = sent_dovecot.append(USER, "INBOX", to_ann(1))
    sent_dovecot.append(USER, SENT, to_ann(2))
    mailbox = open_mailbox(sent_dovecot)
    mailbox.select("INBOX")

    mailbox.read_sent(SENT, 1)

    with pytest.raises(MailboxError):
        mailbox.search_uids()
    mailbox.select("INBOX")
    assert mailbox.search_uids() == [inbox_uid]


def test_read_sent_of_a_missing_folder_raises_folder_error_naming_it(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    mailbox = open_mailbox(dovecot)

    with pytest.raises(FolderError, match="'Sent/Old' does not exist"):
        mailbox.read_sent("Sent/Old", 1)

    assert mailbox.select("INBOX").exists == 0  # the session goes on


def test_read_sent_on_a_stopped_server_raises_connection_lost(
    sent_dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    mailbox = open_mailbox(sent_dovecot)
    sent_dovecot.stop()

    with pytest.raises(ConnectionLost):
        mailbox.read_sent(SENT, 1)


def test_append_creates_and_subscribes_the_folder_and_keeps_the_keywords(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    digest = sent_mail(1, "To: owner@example.org\r\nMessage-ID: <digest-1@ployfilter.invalid>\r\n")
    mailbox = open_mailbox(dovecot)

    mailbox.append(DIGESTS, digest, ["$PloyDigest"])

    assert dovecot.messages(USER, DIGESTS) == [digest]
    [flags] = dovecot.flags(USER, DIGESTS)
    assert "$PloyDigest" in flags and "\\Seen" not in flags
    assert DIGESTS in dovecot.doveadm("mailbox", "list", "-s", "-u", USER).splitlines()


def test_has_message_id_finds_an_appended_message_by_its_exact_message_id(
    dovecot: LocalDovecot, open_mailbox: OpenMailbox
) -> None:
    mailbox = open_mailbox(dovecot)
    mailbox.append(DIGESTS, sent_mail(1, "Message-ID: <digest-2026-W10-home@ployfilter.invalid>\r\n"))

    assert mailbox.has_message_id(DIGESTS, "<digest-2026-W10-home@ployfilter.invalid>")
    assert not mailbox.has_message_id(DIGESTS, "<digest-2026-W11-home@ployfilter.invalid>")
    assert not mailbox.has_message_id(DIGESTS, "digest-2026-W10-home@ployfilter.invalid")  # a substring only
    assert not mailbox.has_message_id("Not/There", "<digest-2026-W10-home@ployfilter.invalid>")
