"""export_account's file handling, on a stand-in mailbox (the IMAP side is tested against Dovecot)."""

from __future__ import annotations

import stat
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from filter.config import AccountConfig
from filter.errors import ExportError, FolderError, MailboxError
from filter.export import export_account
from filter.mailbox import Fingerprint, MailboxStatus, RawMessage
from filter.state import State

ARTICLES = "Networking/Articles"
ACCOUNT = AccountConfig(
    name="home",
    host="127.0.0.1",
    port=143,
    security="plain",
    ca_file=None,
    username="u",
    password_command=None,
    password_env="PW",
    password=None,
    watch="INBOX",
    folders={"article_share": ARTICLES, "favour_request": "Networking/Requests"},
    timeout=60,
)
MAIL = b"From: a@example.org\r\nSubject: x\r\n\r\nsome text\r\n"


class OneArticle:
    """A mailbox whose article folder holds one message (UIDVALIDITY 7, UID 5) and nothing else."""

    def __init__(self) -> None:
        self.folder = ""

    def examine(self, folder: str) -> MailboxStatus:
        if folder != ARTICLES:
            raise FolderError(f"{folder} does not exist")
        self.folder = folder
        return MailboxStatus(uidvalidity=7, uidnext=6, exists=1)

    def search_uids(self, first_uid: int = 1) -> list[int]:
        return [5]

    def fingerprints(self, uids: list[int]) -> dict[int, Fingerprint]:
        return {5: Fingerprint("", len(MAIL), datetime(2020, 1, 1, tzinfo=UTC))}

    def fetch(self, uids: list[int], max_bytes: int) -> list[RawMessage]:
        when = datetime(2020, 1, 1, tzinfo=UTC)
        return [RawMessage(5, 7, (), len(MAIL), when, MAIL[:max_bytes], len(MAIL) > max_bytes, "")]


def run(out: Path, max_bytes: int = 10_000) -> None:
    export_account(ACCOUNT, OneArticle(), State.in_memory(), out, max_bytes=max_bytes, now=time.time())  # type: ignore[arg-type]


def test_links_planted_at_the_file_names_are_never_written_through(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    articles = tmp_path / "out" / "home" / "articles"
    articles.mkdir(parents=True)
    (articles / ".networking.articles-7-5.eml.part").symlink_to(victim)
    (articles / "networking.articles-7-5.eml").symlink_to(victim)

    run(tmp_path / "out")

    assert victim.read_text() == "precious\n"
    written = articles / "networking.articles-7-5.eml"
    assert not written.is_symlink() and written.read_bytes() == MAIL
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert sorted(p.name for p in articles.iterdir()) == ["networking.articles-7-5.eml"]


def test_a_file_cut_at_another_size_is_written_again(tmp_path: Path) -> None:
    run(tmp_path / "out", max_bytes=20)
    path = tmp_path / "out" / "home" / "articles" / "networking.articles-7-5.eml"
    assert path.read_bytes() == MAIL[:20]
    run(tmp_path / "out")
    assert path.read_bytes() == MAIL


def test_files_not_written_by_export_are_left_alone(tmp_path: Path) -> None:
    articles = tmp_path / "out" / "home" / "articles"
    articles.mkdir(parents=True)
    (articles / "notes.txt").write_text("mine")
    (articles / "networking.articles-7-4.eml").write_bytes(MAIL)  # a message no longer there

    run(tmp_path / "out")

    assert sorted(p.name for p in articles.iterdir()) == ["networking.articles-7-5.eml", "notes.txt"]


def test_a_label_folder_that_is_a_link_is_refused(tmp_path: Path) -> None:
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / "keep-1-1.eml").write_text("someone else's file")
    (tmp_path / "out" / "home").mkdir(parents=True)
    (tmp_path / "out" / "home" / "articles").symlink_to(elsewhere)

    with pytest.raises(ExportError, match="is a link"):
        run(tmp_path / "out")

    assert [p.name for p in elsewhere.iterdir()] == ["keep-1-1.eml"]


class ArticlesWillNotOpen(OneArticle):
    def examine(self, folder: str) -> MailboxStatus:
        if folder == ARTICLES:
            raise MailboxError("EXAMINE refused")
        return super().examine(folder)


def test_a_folder_that_will_not_open_fails_the_account_and_keeps_earlier_files(tmp_path: Path) -> None:
    run(tmp_path / "out")
    earlier = tmp_path / "out" / "home" / "articles" / "networking.articles-7-5.eml"
    assert earlier.exists()

    with pytest.raises(MailboxError, match="files of earlier runs are kept"):
        export_account(
            ACCOUNT, ArticlesWillNotOpen(), State.in_memory(), tmp_path / "out", max_bytes=10_000, now=time.time()
        )  # type: ignore[arg-type]

    assert earlier.exists()
