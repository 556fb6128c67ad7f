"""The owner's own verdicts, out of their mailbox and into a tree that ``ployfilter train`` reads.

The owner teaches ployfilter by moving mail: what stays in the article and
request folders is theirs to call a share or an ask, and what the daemon
judged and left in the watched folder, or what the owner brought back to it,
is ordinary once the owner has had days to move it. ``export_account``
writes those messages, one ``.eml`` file each, under
``<out>/<account>/articles``, ``favours``, ``both`` and ``ham``: the folder
names ``train`` takes labels from. Nothing else is read: review-band mail
and inbox mail the daemon never judged carry no verdict of the owner's.

Only the server is read, with ``BODY.PEEK`` (no \\Seen set, nothing moved),
and only ``<out>/<account>/`` is written: each run makes it match the
mailbox, so that a message the owner moved since the last run does not stay
behind under its old label. Files are the owner's mail, so they are written
readable by the owner alone.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filter.config import AccountConfig
from filter.errors import MailboxError
from filter.mailbox import Mailbox, RawMessage
from filter.policy import KEYWORDS, REVIEW_KEYWORD
from filter.state import State

log = logging.getLogger(__name__)

LABEL_DIRS = ("articles", "favours", "both", "ham")
DEFAULT_LIMIT = 5000
DEFAULT_SETTLED_DAYS = 7.0
FETCH_BATCH = 100

# The files this module writes, <folder>-<uidvalidity>-<uid>.eml, and the hidden .part files they are
# written as: only these are ever removed.
_OURS = re.compile(r"\.?[\w.-]+-\d+-\d+\.eml(?:\.part)?\Z")
_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass
class ExportReport:
    """What one account's export wrote: files per label folder, and stale files removed."""

    account: str
    root: Path
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABEL_DIRS, 0))
    removed: int = 0
    not_settled: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{self.counts[d]} {d}" for d in LABEL_DIRS)
        line = f"{self.account}: {parts} in {self.root}"
        if self.not_settled:
            line += f"; {self.not_settled} judged too recently to count as ordinary"
        if self.removed:
            line += f"; {self.removed} files of messages no longer there removed"
        return line


def export_account(
    account: AccountConfig,
    mailbox: Mailbox,
    state: State,
    out: Path,
    *,
    max_bytes: int,
    now: float,
    flagging: bool = False,
    settled_days: float = DEFAULT_SETTLED_DAYS,
    limit: int = DEFAULT_LIMIT,
) -> ExportReport:
    """Write the account's labelled mail under ``out/<account>/`` (see the module docstring).

    ``mailbox`` is connected. Each folder gives at most its ``limit`` newest
    messages, each cut at ``max_bytes`` as the daemon judges it. Ordinary
    mail must have arrived, and been judged, ``settled_days`` before ``now``
    or earlier. With
    ``flagging`` (the config's ``action: flag``), the daemon leaves labelled
    mail in place with its keywords, and the owner corrects it by taking them
    off: settled mail of the watched folder is then labelled by its keywords.
    """
    root = out / slug(account.name)
    report = ExportReport(account.name, root)
    unread: list[str] = []
    for path in (out, root, *(root / d for d in LABEL_DIRS)):
        path.mkdir(mode=0o700, exist_ok=True)
    written: set[Path] = set()
    article_folder = account.folders["article_share"]
    favour_folder = account.folders["favour_request"]
    for folder in dict.fromkeys((article_folder, favour_folder)):
        selected = _select(mailbox, folder)
        if selected is None:
            unread.append(folder)
            continue
        for raw in _fetch(mailbox, selected[1][-limit:], max_bytes):
            label = "articles"
            if folder == favour_folder:
                # A message the daemon found to be both goes to the request folder with both keywords;
                # one the owner moved there from the article folder has the article keyword alone.
                label = "both" if _keyword_label(raw) == "both" else "favours"
            written.add(_write(root / label, folder, raw, report))
    selected = _select(mailbox, account.watch)
    if selected is None:
        unread.append(account.watch)
    else:
        uidvalidity, uids = selected
        judged = state.judged_at(account.name, account.watch, uidvalidity, uids)
        settled_before = now - settled_days * 86400
        for raw in _fetch(mailbox, [uid for uid in uids if uid in judged][-limit:], max_bytes):
            if REVIEW_KEYWORD.lower() in {f.lower() for f in raw.flags}:
                continue  # set aside for a look in place: the owner has not said
            # Settled: the owner has had the days since both its arrival and its judgement to move it.
            arrived = raw.internaldate.timestamp() if raw.internaldate is not None else now
            if max(arrived, judged[raw.uid] or 0.0) > settled_before:
                report.not_settled += 1
                continue
            # Flagging, the daemon's keywords stand until the owner takes them off. Moving, a message
            # with them is back in the watched folder because the owner brought it back: ordinary.
            label = (_keyword_label(raw) if flagging else None) or "ham"
            written.add(_write(root / label, account.watch, raw, report))
    if unread:
        # A folder that would not open may hold mail still: its files stay until a run reads it.
        log.warning("%s: files of earlier runs kept, since %s could not be read", account.name, ", ".join(unread))
    else:
        report.removed = _remove_stale(root, written)
    return report


def _keyword_label(raw: RawMessage) -> str | None:
    """The label folder the daemon's keywords on ``raw`` name, or None without them."""
    flags = {f.lower() for f in raw.flags}
    article = KEYWORDS["article_share"].lower() in flags
    favour = KEYWORDS["favour_request"].lower() in flags
    if article and favour:
        return "both"
    return "articles" if article else "favours" if favour else None


def _select(mailbox: Mailbox, folder: str) -> tuple[int, list[int]] | None:
    """(UIDVALIDITY, UIDs) of ``folder``, or None when the server will not open it (not created yet)."""
    try:
        status = mailbox.select(folder)
    except MailboxError as exc:
        log.warning("%s: skipped (%s)", folder, exc)
        return None
    return status.uidvalidity, mailbox.search_uids()


def _fetch(mailbox: Mailbox, uids: Sequence[int], max_bytes: int) -> Iterable[RawMessage]:
    for i in range(0, len(uids), FETCH_BATCH):
        yield from mailbox.fetch(uids[i : i + FETCH_BATCH], max_bytes)


def _write(folder_dir: Path, folder: str, raw: RawMessage, report: ExportReport) -> Path:
    """Write ``raw`` once; a file already there from an earlier run holds the same message."""
    path = folder_dir / f"{slug(folder)}-{raw.uidvalidity}-{raw.uid}.eml"
    if not path.exists():
        partial = path.with_name("." + path.name + ".part")
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw.data)
        os.replace(partial, path)
    report.counts[folder_dir.name] += 1
    return path


def _remove_stale(root: Path, written: set[Path]) -> int:
    removed = 0
    for label in LABEL_DIRS:
        for path in (root / label).iterdir():
            if path not in written and _OURS.match(path.name):
                path.unlink()
                removed += 1
    return removed


def slug(name: str) -> str:
    """A file-name-safe form of a folder or account name ("Networking/Articles" -> "networking.articles")."""
    return _UNSAFE.sub(".", name.lower()).strip(".") or "folder"
