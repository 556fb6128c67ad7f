"""Recovery against a real Dovecot: crashes mid-move, UIDVALIDITY changes, renamed folders, big folders.

Each test drives an ``AccountRunner`` in this process, with an
``ImapMailbox`` whose ``move`` or ``remove_copied`` can raise at a chosen
point, as a process killed there would stop. A new runner on the same state
file plays the restarted daemon. The scorer reads the subject ("article"
or "favour"), so the tests are about mail handling, not the model.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

import filter.imap
from filter.config import parse_config
from filter.dovecot import CAPABILITIES_NO_MOVE, DEFAULT_USER, LocalDovecot, unavailable_reason
from filter.errors import TargetUnavailable
from filter.imap import ImapMailbox
from filter.mailbox import ConnectionLost, Fingerprint, RawMessage, TargetMark
from filter.message import ParsedMessage
from filter.model import Scores
from filter.runner import FETCH_TRIES, NETWORK_TRIES, AccountRunner
from filter.state import State

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(unavailable_reason() is not None, reason=unavailable_reason() or ""),
]

ARTICLES = "Networking/Articles"
THRESHOLDS = {"article_share": 0.8, "favour_request": 0.8}


class Killed(Exception):
    """The process stops here."""


class ByKeyword:
    """'article' or 'favour' in the subject scores 0.99 for that label, else 0.01."""

    def score(self, messages: Sequence[ParsedMessage]) -> list[Scores]:
        return [
            Scores({label: 0.99 if word in m.subject.lower() else 0.01 for label, word in _WORDS.items()})
            for m in messages
        ]


_WORDS = {"article_share": "article", "favour_request": "favour"}


class Stopping(ImapMailbox):
    """An ImapMailbox that stops at ``point``.

    "move": before MOVE or COPY; "copy": once the server made the COPY,
    before its answer was noted (as a connection lost during COPY leaves
    it); "remove": after COPY and its note, before the original is removed.
    """

    point = "move"

    def move(
        self,
        uids: Sequence[int],
        folder: str,
        copied: Callable[[], None] | None = None,
        copying: Callable[[TargetMark], None] | None = None,
    ) -> None:
        if self.point == "move":
            raise Killed("before MOVE")
        if self.point == "copy":
            copied = _answer_lost
        super().move(uids, folder, copied, copying)

    def remove_copied(self, uids: Sequence[int]) -> None:
        if self.point == "remove":
            raise Killed("after COPY, before STORE and EXPUNGE")
        super().remove_copied(uids)


def _answer_lost() -> None:
    raise Killed("after COPY, before its answer was noted")


def killed_at(point: str, runner_for: Callable[..., AccountRunner], server: LocalDovecot, **settings: Any) -> None:
    """A pass whose process is killed at ``point`` of its move ("move", "copy" or "remove"; see Stopping)."""
    Stopping.point = point
    with pytest.raises(Killed):
        runner_for(server, Stopping, **settings).pass_once()


@pytest.fixture
def runner_for(tmp_path: Path) -> Iterator[Callable[..., AccountRunner]]:
    """Make a connected, prepared runner on one state file (the same for every runner of a test)."""
    opened: list[AccountRunner] = []
    state = State.open(tmp_path / "state.sqlite3")

    def make(
        server: LocalDovecot,
        mailbox: type[ImapMailbox] = ImapMailbox,
        thresholds: dict[str, float] | None = None,
        **settings: Any,
    ) -> AccountRunner:
        account: dict[str, Any] = {
            "name": "home",
            "host": server.host,
            "port": server.port,
            "security": "plain",
            "username": DEFAULT_USER,
            "password_env": "UNUSED",
        }
        account.update(settings.pop("account", {}))
        config = parse_config({"accounts": [account], **settings})
        box = mailbox(config.accounts[0], server.users[DEFAULT_USER])
        box.connect()
        runner = AccountRunner(config, config.accounts[0], box, ByKeyword(), thresholds or THRESHOLDS, state)
        runner.prepare()
        opened.append(runner)
        return runner

    yield make
    for runner in opened:
        runner.mailbox.close()
    state.close()


def long_header(subject: str, *fields: str) -> bytes:
    """A message whose ``fields`` come after some 5 KB of trace headers, as real mail can carry."""
    trace = "".join(f"Received: from relay{i}.example.net by mx.example.org; 2 Mar 2026\r\n" for i in range(80))
    head = "".join(f"{field}\r\n" for field in fields)
    return f"From: s@example.org\r\nSubject: {subject}\r\n{trace}{head}\r\nBody.\r\n".encode()


def message(n: int, subject: str, message_id: bool = True) -> bytes:
    head = f"From: sender{n}@example.org\r\nTo: owner@example.org\r\nSubject: {subject}\r\n"
    if message_id:
        head += f"Message-ID: <r{n}@example.org>\r\n"
    return (head + f"\r\nMessage number {n}.\r\n").encode()


@pytest.mark.parametrize("point, capabilities", [("move", None), ("remove", CAPABILITIES_NO_MOVE)])
def test_messages_sharing_a_fingerprint_are_never_taken_for_each_other(
    dovecot_factory: Callable[..., LocalDovecot],
    runner_for: Callable[..., AccountRunner],
    point: str,
    capabilities: Any,
) -> None:
    # Two alerts without a Message-ID, of one size, arriving in one second: one fingerprint, two messages.
    first = b"From: alerts@monitor.example\r\nSubject: an article on disk sda1 at 91%\r\n\r\nHost web1: 91% full.\r\n"
    second = b"From: alerts@monitor.example\r\nSubject: an article on disk sdb1 at 92%\r\n\r\nHost db2:  92% full.\r\n"
    assert len(first) == len(second)
    server = dovecot_factory(capabilities=capabilities)
    for data in (first, second):
        server.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    killed_at(point, runner_for, server)

    runner_for(server).pass_once()

    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert sorted(server.messages(DEFAULT_USER, ARTICLES)) == sorted([first, second])


def test_a_message_the_server_cannot_read_is_skipped_and_the_others_go_on(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    """Dovecot ends the session over a message it cannot read: every pass would fail on it for ever."""
    datas = [message(n, "an article" if n % 2 == 0 else "hello") for n in range(5)]
    for data in datas:
        dovecot.append(DEFAULT_USER, "INBOX", data)
    inbox = dovecot.runtime / "mail" / DEFAULT_USER
    (broken,) = [p for p in inbox.glob("*/*") if p.is_file() and b"Message number 2." in p.read_bytes()]
    broken.chmod(0)  # the server's mail user may no longer read it
    failed = 0
    while True:
        try:
            runner = runner_for(dovecot, batch_size=10)
            report = runner.pass_once()
            break
        except ConnectionLost:
            failed += 1
            assert failed <= 1 + FETCH_TRIES, "the broken message keeps stopping the passes"

    assert failed >= 1
    skipped = [o for o in report.outcomes if o.action == "skip"]
    assert [o.reasons for o in skipped] == [("the server failed to return it, try after try; left in place",)]
    assert sorted(dovecot.messages(DEFAULT_USER, ARTICLES)) == sorted([datas[0], datas[4]])
    for path in inbox.glob(f"*/{broken.name.split(':')[0]}*"):  # Dovecot may have moved it from new/ to cur/
        path.chmod(0o600)
    assert sorted(dovecot.messages(DEFAULT_USER, "INBOX")) == sorted([datas[1], datas[2], datas[3]])
    assert runner_for(dovecot).pass_once().outcomes == []  # recorded: not tried again


def test_a_message_the_server_cannot_read_does_not_stop_the_carry_over_after_a_uidvalidity_change(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    datas = [message(n, "hello") for n in range(3)]
    for data in datas:
        dovecot.append(DEFAULT_USER, "INBOX", data)
    inbox = dovecot.runtime / "mail" / DEFAULT_USER
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"] * 3
    dovecot.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    (broken,) = [p for p in inbox.glob("*/*") if p.is_file() and b"Message number 1." in p.read_bytes()]
    broken.chmod(0)  # unreadable from now on: its Message-ID cannot be read to match it
    article = message(9, "an article")
    dovecot.append(DEFAULT_USER, "INBOX", article)
    for _ in range(2 + FETCH_TRIES):
        try:
            report = runner_for(dovecot).pass_once()
            break
        except ConnectionLost:
            pass
    else:
        raise AssertionError("the unreadable message keeps stopping the carry-over")
    for path in inbox.glob(f"*/{broken.name.split(':')[0]}*"):  # Dovecot may have moved it from new/ to cur/
        path.chmod(0o600)
    assert report.carried_over == 2
    assert [o.action for o in report.outcomes] == ["skip", "move"]
    assert dovecot.messages(DEFAULT_USER, ARTICLES) == [article]


def test_the_same_mail_delivered_again_later_is_judged_not_taken_for_one_brought_back(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    data = message(1, "an article")
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move"]
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 11:00:00 +0000"')  # an MTA's retry

    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move"]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == []
    assert dovecot.messages(DEFAULT_USER, ARTICLES) == [data, data]


def test_a_redelivered_copy_the_owner_brings_back_stays(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    data = message(1, "an article")
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    runner_for(dovecot).pass_once()
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 11:00:00 +0000"')
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move"]
    first, later = dovecot.uids(DEFAULT_USER, ARTICLES)  # moved at 10:00's and at 11:00's arrival
    for uid in (later, first):  # the owner brings back one copy, then the other
        dovecot.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "uid", str(uid))
        assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == [data, data]


def test_look_alikes_without_a_message_id_minutes_apart_stay_where_the_owner_puts_them(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    first = b"From: alerts@monitor.example\r\nSubject: an article on disk sda1 at 91%\r\n\r\nHost web1: 91% full.\r\n"
    second = b"From: alerts@monitor.example\r\nSubject: an article on disk sdb1 at 92%\r\n\r\nHost db2:  92% full.\r\n"
    dovecot.append(DEFAULT_USER, "INBOX", first, internaldate='"02-Mar-2026 10:00:00 +0000"')
    dovecot.append(DEFAULT_USER, "INBOX", second, internaldate='"02-Mar-2026 10:05:00 +0000"')
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move", "move"]
    dovecot.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "SUBJECT", "sda1")
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == [first]


def test_mail_brought_back_stays_when_the_server_has_moved_to_another_time_zone(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    """Dovecot writes arrival times in its own zone: the same instant must still read as the same arrival."""
    data = message(1, "an article")
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    runner_for(dovecot).pass_once()
    zone = os.environ.get("TZ")
    os.environ["TZ"] = "Europe/Paris"
    try:
        time.tzset()
        dovecot.restart()
        dovecot.doveadm("copy", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "all")  # a Gmail label put back
        assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]
    finally:
        if zone is None:
            os.environ.pop("TZ", None)
        else:
            os.environ["TZ"] = zone
        time.tzset()


def test_after_a_uidvalidity_change_an_interrupted_move_takes_its_own_copy_not_one_brought_back(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    data = message(1, "an article")
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    runner_for(dovecot).pass_once()
    dovecot.doveadm("copy", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "all")  # brought back, kept in both
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]
    dovecot.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 11:00:00 +0000"')  # delivered again
    killed_at("move", runner_for, dovecot)
    dovecot.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)

    assert runner_for(dovecot).pass_once().recovered == 1

    arrivals = dovecot.doveadm("fetch", "-u", DEFAULT_USER, "date.received", "mailbox", "INBOX", "all")
    assert arrivals.split() == ["date.received:", "2026-03-02", "10:00:00"]  # the owner's copy stayed, not the later


def test_an_interrupted_move_whose_copy_was_made_stays_a_move_when_its_original_cannot_be_read(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    """The original stays beside the copy (never a loss); the owner's later correction counts as for any move."""
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    data = article_in_inbox(server, filed_before=False)
    killed_at("remove", runner_for, server)
    # Dovecot's COPY links the file, so a file made unreadable would be unreadable in both folders: the
    # server ends the session over a read of the original instead.
    Unreadable.uids = set(server.uids(DEFAULT_USER, "INBOX"))
    passes_until_one_completes(lambda: runner_for(server, Unreadable), 2 + FETCH_TRIES)
    runner = runner_for(server)
    assert [d["action"] for d in runner.state.decisions()] == ["move"]
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "all")  # the owner takes it back
    assert [o.action for o in runner.pass_once().outcomes] == ["keep"]
    assert server.messages(DEFAULT_USER, "INBOX") == [data, data]


class Unreadable(ImapMailbox):
    """The server ends the session over any read of these UIDs of the INBOX, as over a file it cannot read."""

    uids: set[int] = set()

    def fingerprints(self, uids: Sequence[int]) -> dict[int, Fingerprint]:
        if self._selected == "INBOX" and self.uids & set(uids):
            raise ConnectionLost("FETCH failed: Internal error occurred", by_server=True)
        return super().fingerprints(uids)


class CrashingOnMove(ImapMailbox):
    """The server's imap process dies whenever a move includes ``fatal`` (a plugin's crash, say)."""

    server: LocalDovecot
    fatal = 0

    def move(self, uids: Sequence[int], folder: str, *args: Any) -> None:
        if self.fatal in uids:
            for pid in _imap_processes(self.server):
                os.kill(pid, signal.SIGKILL)
        super().move(uids, folder, *args)


def test_a_message_whose_move_kills_the_server_is_given_up_and_the_others_go_on(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    article = message(1, "an article")
    CrashingOnMove.server, CrashingOnMove.fatal = dovecot, dovecot.append(DEFAULT_USER, "INBOX", article)
    with pytest.raises(ConnectionLost):
        runner_for(dovecot, CrashingOnMove).pass_once()
    request = message(2, "a favour")
    dovecot.append(DEFAULT_USER, "INBOX", request)
    passes_until_one_completes(lambda: runner_for(dovecot, CrashingOnMove), 2 + NETWORK_TRIES)
    assert dovecot.messages(DEFAULT_USER, "INBOX") == [article]
    assert dovecot.messages(DEFAULT_USER, "Networking/Requests") == [request]


class TargetClosed(ImapMailbox):
    """The article folder exists but will not open (its rights changed for a while)."""

    def contains(self, folder: str, *args: Any, **kwargs: Any) -> bool:
        if folder == ARTICLES:
            raise TargetUnavailable(f"EXAMINE {folder} => NO [NOPERM] Permission denied")
        return super().contains(folder, *args, **kwargs)


@pytest.mark.parametrize("new_uidvalidity", [False, True])
def test_a_target_that_will_not_open_for_a_while_delays_a_copied_move_and_costs_it_nothing(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], new_uidvalidity: bool
) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    data = article_in_inbox(server, filed_before=False)
    killed_at("remove", runner_for, server)  # copied, and noted so: only the original's removal is left
    if new_uidvalidity:
        server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    for _ in range(2 * FETCH_TRIES):
        assert runner_for(server, TargetClosed).pass_once().refused == 1
    assert runner_for(server).pass_once().recovered == 1
    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data]


class MoveAnswerLost(ImapMailbox):
    """A MOVE whose session ends: before the MOVE for the first three, after it (the answer lost) for the fourth."""

    calls = 0

    def move(self, uids: Sequence[int], folder: str, *args: Any) -> None:
        MoveAnswerLost.calls += 1
        if MoveAnswerLost.calls >= 4:
            super().move(uids, folder, *args)
        raise ConnectionLost("BYE", by_server=True)


def test_a_move_done_though_its_answer_was_lost_is_recorded_as_a_move_when_given_up(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    """So that the owner taking it back is a correction like any other, not mail to move again."""
    article_in_inbox(dovecot, filed_before=False)
    MoveAnswerLost.calls = 0
    for _ in range(4):
        with pytest.raises(ConnectionLost):
            runner_for(dovecot, MoveAnswerLost).pass_once()
    runner = runner_for(dovecot)
    runner.pass_once()
    assert [d["action"] for d in runner.state.decisions()] == ["move"]
    dovecot.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "all")
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]


def test_a_message_in_the_target_the_server_will_not_read_does_not_hold_a_move_for_ever(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    article_in_inbox(server, filed_before=True)
    killed_at("remove", runner_for, server)
    target = server.runtime / "mail" / DEFAULT_USER / ARTICLES
    (filed,) = [p for p in target.glob("*/*") if p.is_file() and p.stat().st_nlink == 1]  # not the COPY's link
    filed.chmod(0)
    try:
        for _ in range(2 + FETCH_TRIES):
            runner = runner_for(server)
            runner.pass_once()
            if not runner.state.intents("home", "INBOX"):
                break
        assert runner.state.intents("home", "INBOX") == []
    finally:
        for path in target.glob(f"*/{filed.name.split(':')[0]}*"):
            path.chmod(0o600)


def _imap_processes(server: LocalDovecot) -> list[int]:
    """The pids of this Dovecot's imap processes (in the master's process group)."""
    assert server._process is not None
    master, pids = server._process.pid, []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        name, fields = text[text.index("(") + 1 : text.rindex(")")], text[text.rindex(")") + 2 :].split()
        if name == "imap" and int(fields[2]) == master:
            pids.append(int(stat.parent.name))
    return pids


class Crashing(ImapMailbox):
    """The server's imap process dies (a panic, an out-of-memory kill) whenever ``fatal`` is fetched."""

    server: LocalDovecot
    fatal = 0

    def fetch(self, uids: Sequence[int], max_bytes: int) -> list[RawMessage]:
        if self.fatal in uids:
            for pid in _imap_processes(self.server):
                os.kill(pid, signal.SIGKILL)
        return super().fetch(uids, max_bytes)


def test_a_message_that_kills_the_server_process_is_skipped_and_the_others_go_on(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    """To the client that looks like a lost connection, not a server's refusal: it must still end."""
    datas = [message(n, "an article") for n in range(4)]
    uids = [dovecot.append(DEFAULT_USER, "INBOX", data) for data in datas]
    Crashing.server, Crashing.fatal = dovecot, uids[1]
    for _ in range(2 + NETWORK_TRIES):
        try:
            report = runner_for(dovecot, Crashing).pass_once()
            break
        except ConnectionLost as exc:
            assert not exc.by_server
    else:
        raise AssertionError("the message keeps stopping the passes")
    assert [(o.uid, o.action) for o in report.outcomes] == [(uids[1], "skip")]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == [datas[1]]
    assert sorted(dovecot.messages(DEFAULT_USER, ARTICLES)) == sorted(datas[:1] + datas[2:])


@pytest.mark.parametrize(
    "message_id",
    [
        "<a{b}@example.org>",
        "<x@[1(2)]>",
        '<"odd \\\\ one"@x.example>',
        "<a%b*c]@x.example>",
        "<caf\u00e9@x.example>",
        "<=?utf-8?q?caf=C3=A9?=@x.example>",  # Dovecot decodes this before it compares: found by size
    ],
)
@pytest.mark.parametrize("point, capabilities", [("move", None), ("remove", CAPABILITIES_NO_MOVE)])
def test_a_message_id_with_any_characters_is_searched_for_after_a_crash(
    dovecot_factory: Callable[..., LocalDovecot],
    runner_for: Callable[..., AccountRunner],
    message_id: str,
    point: str,
    capabilities: Any,
) -> None:
    data = f"From: s@example.org\r\nSubject: an article\r\nMessage-ID: {message_id}\r\n\r\nBody.\r\n".encode()
    dovecot = dovecot_factory(capabilities=capabilities)
    dovecot.append(DEFAULT_USER, "INBOX", data)
    killed_at(point, runner_for, dovecot)

    assert runner_for(dovecot).pass_once().recovered == 1

    assert dovecot.messages(DEFAULT_USER, "INBOX") == []
    assert dovecot.messages(DEFAULT_USER, ARTICLES) == [data]


def article_in_inbox(server: LocalDovecot, *, filed_before: bool) -> bytes:
    """An article in the INBOX, and with ``filed_before`` the same mail already in the article folder."""
    data = message(1, "an article")
    server.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    server.create(DEFAULT_USER, ARTICLES)
    if filed_before:
        server.append(DEFAULT_USER, ARTICLES, data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    return data


@pytest.mark.parametrize("capabilities", [None, CAPABILITIES_NO_MOVE])
def test_a_copy_already_in_the_target_is_not_taken_for_the_one_an_interrupted_move_made(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], capabilities: Any
) -> None:
    """The same mail filed there before (a Sieve "fileinto :copy"): the inbox copy is moved, never expunged."""
    server = dovecot_factory(capabilities=capabilities)
    data = article_in_inbox(server, filed_before=True)
    killed_at("move", runner_for, server)

    assert runner_for(server).pass_once().recovered == 1

    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data, data]


@pytest.mark.parametrize("filed_before", [False, True])
def test_a_copy_whose_answer_was_lost_is_taken_for_the_move_s_own(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], filed_before: bool
) -> None:
    """Without MOVE: the COPY was made but never confirmed; the copy is known by its UID, not made twice."""
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE)
    data = article_in_inbox(server, filed_before=filed_before)  # one filed before is below the UIDNEXT noted
    killed_at("copy", runner_for, server)
    assert len(server.messages(DEFAULT_USER, ARTICLES)) == 1 + filed_before

    report = runner_for(server).pass_once()

    assert report.recovered == 1
    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data] * (1 + filed_before)


@pytest.mark.parametrize("point, capabilities", [("move", None), ("copy", CAPABILITIES_NO_MOVE)])
def test_twins_whose_move_was_interrupted_are_each_resolved_after_a_uidvalidity_change(
    dovecot_factory: Callable[..., LocalDovecot],
    runner_for: Callable[..., AccountRunner],
    point: str,
    capabilities: Any,
) -> None:
    data = message(1, "an article")
    server = dovecot_factory(capabilities=capabilities)
    for _ in range(2):  # the same mail delivered twice
        server.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    killed_at(point, runner_for, server)
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)

    assert runner_for(server).pass_once().recovered == 2

    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data, data]


def padded(n: int, subject: str, size: int) -> bytes:
    return message(n, subject).replace(b"\r\n\r\n", b"\r\nX-Pad: " + b"x" * size + b"\r\n\r\n", 1)


def test_a_move_the_server_refuses_is_tried_each_pass_while_other_mail_goes_on(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    """A mailbox near its quota: COPY needs room for a second copy, and the server answers NO [OVERQUOTA]."""
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE, quota_kib=14)
    article = padded(1, "an article", 6000)
    server.append(DEFAULT_USER, "INBOX", article)
    server.create(DEFAULT_USER, "Old")
    server.append(DEFAULT_USER, "Old", padded(2, "old mail", 3000))

    first = runner_for(server).pass_once()
    assert (first.outcomes, first.refused) == ([], 1)

    request = message(3, "a favour")
    server.append(DEFAULT_USER, "INBOX", request)
    second = runner_for(server).pass_once()
    assert ([o.action for o in second.outcomes], second.refused) == (["move"], 1)  # judged once, not again

    server.doveadm("expunge", "-u", DEFAULT_USER, "mailbox", "Old", "all")  # the owner makes room
    third = runner_for(server).pass_once()
    assert (third.outcomes, third.recovered, third.refused) == ([], 1, 0)
    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [article]
    assert runner_for(server).pass_once().outcomes == []


def full_mailbox(dovecot_factory: Callable[..., LocalDovecot]) -> tuple[LocalDovecot, bytes]:
    """A server without MOVE whose quota leaves no room for a copy of the article in its INBOX."""
    server = dovecot_factory(capabilities=CAPABILITIES_NO_MOVE, quota_kib=14)
    article = padded(1, "an article", 6000)
    server.append(DEFAULT_USER, "INBOX", article)
    server.create(DEFAULT_USER, "Old")
    server.append(DEFAULT_USER, "Old", padded(2, "old mail", 3000))
    return server, article


def make_room(server: LocalDovecot) -> None:
    server.doveadm("expunge", "-u", DEFAULT_USER, "mailbox", "Old", "all")


def passes_until_one_completes(make: Callable[[], AccountRunner], most: int) -> Any:
    for _ in range(most):
        try:
            return make().pass_once()
        except ConnectionLost:
            pass
    raise AssertionError(f"{most} passes in a row ended in a lost connection")


def test_a_refused_move_across_a_uidvalidity_change_is_judged_once(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    server, article = full_mailbox(dovecot_factory)
    assert runner_for(server).pass_once().refused == 1
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    again = runner_for(server).pass_once()
    assert (again.outcomes, again.refused) == ([], 1)  # waiting for room, not judged a second time
    make_room(server)
    runner = runner_for(server)
    assert runner.pass_once().recovered == 1
    assert server.messages(DEFAULT_USER, ARTICLES) == [article]
    assert [d["action"] for d in runner.state.decisions()] == ["move"]


def test_a_waiting_move_across_a_uidvalidity_change_does_not_reset_the_tries_of_a_message_that_kills_the_server(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    server, _ = full_mailbox(dovecot_factory)
    assert runner_for(server).pass_once().refused == 1
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    runner_for(server).pass_once()
    fatal = server.append(DEFAULT_USER, "INBOX", message(5, "hello"))
    request = message(6, "a favour")
    server.append(DEFAULT_USER, "INBOX", request)
    Crashing.server, Crashing.fatal = server, fatal
    report = passes_until_one_completes(lambda: runner_for(server, Crashing), 4 + NETWORK_TRIES)
    assert [o.action for o in report.outcomes if o.uid == fatal] == ["skip"]
    assert request in server.messages(DEFAULT_USER, "Networking/Requests")


def test_an_interrupted_move_whose_message_became_unreadable_is_given_up_and_the_rest_goes_on(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> None:
    server, article = full_mailbox(dovecot_factory)
    assert runner_for(server).pass_once().refused == 1
    inbox = server.runtime / "mail" / DEFAULT_USER
    (broken,) = [p for p in inbox.glob("*/*") if p.is_file() and b"Message number 1." in p.read_bytes()]
    broken.chmod(0)
    make_room(server)
    request = message(3, "a favour")
    server.append(DEFAULT_USER, "INBOX", request)
    report = passes_until_one_completes(lambda: runner_for(server), 2 + FETCH_TRIES)
    for path in inbox.glob(f"*/{broken.name.split(':')[0]}*"):
        path.chmod(0o600)
    assert [o.action for o in report.outcomes] == ["move"]
    assert server.messages(DEFAULT_USER, "INBOX") == [article]  # left where it was
    assert server.messages(DEFAULT_USER, "Networking/Requests") == [request]


@pytest.mark.parametrize("capabilities", [None, CAPABILITIES_NO_MOVE])
def test_twins_in_the_inbox_both_reach_the_target_after_an_interrupted_move(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], capabilities: Any
) -> None:
    data = message(1, "an article")
    server = dovecot_factory(capabilities=capabilities)
    for _ in range(2):
        server.append(DEFAULT_USER, "INBOX", data, internaldate='"02-Mar-2026 10:00:00 +0000"')
    killed_at("move", runner_for, server)

    runner_for(server).pass_once()

    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data, data]


@pytest.mark.parametrize("point, capabilities", [("move", None), ("remove", CAPABILITIES_NO_MOVE)])
def test_a_message_id_beyond_the_fetch_cap_still_identifies_the_message(
    dovecot_factory: Callable[..., LocalDovecot],
    runner_for: Callable[..., AccountRunner],
    point: str,
    capabilities: Any,
) -> None:
    data = long_header("an article", "Message-ID: <deep@example.org>")
    assert data.index(b"Message-ID") > 4096
    server = dovecot_factory(capabilities=capabilities)
    server.append(DEFAULT_USER, "INBOX", data)
    killed_at(point, runner_for, server, max_message_bytes=4096)

    runner = runner_for(server, max_message_bytes=4096)
    assert runner.pass_once().recovered == 1
    assert runner.pass_once().outcomes == []

    assert server.messages(DEFAULT_USER, "INBOX") == []
    assert server.messages(DEFAULT_USER, ARTICLES) == [data]


def test_an_interrupted_carry_over_is_done_again_in_full(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    for n in range(3):
        dovecot.append(DEFAULT_USER, "INBOX", message(n, f"an article {n}"))
    everything_kept = {"article_share": 1.0, "favour_request": 1.0}
    assert [o.action for o in runner_for(dovecot, thresholds=everything_kept).pass_once().outcomes] == ["keep"] * 3
    dovecot.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)

    class DropsDuringCarryOver(ImapMailbox):
        def fingerprints(self, uids: Sequence[int]) -> Any:
            self._session.shutdown()  # the connection drops under the scan
            return super().fingerprints(uids)

    with pytest.raises(ConnectionLost):
        runner_for(dovecot, DropsDuringCarryOver).pass_once()
    # Thresholds that would now move all three: they were judged already, and stay.
    report = runner_for(dovecot).pass_once()

    assert report.carried_over == 3
    assert report.outcomes == []
    assert len(dovecot.messages(DEFAULT_USER, "INBOX")) == 3


def test_a_move_redone_after_a_crash_recreates_a_folder_deleted_meanwhile(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    dovecot.append(DEFAULT_USER, "INBOX", message(1, "an article"))
    killed_at("move", runner_for, dovecot)
    # While it is down, the owner renames the folders in the config and deletes the old, empty one.
    dovecot.doveadm("mailbox", "delete", "-u", DEFAULT_USER, ARTICLES)
    dovecot.append(DEFAULT_USER, "INBOX", message(2, "a favour"))
    renamed = {"folders": {"article_share": "Reading", "favour_request": "Asks"}}

    report = runner_for(dovecot, account=renamed).pass_once()

    assert report.recovered == 1
    assert [(o.action, o.target) for o in report.outcomes] == [("move", "Asks")]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == []
    assert dovecot.messages(DEFAULT_USER, ARTICLES) == [message(1, "an article")]


def test_a_message_the_owner_brought_back_stays_however_often_it_comes_and_goes(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    dovecot.append(DEFAULT_USER, "INBOX", message(1, "an article"))
    outcomes = [[(o.action, o.target) for o in runner_for(dovecot).pass_once().outcomes]]
    for there, back in ((ARTICLES, "INBOX"), ("INBOX", "Later"), ("Later", "INBOX")):
        if back != "INBOX":
            dovecot.create(DEFAULT_USER, back)
        dovecot.doveadm("move", "-u", DEFAULT_USER, back, "mailbox", there, "ALL")
        if back == "INBOX":
            outcomes.append([(o.action, o.target) for o in runner_for(dovecot).pass_once().outcomes])

    assert outcomes == [[("move", ARTICLES)], [("keep", None)], [("keep", None)]]
    assert len(dovecot.messages(DEFAULT_USER, "INBOX")) == 1


def test_a_look_alike_of_a_moved_message_is_judged_and_a_copy_brought_back_is_not(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    # Two alerts without a Message-ID, of one size, arriving in one second, one pass apart: one fingerprint.
    first = b"From: alerts@monitor.example\r\nSubject: an article on disk sda1 at 91%\r\n\r\nHost web1: 91% full.\r\n"
    second = b"From: alerts@monitor.example\r\nSubject: an article on disk sdb1 at 92%\r\n\r\nHost db2:  92% full.\r\n"
    when = '"02-Mar-2026 10:00:00 +0000"'
    dovecot.append(DEFAULT_USER, "INBOX", first, internaldate=when)
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move"]
    dovecot.append(DEFAULT_USER, "INBOX", second, internaldate=when)
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["move"]
    assert sorted(dovecot.messages(DEFAULT_USER, ARTICLES)) == sorted([first, second])

    # The owner copies the first back and keeps it in both folders, as a Gmail label does: it stays.
    dovecot.doveadm("copy", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "SUBJECT", "sda1")
    assert [o.action for o in runner_for(dovecot).pass_once().outcomes] == ["keep"]
    assert dovecot.messages(DEFAULT_USER, "INBOX") == [first]


def test_search_goes_in_windows_and_misses_nothing(
    dovecot: LocalDovecot,
    open_mailbox: Callable[..., ImapMailbox],
    imap_commands: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(filter.imap, "_SEARCH_WINDOW", 4)
    uids = [dovecot.append(DEFAULT_USER, "INBOX", message(n, "note")) for n in range(11)]
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")
    late = dovecot.append(DEFAULT_USER, "INBOX", message(99, "late"))  # after SELECT: only the open window sees it

    assert mailbox.search_uids(1) == [*uids, late]
    assert mailbox.search_uids(uids[5]) == [*uids[5:], late]
    assert mailbox.search_uids(late + 1) == []
    searches = [c for c in imap_commands() if c.startswith("UID SEARCH")]
    assert searches[:4] == ["UID SEARCH 4,8", "UID SEARCH UID 1:4", "UID SEARCH UID 5:8", "UID SEARCH UID 9:*"]
    assert searches[4:7] == ["UID SEARCH 4,8", "UID SEARCH UID 6:8", "UID SEARCH UID 9:*"]


def test_a_big_folder_with_sparse_uids_costs_no_more_searches_than_a_dense_one(
    dovecot: LocalDovecot,
    open_mailbox: Callable[..., ImapMailbox],
    imap_commands: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Windows of UIDs alone would take 2.5 million SEARCHes here: one per 4 UIDs up to 10 million."""
    monkeypatch.setattr(filter.imap, "_SEARCH_WINDOW", 4)
    uids = []
    for n in range(10):
        dovecot.doveadm("mailbox", "update", "-u", DEFAULT_USER, "--min-next-uid", str((n + 1) * 1_000_000), "INBOX")
        uids.append(dovecot.append(DEFAULT_USER, "INBOX", message(n, "note")))
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    assert mailbox.search_uids(1) == uids
    assert mailbox.search_uids(uids[5]) == uids[5:]
    searches = [c for c in imap_commands() if c.startswith("UID SEARCH")]
    assert searches == [
        "UID SEARCH 4,8",
        f"UID SEARCH UID 1:{uids[3]}",
        f"UID SEARCH UID {uids[3] + 1}:{uids[7]}",
        f"UID SEARCH UID {uids[7] + 1}:*",
        "UID SEARCH 4,8",
        f"UID SEARCH UID {uids[5]}:{uids[7]}",
        f"UID SEARCH UID {uids[7] + 1}:*",
    ]


def test_a_small_folder_with_high_uids_is_searched_once(
    dovecot: LocalDovecot,
    open_mailbox: Callable[..., ImapMailbox],
    imap_commands: Callable[[], list[str]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(filter.imap, "_SEARCH_WINDOW", 4)
    dovecot.doveadm("mailbox", "update", "-u", DEFAULT_USER, "--min-next-uid", "4000000000", "INBOX")
    uids = [dovecot.append(DEFAULT_USER, "INBOX", message(n, "note")) for n in range(3)]
    assert uids[0] >= 4_000_000_000
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")

    assert mailbox.search_uids(1) == uids
    assert [c for c in imap_commands() if c.startswith("UID SEARCH")] == ["UID SEARCH UID 1:*"]


def test_fetch_reads_message_id_and_date_from_the_header_whatever_the_cap(
    dovecot: LocalDovecot, open_mailbox: Callable[..., ImapMailbox]
) -> None:
    data = long_header("hi", "Date: Mon, 02 Mar 2026 10:00:00 +0000", "Message-ID: <deep@example.org>")
    dovecot.append(DEFAULT_USER, "INBOX", data)
    mailbox = open_mailbox(dovecot)
    mailbox.select("INBOX")
    (raw,) = mailbox.fetch(mailbox.search_uids(1), 4096)
    assert raw.truncated and raw.message_id == "<deep@example.org>"
    assert raw.dated == 1772445600.0


def test_a_message_whose_date_lies_past_the_fetch_cap_is_timed_by_its_date(
    dovecot: LocalDovecot, runner_for: Callable[..., AccountRunner]
) -> None:
    data = long_header("an article", "Date: Mon, 02 Mar 2026 10:00:00 +0000", "Message-ID: <late-date@example.org>")
    dovecot.append(DEFAULT_USER, "INBOX", data)
    runner = runner_for(dovecot, max_message_bytes=4096)
    runner.pass_once()
    assert runner.state.history("s@example.org").shares == (1772445600.0,)
