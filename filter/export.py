"""The owner's own verdicts, out of their mailbox and into a tree that ``ployfilter train`` reads.

The owner teaches ployfilter by moving mail: what stays in the article and
request folders is theirs to call a share or an ask, and what the daemon
judged ordinary and left in the watched folder, or what the owner brought
back to it, is ordinary once the owner has had days to move it.
``export_account`` writes those messages, one ``.eml`` file each, under
``<out>/<account>/articles``, ``favours``, ``both`` and ``ham``: the folder
names ``train`` takes labels from. Mail that carries no verdict of the
owner's is left out: review-band mail, mail marked \\Deleted, and mail the
model labelled that the owner's rules kept (they were never asked).

Every folder is opened with EXAMINE and read with ``BODY.PEEK``, so no flag
changes, and only ``<out>/<account>/`` is written: each run makes it match
the mailbox, so that a message the owner moved since the last run does not
stay behind under its old label. Files are the owner's mail, so they are
written readable by the owner alone, and never through a link.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filter.config import AccountConfig
from filter.errors import ExportError, FolderError, MailboxError
from filter.mailbox import Mailbox, RawMessage
from filter.policy import KEYWORDS, REVIEW_KEYWORD
from filter.runner import fingerprint_of
from filter.senders import is_digest
from filter.state import Judgement, State, fingerprint_key

log = logging.getLogger(__name__)

LABEL_DIRS = ("articles", "favours", "both", "ham")
DEFAULT_LIMIT = 5000
DEFAULT_SETTLED_DAYS = 7.0
FETCH_BATCH = 100
_DELETED = "\\deleted"

# The files this module writes, <folder>-<uidvalidity>-<uid>.eml, and the hidden .part files they are
# written as: only these are ever removed.
_OURS = re.compile(r"[\w.-]+-\d+-\d+\.eml(?:\.part)?\Z")
_UNSAFE = re.compile(r"[^\w.-]+")


@dataclass
class ExportReport:
    """What one account's export wrote: files per label folder, and stale files removed."""

    account: str
    root: Path
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(LABEL_DIRS, 0))
    removed: int = 0
    not_settled: int = 0
    settled_days: float = 0.0
    kept_by_rules: int = 0
    blocked: int = 0
    unlabelled: int = 0
    no_verdict: int = 0

    def summary(self) -> str:
        parts = ", ".join(f"{self.counts[d]} {d}" for d in LABEL_DIRS)
        line = f"{self.account}: {parts} in {self.root}"
        if self.not_settled:
            line += f"; {self.not_settled} decided by the filter less than {self.settled_days:g} days ago, not yet"
        if self.kept_by_rules:
            line += f"; {self.kept_by_rules} labelled but kept by your rules, left out"
        if self.blocked:
            line += f"; {self.blocked} moved for your block list alone, left out"
        if self.unlabelled:
            line += (
                f"; {self.unlabelled} without the daemon's keywords in the one label folder, left out"
                " (add $PloyArticle or $PloyFavour to count them)"
            )
        if self.no_verdict:
            line += f"; {self.no_verdict} waiting in review, deleted or digests, left out"
        if self.removed:
            line += f"; {self.removed} files of earlier runs removed (moved since, gone, or past --limit)"
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

    ``mailbox`` is connected; every folder is opened read-only. Each folder
    gives at most its ``limit`` newest messages, each cut at ``max_bytes``
    as the daemon judges it; mail marked \\Deleted is left out. Ordinary
    mail must have been judged ``settled_days`` before ``now`` or earlier,
    with no label, or be mail the owner brought back. With ``flagging``
    (the config's ``action: flag``), the daemon leaves labelled mail in
    place with its keywords, and the owner corrects it by taking them off:
    settled mail of the watched folder is then labelled by its keywords.
    Raises ExportError when a file cannot be written.
    """
    root = out / slug(account.name)
    report = ExportReport(account.name, root, settled_days=settled_days)
    settled_before = now - settled_days * 86400
    article_folder = account.folders["article_share"]
    favour_folder = account.folders["favour_request"]
    label_folders = (article_folder,) if article_folder == favour_folder else (article_folder, favour_folder)
    try:
        for path in (out, root, *(root / d for d in LABEL_DIRS)):
            path.mkdir(mode=0o700, parents=True, exist_ok=True)
            if path != out and path.is_symlink():
                raise ExportError(f"export: {path} is a link; export writes only into folders of its own")
        # identity -> the file written for it: a message read twice in one run (moved from one folder
        # to another while the run went on) keeps the later file only.
        written: dict[str, Path] = {}
        filed: set[str] = set()  # fingerprint keys of the messages in the label folders, labelled or not
        for folder in label_folders:
            uidvalidity, uids = _examine(mailbox, folder)
            # Every message filed here, beyond --limit too, keeps its inbox copy (a Gmail label, a "copy
            # to") out of ham. Without a Message-ID, two messages may share a key: blocking both is safe.
            filed.update(fingerprint_key(fp) for fp in mailbox.fingerprints(uids).values())
            for raws in _batches(mailbox, uids[-limit:], max_bytes):
                keys = {raw.uid: fingerprint_key(fingerprint_of(raw)) for raw in raws}
                moved = state.moved_at(account.name, account.watch, keys.values())
                for raw in raws:
                    flags = _flags(raw)
                    # Review mail is set aside by the filter in the review folder; moved from there into a
                    # label folder, it is the owner's verdict.
                    if _no_verdict(raw, flags, review_in_place=folder == account.review_folder):
                        report.no_verdict += 1
                        continue
                    when, labelled = moved.get(keys[raw.uid], {}).get(folder, (0.0, True))
                    if not labelled:
                        # Moved here by the filter for the block list alone, not for what it says: the owner's
                        # rule, not a verdict on the message (moved here by the owner, it counts).
                        report.blocked += 1
                        continue
                    if when > settled_before:
                        # Where the filter put it lately: the owner may still move it. Found anywhere else, the
                        # owner moved it there, and that counts at once.
                        report.not_settled += 1
                        continue
                    label = _folder_label(flags, folder, article_folder, favour_folder)
                    if label is None:
                        report.unlabelled += 1
                        continue
                    _keep(written, _identity(raw, keys[raw.uid]), _write(root / label, folder, uidvalidity, raw))
        uidvalidity, uids = _examine(mailbox, account.watch)
        if uids:
            judged = state.judgements(account.name, account.watch, uidvalidity, uids)
            settled = []
            for uid in uids:
                judgement = judged.get(uid)
                if judgement is None or judgement.action == "skip":
                    continue  # never judged (or could not be): no verdict to take
                if judgement.time > settled_before and not judgement.returned:
                    report.not_settled += 1
                else:
                    settled.append(uid)  # settled, or brought back by the owner (checked below)
            for raws in _batches(mailbox, settled[-limit:], max_bytes):
                for raw in raws:
                    flags = _flags(raw)
                    # Review mail flagged in place is still waiting for a look; brought back from the review
                    # folder (its keyword with it), it is ordinary by the owner's word.
                    if _no_verdict(raw, flags, review_in_place=judged[raw.uid].action == "flag"):
                        report.no_verdict += 1
                        continue
                    if judged[raw.uid].time > settled_before and not raw.message_id:
                        # "Brought back" is known by key, and without a Message-ID another message may share
                        # it: that one waits like the filter's own decisions.
                        report.not_settled += 1
                        continue
                    label = _inbox_label(judged[raw.uid], _keyword_label(flags), flagging)
                    if label is None:
                        report.kept_by_rules += 1
                        continue
                    key = fingerprint_key(fingerprint_of(raw))
                    if key in filed:
                        continue  # also filed in a label folder (a copy, or a Gmail label): that says more
                    _keep(written, _identity(raw, key), _write(root / label, account.watch, uidvalidity, raw))
        for path in written.values():
            report.counts[path.parent.name] += 1
        report.removed = _remove_stale(root, set(written.values()))
    except OSError as exc:
        raise ExportError(f"export: {exc.filename or out}: {exc.strerror or exc}") from exc
    return report


def _inbox_label(judgement: Judgement, keywords: str | None, flagging: bool) -> str | None:
    """The label of settled mail in the watched folder, from what the filter did and the keywords now on it.

    Flagged by the filter (or given a keyword by the owner, when flagging), the keywords are the owner's
    verdict, and none left means ordinary. Labelled but kept by the owner's rules (an allowed sender, a
    correspondent): None, since the owner was never asked. Otherwise it was judged ordinary, or brought
    back by the owner: ordinary.
    """
    if judgement.returned:
        return "ham"  # its keywords are the filter's, from before the owner brought it back
    if judgement.action == "flag" or (flagging and keywords):
        return keywords or "ham"
    if judgement.labels:
        return None
    return "ham"


def _no_verdict(raw: RawMessage, flags: set[str], *, review_in_place: bool) -> bool:
    """Mail that says nothing of the owner's mind: deleted, the filter's own digest, or review mail
    where the filter put it."""
    return _DELETED in flags or is_digest(raw.message_id) or (review_in_place and REVIEW_KEYWORD.lower() in flags)


def _identity(raw: RawMessage, key: str) -> str:
    """What tells one message from another in one run: its fingerprint key, and without a Message-ID (when
    two messages of one size and second share a key) its bytes too, which COPY and MOVE keep."""
    return key if raw.message_id else f"{key}:{hashlib.sha256(raw.data).hexdigest()}"


def _keep(written: dict[str, Path], identity: str, path: Path) -> None:
    """Note the file written for a message; one written for it earlier in the run goes."""
    earlier = written.get(identity)
    if earlier is not None and earlier != path:
        earlier.unlink()
    written[identity] = path


def _batches(mailbox: Mailbox, uids: Sequence[int], max_bytes: int) -> Iterator[list[RawMessage]]:
    for i in range(0, len(uids), FETCH_BATCH):
        yield mailbox.fetch(uids[i : i + FETCH_BATCH], max_bytes)


def _folder_label(flags: set[str], folder: str, article_folder: str, favour_folder: str) -> str | None:
    """The label of a message in one of the two label folders."""
    keywords = _keyword_label(flags)
    if article_folder == favour_folder:
        return keywords  # one folder for both: only the daemon's keywords tell them apart
    if folder == favour_folder:
        # A message the daemon found to be both goes to the request folder with both keywords; one the
        # owner moved there from the article folder has the article keyword alone, and is a request.
        return "both" if keywords == "both" else "favours"
    return "articles"


def _flags(raw: RawMessage) -> set[str]:
    return {f.lower() for f in raw.flags}


def _keyword_label(flags: set[str]) -> str | None:
    """The label folder the daemon's keywords (in ``flags``, lower case) name, or None without them."""
    article = KEYWORDS["article_share"].lower() in flags
    favour = KEYWORDS["favour_request"].lower() in flags
    if article and favour:
        return "both"
    return "articles" if article else "favours" if favour else None


def _examine(mailbox: Mailbox, folder: str) -> tuple[int, list[int]]:
    """(UIDVALIDITY, UIDs) of ``folder``, opened read-only; a folder that does not exist holds nothing.

    One that exists and will not open fails the account's export (MailboxError), before any file of an
    earlier run is removed: its mail may be there still.
    """
    try:
        status = mailbox.examine(folder)
    except FolderError:
        log.info("%s does not exist (yet): nothing to read there", folder)
        return 0, []
    except MailboxError as exc:
        raise MailboxError(f"{exc}; the files of earlier runs are kept") from exc
    return status.uidvalidity, mailbox.search_uids()


def _write(folder_dir: Path, folder: str, uidvalidity: int, raw: RawMessage) -> Path:
    """Write ``raw`` readable by the owner alone, unless the file already holds exactly these bytes."""
    path = folder_dir / f"{slug(folder)}-{uidvalidity}-{raw.uid}.eml"
    if path.is_symlink() or not path.is_file() or path.read_bytes() != raw.data:
        partial = path.with_name("." + path.name + ".part")
        with contextlib.suppress(FileNotFoundError):
            partial.unlink()
        # O_EXCL and O_NOFOLLOW: never write through a link someone left at that name.
        fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(raw.data)
        os.replace(partial, path)
    return path


def _remove_stale(root: Path, written: set[Path]) -> int:
    """Remove the files of earlier runs that this one did not write: names of the form this module gives
    (``<folder>-<uidvalidity>-<uid>.eml``), in label folders that are its own."""
    removed = 0
    for label in LABEL_DIRS:
        for path in (root / label).iterdir():
            if path not in written and _OURS.match(path.name.removeprefix(".")):
                path.unlink()
                removed += 1
    return removed


def slug(name: str) -> str:
    """A file-name-safe form of a folder or account name ("Networking/Articles" -> "networking.articles")."""
    return _UNSAFE.sub(".", name.lower()).strip(".") or "folder"
