"""Checkpoints and the decision log, in SQLite at ``state_path``.

What makes "never twice, never skipped" hold across crashes:

* UIDs are only meaningful together with the folder's UIDVALIDITY (RFC 9051
  section 2.3.1.1), so every row is keyed by (account, mailbox, uidvalidity).
* A message is marked *handled* only after its action succeeded on the
  server, in the same transaction as its decision-log row.
* Before a move, an *intent* row is written (and committed). A crash between
  the server's move and the handled row leaves the intent behind; on the next
  start ``runner`` looks the message up on the server (by its fingerprint) and
  finishes or redoes the move, instead of guessing.
* When UIDVALIDITY changes, the old UIDs are void; messages are then matched
  to earlier decisions by their fingerprint key (Message-ID and size), so mail
  already judged is not judged again and mail never seen is not skipped.

The same database holds the sender ledger: per address, when mail from it
was labelled article_share, favour_request or neither, and when the owner
wrote to it (read from the sent folder). A message's ledger rows are written
in the transaction that marks it handled, and keyed by its fingerprint key,
so a crash or a re-scan can neither lose nor double-count it.

Only identifiers, addresses, times, scores and decisions are stored: no
subject, no body.
"""

from __future__ import annotations

import bisect
import fcntl
import hashlib
import json
import os
import sqlite3
import threading
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, ParamSpec, TypeVar

from filter.errors import StateError
from filter.mailbox import Fingerprint, TargetMark
from filter.policy import SenderHistory, normalise_address
from filter.senders import SenderRow

# 2: the sender ledger (received, sent, sent_checkpoints, digests), and each
# decision's labels and keywords. Tables are created if missing and columns
# added, so a version-1 file is brought up to date on open. 3 and 4: ledger
# rows keyed by ``ledger_key`` and addresses in ``normalise_address``'s form;
# ``_rekey_ledger`` brings any earlier file to 4.
SCHEMA_VERSION = 4

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS epochs (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL,
    first_seen REAL NOT NULL, next_uid INTEGER NOT NULL DEFAULT 1,
    PRIMARY KEY (account, mailbox, uidvalidity)
);
CREATE TABLE IF NOT EXISTS handled (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, action TEXT NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
CREATE INDEX IF NOT EXISTS handled_fp ON handled (account, mailbox, fp_key);
CREATE TABLE IF NOT EXISTS intents (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    fp_key TEXT NOT NULL, message_id TEXT NOT NULL, size INTEGER NOT NULL, internaldate TEXT,
    target TEXT NOT NULL, decision TEXT NOT NULL, created REAL NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
-- Messages whose fetch failed (the server may end the session over one it cannot read): fetched one by
-- one from then on, each try counted before it is made, until one succeeds or the tries run out.
CREATE TABLE IF NOT EXISTS fetch_failures (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    tries INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
-- Moves by COPY whose COPY the server confirmed: the copy in the target is this move's own.
CREATE TABLE IF NOT EXISTS copied (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
-- Moves by COPY about to send their COPY: the target's UIDVALIDITY and UIDNEXT just before it. A copy found
-- there later at or above that UIDNEXT is this move's own, even when the server's answer never arrived.
CREATE TABLE IF NOT EXISTS copy_starts (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL,
    target_uidvalidity INTEGER NOT NULL, target_uidnext INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox, uidvalidity, uid)
);
-- The arrival time (INTERNALDATE, which COPY and MOVE keep) of each message moved, by fingerprint key: a
-- message with the key that arrived at another time is the same mail delivered again, not one brought back.
CREATE TABLE IF NOT EXISTS moved_arrivals (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, fp_key TEXT NOT NULL, arrived TEXT NOT NULL,
    PRIMARY KEY (account, mailbox, fp_key, arrived)
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    time REAL NOT NULL, account TEXT NOT NULL, mailbox TEXT NOT NULL,
    uidvalidity INTEGER NOT NULL, uid INTEGER NOT NULL, message_id_hash TEXT NOT NULL,
    scores TEXT NOT NULL, action TEXT NOT NULL, target TEXT, reasons TEXT NOT NULL,
    labels TEXT NOT NULL DEFAULT '[]', keywords TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS decisions_uid ON decisions (account, mailbox, uidvalidity, uid);
CREATE TABLE IF NOT EXISTS received (
    account TEXT NOT NULL, address TEXT NOT NULL, time REAL NOT NULL, label TEXT NOT NULL, fp_key TEXT NOT NULL,
    PRIMARY KEY (account, fp_key, label)
);
CREATE INDEX IF NOT EXISTS received_address ON received (address, time);
CREATE TABLE IF NOT EXISTS sent (
    account TEXT NOT NULL, sent_key TEXT NOT NULL, address TEXT NOT NULL, time REAL NOT NULL,
    PRIMARY KEY (account, sent_key, address)
);
CREATE INDEX IF NOT EXISTS sent_address ON sent (address, time);
CREATE TABLE IF NOT EXISTS sent_checkpoints (
    account TEXT NOT NULL, mailbox TEXT NOT NULL, uidvalidity INTEGER NOT NULL, next_uid INTEGER NOT NULL,
    PRIMARY KEY (account, mailbox)
);
CREATE TABLE IF NOT EXISTS digests (account TEXT PRIMARY KEY, last REAL NOT NULL);
"""

# The label of a received row for mail that was given neither label.
ORDINARY = "none"


def message_id_hash(message_id: str) -> str:
    """A short, stable digest of a Message-ID, so the log can correlate without storing it."""
    return hashlib.sha256(message_id.strip().encode("utf-8", "replace")).hexdigest()[:16] if message_id else ""


def fingerprint_key(fp: Fingerprint) -> str:
    """The identity of a message that survives COPY, MOVE and a UIDVALIDITY change.

    Message-ID plus size when there is a Message-ID; else size plus
    INTERNALDATE (which COPY and MOVE keep, RFC 9051 section 2.3.3).
    """
    if fp.message_id:
        return f"m:{message_id_hash(fp.message_id)}:{fp.size}"
    date = fp.internaldate.isoformat() if fp.internaldate else "-"
    return f"d:{fp.size}:{date}"


def ledger_key(fp_key: str, address: str, dated: float | None) -> str:
    """The key the sender ledger counts a message by: what every copy of it shares, whatever its size.

    Each account's copy of one message differs in size (Delivered-To,
    Return-Path) and in arrival time, so neither can be in the key. A
    message with a Message-ID is that, its sender and its Date header
    (``dated``, the header's own time: identical in every copy, and apart
    for a sender who reuses one Message-ID); one without a Message-ID is
    its sender and Date. With neither a Message-ID nor a Date, only the
    fingerprint key is left, and copies in two accounts count twice.
    """
    stamp = "-" if dated is None else f"{dated:.0f}"
    if fp_key.startswith("m:"):
        mid = fp_key.split(":", 2)[1]
        return f"m:{mid}:{hashlib.sha256(f'{address}|{stamp}'.encode()).hexdigest()[:12]}"
    if fp_key.startswith("d:") and dated is not None and fp_key.count(":") >= 2:
        return f"d:{hashlib.sha256(f'{address}|{stamp}'.encode()).hexdigest()[:16]}"
    return fp_key


@dataclass(frozen=True)
class DecisionRecord:
    """One row of the decision log as written by the runner.

    ``sender`` (the From address), ``labels`` and ``date`` (the message's
    date, epoch seconds) feed the sender ledger; a record without a sender
    or a date, such as one for a skipped message, leaves the ledger alone.
    """

    uid: int
    message_id: str
    scores: Mapping[str, float]
    action: str
    target: str | None
    keywords: Sequence[str]
    reasons: Sequence[str]
    sender: str = ""
    labels: tuple[str, ...] = ()
    date: float | None = None
    ledger: str = ""  # the message's ledger_key, when the runner knows its Date header
    arrived: str | None = None  # the message's INTERNALDATE (ISO 8601), which a move keeps


@dataclass(frozen=True)
class Intent:
    """A move that was started and not yet confirmed."""

    uid: int
    fingerprint: Fingerprint
    target: str
    decision: DecisionRecord
    copied: bool = False  # the server confirmed this move's COPY: a copy in the target is its own
    copy_start: TargetMark | None = None  # the target just before this move's COPY was sent


_P = ParamSpec("_P")
_R = TypeVar("_R")
_T = TypeVar("_T")


def _serialised(method: Callable[_P, _R]) -> Callable[_P, _R]:
    """Run a State method under the object's mutex: account threads share one connection."""

    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with args[0]._mutex:  # type: ignore[attr-defined]
            return method(*args, **kwargs)

    wrapper.__doc__ = method.__doc__
    wrapper.__name__ = method.__name__
    return wrapper


# How the log names a message carried over a UIDVALIDITY change: "already handled (move) before ...".
CARRIED_OVER = "already handled"
# How it names one the owner brought back after the filter moved it.
RETURNED = "moved earlier and returned to the folder by the owner"


@dataclass(frozen=True)
class Judgement:
    """A logged decision on one message: when, what was done, and the labels the model gave it."""

    time: float
    action: str
    labels: tuple[str, ...]
    returned: bool = False  # left where it was because the owner had brought it back


_SQL_CHUNK = 500  # values per "IN (...)", well under SQLite's limit on parameters


def _chunked(items: Sequence[_T]) -> Iterator[tuple[list[_T], str]]:
    """``items`` in pieces of at most _SQL_CHUNK, each with its "?,?,..." placeholders."""
    for start in range(0, len(items), _SQL_CHUNK):
        chunk = list(items[start : start + _SQL_CHUNK])
        yield chunk, ",".join("?" * len(chunk))


def _judgement(when: object, action: object, labels: object, reasons: object) -> Judgement:
    returned = str(reasons).startswith(f'["{RETURNED}')
    return Judgement(float(str(when)), str(action), tuple(json.loads(str(labels))), returned)


class State:
    """The SQLite state of one ployfilter installation.

    One process holds it at a time: ``open`` takes an exclusive lock on a
    sibling ``.lock`` file, so a second daemon started by mistake fails fast
    instead of moving the same mail twice. Within the process, the account
    threads share it; every public method runs under one mutex.
    """

    def __init__(self, path: Path, db: sqlite3.Connection, lock: IO[bytes] | None) -> None:
        self.path = path
        self._db = db
        self._lock = lock
        self._mutex = threading.RLock()

    @classmethod
    def open(cls, path: Path, *, lock: bool = True) -> State:
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise StateError(f"state_path: cannot create {path.parent} ({exc.strerror})") from exc
        lock_file: IO[bytes] | None = None
        if lock:
            try:
                lock_file = open(str(path) + ".lock", "ab")  # noqa: SIM115 - held for the object's life
                fcntl.flock(lock_file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as exc:
                raise StateError(f"state_path: {path} is in use by another ployfilter process; stop it first") from exc
            except OSError as exc:
                raise StateError(f"state_path: cannot lock {path} ({exc.strerror})") from exc
        try:
            # SQLite gives its -wal and -shm files the database file's mode: the file is made private first.
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
            os.chmod(path, 0o600)
        except OSError as exc:
            raise StateError(f"state_path: cannot create {path} ({exc.strerror})") from exc
        try:
            db = _connect(str(path))
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            _init_schema(db, path)
        except sqlite3.Error as exc:
            raise StateError(f"state_path: {path} is not a usable SQLite database ({exc})") from exc
        return cls(path, db, lock_file)

    @classmethod
    def open_reader(cls, path: Path) -> State:
        """The state read-only, beside a daemon that may hold the lock: for the reports and exports.

        A reader never sets up or upgrades the schema (a daemon of the old version may still be writing
        it), so a state from an older ployfilter is refused with what to do; its file is left untouched.
        """
        db: sqlite3.Connection | None = None
        try:
            db = _connect(f"{path.absolute().as_uri()}?mode=ro", uri=True)
            row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
        except sqlite3.Error as exc:
            if db is not None:
                db.close()
            if "readonly" in str(exc) and not os.access(path.parent, os.W_OK):
                # SQLite's write-ahead log needs its -shm file, made beside the state when no daemon has it open
                raise StateError(
                    f"state_path: cannot read {path}: {path.parent} is not writable for this user, and SQLite "
                    "needs to create its -shm file there while no daemon runs; run as the daemon's user"
                ) from exc
            raise StateError(f"state_path: {path} is not a readable ployfilter state ({exc})") from exc
        version = int(row[0]) if row and str(row[0]).isdigit() else 0
        if version != SCHEMA_VERSION:
            db.close()
            _refuse_newer(path, version)
            raise StateError(
                f"state_path: {path} is from an older ployfilter (schema {version}, now {SCHEMA_VERSION}); "
                "restart the daemon, or run `ployfilter once`, to upgrade it, then run this again"
            )
        return cls(path, db, None)

    @classmethod
    def in_memory(cls) -> State:
        """A state that lives as long as the process: for dry-run, which must leave no trace."""
        db = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        _init_schema(db, Path(":memory:"))
        return cls(Path(":memory:"), db, None)

    @_serialised
    def close(self) -> None:
        self._db.close()
        if self._lock is not None:
            self._lock.close()
            self._lock = None

    # Epochs (UIDVALIDITY) ---------------------------------------------------

    @_serialised
    def known_uidvalidities(self, account: str, mailbox: str) -> list[int]:
        rows = self._db.execute(
            "SELECT uidvalidity FROM epochs WHERE account=? AND mailbox=? ORDER BY first_seen",
            (account, mailbox),
        )
        return [r[0] for r in rows]

    @_serialised
    def start_epoch(self, account: str, mailbox: str, uidvalidity: int, now: float) -> None:
        """Note the folder's current epoch; the fetch tries of earlier epochs mean nothing any more."""
        with self._transaction():
            self._db.execute(
                "INSERT OR IGNORE INTO epochs VALUES (?, ?, ?, ?, 1)", (account, mailbox, uidvalidity, now)
            )
            self._db.execute(
                "DELETE FROM fetch_failures WHERE account=? AND mailbox=? AND uidvalidity != ?",
                (account, mailbox, uidvalidity),
            )

    @_serialised
    def scanned_to(self, account: str, mailbox: str, uidvalidity: int) -> int:
        """The first UID of this epoch not yet scanned: every lower UID is handled."""
        row = self._db.execute(
            "SELECT next_uid FROM epochs WHERE account=? AND mailbox=? AND uidvalidity=?",
            (account, mailbox, uidvalidity),
        ).fetchone()
        return 1 if row is None else int(row[0])

    @_serialised
    def advance(self, account: str, mailbox: str, uidvalidity: int, next_uid: int) -> None:
        """Move the scan mark; called once every UID below ``next_uid`` is handled."""
        self._db.execute(
            "UPDATE epochs SET next_uid = MAX(next_uid, ?) WHERE account=? AND mailbox=? AND uidvalidity=?",
            (next_uid, account, mailbox, uidvalidity),
        )

    # Handled UIDs -------------------------------------------------------------

    @_serialised
    def handled_uids(self, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> set[int]:
        return set(self._fp_keys(account, mailbox, uidvalidity, list(uids)))

    @_serialised
    def judgements(self, account: str, mailbox: str, uidvalidity: int, uids: Iterable[int]) -> dict[int, Judgement]:
        """The last judgement of each of ``uids`` that has one.

        A message carried over a UIDVALIDITY change is logged again under its
        new UID with its action alone; its judgement is then the last one
        made in an earlier epoch, found through its fingerprint key.
        """
        wanted = list(uids)
        found: dict[int, Judgement] = {}
        not_carried = f'["{CARRIED_OVER}%'
        for chunk, marks in _chunked(wanted):
            rows = self._db.execute(
                "SELECT uid, time, action, labels, reasons FROM decisions WHERE account=? AND mailbox=?"
                f" AND uidvalidity=? AND uid IN ({marks}) AND reasons NOT LIKE ? ORDER BY id",
                (account, mailbox, uidvalidity, *chunk, not_carried),
            )
            found.update((int(uid), _judgement(*row)) for uid, *row in rows)  # in log order: the last stays
        # Carried over: the judgement of the same fingerprint key in an earlier epoch. CROSS JOIN keeps
        # SQLite's planner from walking the whole log first.
        keys = self._fp_keys(account, mailbox, uidvalidity, [uid for uid in wanted if uid not in found])
        by_key: dict[str, Judgement] = {}
        for key_chunk, marks in _chunked(list(dict.fromkeys(keys.values()))):
            rows = self._db.execute(
                "SELECT e.fp_key, d.time, d.action, d.labels, d.reasons FROM handled e CROSS JOIN decisions d"
                " ON d.account=e.account AND d.mailbox=e.mailbox AND d.uidvalidity=e.uidvalidity AND d.uid=e.uid"
                f" WHERE e.account=? AND e.mailbox=? AND e.fp_key IN ({marks})"
                " AND e.uidvalidity<>? AND d.reasons NOT LIKE ? ORDER BY d.id",
                (account, mailbox, *key_chunk, uidvalidity, not_carried),
            )
            by_key.update((str(key), _judgement(*row)) for key, *row in rows)
        found.update((uid, by_key[key]) for uid, key in keys.items() if key in by_key)
        return found

    def _fp_keys(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, str]:
        """The fingerprint key of each of ``uids`` that is handled."""
        found: dict[int, str] = {}
        for chunk, marks in _chunked(uids):
            rows = self._db.execute(
                f"SELECT uid, fp_key FROM handled WHERE account=? AND mailbox=? AND uidvalidity=? AND uid IN ({marks})",
                (account, mailbox, uidvalidity, *chunk),
            )
            found.update((int(uid), str(key)) for uid, key in rows)
        return found

    @_serialised
    def moved_at(self, account: str, mailbox: str, fp_keys: Iterable[str]) -> dict[str, dict[str, tuple[float, bool]]]:
        """For each of these fingerprint keys, per target folder: when the filter last moved (or began to
        move) a message with it out of ``mailbox``, and whether that move gave it a label (False for a move
        by the block list alone). A move carried over a UIDVALIDITY change is not a new one, and a move the
        owner undid (the message brought back) no longer counts."""
        wanted = list(dict.fromkeys(fp_keys))
        moves: dict[str, dict[str, tuple[float, bool]]] = {}
        returned: dict[str, float] = {}
        join = (
            "FROM handled h CROSS JOIN decisions d ON d.account=h.account AND d.mailbox=h.mailbox"
            " AND d.uidvalidity=h.uidvalidity AND d.uid=h.uid"
            " WHERE h.account=? AND h.mailbox=? AND h.fp_key IN ({marks})"
        )
        for chunk, marks in _chunked(wanted):
            rows = self._db.execute(
                f"SELECT h.fp_key, d.time, d.target, d.labels <> '[]' {join.format(marks=marks)} AND d.action='move'"
                f" AND d.reasons NOT LIKE '[\"{CARRIED_OVER}%'",
                (account, mailbox, *chunk),
            ).fetchall()
            # A move done before a crash, not yet recorded: its intent says when it began.
            rows += self._db.execute(
                "SELECT fp_key, created, target, decision NOT LIKE '%\"labels\": []%' FROM intents"
                f" WHERE account=? AND mailbox=? AND fp_key IN ({marks})",
                (account, mailbox, *chunk),
            ).fetchall()
            for key, when, target, labelled in rows:
                per_target = moves.setdefault(str(key), {})
                folder = str(target or "")
                if folder not in per_target or float(when) > per_target[folder][0]:
                    per_target[folder] = (float(when), bool(labelled))
            for key, when in self._db.execute(
                f"SELECT h.fp_key, MAX(d.time) {join.format(marks=marks)} AND d.reasons LIKE '[\"{RETURNED}%'"
                " GROUP BY h.fp_key",
                (account, mailbox, *chunk),
            ):
                returned[str(key)] = float(when)
        return {
            key: {target: move for target, move in per_target.items() if move[0] > returned.get(key, 0.0)}
            for key, per_target in moves.items()
        }

    @_serialised
    def earlier_action(self, account: str, mailbox: str, fp_key: str) -> str | None:
        """The action recorded for a message with this fingerprint key, in any epoch.

        "move" whenever it was ever moved, else the latest: a message the owner
        brought back stays theirs however often it comes and goes.
        """
        row = self._db.execute(
            "SELECT action FROM handled WHERE account=? AND mailbox=? AND fp_key=? "
            "ORDER BY action = 'move' DESC, uidvalidity DESC, uid DESC LIMIT 1",
            (account, mailbox, fp_key),
        ).fetchone()
        return None if row is None else str(row[0])

    @_serialised
    def moved_arrivals(self, account: str, mailbox: str, fp_key: str) -> set[str]:
        """The arrival times (ISO 8601) of the messages moved with this fingerprint key, as far as recorded."""
        rows = self._db.execute(
            "SELECT arrived FROM moved_arrivals WHERE account=? AND mailbox=? AND fp_key=?", (account, mailbox, fp_key)
        )
        return {str(row[0]) for row in rows}

    @_serialised
    def moved_to(self, account: str, mailbox: str, fp_key: str) -> str | None:
        """The folder the latest message moved with this fingerprint key went to, in any epoch."""
        row = self._db.execute(
            "SELECT d.target FROM decisions d JOIN handled h ON h.account=d.account AND h.mailbox=d.mailbox "
            "AND h.uidvalidity=d.uidvalidity AND h.uid=d.uid WHERE h.account=? AND h.mailbox=? AND h.fp_key=? "
            "AND h.action='move' AND d.action='move' ORDER BY d.id DESC LIMIT 1",
            (account, mailbox, fp_key),
        ).fetchone()
        return None if row is None else row[0]

    def record(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        fp_key: str,
        decision: DecisionRecord,
        now: float,
    ) -> None:
        """Mark a UID handled and log its decision, atomically; clears its intent if any."""
        self.record_many(account, mailbox, uidvalidity, [(fp_key, decision)], now)

    @_serialised
    def record_many(
        self,
        account: str,
        mailbox: str,
        uidvalidity: int,
        decisions: Sequence[tuple[str, DecisionRecord]],
        now: float,
    ) -> None:
        """``record`` for several UIDs in one transaction: one disk sync per batch, not per message.

        Each decision with a sender and a date also adds its ledger rows: one
        per label, or one ``ORDINARY`` row when it has none. A message already
        in the ledger for this account (same fingerprint key, in any folder or
        epoch) keeps its first rows, so it is counted once however often it
        is recorded.
        """
        with self._transaction():
            for fp_key, decision in decisions:
                self._add_received(account, fp_key, decision)
                self._db.execute(
                    "INSERT OR REPLACE INTO handled VALUES (?, ?, ?, ?, ?, ?)",
                    (account, mailbox, uidvalidity, decision.uid, fp_key, decision.action),
                )
                self._drop_intent(account, mailbox, uidvalidity, decision.uid)
                if decision.action == "move" and decision.arrived:
                    self._db.execute(
                        "INSERT OR IGNORE INTO moved_arrivals VALUES (?, ?, ?, ?)",
                        (account, mailbox, fp_key, decision.arrived),
                    )
                self._db.execute(
                    "INSERT INTO decisions (time, account, mailbox, uidvalidity, uid, message_id_hash, scores, action,"
                    " target, reasons, labels, keywords) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        now,
                        account,
                        mailbox,
                        uidvalidity,
                        decision.uid,
                        message_id_hash(decision.message_id),
                        json.dumps({k: round(v, 4) for k, v in decision.scores.items()}, sort_keys=True),
                        decision.action,
                        decision.target,
                        json.dumps(list(decision.reasons), ensure_ascii=False),
                        json.dumps(list(decision.labels)),
                        json.dumps(list(decision.keywords)),
                    ),
                )

    def _add_received(self, account: str, fp_key: str, decision: DecisionRecord) -> None:
        address = normalise_address(decision.sender)
        if not address or decision.date is None:
            return
        fp_key = decision.ledger or ledger_key(fp_key, address, decision.date)
        seen = self._db.execute("SELECT 1 FROM received WHERE account=? AND fp_key=? LIMIT 1", (account, fp_key))
        if seen.fetchone() is not None:
            return
        self._db.executemany(
            "INSERT OR IGNORE INTO received VALUES (?, ?, ?, ?, ?)",
            [(account, address, decision.date, label, fp_key) for label in decision.labels or (ORDINARY,)],
        )

    # Intents ------------------------------------------------------------------

    @_serialised
    def add_intents(self, account: str, mailbox: str, uidvalidity: int, intents: Sequence[Intent], now: float) -> None:
        with self._transaction():
            for it in intents:
                fp = it.fingerprint
                self._db.execute(
                    "INSERT OR REPLACE INTO intents VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        account,
                        mailbox,
                        uidvalidity,
                        it.uid,
                        fingerprint_key(fp),
                        fp.message_id,
                        fp.size,
                        fp.internaldate.isoformat() if fp.internaldate else None,
                        it.target,
                        _dump_decision(it.decision),
                        now,
                    ),
                )

    @_serialised
    def intents(self, account: str, mailbox: str) -> list[tuple[int, Intent]]:
        """Unconfirmed moves for this folder, in every epoch, as (uidvalidity, intent)."""
        rows = self._db.execute(
            "SELECT i.uidvalidity, i.uid, i.message_id, i.size, i.internaldate, i.target, i.decision, "
            "c.uid IS NOT NULL, s.target_uidvalidity, s.target_uidnext FROM intents i "
            "LEFT JOIN copied c ON c.account=i.account AND c.mailbox=i.mailbox "
            "AND c.uidvalidity=i.uidvalidity AND c.uid=i.uid "
            "LEFT JOIN copy_starts s ON s.account=i.account AND s.mailbox=i.mailbox "
            "AND s.uidvalidity=i.uidvalidity AND s.uid=i.uid WHERE i.account=? AND i.mailbox=? "
            "ORDER BY i.uidvalidity, i.uid",
            (account, mailbox),
        ).fetchall()
        out = []
        for uidvalidity, uid, message_id, size, internaldate, target, decision, copied, start_uv, start_next in rows:
            fp = Fingerprint(message_id, size, datetime.fromisoformat(internaldate) if internaldate else None)
            start = TargetMark(start_uv, start_next) if start_uv is not None else None
            out.append((uidvalidity, Intent(uid, fp, target, _load_decision(decision), bool(copied), start)))
        return out

    @_serialised
    def mark_copying(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int], mark: TargetMark) -> None:
        """Note the target's UIDVALIDITY and UIDNEXT just before the COPY of these UIDs' moves is sent.

        Should the COPY's answer be lost (a dropped connection, a crash), a
        byte-identical copy at or above that UIDNEXT is still known for the
        move's own, and the original is removed instead of copied twice.
        """
        with self._transaction():
            self._db.executemany(
                "INSERT OR REPLACE INTO copy_starts VALUES (?, ?, ?, ?, ?, ?)",
                [(account, mailbox, uidvalidity, uid, mark.uidvalidity, mark.uidnext) for uid in uids],
            )

    @_serialised
    def rebase_intent(self, account: str, mailbox: str, old: tuple[int, int], new: tuple[int, int]) -> None:
        """Carry an unconfirmed action, with its copy marks, from (epoch, UID) ``old`` to ``new``.

        After a UIDVALIDITY change, once an action of the earlier epoch has
        found its message, it belongs to that message's new UID.
        """
        with self._transaction():
            for table in ("intents", "copied", "copy_starts"):
                self._db.execute(
                    f"UPDATE OR REPLACE {table} SET uidvalidity=?, uid=? "
                    "WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
                    (*new, account, mailbox, *old),
                )

    @_serialised
    def mark_copied(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> None:
        """Note that the server confirmed the COPY of these UIDs' moves, before their originals are removed.

        After a crash, only a move marked so may finish by removing the
        original: a byte-identical copy in the target is otherwise no proof
        that this move made it (the same mail may have been there before).
        """
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO copied VALUES (?, ?, ?, ?)",
                [(account, mailbox, uidvalidity, uid) for uid in uids],
            )

    @_serialised
    def drop_intent(self, account: str, mailbox: str, uidvalidity: int, uid: int) -> None:
        with self._transaction():
            self._drop_intent(account, mailbox, uidvalidity, uid)

    def _drop_intent(self, account: str, mailbox: str, uidvalidity: int, uid: int) -> None:
        for table in ("intents", "copied", "copy_starts"):
            self._delete_uids(table, account, mailbox, uidvalidity, [uid])

    def _delete_uids(self, table: str, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> None:
        """Delete these UIDs' rows from ``table``, one of the tables keyed by account, folder, epoch and UID."""
        self._db.executemany(
            f"DELETE FROM {table} WHERE account=? AND mailbox=? AND uidvalidity=? AND uid=?",
            [(account, mailbox, uidvalidity, uid) for uid in uids],
        )

    # Messages the server failed to return ----------------------------------------

    @_serialised
    def fetch_tries(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> dict[int, int]:
        """Of these UIDs, those whose fetch failed before, with the one-by-one tries they have had (in units)."""
        out: dict[int, int] = {}
        for chunk, marks in _chunked(list(uids)):
            rows = self._db.execute(
                f"SELECT uid, tries FROM fetch_failures WHERE account=? AND mailbox=? AND uidvalidity=? "
                f"AND uid IN ({marks})",
                (account, mailbox, uidvalidity, *chunk),
            )
            out.update(dict(rows.fetchall()))
        return out

    @_serialised
    def fetch_failed(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> None:
        """Note that a fetch of these UIDs failed: each will be fetched alone from now on."""
        with self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO fetch_failures VALUES (?, ?, ?, ?, 0)",
                [(account, mailbox, uidvalidity, uid) for uid in uids],
            )

    @_serialised
    def fetch_trying(self, account: str, mailbox: str, uidvalidity: int, uid: int, change: int = 1) -> None:
        """Count a try before it is made, so that a try that ends the session or the process still counts.

        ``change`` is in the runner's units; a negative one takes back part
        of a try that the network, maybe not the message, ended.
        """
        with self._transaction():
            self._db.execute(
                "UPDATE fetch_failures SET tries = MAX(tries + ?, 0) WHERE account=? AND mailbox=? "
                "AND uidvalidity=? AND uid=?",
                (change, account, mailbox, uidvalidity, uid),
            )

    @_serialised
    def fetch_settled(self, account: str, mailbox: str, uidvalidity: int, uids: Sequence[int]) -> None:
        """Forget the failures of these UIDs: fetched at last, or given up and recorded."""
        with self._transaction():
            self._delete_uids("fetch_failures", account, mailbox, uidvalidity, uids)

    # Reading the log ------------------------------------------------------------

    @_serialised
    def decisions(self, account: str | None = None, since: float = 0.0) -> list[dict[str, object]]:
        query = "SELECT time, account, mailbox, uidvalidity, uid, message_id_hash, scores, action, target, reasons,"
        query += " labels, keywords FROM decisions WHERE time >= ?"
        params: list[object] = [since]
        if account is not None:
            query += " AND account = ?"
            params.append(account)
        rows = self._db.execute(query + " ORDER BY id", params).fetchall()
        keys = ("time", "account", "mailbox", "uidvalidity", "uid", "message_id_hash", "scores", "action", "target")
        out: list[dict[str, object]] = []
        for row in rows:
            item: dict[str, object] = dict(zip(keys, row[:9], strict=True))
            item["scores"] = json.loads(row[6])
            item["reasons"] = json.loads(row[9])
            item["labels"] = json.loads(row[10])
            item["keywords"] = json.loads(row[11])
            out.append(item)
        return out

    # The sender ledger ------------------------------------------------------------

    @_serialised
    def history(self, address: str, before: float | None = None, exclude: Collection[str] = ()) -> SenderHistory:
        """What the ledger knows of ``address``, over all accounts, for judging a message.

        ``before`` (usually the date of the message being judged) leaves out
        shares and asks dated after it, and ``exclude`` (``ledger_key``s) the
        message itself, seen in another account, and any the caller counts
        already: mail dated later never counts towards an earlier message,
        nor a message towards its own judgement, while mail of the same
        second still does. ``last_sent`` is the latest time the owner wrote
        to the address, whatever ``before`` is. A message seen in two
        accounts counts once, at its earliest time.
        """
        key = normalise_address(address)
        left_out = set(exclude)
        rows = [(label, t) for label, t, k in self._shares_and_asks(key, before=before) if k not in left_out]
        (last_sent,) = self._db.execute("SELECT MAX(time) FROM sent WHERE address=?", (key,)).fetchone()
        return SenderHistory(
            shares=tuple(t for label, t in rows if label == "article_share"),
            asks=tuple(t for label, t in rows if label == "favour_request"),
            last_sent=last_sent,
        )

    @_serialised
    def record_sent(self, account: str, rows: Sequence[tuple[str, str, float]]) -> None:
        """Note the owner's sent mail: (sent_key, address, time) per recipient; re-reading is a no-op.

        ``sent_key`` identifies the sent message (its fingerprint key), so the
        same message read again, or read after a UIDVALIDITY change, adds
        nothing. Rows without a usable address are left out.
        """
        with self._transaction():
            for sent_key, address, when in rows:
                key = normalise_address(address)
                if key:
                    self._db.execute("INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)", (account, sent_key, key, when))

    @_serialised
    def sent_checkpoint(self, account: str, mailbox: str) -> tuple[int, int] | None:
        """(uidvalidity, next_uid) of the sent folder as last read, or None if never read."""
        row = self._db.execute(
            "SELECT uidvalidity, next_uid FROM sent_checkpoints WHERE account=? AND mailbox=?", (account, mailbox)
        ).fetchone()
        return None if row is None else (int(row[0]), int(row[1]))

    @_serialised
    def set_sent_checkpoint(self, account: str, mailbox: str, uidvalidity: int, next_uid: int) -> None:
        """Move the sent folder's mark; it never moves back within one UIDVALIDITY, and a new one resets it."""
        self._db.execute(
            "INSERT INTO sent_checkpoints VALUES (?, ?, ?, ?) ON CONFLICT (account, mailbox) DO UPDATE SET "
            "next_uid = CASE WHEN uidvalidity = excluded.uidvalidity THEN MAX(next_uid, excluded.next_uid) "
            "ELSE excluded.next_uid END, uidvalidity = excluded.uidvalidity",
            (account, mailbox, uidvalidity, next_uid),
        )

    @_serialised
    def last_digest(self, account: str) -> float | None:
        """When the last digest was appended for ``account``; None if never."""
        row = self._db.execute("SELECT last FROM digests WHERE account=?", (account,)).fetchone()
        return None if row is None else float(row[0])

    @_serialised
    def set_last_digest(self, account: str, when: float) -> None:
        self._db.execute("INSERT OR REPLACE INTO digests VALUES (?, ?)", (account, when))

    @_serialised
    def senders(self, since: float = 0.0) -> list[SenderRow]:
        """One row per address in the ledger, by address, over all accounts.

        ``since`` limits the received mail counted (shares, asks, other,
        first and last seen) and which addresses appear: those with mail
        received, or written to by the owner, from ``since`` on. Whether the
        owner ever wrote to an address is not limited: ``sent_count`` and
        ``last_sent`` cover the whole sent history. A message seen in two
        accounts counts once.
        """
        received = {
            row[0]: row[1:]
            for row in self._db.execute(
                "SELECT address,"
                " COUNT(DISTINCT CASE WHEN label='article_share' THEN fp_key END),"
                " COUNT(DISTINCT CASE WHEN label='favour_request' THEN fp_key END),"
                " COUNT(DISTINCT CASE WHEN label=? THEN fp_key END),"
                " MIN(time), MAX(time) FROM received WHERE time >= ? GROUP BY address",
                (ORDINARY, since),
            )
        }
        sent = {
            row[0]: row[1:]
            for row in self._db.execute(
                "SELECT address, COUNT(DISTINCT sent_key), MAX(time) FROM sent GROUP BY address"
            )
        }
        addresses = set(received) | {address for address, (_, last) in sent.items() if last >= since}
        out = []
        for address in sorted(addresses):
            shares, asks, other, first_seen, last_seen = received.get(address, (0, 0, 0, None, None))
            sent_count, last_sent = sent.get(address, (0, None))
            before_ask = self._shares_before_ask(address, since, last_sent) if shares and asks else 0
            out.append(
                SenderRow(address, shares, asks, other, first_seen, last_seen, sent_count, last_sent, before_ask)
            )
        return out

    def _shares_and_asks(
        self, address: str, *, since: float = 0.0, before: float | None = None
    ) -> list[tuple[str, float, str]]:
        """(label, time, ledger key) of each share and ask from ``address``, once per message, by time."""
        query = (
            "SELECT label, MIN(time), fp_key FROM received WHERE address=? AND time >= ?"
            " AND label IN ('article_share', 'favour_request')"
        )
        params: list[object] = [address, since]
        if before is not None:
            query += " AND time <= ?"
            params.append(before)
        return self._db.execute(query + " GROUP BY label, fp_key ORDER BY 2", params).fetchall()

    def _shares_before_ask(self, address: str, since: float, last_sent: float | None) -> int:
        """The most shares after ``last_sent`` (all, if None) that came before one of the address's asks."""
        rows = self._shares_and_asks(address, since=since)
        shares = {k: t for label, t, k in rows if label == "article_share" and (last_sent is None or t > last_sent)}
        times = sorted(shares.values())
        # As the daemon counts for an ask: shares up to its second, not the ask itself (a message that is both).
        return max(
            (
                bisect.bisect_right(times, t) - (k in shares and shares[k] <= t)
                for label, t, k in rows
                if label == "favour_request"
            ),
            default=0,
        )

    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)


def _connect(target: str, *, uri: bool = False) -> sqlite3.Connection:
    # A reader beside the daemon (senders, export) may wait for a write of the daemon's.
    return sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30.0)


def _refuse_newer(path: Path, version: int) -> None:
    if version > SCHEMA_VERSION:
        raise StateError(f"state_path: {path} was written by a newer ployfilter (schema {version})")


def _init_schema(db: sqlite3.Connection, path: Path) -> None:
    db.executescript(_SCHEMA)
    columns = {row[1] for row in db.execute("PRAGMA table_info(decisions)")}
    for column in ("labels", "keywords"):
        if column not in columns:
            db.execute(f"ALTER TABLE decisions ADD COLUMN {column} TEXT NOT NULL DEFAULT '[]'")
    row = db.execute("SELECT value FROM meta WHERE key='schema'").fetchone()
    if row is None:
        db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        return
    version = int(row[0])
    _refuse_newer(path, version)
    if version < SCHEMA_VERSION:
        _rekey_ledger(db)  # 2 or 3 -> 4; it writes the new version in the same transaction


def _rekey_ledger(db: sqlite3.Connection) -> None:
    """Schema 4: addresses in today's form (``normalise_address``), ledger rows keyed by ``ledger_key``.

    Rows written before keep counting once: each gets its address and key
    as they are written now, and copies of one message that now share a key
    are merged; sent rows get their address re-read the same way, so
    replies to an international domain still count. One transaction, with
    the schema version, so a crash leaves the old ledger whole.
    """
    with _Transaction(db):
        received = db.execute("SELECT account, address, time, label, fp_key FROM received").fetchall()
        # A row's time is its Date header's whenever that was believable, which is nearly always. Rows
        # the old key had merged (copies in two accounts) keep one stamp, so they stay one message.
        stamp: dict[str, float] = {}
        for _, _, when, _, key in received:
            stamp[key] = min(when, stamp.get(key, when))
        rekeyed = []
        for account, address, when, label, key in received:
            canonical = normalise_address(address) or address
            rekeyed.append((account, canonical, when, label, ledger_key(key, canonical, stamp[key])))
        sent = db.execute("SELECT account, sent_key, address, time FROM sent").fetchall()
        readdressed = [(a, k, normalise_address(address) or address, t) for a, k, address, t in sent]
        db.execute("DELETE FROM received")
        db.executemany("INSERT OR IGNORE INTO received VALUES (?, ?, ?, ?, ?)", rekeyed)
        db.execute("DELETE FROM sent")
        db.executemany("INSERT OR IGNORE INTO sent VALUES (?, ?, ?, ?)", readdressed)
        db.execute("UPDATE meta SET value=? WHERE key='schema'", (str(SCHEMA_VERSION),))


class _Transaction:
    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._db.execute("COMMIT" if exc_type is None else "ROLLBACK")


def _dump_decision(d: DecisionRecord) -> str:
    return json.dumps(
        {
            "uid": d.uid,
            "message_id": d.message_id,
            "scores": dict(d.scores),
            "action": d.action,
            "target": d.target,
            "keywords": list(d.keywords),
            "reasons": list(d.reasons),
            "sender": d.sender,
            "labels": list(d.labels),
            "date": d.date,
            "ledger": d.ledger,
            "arrived": d.arrived,
        }
    )


def _load_decision(text: str) -> DecisionRecord:
    """The inverse of ``_dump_decision``; intents written before schema 2 have no ledger fields."""
    d = json.loads(text)
    return DecisionRecord(
        d["uid"],
        d["message_id"],
        d["scores"],
        d["action"],
        d["target"],
        d["keywords"],
        d["reasons"],
        d.get("sender", ""),
        tuple(d.get("labels", ())),
        d.get("date"),
        d.get("ledger", ""),
        d.get("arrived"),
    )
