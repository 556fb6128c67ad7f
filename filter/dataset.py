"""Labelled mail on disk -> parsed messages with labels and cross-validation groups.

Mail is read from what owners and mail programs already have: folder trees
of ``.eml`` files, Maildirs (``cur/`` and ``new/``; ``tmp/`` holds mail
still being delivered and is left alone) and mbox files. Labels come from
folder names (a folder named ``articles``, ``favours``, ``both`` or ``ham``
labels everything beneath it) or from a CSV of ``path,article_share,
favour_request`` rows, which wins where both speak.

The cross-validation group is the sender's address by default: a filter is
used on mail from people it has not seen, so no sender's mail may sit on
both sides of a split, or its scores flatter the model. ``group_by="folder"``
keeps each folder or mailbox whole instead.

A file that cannot be read, is empty or is not mail is skipped with a log
line naming it; it never stops the others. Nothing here logs message text.
"""

from __future__ import annotations

import logging
import mailbox
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filter.config import DEFAULT_MAX_MESSAGE_BYTES
from filter.errors import PloyError, UsageError
from filter.message import ParsedMessage, parse_message

log = logging.getLogger(__name__)

PROGRESS_EVERY = 500
GROUP_BY = ("sender", "folder")

_ARTICLE = {"article_share": True, "favour_request": False}
_FAVOUR = {"article_share": False, "favour_request": True}
_BOTH = {"article_share": True, "favour_request": True}
_NEITHER = {"article_share": False, "favour_request": False}

FOLDER_LABELS: Mapping[str, Mapping[str, bool]] = {
    **dict.fromkeys(("article_share", "article", "articles"), _ARTICLE),
    **dict.fromkeys(("favour_request", "favor_request", "favour", "favor", "favours", "favors", "requests"), _FAVOUR),
    "both": _BOTH,
    **dict.fromkeys(("neither", "ordinary", "ham", "inbox"), _NEITHER),
}
"""Folder names (compared in lower case, a Maildir++ leading dot ignored) and the labels they give."""


@dataclass(frozen=True)
class Example:
    """One labelled message: where it came from, its parse, its labels and its CV group.

    ``source`` is the DATA path it was found under (or, for the shipped
    model's training set, the corpus it comes from); ``id`` is the file's
    path, or ``path#N`` for the Nth message of an mbox. ``path`` is the file
    it was read from (for an embedded ``#forwarded`` message, the file that
    holds it). ``trusted`` is False for a message taken as ordinary mail
    without being read: those train the model but are left out of every
    reported metric.
    """

    source: str
    id: str
    message: ParsedMessage
    labels: Mapping[str, bool]
    group: str
    path: Path | None = None
    trusted: bool = True


@dataclass
class Dataset:
    """The messages read, and what was left out and why (ids only)."""

    messages: list[Example] = field(default_factory=list)
    unlabelled: list[str] = field(default_factory=list)
    undecided: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)
    label_files: list[Path] = field(default_factory=list)  # each read once, however often it was named

    @property
    def labels_from(self) -> str:
        return f"{', '.join(map(str, self.label_files))} and folder names" if self.label_files else "folder names"


@dataclass(frozen=True)
class _Source:
    """One message to find: its id, its file, its index in an mbox (None for a one-message file), its folder.

    ``folder`` is the mailbox the message is in: the parent folder of an
    ``.eml`` file, the Maildir, or the mbox file itself. ``label_parts``
    are the folder names from the DATA path given down to that mailbox.
    """

    source: str
    id: str
    file: Path
    index: int | None
    folder: Path
    label_parts: tuple[str, ...]


def folder_labels(parts: Sequence[str]) -> Mapping[str, bool] | None:
    """The labels given by the deepest folder name among ``parts`` that names a label, or None."""
    for part in reversed(parts):
        labels = FOLDER_LABELS.get(part.lower().lstrip("."))
        if labels is not None:
            return labels
    return None


def read_labelled(
    paths: Sequence[Path],
    *,
    label_files: Sequence[Path] = (),
    group_by: str = "sender",
    skip_unlabelled: bool = False,
    max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    progress_every: int = PROGRESS_EVERY,
) -> Dataset:
    """Read every message under ``paths`` with its labels.

    Raises UsageError for a path that does not exist, an unknown
    ``group_by``, an unusable label file, or messages without a label
    (unless ``skip_unlabelled``, which logs them and leaves them out).
    Messages marked "?" in a label file are left out: undecided is not No.
    A message listed in two label files must have the same labels in both.
    """
    if group_by not in GROUP_BY:
        raise UsageError(f"group by {group_by!r}: expected one of {', '.join(GROUP_BY)}")
    by_file = {path: read_csv_labels(path) for path in {_resolved(f): f for f in label_files}.values()}
    csv_labels = _merged(by_file)
    dataset = Dataset(label_files=list(by_file))
    seen: set[tuple[Path, int | None]] = set()
    to_read: list[tuple[_Source, Mapping[str, bool]]] = []
    matched: set[tuple[Path, int | None]] = set()
    for source in _sources(paths, dataset.unreadable):
        key = (_resolved(source.file), source.index)
        if key in seen:
            continue
        seen.add(key)
        if key in csv_labels:
            matched.add(key)
            labels = csv_labels[key]
            if labels is None:
                dataset.undecided.append(source.id)
                continue
        else:
            found = folder_labels(source.label_parts)
            if found is None:
                dataset.unlabelled.append(source.id)
                continue
            labels = found
        to_read.append((source, labels))
    for label_file, rows in by_file.items():
        _warn_unmatched(label_file, rows, matched)
    _check_unlabelled(dataset, dataset.label_files, skip_unlabelled)
    for source, labels, data in _read_all(to_read, max_bytes, dataset.unreadable):
        message = parse_message(data)
        if message.error:
            log.warning("%s: %s; skipped", source.id, message.error)
            dataset.unreadable.append(source.id)
            continue
        group = _group(source, message, group_by)
        dataset.messages.append(Example(source.source, source.id, message, labels, group, source.file))
        if progress_every and len(dataset.messages) % progress_every == 0:
            log.info("read %d of %d labelled messages", len(dataset.messages), len(to_read))
    log.info(
        "read %d labelled messages (%d skipped as unreadable, %d undecided, %d unlabelled)",
        len(dataset.messages),
        len(dataset.unreadable),
        len(dataset.undecided),
        len(dataset.unlabelled),
    )
    return dataset


def _merged(
    by_file: Mapping[Path, dict[tuple[Path, int | None], Mapping[str, bool] | None]],
) -> dict[tuple[Path, int | None], Mapping[str, bool] | None]:
    """The rows of every label file; a message two files label differently is an error naming both."""
    merged: dict[tuple[Path, int | None], Mapping[str, bool] | None] = {}
    first: dict[tuple[Path, int | None], Path] = {}
    for path, rows in by_file.items():
        for key, labels in rows.items():
            if key in merged and merged[key] != labels:
                file, index = key
                raise UsageError(
                    f"--labels {path}: {file}{f'#{index}' if index else ''} is also in {first[key]} "
                    "with different labels; keep one"
                )
            merged[key] = labels
            first.setdefault(key, path)
    return merged


def _warn_unmatched(
    label_file: Path, rows: Mapping[tuple[Path, int | None], object], matched: set[tuple[Path, int | None]]
) -> None:
    if rows and not matched.intersection(rows):
        log.warning(
            "no row of %s names a file under the DATA paths; its paths are read relative to %s",
            label_file,
            label_file.resolve().parent,
        )
        return
    unmatched = [f"{file}{f'#{index}' if index else ''}" for file, index in rows if (file, index) not in matched]
    if unmatched:
        log.warning(
            "%d rows of %s name no message under the DATA paths and are not used (e.g. %s)",
            len(unmatched),
            label_file,
            ", ".join(unmatched[:3]),
        )


def read_csv_labels(path: Path) -> dict[tuple[Path, int | None], Mapping[str, bool] | None]:
    """Labels by (resolved file, mbox index) from a CSV whose paths are relative to the CSV's folder.

    ``box.mbox#3`` names the third message of an mbox. A value of None
    means the row was marked "?" (undecided).
    """
    from filter.train import read_label_file

    if path.is_dir():
        raise UsageError(
            f"--labels {path}: a folder, not a label file; --labels takes every path after it, so give DATA first "
            "(or end its list with --)"
        )
    try:
        rows = read_label_file(path, id_column="path", source="labels")
    except OSError as exc:
        raise UsageError(f"--labels {path}: cannot read ({exc.strerror or exc})") from exc
    except UnicodeDecodeError as exc:
        raise UsageError(f"--labels {path}: not UTF-8 text at byte {exc.start}; save it as CSV UTF-8") from exc
    except PloyError as exc:
        raise UsageError(f"--labels {path}: {exc}") from exc
    base = path.resolve().parent
    out: dict[tuple[Path, int | None], Mapping[str, bool] | None] = {}
    for row in rows:
        name, index = _split_mbox_index(row.id)
        if not name:
            continue
        key = (_resolved(base / name), index)
        if key in out and out[key] != row.labels:
            raise UsageError(f"--labels {path}: {row.id} is listed twice with different labels; keep one row")
        out[key] = row.labels
    return out


def _resolved(file: Path) -> Path:
    """``file`` with symlinks resolved, or as an absolute path when they loop (reading it then fails, logged)."""
    try:
        return file.resolve()
    except (OSError, RuntimeError, ValueError):  # ValueError: a NUL in the name
        return Path(os.path.abspath(file))


def _split_mbox_index(item: str) -> tuple[str, int | None]:
    name, sep, tail = item.rpartition("#")
    if sep and tail.isdigit() and int(tail) >= 1:
        return name, int(tail)
    return item, None


def _check_unlabelled(dataset: Dataset, label_files: Sequence[Path], skip: bool) -> None:
    if not dataset.unlabelled:
        return
    shown = ", ".join(dataset.unlabelled[:5]) + (", ..." if len(dataset.unlabelled) > 5 else "")
    count = len(dataset.unlabelled)
    if skip:
        log.warning("%d messages have no label and are left out: %s", count, shown)
        return
    hint = "".join(f"; paths in {f} are read relative to {f.resolve().parent}" for f in label_files[:3])
    names = ", ".join(sorted(FOLDER_LABELS))
    raise UsageError(
        f"{count} messages have no label ({shown}): put them under a folder named one of {names}; "
        f"list them in --labels{hint}; or pass --skip-unlabelled"
    )


def _group(source: _Source, message: ParsedMessage, group_by: str) -> str:
    if group_by == "folder":
        return f"folder:{source.folder}"
    if message.sender:
        return f"sender:{message.sender}"
    return f"message:{source.id}"


# ---------------------------------------------------------------------------
# Finding messages


def _sources(paths: Sequence[Path], unreadable: list[str]) -> Iterator[_Source]:
    for path in paths:
        if not path.exists():
            raise UsageError(f"{path}: no such file or folder")
        if path.is_file():
            yield from _file_sources(str(path), path, (path.resolve().parent.name,), unreadable)
            continue
        top = (path.resolve().name,)
        ignored: list[Path] = []
        for folder, dirs, files in os.walk(path):
            here = Path(folder)
            in_maildir = _is_maildir(here)
            dirs[:] = sorted(d for d in dirs if not (in_maildir and d == "tmp"))
            parts = top + here.relative_to(path).parts
            if here.name in ("cur", "new") and _is_maildir(here.parent):
                for name in sorted(files):
                    if not name.startswith("."):
                        yield _Source(str(path), str(here / name), here / name, None, here.parent, parts[:-1])
                continue
            for name in sorted(files):
                file = here / name
                if name.startswith("."):
                    continue
                if _special(file):
                    log.warning("%s: not a regular file (a pipe, socket or device); skipped", file)
                    unreadable.append(str(file))
                    continue
                if file.suffix.lower() == ".eml" or _is_mbox(file):
                    yield from _file_sources(str(path), file, parts, unreadable)
                elif not in_maildir:
                    ignored.append(file)
        if ignored:
            log.info(
                "%s: %d files are neither .eml, Maildir nor mbox and were ignored (e.g. %s)",
                path,
                len(ignored),
                ignored[0],
            )


def _file_sources(root: str, file: Path, parts: tuple[str, ...], unreadable: list[str]) -> Iterator[_Source]:
    """A one-message file, or each message of an mbox file (which is its own folder, named by its stem)."""
    if file.suffix.lower() == ".eml" or not _is_mbox(file):
        yield _Source(root, str(file), file, None, file.parent, parts)
        return
    try:
        count = len(mailbox.mbox(file, create=False).keys())
    except (OSError, mailbox.Error) as exc:
        log.warning("%s: cannot read as an mbox (%s); skipped", file, exc)
        unreadable.append(str(file))
        return
    if count == 0:
        log.warning("%s: no messages in it (an mbox file starts with a 'From ' line); skipped", file)
        unreadable.append(str(file))
        return
    for index in range(1, count + 1):
        yield _Source(root, f"{file}#{index}", file, index, file, (*parts, file.stem))


def _special(file: Path) -> bool:
    """A FIFO, socket or device: opening one can block for ever, and none holds mail."""
    try:
        mode = file.stat().st_mode
    except (OSError, RuntimeError):
        return False  # a dangling or looping symlink: reading it fails later, and is logged
    return stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISCHR(mode) or stat.S_ISBLK(mode)


def _is_maildir(folder: Path) -> bool:
    return all((folder / d).is_dir() for d in ("cur", "new", "tmp"))


def _is_mbox(file: Path) -> bool:
    """An ``.mbox`` file, or one starting with an mbox "From " line."""
    if file.suffix.lower() == ".mbox":
        return True
    try:
        with file.open("rb") as handle:
            return handle.read(5) == b"From "
    except OSError:
        return False


# ---------------------------------------------------------------------------
# Reading bytes


def _read_all(
    items: Sequence[tuple[_Source, Mapping[str, bool]]], max_bytes: int, unreadable: list[str]
) -> Iterator[tuple[_Source, Mapping[str, bool], bytes]]:
    """The first ``max_bytes`` of each message; an mbox is opened once for all its messages."""
    box: tuple[Path, mailbox.mbox, list[str]] | None = None
    for source, labels in items:
        try:
            if source.index is None:
                if _special(source.file):
                    raise OSError(0, "not a regular file (a pipe, socket or device)")
                with source.file.open("rb") as handle:
                    data = handle.read(max_bytes)
            else:
                if box is None or box[0] != source.file:
                    opened = mailbox.mbox(source.file, create=False)
                    box = (source.file, opened, opened.keys())
                data = box[1].get_bytes(box[2][source.index - 1])[:max_bytes]
        except (OSError, mailbox.Error, IndexError, KeyError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
            log.warning("%s: cannot read (%s); skipped", source.id, reason)
            unreadable.append(source.id)
            continue
        yield source, labels, data
