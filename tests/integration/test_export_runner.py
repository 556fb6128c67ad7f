"""export beside the runner that made the decisions it reads: in-process, against a real Dovecot.

Each case is a way the log and the folders can disagree about who decided what.
"""

# ruff: noqa: F811 - runner_for is test_recovery's fixture, imported to be used as one
from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pytest
from test_recovery import ARTICLES, Killed, runner_for  # noqa: F401

from filter.dovecot import DEFAULT_USER, LocalDovecot
from filter.export import LABEL_DIRS, export_account
from filter.imap import ImapMailbox
from filter.mailbox import TargetMark
from filter.runner import AccountRunner

REQUESTS = "Networking/Requests"
LATER = time.time() + 30 * 86400  # export run a month later: every decision settled
DATE = '"02-Mar-2026 10:00:00 +0000"'
# Two monitor alerts without a Message-ID, of one size, arriving in one second (as in test_recovery).
SHARE = b"From: alerts@monitor.example\r\nSubject: an article on disk sda1 at 91%\r\n\r\nHost web1: 91% full.\r\n"
PLAIN = b"From: alerts@monitor.example\r\nSubject: a warning on disk sdb11 at 92%\r\n\r\nHost db2:  92% full.\r\n"
ASK = b"From: alerts@monitor.example\r\nSubject: a favour: disk sdb11 at 92%\r\n\r\nHost db2:  92% full.\r\n"
ASK = ASK[:-2] + b"x" * (len(SHARE) - len(ASK)) + b"\r\n"
SHARE2 = SHARE.replace(b"sda1", b"sdz9")
assert len(SHARE) == len(PLAIN)


@pytest.fixture
def judged(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner]
) -> Callable[..., tuple[LocalDovecot, AccountRunner, bytes]]:
    """One message in a new server's inbox, judged by one pass: (server, runner, message)."""

    def make(
        subject: str, message_id: str | None = "m@x.example", **settings: Any
    ) -> tuple[LocalDovecot, AccountRunner, bytes]:
        server = dovecot_factory()
        head = f"From: a@x.example\r\nSubject: {subject}\r\n" + (
            f"Message-ID: <{message_id}>\r\n" if message_id else ""
        )
        msg = (head + "\r\nbody\r\n").encode()
        server.append(DEFAULT_USER, "INBOX", msg, internaldate=DATE)
        runner = runner_for(server, **settings)
        runner.pass_once()
        return server, runner, msg

    return make


def export(runner: AccountRunner, out: Path, now: float = LATER):
    return export_account(runner.account, runner.mailbox, runner.state, out, max_bytes=10**6, now=now)


def tree(out: Path) -> dict[str, list[bytes]]:
    return {d: sorted(p.read_bytes() for p in (out / "home" / d).iterdir()) for d in LABEL_DIRS}


def test_two_messages_sharing_a_key_across_passes_keep_their_labels(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    server.append(DEFAULT_USER, "INBOX", SHARE, internaldate=DATE)
    runner = runner_for(server)
    runner.pass_once()  # SHARE moved to the article folder
    server.append(DEFAULT_USER, "INBOX", PLAIN, internaldate=DATE)
    runner.pass_once()  # PLAIN: same fingerprint key, taken for "brought back", kept
    assert len(server.messages(DEFAULT_USER, ARTICLES)) == 1

    export(runner, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got["articles"] == [SHARE], got


def test_two_messages_sharing_a_key_in_one_batch_keep_their_own_judgements(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    server.append(DEFAULT_USER, "INBOX", PLAIN, internaldate=DATE)
    server.append(DEFAULT_USER, "INBOX", SHARE, internaldate=DATE)
    runner = runner_for(server)
    runner.pass_once()  # both judged fresh in one batch: SHARE moved, PLAIN kept with no label
    uidvalidity = runner.mailbox.select("INBOX").uidvalidity
    (plain_uid,) = runner.mailbox.search_uids()
    judgement = runner.state.judgements("home", "INBOX", uidvalidity, [plain_uid])[plain_uid]
    assert (judgement.action, judgement.labels) == ("keep", ())  # its own, not the move of its twin
    report = export(runner, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got["articles"] == [SHARE]
    # Its twin's key is filed in the article folder, and a filed message is never ham: with no Message-ID
    # to tell them apart, PLAIN is left out, the safe side.
    assert got["ham"] == [], report.summary()


def test_review_mail_the_owner_sorted_is_a_verdict(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    one = b"From: a@x.example\r\nSubject: article one\r\nMessage-ID: <one@x.example>\r\n\r\nbody\r\n"
    two = b"From: b@x.example\r\nSubject: article two\r\nMessage-ID: <two@x.example>\r\n\r\nbody\r\n"
    server.append(DEFAULT_USER, "INBOX", one, internaldate=DATE)
    server.append(DEFAULT_USER, "INBOX", two, internaldate=DATE)
    runner = runner_for(
        server,
        thresholds={"article_share": 0.995, "favour_request": 0.995},
        review_band=0.05,
        account={"folders": {"review": "Review"}},
    )
    runner.pass_once()  # both 0.99: within the review band, moved to Review with $PloyReview
    assert len(server.messages(DEFAULT_USER, "Review")) == 2
    # The owner looks at them: one is a share (into the article folder), one is ordinary (back to the inbox).
    server.doveadm("move", "-u", DEFAULT_USER, ARTICLES, "mailbox", "Review", "HEADER", "Subject", "article one")
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", "Review", "HEADER", "Subject", "article two")
    runner.pass_once()  # two: brought back, kept
    export(runner, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got["articles"] == [one] and got["ham"] == [two], got


class MovedThenKilled(ImapMailbox):
    def move(
        self,
        uids: Sequence[int],
        folder: str,
        copied: Callable[[], None] | None = None,
        copying: Callable[[TargetMark], None] | None = None,
    ) -> None:
        super().move(uids, folder, copied, copying)
        raise Killed("after MOVE, before the record")


def test_a_move_not_yet_recorded_is_not_settled(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    server.append(DEFAULT_USER, "INBOX", b"From: a@x.example\r\nSubject: article\r\nMessage-ID: <m@x>\r\n\r\nb\r\n")
    runner = runner_for(server, MovedThenKilled)
    with pytest.raises(Killed):
        runner.pass_once()
    assert len(server.messages(DEFAULT_USER, ARTICLES)) == 1
    export(runner, tmp_path / "out", now=time.time())  # default 7 settled days, right now
    assert tree(tmp_path / "out")["articles"] == []


def test_a_copy_filed_in_a_label_folder_wins_over_the_inbox(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("hello")  # ordinary: kept
    # The owner files it under Articles and keeps it in the inbox (a Gmail label, or a client's "copy to").
    server.doveadm("copy", "-u", DEFAULT_USER, ARTICLES, "mailbox", "INBOX", "ALL")
    export(runner, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got["articles"] == [msg], got


def test_a_carry_over_is_not_a_fresh_move(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("an article")  # moved
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "ALL")  # owner: not a share
    runner.pass_once()  # brought back: kept
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # all that was a month ago
        db.execute("UPDATE decisions SET time = ?", (time.time() - 30 * 86400,))
    server.set_uidvalidity(DEFAULT_USER, "INBOX", 4242)
    runner.pass_once()  # carried over: logged again now, with action 'move'
    # The owner now decides it is an ask after all, and moves it there themselves.
    server.doveadm("move", "-u", DEFAULT_USER, "Networking/Requests", "mailbox", "INBOX", "ALL")
    report = export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["favours"] == [msg], report.summary()


def test_a_digest_in_the_inbox_is_not_ordinary_mail(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    runner = runner_for(
        server, thresholds={"article_share": 0.999, "favour_request": 0.999}, digest={"folder": "INBOX"}
    )
    runner.state.set_last_digest("home", time.time() - 9 * 86400)  # the digest is due
    runner.pass_once()  # appended to the inbox, then judged there like any mail
    inbox = server.messages(DEFAULT_USER, "INBOX")
    assert len(inbox) == 1 and b"@ployfilter.invalid>" in inbox[0]
    export(runner, tmp_path / "out")
    assert tree(tmp_path / "out")["ham"] == []


def test_mail_brought_back_counts_at_once(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("an article")  # moved to Articles
    with sqlite3.connect(tmp_path / "state.sqlite3") as db:  # the filter's move was a month ago
        db.execute("UPDATE decisions SET time = ?", (time.time() - 30 * 86400,))
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "ALL")  # owner: not a share
    runner.pass_once()  # brought back: kept
    report = export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["ham"] == [msg], report.summary()


def test_review_mail_the_owner_moved_out_counts_at_once(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, one = judged(
        "article one",
        thresholds={"article_share": 0.995, "favour_request": 0.995},
        review_band=0.05,
        account={"folders": {"review": "Review"}},
    )  # moved to Review
    server.doveadm("move", "-u", DEFAULT_USER, ARTICLES, "mailbox", "Review", "ALL")  # owner: a share
    report = export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["articles"] == [one], report.summary()


def test_owner_correction_between_label_folders_counts_at_once(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("an article")  # moved to Articles
    server.doveadm("move", "-u", DEFAULT_USER, REQUESTS, "mailbox", ARTICLES, "ALL")  # owner: it's an ask
    report = export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["favours"] == [msg], report.summary()


def test_brought_back_stays_ham_after_switch_to_flag(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("an article")  # moved to Articles, with $PloyArticle
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "ALL")  # owner: not a share
    runner.pass_once()  # brought back: kept
    # the owner now sets action: flag
    report = export_account(
        runner.account, runner.mailbox, runner.state, tmp_path / "out", max_bytes=10**6, now=LATER, flagging=True
    )
    got = tree(tmp_path / "out")
    assert got["ham"] == [msg] and got["articles"] == [], (got, report.summary())


def test_a_copy_without_a_message_id_counts_where_it_was_filed(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("hello", message_id=None)  # ordinary: kept
    server.doveadm("copy", "-u", DEFAULT_USER, ARTICLES, "mailbox", "INBOX", "ALL")
    export(runner, tmp_path / "out")
    got = tree(tmp_path / "out")
    assert got["ham"] == [] and got["articles"] == [msg], got


def test_filed_in_the_one_label_folder_and_kept_in_inbox_is_not_ham(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    one_folder = {"article_share": "Networking", "favour_request": "Networking"}
    server, runner, msg = judged("hello", account={"folders": one_folder})  # ordinary: kept
    server.doveadm("copy", "-u", DEFAULT_USER, "Networking", "mailbox", "INBOX", "ALL")  # owner files it (a label)
    report = export(runner, tmp_path / "out")
    assert tree(tmp_path / "out")["ham"] == [], report.summary()


def test_fresh_moves_sharing_a_key_in_one_batch_both_wait(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    server.append(DEFAULT_USER, "INBOX", SHARE, internaldate=DATE)
    server.append(DEFAULT_USER, "INBOX", ASK, internaldate=DATE)
    runner = runner_for(server)
    runner.pass_once()  # one batch: SHARE to the articles, ASK to the requests, both by the filter, just now
    assert len(server.messages(DEFAULT_USER, REQUESTS)) == 1
    export(runner, tmp_path / "out", now=time.time())
    got = tree(tmp_path / "out")
    assert got["articles"] == [] and got["favours"] == [], got


def test_a_message_only_sharing_a_key_with_one_brought_back_waits(
    dovecot_factory: Callable[..., LocalDovecot], runner_for: Callable[..., AccountRunner], tmp_path: Path
) -> None:
    server = dovecot_factory()
    server.append(DEFAULT_USER, "INBOX", SHARE, internaldate=DATE)
    runner = runner_for(server)
    runner.pass_once()  # SHARE moved
    server.append(DEFAULT_USER, "INBOX", SHARE2, internaldate=DATE)  # another share, same size and second
    runner.pass_once()  # taken for SHARE brought back: the owner never touched it
    export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["ham"] == []


def test_a_filed_copy_beyond_the_limit_still_keeps_its_inbox_copy_out_of_ham(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, _ = judged("hello")  # ordinary: kept
    server.doveadm("copy", "-u", DEFAULT_USER, ARTICLES, "mailbox", "INBOX", "ALL")  # the owner files a copy
    server.append(DEFAULT_USER, ARTICLES, b"From: b@x\r\nSubject: other\r\nMessage-ID: <o@x>\r\n\r\nb\r\n")
    export_account(runner.account, runner.mailbox, runner.state, tmp_path / "out", max_bytes=10**6, now=LATER, limit=1)
    assert tree(tmp_path / "out")["ham"] == []


def test_filing_again_after_bringing_back_counts_at_once(
    judged: Callable[..., tuple[LocalDovecot, AccountRunner, bytes]], tmp_path: Path
) -> None:
    server, runner, msg = judged("an article")  # moved to the articles
    server.doveadm("move", "-u", DEFAULT_USER, "INBOX", "mailbox", ARTICLES, "ALL")  # the owner: not a share
    runner.pass_once()  # brought back
    server.doveadm("move", "-u", DEFAULT_USER, ARTICLES, "mailbox", "INBOX", "ALL")  # the owner: a share after all
    export(runner, tmp_path / "out", now=time.time())
    assert tree(tmp_path / "out")["articles"] == [msg]
